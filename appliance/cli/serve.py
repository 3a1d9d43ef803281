"""`ucupdates serve` and `ucupdates reload`: the composition root of the running service.

`serve` sets up logging (standard error, and syslog when configured), loads the server
certificate (the configured pair, the one `certs install` put in place, or a generated
test CA), builds everything with `service.make_service`, prints where to point a phone,
and runs the reactor; with `--workers N` it starts N-1 more processes that share the
listening ports. `reload` asks the running service to re-read its DNS domains (SIGHUP).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from appliance.catalogue import hold_serve_lock
from appliance.cli.exits import EX_CONFIG, EX_USAGE, Failure
from appliance.cli.packages import SAMPLE_CHECK
from appliance.config import Address, Config, ConfigError
from appliance.store import GuardMode, Store, guard_thread

if TYPE_CHECKING:
    from appliance.service import ApplianceService
    from appliance.tls import ServerCredentials


# What `serve` creates is no one else's to read, whatever umask it was started with (files
# holding secrets are also opened 0600 where they are created: the database, the audit
# file, device logs, captures).
SERVE_UMASK = 0o027


def add_serve_parsers(sub: Any) -> None:
    """`serve` and `reload`."""
    p = sub.add_parser("serve", help="run the phone-facing service in the foreground")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the listening ports (default 1)",
    )
    p.add_argument("--bind", action="append", default=[], help=argparse.SUPPRESS)
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="how events are written to standard error",
    )
    sub.add_parser("reload", help="make the running service re-read the DNS domains (SIGHUP)")


def server_credentials(config: Config) -> ServerCredentials:
    """The configured certificate, else the installed one, else the test CA's (made once)."""
    from appliance.tls import ensure_test_certificates, installed_pair, load_credentials

    if config.tls.cert_file is not None and config.tls.key_file is not None:
        return load_credentials(config.tls.cert_file, config.tls.key_file)
    installed = installed_pair(config.tls_dir)  # `ucupdates certs install`
    if installed is not None:
        return load_credentials(*installed)
    return ensure_test_certificates(
        config.tls_dir, config.server_names(), signature=config.tls.generated_signature
    )


def serve(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    from twisted.internet import reactor as default_reactor

    from appliance.service import make_service
    from appliance.tls import CertError

    reactor: Any = default_reactor
    os.umask(os.umask(SERVE_UMASK) | SERVE_UMASK)  # as the systemd unit's UMask=0027, or tighter
    _begin_logging(config, reactor, args.log_format)
    if args.workers < 1:
        raise Failure("--workers must be at least 1", EX_USAGE)
    for bind in args.bind:  # a worker started by the first process: the same ports
        name, _, where = bind.partition("=")
        config = dataclasses.replace(
            config,
            listeners=dataclasses.replace(
                config.listeners, **{name.replace("-", "_"): Address.parse(where)}
            ),
        )
    hold_serve_lock(config.data_dir)  # held until the process ends: no restore meanwhile
    try:
        creds = server_credentials(config)
        root = make_service(config, reactor, store, creds, first_worker=not args.bind)
        root.startService()
    except CertError as e:
        raise Failure(f"certificate: {e}", EX_CONFIG) from e
    except ConfigError as e:
        raise Failure(str(e), EX_CONFIG) from e
    except Exception as e:  # a port in use, an address not on this host...
        raise Failure(f"cannot start: {e}") from e
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(root.reload))
    guard_reactor(os.environ)
    if args.bind:
        _follow_parent(reactor)
        reactor.run()
        return 0
    if args.workers > 1:
        _start_workers(reactor, config, args, root.ports)
    pid_file = config.data_dir / "ucupdates.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    reactor.addSystemEventTrigger("after", "shutdown", pid_file.unlink, missing_ok=True)
    _print_banner(config, root, creds)
    reactor.run()
    return 0


REACTOR_GUARD = "UCUPDATES_REACTOR_GUARD"  # raise (the tests), log (the default) or off


def guard_reactor(environ: Mapping[str, str]) -> None:
    """From here on this thread runs the reactor: a PostgreSQL store call made on it is a
    bug (`store.guard`), logged once, or raised with UCUPDATES_REACTOR_GUARD=raise. What
    ran before (opening the store, the first catalogue snapshot) was before any phone."""
    try:
        mode = GuardMode(environ.get(REACTOR_GUARD, "log").strip().lower() or "log")
    except ValueError:
        raise Failure(f"{REACTOR_GUARD} must be raise, log or off", EX_CONFIG) from None
    guard_thread(mode)


def _begin_logging(config: Config, reactor: Any, log_format: str) -> None:
    """Events at info and above to standard error (text or JSON), and to syslog if set."""
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        jsonFileLogObserver,
    )

    from appliance.cli.console import text_observer
    from appliance.ops import SyslogError, make_syslog_observer

    observer: Any = (
        jsonFileLogObserver(sys.stderr) if log_format == "json" else text_observer(sys.stderr)
    )
    predicate: Any = LogLevelFilterPredicate(LogLevel.info)
    filtered: Any = FilteringLogObserver(observer, [predicate])
    try:
        syslog_observer = make_syslog_observer(config, reactor)
    except SyslogError as e:
        raise Failure(str(e), EX_CONFIG) from e
    observers: list[Any] = [filtered]
    if syslog_observer is not None:
        observers.append(syslog_observer)
        reactor.addSystemEventTrigger("after", "shutdown", syslog_observer.close)
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)


def _print_banner(config: Config, root: ApplianceService, creds: ServerCredentials) -> None:
    """The listeners, the CA phones must trust, and (after `make run`) a curl line to try."""
    host, port = root.ports["internal-https"]
    fqdn = config.internal_fqdn
    print("ucupdates is serving:")
    listening = dict(root.ports)
    if root.dns is not None:
        listening.update(root.dns.ports)
    for name, (bound_host, bound_port) in listening.items():
        print(f"  {name:15} {bound_host}:{bound_port}")
    if creds.ca_file is not None:
        print(f"phones must trust the CA certificate {creds.ca_file}")
    plain = root.ports.get("internal-http")
    if plain is not None:
        print(f"inside, phones may also use http://{fqdn}:{plain[1]}/ (refused to external ones)")
    print(f"point a phone at https://{fqdn}:{port}/ (DNS name {fqdn} -> this host)")
    check = config.data_dir / SAMPLE_CHECK  # `make-sample-package --sample-check` writes it
    if check.is_file():
        print("try an update check as a Polycom CX600 would send it:")
        ca = f"--cacert {creds.ca_file} " if creds.ca_file else "-k "
        print(
            f"  curl {ca}--resolve {fqdn}:{port}:{host} -H 'Content-Type: text/xml' "
            f"--data-binary @{check} https://{fqdn}:{port}/RequestHandler/ucdevice.upx"
        )
        if plain is not None:
            print(
                f"  curl --resolve {fqdn}:{plain[1]}:{plain[0]} -H 'Content-Type: text/xml' "
                f"--data-binary @{check} http://{fqdn}:{plain[1]}/RequestHandler/ucdevice.upx"
            )
    sys.stdout.flush()


def reload(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    pid_file = config.data_dir / "ucupdates.pid"
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as e:
        raise Failure(f"no running service found for {config.data_dir} ({e})") from e
    print(f"asked process {pid} to reload")
    return 0


def _start_workers(
    reactor: Any, config: Config, args: argparse.Namespace, ports: dict[str, tuple[str, int]]
) -> None:
    """N-1 more processes that bind the same ports (SO_REUSEPORT); stopped with this one."""
    argv = [sys.executable, "-m", "appliance", "--data-dir", str(config.data_dir)]
    if config.source is not None:
        argv += ["--config", str(config.source)]
    argv += ["serve", "--log-format", args.log_format]
    argv += [
        f"--bind={name}={Address(host, port)}"
        for name, (host, port) in ports.items()
        if name != "metrics"  # the first process's alone (service.serve_metrics)
    ]
    workers = [subprocess.Popen(argv) for _ in range(args.workers - 1)]

    def stop_workers() -> None:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()

    reactor.addSystemEventTrigger("before", "shutdown", stop_workers)


def _follow_parent(reactor: Any) -> None:
    """A worker stops when the process that started it is gone."""
    from twisted.internet.task import LoopingCall

    parent = os.getppid()

    def check() -> None:
        if os.getppid() != parent:
            reactor.stop()

    LoopingCall(check).start(1.0, now=False)
