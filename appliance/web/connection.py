"""What a lean HTTP connection does besides HTTP: its one timer, reading paused and
resumed, its producer registration, refusing, closing and cutting.

`Connection` is the base of `lean.LeanChannel`. One timer per connection serves both
clocks (a request's `request_timeout`, the keep-alive `idle_timeout`): it is armed no
later than the nearest deadline and, when it runs, looks at the time and the state, so a
keep-alive request costs no timer operation. A refusal is written with
`Connection: close`, reading stops (over TLS the close would otherwise wait for the
client's close_notify while a body streaming in is read and decrypted), and the
connection is cut `LINGER_SECONDS` later if the client has not closed it by then.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Protocol

from appliance.web.guard import LINGER_SECONDS, Limits, Rejection
from appliance.web.responses import Dates, render

_INFINITY = float("inf")


class Connection(Protocol):
    """The plumbing of one connection; `_timer` decides what a due timer means."""

    def __init__(self, limits: Limits, clock: Any, dates: Dates, peer: Any) -> None:
        self.limits = limits
        self.clock = clock  # IReactorTime
        self.dates = dates
        self.peer = peer
        self._watch: Any = None  # the one IDelayedCall: request_timeout or idle_timeout
        self._watch_at = _INFINITY
        self._linger: Any = None  # the cut after a close
        self._stopped = False  # read and parse nothing more (refused, closing, or gone)
        self._closing = False  # closed, or closes once what is queued is answered
        self._gone = False
        self._producing = False  # registered as the transport's producer
        self._reading_paused = False

    @property
    def gone(self) -> bool:
        """The connection is lost: answers to it are dropped."""
        return self._gone

    def connectionLost(self, reason: Any = None) -> None:
        self._gone = self._stopped = self._closing = True
        self._cancel_watch()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None

    # -- the timer --------------------------------------------------------------------

    def _arm(self, at: float) -> None:
        """Have the timer run no later than `at` (seconds on the clock)."""
        if at >= self._watch_at:
            return
        delay = max(0.0, at - self.clock.seconds())
        if self._watch is None:
            self._watch = self.clock.callLater(delay, self._due)
        else:
            self._watch.reset(delay)
        self._watch_at = at

    def _cancel_watch(self) -> None:
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = None
        self._watch_at = _INFINITY

    def _due(self) -> None:
        self._watch = None
        self._watch_at = _INFINITY
        if not self._stopped:
            self._timer()

    def _timer(self) -> None:
        raise NotImplementedError

    # -- the transport ----------------------------------------------------------------

    def _produce(self, registered: bool) -> None:
        """Be (or stop being) the transport's push producer, told when its write
        buffer is full and when it drained."""
        transport: Any = self.transport
        if registered == self._producing or transport is None or self._gone:
            return
        self._producing = registered
        if registered:
            transport.registerProducer(self, True)
        else:
            transport.unregisterProducer()

    def _read(self, paused: bool) -> None:
        """Pause or resume reading from the client."""
        transport: Any = self.transport
        if self._gone or transport is None or getattr(transport, "disconnecting", False):
            return
        if paused != self._reading_paused:
            self._reading_paused = paused
            (transport.pauseProducing if paused else transport.resumeProducing)()

    # -- refusing and closing ---------------------------------------------------------

    def _write_refusal(self, rejection: Rejection) -> None:
        """Answer `rejection` now, read nothing more, close, and cut after a linger."""
        self._stopped = self._closing = True
        self._cancel_watch()
        transport: Any = self.transport
        if transport is None or self._gone:
            return
        body = rejection.reason.encode("utf-8", "replace") + b"\n"
        headers = [b"Content-Type: text/plain; charset=utf-8"]
        headers += [name + b": " + value for name, value in rejection.headers]
        transport.write(render(rejection.status, headers, body, self.dates.line(), close=True))
        self._read(True)
        self._close(LINGER_SECONDS)

    def _close(self, cut_after: float | None = None) -> None:
        """Close once what is written is sent; cut after `cut_after` (default: the idle
        timeout) if the client holds the connection open."""
        self._stopped = self._closing = True
        self._cancel_watch()
        transport: Any = self.transport
        if transport is None or self._gone:
            return
        self._produce(False)  # a registered producer would hold the close back
        transport.loseConnection()
        if self._linger is None:
            wait = self.limits.idle_timeout if cut_after is None else cut_after
            self._linger = self.clock.callLater(wait, self._abort)

    def _abort(self) -> None:
        self._linger = None
        self._stopped = self._closing = True
        transport: Any = self.transport
        if transport is not None and not self._gone:
            transport.abortConnection()


class Refused(Protocol):
    """A connection over the limit: closed at once (returning None would leave the TLS
    wrapper failing with an unhandled error and completing the handshake)."""

    def connectionMade(self) -> None:
        transport: Any = self.transport
        transport.abortConnection()
