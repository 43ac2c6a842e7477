"""The one rate-limit learner: every decision of both limiters, as pure functions.

A limiter is a *store* of a `LimitState` (in memory: `InProcessRateLimiter`; in Redis:
`wan26_async.redis.RedisRateLimiter`) that paces requests by it. The decisions are made
here, with no I/O and no clock of their own, from the state and the replies seen
(``(time, admitted)`` pairs, times on the store's clock), so they read and test alone
(``tests/test_learner_sim.py`` drives them on a simulated clock):

1. *Start* (`Learner.initial`): no pacing, but the requests in flight grow from a small
   window by half a request per success (`Learner.grow_window`, about x1.5 a round
   trip), so the first 429 finds few in flight. What was admitted before it is the
   server's burst plus what refilled meanwhile.
2. *Probe* (`Learner.paused` after the first 429): after the pause, requests are paced
   from a low rate that grows by a step per request (`ramp`), bounded, until a second
   429. Both waves began with a full bucket and differ in length: together they tell
   the burst from the rate (`fit_bucket`). A second probe no bucket explains (a window)
   paces at what was admitted from one 429 to the next.
3. *Steady*: a client-side bucket paces every call at the fitted rate (after a tight
   first fit, a few seconds without a 429 bring it nearer). A later 429 refits. A fit is
   believed only as far as the replies show it: a rate above what was admitted over the
   same span, plus a margin for timing noise, is refused, and the limiter slows to what
   was shown (or probes again). The pace is never below what the server admitted from
   one 429 to the next; a 429 soon after a pause lets go a smaller burst after the next.
   A pace refused under the rate fitted means the burst learned is too small: the least
   burst that explains the refusal replaces it (`least_burst`).
4. *Recovery*: after a fit well below the best rate learned (the server's limit
   dropped, or others share it), the pace holds for a while, then climbs back toward
   that rate by a bounded fraction a second (`ramp`); a climb that meets a 429 waits
   twice as long before the next, which stops halfway: a lasting drop costs few 429s.
5. *Looking above*: a pace held at its cap for ``look`` seconds (and for as many
   requests as the server ever admitted at once) with no 429 is admitted: it becomes
   the ceiling and the cap rises ``lift`` times (`ramp`). ``look`` is short after a
   loose fit or a limit that moved, long after a tight fit, and doubles after each look
   that met a 429, so a limit that rose is found soon and one that did not costs little.

The stores apply `ramp` on every request they let go (the Redis store in Lua, with the
same fields); everything else is `Learner.paused`, called once per pause.
"""

from __future__ import annotations

import math

import attrs

from ._fit import (
    Events,
    burst_shown,
    fit_bucket,
    fit_rate,
    least_burst,
    paced_burst,
    peak_rate,
    rate_in,
    smaller_burst,
)

__all__ = ["JITTER", "Learner", "LimitState", "NO_CAP", "ramp"]

#: Decisions this close after a refusal may have come before it (see `in_server_order`).
JITTER = 0.005
NO_CAP = 1e9  #: "No bound" for a pace (1e9/s), finite so that Redis can store it.


@attrs.define(kw_only=True)
class LimitState:
    """What a limiter knows of the server's limit and how it paces (one per limit).

    ``rate`` is the pace (requests/s, 0: unpaced) and ``burst`` the requests it lets go
    at once after a pause; ``server_burst`` the server's burst as learned; ``ceiling``
    the best rate a fit believed (0: none yet), ``base`` the pace set by the latest fit.
    Per request let go, the pace moves by `ramp`: after ``hold`` more requests it grows
    to ``rate * step + add``, never past ``cap``. ``hold_span`` is the hold (s) of the
    next climb. Once the pace reaches ``cap`` it stays there ``look`` seconds; if no 429
    came meanwhile, the server admits that pace: it becomes the ceiling and the cap
    rises ``lift`` times (``look`` 0: never); and at least ``most`` requests, the most the
    server admitted at once (the first wave). ``first`` is when the first 429 was decided
    (-1: none yet), ``last`` when the 429 that began the latest pause was (the server's
    bucket was empty then); ``wave`` says the first wave is kept for the probe's fit;
    ``told`` that the rate was given.
    """

    phase: str = "start"
    rate: float = 0.0
    burst: float = 1.0
    server_burst: float = 1.0
    ceiling: float = 0.0
    base: float = 0.0
    step: float = 1.0
    add: float = 0.0
    cap: float = NO_CAP
    hold: float = 0.0
    hold_span: float = 0.0
    look: float = 0.0
    lift: float = 1.0
    most: float = 0.0
    first: float = -1.0
    last: float = -1.0
    wave: bool = False
    told: bool = False


def ramp(state: LimitState) -> None:
    """One request let go at the pace of ``state``: step the pace (in place).

    The hot path of both stores; the Redis store's ACQUIRE script does the same."""
    if state.hold > 0:
        state.hold -= 1
    elif state.rate < state.cap:
        state.rate = min(state.cap, state.rate * state.step + state.add)
        if state.rate >= state.cap and state.look > 0:
            # at the cap: stay there a while, and for as many requests as the server ever
            # admitted at once (a limit with a long memory, a window, has refused by then)
            state.hold = max(state.look * state.rate, state.most)
    elif state.look > 0:
        # ``look`` s at the cap without a 429: the server admits this pace; look above it
        state.ceiling = max(state.ceiling, state.rate)
        state.cap = state.rate * state.lift


@attrs.frozen(kw_only=True)
class Learner:
    """The decisions of a limiter; its fields are the constants they use.

    ``initial_window``: requests in flight at first; ``margin``: the pace as a share of
    a fitted rate; ``default_retry_after``: the pause after a 429 without Retry-After.

    The rest is tuning. The probe starts at ``probe_start`` bursts per default pause and
    grows by ``probe_growth`` per burst's worth of requests (a long probe tells the rate
    from the burst), by ``probe_step`` per request at most, up to ``probe_reach`` times
    its start. A climb grows the pace by ``climb`` of itself per second after a hold of
    ``hold`` s (doubling after a failed climb, at most ``max_hold``). A burst found too
    big lets the pace climb to ``regain`` times itself; a pace refused as soon as a burst
    was spent slows by ``cut``. A pace held at its cap without a 429 looks ``lift`` times
    higher after ``look_soon`` s when the fit was loose or the limit moved, ``look_sure``
    s after a tight fit, twice as long after each look that met a 429, at most
    ``max_look``; a tight first fit paces at ``creep`` of itself after ``creep_hold`` s.
    A fit near the ceiling over less than ``long_span`` s lowers it by ``trim`` at most;
    a fit may exceed the fastest admitted rate by ``slack``; what was admitted from one
    429 to the next floors the pace (not a bucket); no pace is below ``least_rate``; the
    slow start stops counting at ``max_window`` in flight.
    """

    initial_window: float = 4.0
    margin: float = 0.98
    default_retry_after: float = 1.0
    probe_start: float = 4.0
    probe_step: float = 1.08
    probe_growth: float = 1.25
    probe_reach: float = 1024.0
    climb: float = 0.4
    hold: float = 0.5
    max_hold: float = 6.0
    slack: float = 0.5
    trim: float = 0.97
    long_span: float = 1.0
    regain: float = 1.5
    cut: float = 0.8
    lift: float = 1.5
    look_soon: float = 1.0
    look_sure: float = 60.0
    max_look: float = 600.0
    creep: float = 0.995
    creep_hold: float = 3.0
    least_rate: float = 1.0 / 60.0
    max_window: float = 4096.0

    def initial(self, rate: float | None = None, burst: float | None = None) -> LimitState:
        """The state to start from: learning (``rate`` None), or paced at a given limit
        of ``rate`` requests/s with bursts of ``burst`` (default 1), a tenth held back."""
        if rate is None:
            return LimitState(hold_span=self.hold)
        if rate <= 0:
            raise ValueError(f"rate must be positive requests per second, got {rate!r}")
        server_burst = float(burst) if burst is not None else 1.0
        if server_burst < 1:
            raise ValueError(f"burst must be at least 1 request, got {burst!r}")
        return LimitState(phase="steady", rate=float(rate), burst=paced_burst(server_burst),
                          server_burst=server_burst, ceiling=float(rate), base=float(rate),
                          cap=float(rate), told=True)

    def grow_window(self, window: float) -> float:
        """The slow start's window after one more admitted request (inf: no limit in
        sight, stop counting)."""
        window += 0.5
        return math.inf if window > self.max_window else window

    def paused(
        self,
        state: LimitState,
        replies: Events,
        *,
        anchor: float,
        refused: float,
        wave: Events | None = None,
    ) -> LimitState:
        """The state after a 429 that began a pause.

        ``replies`` are the requests decided since ``anchor`` (when the previous pause
        ended and the server's bucket was full; in phase start, since the first
        request), up to the refusal decided at ``refused`` and what was in flight with
        it. ``wave`` is the first wave, kept for the probe's fit while ``state.wave``.
        """
        if state.told:
            return state  # the user's pace is kept; the gate alone waits
        return attrs.evolve(self._decide(state, replies, anchor, refused, wave),
                            last=refused)

    def _decide(self, state: LimitState, replies: Events, anchor: float, refused: float,
                wave: Events | None) -> LimitState:
        # what was decided up to the refusal (a store may report a little more)
        events = [e for e in sorted(replies) if e[0] <= refused + JITTER]
        admitted = sum(1 for _, ok in events if ok)
        span = refused - anchor
        # From the previous 429 (the server's bucket then empty) to this one the server
        # admitted this much: a rate it allows, whatever the limit's shape (a window's
        # fits read far less). Since the first 429 instead, a limit that fell was paced
        # for seconds at what it allowed before (0.13 of it, a 429 a second).
        floor = (admitted - 1) / (refused - state.last) if 0 <= state.last < anchor else 0.0
        # The fastest the server was seen to admit (over enough requests that a burst is
        # at most half of them): no fit may believe much more than that.
        shown = peak_rate(events, max(4, 2 * math.ceil(state.server_burst)))
        if state.phase == "start":
            # the first wave was refused at about the rate it was sent: the probe may
            # need to go that fast
            return self._probe(attrs.evolve(state, most=float(admitted)),
                               float(max(1, admitted)), refused,
                               reach=4 * shown if math.isfinite(shown) else 0.0)
        if state.phase == "probe" and state.wave and wave:
            burst, rate, lowest, highest = fit_bucket(wave, events, start=anchor)
            # checked over all of a probe shorter than that (jitter fits (1, 98000/s))
            seen = peak_rate(events, max(4, min(admitted, 2 * math.ceil(state.server_burst))))
            if admitted > burst and lowest > 0.0 and self._believable(rate, seen):
                return self._settle(state, rate, burst, refused, floor, highest, span)
        own = fit_rate(events, burst=state.server_burst, start=anchor)  # burst as learned
        # Refused at a pace under the rate fitted: no bucket of that rate refuses it once
        # the burst is spent. The burst learned is too small (a joint fit misled by
        # jitter): take the least that explains the refusal, and forget the best rate.
        if (state.phase == "steady" and admitted > state.burst > 0
                and state.most > state.server_burst and 0.0 < state.rate < rate_in(*own)):
            burst = least_burst(events, start=anchor, pace=state.rate,
                                between=(state.server_burst, state.most))
            lowest, highest = fit_rate(events, burst=burst, start=anchor)
            rate = rate_in(lowest, highest)
            if lowest > 0.0 and self._believable(rate, shown):
                return self._settle(attrs.evolve(state, ceiling=0.0), rate, burst, refused,
                                    floor, highest, span)
        if 0 <= state.last < anchor:
            # The bucket was empty at the refusal that began the pause. A pause short for
            # the bucket (no rate the replies allow refills it whole) shows the rate by
            # what it refilled. Believed while probing when the pause refilled under a
            # third of the first wave (a slow first wave counts much refill as burst),
            # later when about the pace as fitted (a 429 not of the bucket, a fault or
            # another limit, finds it far from empty: not a fit to slow down for).
            pause = anchor - state.last
            lowest, highest = fit_rate(events, burst=state.server_burst, start=state.last,
                                       full=False)
            rate = rate_in(lowest, highest)
            if (lowest > 0.0 and highest * pause < state.server_burst - 1
                    and self._believable(rate, shown)
                    and (admitted * 3 < state.most if state.phase == "probe"
                         else rate * self.margin >= state.base * 0.9)):
                return self._settle(state, rate, state.server_burst, refused, floor,
                                    highest, span)
        if state.phase == "steady" and state.rate > 0:
            shown_burst = burst_shown(admitted, span, state.rate, state.server_burst)
            if shown_burst is not None:
                # Refused while the burst after a pause was spent: the burst learned was
                # too big, and a rate fitted with it may be too small: climb a little
                # above it (a refusal there refits with the right burst).
                return attrs.evolve(state, server_burst=shown_burst,
                                    burst=paced_burst(shown_burst),
                                    cap=max(state.cap, state.rate * self.regain),
                                    add=self.climb, hold=0.0, wave=False,
                                    look=self.look_soon)
        lowest, highest = own
        rate = rate_in(lowest, highest)
        if admitted <= state.server_burst or lowest <= 0.0 or not self._believable(rate, shown):
            if state.phase == "probe" and not state.wave and floor > 0:
                # a probe again unexplained (a window): pace at what was admitted from
                # one 429 to the next, with no burst (a window has spent it by then)
                return self._settle(state, floor, 1.0, refused, floor, floor, span)
            full = 0 <= state.last < anchor and (  # the pause refilled it at that rate
                highest * (anchor - state.last) >= state.server_burst)
            return self._unexplained(state, shown, highest if full else 0.0,
                                     early=state.burst <= admitted <= state.server_burst + 1)
        return self._settle(state, rate, state.server_burst, refused, floor, highest, span)

    def _believable(self, rate: float, shown: float) -> bool:
        return rate <= shown * (1.0 + self.slack)

    def _probe(self, state: LimitState, server_burst: float, refused: float,
               rate: float | None = None, reach: float = 0.0) -> LimitState:
        """Probe from ``rate`` (default: from the burst), paced and growing per request,
        up to ``probe_reach`` times the start or ``reach``, whichever is more."""
        if rate is None:
            rate = max(1.0, server_burst / self.default_retry_after) * self.probe_start
        first = state.first if state.first >= 0 else refused
        return attrs.evolve(
            state, phase="probe", rate=rate, base=rate, server_burst=server_burst,
            burst=paced_burst(server_burst),
            step=min(self.probe_step, self.probe_growth ** (1.0 / max(1.0, server_burst))),
            add=0.0, look=0.0,
            cap=min(NO_CAP, max(rate * self.probe_reach, reach)), hold=0.0, first=first,
            wave=state.phase == "start", hold_span=state.hold_span or self.hold)

    def _unexplained(self, state: LimitState, shown: float, bound: float = 0.0,
                     early: bool = False) -> LimitState:
        """A pause the replies do not fit (refused within the burst, a hiccup, a limit of
        another shape): never faster than the replies showed. A probe starts over from
        half its start (or of what was shown), a steady pace slows a little and climbs
        back toward the ceiling."""
        if state.phase == "probe":
            start = max(self.least_rate, min(state.base, shown) / 2)
            return self._probe(state, state.server_burst, state.first, rate=start,
                               reach=state.cap)
        if early:
            # The whole burst after a pause was admitted, and the next requests refused
            # at once: the pace is far too fast for the limit now (it fell). Slow down by
            # a fifth, or to the most rate the refusal allows (``bound``, if any), hold,
            # then climb back as after a fit well below the ceiling. (A 429 among the
            # burst, a hiccup or a storm of them, is not this.)
            pace = min(state.rate * self.cut, shown, bound * self.margin or math.inf)
            return attrs.evolve(self._below(state, max(self.least_rate, pace)),
                                burst=smaller_burst(state.burst, state.server_burst))
        rate = max(self.least_rate, min(state.rate * 0.97, shown))
        return attrs.evolve(state, rate=rate, base=rate, step=1.0, add=self.climb,
                            cap=max(rate, state.ceiling), hold=0.0, wave=False)

    def _settle(self, state: LimitState, rate: float, server_burst: float, refused: float,
                floor: float, highest: float, span: float) -> LimitState:
        """Pace at a believed fit of ``rate`` from now on; ``highest`` is the most the
        replies allow (a bracket wider than a fifth: climb toward it)."""
        # for limits that are not a bucket: never slower than the server admitted
        rate = max(rate, floor)
        found = max(rate * self.margin, floor)
        first = state.ceiling <= 0  # nothing believed before: this is the limit
        climbing = state.phase == "steady" and state.rate > state.base * 1.01
        # a look above the ceiling met this 429: the ceiling was right, look later
        looked = state.phase == "steady" and state.look > 0 and (
            state.rate > state.ceiling * 1.01)
        sure = min(self.max_look, max(self.look_sure, state.look * (2 if looked else 1)))
        burst = paced_burst(server_burst)
        if server_burst == state.server_burst and state.phase == "steady":
            burst = min(burst, state.burst)  # a burst found too big stays smaller
            if span < self.long_span:
                burst = smaller_burst(burst, server_burst)
        state = attrs.evolve(state, phase="steady", server_burst=server_burst,
                             burst=burst, step=1.0, add=self.climb, lift=self.lift,
                             wave=False)
        if highest > rate * 1.2:
            # The replies bound the rate loosely (a burst large beside the rate, or
            # timing noise): pace at the low end and climb toward the high one; the next
            # refusal comes after a long span, which bounds it tightly. None there: the
            # limit is higher still, look above it soon.
            top = max(found, min(NO_CAP, highest) * self.margin)
            if first or top > state.ceiling:
                return attrs.evolve(state, rate=found, base=found, ceiling=top, cap=top,
                                    hold=0.0, hold_span=self.hold, look=self.look_soon)
        if first:
            # a fit bound within 5 %, of a burst the first wave showed alone, leaves the
            # margin little to cover: after ``creep_hold`` s, pace at ``creep`` of it
            tight = highest <= rate * 1.05 and state.most <= server_burst
            tight = tight and rate * self.creep > found
            cap, wait = (rate * self.creep, self.creep_hold) if tight else (found, sure)
            return attrs.evolve(state, rate=found, base=found, ceiling=found, cap=cap,
                                hold=max(wait * found, state.most), hold_span=self.hold,
                                look=sure)
        if found >= state.ceiling * 0.9:
            # About the limit as known: a fit a little high, a hiccup, or a small change.
            # A fit over a long span is believed; a short one only trims the ceiling (a
            # little per pause, so that a hiccup costs little), never raises it: over a
            # few ms a burst a token off reads as a rate far off (looks raise it). Climb
            # back to it at once.
            trimmed = max(min(found, state.ceiling), state.ceiling * self.trim)
            ceiling = found if span >= self.long_span else trimmed
            pace = min(found, ceiling)
            return attrs.evolve(state, rate=pace, base=found, ceiling=ceiling, cap=ceiling,
                                hold=max(sure * pace, state.most) if pace >= ceiling else 0.0,
                                hold_span=self.hold, look=sure)
        return self._below(state, found, climbing)

    def _below(self, state: LimitState, found: float, climbing: bool | None = None
               ) -> LimitState:
        """Pace at ``found``, well below the best rate learned (the limit dropped, or
        others share it). Hold, then climb back toward it; a climb that failed waits twice
        as long next time. Back at the best rate, look above it soon."""
        if climbing is None:
            climbing = state.rate > state.base * 1.01
        span = min(self.max_hold, state.hold_span * 2) if climbing else self.hold
        ceiling = state.ceiling
        if climbing:
            # refused on the way back to the best rate learned: it is no longer (or never
            # was) the limit; the next climb stops halfway (a ceiling of a wrong fit
            # costs a 429 per climb otherwise)
            ceiling = max(found, (found + ceiling) / 2)
        return attrs.evolve(state, phase="steady", rate=found, base=found, step=1.0,
                            add=self.climb, lift=self.lift, cap=max(found, ceiling),
                            ceiling=ceiling, hold=span * found, hold_span=span,
                            look=self.look_soon, wave=False)
