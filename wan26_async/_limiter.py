"""When a request may leave: the 429 gate and pacing, shared by every call of a client.

`RateLimiter` is the small interface the transport talks to; `InProcessRateLimiter` is
the default. Its waiters are released in FIFO order by one timer (no background task),
spaced by the pace, so a pause ends without a herd.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections import deque

__all__ = ["InProcessRateLimiter", "RateLimiter"]

_log = logging.getLogger("wan26_async")

#: Spacing of released waiters after a pause when no rate is known (50 per second).
DEFAULT_RELEASE_INTERVAL = 0.02
#: Pause after a 429 that carries no Retry-After.
DEFAULT_RETRY_AFTER = 1.0


class RateLimiter(abc.ABC):
    """Decides when each request of a client may leave.

    The transport calls `acquire` right before every HTTP request and reports every
    429 ``rate_limit_exceeded`` through `on_rate_limited`. An implementation is bound
    to the event loop of its first use.
    """

    @abc.abstractmethod
    async def acquire(self) -> None:
        """Return when the next request may be sent. Cancellation-safe."""

    @abc.abstractmethod
    async def on_rate_limited(self, retry_after: float | None) -> None:
        """A request was refused with 429 ``rate_limit_exceeded``: pause every caller
        until ``retry_after`` seconds from now (a default when the server gave none)."""

    def on_success(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """A request was admitted (any reply but a 429). Used by adaptive limiters."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the limiter holds (timers, connections). Idempotent."""


class InProcessRateLimiter(RateLimiter):
    """The default limiter: a gate closed by 429s, and optional pacing at ``rate``.

    ``rate`` (requests per second) paces every request when the caller knows the
    server's limit; with None, requests leave at once except after a 429, when they
    are released in order, ``release_interval`` seconds apart.
    """

    def __init__(
        self,
        rate: float | None = None,
        *,
        release_interval: float = DEFAULT_RELEASE_INTERVAL,
        default_retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive requests per second, got {rate!r}")
        self.rate = rate
        self._interval = 1.0 / rate if rate else 0.0
        self._release_interval = release_interval
        self._default_retry_after = default_retry_after
        self._gate_until = 0.0  # loop time before which nothing leaves
        self._next = 0.0  # loop time the next request may leave (pacing)
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.pauses = 0  # how many times a 429 closed the gate (for stats and tests)

    def __repr__(self) -> str:
        return f"InProcessRateLimiter(rate={self.rate!r})"

    @property
    def paused_until(self) -> float:
        """Loop time (``loop.time()``) until which the gate is closed; 0 when never."""
        return self._gate_until

    async def acquire(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._waiters and now >= self._gate_until and now >= self._next:
            if self._interval:
                self._next = now + self._interval
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self._schedule()
        # A cancelled waiter stays in the deque, done; the release timer skips it.
        await fut

    def _schedule(self) -> None:
        if self._timer is not None or not self._waiters or self._loop is None:
            return
        at = max(self._gate_until, self._next)
        self._timer = self._loop.call_at(at, self._release)

    def _release(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        if now < self._gate_until:  # the gate was pushed further while we slept
            self._schedule()
            return
        while self._waiters:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            fut.set_result(None)
            self._next = now + (self._interval or self._release_interval)
            break
        self._schedule()

    async def on_rate_limited(self, retry_after: float | None) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        wait = self._default_retry_after if retry_after is None else max(0.0, retry_after)
        until = loop.time() + wait
        if until > self._gate_until:
            if loop.time() >= self._gate_until:
                self.pauses += 1
                _log.info("rate limited (429): pausing every request for %.2f s", wait)
            self._gate_until = until
            # Paced release after the pause, even when no rate is known.
            self._next = max(self._next, until)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._schedule()

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.cancel()
