"""`make bench-import`: import a package holding 200 MB of images, beside cabextract.

Both run on the same machine in the same run, on the same file, each as a fresh process
(the import includes the interpreter's start, as an admin would see it). Reports wall
time and peak RSS (from wait4) of each, the ratios, and writes bench/out/import.json.
Aims (issue 2): at most 1.5x cabextract's time, peak memory under 2x the package size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.sample import SAMPLE_DEVICES, make_sample_package  # noqa: E402


def measure(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one run of `argv`."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed with status {status}")
    return elapsed, usage.ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--total-mb", type=int, default=200, help="MB of images in the package")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cabextract = shutil.which("cabextract")
    if cabextract is None:
        raise SystemExit("cabextract is not installed (make setup installs it)")

    out_dir = REPO / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-import-", dir=out_dir) as tmp:
        work = Path(tmp)
        package = work / "UCUpdates.cab"
        image_size = args.total_mb * 1000 * 1000 // len(SAMPLE_DEVICES)
        make_sample_package(package, version="4.0.7577.4387", image_size=image_size)
        size = package.stat().st_size
        print(
            f"package: {size / 1e6:.1f} MB on disk, {len(SAMPLE_DEVICES)} images of "
            f"{image_size / 1e6:.1f} MB, MSZIP"
        )

        results: dict[str, list[tuple[float, int]]] = {"cabextract": [], "ucupdates": []}
        for run in range(args.runs):
            target = work / f"cabextract-{run}"
            results["cabextract"].append(
                measure([cabextract, "-q", "-d", str(target), str(package)])
            )
            shutil.rmtree(target)
            data = work / f"data-{run}"
            results["ucupdates"].append(
                measure(
                    [
                        sys.executable,
                        "-m",
                        "appliance",
                        "--data-dir",
                        str(data),
                        "import",
                        str(package),
                    ]
                )
            )
            shutil.rmtree(data)

    summary = {}
    for name, runs in results.items():
        summary[name] = {
            "seconds_median": statistics.median(t for t, _ in runs),
            "seconds_all": [round(t, 3) for t, _ in runs],
            "peak_rss_bytes": max(m for _, m in runs),
        }
    ours, ref = summary["ucupdates"], summary["cabextract"]
    report = {
        "package_bytes": size,
        "images_bytes": image_size * len(SAMPLE_DEVICES),
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "results": summary,
        "time_ratio": ours["seconds_median"] / ref["seconds_median"],
        "memory_to_package_ratio": ours["peak_rss_bytes"] / size,
    }
    (out_dir / "import.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print("| tool | median time | peak RSS |")
    print("|---|---|---|")
    for name, r in summary.items():
        print(f"| {name} | {r['seconds_median']:.2f} s | {r['peak_rss_bytes'] / 1e6:.1f} MB |")
    print()
    print(f"time ratio ucupdates/cabextract: {report['time_ratio']:.2f}x (aim <= 1.5x)")
    print(f"ucupdates peak RSS / package size: {report['memory_to_package_ratio']:.2f}x (aim < 2x)")


if __name__ == "__main__":
    main()
