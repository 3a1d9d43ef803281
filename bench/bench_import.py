"""`make bench-import`: `ucupdates import` beside `cabextract`, on the same packages.

Packages of --sizes MB of images (200 and 1,000 by default), the sample's layout (eight
images, MSZIP; half random, half repetitive, like firmware) or, with --corpus binaries,
images cut from this machine's shared libraries. Each run is a fresh process measured by
GNU time (wall seconds, peak RSS); the two take turns --reps times on the same file (in
the page cache for both). ucupdates does more than extract: it checks the header tables
against the limits, verifies every block checksum, hashes every file and the package,
fsyncs, and commits the catalogue; its time includes the interpreter's start. Neither is
pinned: the import may use both CPUs (it hashes on helper threads). Reported: the median
of ucupdates' time / cabextract's per pair and its range (aim: at most 1.5x), and the peak
RSS of each (aim: flat, the same for 1 GB as for 200 MB). Writes bench/out/import.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

import harness as h

from appliance.cab import CabEntry, write_cab
from appliance.catalogue.package_format import UPDATE_INFO, render_update_info
from appliance.catalogue.sample import (
    SAMPLE_DEVICES,
    SAMPLE_TIME,
    make_sample_package,
    sample_updates,
)


def _libraries(total: int) -> list[Path]:
    """Shared libraries of this machine, in a fixed order, adding up to at least `total`."""
    found, size = [], 0
    for folder in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"):
        for path in sorted(Path(folder).glob("*.so*")):
            if path.is_file() and not path.is_symlink():
                found.append(path)
                size += path.stat().st_size
                if size >= total:
                    return found
    raise SystemExit("not enough shared libraries on this machine for the binaries corpus")


def _cut(paths: list[Path], offset: int, size: int) -> Any:
    """`size` bytes of the concatenation of `paths` from `offset`, wrapping around."""
    whole = sum(p.stat().st_size for p in paths)
    position, left = offset % whole, size
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
    """The sample's layout, with images cut from real machine code."""
    updates = sample_updates()
    paths = _libraries(image_size * len(updates) // 2)
    xml = render_update_info(updates)
    entries = [CabEntry(UPDATE_INFO, len(xml), lambda: [xml], SAMPLE_TIME)]
    for n, u in enumerate(updates):
        for m in u.modules:
            chunks = lambda n=n: _cut(paths, n * image_size // 2, image_size)  # noqa: E731
            entries.append(CabEntry(m.member, image_size, chunks, SAMPLE_TIME))
            if m.signature_member:
                entries.append(CabEntry(m.signature_member, 4, lambda: [b"0\x82.."], SAMPLE_TIME))
    write_cab(out, entries, compression="mszip")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 1000], help="MB of images")
    parser.add_argument("--corpus", choices=("sample", "binaries"), default="sample")
    parser.add_argument("--reps", type=int, default=3, help="A B pairs per package")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    cabextract = shutil.which("cabextract")
    if cabextract is None:
        raise SystemExit("cabextract is not installed (make setup installs it)")
    report: dict[str, Any] = {"machine": h.machine_check(), "args": vars(args)}
    with h.workdir("import", args.keep) as work:
        for mb in args.sizes:
            package = work / f"{mb}MB.cab"
            image_size = mb * 1000 * 1000 // len(SAMPLE_DEVICES)
            if args.corpus == "sample":
                make_sample_package(package, image_size=image_size)
            else:
                make_binaries_package(package, image_size)
            print(
                f"\n## import of {mb} MB of images ({package.stat().st_size / 1e6:.0f} MB package)"
            )
            argv = {
                "cabextract": [cabextract, "-q", "-d", str(work / "out"), str(package)],
                "ucupdates": [sys.executable, "-m", "appliance", "--data-dir",
                              str(work / "data"), "import", str(package)],
            }  # fmt: skip

            def run(name: str, _: int, argv: dict[str, list[str]] = argv) -> dict[str, Any]:
                result = h.timed(argv[name], cpu=None, cwd=h.REPO)
                for folder in ("out", "data"):
                    shutil.rmtree(work / folder, ignore_errors=True)
                return result

            runs = h.interleave(["ucupdates", "cabextract"], args.reps, run)
            times = [[r["seconds"] for r in runs[n]] for n in ("ucupdates", "cabextract")]
            report[f"{mb}MB"] = {
                "package_bytes": package.stat().st_size,
                "runs": runs,
                "ratio_time": h.ratio_summary(times[0], times[1], False),
            }
            package.unlink()
    report["machine_after"] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    print_table(report)
    h.write_report("import", report)


def print_table(report: dict[str, Any]) -> None:
    print("\n| work | ucupdates | cabextract | time ratio (ucupdates / cabextract) | aim |")
    print("|---|---|---|---|---|")
    for mb in report["args"]["sizes"]:
        r = report[f"{mb}MB"]
        cells = []
        for name in ("ucupdates", "cabextract"):
            seconds = statistics.median(x["seconds"] for x in r["runs"][name])
            cpu = statistics.median(x["cpu_seconds"] for x in r["runs"][name])
            peak = max(x["peak_rss_bytes"] for x in r["runs"][name])
            cells.append(f"{seconds:.2f} s ({cpu:.2f} CPU s), peak RSS {peak / 2**20:.0f} MiB")
        print(
            f"| import, {mb} MB package ({report['args']['corpus']}) | {cells[0]} | {cells[1]} "
            f"| {h.fmt_ratio(r['ratio_time'])} | ≤ 1.5x, memory flat |"
        )


if __name__ == "__main__":
    main()
