"""The fleet benchmark's arithmetic: merging the client processes' records, per-second
series, and the totals (bench/bench_fleet.py measures, this counts; tested without timing).

A client record is a dict: "rounds", each [start, end, outcome, cause, check seconds or
None, bytes] and "downloads", each [body start, end, bytes, 503s before it], times in
seconds from the run's common start; "cpu_seconds" the process's own CPU. Server samples
are [t, rss bytes, open fds, cpu seconds] from /proc/<pid>.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as phone-sim's summary: the smallest value with at least p % of them
    at or below it (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The client processes' records as one: rounds and downloads in time order, CPU summed."""
    rounds = sorted((r for p in parts for r in p["rounds"]), key=lambda r: (r[0], r[1]))
    downloads = sorted((d for p in parts for d in p["downloads"]), key=lambda d: (d[0], d[1]))
    return {
        "rounds": rounds,
        "downloads": downloads,
        "cpu_seconds": round(sum(p.get("cpu_seconds", 0.0) for p in parts), 3),
        "processes": len(parts),
    }


def totals(merged: dict[str, Any]) -> dict[str, Any]:
    """Checks, outcomes, failures by cause, check latency percentiles (ms), the span from
    the first start to the last end, the mean rate over it, and the downloads' bytes."""
    rounds = merged["rounds"]
    latencies = [r[4] for r in rounds if r[4] is not None]
    failures = Counter(r[3] or "error" for r in rounds if r[2] == "failed")
    span = (max(r[1] for r in rounds) - min(r[0] for r in rounds)) if rounds else 0.0
    downloads = merged["downloads"]
    body = [d for d in downloads if d[1] > d[0]]
    return {
        "rounds": len(rounds),
        "checks": len(latencies),
        "outcomes": dict(Counter(r[2] for r in rounds)),
        "failures": dict(failures),
        "failed": sum(failures.values()),
        "span_seconds": round(span, 3),
        "checks_per_s": round(len(latencies) / span, 1) if span else 0.0,
        "check_ms": {
            "p50": round(percentile(latencies, 50) * 1000, 2),
            "p99": round(percentile(latencies, 99) * 1000, 2),
            "max": round(max(latencies, default=0.0) * 1000, 2),
        },
        "downloads": len(downloads),
        "download_bytes": sum(d[2] for d in downloads),
        "refused_503": sum(d[3] for d in downloads),
        "download_s": {
            "p50": round(percentile([d[1] - d[0] for d in body], 50), 3),
            "max": round(max((d[1] - d[0] for d in body), default=0.0), 3),
        },
    }


def seconds_of(merged: dict[str, Any], samples: list[list[float]]) -> int:
    """How many whole seconds the series cover: to the last end or sample."""
    ends = [r[1] for r in merged["rounds"]] + [d[1] for d in merged["downloads"]]
    ends += [s[0] for s in samples]
    return max(1, math.ceil(max(ends, default=0.0)))


def check_series(merged: dict[str, Any], seconds: int) -> dict[str, list[Any]]:
    """Per second (by the check's end): checks answered, their p99 in ms (None in a second
    without any), and failed rounds."""
    by_second: list[list[float]] = [[] for _ in range(seconds)]
    failed = [0.0] * seconds
    for _start, end, outcome, _cause, check, _bytes in merged["rounds"]:
        s = min(max(int(end), 0), seconds - 1)
        if check is not None:
            by_second[s].append(check)
        if outcome == "failed":
            failed[s] += 1
    return {
        "checks_per_s": [float(len(v)) for v in by_second],
        "p99_ms": [round(percentile(v, 99) * 1000, 2) if v else None for v in by_second],
        "failed": failed,
    }


def _overlap(a: float, b: float, s: int) -> float:
    return max(0.0, min(b, s + 1) - max(a, s))


def download_series(merged: dict[str, Any], seconds: int) -> dict[str, list[float]]:
    """Per second: downloads in flight (each body's share of that second, so a body of
    half a second counts 0.5) and MB/s (a body's bytes spread evenly over its time)."""
    flight, rate = [0.0] * seconds, [0.0] * seconds
    for start, end, size, _refused in merged["downloads"]:
        if end <= start:
            continue
        for s in range(max(int(start), 0), min(int(math.ceil(end)), seconds)):
            share = _overlap(start, end, s)
            flight[s] += share
            rate[s] += size * share / (end - start) / 1e6
    return {
        "downloads_in_flight": [round(x, 2) for x in flight],
        "mb_per_s": [round(x, 2) for x in rate],
    }


def server_series(samples: list[list[float]], seconds: int) -> dict[str, list[float]]:
    """Per second: the server's peak RSS (MiB) and open descriptors among that second's
    samples (the last known value carried into a second without one), and its CPU share."""
    rss, fds, cpu = [0.0] * seconds, [0.0] * seconds, [0.0] * seconds
    last = (0.0, 0.0)
    ordered = sorted(samples)
    for s in range(seconds):
        inside = [x for x in ordered if s <= x[0] < s + 1]
        if inside:
            last = (max(x[1] for x in inside) / 2**20, max(x[2] for x in inside))
        rss[s], fds[s] = round(last[0], 2), last[1]
    for (t0, _, _, c0), (t1, _, _, c1) in zip(ordered, ordered[1:], strict=False):
        if t1 > t0:
            for s in range(max(int(t0), 0), min(int(math.ceil(t1)), seconds)):
                cpu[s] += (c1 - c0) * _overlap(t0, t1, s) / (t1 - t0)
    return {"rss_mib": rss, "fds": fds, "server_cpu_share": [round(x, 3) for x in cpu]}


def growth(runs: list[dict[str, Any]], key: str) -> float | None:
    """The largest run's `key` over the smallest's (runs ordered by phones)."""
    if not runs:
        return None
    first, last = runs[0].get(key), runs[-1].get(key)
    if not isinstance(first, (int, float)) or not isinstance(last, (int, float)) or not first:
        return None
    return round(last / first, 2)
