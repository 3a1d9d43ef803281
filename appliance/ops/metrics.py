"""Prometheus metrics (docs/operations.md, Monitoring): what the service counts, read at scrape.

The phone, DNS and DHCP paths pay next to nothing for them: the objects that answer keep
plain integer counters (a dict increment beside what they already do), and
`ApplianceCollector` turns them into metric families only when Prometheus scrapes. What
the composition root hands in is a `Readings`: callables that return plain numbers and
mappings, so this module imports nothing of the phones or of discovery. The store's
figures (catalogue, inventory) are read at most every `STORE_SECONDS` (on PostgreSQL in a
thread, a scrape showing the last figures read).

Labels stay bounded: zones, outcomes and answer kinds are closed sets; a model or version
is shown only when the catalogue knows it (an imported update), any other as `other`, so a
phone sending made-up models cannot grow the series. No label holds a user name, a MAC,
a serial number or an address.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from appliance.model import RuleState, Zone
from appliance.store import Store

log = Logger(namespace="ucupdates.metrics")

OTHER = "other"  # the label of a model or version the catalogue does not know
STORE_SECONDS = 10.0  # the catalogue and inventory figures are this fresh at most
CHECK_OUTCOMES = (  # catalogue.Reason's values, then RolloutReason's (a test holds them
    # equal): every series exists from the start, so an alert on one has a series to look at
    "no-rule",
    "no-version",
    "up-to-date",
    "approved",
    "pending-test-device",
    "missing-files",
    "broken-files",
    "excluded",
    "held",
    "not-in-stage",
    "stage-paused",
    "upgrade-path",
    "outside-window",
)
IMPORT_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DNS_ANSWERS = {  # label -> the responder's counters summed into it
    "cache": ("cache_hits",),
    "local": ("local_replies",),
    "upstream": ("upstream_answers",),
    "servfail": ("upstream_timeouts", "upstream_errors"),
    "malformed": ("malformed",),
}
DHCP_OUTCOMES = ("answered", "ignored", "malformed", "untrusted_relay")
LOCKOUT_SCOPES = ("user", "user_source", "source")
DOWNLOAD_RESULTS = ("complete", "interrupted", "refused")

Figures = Mapping[str, int]


def _nothing() -> Figures:
    return {}


@dataclass
class Readings:
    """Where the collector reads, each a callable returning plain figures. None: the part
    is not running here (DNS and DHCP in a second worker, DHCP when disabled)."""

    checks: Callable[[], Mapping[tuple[str, str], int]] = dict  # (zone, outcome) -> count
    offers: Callable[[], Mapping[tuple[str, str], int]] = dict  # (model, version) -> count
    last_check: Callable[[], datetime | None] = lambda: None
    downloads: Callable[[], Figures] = _nothing  # active, bytes, complete, interrupted, refused
    auth: Callable[[], Figures] = _nothing  # failures, lockout_<scope>
    dns: Callable[[], Figures] | None = None  # the responder's COUNTERS
    dhcp: Callable[[], Figures] | None = None  # outcome -> count
    certificate_expiry: Callable[[], datetime] | None = None
    store: Store | None = None
    # PostgreSQL: the store's figures are read in a thread (`offload(work)` returns a
    # Deferred), never at a scrape on the reactor thread; a scrape shows the last read.
    offload: Callable[[Callable[[], StoreFigures]], Deferred[StoreFigures]] | None = None


@dataclass(frozen=True)
class StoreFigures:
    """What the store says about the catalogue and the devices, with labels bounded."""

    rules: Mapping[str, int]  # state -> rules
    files: int
    bytes: int
    devices: Mapping[tuple[str, str], int]  # (model, version) -> devices seen
    known: Mapping[str, tuple[str, frozenset[str]]]  # folded model -> its name, versions

    @classmethod
    def read(cls, store: Store) -> StoreFigures:
        rules = Counter(r.state.value for r in store.rules())
        stored = store.stored_files()
        names: dict[str, str] = {}
        versions: dict[str, set[str]] = {}
        for key, version in store.updates():
            folded = key.model.casefold()
            names.setdefault(folded, key.model)
            versions.setdefault(folded, set()).add(version)
        known = {m: (names[m], frozenset(v)) for m, v in versions.items()}
        seen = Counter((d.model or "", d.version or "") for d in store.devices())
        return cls(
            {s.value: rules.get(s.value, 0) for s in RuleState},
            len(stored),
            sum(f.size for f in stored),
            bounded(seen, known),
            known,
        )


def bounded(
    figures: Mapping[tuple[str, str], int], known: Mapping[str, tuple[str, frozenset[str]]]
) -> dict[tuple[str, str], int]:
    """(model, version) counts with what the catalogue does not know as `other`: a model
    it has no update for, a version of a known model it has no update of."""
    out: dict[tuple[str, str], int] = {}
    for (model, version), count in figures.items():
        name, versions = known.get(model.casefold(), (OTHER, frozenset()))
        key = (name, version if version in versions else OTHER)
        out[key] = out.get(key, 0) + count
    return out


class ApplianceCollector(Collector):
    """Every `ucupdates_*` family, built from the readings at each scrape."""

    def __init__(self, readings: Readings, clock: Callable[[], float] = time.monotonic) -> None:
        self.readings = readings
        self.clock = clock
        self._store: tuple[float, StoreFigures] | None = None
        self._reading = False  # a read in a thread is running (`Readings.offload`)
        self.version = _version()

    def store_figures(self) -> StoreFigures | None:
        """The store's figures, read again when older than STORE_SECONDS; when the store
        cannot be read (a disk error), the last ones read, or none: the rest of the
        metrics are still served."""
        if self.readings.store is None:
            return None
        now = self.clock()
        if self._store is None or now - self._store[0] >= STORE_SECONDS:
            if self.readings.offload is not None:
                self._read_in_thread(self.readings.offload, self.readings.store, now)
                return None if self._store is None else self._store[1]
            try:
                self._store = (now, StoreFigures.read(self.readings.store))
            except Exception:
                log.failure("metrics: the catalogue and inventory figures cannot be read")
                return None if self._store is None else self._store[1]
        return self._store[1]

    def _read_in_thread(
        self,
        offload: Callable[[Callable[[], StoreFigures]], Deferred[StoreFigures]],
        store: Store,
        now: float,
    ) -> None:
        """Start a read of the store's figures unless one runs; kept when it is done."""
        if self._reading:
            return
        self._reading = True

        def done(figures: StoreFigures) -> None:
            self._store = (now, figures)

        def failed(failure: Failure) -> None:
            log.failure("metrics: the catalogue and inventory figures cannot be read", failure)

        reading = offload(lambda: StoreFigures.read(store))
        reading.addCallbacks(done, failed).addBoth(lambda _: setattr(self, "_reading", False))

    def collect(self) -> Iterator[Metric]:
        r = self.readings
        yield InfoMetricFamily(
            "ucupdates_build", "The running ucupdates version.", value={"version": self.version}
        )
        figures = self.store_figures()
        yield from self._phones(figures)
        yield from _downloads(r.downloads())
        yield from _auth(r.auth())
        if r.dns is not None:
            yield from _dns(r.dns())
        if r.dhcp is not None:
            yield from _dhcp(r.dhcp())
        if r.certificate_expiry is not None:
            yield from _certificate(r.certificate_expiry())
        if figures is not None:
            yield from _catalogue(figures)

    def _phones(self, figures: StoreFigures | None) -> Iterable[Metric]:
        checks = CounterMetricFamily(
            "ucupdates_checks",
            "Update checks answered, by zone and outcome (the decision's reason).",
            labels=("zone", "outcome"),
        )
        counted = self.readings.checks()
        for zone in Zone:
            for outcome in CHECK_OUTCOMES:
                checks.add_metric((zone.value, outcome), counted.get((zone.value, outcome), 0))
        yield checks
        last = self.readings.last_check()
        if last is not None:
            yield GaugeMetricFamily(
                "ucupdates_last_check_timestamp_seconds",
                "When this process last answered an update check (Unix time).",
                value=last.timestamp(),
            )
        offers = CounterMetricFamily(
            "ucupdates_offers",
            "Updates offered to phones, by model and version (catalogue's; else other).",
            labels=("model", "version"),
        )
        known = figures.known if figures is not None else {}
        for (model, version), count in sorted(bounded(self.readings.offers(), known).items()):
            offers.add_metric((model, version), count)
        yield offers
        if figures is not None:
            devices = GaugeMetricFamily(
                "ucupdates_devices",
                "Devices in the inventory, by model and the version they last reported "
                "(catalogue's; else other).",
                labels=("model", "version"),
            )
            for (model, version), count in sorted(figures.devices.items()):
                devices.add_metric((model, version), count)
            yield devices


def _downloads(figures: Figures) -> Iterable[Metric]:
    yield GaugeMetricFamily(
        "ucupdates_downloads_in_flight",
        "Image bodies being sent now.",
        value=figures.get("active", 0),
    )
    yield CounterMetricFamily(
        "ucupdates_download_sent_bytes",
        "Image bytes handed to the network, counted when each body ends.",
        value=figures.get("bytes", 0),
    )
    results = CounterMetricFamily(
        "ucupdates_downloads",
        "Image downloads by result: complete, interrupted (lost, stalled), refused (503).",
        labels=("result",),
    )
    for result in DOWNLOAD_RESULTS:
        results.add_metric((result,), figures.get(result, 0))
    yield results


def _auth(figures: Figures) -> Iterable[Metric]:
    yield CounterMetricFamily(
        "ucupdates_auth_failures",
        "Wrong or unknown credentials from external phones (Basic and NTLM).",
        value=figures.get("failures", 0),
    )
    lockouts = CounterMetricFamily(
        "ucupdates_auth_lockouts",
        "Lockouts started, by what is locked: a user name, a user name from one source "
        "address, or a source address.",
        labels=("scope",),
    )
    for scope in LOCKOUT_SCOPES:
        lockouts.add_metric((scope,), figures.get("lockout_" + scope, 0))
    yield lockouts


def _dns(counters: Figures) -> Iterable[Metric]:
    queries = CounterMetricFamily(
        "ucupdates_dns_queries", "DNS queries received, by transport.", labels=("transport",)
    )
    queries.add_metric(("udp",), counters.get("udp_queries", 0))
    queries.add_metric(("tcp",), counters.get("tcp_queries", 0))
    yield queries
    answers = CounterMetricFamily(
        "ucupdates_dns_answers",
        "DNS queries by how they were answered: cache (a reply reused), local (decided "
        "here), upstream (relayed), servfail (no upstream answered), malformed (dropped).",
        labels=("answer",),
    )
    for label, names in DNS_ANSWERS.items():
        answers.add_metric((label,), sum(counters.get(n, 0) for n in names))
    yield answers
    limited = CounterMetricFamily(
        "ucupdates_dns_rrl",
        "UDP answers held back by response rate limiting: dropped, or slipped (sent truncated).",
        labels=("action",),
    )
    limited.add_metric(("dropped",), counters.get("rrl_dropped", 0))
    limited.add_metric(("slipped",), counters.get("rrl_slipped", 0))
    yield limited
    tcp = CounterMetricFamily(
        "ucupdates_dns_tcp_connections",
        "DNS TCP connections: accepted, or refused over dns.max_tcp_connections or "
        "dns.max_tcp_per_client.",
        labels=("result",),
    )
    tcp.add_metric(("accepted",), counters.get("tcp_connections", 0))
    refused = counters.get("tcp_refused", 0) + counters.get("tcp_refused_per_client", 0)
    tcp.add_metric(("refused",), refused)
    yield tcp


def _dhcp(counts: Figures) -> Iterable[Metric]:
    messages = CounterMetricFamily(
        "ucupdates_dhcp_messages",
        "DHCP messages by outcome: answered (a DHCPINFORM), ignored, malformed, untrusted_relay.",
        labels=("outcome",),
    )
    for outcome in DHCP_OUTCOMES:
        messages.add_metric((outcome,), counts.get(outcome, 0))
    yield messages


def _certificate(not_after: datetime) -> Iterable[Metric]:
    """The expiry as a timestamp (days left: `(this - time()) / 86400` in PromQL)."""
    yield GaugeMetricFamily(
        "ucupdates_certificate_expiry_timestamp_seconds",
        "When the server certificate expires (Unix time).",
        value=not_after.timestamp(),
    )


def _catalogue(figures: StoreFigures) -> Iterable[Metric]:
    rules = GaugeMetricFamily(
        "ucupdates_catalogue_rules", "Rules in the catalogue, by state.", labels=("state",)
    )
    for state, count in figures.rules.items():
        rules.add_metric((state,), count)
    yield rules
    yield GaugeMetricFamily(
        "ucupdates_catalogue_files", "Files in the DeviceUpdateStore.", value=figures.files
    )
    yield GaugeMetricFamily(
        "ucupdates_catalogue_bytes",
        "Bytes of the files in the DeviceUpdateStore.",
        value=figures.bytes,
    )


class ImportMetrics:
    """Package imports this process ran (the Control Panel's uploads), timed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "ucupdates_import_duration_seconds",
            "How long package imports took, whatever their result.",
            buckets=IMPORT_BUCKETS,
            registry=registry,
        )
        self.results = PromCounter(
            "ucupdates_imports",
            "Package imports by result: imported, refused (a bad or conflicting package), failed.",
            ("result",),
            registry=registry,
        )
        for result in ("imported", "refused", "failed"):
            self.results.labels(result)

    def observe(self, seconds: float, result: str) -> None:
        self.duration.observe(seconds)
        self.results.labels(result).inc()


def make_registry(readings: Readings) -> tuple[CollectorRegistry, ImportMetrics]:
    """A registry of its own: the appliance's families, the process's, the imports'."""
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ApplianceCollector(readings))
    ProcessCollector(registry=registry)
    return registry, ImportMetrics(registry)


def _version() -> str:
    try:
        return metadata.version("ucupdates")
    except metadata.PackageNotFoundError:
        return "unknown"
