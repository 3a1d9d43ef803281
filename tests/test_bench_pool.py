"""bench/bench_pool.py at a tiny size (slow tier: PostgreSQL, serve processes, wrk).

The checks part with one pair of one-second runs: a record per run with the rate, the
p99 and serve's CPU per check, no errors, and the ratio of PostgreSQL to SQLite; the two
stores' answers are compared by the benchmark itself. The spread part with 20 kB images:
every node (two on the primary, the branch on the standby) serves all eight images
byte-identical within the bound. Nothing here is timed.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from types import ModuleType

import pytest

from appliance.testing import REPO, throwaway_postgres

pytestmark = pytest.mark.slow


@pytest.fixture
def bench_pool(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    return importlib.import_module("bench_pool")


def test_checks_on_postgresql_against_sqlite_at_a_tiny_size(
    bench_pool: ModuleType, tmp_path: Path
) -> None:
    args = argparse.Namespace(pairs=1, seconds=1.0, conns=2)
    with throwaway_postgres() as pg:
        report = bench_pool.checks(args, tmp_path, pg)
    for name in ("sqlite", "postgresql"):
        (run,) = report["runs"][name]
        assert run["errors"] == 0 and run["requests"] > 0
        assert run["p99_us"] > 0 and run["server_cpu_per_request_us"] > 0
    ratio = report["compare"]["ratio_rate"]
    assert ratio["median"] > 0 and len(ratio["each"]) == 1


def test_an_import_spreads_to_every_node_at_a_tiny_size(
    bench_pool: ModuleType, tmp_path: Path
) -> None:
    args = argparse.Namespace(image_mb=0.02, poll=0.2, settle=0.5, timeout=60.0)
    report = bench_pool.spread(args, tmp_path)
    assert report["images"] == 8
    assert set(report["nodes"]) == {"a", "b", "branch"}
    for node in report["nodes"].values():
        assert node["missing"] == [] and node["seconds"] is not None
    assert report["every_node_seconds"] is not None
