"""The daily drift summary (appliance/catalogue/drift_summary.py): when it comes (local time,
daylight-saving changes), what it logs, that it reaches syslog as RFC 5424 with structured
data, and the timer with a fake clock in process; its config keys."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import LogEvent, Logger

from appliance.catalogue import drift_report
from appliance.catalogue.drift_summary import (
    SUMMARY_EVENT,
    DriftSummaryService,
    drift_summary_service,
    log_drift_summary,
    next_summary,
    read_drift,
)
from appliance.config import ConfigError, RolloutSettings, SyslogSettings, load_config
from appliance.ops.syslog import Rfc5424Observer
from appliance.testing import (
    CU7,
    CU8,
    FixedClock,
    MemorySender,
    catalog_of,
    config_from,
    make_rule,
    memory_store,
    rule_key,
    seen_device,
)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NEXT = [
    # (now UTC, at, zone, next UTC)
    pytest.param("2026-11-27 05:59", "06:00", "UTC", "2026-11-27 06:00", id="later-today"),
    pytest.param("2026-11-27 06:00", "06:00", "UTC", "2026-11-28 06:00", id="at-it-tomorrow"),
    pytest.param("2026-11-27 12:00", "06:00", "UTC", "2026-11-28 06:00", id="past-tomorrow"),
    pytest.param("2026-12-31 23:30", "00:15", "UTC", "2027-01-01 00:15", id="new-year"),
    pytest.param("2026-11-27 04:00", "06:00", "Europe/Berlin", "2026-11-27 05:00", id="cet"),
    pytest.param("2026-07-01 03:00", "06:00", "Europe/Berlin", "2026-07-01 04:00", id="cest"),
    pytest.param(
        "2026-11-27 23:30", "06:00", "Europe/Berlin", "2026-11-28 05:00", id="local-next-day"
    ),
    pytest.param(
        "2026-11-27 12:00", "06:00", "America/New_York", "2026-11-28 11:00", id="west-of-utc"
    ),
    # 29 March 2026: Berlin's clocks go from 02:00 to 03:00 (01:00 UTC); 02:30 does not
    # exist and comes an hour later, at 03:30 CEST.
    pytest.param(
        "2026-03-28 12:00", "02:30", "Europe/Berlin", "2026-03-29 01:30", id="skipped-hour"
    ),
    pytest.param("2026-03-28 12:00", "06:00", "Europe/Berlin", "2026-03-29 04:00", id="spring"),
    # 25 October 2026: from 03:00 CEST back to 02:00 CET (01:00 UTC); 02:30 comes twice,
    # the summary once: at the first, and then the next day.
    pytest.param(
        "2026-10-24 12:00", "02:30", "Europe/Berlin", "2026-10-25 00:30", id="repeated-hour"
    ),
    pytest.param(
        "2026-10-25 00:30", "02:30", "Europe/Berlin", "2026-10-26 01:30", id="repeated-once"
    ),
]


@pytest.mark.parametrize(("now", "at", "zone", "expected"), NEXT)
def test_next_summary(now: str, at: str, zone: str, expected: str) -> None:
    assert next_summary(utc(now), at, zone) == utc(expected)


NOW = datetime(2026, 11, 27, 6, 0, tzinfo=UTC)
CX700 = rule_key(model="CX700")


def fleet_report() -> Any:
    seen = "2026-11-26T09:00:00Z"
    devices = [
        seen_device("00-04-F2-00-00-01", CU8, last_seen=seen),
        seen_device("00-04-F2-00-00-02", CU7),  # last seen in January: unseen
        seen_device("00-04-F2-00-00-03", CU7, model="CX700", last_seen=seen),
    ]
    catalog = catalog_of(make_rule(CU8), make_rule(CU8, rule_id=2, key=CX700))
    return drift_report(devices, catalog, [], NOW, unseen_days=14)


def collect() -> tuple[Logger, list[LogEvent]]:
    events: list[LogEvent] = []
    return Logger(namespace="ucupdates.rollout", observer=events.append), events


def test_one_event_per_model_with_its_totals() -> None:
    logger, events = collect()
    assert log_drift_summary(fleet_report(), logger) == 2
    assert [e["event"] for e in events] == [SUMMARY_EVENT] * 2
    first = events[0]
    assert (first["brand"], first["model"], first["approved"]) == ("Polycom", "CX600", CU8)
    assert (first["devices"], first["current"], first["behind"], first["unseen_days"]) == (
        2,
        1,
        1,
        14,
    )


def test_summary_reaches_syslog_as_rfc5424_with_structured_data() -> None:
    sender = MemorySender()
    observer = Rfc5424Observer(
        SyslogSettings(enabled=True), "appliance.example.com", "4242", sender
    )
    log_drift_summary(fleet_report(), Logger(namespace="ucupdates.rollout", observer=observer))
    assert len(sender.messages) == 2
    text = sender.messages[0].decode()
    m = re.fullmatch(
        r"<(\d+)>1 \S+Z appliance\.example\.com ucupdates 4242 rollout\.drift\.summary"
        r" \[ucupdates@32473 (?P<sd>[^\]]*)\] (?P<msg>.*)",
        text,
    )
    assert m is not None, text
    assert m.group(1) == "134"  # local0, informational
    params = dict(re.findall(r'(\S+)="([^"]*)"', m.group("sd")))
    assert params == {
        "ahead": "0",
        "approved": CU8,
        "behind": "1",
        "brand": "Polycom",
        "current": "1",
        "devices": "2",
        "model": "CX600",
        "reverted": "0",
        "silent": "0",
        "stuck": "0",
        "unknown": "0",
        "unseen": "1",
        "unseen_days": "14",
    }
    assert m.group("msg").startswith("drift Polycom CX600: 2 devices, 1 on the approved version")
    assert "None" not in text


def test_a_model_with_no_rule_has_no_approved_field() -> None:
    sender = MemorySender()
    observer = Rfc5424Observer(SyslogSettings(enabled=True), "h", "1", sender)
    report = drift_report([seen_device(model="CX3000")], catalog_of(), [], NOW)
    log_drift_summary(report, Logger(namespace="ucupdates.rollout", observer=observer))
    (message,) = sender.messages
    assert b"approved=" not in message
    assert b"approved version -," in message  # the text shows none as `-`


def test_the_timer_logs_once_a_day_at_local_time() -> None:
    clock = FixedClock(datetime(2026, 11, 27, 4, 0, tzinfo=UTC))  # 05:00 in Berlin
    reactor = Clock()
    logger, events = collect()
    asked: list[datetime] = []

    def report(now: datetime) -> Any:
        asked.append(now)
        return fleet_report()

    timer = DriftSummaryService(report, "06:00", "Europe/Berlin", clock, reactor, logger)

    def advance(seconds: float) -> None:
        clock.advance(seconds=seconds)
        reactor.advance(seconds)

    timer.startService()
    assert timer.due == datetime(2026, 11, 27, 5, 0, tzinfo=UTC)
    advance(3599)
    assert events == []
    advance(1)
    assert asked == [datetime(2026, 11, 27, 5, 0, tzinfo=UTC)]
    assert len(events) == 2
    assert timer.due == datetime(2026, 11, 28, 5, 0, tzinfo=UTC)
    for _ in range(3):  # three more days, one summary each
        advance(86400)
    assert len(asked) == 4
    timer.stopService()
    assert reactor.getDelayedCalls() == []


def test_a_timer_a_little_early_still_runs_once() -> None:
    clock = FixedClock(datetime(2026, 11, 27, 5, 59, tzinfo=UTC))
    reactor = Clock()
    logger, events = collect()
    timer = DriftSummaryService(lambda now: fleet_report(), "06:00", "UTC", clock, reactor, logger)
    timer.startService()
    reactor.advance(60)  # the reactor's minute passes; the wall clock lags a second behind
    clock.advance(seconds=59)
    assert len(events) == 2
    assert timer.due == datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    timer.stopService()


def test_a_failing_report_is_logged_and_the_timer_goes_on() -> None:
    clock = FixedClock(datetime(2026, 11, 27, 5, 0, tzinfo=UTC))
    reactor = Clock()
    logger, events = collect()

    def broken(now: datetime) -> Any:
        raise RuntimeError("database is locked")

    timer = DriftSummaryService(broken, "06:00", "UTC", clock, reactor, logger)
    timer.startService()
    clock.advance(hours=1)
    reactor.advance(3600)
    assert "could not make the daily drift summary" in events[0]["log_format"]
    assert timer.due == datetime(2026, 11, 28, 6, 0, tzinfo=UTC)
    timer.stopService()


def test_service_from_settings_reads_the_store() -> None:
    store = memory_store()
    store.record_device(seen_device(model="CX3000"))
    settings = RolloutSettings(drift_summary_at="07:30", drift_summary_zone="Europe/Berlin")
    timer = drift_summary_service(store, settings, FixedClock(NOW), Clock())
    assert timer is not None
    assert (timer.at, timer.zone) == ("07:30", "Europe/Berlin")
    report = timer.report(NOW)
    assert report == read_drift(store, NOW, 14)
    assert [r.model for r in report.rows] == ["CX3000"]
    assert (
        drift_summary_service(store, RolloutSettings(drift_summary_at=""), FixedClock(), Clock())
        is None
    )


def test_config_keys(tmp_path: Path) -> None:
    path = tmp_path / "ucupdates.toml"
    path.write_text(
        '[rollouts]\ndrift_unseen_days = 30\ndrift_summary_at = "7:05"\n'
        'drift_summary_zone = "Europe/Berlin"\n'
    )
    rollouts = load_config(path).rollouts
    assert (rollouts.drift_unseen_days, rollouts.drift_summary_at) == (30, "07:05")
    assert rollouts.drift_summary_zone == "Europe/Berlin"
    defaults = load_config(None).rollouts
    assert (defaults.drift_unseen_days, defaults.drift_summary_at) == (14, "06:00")
    for bad in ('drift_summary_at = "25:00"', 'drift_summary_zone = "Mars/Olympus"'):
        path.write_text(f"[rollouts]\n{bad}\n")
        with pytest.raises(ConfigError, match="drift_summary"):
            load_config(path)
    path.write_text("[rollouts]\ndrift_unseen_days = 0\n")
    with pytest.raises(ConfigError, match="drift_unseen_days"):
        load_config(path)
    path.write_text('[rollouts]\ndrift_summary_at = ""\n')
    assert load_config(path).rollouts.drift_summary_at == ""


def test_next_summary_is_after_now_over_a_year() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    for _ in range(400):  # bounded: a year and some, through both changes
        due = next_summary(now, "02:30", "Europe/Berlin")
        assert now < due <= now + timedelta(days=1, hours=1)
        now = due


def test_serve_wires_the_daily_summary_in_the_first_worker(tmp_path: Path) -> None:
    from twisted.internet.testing import MemoryReactorClock

    from appliance.service import make_service
    from appliance.store import Store
    from appliance.tls import ensure_test_certificates

    text = 'data_dir = "data"\n[rollouts]\ndrift_summary_at = "05:30"\n'
    config = config_from(tmp_path, text)
    credentials = ensure_test_certificates(config.tls_dir, ["ucupdates-r2.example.com"])
    store = Store.open(config.db_path)
    try:
        for first, expected in ((True, 1), (False, 0)):
            root = make_service(
                config, MemoryReactorClock(), store, credentials, first_worker=first
            )
            timers = [s for s in root if isinstance(s, DriftSummaryService)]
            assert len(timers) == expected
            assert all(t.at == "05:30" for t in timers)
        config = config_from(tmp_path, 'data_dir = "data"\n[rollouts]\ndrift_summary_at = ""\n')
        root = make_service(config, MemoryReactorClock(), store, credentials)
        assert not [s for s in root if isinstance(s, DriftSummaryService)]
    finally:
        store.close()
