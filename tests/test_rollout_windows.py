"""Download windows in local wall-clock time (appliance/catalogue/rollout_windows.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from appliance.catalogue.rollout_windows import (
    DownloadWindows,
    TimeWindow,
    WindowError,
    parse_address,
    parse_network,
)


def at(text: str) -> datetime:
    """A UTC instant, `YYYY-MM-DD HH:MM`."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def windows(zone: str, *spans: str) -> DownloadWindows:
    return DownloadWindows(zone, tuple(TimeWindow.parse(s) for s in spans))


# Europe/Berlin in 2026: clocks go forward on 29 March at 01:00 UTC (02:00 CET becomes
# 03:00 CEST) and back on 25 October at 01:00 UTC (03:00 CEST becomes 02:00 CET).
OPEN = [
    # (zone, windows, UTC instant, open?)
    pytest.param("UTC", ("22:00-05:00",), "2026-01-10 21:59", False, id="utc-before-start"),
    pytest.param("UTC", ("22:00-05:00",), "2026-01-10 22:00", True, id="utc-start-included"),
    pytest.param("UTC", ("22:00-05:00",), "2026-01-10 23:59", True, id="utc-before-midnight"),
    pytest.param("UTC", ("22:00-05:00",), "2026-01-11 00:00", True, id="utc-midnight"),
    pytest.param("UTC", ("22:00-05:00",), "2026-01-11 04:59", True, id="utc-before-end"),
    pytest.param("UTC", ("22:00-05:00",), "2026-01-11 05:00", False, id="utc-end-excluded"),
    pytest.param("UTC", ("12:00-13:00",), "2026-01-11 12:30", True, id="utc-same-day"),
    pytest.param("UTC", ("12:00-13:00",), "2026-01-11 13:00", False, id="utc-same-day-end"),
    pytest.param("UTC", ("12:00-13:00", "22:00-05:00"), "2026-01-11 01:00", True, id="any-of-two"),
    pytest.param(
        "UTC", ("12:00-13:00", "22:00-05:00"), "2026-01-11 09:00", False, id="none-of-two"
    ),
    pytest.param("UTC", ("07:00-07:00",), "2026-01-11 03:00", True, id="start-equals-end-all-day"),
    pytest.param("UTC", (), "2026-01-11 09:00", True, id="no-window-always-open"),
    # Berlin in winter (UTC+1) and summer (UTC+2): 22:00 local is 21:00 or 20:00 UTC.
    pytest.param("Europe/Berlin", ("22:00-05:00",), "2026-01-10 20:30", False, id="cet-21:30"),
    pytest.param("Europe/Berlin", ("22:00-05:00",), "2026-01-10 21:00", True, id="cet-22:00"),
    pytest.param("Europe/Berlin", ("22:00-05:00",), "2026-01-11 04:00", False, id="cet-05:00"),
    pytest.param("Europe/Berlin", ("22:00-05:00",), "2026-07-01 20:00", True, id="cest-22:00"),
    pytest.param("Europe/Berlin", ("22:00-05:00",), "2026-07-01 03:00", False, id="cest-05:00"),
    pytest.param("Europe/Berlin", ("22:00-05:00",), "2026-07-01 02:59", True, id="cest-04:59"),
    # The spring-forward night: the window spans the change and keeps its local edges.
    pytest.param(
        "Europe/Berlin", ("22:00-05:00",), "2026-03-28 21:00", True, id="spring-22:00-cet"
    ),
    pytest.param(
        "Europe/Berlin", ("22:00-05:00",), "2026-03-29 00:59", True, id="spring-01:59-cet"
    ),
    pytest.param(
        "Europe/Berlin", ("22:00-05:00",), "2026-03-29 01:00", True, id="spring-03:00-cest"
    ),
    pytest.param(
        "Europe/Berlin", ("22:00-05:00",), "2026-03-29 02:59", True, id="spring-04:59-cest"
    ),
    pytest.param(
        "Europe/Berlin", ("22:00-05:00",), "2026-03-29 03:00", False, id="spring-05:00-cest"
    ),
    # 02:00-03:00 local does not exist that night: the window never opens.
    pytest.param(
        "Europe/Berlin", ("02:00-03:00",), "2026-03-29 00:59", False, id="spring-gap-before"
    ),
    pytest.param(
        "Europe/Berlin", ("02:00-03:00",), "2026-03-29 01:00", False, id="spring-gap-after"
    ),
    # The fall-back night: 02:00-03:00 local happens twice, and the window is open both times.
    pytest.param(
        "Europe/Berlin", ("02:00-03:00",), "2026-10-24 23:59", False, id="fall-01:59-cest"
    ),
    pytest.param("Europe/Berlin", ("02:00-03:00",), "2026-10-25 00:30", True, id="fall-02:30-cest"),
    pytest.param("Europe/Berlin", ("02:00-03:00",), "2026-10-25 01:00", True, id="fall-02:00-cet"),
    pytest.param("Europe/Berlin", ("02:00-03:00",), "2026-10-25 01:59", True, id="fall-02:59-cet"),
    pytest.param("Europe/Berlin", ("02:00-03:00",), "2026-10-25 02:00", False, id="fall-03:00-cet"),
    pytest.param("Europe/Berlin", ("22:00-05:00",), "2026-10-25 03:59", True, id="fall-04:59-cet"),
    pytest.param("Europe/Berlin", ("22:00-05:00",), "2026-10-25 04:00", False, id="fall-05:00-cet"),
]


@pytest.mark.parametrize(("zone", "spans", "now", "is_open"), OPEN)
def test_window_open(zone: str, spans: tuple[str, ...], now: str, is_open: bool) -> None:
    assert windows(zone, *spans).is_open(at(now)) is is_open


def test_the_instant_decides_not_the_offset_it_is_written_in() -> None:
    # 21:30 UTC written as 23:30+02:00: still open in a 22:00-05:00 UTC window.
    instant = datetime(2026, 1, 10, 23, 30, tzinfo=timezone(timedelta(hours=2)))
    assert windows("UTC", "22:00-05:00").is_open(instant) is False
    assert windows("Etc/GMT-2", "22:00-05:00").is_open(instant) is True


def test_open_hours_over_the_change_days() -> None:
    # Count the open minutes of each local day (local midnight to local midnight, 23, 24
    # or 25 real hours): wall-clock windows shrink and stretch with the day.
    berlin = ZoneInfo("Europe/Berlin")

    def minutes_open(w: DownloadWindows, day: str) -> int:
        start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=berlin)
        length = (start + timedelta(days=1)).astimezone(UTC) - start.astimezone(UTC)
        first = start.astimezone(UTC)
        count = int(length.total_seconds()) // 60
        return sum(w.is_open(first + timedelta(minutes=m)) for m in range(count))

    one_to_four = windows("Europe/Berlin", "01:00-04:00")
    assert minutes_open(one_to_four, "2026-03-28") == 180
    assert minutes_open(one_to_four, "2026-03-29") == 120  # 02:00-03:00 skipped
    assert minutes_open(one_to_four, "2026-10-25") == 240  # 02:00-03:00 twice


def test_a_naive_now_is_refused() -> None:
    with pytest.raises(WindowError, match="UTC offset"):
        windows("UTC", "22:00-05:00").is_open(datetime(2026, 1, 1, 12, 0))


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("22:00-05:00", time(22), time(5)),
        (" 00:00 - 23:59 ", time(0), time(23, 59)),
        ("07:30-07:30", time(7, 30), time(7, 30)),
    ],
)
def test_window_parse(text: str, start: time, end: time) -> None:
    w = TimeWindow.parse(text)
    assert (w.start, w.end) == (start, end)
    assert str(TimeWindow.parse(str(w))) == str(w)


@pytest.mark.parametrize("text", ["22:00", "22-05", "24:00-05:00", "22:00-05:60", "1:00-2:00", ""])
def test_window_parse_refuses(text: str) -> None:
    with pytest.raises(WindowError, match="HH:MM-HH:MM"):
        TimeWindow.parse(text)


def test_unknown_time_zone_is_refused_when_built() -> None:
    with pytest.raises(WindowError, match="unknown time zone 'Mars/Olympus'"):
        DownloadWindows("Mars/Olympus")
    with pytest.raises(WindowError, match="unknown time zone"):
        DownloadWindows("../etc/passwd")


def test_windows_compare_by_zone_and_spans() -> None:
    assert windows("UTC", "22:00-05:00") == windows("UTC", "22:00-05:00")
    assert hash(windows("UTC", "22:00-05:00")) == hash(windows("UTC", "22:00-05:00"))
    assert windows("UTC", "22:00-05:00") != windows("Europe/Berlin", "22:00-05:00")
    assert str(windows("Europe/Berlin", "22:00-05:00")) == "22:00-05:00 Europe/Berlin"


def test_networks_and_addresses() -> None:
    assert str(parse_network(" 10.1.0.0/16 ")) == "10.1.0.0/16"
    with pytest.raises(WindowError, match="invalid network '10.1.0.1/16'"):
        parse_network("10.1.0.1/16")
    assert str(parse_address("::ffff:10.1.2.3")) == "10.1.2.3"
    assert parse_address("not an address") is None
    assert parse_address(None) is None
