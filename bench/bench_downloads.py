"""`make bench-download`: image downloads, ucupdates beside nginx.

1. One 1 GiB image (--image-mib) on one connection, the whole file, by curl on the client
   CPU: over TLS (the phone listener, TLS 1.3 as curl and the servers agree) and over
   plain HTTP (ucupdates' internal_http listener; nginx with sendfile). Both servers take
   turns, --reps times. Reported: MB/s and the server's CPU seconds per GiB.
2. Memory per slow download: --slow-clients TLS connections each GET the image and read
   --slow-rate bytes a second for --slow-seconds, one server at a time, each freshly
   started; the server's RSS is sampled every second before, while connecting, while the
   clients read and after. Reported: RSS per connection (peak over baseline / connections)
   and the growth while the clients only read (flat is the aim).

The package holds the sample's layout with the sample phone's image at --image-mib MiB
(the others 64 KiB), uncompressed; nginx serves ucupdates' own store at the same URL with
the same certificate. Writes bench/out/downloads.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import ssl
import statistics
import time
from functools import partial
from pathlib import Path
from typing import Any

import harness as h

from appliance.cab import CabEntry, write_cab
from appliance.catalogue.package_format import UPDATE_INFO, render_update_info
from appliance.catalogue.sample import SAMPLE_TIME, sample_updates

MIB, GIB = 1 << 20, 1 << 30


def _chunks(size: int, seed: int) -> Any:
    block = os.urandom(MIB - seed)  # incompressible, and not the same in every image
    for _ in range(size // len(block)):
        yield block
    yield block[: size % len(block)]


def make_package(out: Path, image_bytes: int) -> None:
    """The sample's updates; the sample phone's (CX600 ENU) image is `image_bytes` long."""
    updates = sample_updates()
    xml = render_update_info(updates)
    entries = [CabEntry(UPDATE_INFO, len(xml), partial(iter, [xml]), SAMPLE_TIME)]
    for n, u in enumerate(updates):
        size = image_bytes if n == 0 else 64 * 1024
        for m in u.modules:
            entries.append(CabEntry(m.member, size, partial(_chunks, size, n), SAMPLE_TIME))
            if m.signature_member:
                sig = b"0\x82" + bytes(62)
                entries.append(CabEntry(m.signature_member, 64, partial(iter, [sig]), SAMPLE_TIME))
    write_cab(out, entries, compression="none")


def curl(url: str, size: int) -> dict[str, Any]:
    """One whole download by curl on the client CPU: seconds and bytes."""
    argv = ["curl", "-sSk", "--http1.1", "-o", "/dev/null", "-w", "%{size_download} %{time_total}"]
    out = h._run(h.pinned(h.CLIENT_CPU, [*argv, url]), 600)
    got, seconds = out.split()[:2]
    if int(got) != size:
        raise SystemExit(f"{url}: {got} bytes, not {size}")
    return {"requests": 1, "seconds": float(seconds), "bytes_per_s": size / float(seconds)}


async def slow_downloads(
    server: h.Server, port: int, path: str, clients: int, rate: int, seconds: int
) -> dict[str, Any]:
    """`clients` TLS connections GET `path` and read `rate` bytes/s for `seconds`; the
    server's RSS sampled each second (phase: before, connecting, reading, after)."""
    loop = asyncio.get_running_loop()
    ctx = ssl._create_unverified_context()
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    samples: list[tuple[float, str, int]] = []
    phase, started = "before", loop.time()
    statuses: dict[str, int] = {}
    connected, early_eof, read_bytes = 0, 0, 0
    go, gate = asyncio.Event(), asyncio.Semaphore(64)

    async def one() -> None:
        nonlocal connected, early_eof, read_bytes
        writer = None
        try:
            async with gate:
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
                sock.setblocking(False)
                await loop.sock_connect(sock, ("127.0.0.1", port))
                reader, writer = await asyncio.open_connection(
                    sock=sock, ssl=ctx, server_hostname="", limit=rate, ssl_handshake_timeout=60
                )
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            status = head.split(b" ", 2)[1].decode()
            statuses[status] = statuses.get(status, 0) + 1
            if status != "200":
                return
            connected += 1
            await go.wait()
            begin = loop.time()
            for tick in range(seconds):
                got, end = 0, begin + tick + 1
                while got < rate and (left := end - loop.time()) > 0:
                    with contextlib.suppress(TimeoutError):
                        chunk = await asyncio.wait_for(reader.read(rate - got), left)
                        if not chunk:
                            early_eof += 1
                            return
                        got += len(chunk)
                read_bytes += got
                await asyncio.sleep(max(0.0, end - loop.time()))
        except Exception as e:  # counted, and the run goes on
            statuses[type(e).__name__] = statuses.get(type(e).__name__, 0) + 1
        finally:
            if writer is not None:
                writer.transport.abort()

    async def sampler() -> None:
        while True:
            samples.append((round(loop.time() - started, 1), phase, h.rss(server.pid)))
            await asyncio.sleep(1.0)

    sampling = asyncio.create_task(sampler())
    await asyncio.sleep(3)
    phase = "connecting"
    tasks = [asyncio.create_task(one()) for _ in range(clients)]
    for _ in range(1200):  # until every client has its headers or gave up (at most 120 s)
        if connected + sum(v for k, v in statuses.items() if k != "200") >= clients:
            break
        await asyncio.sleep(0.1)
    connect_seconds = loop.time() - started - 3
    phase = "reading"
    go.set()
    await asyncio.wait(tasks, timeout=seconds + 30)
    phase = "after"
    await asyncio.sleep(3)
    sampling.cancel()
    return {
        "clients": clients,
        "connected": connected,
        "statuses": statuses,
        "connect_seconds": round(connect_seconds, 1),
        "closed_early_by_server": early_eof,
        "bytes_read_by_clients": read_bytes,
        "samples": samples,
        **rss_summary(samples, connected),
    }


def rss_summary(samples: list[tuple[float, str, int]], connections: int) -> dict[str, Any]:
    at = {p: [r for _, phase, r in samples if phase == p] for p in ("before", "reading", "after")}
    baseline = min(at["before"])
    reading = at["reading"] or [baseline]
    peak = max(r for _, p, r in samples if p in ("connecting", "reading"))
    return {
        "rss_baseline": baseline,
        "rss_all_connected": reading[0],
        "rss_peak": peak,
        "rss_after": at["after"][-1] if at["after"] else None,
        "rss_per_connection": (peak - baseline) / max(connections, 1),
        "growth_while_reading": max(reading) - reading[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--slow-clients", type=int, default=1000)
    parser.add_argument("--slow-rate", type=int, default=16 * 1024, help="bytes/s per client")
    parser.add_argument("--slow-seconds", type=int, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    machine = h.machine_check()
    h.pin_self()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * args.slow_clients + 1024), hard))
    size = args.image_mib * MIB
    report: dict[str, Any] = {"machine": machine, "args": vars(args)}
    with h.workdir("downloads", args.keep) as work:
        t0 = time.monotonic()
        make_package(work / "UCUpdates.cab", size)
        limits = {"max_downloads": 4000, "max_downloads_per_client": 4000}
        config = h.prepare_appliance(work, work / "UCUpdates.cab", max_connections=8000, **limits)
        (work / "UCUpdates.cab").unlink()
        report["setup_seconds"] = round(time.monotonic() - t0, 1)
        with h.Fleet(work) as fleet:
            uc = fleet.ucupdates(config)
            answer = h.check_answer(uc)
            conf, https, plain = h.nginx_config(work, config, answer)
            ngx = fleet.nginx(conf)
            path = answer[2]
            urls = {
                "tls": {"ucupdates": f"https://127.0.0.1:{uc.ports['internal-https']}{path}",
                        "nginx": f"https://127.0.0.1:{https}{path}"},
                "plain": {"ucupdates": f"http://127.0.0.1:{uc.ports['internal-http']}{path}",
                          "nginx": f"http://127.0.0.1:{plain}{path}"},
            }  # fmt: skip
            servers = {"ucupdates": uc, "nginx": ngx}
            for kind, by_server in urls.items():
                print(f"\n## {args.image_mib} MiB image, one connection, {kind}")
                runs = h.interleave(
                    list(servers),
                    args.reps,
                    lambda n, _, b=by_server: h.measured(servers[n], lambda: curl(b[n], size)),
                )
                for r in (x for rs in runs.values() for x in rs):
                    r["server_cpu_s_per_gib"] = r["server_cpu_per_request_us"] / 1e6 * GIB / size
                report[kind] = h.compare(runs, "ucupdates", "nginx")
        report["slow"] = {}
        for name in ("ucupdates", "nginx"):
            print(f"\n## {args.slow_clients} slow downloads from {name}")
            with h.Fleet(work) as fleet:
                server = fleet.ucupdates(config) if name == "ucupdates" else fleet.nginx(conf)
                port = server.ports.get("internal-https", https)  # nginx: its own
                result = asyncio.run(
                    slow_downloads(
                        server, port, path, args.slow_clients, args.slow_rate, args.slow_seconds
                    )
                )
            report["slow"][name] = result
            print(f"  {name}: {brief_slow(result)}")
    report["machine_after"] = {"load_average": [round(x, 2) for x in os.getloadavg()]}
    print_table(report)
    h.write_report("downloads", report)


def brief_slow(r: dict[str, Any]) -> str:
    return (
        f"{r['connected']} connected in {r['connect_seconds']} s, RSS {r['rss_baseline'] / MIB:.1f}"
        f" -> {r['rss_peak'] / MIB:.1f} MiB, {r['rss_per_connection'] / 1024:.1f} KiB a connection,"
        f" +{r['growth_while_reading'] / 1024:.0f} KiB while reading; {r['statuses']}"
    )


def print_table(report: dict[str, Any]) -> None:
    print("\n| work | ucupdates | nginx | ratio | aim |")
    print("|---|---|---|---|---|")
    for kind, aim in (("tls", "≥ 0.8x"), ("plain", "≥ 0.9x")):
        r = report[kind]
        cells = []
        for name in ("ucupdates", "nginx"):
            runs = r["runs"][name]
            mbs = statistics.median(x["bytes_per_s"] for x in runs) / 1e6
            cpu = statistics.median(x["server_cpu_s_per_gib"] for x in runs)
            cells.append(f"{mbs:,.0f} MB/s, {cpu:.2f} CPU s per GiB")
        size = f"{report['args']['image_mib']} MiB"
        title = f"{size} image, one connection, {'TLS' if kind == 'tls' else 'plain HTTP'}"
        print(
            f"| {title} | {cells[0]} | {cells[1]} | {h.fmt_ratio(r['ratio_rate'])} "
            f"(CPU: {h.fmt_ratio(r['ratio_server_cpu_per_request_us'])}) | {aim} |"
        )
    u, n = report["slow"]["ucupdates"], report["slow"]["nginx"]
    per = u["rss_per_connection"] / max(n["rss_per_connection"], 1)
    print(
        f"| memory per slow download ({u['clients']} over TLS) "
        f"| {u['rss_per_connection'] / 1024:.0f} KiB, +{u['growth_while_reading'] / 1024:.0f} KiB"
        f" while reading | {n['rss_per_connection'] / 1024:.0f} KiB, "
        f"+{n['growth_while_reading'] / 1024:.0f} KiB | {per:.2f}x nginx's | ≤ 1.2x, flat |"
    )


if __name__ == "__main__":
    main()
