"""`ucupdates serve` and `ucupdates reload`: starting the service from the command line.

`serve` sets up logging (standard error, and syslog when configured), builds everything
with `service.make_service`, prints where to point a phone, and runs the reactor; with
`--workers N` it starts N-1 more processes that share the listening ports.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import subprocess
import sys
from typing import Any

from appliance.cli.exits import EX_CONFIG, EX_USAGE, Failure
from appliance.config import Address, Config, ConfigError
from appliance.store import Store


def serve(args: argparse.Namespace, config: Config, store: Store, actor: str) -> int:
    from twisted.internet import reactor as default_reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        jsonFileLogObserver,
        textFileLogObserver,
    )

    from appliance.catalogue import sample_check
    from appliance.service import make_service
    from appliance.tls import CertError

    reactor: Any = default_reactor
    observer: Any = (
        jsonFileLogObserver(sys.stderr)
        if args.log_format == "json"
        else textFileLogObserver(sys.stderr)
    )
    predicate: Any = LogLevelFilterPredicate(LogLevel.info)
    filtered: Any = FilteringLogObserver(observer, [predicate])
    from appliance.ops import SyslogError, make_syslog_observer

    try:
        syslog_observer = make_syslog_observer(config, reactor)
    except SyslogError as e:
        raise Failure(str(e), EX_CONFIG) from e
    observers: list[Any] = [filtered]
    if syslog_observer is not None:
        observers.append(syslog_observer)
        reactor.addSystemEventTrigger("after", "shutdown", syslog_observer.close)
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)
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
    try:
        root = make_service(config, reactor, store, first_worker=not args.bind)
        root.startService()
    except CertError as e:
        raise Failure(f"certificate: {e}", EX_CONFIG) from e
    except ConfigError as e:
        raise Failure(str(e), EX_CONFIG) from e
    except Exception as e:  # a port in use, an address not on this host...
        raise Failure(f"cannot start: {e}") from e
    reactor.addSystemEventTrigger("before", "shutdown", root.stopService)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(root.reload))
    if args.bind:
        _follow_parent(reactor)
        reactor.run()
        return 0
    if args.workers > 1:
        _start_workers(reactor, config, args, root.ports)
    check = config.data_dir / "sample" / "check.xml"
    check.parent.mkdir(parents=True, exist_ok=True)
    check.write_bytes(sample_check())
    host, port = root.ports["internal-https"]
    fqdn = config.internal_fqdn
    creds = root.credentials
    pid_file = config.data_dir / "ucupdates.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    reactor.addSystemEventTrigger("after", "shutdown", pid_file.unlink, missing_ok=True)
    print("ucupdates is serving:")
    listening = dict(root.ports)
    if root.dns is not None:
        listening.update(root.dns.ports)
    for name, (bound_host, bound_port) in listening.items():
        print(f"  {name:15} {bound_host}:{bound_port}")
    if creds is not None and creds.ca_file is not None:
        print(f"phones must trust the CA certificate {creds.ca_file}")
    print(f"point a phone at https://{fqdn}:{port}/ (DNS name {fqdn} -> this host)")
    print("try an update check as a Polycom CX600 would send it:")
    ca = f"--cacert {creds.ca_file} " if creds is not None and creds.ca_file else "-k "
    print(
        f"  curl {ca}--resolve {fqdn}:{port}:{host} -H 'Content-Type: text/xml' "
        f"--data-binary @{check} https://{fqdn}:{port}/RequestHandler/ucdevice.upx"
    )
    sys.stdout.flush()
    reactor.run()
    return 0


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
    argv += [f"--bind={name}={Address(host, port)}" for name, (host, port) in ports.items()]
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
