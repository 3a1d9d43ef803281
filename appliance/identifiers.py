"""Validation and normal forms of the identifiers admins and phones send.

MAC addresses: six two-hex-digit pairs, bare or joined by `-` or `:`; the normal form is
upper case joined by `-` (`00-04-F2-A1-B2-C3`). Serial numbers: letters, digits, `-`
and `_`; the normal form is upper case. Versions: dotted decimal numbers.
"""

from __future__ import annotations

import re

_MAC = re.compile(r"^[0-9A-Fa-f]{2}([-:]?)(?:[0-9A-Fa-f]{2}\1){4}[0-9A-Fa-f]{2}$")
_SERIAL = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_VERSION = re.compile(r"^[0-9]{1,9}(?:\.[0-9]{1,9}){0,5}\Z")


class InvalidIdentifier(ValueError):
    """An identifier that is not of its documented form; the message says which form."""


def normalise_mac(text: str) -> str:
    value = text.strip()
    if not _MAC.match(value):
        raise InvalidIdentifier(
            f"invalid MAC address {text!r}: expected six two-hex-digit pairs, "
            "bare or joined by '-' or ':' (e.g. 00-04-F2-A1-B2-C3)"
        )
    bare = re.sub(r"[-:]", "", value).upper()
    return "-".join(bare[i : i + 2] for i in range(0, 12, 2))


def normalise_serial(text: str) -> str:
    value = text.strip()
    if not _SERIAL.match(value):
        raise InvalidIdentifier(
            f"invalid serial number {text!r}: expected 1 to 64 letters, digits, '-' or '_'"
        )
    return value.upper()


def is_version(text: str) -> bool:
    return bool(_VERSION.match(text))


def version_tuple(text: str) -> tuple[int, ...]:
    """Dotted version as a tuple for ordering; raises InvalidIdentifier when malformed."""
    if not is_version(text):
        raise InvalidIdentifier(
            f"invalid version {text!r}: expected dotted numbers like 4.0.7577.4387"
        )
    return tuple(int(p) for p in text.split("."))


def same_version(a: str | None, b: str | None) -> bool:
    """Versions compare numerically when both are dotted numbers (4.0.01 == 4.0.1)."""
    if a is None or b is None:
        return a is b
    if is_version(a.strip()) and is_version(b.strip()):
        return version_tuple(a.strip()) == version_tuple(b.strip())
    return a.strip().casefold() == b.strip().casefold()
