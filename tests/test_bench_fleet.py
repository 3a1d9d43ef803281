"""The fleet benchmark's arithmetic and its charts (bench/fleet_series.py, bench/chart.py,
bench/bench_fleet.py), with made-up records: nothing here is timed.

The charts must be SVG a browser reads (parsed here with xml.etree), each series one
polyline with as many points as the series has values; the per-second series and totals
must count what they say (by a check's end, a body's share of each second, nearest rank).
One test (slow tier) runs bench/bench_rollout.py's staged rollout at a tiny size against a
real serve.
"""

from __future__ import annotations

import argparse
import importlib
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

from appliance.phonesim import percentile as phonesim_percentile
from appliance.testing import REPO

SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    """The modules, imported as bench/bench_fleet.py imports them."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return {n: importlib.import_module(n) for n in ("chart", "fleet_series", "bench_fleet")}


def polylines(svg: str) -> list[ET.Element]:
    root = ET.fromstring(svg)  # raises on anything that is not well-formed XML
    assert root.tag == f"{SVG}svg"
    return list(root.iter(f"{SVG}polyline"))


def test_chart_is_svg_with_a_polyline_per_series(bench: dict[str, ModuleType]) -> None:
    chart = bench["chart"]
    a = chart.Series("1,000 phones", [(0.5, 3.0), (1.5, 7.0), (2.5, 0.0)], chart.COLOURS[0])
    b = chart.Series("10,000 <phones> & more", [(0.5, 120.0), (1.5, 166.0)], chart.COLOURS[1])
    cap = chart.Series("cap", [(0, 256), (3, 256)], "#777777", dashed=True)
    svg = chart.svg_chart(
        "The morning storm",
        "a <subtitle>",
        [chart.Panel("checks/s", [a, b]), chart.Panel("in flight", [cap])],
    )
    lines = polylines(svg)
    assert [line.get("data-series") for line in lines] == [a.name, b.name, cap.name]
    for line, series in zip(lines, (a, b, cap), strict=True):
        assert len((line.get("points") or "").split()) == len(series.points)
    assert lines[2].get("stroke-dasharray")
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert {"The morning storm", "a <subtitle>", a.name, b.name, "cap", "checks/s"} <= set(texts)
    assert len(ET.fromstring(svg).findall(f"{SVG}g")) == 2  # a group per panel


def test_chart_points_stay_inside_their_panel(bench: dict[str, ModuleType]) -> None:
    chart = bench["chart"]
    series = chart.Series("s", [(float(x), float(x * x)) for x in range(40)])
    (line,) = polylines(chart.svg_chart("t", "", [chart.Panel("y", [series])]))
    xy = [tuple(map(float, p.split(","))) for p in (line.get("points") or "").split()]
    assert len(xy) == 40
    top, bottom = chart.TOP + 10, chart.TOP + 10 + chart.PANEL_H
    assert all(chart.LEFT <= x <= chart.WIDTH - chart.RIGHT for x, _ in xy)
    assert all(top <= y <= bottom for _, y in xy)
    assert xy[0][1] == bottom  # y = 0 on the panel's floor


def test_axis_ends_on_nice_steps(bench: dict[str, ModuleType]) -> None:
    chart = bench["chart"]
    assert chart.nice_ceiling(0.0) == 1.0
    assert [chart.nice_ceiling(v) for v in (0.7, 1.0, 1.1, 2.2, 3.0, 7.0, 160.0)] == [
        1.0, 1.0, 2.0, 2.5, 5.0, 10.0, 200.0,
    ]  # fmt: skip
    assert chart.axis(11.0, 4) == (15.0, 3)
    assert chart.axis(60.0, 6) == (60.0, 6)
    assert chart.axis(256.0, 4) == (300.0, 3)
    assert chart.axis(0.0, 4) == (4.0, 4)


def test_percentile_is_phone_sims_nearest_rank(bench: dict[str, ModuleType]) -> None:
    fs = bench["fleet_series"]
    values = [float(x) for x in (5, 1, 9, 3, 7, 2, 8, 6, 4, 10)]
    for p in (1, 50, 90, 99, 100):
        assert fs.percentile(values, p) == phonesim_percentile(values, p)
    assert fs.percentile(values, 50) == 5.0
    assert fs.percentile(values, 99) == 10.0
    assert fs.percentile([], 99) == 0.0


def test_merge_and_totals(bench: dict[str, ModuleType]) -> None:
    fs = bench["fleet_series"]
    one = {
        "rounds": [[0.2, 0.21, "current", None, 0.01, 0], [1.0, 1.5, "failed", "tls", None, 0]],
        "downloads": [],
        "cpu_seconds": 1.5,
    }
    two = {
        "rounds": [[0.1, 0.13, "current", None, 0.03, 0], [2.0, 2.02, "updated", None, 0.02, 10]],
        "downloads": [[2.005, 2.02, 10, 2]],
        "cpu_seconds": 0.5,
    }
    merged = fs.merge([one, two])
    assert [r[0] for r in merged["rounds"]] == [0.1, 0.2, 1.0, 2.0]
    assert merged["cpu_seconds"] == 2.0 and merged["processes"] == 2
    t = fs.totals(merged)
    assert t["rounds"] == 4 and t["checks"] == 3  # the failed round never got an answer
    assert t["failures"] == {"tls": 1} and t["failed"] == 1
    assert t["outcomes"] == {"current": 2, "failed": 1, "updated": 1}
    assert t["span_seconds"] == pytest.approx(1.92)
    assert t["checks_per_s"] == pytest.approx(round(3 / 1.92, 1))
    assert t["check_ms"] == {"p50": 20.0, "p99": 30.0, "max": 30.0}
    assert (t["downloads"], t["download_bytes"], t["refused_503"]) == (1, 10, 2)


def test_check_series_counts_by_the_checks_end(bench: dict[str, ModuleType]) -> None:
    fs = bench["fleet_series"]
    rounds = [
        [0.1, 0.2, "current", None, 0.1, 0],
        [0.9, 1.1, "current", None, 0.2, 0],  # started in second 0, answered in 1
        [1.2, 1.5, "current", None, 0.3, 0],
        [1.3, 3.4, "failed", "timeout", None, 0],
    ]
    merged = fs.merge([{"rounds": rounds, "downloads": []}])
    assert fs.seconds_of(merged, []) == 4
    s = fs.check_series(merged, 4)
    assert s["checks_per_s"] == [1.0, 2.0, 0.0, 0.0]
    assert s["p99_ms"] == [100.0, 300.0, None, None]
    assert s["failed"] == [0.0, 0.0, 0.0, 1.0]


def test_download_series_spreads_a_body_over_its_seconds(bench: dict[str, ModuleType]) -> None:
    fs = bench["fleet_series"]
    merged = fs.merge(
        [{"rounds": [], "downloads": [[0.5, 2.5, 2_000_000, 0], [1.0, 2.0, 1_000_000, 1]]}]
    )
    s = fs.download_series(merged, 3)
    assert s["downloads_in_flight"] == [0.5, 2.0, 0.5]
    assert s["mb_per_s"] == [0.5, 2.0, 0.5]  # 1 MB/s for 2 s, plus 1 MB in second 1


def test_server_series_peaks_and_cpu_share(bench: dict[str, ModuleType]) -> None:
    fs = bench["fleet_series"]
    mib = 2**20
    samples = [[0.0, 50 * mib, 10, 1.0], [0.5, 60 * mib, 30, 1.25], [1.0, 55 * mib, 20, 1.5]]
    s = fs.server_series(samples, 3)
    assert s["rss_mib"] == [60.0, 55.0, 55.0]  # a second without a sample keeps the last
    assert s["fds"] == [30, 20, 20]
    assert s["server_cpu_share"] == [0.5, 0.0, 0.0]


def test_growth_is_largest_over_smallest(bench: dict[str, ModuleType]) -> None:
    fs = bench["fleet_series"]
    runs = [
        {"rss_peak_mib": 60.0, "x": 0},
        {"rss_peak_mib": 61.0, "x": 1},
        {"rss_peak_mib": 66.0, "x": 2},
    ]
    assert fs.growth(runs, "rss_peak_mib") == 1.1
    assert fs.growth(runs, "x") is None  # nothing to divide by
    assert fs.growth([], "x") is None


def test_the_benchmarks_charts_from_a_report(bench: dict[str, ModuleType]) -> None:
    bf = bench["bench_fleet"]
    series = {
        "checks_per_s": [3.0, 4.0, 0.0], "p99_ms": [10.0, None, None], "rss_mib": [58.0] * 3,
        "fds": [18.0, 19.0, 18.0], "downloads_in_flight": [1.0, 2.0, 0.5],
        "mb_per_s": [30.0, 60.0, 15.0],
    }  # fmt: skip
    storms = [{"totals": {"phones": n}, "series": series} for n in (1000, 3000)]
    lines = polylines(bf.storm_chart(storms, 60.0))
    assert len(lines) == 8  # 4 panels x 2 runs
    assert [len((x.get("points") or "").split()) for x in lines[:2]] == [3, 3]
    assert [len((x.get("points") or "").split()) for x in lines[2:4]] == [1, 1]  # p99: no None
    rollout = {"totals": {"phones": 1000}, "series": series}
    lines = polylines(bf.rollout_chart(rollout, 256, 30))
    assert [x.get("data-series") for x in lines] == [
        "downloads in flight", "max_downloads", "MB/s", "RSS", "fds",
    ]  # fmt: skip


def test_every_phone_has_its_own_address(bench: dict[str, ModuleType]) -> None:
    address = bench["bench_fleet"].address
    seen = {address(n) for n in range(1, 20_001)}
    assert len(seen) == 20_000
    assert all(a.startswith("127.") and a.rsplit(".", 1)[1] not in ("0", "255") for a in seen)


@pytest.mark.slow  # starts `ucupdates serve`
def test_the_staged_rollout_scenario_at_a_tiny_size(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """bench/bench_rollout.py's staged rollout with 80 phones: a record per stage with the
    figures it reports, and serve's confirmed counts (its offer records) equal to phone-sim's
    own count of the same phones; no stage lets fewer phones in (the buckets hang on the
    store's random salt, so a 5 % stage of 72 phones may hold none), the path walkers end on
    the approved version. Auto-pause is off: with 5 % of 72 phones reverting, whether a stage
    pauses itself before it is done hangs on the salt too (it did, once in three runs)."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    bench_rollout = importlib.import_module("bench_rollout")
    args = argparse.Namespace(
        phones=80,
        path_share=0.1,
        revert_share=0.05,
        concurrency=20,
        jitter=0.5,
        idle=1.0,
        no_auto_pause=True,
    )
    report = bench_rollout.staged(args, tmp_path)
    assert report["phones"] == 80
    stages = report["stages"]
    assert [s["share"] for s in stages] == list(bench_rollout.STAGES)
    keys = {"offered", "updated", "reverted", "paused_itself", "check_ms", "checks", "failed"}
    for s in stages:
        assert keys <= s.keys() and s["server_cpu_per_check_us"] > 0
        assert s["failed"] == 0 and s["checks"] > 0
        assert {k: s[k] for k in ("updated", "reverted", "stuck")} == s["phonesim"]
        assert s["offered"] == s["updated"] + s["reverted"] + s["stuck"] + s["pending"]
        assert s["path"]["phones_on"] == {bench_rollout.CU7: 8}
        assert s["paused_itself"] is False
    offered = [s["offered"] for s in stages]
    assert offered[0] <= offered[1] <= offered[2] == 72  # the CX600 phones, all in the end
    assert stages[-1]["reverted"] == 4  # 5 % of 80, all CX600
