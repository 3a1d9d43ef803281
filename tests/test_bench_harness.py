"""The benchmark harness's arithmetic (bench/harness.py and the benchmarks' summaries).

Nothing here is timed: these tests hold the figures a reader sees to what they claim (the
ratio's direction, its median and range, the query mix, RSS per connection, a profile's
shares), with made-up measurements.
"""

from __future__ import annotations

import collections
import importlib
import ssl
from pathlib import Path
from types import ModuleType

import pytest

from appliance.testing import REPO


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> dict[str, ModuleType]:
    """bench/harness.py and the benchmarks, imported as the scripts import each other."""
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    names = ("harness", "bench_checks", "bench_dns", "bench_downloads", "bench_profile")
    return {name: importlib.import_module(name) for name in names}


def run(rate: float, cpu_us: float) -> dict[str, float]:
    return {"rate": rate, "server_cpu_per_request_us": cpu_us, "p99_us": 1000.0}


def test_ratios_read_as_a_fraction_of_the_reference_higher_is_better(bench: dict) -> None:
    h = bench["harness"]
    runs = {
        "ucupdates": [run(100, 400), run(120, 500), run(90, 450)],
        "nginx": [run(200, 100), run(200, 100), run(300, 150)],
    }
    summary = h.compare(runs, "ucupdates", "nginx")
    # rate: ours / theirs per pair; CPU per request: theirs / ours per pair
    assert summary["ratio_rate"]["each"] == [0.5, 0.6, 0.3]
    assert summary["ratio_rate"]["median"] == 0.5
    assert (summary["ratio_rate"]["min"], summary["ratio_rate"]["max"]) == (0.3, 0.6)
    assert summary["ratio_server_cpu_per_request_us"]["each"] == [0.25, 0.2, 0.333]
    assert summary["rate"] == {"ucupdates": 100, "nginx": 200}
    assert h.fmt_ratio(summary["ratio_rate"]) == "0.50x (0.30-0.60)"


def test_a_pair_with_nothing_measured_is_left_out_not_divided_by(bench: dict) -> None:
    h = bench["harness"]
    assert h.ratio_summary([1.0, 0.0], [2.0, 2.0], False)["each"] == [0.5]
    assert h.fmt_ratio(h.ratio_summary([0.0], [0.0], False)) == "-"


def test_interleave_takes_turns(bench: dict) -> None:
    order = []

    def one(name: str, rep: int) -> dict[str, float]:
        order.append((name, rep))
        return {"rate": 1.0}

    bench["harness"].interleave(["a", "b"], 3, one)
    assert order == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_measured_divides_the_servers_cpu_time_by_the_requests(
    bench: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = bench["harness"]
    clock = iter([10.0, 12.5])
    monkeypatch.setattr(h, "cpu_seconds", lambda pid: next(clock))
    server = h.Server("x", None, 1)
    r = h.measured(server, lambda: {"requests": 5000, "seconds": 5.0})
    assert r["rate"] == 1000
    assert r["server_cpu_share"] == 0.5
    assert r["server_cpu_per_request_us"] == 500


def test_the_dns_mix_is_80_10_10(bench: dict) -> None:
    lines = bench["bench_dns"].mix()
    counts = collections.Counter(lines)
    name = bench["bench_dns"].NAME
    assert len(lines) == 100
    assert counts[f"{name} A"] == 80
    assert counts[f"{name} AAAA"] == 10
    assert len([x for x in lines if not x.startswith(name)]) == 10


def test_rss_per_slow_download_is_the_peak_over_the_baseline(bench: dict) -> None:
    mib = 2**20
    samples = [
        (0.0, "before", 50 * mib),
        (1.0, "before", 51 * mib),
        (2.0, "connecting", 100 * mib),
        (3.0, "reading", 150 * mib),
        (4.0, "reading", 160 * mib),
        (5.0, "after", 60 * mib),
    ]
    s = bench["bench_downloads"].rss_summary(samples, 1000)
    assert s["rss_baseline"] == 50 * mib
    assert s["rss_per_connection"] == 110 * mib / 1000
    assert s["growth_while_reading"] == 10 * mib  # not flat
    assert s["rss_after"] == 60 * mib


def test_a_profile_counts_own_time_and_leaves_the_epoll_wait_out(
    bench: dict, tmp_path: Path
) -> None:
    raw = tmp_path / "profile.raw"
    run, poll = "run (twisted/internet/base.py:1)", "twisted/internet/epollreactor.py:9"
    raw.write_text(
        f"process 1;{run};doPoll ({poll}) 50\n"
        f"process 1;{run};EPollReactor.doPoll ({poll}) 50\n"
        f"process 1;{run};lineReceived (/v/site-packages/twisted/web/http.py:10) 30\n"
        f"process 1;{run};parse (/v/lib/python3.11/xml/etree/x.py:3) 20\n"
    )
    p = bench["bench_profile"].summarise(raw)
    assert p["samples"] == 100
    assert p["waiting_in_epoll_left_out_percent"] == pytest.approx(33.3)
    areas = p["own_time_by_area_percent"]
    assert areas["reactor (twisted.internet, selectors)"] == 50.0
    assert areas["HTTP (twisted.web, httptools, appliance/web)"] == 30.0
    assert areas["XML (expat, defusedxml, ElementTree)"] == 20.0
    assert "lineReceived (twisted/web/http.py)" in p["top_frames_by_own_time_percent"]


def test_the_tls10_client_speaks_only_what_the_phones_speak(bench: dict) -> None:
    ctx = bench["bench_checks"].tls10_context()
    assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1
    # (the TLS 1.3 suites are listed too, but TLS 1.3 is beyond the maximum version)
    below_13 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    assert below_13 == ["AES128-SHA"]
