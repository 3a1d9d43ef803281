"""The composition root of `ucupdates serve`: every listener and timer, from the config.

`make_service` only wires: it receives the config, the reactor, the store, the server
certificate (loaded by `ucupdates serve`) and the clock, and returns a MultiService.
Nothing below it reads files or the environment for settings.
"""

from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry
from twisted.application import internet, service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory

from appliance.admin import heartbeat_service, make_admin_site
from appliance.catalogue import NodeCache, drift_summary_service
from appliance.config import Address, AuthBackend, Config, TlsProfile
from appliance.directory import LdapDirectory
from appliance.discovery import DnsService, make_dhcp_service, make_dns_service
from appliance.ops import (
    ImportMetrics,
    MetricsResource,
    Readings,
    expiry_timer,
    make_registry,
    metrics_site,
)
from appliance.phones import (
    SHIP_SECONDS,
    Authenticator,
    BaseUrls,
    CatalogueWatcher,
    FileCheckService,
    LocalDirectory,
    PhoneService,
    SharedLockouts,
    StoreThreads,
    ThreadPoolRunner,
    branch_writer,
    clean_device_logs,
    ntlm_verifier,
)
from appliance.store import Store, node_name
from appliance.tls import ServerCredentials, context_factory
from appliance.web import LeanFactory, Limits

log = Logger(namespace="ucupdates.service")

METRICS_CONNECTIONS = 16  # open connections to the metrics listener: a few scrapers


@dataclass(frozen=True)
class Listener:
    name: str
    address: Address
    profile: TlsProfile | None  # None: plain HTTP
    external: bool


def listeners(config: Config) -> list[Listener]:
    found = [
        Listener(
            "internal-https",
            config.listeners.internal_https,
            config.tls.internal_profile,
            False,
        ),
        Listener(
            "external-https",
            config.listeners.external_https,
            config.tls.external_profile,
            True,
        ),
    ]
    if config.listeners.internal_http is not None:
        found.append(Listener("internal-http", config.listeners.internal_http, None, False))
    return found


class SharedPortServer(service.Service):
    """A listening socket with SO_REUSEPORT, so that worker processes share the port and
    the kernel spreads connections over them."""

    def __init__(self, listener: Listener, factory: Any, reactor: Any) -> None:
        self.listener_name = listener.name
        self._address = listener.address
        self._factory = factory
        self._reactor = reactor
        self._port: Any = None

    def startService(self) -> None:
        host, port = self._address.host, self._address.port
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
            self._port = self._reactor.adoptStreamPort(sock.fileno(), family, self._factory)
        except OSError as e:
            raise OSError(
                e.errno, f"cannot listen on {self._address} ({self.listener_name}): {e.strerror}"
            ) from e
        finally:
            sock.close()  # the reactor holds its own duplicate
        super().startService()

    def stopService(self) -> Any:
        super().stopService()
        if self._port is not None:
            return self._port.stopListening()
        return None


class ApplianceService(service.MultiService):
    """Starts the listeners; then knows their real ports (a port 0 in the config)."""

    def __init__(self, phone: PhoneService, config: Config) -> None:
        super().__init__()
        self.phone = phone
        self.config = config
        self.ports: dict[str, tuple[str, int]] = {}  # the phone-facing HTTP(S) listeners
        self.dns: DnsService | None = None

    def reload(self) -> None:
        """What SIGHUP does: re-read what can change without a restart (the DNS domains)."""
        if self.dns is not None:
            domains = self.dns.responder.reload()
            log.info(
                "configuration reloaded: DNS serves {domains}",
                domains=list(domains),
                event="config.reload",
            )

    def startService(self) -> None:
        super().startService()
        for child in self:
            port = getattr(child, "_port", None)
            name = getattr(child, "listener_name", None)
            if port is not None and name is not None:
                host = port.getHost()
                self.ports[name] = (host.host, host.port)
                log.info(
                    "listener {name} on {host}:{port} started",
                    name=name,
                    host=host.host,
                    port=host.port,
                    event="listener.start",
                )
        bound = {
            name.replace("-", "_"): Address(host, port)
            for name, (host, port) in self.ports.items()
            if name != "metrics"  # not a field of [listeners]
        }
        listening = dataclasses.replace(self.config.listeners, **bound)
        self.phone.set_urls(
            BaseUrls.from_config(dataclasses.replace(self.config, listeners=listening))
        )

    def stopService(self) -> Any:
        for name in self.ports:
            log.info("listener {name} stopping", name=name, event="listener.stop")
        result = super().stopService()
        closed = self.phone.close()  # PostgreSQL: the last flush's write, in a thread
        if closed is None:
            return result
        return defer.gatherResults([defer.maybeDeferred(lambda: result), closed])


def steady_seconds(
    wall: Callable[[], float] = time.time, elapsed: Callable[[], float] = time.monotonic
) -> Callable[[], float]:
    """Seconds since the epoch as they were at the start plus the time elapsed since (a
    monotonic clock): a wall clock set back a year does not lock users out for a year,
    nor does one set forward end every lockout."""
    offset = wall() - elapsed()
    return lambda: offset + elapsed()


def serve_metrics(
    config: Config,
    registry: CollectorRegistry,
    root: service.MultiService | None,
    admin_site: Any,
    reactor: Any,
    first_worker: bool = True,
) -> None:
    """/metrics on the admin listener, or on its own plain-HTTP listener (`metrics.listen`,
    bound by the first worker only: its figures are that process's)."""
    networks = config.metrics.allowed_networks
    if config.metrics.listen is None:  # beside the Control Panel
        admin_site.resource.putChild(b"metrics", MetricsResource(registry, networks))
    elif first_worker and root is not None:
        limits = Limits.of(config.service, METRICS_CONNECTIONS)
        site = metrics_site(registry, networks, limits, reactor)
        own = Listener("metrics", config.metrics.listen, None, False)
        SharedPortServer(own, site, reactor).setServiceParent(root)


def make_service(
    config: Config,
    reactor: Any,
    store: Store,
    credentials: ServerCredentials,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    first_worker: bool = True,
) -> ApplianceService:
    if config.auth.backend is AuthBackend.LDAP:
        directory: Any = LdapDirectory(config.auth.ldap)
    else:
        directory = LocalDirectory.at(config.db_path, store)  # PostgreSQL's: shared
    authenticator = Authenticator(
        directory,
        config.auth,
        steady_seconds(),  # lockouts and remembered logins: a clock step does not move them
        run_blocking=ThreadPoolRunner(reactor),
        ntlm=ntlm_verifier(config.auth, config.db_path, store),
        # a pool's lockouts held by every node (PostgreSQL)
        shared=SharedLockouts(store, node_name()) if store.backend == "postgresql" else None,
    )
    # PostgreSQL: no store call on the reactor thread (docs/pool.md): the phones' store work
    # runs in threads of its own, and a watcher thread reloads their catalogue snapshot.
    offload = StoreThreads(reactor) if store.backend == "postgresql" else None
    phone = PhoneService(config, store, authenticator, clock, offload)
    phone.records.batch_audit(lambda write: reactor.callLater(0, write))  # one write a turn
    root = ApplianceService(phone, config)
    # a branch node: the inventory goes to the primary, or waits in the spool for it
    writer = branch_writer(phone.records, store)
    if writer is not None and offload is not None:
        shipping = internet.TimerService(SHIP_SECONDS, lambda: offload(writer.ship))
        shipping.clock = reactor
        shipping.setServiceParent(root)
    if offload is not None:  # first: the snapshot is loaded before anything reads it
        # the node's files folder filled from the blobs its rules reference, in a thread
        cache = NodeCache(store, config.store_dir, config.staging_dir, phone.answers.verifier)
        watcher = CatalogueWatcher(store, phone.answers, reactor, after_reload=cache.fill_soon)
        watcher.setServiceParent(root)
    limits = Limits.of(config.service)
    for listener in listeners(config):
        routes = phone.routes(listener.external, plain_http=listener.profile is None)
        factory: Any = LeanFactory(routes, limits, reactor)
        if listener.profile is not None:
            tls: Any = context_factory(credentials, listener.profile)
            factory = TLSMemoryBIOFactory(tls, False, factory, clock=reactor)
        server = SharedPortServer(listener, factory, reactor)
        server.setServiceParent(root)

    if first_worker:  # DNS and DHCP do not share their ports between workers
        root.dns = make_dns_service(config, reactor)
        root.dns.setServiceParent(root)
        dhcp = make_dhcp_service(config, reactor)
        dhcp.setServiceParent(root)
        warn_days = config.syslog.cert_warn_days
        expiry_timer(credentials, warn_days, clock, reactor).setServiceParent(root)

    registry: CollectorRegistry | None = None
    imports: ImportMetrics | None = None
    if config.metrics.enabled:
        readings = Readings(
            checks=lambda: phone.records.checks,
            offers=lambda: phone.records.offers,
            last_check=lambda: phone.records.last_check,
            downloads=phone.downloads.slots.figures,
            auth=lambda: authenticator.counts,
            certificate_expiry=lambda: credentials.not_after,
            store=store,
            offload=offload,  # PostgreSQL: the store's figures read in a thread
        )
        if first_worker and root.dns is not None:
            readings.dns = lambda: root.dns.responder.counters if root.dns else {}
        if first_worker and dhcp.protocol is not None:
            readings.dhcp = lambda: {o.value: n for o, n in dhcp.protocol.counts.items()}
        registry, imports = make_registry(readings)
    admin_site: Any = make_admin_site(
        config,
        store,
        clock,
        reactor,
        service=root,
        observe_import=imports.observe if imports is not None else None,
    )
    if registry is not None:
        serve_metrics(config, registry, root, admin_site, reactor, first_worker)
    admin_listener = Listener("admin", config.listeners.admin, TlsProfile.MODERN, False)
    admin_tls: Any = context_factory(credentials, TlsProfile.MODERN)
    SharedPortServer(
        admin_listener, TLSMemoryBIOFactory(admin_tls, False, admin_site), reactor
    ).setServiceParent(root)

    FileCheckService(phone.answers, reactor).setServiceParent(root)  # hashes, at start-up
    flush = internet.TimerService(1.0, phone.flush_inventory)
    flush.clock = reactor
    flush.setServiceParent(root)
    if first_worker:  # staged approvals move, and silent devices are found, once
        rollouts = internet.TimerService(config.rollouts.timer_seconds, phone.rollout_tick)
        rollouts.clock = reactor
        rollouts.setServiceParent(root)
        summary = drift_summary_service(  # once a day
            store, config.rollouts, clock, reactor, offload=offload
        )
        if summary is not None:
            summary.setServiceParent(root)
        heartbeat = heartbeat_service(config, store, clock, reactor)  # a pool's Pool page
        if heartbeat is not None:
            heartbeat.setServiceParent(root)
    retention = internet.TimerService(
        3600.0,
        lambda: clean_device_logs(
            config.logs_dir, config.device_logs.retention_days, reactor.seconds()
        ),
    )
    retention.clock = reactor
    retention.setServiceParent(root)
    return root
