"""`ucupdates phone-sim`: one Lync Phone Edition phone, or a fleet, against an appliance.

One phone prints each round (discovery, check, downloads, restart) and its System
Information screen at the end; `--fleet N` runs N phones and prints a progress line while
they run (redrawn on a terminal, a plain line every few seconds otherwise) and a summary.
Exit status 0 when no round failed, 1 otherwise. docs/phonesim.md explains the options.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from appliance.cli.exits import EX_USAGE, Failure
from appliance.config import Config

PASSWORD_ENV = "UCUPDATES_PHONE_PASSWORD"  # noqa: S105 - a variable's name


def add_phone_sim_parser(sub: Any) -> None:
    p = sub.add_parser(
        "phone-sim",
        help="simulate Lync Phone Edition phones: discovery, check, download, restart",
    )
    where = p.add_argument_group("where the phone finds the appliance")
    where.add_argument(
        "--server", dest="check_server", metavar="URL",
        help="the appliance's scheme://host[:port]; skips DHCP and DNS",
    )  # fmt: skip
    where.add_argument(
        "--external-server", metavar="URL", help="outside phones' scheme://host[:port]"
    )
    where.add_argument("--dhcp", metavar="ADDR[:PORT]", help="send a DHCPINFORM here first")
    where.add_argument("--dhcp-client-port", type=int, default=68, metavar="PORT")
    where.add_argument("--dns", metavar="ADDR[:PORT]", help="resolve ucupdates-r2.<domain> here")
    where.add_argument("--domain", help="the DNS domain (default: from DHCP)")
    where.add_argument("--scheme", choices=("https", "http"), default="https")
    where.add_argument("--port", type=int, help="the discovered server's port")
    where.add_argument("--external-port", type=int, help="the same, for outside phones")
    where.add_argument("--connect", metavar="ADDR", help="connect here whatever a URL names")
    where.add_argument("--source", metavar="ADDR|NETWORK", help="local address(es) to use")
    where.add_argument(
        "--keep-alive", action="store_true", help="one connection per host for a round"
    )
    tls = p.add_argument_group("TLS and credentials")
    tls.add_argument("--ca", type=Path, metavar="FILE", help="CA file that verifies the server")
    tls.add_argument("--insecure", action="store_true", help="verify no certificate")
    tls.add_argument("--tls", choices=("1.0", "any"), default="1.0", help="1.0: as LPE phones")
    tls.add_argument("--external", action="store_true", help="check from outside (*Ext paths)")
    tls.add_argument("--user", help=f"the signed-in user; password from ${PASSWORD_ENV}")
    tls.add_argument("--auth", choices=("auto", "ntlm", "basic"), default="auto")
    phone = p.add_argument_group("the phone")
    phone.add_argument("--model", default="Polycom/CX600/A", metavar="VENDOR/MODEL[/REV]")
    phone.add_argument("--locale", default="ENU")
    phone.add_argument("--mac", help="default: the simulator's first MAC")
    phone.add_argument("--serial")
    phone.add_argument("--version", dest="phone_version", help="the version it runs")
    phone.add_argument("--idle", type=float, default=300.0, metavar="SECONDS")
    phone.add_argument("--rounds", type=int, default=5, help="at most this many checks")
    phone.add_argument(
        "--interval", type=float, metavar="SECONDS",
        help="after Downloads 0, check again this much later (default: stop)",
    )  # fmt: skip
    phone.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    phone.add_argument("--retries", type=int, default=3, help="resumes or retries a download")
    many = p.add_argument_group("fleet")
    many.add_argument("--fleet", type=int, metavar="N", help="run N phones")
    many.add_argument("--models", metavar="LIST", help="comma-separated VENDOR/MODEL[/REV]")
    many.add_argument("--locales", default="ENU", metavar="LIST", help="comma-separated")
    many.add_argument("--external-share", type=float, default=0.0, metavar="FRACTION")
    many.add_argument("--concurrency", type=int, default=50)
    many.add_argument("--jitter", type=float, default=0.0, metavar="SECONDS")
    many.add_argument("--deadline", type=float, default=3600.0, metavar="SECONDS")
    many.add_argument("--first", type=int, default=1, help="the first phone's number")
    for quirk, what in (
        ("revert", "install, check once on the new version, then go back to the old one"),
        ("stuck", "fetch what they are offered and never install it"),
        ("silent", "install what they are offered and never check again"),
    ):
        many.add_argument(
            f"--{quirk}-share", type=float, default=0.0, metavar="FRACTION",
            help=f"phones that {what}",
        )  # fmt: skip
    many.add_argument("--seed", type=int, default=0)
    many.add_argument("--json", type=Path, metavar="FILE", help="write every phone's rounds")


def _endpoint(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or ":" in host:
        return text.strip("[]"), default_port
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise Failure(f"not ADDR[:PORT]: {text!r}", EX_USAGE) from None


def _sources(text: str | None) -> tuple[str, ...]:
    if not text:
        return ()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise Failure(f"--source: not an address or network: {text!r}", EX_USAGE) from None
    if network.num_addresses == 1:
        return (str(network.network_address),)
    hosts = []
    for host in network.hosts():
        hosts.append(str(host))
        if len(hosts) >= 65536:
            break
    return tuple(hosts)


def _settings(args: argparse.Namespace) -> Any:
    from appliance.phonesim import Credentials, Net, Settings, phone_tls

    if not args.check_server and not args.dns:
        raise Failure("give --server URL, or --dns ADDR (with --domain or --dhcp)", EX_USAGE)
    plain = (args.check_server or "").startswith("http:") or (
        not args.check_server and args.scheme == "http"
    )
    if args.ca is None and not args.insecure and not plain:
        raise Failure("give --ca FILE to verify the appliance, or --insecure", EX_USAGE)
    credentials = None
    if args.user:
        password = os.environ.get(PASSWORD_ENV)
        if password is None:
            raise Failure(f"--user needs the password in ${PASSWORD_ENV}", EX_USAGE)
        credentials = Credentials(args.user, password, args.auth)
    context = phone_tls(None if args.insecure else str(args.ca) if args.ca else None, args.tls)
    net = Net(context, not args.insecure and args.ca is not None, args.timeout, args.connect)
    return Settings(
        net=net,
        server=args.check_server,
        scheme=args.scheme,
        port=args.port,
        dhcp=_endpoint(args.dhcp, 67) if args.dhcp else None,
        dhcp_client_port=args.dhcp_client_port,
        dns=_endpoint(args.dns, 53) if args.dns else None,
        domain=args.domain,
        credentials=credentials,
        retries=args.retries,
        keep_alive=args.keep_alive,
        external_server=args.external_server,
        external_port=args.external_port,
    )


def _round_line(number: int, record: Any) -> str:
    spent = ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in record.seconds.items())
    if record.outcome == "updated":
        what = f"updated to {record.offered} ({record.files} files, {record.bytes} bytes"
        what += f", {record.resumed} resumed)" if record.resumed else ")"
    elif record.outcome == "current":
        what = "Downloads 0: up to date"
    elif record.outcome == "stuck":
        what = f"offered {record.offered}, fetched it, did not install it"
    elif record.outcome == "reverted":
        what = f"Downloads 0 on {record.reported}, then went back to the previous version"
    else:
        what = f"failed ({record.detail})"
    auth = f" (authenticated: {record.auth})" if record.auth else ""
    return f"round {number}: {what}{auth}; {spent}"


def _progress(out: TextIO) -> Any:
    tty = out.isatty()
    last = [0.0]

    def show(stats: Any) -> None:
        now = time.monotonic()
        if not tty and now - last[0] < 5.0 and not stats.over:
            return
        last[0] = now
        failed = sum(stats.failures.values())
        line = (
            f"{stats.finished}/{stats.phones} phones done, {stats.running} running, "
            f"checks {stats.checks}, updates {stats.updates}, failed {failed}, "
            f"{stats.elapsed:.0f} s"
        )
        if tty:
            width = 30
            filled = width * stats.finished // max(stats.phones, 1)
            out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {line}\x1b[K")
        else:
            out.write(line + "\n")
        out.flush()

    return show


def run_phone_sim(args: argparse.Namespace, config: Config) -> int:
    from appliance.phonesim import (
        DEFAULT_VERSION,
        FleetSpec,
        PhoneIdentity,
        Schedule,
        fleet,
        mac_of,
        parse_model,
        run_fleet,
        run_round,
        runs_json,
        serial_of,
        summary_text,
        system_information,
    )

    settings = _settings(args)
    schedule = Schedule(
        concurrency=args.concurrency,
        jitter=args.jitter,
        idle=args.idle,
        rounds=args.rounds,
        deadline=args.deadline,
        seed=args.seed,
        interval=args.interval,
    )
    sources = _sources(args.source)
    user_id = args.user or ""
    try:
        spec = FleetSpec(
            locales=tuple(x.strip() for x in args.locales.split(",") if x.strip()),
            external_share=1.0 if args.external else args.external_share,
            sources=sources,
            first_number=args.first,
            seed=args.seed,
            external_user_id=user_id,
            revert_share=args.revert_share,
            stuck_share=args.stuck_share,
            silent_share=args.silent_share,
        )
        if args.fleet is not None:
            models = tuple(parse_model(m) for m in (args.models or "").split(",") if m.strip())
            if models:
                spec = dataclasses.replace(spec, models=models)
            phones = fleet(args.fleet, spec)
        else:
            vendor, model, revision = parse_model(args.model)
            phones = [
                PhoneIdentity(
                    vendor, model, revision, args.locale,
                    args.mac or mac_of(args.first), args.serial or serial_of(args.first),
                    user_id, args.external, sources[0] if sources else None,
                    fleet(1, spec)[0].quirk,  # one phone: a share of 1 makes it misbehave
                )
            ]  # fmt: skip
    except ValueError as e:
        raise Failure(str(e), EX_USAGE) from e
    version = args.phone_version or DEFAULT_VERSION
    if args.fleet is None:

        def verbose(phone: Any, state: Any, s: Any) -> Any:
            record = run_round(phone, state, s)
            print(_round_line(len(runs_so_far) + 1, record), flush=True)
            runs_so_far.append(record)
            restart = record.outcome in ("updated", "stuck", "reverted")
            if restart and len(runs_so_far) < schedule.rounds:
                print(f"idle {schedule.idle:g} s, then restart on {state.version}", flush=True)
            return record

        runs_so_far: list[Any] = []
        runs, stats = run_fleet(phones, settings, schedule, start_version=version,
                                round_runner=verbose)  # fmt: skip
        print(system_information(runs[0].phone, runs[0].state), end="")
    else:
        runs, stats = run_fleet(
            phones, settings, schedule, _progress(sys.stderr), start_version=version
        )
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        print(summary_text(stats), end="")
    if args.json:
        args.json.write_text(
            json.dumps({"summary": stats.as_json(), "phones": runs_json(runs)}, indent=1) + "\n"
        )
    return 0 if not stats.failures and all(r.done for r in runs) else 1
