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
   admitted before it is the server's burst, plus what it refilled meanwhile.
2. *Probe*: after the pause, requests are paced from a low rate that grows with each
   success, until a second 429. Both waves began with a full bucket and differ in
   length: together they tell the burst from the rate (`fit_bucket`). Each request
   is timed by when the server decided on it (`DecisionClock`), not by its reply.
3. *Steady*: a client-side bucket with the learned rate and burst paces every call;
   any further 429 pauses, refits and slows down a little.

Limits of other shapes (a fixed window whose ``Retry-After`` points at its end) are
ridden by the gate, with the long-run admitted rate as a floor of the pace.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
import logging
import math
from collections import deque
from collections.abc import Sequence

__all__ = ["InProcessRateLimiter", "RateLimiter", "fit_bucket", "fit_rate"]

_log = logging.getLogger("wan26_async")

#: Pause after a 429 that carries no Retry-After.
DEFAULT_RETRY_AFTER = 1.0
#: When the request of the current task left (loop time): set by a limiter's `acquire`,
#: read by its `on_success` and `on_rate_limited`, which the transport calls in the same
#: task.
SENT_AT: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "wan26_sent_at", default=None)
#: The probe starts at this many bursts per default Retry-After, and speeds up by
#: `PROBE_STEP` per success until the server refuses.
PROBE_START = 4.0
PROBE_STEP = 1.08
#: Replies kept for the next fit when no pause comes (the older half is then dropped).
MAX_EVENTS = 8192
#: How many recent round trips the shortest one is taken from.
RTT_WINDOW = 64

Events = Sequence[tuple[float, bool]]


def paced_burst(server_burst: float) -> float:
    """How many requests to send at once after a pause, for a server that admits
    ``server_burst``: a tenth less (at least one). The server spends the burst a little
    after it was sent, and the refill it would have had meanwhile is lost; and a burst
    learned from the first replies can be a token or two too big. A smaller burst
    costs nothing once requests are paced."""
    return max(1.0, server_burst - max(1.0, math.ceil(server_burst / 10)))


class DecisionClock:
    """When the server decided on the current task's request, in loop time.

    It was sent at `SENT_AT` and the reply came ``now``. A request may wait before the
    server decides (for a new connection, in a busy server's queue), but the reply
    leaves as soon as it is decided: so the decision is taken to be half the quickest
    recent round trip before the reply, not after the send. (Measured on a fleet's
    first, connection-opening wave, this places decisions within a few ms; from the
    send it was off by 10-20 ms, a token at 50/s.)"""

    __slots__ = ("_count", "_current", "_previous")

    def __init__(self) -> None:
        # the quickest round trip of the current block of RTT_WINDOW and of the one before
        # (a window of the recent ones, at O(1) a reply)
        self._current = self._previous = math.inf
        self._count = 0

    def decided(self, now: float) -> float:
        sent = SENT_AT.get()
        if sent is None or sent > now:
            return now
        rtt = now - sent
        if rtt < self._current:
            self._current = rtt
        self._count += 1
        if self._count >= RTT_WINDOW:
            self._previous, self._current, self._count = self._current, math.inf, 0
        return now - min(self._current, self._previous) / 2


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


#: The least rate a fit considers: a request a minute.
_FLOOR = 1.0 / 60.0


def _bracket(events: Events, burst: float, start: float, full: bool, hi: float
             ) -> tuple[float, float]:
    """``(lowest, highest)`` refill rate of a bucket of ``burst`` tokens that explains
    ``events``; the lowest may exceed the highest (no rate does)."""

    def explains(rate: float, admitted_side: bool) -> bool:
        tokens = burst if full else 0.0
        last = start
        for when, admitted in events:
            if when > last:
                tokens = min(burst, tokens + (when - last) * rate)
                last = when
            if admitted:
                if admitted_side and tokens < 1.0 - 1e-9:
                    return False
                tokens = max(0.0, tokens - 1.0)
            elif not admitted_side and tokens >= 1.0 - 1e-9:
                return False
        return True

    # More rate means more tokens, so both ends are found by bisection, on a log scale
    # from a request a minute up, to a part in 10,000.
    lo, up = _FLOOR, hi
    while up > lo * 1.0001:  # least rate that explains every admission
        mid = math.sqrt(lo * up)
        lo, up = (lo, mid) if explains(mid, True) else (mid, up)
    lowest = 0.0 if up <= _FLOOR * 1.001 and explains(0.0, True) else up
    if all(admitted for _, admitted in events):
        return lowest, hi
    if not explains(_FLOOR, False):
        return lowest, 0.0
    lo, up = _FLOOR, hi
    while up > lo * 1.0001:  # most rate that explains every refusal
        mid = math.sqrt(lo * up)
        lo, up = (mid, up) if explains(mid, False) else (lo, mid)
    return lowest, lo


def fit_rate(
    events: Events, *, burst: float, start: float, full: bool = True, hi: float = 100_000.0,
) -> tuple[float, float]:
    """Bracket a token bucket's refill rate from replies: ``(lowest, highest)`` rate that
    explains them. ``events`` are ``(time, admitted)`` in time order since ``start``,
    when the bucket held ``burst`` tokens (``full``) or none.

    The lowest rate is the least at which every admitted request found a token; the
    highest the most at which every refused one found none. More rate means more
    tokens, so both are found by bisection.
    """
    lowest, highest = _bracket(events, burst, start, full, hi)
    return lowest, max(lowest, highest)


def rate_in(lowest: float, highest: float) -> float:
    """The rate taken from a fitted bracket: a quarter of the way up a tight one (a
    guess too high costs a pause, one too low only a little pace), its low end when the
    bracket is wide (over a fifth: the refusal was not near the admissions)."""
    if highest >= lowest * 1.2:
        return lowest
    return lowest + (highest - lowest) / 4


def burst_shown(admitted: int, elapsed: float, rate: float, server_burst: float
                ) -> float | None:
    """The server's burst as a refusal ``elapsed`` seconds after a pause shows it, when
    the refusal came while the burst was still being spent (``admitted`` since the pause,
    paced at ``rate`` after it): the burst learned was too big. None otherwise (a rate
    too high, or nothing to tell)."""
    if admitted < 2 or elapsed * rate >= server_burst:
        return None
    return float(max(1, min(server_burst - 1, math.floor(admitted - elapsed * rate))))


def _in_server_order(events: Events, jitter: float) -> list[tuple[float, bool]]:
    """``events`` sorted, with each refusal moved after the admissions decided up to
    ``jitter`` later: requests sent together reach the server in an order of its own,
    and a bucket admits nothing right after it refused."""
    ordered = sorted(events)
    out: list[tuple[float, bool]] = []
    for i, (when, admitted) in enumerate(ordered):
        if not admitted:
            for later, ok in ordered[i + 1:]:
                if later > when + jitter:
                    break
                if ok:
                    when = later
        out.append((when, admitted))
    out.sort(key=lambda e: (e[0], not e[1]))
    return out


def fit_bucket(
    first: Events, probe: Events, *, start: float, jitter: float = 0.005,
) -> tuple[float, float, float, float]:
    """Fit a token bucket's burst and rate together: ``(burst, rate, lowest, highest)``.

    ``first`` is the first wave of a client (sent as fast as a slow start allows, from a
    full bucket, up to and a little after its first refusal); ``probe`` the paced wave
    after the pause it caused, from ``start``, when the bucket was full again.
    Neither alone tells burst from rate: what the first wave had admitted is the burst
    *plus* what refilled meanwhile, and the probe's refusal bounds the burst plus the
    refill over its own, longer, span. Together they do: the rate is fitted from the
    probe (`fit_rate`) with the burst that explains the first wave at that rate, until
    the burst stays the same (`rate_in` picks the rate from its bracket).

    Times are when the server decided; their order within ``jitter`` seconds is not
    trusted (see `_in_server_order`), and the probe is read up to its first refusal
    (what was in flight then is noise, not news).
    """
    wave = _in_server_order(first, jitter)
    admitted = [when for when, ok in wave if ok]
    n = len(admitted)
    # the first refusal, and how many were admitted before it
    refused = next(((when, i) for i, (when, ok) in enumerate(wave) if not ok), None)
    cut: list[tuple[float, bool]] = []
    for event in _in_server_order(probe, jitter):
        cut.append(event)
        if not event[1]:
            break
    burst = float(max(1, n))
    lowest = highest = rate = 0.0
    for _ in range(8):
        lowest, highest = fit_rate(cut, burst=burst, start=start)
        rate = rate_in(lowest, highest)
        if not admitted:
            break
        # The k-th admission of the first wave needed k tokens: the burst and what had
        # refilled since the first one; the most demanding one bounds the burst from
        # below. A decision timed a little early can push that bound just past a whole
        # token: then the first refusal, which found less than one, settles it.
        need = max(k - rate * (when - admitted[0]) for k, when in enumerate(admitted, 1))
        fitted = math.ceil(need - 0.05)
        if refused is not None and need - (fitted - 1) < 0.25:
            when, before = refused
            if before + 1 - rate * (when - admitted[0]) < fitted:
                fitted -= 1
        fitted = min(max(1, n), max(1, fitted))
        if fitted == burst:
            break
        burst = float(fitted)
    return burst, rate, lowest, highest


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
        self._admitted = 0  # admitted before the first 429 (burst + what refilled)
        self._clock = DecisionClock()
        self._wave: list[tuple[float, bool]] | None = [] if self.learning else None
        self._wave_open = self.learning  # until the first pause ends
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
        if loop is None or self._waiters:
            return False
        now = loop.time()
        if not self._may_go(now):
            return False
        self._take()
        SENT_AT.set(now)
        return True

    async def acquire(self) -> None:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._waiters and self._may_go(now):
            self._take()
            SENT_AT.set(now)
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
        SENT_AT.set(loop.time())

    def release(self) -> None:
        self._in_flight -= 1
        if self._waiters and self._in_flight < self._window:
            self._schedule()

    def on_success(self) -> None:
        if not self.learning:
            return
        loop = self._loop
        if loop is None:
            return
        if self.phase == "start":
            self._admitted += 1
            if self._wave is not None:
                self._window += 0.5  # x1.5 per round trip: few in flight when a limit shows
                if self._window > 4096:
                    self._window = math.inf  # no limit in sight: stop counting
                    self._wave = None
                else:
                    self._wave.append((self._clock.decided(loop.time()), True))
            return
        decided = self._clock.decided(loop.time())
        if self._wave_open and self._wave is not None:
            self._wave.append((decided, True))
        events = self._events
        events.append((decided, True))
        if len(events) > MAX_EVENTS:
            # long without a pause: keep the recent half, from a bucket taken to be full
            del events[: len(events) // 2]
            self._anchor = events[0][0]
        if self._first_limited is not None:
            self._admitted_since_first += 1
        if self.rate is None:
            return
        if self.phase == "probe":
            self.rate *= PROBE_STEP  # ramp the probe until the server refuses
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
            decided = self._clock.decided(now)
            if self._wave_open and self._wave is not None:
                self._wave.append((decided, False))
            self._events.append((decided, False))
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
            self.burst = paced_burst(self.server_burst)
            self._window = math.inf
            self.phase = "probe"
            self.rate = max(1.0, self.server_burst / self._default_retry_after) * PROBE_START
            self._tokens = 1.0
        else:
            self._relearn(now)
        self._events = []

    def _relearn(self, now: float) -> None:
        """A 429 in the probe or steady phase: fit the rate, or fix the burst."""
        self._events.sort()
        admitted = sum(1 for _, ok in self._events if ok)
        if self.phase == "probe" and self._wave:
            # the first wave and the probe each began with a full bucket: together they
            # tell the burst from what refilled during the slow start
            burst, rate, lowest, highest = fit_bucket(self._wave, self._events,
                                                      start=self._anchor)
            self._wave = None
            if admitted > burst and lowest > 0.0:
                self.server_burst = burst
                self.burst = paced_burst(burst)
                self._settle(now, rate, lowest, highest)
                return
        shown = (burst_shown(admitted, now - self._anchor, self.rate, self.server_burst)
                 if self.phase == "steady" and self.rate else None)
        if shown is not None:
            self.server_burst = shown
            self.burst = paced_burst(shown)
            _log.info("the server's burst is about %d; pacing bursts of %g",
                      self.server_burst, self.burst)
            return
        lowest, highest = fit_rate(self._events, burst=self.server_burst, start=self._anchor)
        if admitted <= self.server_burst or lowest <= 0.0:
            # nothing to fit (a gateway hiccup, or refused within the burst): slow down a
            # little for now; the pace recovers toward what was learned
            self.rate = (self.rate or 1.0) * 0.97
            self.phase = "steady"
            return
        rate = rate_in(lowest, highest)
        self._settle(now, rate, lowest, highest)

    def _settle(self, now: float, rate: float, lowest: float, highest: float) -> None:
        """Pace at a fitted ``rate`` from now on."""
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
        self._wave_open = False
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
