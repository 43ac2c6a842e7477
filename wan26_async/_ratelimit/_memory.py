"""`InProcessRateLimiter`: the learner's state kept in memory, paced on the loop.

A 429 closes a gate for its ``Retry-After``; waiters are released in FIFO order by one
timer (no background task), at the pace of a client-side token bucket, so a pause ends
without a herd. What the pace is, and how it is learned, is `Learner`'s.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque

from ._contract import RateLimiter
from ._fit import DecisionClock
from ._learner import Learner, LimitState, ramp

__all__ = ["MAX_EVENTS", "InProcessRateLimiter"]

_log = logging.getLogger("wan26_async")

#: Replies kept for the next fit when no pause comes (the older half is then dropped).
MAX_EVENTS = 8192


class InProcessRateLimiter(RateLimiter):
    """The default limiter: a 429 gate and a client-side token bucket.

    Give ``rate`` (requests per second) and ``burst`` (requests the server admits at
    once) when you know the server's limit: requests are then paced at it from the
    first one, with a tenth of the burst held back after a pause. Without them the
    limiter learns the limit (see `wan26_async._ratelimit._learner`); on a server with no
    limit it costs nothing after a slow start of a few round trips. ``initial_window``
    (requests in flight at first), ``margin`` (the pace as a share of a learned rate)
    and ``default_retry_after`` (s) tune the learning; ``learner`` replaces it whole.
    """

    def __init__(
        self,
        rate: float | None = None,
        *,
        burst: float | None = None,
        initial_window: int = 4,
        margin: float = 0.98,
        default_retry_after: float = 1.0,
        learner: Learner | None = None,
    ) -> None:
        self.learner = learner or Learner(initial_window=float(initial_window), margin=margin,
                                          default_retry_after=default_retry_after)
        self.state: LimitState = self.learner.initial(rate, burst)
        self._tokens = self.state.burst
        self._stamp: float | None = None  # loop time of the last refill
        self._window = math.inf if self.state.told else self.learner.initial_window
        self._in_flight = 0
        self._gate_until = 0.0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._clock = DecisionClock()
        self._events: list[tuple[float, bool]] = []  # replies since the last pause ended
        self._wave: list[tuple[float, bool]] | None = None  # the first wave, for the probe
        self._wave_open = False  # the first wave still takes replies (until its pause ends)
        self._anchor = 0.0  # when the last pause ended (bucket assumed full)
        self._held = False  # the pace accrues nothing until the burst after a pause arrives
        self._paused_at = 0.0  # when the last pause began
        self.pauses = 0  #: how many times a 429 closed the gate
        self.rate_limited = 0  #: 429 replies seen

    def __repr__(self) -> str:
        return (f"InProcessRateLimiter(rate={self.rate!r}, burst={self.burst!r}, "
                f"phase={self.phase!r})")

    @property
    def rate(self) -> float | None:
        """The pace in requests/s (None while unpaced, before the first 429)."""
        return self.state.rate or None

    @property
    def burst(self) -> float:
        """Requests let go at once after a pause."""
        return self.state.burst

    @property
    def server_burst(self) -> float:
        """The server's burst, as given or learned."""
        return self.state.server_burst

    @property
    def phase(self) -> str:
        """``start`` (no limit met yet), ``probe`` (measuring it) or ``steady``."""
        return self.state.phase

    @property
    def learning(self) -> bool:
        """True unless the rate was given."""
        return not self.state.told

    @property
    def paused_until(self) -> float:
        """Loop time (``loop.time()``) until which the gate is closed; 0 when never."""
        return self._gate_until

    # -- the hot path ----------------------------------------------------------------

    def _refill(self, now: float, late: float = 0.0) -> None:
        state = self.state
        if self._held and state.rate and now - self._anchor < min(
                state.burst / state.rate, self.learner.default_retry_after):
            self._stamp = now  # the burst is on its way: the server's bucket is still full
            return
        self._held = False
        if state.rate and self._stamp is not None:
            cap = (state.burst if state.phase == "steady" else 1.0) + late
            self._tokens = min(cap, self._tokens + (now - self._stamp) * state.rate)
        self._stamp = now

    def _may_go(self, now: float, late: float = 0.0) -> bool:
        if now < self._gate_until or self._in_flight >= self._window:
            return False
        if self._anchor < self._gate_until:
            self._reopen(now)
        if not self.state.rate:
            return True
        self._refill(now, late)
        return self._tokens >= 1.0

    def _take(self) -> None:
        self._in_flight += 1
        state = self.state
        if state.rate:
            self._tokens -= 1.0
            ramp(state)

    def try_acquire(self) -> bool:
        loop = self._loop
        if loop is None or self._waiters:
            return False
        if not self._may_go(loop.time()):
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

    def on_success(self, sent_at: float | None = None) -> None:
        loop = self._loop
        if self.state.told or loop is None:
            return
        decided = self._clock.decided(loop.time(), sent_at)
        if self._held:
            self._arrived(decided)
        if self.state.phase == "start":
            self._window = self.learner.grow_window(self._window)
            decided = loop.time()  # timed at the first pause (`DecisionClock.retimed`)
        if self._wave_open and self._wave is not None:
            self._wave.append((decided, True))
        events = self._events
        events.append((decided, True))
        if len(events) > MAX_EVENTS:
            # long without a pause: keep the recent half, from a bucket taken to be full
            del events[: len(events) // 2]
            self._anchor = events[0][0]

    # -- pauses -----------------------------------------------------------------------

    async def on_rate_limited(self, retry_after: float | None,
                              sent_at: float | None = None) -> None:
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        now = loop.time()
        self.rate_limited += 1
        wait = (self.learner.default_retry_after if retry_after is None
                else max(0.0, retry_after))
        if not self.state.told:
            decided = self._clock.decided(now, sent_at)
            if self._held:
                self._arrived(decided)
            if self.state.phase == "start":
                decided = now  # timed at the first pause (`DecisionClock.retimed`)
            if self._wave_open and self._wave is not None:
                self._wave.append((decided, False))
            self._events.append((decided, False))
            if now >= self._gate_until:  # else it was in flight when the pause began
                self._learn(decided)
        until = now + wait
        if until <= self._gate_until:
            return
        if now >= self._gate_until:
            self.pauses += 1
            self._paused_at = now
            _log.info("rate limited (429): pausing every request for %.2f s", wait)
        self._gate_until = until
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._schedule()

    def _learn(self, refused: float) -> None:
        before = self.state
        first_wave = before.phase == "start"
        if first_wave:  # timed by their replies until now
            self._events = self._clock.retimed(self._events)
            refused -= self._clock.offset()
        after = self.learner.paused(before, self._events, anchor=self._anchor,
                                    refused=refused,
                                    wave=self._wave if before.wave else None)
        if first_wave:
            # the first wave takes the replies still in flight until its pause ends
            self._wave, self._wave_open = list(self._events), True
            self._window = math.inf
            self._tokens = 1.0
        elif not after.wave:
            self._wave = None
        self.state = after
        self._events = []
        if after.phase == "steady" and (after.base != before.base or
                                        after.server_burst != before.server_burst):
            _log.info("learned the server's rate limit: pacing at %.1f requests/s "
                      "(bursts of %g)", after.rate, after.burst)

    # -- releasing waiters ------------------------------------------------------------

    def _schedule(self) -> None:
        if self._timer is not None or not self._waiters or self._loop is None:
            return
        loop = self._loop
        now = loop.time()
        at = max(now, self._gate_until)
        rate = self.state.rate
        if rate and at >= self._gate_until and self._stamp is not None:
            self._refill(now)
            if self._tokens < 1.0:
                # at least a microsecond: a deficit of rounding size would fire at once
                # and find the token still short, again and again
                at = max(at, now + max(1e-6, (1.0 - self._tokens) / rate))
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

    def _arrived(self, decided: float) -> None:
        """A reply: once one was decided after the pause ended, the server has begun
        spending the burst, and its bucket refills from then on: so does the pace."""
        if decided >= self._anchor:
            self._held = False
            self._stamp = decided

    def _reopen(self, now: float) -> None:
        """The pause is over: the server's bucket has refilled meanwhile (as much as the
        pause was long: a short Retry-After is no full burst)."""
        self._anchor = now
        self._wave_open = False
        self._events = []
        state = self.state
        if state.rate:
            self._stamp = now
            # the server's bucket was empty at the refusal (less than a token)
            refilled = (self._gate_until - self._paused_at) * state.rate
            self._tokens = 1.0 if state.phase == "probe" else min(state.burst, refilled)
            # The server's bucket, full, refills nothing until the burst reaches it: under
            # load that is many ms after it left (a burst queues in the client and the
            # server), and a pace refilled meanwhile sends a burst's worth more than the
            # server admits: a 429 at the end of every pause. So nothing accrues until
            # the first reply decided after now (at most a burst's time at the pace, and
            # a default pause), if a burst goes at all.
            self._held = state.phase == "steady" and self._tokens >= 1.0

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.cancel()
