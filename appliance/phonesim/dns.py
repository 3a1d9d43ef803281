"""The phone's lookup of its update server (docs/protocol.md §3): an A query for
`ucupdates-r2.<domain>`, then `ucupdates.<domain>`, over UDP to a given DNS server."""

from __future__ import annotations

import os
import select
import socket
import time

from dnslib import QTYPE, RCODE, DNSRecord

NAMES = ("ucupdates-r2", "ucupdates")


class DnsFailure(Exception):
    """No address for any of the names."""


def query_a(name: str, server: tuple[str, int], timeout: float, source: str | None = None) -> str:
    """The first A record of `name` from `server`; DnsFailure when there is none in time."""
    question = DNSRecord.question(name, "A")
    question.header.id = int.from_bytes(os.urandom(2), "big")
    family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        if source is not None and family == socket.AF_INET:
            sock.bind((source, 0))
        sock.sendto(question.pack(), server)
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            data, sender = sock.recvfrom(65535)
            try:
                reply = DNSRecord.parse(data)
            except Exception:  # noqa: S112 - dnslib raises several types; a stray datagram
                continue
            if reply.header.id != question.header.id:
                continue
            if reply.header.rcode != RCODE.NOERROR:
                raise DnsFailure(f"{name}: {RCODE.get(reply.header.rcode)}")
            for rr in reply.rr:
                if rr.rtype == QTYPE.A:
                    return str(rr.rdata)
            raise DnsFailure(f"{name}: no A record")
    raise DnsFailure(f"{name}: no answer from {server[0]}:{server[1]} within {timeout:g} s")


def discover(
    domain: str, server: tuple[str, int], timeout: float, source: str | None = None
) -> tuple[str, str]:
    """(name, address) of the first of `NAMES` in `domain` that resolves."""
    reasons = []
    for label in NAMES:
        name = f"{label}.{domain.strip('.')}"
        try:
            return name, query_a(name, server, timeout, source)
        except DnsFailure as e:
            reasons.append(str(e))
    raise DnsFailure("; ".join(reasons))
