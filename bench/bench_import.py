"""`make bench-import`: import a package holding 200 MB of images, beside cabextract.

Both run on the same machine in the same run, on the same file, each as a fresh process
(the import includes the interpreter's start, as an admin would see it). Reports wall
time and peak RSS (from wait4) of each, the ratios, and writes bench/out/import.json.
Aims: at most 1.5x cabextract's time, peak memory under 2x the package size.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from appliance.cab.writer import CabEntry, write_cab  # noqa: E402
from appliance.catalogue.package_format import UPDATE_INFO, render_update_info  # noqa: E402
from appliance.catalogue.sample import (  # noqa: E402
    SAMPLE_DEVICES,
    SAMPLE_TIME,
    make_sample_package,
    sample_updates,
)


def _binaries(total: int) -> list[Path]:
    """Shared libraries of this machine, in a fixed order, adding up to at least `total`."""
    found: list[Path] = []
    size = 0
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        for path in sorted(Path(folder).glob("*.so*")):
            if path.is_file() and not path.is_symlink():
                found.append(path)
                size += path.stat().st_size
                if size >= total:
                    return found
    raise SystemExit("not enough shared libraries on this machine for the binaries corpus")


def _file_chunks(paths: list[Path], offset: int, size: int):  # type: ignore[no-untyped-def]
    """`size` bytes of the concatenation of `paths`, from `offset`, wrapping around."""
    blob_total = sum(p.stat().st_size for p in paths)
    position, left = offset % blob_total, size
    while left:
        for path in paths:
            length = path.stat().st_size
            if position >= length:
                position -= length
                continue
            with path.open("rb") as f:
                f.seek(position)
                while left and (chunk := f.read(min(1 << 20, left))):
                    left -= len(chunk)
                    yield chunk
            position = 0
            if not left:
                return


def make_binaries_package(out: Path, image_size: int) -> None:
    """The sample's layout, with images cut from real machine code (like firmware)."""
    updates = sample_updates()
    paths = _binaries(image_size * len(updates) // 2)
    xml = render_update_info(updates)
    entries = [CabEntry(UPDATE_INFO, len(xml), lambda: [xml], SAMPLE_TIME)]
    for n, u in enumerate(updates):
        for m in u.modules:
            entries.append(
                CabEntry(
                    m.member,
                    image_size,
                    lambda n=n: _file_chunks(paths, n * image_size // 2, image_size),
                    SAMPLE_TIME,
                )
            )
            if m.signature_member:
                entries.append(CabEntry(m.signature_member, 4, lambda: [b"0\x82.."], SAMPLE_TIME))
    write_cab(out, entries, compression="mszip")


def measure(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one run of `argv`, by GNU time.

    (wait4 straight from this process would not do: Linux carries the peak RSS across
    fork and exec, so a small tool would inherit this interpreter's.)
    """
    proc = subprocess.run(
        ["/usr/bin/time", "-f", "%e %M", *argv],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {proc.stderr.strip()}")
    seconds, kib = proc.stderr.strip().splitlines()[-1].split()
    return float(seconds), int(kib) * 1024


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
    image_size = args.total_mb * 1000 * 1000 // len(SAMPLE_DEVICES)
    builders = {
        "sample": lambda p: make_sample_package(p, image_size=image_size),
        "binaries": lambda p: make_binaries_package(p, image_size),
    }
    report: dict[str, object] = {
        "images_bytes": image_size * len(SAMPLE_DEVICES),
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "corpora": {},
    }
    print(
        "| corpus | package | cabextract | ucupdates import | time ratio | peak RSS "
        "(ucupdates) | RSS / package |"
    )
    print("|---|---|---|---|---|---|---|")
    for corpus, build in builders.items():
        with tempfile.TemporaryDirectory(prefix="bench-import-", dir=out_dir) as tmp:
            result = run_corpus(Path(tmp), build, args.runs, cabextract)
        report["corpora"][corpus] = result  # type: ignore[index]
        ours, ref = result["ucupdates"], result["cabextract"]
        print(
            f"| {corpus} | {result['package_bytes'] / 1e6:.0f} MB "
            f"| {ref['seconds_median']:.2f} s | {ours['seconds_median']:.2f} s "
            f"| {result['time_ratio']:.2f}x | {ours['peak_rss_bytes'] / 1e6:.0f} MB "
            f"| {result['memory_to_package_ratio']:.2f}x |"
        )
    (out_dir / "import.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{report['images_bytes'] / 1e6:.0f} MB of images, {len(SAMPLE_DEVICES)} images, "
        f"MSZIP; median of {args.runs} runs; aims: time ratio <= 1.5x, RSS < 2x package"
    )


def run_corpus(work: Path, build, runs: int, cabextract: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    package = work / "UCUpdates.cab"
    build(package)
    size = package.stat().st_size
    results: dict[str, list[tuple[float, int]]] = {"cabextract": [], "ucupdates": []}
    for run in range(runs):
        target = work / f"cabextract-{run}"
        results["cabextract"].append(measure([cabextract, "-q", "-d", str(target), str(package)]))
        shutil.rmtree(target)
        data = work / f"data-{run}"
        results["ucupdates"].append(
            measure(
                [sys.executable, "-m", "appliance", "--data-dir", str(data), "import", str(package)]
            )
        )
        shutil.rmtree(data)
    summary = {
        name: {
            "seconds_median": statistics.median(t for t, _ in runs_),
            "seconds_all": [round(t, 3) for t, _ in runs_],
            "peak_rss_bytes": max(m for _, m in runs_),
        }
        for name, runs_ in results.items()
    }
    return {
        "package_bytes": size,
        **summary,
        "time_ratio": summary["ucupdates"]["seconds_median"]
        / summary["cabextract"]["seconds_median"],
        "memory_to_package_ratio": summary["ucupdates"]["peak_rss_bytes"] / size,
    }


if __name__ == "__main__":
    main()
