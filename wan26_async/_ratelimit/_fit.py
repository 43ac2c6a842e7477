"""The arithmetic of learning a token bucket from replies: pure functions, no clock.

Times are in seconds on any one clock (the store's); events are ``(time, admitted)``
pairs, ``time`` being when the server decided on the request (`DecisionClock`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["DecisionClock", "Events", "RTT_WINDOW", "burst_shown", "fit_bucket", "fit_rate",
           "in_server_order", "least_burst", "paced_burst", "peak_rate", "rate_in",
           "smaller_burst"]

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


def smaller_burst(burst: float, server_burst: float) -> float:
    """The burst to let go after a pause when one was refused soon after the last:
    it may have reached the server in less time than it left (it queued there; the
    pace refilled meanwhile, the server's full bucket did not). A fifth less until
    the server's burst is learned anew; never under half the usual (a limit that
    fell refuses soon after pauses too, and a burst is throughput)."""
    least = max(1.0, paced_burst(server_burst) / 2)
    return max(min(burst, least), burst - max(1.0, math.ceil(burst / 5)))


class DecisionClock:
    """When the server decided on the current task's request, in loop time.

    It was sent at ``sent`` and the reply came ``now``. A request may wait before the
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

    def decided(self, now: float, sent: float | None) -> float:
        if sent is not None and sent <= now:
            self.saw(now - sent)
        return now - self.offset()

    def saw(self, rtt: float) -> None:
        """A round trip of ``rtt`` seconds."""
        if rtt < self._current:
            self._current = rtt
        self._count += 1
        if self._count >= RTT_WINDOW:
            self._previous, self._current, self._count = self._current, math.inf, 0

    def offset(self) -> float:
        """How long before its reply a request is taken to have been decided now: half
        the quickest recent round trip (0 before any).

        The first replies of a client come on new connections, slow to open and to reach
        the server (30-50 ms where later round trips take 3), and no quicker one is known
        yet: a store times them when the first wave's pause begins, with the offset of
        then (`retimed`)."""
        quickest = min(self._current, self._previous)
        return quickest / 2 if math.isfinite(quickest) else 0.0

    def retimed(self, replies: Events) -> list[tuple[float, bool]]:
        """``replies`` timed by their reply (``(reply time, admitted)``), as decided."""
        offset = self.offset()
        return [(when - offset, admitted) for when, admitted in replies]




#: The least rate a fit considers: a request a minute.
_FLOOR = 1.0 / 60.0


def _bracket(events: Events, burst: float, start: float, full: bool, hi: float
             ) -> tuple[float, float]:
    """``(lowest, highest)`` refill rate of a bucket of ``burst`` tokens that explains
    ``events``; the lowest may exceed the highest (no rate does)."""

    def explains(rate: float, admitted_side: bool) -> bool:
        # not full: just after a refusal, which found less than one token (as many as
        # that for the admissions, none for the refusals: each bound at its most)
        tokens = burst if full else (min(1.0, burst) if admitted_side else 0.0)
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
    when the bucket held ``burst`` tokens (``full``) or less than one (a refusal).

    The lowest rate is the least at which every admitted request found a token; the
    highest the most at which every refused one found none. More rate means more
    tokens, so both are found by bisection.
    """
    lowest, highest = _bracket(events, burst, start, full, hi)
    return lowest, max(lowest, highest)


def peak_rate(events: Events, count: int) -> float:
    """The most requests/s admitted over any ``count`` admissions in a row of
    ``events`` (sorted); inf when there are fewer."""
    times = [t for t, ok in events if ok]
    if len(times) < count:
        return math.inf
    gaps = (times[i + count - 1] - times[i] for i in range(len(times) - count + 1))
    least = min(gaps)
    return (count - 1) / least if least > 0 else math.inf


def rate_in(lowest: float, highest: float) -> float:
    """The rate taken from a fitted bracket: a quarter of the way up a tight one (a
    guess too high costs a pause, one too low only a little pace), its low end when the
    bracket is wide (over a fifth: the refusal was not near the admissions)."""
    if highest >= lowest * 1.2:
        return lowest
    return lowest + (highest - lowest) / 4


def least_burst(events: Events, *, start: float, pace: float,
                between: tuple[float, float]) -> float:
    """The least burst in ``between`` (whole requests) at which the rate fitted to
    ``events`` (since ``start``, the bucket full) is under ``pace``, a pace the server
    refused: a larger burst needs less rate to explain the same admissions."""
    low, high = int(between[0]), int(between[1])
    while high - low > 1:
        mid = (low + high) // 2
        if rate_in(*fit_rate(events, burst=float(mid), start=start)) < pace:
            high = mid
        else:
            low = mid
    return float(high)


def burst_shown(admitted: int, elapsed: float, rate: float, server_burst: float
                ) -> float | None:
    """The server's burst as a refusal ``elapsed`` seconds after a pause shows it, when
    the refusal came while the burst was still being spent (``admitted`` since the pause,
    paced at ``rate`` after it) and fewer were admitted than the burst learned: the burst
    is at most one more than were admitted (whatever the server's refill, which only adds
    to it). None otherwise (a rate too high, or nothing to tell).

    Not less than that: a refusal this early may also be a limit that fell, and a burst
    taken too small makes every later fit believe too high a rate."""
    if admitted < 1 or elapsed * rate >= server_burst or admitted + 1 >= server_burst:
        return None
    return float(admitted + 1)


def in_server_order(events: Events, jitter: float) -> list[tuple[float, bool]]:
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
    trusted (see `in_server_order`), and the probe is read up to its first refusal
    (what was in flight then is noise, not news).
    """
    wave = in_server_order(first, jitter)
    admitted = [when for when, ok in wave if ok]
    n = len(admitted)
    # the first refusal, and how many were admitted before it
    refused = next(((when, i) for i, (when, ok) in enumerate(wave) if not ok), None)
    cut: list[tuple[float, bool]] = []
    for event in in_server_order(probe, jitter):
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
