"""HTTP servers in process: real requests through the real server, over memory, no sockets.

`memory_client(make_site)` is treq's StubTreq, but the requests reach the server the
appliance builds (a phone listener's `LeanFactory` with its admission, or the Control
Panel's site) rather than a plain Site around a resource. `settle` moves the bytes until a
response is there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer
from twisted.internet import reactor as global_reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.web.resource import Resource

from appliance.phones import PhoneService
from appliance.web import LeanFactory, Limits

SETTLE_ROUNDS = 10_000  # each round moves what is buffered; a download needs one per chunk


def memory_client(make_site: Callable[[MemoryReactorClock], Any]) -> StubTreq:
    """A treq client whose requests reach `make_site(reactor)` over an in-memory transport.

    The site gets the client's memory reactor, so its timers run only when the test says.
    """
    stub = StubTreq(Resource())  # type: ignore[no-untyped-call]
    agent = stub._agent
    agent._serverFactory = make_site(agent._memoryReactor)
    return stub


def settle(stub: StubTreq, d: defer.Deferred[Any]) -> Any:
    """Move bytes between client and server until `d` fires, in bounded rounds.

    An image's body (`phones.image_body.TransportBody`) writes a batch a reactor turn, on
    the site's reactor: the client's memory reactor, whose calls that are due each round
    runs (its clock does not move). Pull producers elsewhere are pumped by Twisted's global
    cooperator, which schedules on the global reactor, not running here: each round runs
    its due calls too (no sockets are involved).
    """
    box: list[Any] = []
    d.addBoth(box.append)
    memory = stub._agent._memoryReactor
    for _ in range(SETTLE_ROUNDS):
        if box:
            break
        stub.flush()  # type: ignore[no-untyped-call]
        memory.advance(0)
        global_reactor.runUntilCurrent()
    if not box:
        raise AssertionError("the in-memory request did not complete")
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


class InlinePool:
    """A thread pool that runs the work at once, on the calling thread."""

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], work: Callable[..., Any], *args: Any
    ) -> None:
        try:
            result = work(*args)
        except Exception:
            on_result(False, Failure())  # type: ignore[no-untyped-call]
        else:
            on_result(True, result)


class InlineReactor(MemoryReactorClock):
    """A memory reactor whose thread-pool work (password checks, imports) runs inline."""

    def getThreadPool(self) -> InlinePool:
        return InlinePool()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        f(*args, **kwargs)


class QueuedPool:
    """A thread pool that holds the work until `run()`: the work stays in flight."""

    def __init__(self) -> None:
        self.queue: list[tuple[Callable[[bool, Any], None], Callable[[], Any]]] = []
        self.submitted = 0

    def callInThreadWithCallback(
        self, on_result: Callable[[bool, Any], None], work: Callable[..., Any], *args: Any
    ) -> None:
        self.submitted += 1
        self.queue.append((on_result, lambda: work(*args)))

    def run(self) -> int:
        """Run the work held so far (and none it adds); returns how many ran."""
        held, self.queue = self.queue, []
        for on_result, work in held:
            InlinePool().callInThreadWithCallback(on_result, work)
        return len(held)


class QueuedReactor(InlineReactor):
    """A memory reactor whose thread-pool work waits in `pool` until the test runs it."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # Twisted: unannotated
        self.pool = QueuedPool()

    def getThreadPool(self) -> QueuedPool:  # type: ignore[override]
        return self.pool


def inline(work: Callable[[], bool]) -> defer.Deferred[bool]:
    """The authenticator's `run_blocking`, running each password check at once."""
    return defer.succeed(work())


def phone_site(
    service: PhoneService, reactor: Any, external: bool = False, plain_http: bool = False
) -> LeanFactory:
    """A phone listener's server as `make_service` builds it (internal HTTPS by default),
    without the TLS around it."""
    routes = service.routes(external, plain_http=plain_http)
    return LeanFactory(routes, Limits.of(service.config.service), reactor)


def phone_client(
    service: PhoneService, external: bool = False, plain_http: bool = False
) -> StubTreq:
    """A treq client of a phone listener's site, in process."""
    return memory_client(lambda reactor: phone_site(service, reactor, external, plain_http))
