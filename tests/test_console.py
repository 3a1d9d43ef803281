"""The text log on standard error (cli/console.py): the very text Twisted's
`textFileLogObserver` writes, for every kind of event the appliance logs and more."""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from enum import StrEnum
from typing import Any

import pytest
from twisted.logger import LogEvent, Logger, LogLevel, textFileLogObserver
from twisted.python.failure import Failure

from appliance.cli.console import text_observer
from appliance.ops import readable

CHECK_FORMAT = (
    "update check {client} {zone} {mac} {serial} {brand} {model} {locale} reported "
    "{reported}: {reason} {version}"
)


class Zone(StrEnum):
    INTERNAL = "internal"


class Odd:
    def __format__(self, spec: str) -> str:
        return f"odd<{spec}>"


class Broken:
    def __format__(self, spec: str) -> str:
        raise ValueError("no")


def events() -> list[LogEvent]:
    caught: list[LogEvent] = []
    log = Logger(namespace="ucupdates.phone", observer=caught.append)
    check = dict(
        client="192.0.2.1",
        zone=Zone.INTERNAL,
        mac="00-04-F2-00-00-01",
        serial=None,
        brand="Polycom",
        model="CX600",
        locale="ENU",
        reported="4.0.7577.4366",
        reason="approved",
        version=None,
        event="update.check",
    )
    log.info(CHECK_FORMAT, **check)
    log.warn(CHECK_FORMAT, **check)
    log.info("two\nlines {x}", x="and\nmore")
    log.info("{{braces}} {x}", x=1)
    log.info("attribute {x.real} index {y[0]} call {z()}", x=3, y=[4], z=lambda: 5)
    log.info("conversion {x!r} spec {y:>6}", x="r", y="s")
    log.info("positional {} {0}")
    log.info("missing {nothing}")
    log.info("odd {x} broken {y}", x=Odd(), y=Broken())
    log.info("")
    log.info("{empty}", empty="")
    log.info("serving {domains} for {seconds} s", domains=("example.com", "contoso.com"), seconds=5)
    log.info("nothing in {empty}", empty=())
    log.info("system", log_system="custom-system")
    log.info("no time", log_time=None)
    log.error("bytes {x}", x=b"\xff")
    try:
        raise ZeroDivisionError("division by zero")
    except ZeroDivisionError:
        log.failure("a failure {x}", Failure(), x=2)
    caught.append({"log_format": "bare {x}", "x": 1, "log_time": 1.5})
    caught.append({"log_format": b"bytes format", "log_time": 2.0})
    caught.append({"log_format": "flattened", "log_flattened": {}, "log_time": 3.0})
    caught.append({"no": "format", "log_time": 4.0})
    return caught


def written(observer: Any, batch: list[LogEvent]) -> str:
    out = io.StringIO()
    observe = observer(out)
    for event in batch:
        observe(event)
    return out.getvalue()


def test_every_kind_of_event_is_written_as_twisted_writes_it() -> None:
    """The same text, except that a None field reads `-` and a tuple's items are joined
    (Twisted would write `None` and `('a', 'b')`)."""
    batch = events()
    expected = written(textFileLogObserver, [readable(e) for e in batch])
    assert "update check 192.0.2.1 internal 00-04-F2-00-00-01 - Polycom" in expected
    assert "reported 4.0.7577.4366: approved -\n" in expected
    assert "serving example.com, contoso.com for 5 s\n" in expected
    assert "ZeroDivisionError" in expected and "Unable to format event" in expected
    text = written(text_observer, batch)
    assert text == expected
    formatted = [line for line in text.splitlines() if "Unable to format event" not in line]
    assert not [line for line in formatted if "None" in line or "('" in line or "()" in line]


@pytest.fixture
def berlin() -> Iterator[None]:
    """Local time with a daylight saving change (Twisted writes the local offset)."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_times_within_and_across_seconds_and_a_clock_change_are_written_alike(
    berlin: None,
) -> None:
    change = 1774746000.0  # 2026-03-29T01:00:00Z, 02:00 local becomes 03:00
    times = [change - 1.5, change - 0.25, change - 0.0001, change, change + 0.5, change + 1]
    times += [0.0, 0.99, 1e9 + 0.123, 1e9 + 0.9, 1e9 + 1.1, -1.5, -0.5]
    batch: list[LogEvent] = [
        {"log_format": "t {x}", "x": t, "log_time": t, "log_level": LogLevel.info} for t in times
    ]
    assert written(text_observer, batch) == written(textFileLogObserver, batch)


def test_the_check_event_does_not_go_through_twisteds_formatter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from appliance.cli import console

    delegated: list[LogEvent] = []
    monkeypatch.setattr(console, "formatEventAsClassicLogText", lambda e, t: delegated.append(e))
    check, warning = events()[:2]
    out = io.StringIO()
    observe = text_observer(out)
    observe(check)
    observe(warning)
    assert delegated == [] and out.getvalue().count("update check") == 2


def test_a_format_is_parsed_once() -> None:
    observe = text_observer(io.StringIO())
    formats = observe.formatEvent.__self__  # type: ignore[attr-defined]
    for n in range(3):
        observe({"log_format": "check {n}", "n": n, "log_time": 5.0})
    assert list(formats.parsed) == ["check {n}"]
