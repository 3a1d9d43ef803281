"""Performance data as the Monitoring Plugins Development Guidelines write it (pure).

    'label'=value[UOM];[warn];[crit];[min];[max]

Labels are quoted when they hold a space, `=` or `'` (a quote doubled inside); the value,
min and max are plain decimals (or `U` for a value that cannot be had); warn and crit are
threshold ranges: `10` alerts outside 0..10, `10:` below 10, `~:10` above 10. The units
used here: none (a count), `s`, `%` and `B`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Perf:
    """One figure: `value` None is written `U` (not known, as the guidelines allow)."""

    label: str
    value: float | None
    uom: str = ""
    warn: str = ""  # a threshold range, "" for none
    crit: str = ""
    min: float | None = None
    max: float | None = None

    def text(self) -> str:
        if self.value is None:
            return f"{quote_label(self.label)}=U"
        fields = [
            self.warn,
            self.crit,
            "" if self.min is None else number(self.min),
            "" if self.max is None else number(self.max),
        ]
        while fields and not fields[-1]:
            fields.pop()  # trailing empty fields may be dropped
        head = f"{quote_label(self.label)}={number(self.value)}{self.uom}"
        return ";".join([head, *fields])


def quote_label(label: str) -> str:
    """The label as written: in single quotes when it holds a space, `=` or `'`."""
    if any(c in label for c in " ='"):
        return "'" + label.replace("'", "''") + "'"
    return label


def number(value: float) -> str:
    """A decimal without exponent: `3`, `0.125`, `-2`; at most 3 decimals."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3f}".rstrip("0").rstrip(".")


def at_least(limit: float) -> str:
    """The range that alerts when the value falls below `limit` (`limit:`)."""
    return f"{number(limit)}:"


def at_most(limit: float) -> str:
    """The range that alerts when the value rises above `limit` (`~:limit`)."""
    return f"~:{number(limit)}"


def perfdata(figures: list[Perf]) -> str:
    """The figures, space-separated, each label once (the first kept)."""
    seen: set[str] = set()
    out = []
    for figure in figures:
        if figure.label not in seen:
            seen.add(figure.label)
            out.append(figure.text())
    return " ".join(out)
