"""Pure: which bytes of an image a GET's `Range` and `If-Range` headers get (RFC 9110 §14).

Twisted's `static.File` honours any Range header, overlapping ranges included: 5,000
copies of `0-` announced 20 GB for a 4 MB file (docs/security.md). Here a Range header is
honoured only when it asks for at most `max_ranges` ranges that are in ascending order and
do not overlap; one range (`first-last`, `first-`, `-suffix`) is what a phone sends when
it resumes after a cut. What else is answered, and why:

- a ranges-specifier that is not `bytes=` with valid ranges: ignored, 200 with the whole
  file (RFC 9110 §14.2: a server MAY ignore an invalid one; Twisted did the same);
- more than `max_ranges` ranges, or ranges out of order or overlapping: ignored too, 200
  with the whole file (§14.2 names exactly these as signs of a broken client or an attack,
  and allows ignoring them). The whole file costs the appliance what a plain GET costs,
  which any client may send, and a client that means well still gets correct bytes; a 416
  would gain nothing in bytes and could leave such a client with nothing;
- ranges of which none overlaps the file: 416 with `Content-Range: bytes */size`, as
  §15.5.17 requires;
- `If-Range` that does not match (a weak or different entity tag, or a date other than the
  file's Last-Modified): the Range is ignored, 200 with the whole file (§13.1.5).

Ranges that start past the end are dropped from a set that has others (§14.1.2).
Nothing here reads files or sockets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum

MAX_DIGITS = 19  # a range bound longer than this is not a position in any file


@dataclass(frozen=True)
class ByteRange:
    offset: int
    size: int  # at least 1

    @property
    def last(self) -> int:
        return self.offset + self.size - 1


class RangeAnswer(Enum):
    WHOLE = "whole"  # 200: no Range, or one that is ignored (`RangePlan.ignored` says why)
    PARTIAL = "partial"  # 206: `RangePlan.ranges`, one or several
    UNSATISFIABLE = "unsatisfiable"  # 416


@dataclass(frozen=True)
class RangePlan:
    answer: RangeAnswer
    ranges: tuple[ByteRange, ...] = ()
    ignored: str = ""  # why a Range header was ignored (for the log), else ""


WHOLE = RangePlan(RangeAnswer.WHOLE)


def plan_ranges(header: bytes | None, size: int, max_ranges: int) -> RangePlan:
    """What a GET with this Range header gets of a file of `size` bytes."""
    if header is None:
        return WHOLE
    unit, equals, spec = header.partition(b"=")
    if not equals or unit.strip().lower() != b"bytes":
        return RangePlan(RangeAnswer.WHOLE, ignored="not a bytes range")
    # Empty list elements are allowed (RFC 9110 §5.6.1); count before parsing anything, so
    # a header of thousands of ranges costs no more than its split.
    elements = [e.strip() for e in spec.split(b",")]
    elements = [e for e in elements if e]
    if not elements:
        return RangePlan(RangeAnswer.WHOLE, ignored="no ranges")
    if len(elements) > max_ranges:
        return RangePlan(
            RangeAnswer.WHOLE, ignored=f"{len(elements)} ranges (at most {max_ranges})"
        )
    wanted: list[ByteRange] = []
    for element in elements:
        parsed = _parse(element)
        if parsed is None:
            return RangePlan(RangeAnswer.WHOLE, ignored="invalid range")
        resolved = _resolve(parsed, size)
        if resolved is not None:
            wanted.append(resolved)
    if not wanted:
        return RangePlan(RangeAnswer.UNSATISFIABLE)
    for before, after in zip(wanted, wanted[1:], strict=False):
        if after.offset <= before.last:
            return RangePlan(RangeAnswer.WHOLE, ignored="ranges overlap or are out of order")
    return RangePlan(RangeAnswer.PARTIAL, tuple(wanted))


def if_range_holds(header: bytes | None, etag: bytes, last_modified: datetime) -> bool:
    """Whether a Range may be honoured given `If-Range` (absent: yes).

    An entity tag must match the strong `etag` exactly (a weak one never does); a date
    must equal the file's Last-Modified to the second.
    """
    if header is None:
        return True
    value = header.strip()
    if value.startswith((b'"', b"W/")):
        return value == etag
    try:
        when = parsedate_to_datetime(value.decode("ascii"))
    except (ValueError, TypeError, UnicodeDecodeError):
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) == int(last_modified.timestamp())


def content_range(part: ByteRange, size: int) -> bytes:
    return b"bytes %d-%d/%d" % (part.offset, part.last, size)


def _parse(element: bytes) -> tuple[int | None, int | None] | None:
    first, dash, last = element.partition(b"-")
    first, last = first.strip(), last.strip()
    if not dash or not (first or last):
        return None
    for bound in (first, last):
        if bound and (not bound.isdigit() or len(bound) > MAX_DIGITS):
            return None
    start = int(first) if first else None
    end = int(last) if last else None
    if start is not None and end is not None and end < start:
        return None
    return start, end


def _resolve(parsed: tuple[int | None, int | None], size: int) -> ByteRange | None:
    start, end = parsed
    if start is None:  # a suffix: the last `end` bytes
        assert end is not None
        if end == 0 or size == 0:
            return None
        length = min(end, size)
        return ByteRange(size - length, length)
    if start >= size:
        return None
    last = size - 1 if end is None else min(end, size - 1)
    return ByteRange(start, last - start + 1)
