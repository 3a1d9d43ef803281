"""Network namespaces joined to the host by veth pairs: a subnet of phones per zone.

A test that must show what phones on another network see (the internal and the external
zone, each its own subnet) makes one namespace per subnet: the host side of a veth pair
gets the subnet's first address (where the appliance listens), the namespace side as many
further addresses as the test has phones, and a default route back through the host.
Programs run inside with `in_namespace(subnet, argv)` (`ip netns exec`). Everything needs root and
`ip` from iproute2; `namespaces_unavailable()` says why namespaces cannot be made here, by trying.
Every name carries the process id, so parallel runs do not meet.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from ipaddress import IPv4Network

IP_SECONDS = 10.0  # one `ip` command; a loaded machine answers in milliseconds


@dataclass(frozen=True)
class Subnet:
    """One namespace and its subnet: the host's address in it and the phones' addresses."""

    namespace: str
    host_link: str  # the host's end of the veth pair
    network: IPv4Network
    host: str  # the host side's address: where the appliance listens for this subnet
    phones: tuple[str, ...]  # addresses of the namespace side, in order


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_SECONDS, check=False
    )
    if check and result.returncode != 0:
        raise OSError(f"ip {' '.join(args)}: {result.stderr.strip() or result.returncode}")
    return result


def namespaces_unavailable() -> str | None:
    """Why namespaces and veth pairs cannot be made here (None: they can); found by making
    one of each, running `true` in the namespace, and removing them."""
    if shutil.which("ip") is None:
        return "needs `ip` (Debian package iproute2)"
    name = f"ucprobe{os.getpid()}"
    try:
        _ip("netns", "add", name)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot make a network namespace{'' if os.geteuid() == 0 else ' (not root)'}: {e}"
    try:
        _ip("link", "add", f"{name[:11]}a", "type", "veth", "peer", "name", f"{name[:11]}b")
        _ip("netns", "exec", name, "true")
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"cannot make a veth pair or run a program in a namespace: {e}"
    finally:
        _ip("link", "del", f"{name[:11]}a", check=False)
        _ip("netns", "del", name, check=False)
    return None


def in_namespace(subnet: Subnet, argv: Sequence[str]) -> list[str]:
    """`argv` to be run in the subnet's namespace."""
    return ["ip", "netns", "exec", subnet.namespace, *argv]


def _stop_leftovers(namespace: str) -> None:
    """Ends the processes still running in the namespace (the test started them all)."""
    listed = _ip("netns", "pids", namespace, check=False).stdout.split()
    for pid in (int(p) for p in listed if p.isdigit()):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + IP_SECONDS
    while _ip("netns", "pids", namespace, check=False).stdout.split():
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)


@contextmanager
def veth_subnet(label: str, network: str, phones: int) -> Iterator[Subnet]:
    """A namespace `<label><pid>` joined to the host by a veth pair on `network`: the
    host side its first address, the namespace side the next `phones` ones (the label is
    short: interface names have 15 characters). Removed, with any process left in it,
    when the block ends, also after a failure."""
    net = IPv4Network(network)
    addresses = [str(a) for a in net.hosts()]
    if phones + 1 > len(addresses):
        raise ValueError(f"{network} has no room for {phones} phones")
    namespace = f"{label}{os.getpid()}"
    host_link, inner_link = f"{namespace}h", f"{namespace}n"
    if len(host_link) > 15:  # the kernel's limit on an interface name
        raise ValueError(f"label {label!r} is too long for an interface name")
    subnet = Subnet(namespace, host_link, net, addresses[0], tuple(addresses[1 : phones + 1]))
    _ip("netns", "add", namespace)
    try:
        _ip("link", "add", host_link, "type", "veth", "peer", "name", inner_link)
        _ip("link", "set", inner_link, "netns", namespace)
        _ip("addr", "add", f"{subnet.host}/{net.prefixlen}", "dev", host_link)
        _ip("link", "set", host_link, "up")
        within = ("-n", namespace)
        _ip(*within, "link", "set", "lo", "up")
        for address in subnet.phones:
            _ip(*within, "addr", "add", f"{address}/{net.prefixlen}", "dev", inner_link)
        _ip(*within, "link", "set", inner_link, "up")
        _ip(*within, "route", "add", "default", "via", subnet.host)
        yield subnet
    finally:
        _stop_leftovers(namespace)
        _ip("link", "del", host_link, check=False)
        _ip("netns", "del", namespace, check=False)


@contextmanager
def veth_subnets(*wanted: tuple[str, str, int]) -> Iterator[list[Subnet]]:
    """Several `veth_subnet`s (label, network, phones) at once; all removed at the end."""
    with ExitStack() as stack:
        yield [stack.enter_context(veth_subnet(*w)) for w in wanted]
