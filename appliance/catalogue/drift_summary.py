"""The drift report read from the store, and its daily summary in the log (so in syslog).

Once a day at `rollouts.drift_summary_at` in `rollouts.drift_summary_zone`, `serve` logs
one `rollout.drift.summary` event per brand and model, its totals as named fields (so as
RFC 5424 structured data: docs/events.md). Nothing is logged for an empty inventory.
The day's moment keeps its local time across daylight-saving changes: a time in the hour
the clocks skip comes an hour later that day; one in the hour they repeat comes once.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from twisted.application import service
from twisted.logger import Logger

from appliance.catalogue.drift import DriftReport, drift_report
from appliance.config import RolloutSettings
from appliance.store import Store

log = Logger(namespace="ucupdates.rollout")

SUMMARY_EVENT = "rollout.drift.summary"


def read_drift(store: Store, now: datetime, unseen_days: int) -> DriftReport:
    """The drift report over what the store holds now."""
    return drift_report(store.devices(), store.catalog(), store.offers(), now, unseen_days)


def next_summary(now: datetime, at: str, zone: str) -> datetime:
    """The first moment after `now` (aware) when the clock of `zone` reads `at` (HH:MM),
    in UTC."""
    tz = ZoneInfo(zone)
    hour, minute = (int(p) for p in at.split(":"))
    day = now.astimezone(tz).date()
    for offset in range(3):  # today, else tomorrow (the day after: a skipped day's margin)
        local = datetime.combine(day + timedelta(days=offset), time(hour, minute), tz)
        # A time the clocks skip maps to the hour after; convert through UTC to normalise.
        moment = local.astimezone(UTC)
        if moment > now:
            return moment
    raise AssertionError("unreachable: a day later is always after now")


def log_drift_summary(report: DriftReport, logger: Logger = log) -> int:
    """One `rollout.drift.summary` event per brand and model; returns how many."""
    totals = report.per_model()
    for t in totals:
        c = t.counts
        logger.info(
            "drift {brand} {model}: {devices} devices, {current} on the approved version"
            " {approved}, {behind} behind, {ahead} ahead, {unknown} unknown, {stuck} stuck,"
            " {reverted} reverted, {silent} silent, {unseen} unseen for {unseen_days} days",
            brand=t.brand,
            model=t.model,
            approved=",".join(t.approved) or None,
            unseen_days=report.unseen_days,
            event=SUMMARY_EVENT,
            **c.as_json(),
        )
    return len(totals)


class DriftSummaryService(service.Service):
    """Logs the drift summary every day at `at` (HH:MM) local time in `zone`."""

    def __init__(
        self,
        report: Callable[[datetime], DriftReport],
        at: str,
        zone: str,
        clock: Callable[[], datetime],
        reactor: Any,
        logger: Logger = log,
        offload: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        """`offload` (PostgreSQL): runs the report's reading and logging in a thread."""
        self.offload = offload
        self.report = report
        self.logger = logger
        self.at = at
        self.zone = zone
        self.clock = clock
        self.reactor = reactor
        self.due: datetime | None = None  # the next summary's moment
        self._call: Any = None

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]  # Twisted: unannotated
        self._schedule(self.clock())

    def _schedule(self, after: datetime) -> None:
        self.due = next_summary(after, self.at, self.zone)
        delay = max((self.due - self.clock()).total_seconds(), 0.0)
        self._call = self.reactor.callLater(delay, self._run)

    def _run(self) -> None:
        due = self.due or self.clock()
        now = self.clock()
        if self.offload is None:
            self._summarise(now)
        else:
            self.offload(lambda: self._summarise(now))
        # from the later of now and the moment due: a timer a little early runs once a day
        self._schedule(max(self.clock(), due))

    def _summarise(self, now: datetime) -> None:
        try:
            log_drift_summary(self.report(now), self.logger)
        except Exception:
            self.logger.failure("could not make the daily drift summary")

    def stopService(self) -> Any:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        return super().stopService()  # type: ignore[no-untyped-call]  # Twisted: unannotated


def drift_summary_service(
    store: Store,
    settings: RolloutSettings,
    clock: Callable[[], datetime],
    reactor: Any,
    offload: Callable[[Callable[[], None]], object] | None = None,
) -> DriftSummaryService | None:
    """The service for `config.rollouts` (None when `drift_summary_at` is ""); `offload`:
    the summary made in a thread (PostgreSQL)."""
    if not settings.drift_summary_at:
        return None
    days = settings.drift_unseen_days
    return DriftSummaryService(
        lambda now: read_drift(store, now, days),
        settings.drift_summary_at,
        settings.drift_summary_zone,
        clock,
        reactor,
        offload=offload,
    )
