"""Where the login page sends an admin once logged in: `/login?next=...`, checked.

The value comes from whoever made the link, so it is parsed and checked, never
prefix-matched: `/\\evil.example`, `/\t/evil` and `%2F%2Fevil` start with one `/` but a
browser goes to another host with each. Only the path of one of the Control Panel's own
pages is kept; anything else goes to `/`.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Collection
from urllib.parse import urlsplit

HOME = "/"
MAX_NEXT = 256  # characters; the pages' paths are short
# Control characters (browsers drop tabs and newlines from URLs), spaces, backslashes
# (browsers read them as slashes) and percent signs (no page needs an escape).
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f\\%]")


def safe_next(value: str | None, pages: Collection[str]) -> str:
    """The path of one of `pages` that `value` names, normalised, or HOME."""
    if not value or len(value) > MAX_NEXT or _UNSAFE.search(value):
        return HOME
    try:
        parts = urlsplit(value)
    except ValueError:
        return HOME
    if parts.scheme or parts.netloc:
        return HOME
    path = parts.path
    if not path.startswith("/") or path.startswith("//"):
        return HOME
    normal = posixpath.normpath(path)
    return normal if normal in pages else HOME
