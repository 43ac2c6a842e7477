"""When a request may leave: the 429 gate and pacing, shared by every call of a client.

`RateLimiter` is the small interface the transport talks to. `InProcessRateLimiter`
is the default: a client-side token bucket that is either told the server's rate or
learns it, behind a gate that a 429 closes for its ``Retry-After``. Waiters are
released in FIFO order by one timer (no background task), at the pace, so a pause
ends without a herd.

Learning a token bucket it is not told about (most gateways limit this way) takes
about two 429s:

1. *Start*: no pacing, but requests in flight grow from a small window by one per
   success (slow start), so the first 429 finds few requests in flight. What was
   admitted before it is the server's burst.
2. *Probe*: after the pause, requests are paced from a low rate that grows with each
   success, until a second 429. The replies since the pause bracket the server's
   rate: the lowest rate that explains every admission is taken (`fit_rate`).
3. *Steady*: a client-side bucket with the learned rate and burst paces every call;
   any further 429 pauses, refits and slows down a little.

Limits of other shapes (a fixed window whose ``Retry-After`` points at its end) are
ridden by the gate, with the long-run admitted rate as a floor of the pace.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import math
from collections import deque

__all__ = ["InProcessRateLimiter", "RateLimiter", "fit_rate"]

_log = logging.getLogger("wan26_async")

#: Pause after a 429 that carries no Retry-After.
DEFAULT_RETRY_AFTER = 1.0


class RateLimiter(abc.ABC):
    """Decides when each request of a client may leave.

    The transport calls `acquire` right before every HTTP request and `release` right
    after its reply (or failure); it reports every 429 ``rate_limit_exceeded`` through
    `on_rate_limited` and every other reply through `on_success`. An implementation is
    bound to the event loop of its first use.
    """

    @abc.abstractmethod
    async def acquire(self) -> None:
        """Return when the next request may be sent. Cancellation-safe."""

    @abc.abstractmethod
    async def on_rate_limited(self, retry_after: float | None) -> None:
        """A request was refused with 429 ``rate_limit_exceeded``: pause every caller
        until ``retry_after`` seconds from now (a default when the server gave none)."""

    def try_acquire(self) -> bool:
        """Take a send slot now without waiting, if one is free (the hot path); False
        means: call `acquire`. The default always says False."""
        return False

    def on_success(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """A request was admitted (any reply but a 429)."""

    def release(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """A request that passed `acquire` is over (whatever its outcome)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the limiter holds (timers, connections). Idempotent."""


def fit_rate(
    events: list[tuple[float, bool]], *, burst: float, start: float, full: bool = True,
    hi: float = 100_000.0,
) -> tuple[float, float]:
    """Bracket a token bucket's refill rate from replies: ``(lowest, highest)`` rate that
    explains them. ``events`` are ``(time, admitted)`` in time order since ``start``,
    when the bucket held ``burst`` tokens (``full``) or none.

    The lowest rate is the least at which every admitted request found a token; the
    highest the most at which every refused one found none. More rate means more
    tokens, so both are found by bisection.
    """

    def explains(rate: float, admitted_side: bool) -> bool:
        tokens = burst if full else 0.0
        last = start
        for when, admitted in events:
            tokens = min(burst, tokens + (when - last) * rate)
            last = when
            has_token = tokens >= 1.0 - 1e-9
            if admitted:
                if not has_token and admitted_side:
                    return False
                tokens = max(0.0, tokens - 1.0)
            elif has_token and not admitted_side:
                return False
        return True

    lo, up = 0.0, hi
    for _ in range(50):  # least rate that explains every admission
        mid = (lo + up) / 2
        lo, up = (lo, mid) if explains(mid, True) else (mid, up)
    lowest = up
    if all(admitted for _, admitted in events):
        return lowest, hi
    lo, up = 0.0, hi
    for _ in range(50):  # most rate that explains every refusal
        mid = (lo + up) / 2
        lo, up = (mid, up) if explains(mid, False) else (lo, mid)
    return lowest, max(lowest, lo)


class InProcessRateLimiter(RateLimiter):
    """The default limiter: a 429 gate and a client-side token bucket.

    Give ``rate`` (requests per second, and ``burst``) when you know the server's limit:
    requests are then paced at it from the first one. Without it the limiter learns
    the limit as the module docstring describes; on a server with no limit it costs
    nothing after a slow start of a few round trips.
    """

    def __init__(
        self,
        rate: float | None = None,
        *,
        burst: float | None = None,
        initial_window: int = 4,
        margin: float = 0.98,
        default_retry_after: float = DEFAULT_RETRY_AFTER,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive requests per second, got {rate!r}")
        self.rate = rate
        self.burst = float(burst) if burst is not None else 1.0
        self.server_burst = self.burst  # learned: what the server admitted at once
        self.learning = rate is None
        self.phase = "start" if self.learning else "steady"
        self.margin = margin
        self._default_retry_after = default_retry_after
        self._tokens = self.burst
        self._stamp: float | None = None  # loop time of the last refill
        self._window = float(initial_window) if self.learning else math.inf
        self._in_flight = 0
        self._gate_until = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # learning
        self._admitted = 0  # admitted before the first 429 (reveals the burst)
        self._events: list[tuple[float, bool]] = []  # replies since the last pause ended
        self._anchor = 0.0  # when the last pause ended (bucket assumed full)
        self._first_limited: float | None = None
        self._ceiling = math.inf if rate is None else rate  # the pace a fit allows
        self._admitted_since_first = 0
        self.pauses = 0  # how many times a 429 closed the gate
        self.rate_limited = 0  # 429 replies seen

    def __repr__(self) -> str:
        return (f"InProcessRateLimiter(rate={self.rate!r}, burst={self.burst!r}, "
                f"phase={self.phase!r})")

    @property
    def paused_until(self) -> float:
        """Loop time (``loop.time()``) until which the gate is closed; 0 when never."""
        return self._gate_until

    # -- the hot path ----------------------------------------------------------------

    def _refill(self, now: float, late: float = 0.0) -> None:
        if self.rate is not None and self._stamp is not None:
            cap = (self.burst if self.phase == "steady" else 1.0) + late
            self._tokens = min(cap, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def _may_go(self, now: float, late: float = 0.0) -> bool:
        if now < self._gate_until or self._in_flight >= self._window:
            return False
        if self._anchor < self._gate_until:
            self._reopen(now)
        if self.rate is None:
            return True
        self._refill(now, late)
        return self._tokens >= 1.0

    def _take(self) -> None:
        self._in_flight += 1
        if self.rate is not None:
            self._tokens -= 1.0

    def try_acquire(self) -> bool:
        loop = self._loop
        if loop is None or self._waiters or not self._may_go(loop.time()):
            return False
        self._take()
        return True

    async def acquire(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        if not self._waiters and self._may_go(loop.time()):
            self._take()
            return
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        self._schedule()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._in_flight -= 1  # granted just as we were cancelled: give it back
                self._schedule()
            raise

    def release(self) -> None:
        self._in_flight -= 1
        if self._waiters and self._in_flight < self._window:
            self._schedule()

    def on_success(self) -> None:
        if not self.learning:
            return
        if self.phase == "start":
            self._admitted += 1
            self._window += 0.5  # x1.5 per round trip: few in flight when a limit shows
            if self._window > 4096:
                self._window = math.inf  # no limit in sight: stop counting
            return
        assert self._loop is not None
        now = self._loop.time()
        self._events.append((now, True))
        if self._first_limited is not None:
            self._admitted_since_first += 1
        if self.rate is None:
            return
        if self.phase == "probe":
            self.rate *= 1.08  # ramp the probe until the server refuses
        elif self.rate < self._ceiling:
            # a pause that taught nothing (a hiccup) slowed us: recover, 1% per success
            self.rate = min(self._ceiling, self.rate * 1.01)

    # -- pauses -----------------------------------------------------------------------

    async def on_rate_limited(self, retry_after: float | None) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        now = loop.time()
        self.rate_limited += 1
        wait = self._default_retry_after if retry_after is None else max(0.0, retry_after)
        if self.learning:
            self._events.append((now, False))
            self._learn(now)
        until = now + wait
        if until <= self._gate_until:
            return
        if now >= self._gate_until:
            self.pauses += 1
            _log.info("rate limited (429): pausing every request for %.2f s", wait)
        self._gate_until = until
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._schedule()

    def _learn(self, now: float) -> None:
        if now < self._gate_until:
            return  # a request that was in flight when the pause began: nothing new
        if self.phase == "start":
            self._first_limited = now
            self.server_burst = float(max(1, self._admitted))
            # One token of slack: the server spends a burst a little after we send it.
            self.burst = max(1.0, self.server_burst - 1.0)
            self._window = math.inf
            self.phase = "probe"
            self.rate = max(1.0, self.server_burst / self._default_retry_after) * 2.0
            self._tokens = 1.0
        else:
            self._relearn(now)
        self._events = []

    def _relearn(self, now: float) -> None:
        """A 429 in the probe or steady phase: fit the rate, or fix the burst."""
        admitted = sum(1 for _, ok in self._events if ok)
        if self.phase == "steady" and 2 <= admitted < self.burst:
            # refused while the burst after a pause was being spent: the server's burst
            # is smaller than learned (the start phase also counted refilled tokens)
            self.server_burst = float(admitted)
            self.burst = max(1.0, admitted - 1.0)
            _log.info("the server's burst is about %d; pacing bursts of %g", admitted,
                      self.burst)
            return
        lowest, highest = fit_rate(self._events, burst=self.server_burst, start=self._anchor)
        if admitted <= self.server_burst or lowest <= 0.0:
            # nothing to fit (a gateway hiccup, or refused within the burst): slow down a
            # little for now; the pace recovers toward what was learned
            self.rate = (self.rate or 1.0) * 0.97
            self.phase = "steady"
            return
        # Reply times lag the server's decisions, which biases the lowest rate low; the
        # middle of the bracket is the better guess when the bracket is tight.
        rate = (lowest + highest) / 2 if highest < lowest * 1.2 else lowest
        if self._first_limited is not None and now > self._first_limited:
            # for shapes that are not a bucket: never slower than what was admitted
            rate = max(rate, self._admitted_since_first / (now - self._first_limited))
        if self.phase == "probe":
            self.rate = self._ceiling = rate * self.margin
        else:
            self._ceiling = min(self._ceiling, max(rate * self.margin, self._ceiling * 0.95))
            self.rate = min(self.rate or rate, self._ceiling) * 0.97
        self.phase = "steady"
        _log.info("learned the server's rate limit: about %.1f requests/s (burst %g); "
                  "bracket %.1f-%.1f", rate, self.burst, lowest, highest)

    # -- releasing waiters ------------------------------------------------------------

    def _schedule(self) -> None:
        if self._timer is not None or not self._waiters or self._loop is None:
            return
        loop = self._loop
        now = loop.time()
        at = max(now, self._gate_until)
        if self.rate is not None and at >= self._gate_until and self._stamp is not None:
            self._refill(now)
            if self._tokens < 1.0:
                at = max(at, now + (1.0 - self._tokens) / self.rate)
        if self._in_flight >= self._window and at <= now:
            return  # a release() will call us again
        self._timer = loop.call_at(at, self._release)

    def _release(self) -> None:
        self._timer = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        while self._waiters:
            fut = self._waiters[0]
            if fut.done():  # cancelled while waiting
                self._waiters.popleft()
                continue
            # Callers were waiting all along: a timer that fired late owes them its delay.
            if not self._may_go(now, late=0.5):
                break
            self._waiters.popleft()
            self._take()
            fut.set_result(None)
        self._schedule()

    def _reopen(self, now: float) -> None:
        """The pause is over: the server's bucket has refilled meanwhile."""
        self._anchor = now
        self._events = []
        if self.rate is not None:
            self._stamp = now
            self._tokens = 1.0 if self.phase == "probe" else self.burst

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.cancel()
