"""`ucupdates check` read as a monitoring system reads a plugin.

A strict parser of the output format the Monitoring Plugins Development Guidelines give
(the status line, `|`, the performance data grammar with quoted labels, units and
threshold ranges, the long-text lines, the exit status) checks every status path through
the real command: OK, WARNING (disk filling, no update check for a day), CRITICAL (a
listener down, the disk full) and UNKNOWN (a config that cannot be read). Debian's
Monitoring::Plugin (libmonitoring-plugin-perl), the plugins' own Perl library, parses the
same performance data as a second reader. The thresholds themselves are tested in process.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from appliance.catalogue.importer import import_package
from appliance.catalogue.sample import sample_check
from appliance.cli.main import main
from appliance.config import CheckSettings, Config
from appliance.model import Device
from appliance.ops.figures import check_disk, check_phones, check_rules
from appliance.ops.perfdata import Perf, perfdata, quote_label
from appliance.ops.plugin import plugin_text
from appliance.ops.results import CheckResult
from appliance.store import Store
from appliance.testing import REPO, free_port, run_cli, serving

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
STATUSES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}
UOMS = {"", "s", "ms", "us", "%", "B", "KB", "MB", "GB", "TB", "c"}

# -- a strict reader of plugin output -------------------------------------------------------------

_NUM = r"-?(?:\d+(?:\.\d*)?|\.\d+)"
_RANGE = re.compile(rf"(@)?(?:(~|{_NUM}):)?({_NUM})?")
_LABEL = r"'(?:[^']|'')+'|[^'= ][^= ]*"
_PERF = re.compile(
    rf"(?P<label>{_LABEL})=(?P<value>{_NUM}|U)(?P<uom>[a-zA-Z%]*)"
    r"(?:;(?P<warn>[^; ]*))?(?:;(?P<crit>[^; ]*))?(?:;(?P<min>[^; ]*))?(?:;(?P<max>[^; ]*))?"
)
_FIRST = re.compile(r"(?P<service>[A-Z][A-Z0-9_]*) (?P<status>OK|WARNING|CRITICAL|UNKNOWN) - "
                    r"(?P<summary>[^|]+?)(?: \| (?P<perf>.+))?")  # fmt: skip
_DETAIL = re.compile(r"(?P<status>OK|WARNING|CRITICAL) (?P<name>[^:|]+): (?P<detail>[^|]*)")


@dataclass(frozen=True)
class Range:
    """A threshold range: alert outside start..end (inside with `@`)."""

    start: float  # -inf for `~`
    end: float  # inf when open
    inside: bool

    def alerts(self, value: float) -> bool:
        within = self.start <= value <= self.end
        return within if self.inside else not within


@dataclass(frozen=True)
class Figure:
    label: str
    value: float | None
    uom: str
    warn: Range | None
    crit: Range | None
    min: float | None
    max: float | None
    raw: dict[str, str] = field(compare=False)


@dataclass(frozen=True)
class PluginOutput:
    service: str
    status: str
    summary: str
    figures: dict[str, Figure]
    details: list[tuple[str, str, str]]  # (status, check name, detail)


def parse_range(text: str) -> Range | None:
    if text == "":
        return None
    m = _RANGE.fullmatch(text)
    assert m and (m.group(2) or m.group(3)), f"not a threshold range: {text!r}"
    inside, start, end = m.group(1), m.group(2), m.group(3)
    low = 0.0 if start is None else float("-inf") if start == "~" else float(start)  # `10`: 0..10
    high = float(end) if end is not None else float("inf")
    assert low <= high, f"a range whose start is above its end: {text!r}"
    return Range(low, high, inside == "@")


def parse_perfdata(text: str) -> dict[str, Figure]:
    assert text == text.strip() and "  " not in text, f"perfdata not single-spaced: {text!r}"
    figures: dict[str, Figure] = {}
    rest = text
    while rest:
        m = _PERF.match(rest)
        assert m, f"not performance data: {rest!r}"
        after = rest[m.end() :]
        assert after == "" or after.startswith(" "), f"junk after a figure: {rest!r}"
        rest = after[1:]
        raw = {k: v for k, v in m.groupdict().items() if v is not None}
        label = raw["label"]
        if label.startswith("'"):
            label = label[1:-1].replace("''", "'")
        assert label not in figures, f"label {label!r} twice"
        assert raw["uom"] in UOMS, f"unit {raw['uom']!r} of {label}"
        for bound in ("min", "max"):
            assert re.fullmatch(rf"(?:{_NUM})?", raw.get(bound, "")), raw
        value = None if raw["value"] == "U" else float(raw["value"])
        if raw["uom"] == "%" and value is not None:
            assert 0 <= value <= 100, raw
        figures[label] = Figure(
            label,
            value,
            raw["uom"],
            parse_range(raw.get("warn", "")),
            parse_range(raw.get("crit", "")),
            float(raw["min"]) if raw.get("min") else None,
            float(raw["max"]) if raw.get("max") else None,
            raw,
        )
    return figures


def parse_plugin(stdout: str, exit_status: int) -> PluginOutput:
    """Everything the guidelines ask of the output, checked; the parts returned."""
    assert stdout.endswith("\n") and "\r" not in stdout, repr(stdout)
    first, *rest = stdout[:-1].split("\n")
    m = _FIRST.fullmatch(first)
    assert m, f"not a plugin status line: {first!r}"
    assert STATUSES[m.group("status")] == exit_status, (m.group("status"), exit_status)
    figures = parse_perfdata(m.group("perf")) if m.group("perf") else {}
    details = []
    for line in rest:
        d = _DETAIL.fullmatch(line)
        assert d, f"not a detail line (or a `|` in one): {line!r}"
        details.append((d.group("status"), d.group("name"), d.group("detail")))
    if details:  # the first line's status is the worst of the checks'
        worst = max(STATUSES[s] for s, _, _ in details)
        assert worst == exit_status, (details, exit_status)
    for f in figures.values():  # a figure past its own threshold is reflected in the status
        if f.value is not None and f.crit is not None and f.crit.alerts(f.value):
            assert exit_status == 2, f
        elif f.value is not None and f.warn is not None and f.warn.alerts(f.value):
            assert exit_status >= 1, f
    return PluginOutput(m.group("service"), m.group("status"), m.group("summary"), figures, details)


# -- the parser and the writer agree ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "low", "high", "inside"),
    [
        ("10", 0, 10, False),
        ("10:", 10, float("inf"), False),
        ("~:10", float("-inf"), 10, False),
        ("10:20", 10, 20, False),
        ("@10:20", 10, 20, True),
        ("-5.5:0", -5.5, 0, False),
    ],
)
def test_the_reader_knows_every_range_form(
    text: str, low: float, high: float, inside: bool
) -> None:
    assert parse_range(text) == Range(low, high, inside)


@pytest.mark.parametrize("text", ["a=1 b=2 a=3", "a=1x", "a=1;;;;;", "'a=1", "a=1  b=2", "a=1;2:1"])
def test_the_reader_refuses_what_the_guidelines_do_not_allow(text: str) -> None:
    with pytest.raises(AssertionError):
        parse_perfdata(text)


def test_perfdata_is_written_as_the_guidelines_say() -> None:
    figures = [
        Perf("data_free", 1536, "B", "1024:", "256:", 0, 4096),
        Perf("it's odd", 0.5, "s"),
        Perf("a = b", 3, "", "", "", 0),
        Perf("last_check_age", None, "s", "~:86400", "", 0),
        Perf("data_free", 1, "B"),  # a label twice: the first is kept
    ]
    text = perfdata(figures)
    assert text == (
        "data_free=1536B;1024:;256:;0;4096 'it''s odd'=0.5s 'a = b'=3;;;0 last_check_age=U"
    )
    parsed = parse_perfdata(text)
    assert list(parsed) == ["data_free", "it's odd", "a = b", "last_check_age"]
    assert parsed["data_free"].warn == Range(1024, float("inf"), False)
    assert parsed["last_check_age"].value is None
    assert quote_label("plain_label") == "plain_label"


def test_no_pipe_or_newline_of_a_detail_reaches_the_output() -> None:
    results = [
        CheckResult("files", False, "a|b is missing\nsecond line", perfdata=(Perf("x", 1),)),
        CheckResult("disk", True, "low | very", True),
    ]
    text = plugin_text(results, 0.25) + "\n"
    out = parse_plugin(text, 2)
    assert out.summary.startswith("files: a/b is missing second line; disk: low / very")
    assert [s for s, _, _ in out.details] == ["CRITICAL", "WARNING"]
    assert set(out.figures) == {"x", "check_duration"}


def test_an_option_check_does_not_know_is_unknown_not_critical(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A monitoring plugin's usage error exits 3 (UNKNOWN); argparse's 2 reads CRITICAL."""
    status = main(["--data-dir", str(tmp_path), "check", "--warning", "10"])
    out = capsys.readouterr().out
    assert status == 3
    assert parse_plugin(out, status).summary == "unrecognized arguments: --warning 10"
    with pytest.raises(SystemExit) as ended:  # other commands: argparse's usage error
        main(["--data-dir", str(tmp_path), "rules", "--warning", "10"])
    assert ended.value.code == 2


# -- Monitoring::Plugin, the plugins' own Perl library, as a second reader ----------------------

PERL = r"""
use strict; use warnings;
use Monitoring::Plugin::Performance;
my $text = do { local $/; <STDIN> };
my @perf = Monitoring::Plugin::Performance->parse_perfstring($text) or die "unparsable\n";
for my $p (@perf) {
    my $t = $p->threshold;
    print join("\t", $p->label, $p->value, $p->uom // "",
        $t->warning->is_set ? $t->warning : "", $t->critical->is_set ? $t->critical : "",
        $p->min // "", $p->max // ""), "\n";
}
"""


def perl_reads(text: str) -> list[list[str]]:
    if shutil.which("perl") is None:
        pytest.skip("needs perl")
    probe = subprocess.run(["perl", "-MMonitoring::Plugin::Performance", "-e", "1"], check=False)
    if probe.returncode != 0:
        pytest.skip("needs Monitoring::Plugin (Debian package libmonitoring-plugin-perl)")
    done = subprocess.run(
        ["perl", "-e", PERL], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    return [line.split("\t") for line in done.stdout.splitlines()]


def assert_perl_agrees(figures: dict[str, Figure], text: str) -> None:
    known = {label: f for label, f in figures.items() if f.value is not None}  # U: no value
    rows = perl_reads(" ".join(raw_text(known[label]) for label in known))
    assert [row[0] for row in rows] == list(known)
    for label, value, uom, warn, crit, low, high in rows:
        f = known[label]
        assert (float(value), uom) == (f.value, f.uom), label
        assert (warn, crit) == (f.raw.get("warn", ""), f.raw.get("crit", "")), label
        assert (low, high) == (f.raw.get("min", ""), f.raw.get("max", "")), label


def raw_text(figure: Figure) -> str:
    """The figure as written (to hand to another reader)."""
    r = figure.raw
    fields = [r.get(k, "") for k in ("warn", "crit", "min", "max")]
    while fields and not fields[-1]:
        fields.pop()
    return ";".join([f"{r['label']}={r['value']}{r['uom']}", *fields])


def test_monitoring_plugin_reads_our_figures_as_we_do() -> None:
    text = perfdata(
        [
            Perf("cert_days_left", 85, "", "30:", "7:"),
            Perf("data_free", 123456789, "B", "1073741824:", "268435456:", 0, 987654321),
            Perf("data_free_pct", 12.5, "%", "10:", "5:", 0, 100),
            Perf("last_check_age", 61, "s", "~:86400", "", 0),
            Perf("check_duration", 0.125, "s", min=0),
        ]
    )
    assert_perl_agrees(parse_perfdata(text), text)


# -- the thresholds, in process -----------------------------------------------------------------


def device(identity: str, last_seen: datetime) -> Device:
    stamp = last_seen.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Device(
        identity, identity, None, "UCPhone", "Polycom", "CX600", "A", "ENU", "4.0.7577.4366",
        None, "10.0.0.7", None, stamp, stamp,
    )  # fmt: skip


def test_no_phone_yet_is_not_a_warning_but_a_quiet_day_is(config: Config, store: Store) -> None:
    result = check_phones(config, store, NOW)
    assert (result.ok, result.warning) == (True, False)
    assert result.detail == "no phone has checked for updates yet"
    assert {p.label: p.value for p in result.perfdata} == {
        "devices_seen": 0,
        "devices_checked_24h": 0,
        "last_check_age": None,
    }
    store.record_device(device("00-04-F2-00-00-01", NOW - timedelta(hours=30)))
    store.record_device(device("00-04-F2-00-00-02", NOW - timedelta(hours=25)))
    result = check_phones(config, store, NOW)
    assert (result.ok, result.warning) == (True, True)
    assert result.detail.endswith(": none for over 24 h"), result.detail
    store.record_device(device("00-04-F2-00-00-03", NOW - timedelta(minutes=5)))
    result = check_phones(config, store, NOW)
    assert (result.ok, result.warning) == (True, False)
    assert {p.label: p.value for p in result.perfdata} == {
        "devices_seen": 3,
        "devices_checked_24h": 1,
        "last_check_age": 300,
    }
    quieter = dataclasses.replace(config, check=CheckSettings(quiet_warning_hours=0.05))
    assert check_phones(quieter, store, NOW).warning  # 5 min > 3 min


def test_disk_space_warns_then_fails_by_share_or_bytes(config: Config) -> None:
    config.data_dir.mkdir(parents=True)
    ok = check_disk(
        dataclasses.replace(
            config,
            check=CheckSettings(
                disk_warning_percent=0,
                disk_critical_percent=0,
                disk_warning_bytes=0,
                disk_critical_bytes=0,
            ),
        )
    )
    assert (ok.ok, ok.warning) == (True, False)
    free = {p.label: p for p in ok.perfdata}["data_free"]
    assert free.value is not None and free.max is not None and 0 < free.value <= free.max
    warn = check_disk(dataclasses.replace(config, check=CheckSettings(disk_warning_percent=100)))
    assert (warn.ok, warn.warning) == (True, True) and "below 100 %" in warn.detail
    huge = 1 << 60  # more bytes than any disk here has free
    crit = check_disk(dataclasses.replace(config, check=CheckSettings(disk_critical_bytes=huge)))
    assert not crit.ok
    assert {p.label: p.crit for p in crit.perfdata}["data_free"] == f"{huge}:"


def test_rules_are_counted_by_state(config: Config, store: Store, sample_cab: Path) -> None:
    import_package(store, config, sample_cab, "alice")
    result = check_rules(store)
    figures = {p.label: p.value for p in result.perfdata}
    assert figures == {
        "rules_pending": 8,
        "rules_approved": 0,
        "rules_restored": 0,
        "rules_reset": 0,
    }
    assert result.detail == "8 pending, 0 approved, 0 restored, 0 reset"


# -- every status through the real command ------------------------------------------------------

LISTENERS = ("dns", "internal_https", "internal_http", "external_https", "admin")
DISK_LIMITS = ("disk_warning_percent", "disk_critical_percent", "disk_warning_bytes",
               "disk_critical_bytes")  # fmt: skip


@dataclass
class Site:
    base: Path
    data: Path
    ports: dict[str, int]

    def config(self, name: str, check: dict[str, int] | None = None, **ports: int) -> Path:
        """A config file of this data folder and listeners (`ports` moves some); the
        disk limits off unless `check` sets them (this machine's disk is not under test)."""
        path = self.base / f"{name}.toml"
        chosen = self.ports | ports
        limits = dict.fromkeys(DISK_LIMITS, 0) | (check or {})
        path.write_text(
            f"data_dir = {json.dumps(str(self.data))}\n[listeners]\n"
            + "".join(f'{key} = "127.0.0.1:{chosen[key]}"\n' for key in LISTENERS)
            + "[check]\n"
            + "".join(f"{key} = {value}\n" for key, value in limits.items())
        )
        return path

    def check(self, config: Path, *options: str) -> tuple[int, str]:
        done = subprocess.run(
            [*_python(), "-m", "appliance", "--config", str(config), "check", *options],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        assert done.stderr == "", done.stderr  # no traceback, no complaint
        return done.returncode, done.stdout


def _python() -> list[str]:
    import sys

    return [sys.executable]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("plugin")
    data = base / "data"
    package = base / "UCUpdates.cab"
    for args in (("make-sample-package", str(package), "--image-size", "4096"),
                 ("import", str(package))):  # fmt: skip
        done = run_cli(data, *args)
        assert done.returncode == 0, done.stderr
    ports = {key: free_port() for key in LISTENERS}
    yield Site(base, data, ports)


def test_live_check_is_a_monitoring_plugin_on_every_status_path(site: Site) -> None:
    ok_config = site.config("ok")
    with serving(ok_config, site.base / "serve.log"):
        # OK: a healthy appliance that no phone has asked yet.
        status, out = site.check(ok_config)
        ok = parse_plugin(out, status)
        assert (ok.service, ok.status, status) == ("UCUPDATES", "OK", 0), out
        assert ok.summary == f"all {len(ok.details)} checks passed"
        assert {s for s, _, _ in ok.details} == {"OK"}
        assert {
            "cert_days_left", "data_free", "data_free_pct", "rules_pending", "rules_approved",
            "rules_restored", "rules_reset", "devices_seen", "devices_checked_24h",
            "last_check_age", "check_duration",
        } == set(ok.figures)  # fmt: skip
        assert ok.figures["rules_pending"].value == 8 and ok.figures["last_check_age"].value is None
        assert ok.figures["check_duration"].uom == "s"
        assert_perl_agrees(ok.figures, out)

        # WARNING: phones checked, but none for two days.
        store = Store.open(site.data / "ucupdates.sqlite3")
        try:
            store.record_device(device("00-04-F2-00-00-09", datetime.now(UTC) - timedelta(days=2)))
        finally:
            store.close()
        status, out = site.check(ok_config)
        quiet = parse_plugin(out, status)
        assert (quiet.status, status) == ("WARNING", 1), out
        assert quiet.summary.startswith("phones: 1 device(s) seen, 0 checked in the last 24 h")
        assert quiet.figures["last_check_age"].value is not None
        assert quiet.figures["last_check_age"].value > 86400

        # A phone checks for real: OK again.
        request = urllib.request.Request(
            f"http://127.0.0.1:{site.ports['internal_http']}/RequestHandler/ucdevice.upx",
            data=sample_check(),
            headers={"Content-Type": "text/xml"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert answer.status == 200
        for _ in range(200):  # the inventory is written within a second
            status, out = site.check(ok_config, "--json")
            report = json.loads(out)
            seen = {p["label"]: p["value"] for p in report["perfdata"]}
            if seen["devices_seen"] == 2:
                break
        assert (report["plugin_status"], report["exit_status"], status) == ("OK", 0, 0), out
        assert report["status"] == "ok" and seen["devices_checked_24h"] == 1
        assert {c["status"] for c in report["checks"]} == {"OK"}

        # WARNING: the data folder's disk is filling (a limit above what is free).
        filling = site.config("filling", {"disk_warning_percent": 100})
        status, out = site.check(filling)
        disk = parse_plugin(out, status)
        assert (disk.status, status) == ("WARNING", 1), out
        assert [(s, n) for s, n, _ in disk.details if s != "OK"] == [("WARNING", "disk")]
        assert disk.figures["data_free_pct"].warn == Range(100, float("inf"), False)

        # CRITICAL: the admin listener is not there, and the disk is full by the limits.
        down = site.config("down", {"disk_critical_bytes": 1 << 60}, admin=free_port())
        status, out = site.check(down)
        critical = parse_plugin(out, status)
        assert (critical.status, status) == ("CRITICAL", 2), out
        assert [n for s, n, _ in critical.details if s == "CRITICAL"] == ["disk", "listener admin"]
        assert critical.summary.startswith("disk: ") and "; listener admin: " in critical.summary
        status, out = site.check(down, "--json")
        assert status == 2 and json.loads(out)["plugin_status"] == "CRITICAL"

    # UNKNOWN: the check cannot run at all.
    broken = site.base / "broken.toml"
    broken.write_text("[check]\ndisk_warning_percent = 150\n")
    status, out = site.check(broken)
    unknown = parse_plugin(out, status)
    assert (unknown.status, status, unknown.details) == ("UNKNOWN", 3, []), out
    assert "check.disk_warning_percent" in unknown.summary
    status, out = site.check(broken, "--json")
    assert status == 3 and json.loads(out)["plugin_status"] == "UNKNOWN"


def test_live_a_reader_that_stops_early_gets_no_traceback(site: Site) -> None:
    """`ucupdates events | head -1` with more output than a pipe holds: the writer gets
    EPIPE, and ends quietly."""
    store = Store.open(site.data / "ucupdates.sqlite3")
    try:
        with store.transaction():
            for i in range(1500):
                store.append_event("tester", "test.event", f"target number {i:05d}", {"i": i})
    finally:
        store.close()
    cli = f"{_python()[0]} -m appliance --data-dir {site.data}"
    for command in ("events --limit 2000", "check", "rules"):
        done = subprocess.run(
            ["bash", "-o", "pipefail", "-c", f"{cli} {command} | head -1"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            check=False,
        )
        assert len(done.stdout.splitlines()) == 1, (command, done.stdout)
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, (
            command,
            done.stderr,
        )
        assert done.stderr == "", (command, done.stderr)
