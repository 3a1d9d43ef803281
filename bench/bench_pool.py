"""`make bench-pool`: pool mode (docs/pool.md): checks on PostgreSQL, and an import's spread.

1. **Checks with the catalogue on PostgreSQL** (`checks`). serve with its store on SQLite
   (A, the reference) against serve with its store on PostgreSQL (B), the same build, the
   same package imported and approved in each; A B A B (--pairs), each a fresh serve, on
   CPU 1 (the PostgreSQL server pinned there too: its work is part of B's cost);
   keep-alive TLS checks by wrk on CPU 0 (the body of bench_checks.py's check, 16
   connections) for --seconds. The median ratio of checks/s (B / A) and its range, and
   each side's p99 and serve CPU per check.
2. **An import's spread** (`spread`). A PostgreSQL primary with a streaming hot standby
   (appliance/testing/postgres.py), two pool nodes on the primary and a branch node on
   the standby (appliance/testing/pool.py), all serving and idle; a package of eight
   --image-mb MB images (200 MB) is imported on the first node by the CLI. Measured: from
   the end of the import (the CLI returned) until each node serves all eight images
   (offered to a test device, downloaded over plain HTTP, SHA-256 equal to the importing
   node's stored file), polled every --poll seconds by one thread per node; the spread is
   the slowest node's time. The import's own duration is reported beside it.

The PostgreSQL servers are the tests' throwaway ones: fsync off (a benchmark, like a test,
does not survive a machine's crash). Writes bench/out/pool.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import http.client
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness as h

from appliance.catalogue import file_sha256
from appliance.catalogue.sample import SAMPLE_DEVICES, make_sample_package, sample_check
from appliance.testing import PoolNode, Postgres, pool_ca, throwaway_postgres

NEW = "4.0.7577.4387"
TEST_MAC = "00-04-F2-00-00-01"
DATABASE = "pool"


def cli(config: Path, *args: str) -> float:
    """`ucupdates --config CONFIG ARGS` on the server CPU; its wall seconds."""
    argv = [sys.executable, "-m", "appliance", "--config", str(config), *args]
    start = time.monotonic()
    done = subprocess.run(h.pinned(h.SERVER_CPU, argv), cwd=h.REPO, capture_output=True,
                          text=True, check=False)  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"ucupdates {args[0]} failed: {done.stdout}{done.stderr}")
    return time.monotonic() - start


def pin_server(pg: Postgres) -> None:
    """The server's processes on the server CPU (later backends inherit it)."""
    if not h.PINNED or pg.group is None:
        return
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            pid = int(stat.parent.name)
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pg.group:
                os.sched_setaffinity(pid, {h.SERVER_CPU})


def secret(path: Path, text: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(text + "\n")
    return path


# -- 1. checks ----------------------------------------------------------------------------


def checks(args: argparse.Namespace, work: Path, pg: Postgres) -> dict[str, Any]:
    h.OUT.mkdir(parents=True, exist_ok=True)  # wrk's body file (a clean checkout has none)
    package = work / "UCUpdates.cab"
    make_sample_package(package, version=NEW)
    configs = {"sqlite": h.prepare_appliance(work / "sqlite", package)}
    (work / "postgresql").mkdir()
    dsn = secret(work / "postgresql" / "dsn", pg.create_database("checks"))
    store = f'[store]\nbackend = "postgresql"\ndsn_file = "{dsn}"\n'
    configs["postgresql"] = h.prepare_appliance(work / "postgresql", None, store)
    cli(configs["postgresql"], "import", str(package))
    cli(configs["postgresql"], "approve", "--all-pending")
    answers: dict[str, bytes] = {}
    runs: dict[str, list[dict[str, Any]]] = {"sqlite": [], "postgresql": []}
    for _ in range(args.pairs):
        for name in runs:
            with h.Fleet(work / name) as servers:
                server = servers.ucupdates(configs[name])
                port = server.ports["internal-https"]
                answers.setdefault(name, re.sub(rb":\d+/", b"/", h.check_answer(server)[1]))
                url = f"https://127.0.0.1:{port}{h.CHECK_PATH}"

                def one(url: str = url) -> dict[str, Any]:
                    return h.wrk(url, args.conns, args.seconds, sample_check())

                result = h.measured(server, one)
            runs[name].append(result)
            print(f"  {name}: {result['rate']:,.0f} checks/s, p99 {result['p99_us'] / 1000:.1f}"
                  f" ms, {result['server_cpu_per_request_us']:,.0f} us CPU a check, errors "
                  f"{result['errors']}", flush=True)  # fmt: skip
    if answers["sqlite"] != answers["postgresql"]:
        raise SystemExit(f"the two stores answer differently: {answers}")
    return {"runs": runs, "compare": h.compare(runs, "postgresql", "sqlite")}


# -- 2. an import's spread ----------------------------------------------------------------


def device_check(device: tuple[str, str, str, str, str]) -> bytes:
    """The sample check as a test device of this kind (type, brand, model, revision,
    locale) running an older version."""
    _, brand, model, revision, locale = device
    body = sample_check("4.0.7577.4366", TEST_MAC)
    for tag, value in (("Vendor", brand), ("Model", model), ("Revision", revision),
                       ("Locale", locale)):  # fmt: skip
        body = re.sub(rf"<{tag}>[^<]*</{tag}>".encode(), f"<{tag}>{value}</{tag}>".encode(), body)
    return body


def image_of(node: PoolNode, device: tuple[str, str, str, str, str]) -> str | None:
    """The URL path of the image the node offers this device, or None (nothing yet)."""
    status, _, body = h.fetch(node.ports["internal_https"], "POST", h.CHECK_PATH,
                              device_check(device))  # fmt: skip
    base = re.search(rb"<BaseURL>([^<]+)</BaseURL>", body)
    name = re.search(rb"<FileName>([^<]+)</FileName>", body)
    if status != 200 or b"<Downloads>1</Downloads>" not in body or not base or not name:
        return None
    return re.sub(r"^\w+://[^/]+", "", base.group(1).decode()) + "/" + name.group(1).decode()


def download_hash(port: int, path: str) -> str | None:
    """SHA-256 of the body of GET `path` over plain HTTP (None unless 200)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        digest = hashlib.sha256()
        while chunk := response.read(1 << 20):
            digest.update(chunk)
        return digest.hexdigest() if response.status == 200 else None
    finally:
        conn.close()


Device = tuple[str, str, str, str, str]


def package_images(package: Path, folder: Path) -> dict[Device, tuple[str, str]]:
    """Each device's image in the package: its URL path once imported and its SHA-256
    (cabextract's extraction, before the import)."""
    subprocess.run(["cabextract", "-q", "-d", str(folder), str(package)], check=True)
    found = {}
    for device in SAMPLE_DEVICES:
        image = folder.joinpath(*device, "CPE", "CPE.nbt")
        url = "/DeviceUpdateFiles_Int/" + "/".join(device) + f"/{NEW}/CPE/CPE.nbt"
        found[device] = (url, file_sha256(image))
        image.unlink()
    return found


def served_all(node: PoolNode, expected: dict[Device, tuple[str, str]], start: float,
               seconds: float, poll: float) -> dict[str, Any]:  # fmt: skip
    """Poll until the node offers each device its image and serves it byte-identical; the
    seconds since `start` at which it did (None when not within `seconds`)."""
    left = dict(expected)
    polls = 0
    while left and time.monotonic() - start < seconds:
        polls += 1
        for device, (path, digest) in list(left.items()):
            with contextlib.suppress(OSError, http.client.HTTPException):
                if image_of(node, device) != path:
                    continue
                if download_hash(node.ports["internal_http"], path) == digest:
                    del left[device]
        if left:
            time.sleep(poll)
    done = None if left else round(time.monotonic() - start, 2)
    return {"seconds": done, "polls": polls, "missing": ["/".join(d) for d in left]}


def spread(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    package = work / "UCUpdates.cab"
    make_sample_package(package, version=NEW, image_size=int(args.image_mb * 1_000_000))
    size = package.stat().st_size
    expected = package_images(package, work / "extracted")
    with throwaway_postgres() as pg:
        standby = pg.replica()
        dsn = pg.create_database(DATABASE)
        ca = pool_ca(work / "ca")
        nodes = [PoolNode(n, work / n, dsn, ca) for n in ("a", "b")]
        nodes.append(PoolNode("branch", work / "branch", standby.conninfo_of(DATABASE), ca, dsn))
        try:
            for node in nodes:
                if node.name == "branch":
                    pg.caught_up(standby)
                node.start()
            cli(nodes[0].config, "test-device", "add", "bench", "--mac", TEST_MAC)
            time.sleep(args.settle)  # every node idle before the import
            import_seconds = cli(nodes[0].config, "import", str(package))
            start = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
                futures = {n.name: pool.submit(served_all, n, expected, start, args.timeout,
                                               args.poll) for n in nodes}  # fmt: skip
                per_node = {name: f.result() for name, f in futures.items()}
        finally:
            for node in nodes:
                with contextlib.suppress(AssertionError):
                    node.stop()
    times = [r["seconds"] for r in per_node.values()]
    return {
        "package_bytes": size, "images": len(expected),
        "image_bytes": int(args.image_mb * 1_000_000), "import_seconds": round(import_seconds, 2),
        "nodes": per_node,
        "every_node_seconds": None if None in times else max(t for t in times if t is not None),
    }  # fmt: skip


@contextlib.contextmanager
def postgres_for_checks() -> Iterator[Postgres]:
    with throwaway_postgres() as pg:
        pin_server(pg)
        yield pg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", nargs="*", help="checks, spread (both when none is named)")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="each checks run's wrk time")
    p.add_argument("--conns", type=int, default=16)
    p.add_argument("--image-mb", type=float, default=25, help="each of the 8 images (MB)")
    p.add_argument("--poll", type=float, default=0.2, help="seconds between a node's polls")
    p.add_argument("--settle", type=float, default=2.0, help="idle seconds before the import")
    p.add_argument("--timeout", type=float, default=600.0, help="at most this long a node")
    p.add_argument("--out", default="pool")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    args.part = args.part or ["checks", "spread"]
    if set(args.part) - {"checks", "spread"}:
        p.error("the parts are checks and spread")
    machine = h.machine_check()
    h.pin_self(h.CLIENT_CPU)
    report: dict[str, Any] = {"machine": machine, "options": vars(args)}
    for part in args.part:
        with h.workdir(f"pool-{part}", args.keep) as work:
            print(f"{part}:", flush=True)
            if part == "checks":
                with postgres_for_checks() as pg:
                    report[part] = checks(args, work, pg)
            else:
                report[part] = spread(args, work)
    h.write_report(args.out, report)
    summary(report)


def summary(report: dict[str, Any]) -> None:
    if "checks" in report:
        c = report["checks"]["compare"]
        print(f"postgresql / sqlite: checks/s {h.fmt_ratio(c.get('ratio_rate'))}; p99 "
              f"{c['p99_us']['postgresql'] / 1000:.1f} ms against "
              f"{c['p99_us']['sqlite'] / 1000:.1f} ms")  # fmt: skip
    if "spread" in report:
        s = report["spread"]
        each = ", ".join(f"{k} {v['seconds']} s" for k, v in s["nodes"].items())
        print(
            f"{s['package_bytes'] / 1e6:.0f} MB package imported in {s['import_seconds']} s;"
            f" served byte-identical by every node {s['every_node_seconds']} s after ({each})"
        )


if __name__ == "__main__":
    main()
