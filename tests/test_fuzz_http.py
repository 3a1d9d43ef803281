"""Fuzzing the HTTP admission guard: arbitrary bytes on one connection to a phone
listener's GuardedSite (internal and external), in process over a memory transport.
Always a response or a close, never a logged failure (a 500 with a traceback); every
connection ends within the guard's timeouts and gives its slot back."""

from __future__ import annotations

from hypothesis import given

from tests.fuzz import targets
from tests.fuzz.strategies import budget, inputs


def test_the_http_seeds_are_answered() -> None:
    statuses = [targets.http(data)[9:12] for data in targets.http_seeds()]
    # a check, an *Ext check with a password, two ranges, a file, a chunked check, a log
    assert statuses[:6] == [b"200", b"200", b"206", b"200", b"400", b"201"]
    assert targets.http_ext(targets.http_seeds()[1])[9:12] == b"200"  # *Ext with a password


@budget(150)
@given(inputs("http"))
def test_fuzzed_requests_to_the_internal_listener_end_cleanly(data: bytes) -> None:
    targets.http(data)


@budget(150)
@given(inputs("http_ext"))
def test_fuzzed_requests_to_the_external_listener_end_cleanly(data: bytes) -> None:
    targets.http_ext(data)


# -- crashes the fuzzing found ----------------------------------------------------------------


def test_a_check_naming_an_unknown_encoding_gets_a_400_not_a_500() -> None:
    body = targets.http_seeds()[0].replace(b'encoding="utf-8"', b'encoding="ttf-8"')
    assert targets.http(body).startswith(b"HTTP/1.1 400 ")  # and no logged failure


def test_a_range_header_that_is_not_utf8_gets_an_answer_not_a_500() -> None:
    # Twisted's static.File logs a range it cannot parse with bytes.decode(): a Range
    # header that is not UTF-8 raised UnicodeDecodeError there, a 500 and a traceback.
    request = b"GET " + targets.IMAGE + b" HTTP/1.1\r\nHost: x\r\nRange: bytes=\xed-1\r\n\r\n"
    assert targets.http(request)[9:12] in (b"200", b"416")
