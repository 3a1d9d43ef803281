"""Run the fuzz targets under atheris (coverage-guided, libFuzzer), each in its own process.

    python -m tests.fuzz.run [--seconds S] [--runs N] [--out DIR] [target ...]

Each target starts from its seed corpus (built in code, tests/fuzz/targets.py) in a fresh
process, with the appliance's modules (and dnslib's) instrumented, for `--seconds` or
`--runs` inputs, whichever ends first. A crash stops that target: libFuzzer writes the
input to `DIR/<target>/crash-<sha1>` and the table says where. Prints one line per target
(inputs tried, crashes, seconds) and exits 1 if any target crashed, 2 if atheris is
missing (hypothesis then covers the same targets: tests/test_fuzz_*.py).

`make fuzz` runs every target for FUZZ_SECONDS (60) each; `make test` runs a few hundred
inputs per target (tests/test_fuzz_atheris.py).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
NAMES = ("cab", "importer", "check", "dns", "dhcp", "ntlm", "http", "http_ext")
_DONE = re.compile(rb"Done (\d+) runs in (\d+) second")
_PROGRESS = re.compile(rb"^#(\d+)\s", re.MULTILINE)


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


def fuzz_one(name: str, runs: int | None, seconds: int | None, corpus: Path, out: Path) -> None:
    """In the child: instrument, load the target, hand over to libFuzzer (never returns)."""
    import atheris

    # The targets import what they test when first run: run each seed inside the block,
    # so that the appliance's modules (and dnslib's) load instrumented.
    with atheris.instrument_imports(include=["appliance", "dnslib", "defusedxml"]):
        from tests.fuzz import targets

        target = targets.TARGETS[name]
        for i, seed in enumerate(target.seeds()):
            (corpus / f"seed-{i}").write_bytes(seed)
            target.run(seed)

    def one_input(data: bytes) -> None:
        target.run(data[: target.max_size])

    args = [sys.argv[0], f"-artifact_prefix={out}/", f"-max_len={target.max_size}", "-seed=13"]
    args += ["-rss_limit_mb=2048", "-timeout=30", "-print_final_stats=1"]
    if runs is not None:
        args.append(f"-runs={runs}")
    if seconds is not None:
        args.append(f"-max_total_time={seconds}")
    atheris.Setup([*args, str(corpus)], one_input)
    atheris.Fuzz()


def run_target(name: str, runs: int | None, seconds: int | None, out: Path) -> dict[str, object]:
    """One target in a child process: what it tried, and what crashed."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in folder.glob("crash-*")}
    with tempfile.TemporaryDirectory(prefix=f"ucupdates-fuzz-{name}-") as corpus:
        command = [sys.executable, "-m", "tests.fuzz.run", "--child", name, "--corpus", corpus]
        command += ["--out", str(folder)]
        command += ["--runs", str(runs)] if runs is not None else []
        command += ["--seconds", str(seconds)] if seconds is not None else []
        started = time.monotonic()
        limit = None if seconds is None else seconds * 2 + 120
        child = subprocess.run(command, cwd=REPO, capture_output=True, timeout=limit)
        elapsed = time.monotonic() - started
    log = child.stdout + child.stderr
    (folder / "last.log").write_bytes(log[-200_000:])
    done = _DONE.search(log)
    progress = _PROGRESS.findall(log)
    tried = int(done.group(1)) if done else (int(progress[-1]) if progress else 0)
    crashes = sorted(str(folder / p.name) for p in folder.glob("crash-*") if p.name not in before)
    return {
        "target": name,
        "inputs": tried,
        "crashes": len(crashes) or (0 if child.returncode == 0 else 1),
        "seconds": round(elapsed, 1),
        "returncode": child.returncode,
        "crash_files": crashes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", choices=[*NAMES, []], default=[])
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--runs", type=int, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "test-artifacts" / "fuzz")
    parser.add_argument("--json", action="store_true", help="one JSON object per target")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        fuzz_one(args.child, args.runs, args.seconds, args.corpus, args.out)
        return 0
    if not have_atheris():
        print("atheris is not installed: tests/test_fuzz_*.py cover the targets with hypothesis")
        return 2
    if args.runs is None and args.seconds is None:
        args.seconds = 60
    failed = False
    if not args.json:
        print(f"{'target':<10} {'inputs tried':>12} {'crashes':>8} {'seconds':>8}")
    for name in args.targets or NAMES:
        result = run_target(name, args.runs, args.seconds, args.out.resolve())
        failed |= bool(result["crashes"])
        if args.json:
            print(json.dumps(result), flush=True)
        else:
            inputs, crashes, seconds = result["inputs"], result["crashes"], result["seconds"]
            print(f"{name:<10} {inputs:>12} {crashes:>8} {seconds:>8}", flush=True)
            for crash in result["crash_files"]:  # type: ignore[attr-defined]
                print(f"  crash input: {crash}", flush=True)
    if failed:
        print(f"a target crashed: the logs are in {args.out}/<target>/last.log", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
