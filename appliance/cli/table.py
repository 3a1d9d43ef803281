"""The plain-text tables of the listings (`rules`, `import`, `test-device list`, `user list`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO


def write_table(rows: Sequence[Sequence[object]], headers: Sequence[str], out: TextIO) -> None:
    """Left-aligned columns two spaces apart; None shows as `-`."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        out.write("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n")
