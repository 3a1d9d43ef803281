"""GET /metrics: the registry in Prometheus's text format, to the allowed networks only.

Served on the admin listener (HTTPS, beside the Control Panel) or on a plain-HTTP listener
of its own (`metrics.listen`), which answers nothing but /metrics. Either way the client
must be in `metrics.allowed_networks`, judged by the TCP peer's address (a proxy header
counts for nothing): others get 403, and nothing is computed for them. The text format or
OpenMetrics, as the scraper's Accept header asks (`prometheus_client`'s choice).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from twisted.web import resource, server

from appliance.config import Network
from appliance.web import GuardedRequest, GuardedSite, Limits, Rejection

PATH = b"/metrics"


def allowed(host: str, networks: Iterable[Network]) -> bool:
    """Whether a peer address is in one of `networks` (an IPv4-mapped IPv6 address counts
    as its IPv4 address)."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


def peer_host(request: server.Request) -> str:
    http_request: Any = request  # Twisted's getClientAddress is unannotated
    return str(getattr(http_request.getClientAddress(), "host", ""))


class MetricsResource(resource.Resource):
    """/metrics itself: 403 outside `networks`, else the registry's exposition."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry, networks: tuple[Network, ...]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted: unannotated
        self.registry = registry
        self.networks = networks

    def render_GET(self, request: server.Request) -> bytes:
        http_request: Any = request  # Twisted's setHeader is unannotated
        http_request.setHeader(b"cache-control", b"no-store")
        if not allowed(peer_host(request), self.networks):
            http_request.setResponseCode(403)
            http_request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"metrics are not served to this address (metrics.allowed_networks)\n"
        accept = request.getHeader(b"accept")
        encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        http_request.setHeader(b"content-type", content_type.encode())
        return bytes(encoder(self.registry))


class _Only(resource.Resource):
    """The own listener's root: /metrics, and 404 for every other path."""

    def __init__(self, metrics: MetricsResource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        child: Any = metrics
        self.putChild(b"metrics", child)

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        return resource.NoResource()


def metrics_site(
    registry: CollectorRegistry, networks: tuple[Network, ...], limits: Limits, reactor: Any
) -> GuardedSite:
    """The plain-HTTP site of `metrics.listen`: a GET without a body, from the allowed
    networks (others are refused when their headers are in), within the guard's limits."""

    def admit(
        request: GuardedRequest, method: bytes, path: bytes, length: int | None
    ) -> Rejection | None:
        if not allowed(peer_host(request), networks):
            return Rejection(403, "metrics are not served to this address")
        if method not in (b"GET", b"HEAD"):
            return Rejection(405, "only GET", ((b"Allow", b"GET, HEAD"),))
        if path.split(b"?", 1)[0] != PATH:
            return Rejection(404, "not found")
        if length:
            return Rejection(413, "no request body is taken here")
        request.max_body = 0
        return None

    root = _Only(MetricsResource(registry, networks))
    return GuardedSite(root, admit, limits, reactor=reactor)
