"""The Control Panel alone, as a process: `python tests/browser/server.py --data-dir D`.

Builds the admin site with `make_admin_site` and listens the way `serve` does (a
`SharedPortServer` with TLS profile `modern`), on 127.0.0.1 port 0. Prints one JSON line
(port, CA file, server certificate, FQDN) once it listens; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from twisted.internet import reactor as default_reactor
from twisted.logger import globalLogBeginner, textFileLogObserver
from twisted.protocols.tls import TLSMemoryBIOFactory

from appliance.admin import heartbeat_service
from appliance.admin.site import make_admin_site
from appliance.config import Address, AdminSettings, TlsProfile, load_config
from appliance.service import Listener, SharedPortServer
from appliance.store import GuardMode, Store, guard_thread
from appliance.testing.processes import free_port
from appliance.tls.contexts import context_factory
from appliance.tls.generated import ensure_test_certificates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--max-upload", type=int, default=AdminSettings.max_upload_bytes)
    parser.add_argument("--max-failures", type=int, default=AdminSettings.max_failures)
    parser.add_argument("--lockout", type=float, default=AdminSettings.lockout_seconds)
    parser.add_argument("--fqdn", help="the name the certificate carries (default: the config's)")
    parser.add_argument("--dsn-file", type=Path, help="a PostgreSQL store (its DSN in a file)")
    args = parser.parse_args()
    globalLogBeginner.beginLoggingTo([textFileLogObserver(sys.stderr)], redirectStandardIO=False)
    reactor: Any = default_reactor
    config = load_config(None, args.data_dir)
    if args.fqdn:
        service = dataclasses.replace(config.service, internal_fqdn=args.fqdn)
        config = dataclasses.replace(config, service=service)
    # a free port chosen here, so that the node's name in a pool (host:port) is known
    listeners = dataclasses.replace(config.listeners, admin=Address("127.0.0.1", free_port()))
    config = dataclasses.replace(config, listeners=listeners)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    if args.dsn_file is not None:  # a pool's node: store calls off the reactor thread
        store = Store.open_postgresql(args.dsn_file.read_text().strip())
        guard_thread(os.environ.get("UCUPDATES_REACTOR_GUARD", GuardMode.LOG))
    else:
        store = Store.open(config.db_path)
    creds = ensure_test_certificates(config.tls_dir, config.server_names())
    settings = AdminSettings(
        max_upload_bytes=args.max_upload,
        max_failures=args.max_failures,
        lockout_seconds=args.lockout,
    )
    site = make_admin_site(config, store, lambda: datetime.now(UTC), reactor, settings=settings)
    # the wiring `serve` uses (appliance/service.py)
    listener = Listener("admin", config.listeners.admin, TlsProfile.MODERN, False)
    tls: Any = context_factory(creds, TlsProfile.MODERN)
    server = SharedPortServer(listener, TLSMemoryBIOFactory(tls, False, site), reactor)
    server.startService()
    heartbeat = heartbeat_service(config, store, lambda: datetime.now(UTC), reactor)
    if heartbeat is not None:  # PostgreSQL: this node on the Pool page, as serve does
        heartbeat.startService()
    port = server._port.getHost().port
    print(
        json.dumps(
            {
                "port": port,
                "ca": str(creds.ca_file),
                "cert": str(creds.cert_file),
                "fqdn": config.internal_fqdn,
            }
        ),
        flush=True,
    )
    reactor.run()


if __name__ == "__main__":
    main()
