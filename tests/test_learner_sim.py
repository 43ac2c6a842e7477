"""The one learner on a simulated clock: server limits of every shape, no sockets, no sleeps.

Each example runs a minute or more of traffic through `InProcessRateLimiter` (the
learner's in-memory store) on a virtual clock (`tests/simlimit.py`) in a fraction of a
second of real time. The Redis store runs the same `Learner`; its wiring is tested over
real sockets in `tests/test_redis_limiter.py`.
"""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import wan26_async as wan
from tests.simlimit import Bucket, Changing, FixedWindow, Run, Shared, SlidingWindow, run
from wan26_async._ratelimit import Learner, LimitState
from wan26_async._ratelimit._learner import ramp

SIM = settings(max_examples=12, deadline=None, derandomize=True,
               suppress_health_check=[HealthCheck.too_slow],
               phases=[Phase.explicit, Phase.reuse, Phase.generate])  # no shrinking
#: Open bugs the property tests found (each is also a case below that holds): the suite
#: stays green while a property fails, and fails the day it holds, until the mark goes.
OPEN = pytest.mark.xfail(strict=True, reason="open: not yet robust on every case; "
                         "see the issue 'One rate-limit learner' notes")


def callers_for(rate: float, latency: float, jitter: float) -> int:
    """Enough callers that the limiter, not the callers, sets the pace."""
    return min(400, math.ceil(rate * 2 * (latency + jitter) * 2) + 8)


def learned(rate: float, burst: float, *, jitter: float = 0.0, seed: int = 0,
            limiter: wan.RateLimiter | None = None) -> Run:
    seconds = 40 + 4 * burst / rate
    return run(limiter or wan.InProcessRateLimiter(), Bucket(rate, burst), seconds=seconds,
               callers=callers_for(rate, 0.002, jitter), jitter=jitter, seed=seed)


def check_bucket(rate: float, burst: int, jitter: float) -> None:
    out = learned(rate, burst, jitter=jitter)
    start, end = out.duration / 2, out.duration
    got, refused = out.rate(start, end), out.refusals(start, end)
    # steady: a few 429s per thousand requests at most
    few = max(1, 0.005 * out.admissions(start, end))
    if got >= 0.9 * rate and refused <= few:
        return
    # Reply jitter can make a bucket unrideable by any client that pauses on a 429: a
    # burst smaller than what a jittered trip bunches together is refused at any pace
    # (1150/s with a burst of 4 and 50 ms of jitter: a client told the limit, paced at
    # 0.8-0.95 of it, gets 0.06 of it, a 429 storm). There the bar is that client's
    # (most of it: in a storm, each run's pauses fall a little differently).
    told = learned(rate, burst, jitter=jitter,
                   limiter=wan.InProcessRateLimiter(rate=0.9 * rate, burst=burst))
    bar, most = 0.9 * rate, few
    if told.rate(start, end) < 0.85 * rate:  # unrideable
        bar, most = 0.75 * told.rate(start, end), max(few, 1.5 * told.refusals(start, end))
    assert got >= bar, (rate, burst, jitter, got, bar)
    assert refused <= most, (rate, burst, jitter, refused, most)


@pytest.mark.parametrize(("rate", "burst", "jitter"), [
    (1, 1, 0.0), (5, 2, 0.0), (50, 10, 0.0), (50, 10, 0.005), (100, 1, 0.0), (10, 100, 0.0),
    (200, 20, 0.002), (500, 50, 0.0), (2000, 1, 0.0), (2000, 200, 0.0),
    # a joint fit misled by jitter: (2, 860/s) for (11, 600/s), then a 429 a second at
    # a pace 1.4x the rate, for ever (0.06 of it)
    (600, 11, 0.005),
    # unrideable: 50 ms of jitter bunches more requests than a burst of 4 (the bar is
    # then what a client told the limit gets)
    (1150.94, 4, 0.05),
    # a probe too fast for the rate fits (4, 3019/s) for (16, 1823/s); the pace settled
    # near the rate, but climbs back to the best rate learned of the wrong burst met a
    # 429 every 1-2 s (0.33 of the rate)
    (1822.9686550494168, 16, 0.0),
    # a probe ramped fast fits loosely: 0.80 and 0.88 of the rate until it grew by 1.25
    # per burst, not 2
    (1711.5955744704286, 23, 0.0), (137.16562811049002, 122, 0.005),
    # a slow probe with 50 ms of jitter fitted a tiny burst and a huge rate, (1, 98000/s)
    # for (126, 2000/s), unchecked: the probe was shorter than twice the burst learned
    (2000, 126, 0.05),
    # open (found by the property with more examples): 0.88, 0.97 of the bar and 0.88
    pytest.param(292.5143929858824, 192, 0.005, marks=OPEN),
    pytest.param(691.6838495921576, 4, 0.005, marks=OPEN),
    pytest.param(237.38376935101402, 196, 0.05, marks=OPEN),
])
def test_a_token_bucket_is_learned_to_nine_tenths_with_few_429s_once_steady(
    rate: float, burst: int, jitter: float,
) -> None:
    check_bucket(rate, burst, jitter)


# Its 12 examples hold; more examples find the open cases marked in the list above.
@SIM
@given(rate=st.floats(5, 2000), burst=st.integers(1, 200),
       jitter=st.sampled_from([0.0, 0.002, 0.005, 0.05]))
def test_every_token_bucket_is_learned_to_nine_tenths(
    rate: float, burst: int, jitter: float,
) -> None:
    check_bucket(rate, burst, jitter)


@pytest.mark.parametrize(("rate", "burst"), [(6, 170), (1, 200), (2, 50), (5, 60)])
def test_a_large_burst_with_a_slow_refill_is_learned_from_what_a_pause_refills(
    rate: float, burst: int,
) -> None:
    # A pause of Retry-After refills a few tokens of a burst that takes half a minute or
    # more to fill: what the server admits after it tells the rate (it was learned
    # after 100 s and more, with a 429 every few seconds, when the bucket was taken to
    # be full after every pause).
    out = run(wan.InProcessRateLimiter(), Bucket(rate, burst), seconds=60 + 2 * burst / rate,
              callers=callers_for(rate, 0.002, 0.0))
    assert out.rate(10, out.duration) >= 0.9 * rate
    assert out.refusals(10, out.duration) <= 5


def test_the_probe_never_runs_away() -> None:
    # the bug of the fast bucket: a probe ramped without bound and a fit believed it
    # (rate=1140953 against a 500/s bucket, then 123 req/s)
    limiter = wan.InProcessRateLimiter()
    out = run(limiter, Bucket(500, 50), seconds=20, callers=30)
    assert limiter.phase == "steady"
    assert limiter.rate is not None and 450 <= limiter.rate <= 510
    assert out.rate(10, 20) >= 0.9 * 500


@pytest.mark.parametrize("send_cost", [0.0004, 0.0007])
def test_the_burst_after_a_pause_does_not_end_in_a_429_when_it_queues(send_cost: float
                                                                      ) -> None:
    # The bug (CI, real sockets): 30 callers on a 500/s bucket of 50, a client spending
    # ~0.7 ms to send each request. After a pause its burst left over ~20 ms; the pace
    # refilled meanwhile, the server's full bucket did not: a burst's worth more than the
    # server admitted, a 429 at the end of every pause, for ever (2 pauses in 1.2 s).
    limiter = wan.InProcessRateLimiter()
    out = run(limiter, Bucket(500, 50), seconds=20, callers=30, send_cost=send_cost)
    assert limiter.phase == "steady", repr(limiter)
    assert out.refusals(5, 20) <= 2, (out.refusals(5, 20), limiter)
    assert out.rate(5, 20) >= 0.9 * 500, out.rate(5, 20)


@pytest.mark.parametrize("opening", [0.02, 0.05])
def test_a_first_wave_on_slow_new_connections_is_timed_by_the_quick_round_trips(
        opening: float) -> None:
    # The bug (benchmark, real sockets): the first requests open connections and reach
    # the server 30-50 ms after they leave, the next ones in 1-2 ms. Timed as decided
    # half their own round trip before the reply, the first four seemed 25 ms earlier
    # than the server decided them: the wave read as a burst of 9 plus refill, the
    # fit as (9, 53/s) for a (10, 50/s) bucket, and the pace paid two more pauses.
    limiter = wan.InProcessRateLimiter()
    out = run(limiter, Bucket(50, 10), seconds=20, callers=64, first_trip=opening)
    assert limiter.server_burst == 10, repr(limiter)
    assert limiter.rate is not None and 45 <= limiter.rate <= 50, repr(limiter)
    assert limiter.pauses == 2, (limiter.pauses, out.refused)


def check_drop(rate: float, drop: float) -> None:
    shape = Changing(Bucket(rate, 10), [(0, rate), (20, rate * drop), (26, rate)])
    out = run(wan.InProcessRateLimiter(), shape, seconds=44,
              callers=callers_for(rate, 0.002, 0.004), jitter=0.004)
    # during the drop: at least half the new rate (it ran at 0.13-0.24 of it, 300 -> 90
    # and 100 -> 50, when the pace was floored by the rate admitted since the first 429,
    # most of it before the drop: a 429 a second), and not a storm of 429s (about two a
    # second at most while it settles). (What is admitted can never exceed what the
    # server admits: no upper bound to test; the 429s are the cost of running above.)
    assert out.rate(22, 26) >= 0.5 * rate * drop, out.rate(22, 26) / (rate * drop)
    assert out.refusals(20, 26) <= 12
    # within 12 s of the return, back within 0.9 of it, without a storm
    assert out.rate(36, 44) >= 0.9 * rate, out.rate(36, 44)
    assert out.refusals(26, 38) <= 10


@pytest.mark.parametrize(("rate", "drop"), [
    (50, 0.4), (100, 0.5), (300, 0.3),
    # refused right after the burst, the pace fell by a fifth a pause (414 -> 331 -> 265
    # for 96/s): 0.39 of the dropped rate; the refusal bounds the rate (below 125/s)
    (452.68517965351214, 0.21223599321342143),
    pytest.param(421.16724988153743, 0.37310682716202137, marks=OPEN),  # open: 0.48
    pytest.param(237.52850065797216, 0.31990679874547295, marks=OPEN),  # open: 0.49
])
def test_after_a_drop_and_a_return_the_pace_is_found_again(rate: float, drop: float) -> None:
    check_drop(rate, drop)


@OPEN
@SIM
@given(rate=st.floats(20, 500), drop=st.floats(0.2, 0.6))
def test_after_any_drop_and_return_the_pace_is_found_again(rate: float, drop: float) -> None:
    check_drop(rate, drop)


@pytest.mark.parametrize(("rate", "share"), [
    (100, 0.4),
    # the probe fitted 239/s for the 288/s left, a pace no 429 corrected for 60 s
    (320.34574597186594, 0.13276442961990656),
    # 0.87 of what was left, until a tight first fit crept nearer its rate
    (188.43703460968644, 0.39253705370268177),
])
def test_a_bucket_shared_with_unseen_clients_is_ridden_at_what_is_left(
    rate: float, share: float,
) -> None:
    check_shared(rate, share)


@SIM
@given(rate=st.floats(20, 500), share=st.floats(0.1, 0.6))
def test_any_shared_bucket_is_ridden_at_what_is_left(rate: float, share: float) -> None:
    check_shared(rate, share)


def check_shared(rate: float, share: float) -> None:
    left = rate * (1 - share)
    out = run(wan.InProcessRateLimiter(), Shared(Bucket(rate, 10), rate * share), seconds=40,
              callers=callers_for(left, 0.002, 0.0))
    assert out.rate(20, 40) >= 0.9 * left
    assert out.refusals(20, 40) <= max(2, 0.005 * out.admissions(20, 40))


@pytest.mark.parametrize(("limit", "window"), [
    (500, 10.0),
    # each probe was refused after the window's 640 and started over from half its
    # start, a 429 a window for good (7 in 30 s); a second probe unexplained paces at
    # what was admitted from one 429 to the next
    (640, 10.0),
])
def test_a_sliding_window_is_ridden_near_its_rate(limit: int, window: float) -> None:
    check_sliding(limit, window)


@SIM
@given(limit=st.integers(100, 1000), window=st.sampled_from([10.0, 30.0]))
def test_any_sliding_window_is_ridden_near_its_rate(limit: int, window: float) -> None:
    check_sliding(limit, window)


def check_sliding(limit: int, window: float) -> None:
    rate = limit / window
    out = run(wan.InProcessRateLimiter(), SlidingWindow(limit, window), seconds=6 * window,
              callers=callers_for(rate, 0.002, 0.0))
    assert out.rate(3 * window, 6 * window) >= 0.9 * rate
    assert out.refusals(3 * window, 6 * window) <= 6


def test_a_ten_second_fixed_window_is_ridden_near_its_rate() -> None:
    out = run(wan.InProcessRateLimiter(), FixedWindow(600, 10), seconds=180,
              callers=callers_for(60, 0.002, 0.0))
    assert out.rate(60, 180) >= 0.9 * 60
    # about one 429 per window at most (the window's end is learned by the gate)
    assert out.refusals(60, 180) <= 14


def test_a_told_rate_is_kept_whatever_the_replies() -> None:
    limiter = wan.InProcessRateLimiter(rate=40, burst=5)
    out = run(limiter, Bucket(50, 10), seconds=20, callers=16)
    assert not out.refused
    assert limiter.rate == 40 and limiter.state.told
    assert 0.95 * 40 <= out.rate(5, 20) <= 40.5


# -- the learner alone ----------------------------------------------------------------


def test_the_first_pause_starts_a_bounded_probe() -> None:
    learner = Learner()
    wave = [(0.001 * i, True) for i in range(10)] + [(0.0105, False)]
    after = learner.paused(LimitState(), wave, anchor=0.0, refused=0.0105)
    assert after.phase == "probe" and after.server_burst == 10 and after.wave
    assert after.rate == 40.0  # four bursts per default Retry-After
    assert after.cap < 1e9  # a probe never grows without bound
    state = attrs.evolve(after)
    for _ in range(10_000):
        ramp(state)
    assert state.rate == state.cap


def test_a_tight_first_fit_of_a_burst_seen_alone_creeps_nearer_its_rate() -> None:
    learner = Learner()
    probe = LimitState(phase="probe", rate=40.0, base=40.0, server_burst=10.0, burst=9.0,
                       cap=4e4, first=0.0, last=0.0, most=10.0)
    # after a 1 s pause, the bucket's 10 and then 50/s to the refusal (the probe's pace
    # above it): a bucket of (10, 50/s), bound tightly
    burst = [(1.0 + 0.001 * i, True) for i in range(10)]
    paced = [(1.01 + i / 50, True) for i in range(1, 41)] + [(1.815, False)]
    wave = [(0.001 * i, True) for i in range(10)] + [(0.0105, False)]
    after = learner.paused(attrs.evolve(probe, wave=True), burst + paced, anchor=1.0,
                           refused=1.815, wave=wave)
    assert after.phase == "steady" and after.server_burst == 10.0, after
    assert after.rate == pytest.approx(0.98 * 50, rel=0.02)  # the margin at first
    # ``creep_hold`` seconds at that pace, then ``creep`` of the fit, then the look
    assert after.hold == pytest.approx(learner.creep_hold * after.rate)
    assert after.cap == pytest.approx(after.rate / learner.margin * learner.creep)
    # a first wave that saw refill beside the burst does not creep
    refilled = learner.paused(attrs.evolve(probe, wave=True, most=14.0), burst + paced,
                              anchor=1.0, refused=1.815, wave=wave)
    assert refilled.cap == refilled.rate


def test_a_crept_pace_holds_on_the_simulated_bucket() -> None:
    limiter = wan.InProcessRateLimiter()
    out = run(limiter, Bucket(50, 10), seconds=30, callers=callers_for(50, 0.002, 0.0))
    assert limiter.rate >= 0.99 * 50 and limiter.rate <= 50, limiter.state
    assert out.rate(10, 30) >= 0.99 * 50
    assert out.refusals(5, 30) == 0


def test_a_fit_faster_than_anything_admitted_is_not_believed() -> None:
    learner = Learner()
    probe = LimitState(phase="probe", rate=300.0, base=200.0, server_burst=50.0,
                       burst=45.0, cap=12800.0, first=0.0)
    # admitted at about 100/s for 1 s, then refused: a fit cannot say 1,000,000/s
    replies = [(1.0 + i / 100, True) for i in range(100)] + [(2.0, False)]
    after = learner.paused(probe, replies, anchor=1.0, refused=2.0)
    assert after.rate <= 100 * 1.5


def test_a_climb_that_fails_waits_twice_as_long_before_the_next() -> None:
    learner = Learner()
    dropped = LimitState(phase="steady", rate=49.0, base=49.0, ceiling=49.0, cap=49.0,
                         server_burst=10.0, burst=9.0, hold_span=learner.hold)
    # the limit fell to 20/s: the replies since the pause fit about 20
    replies = [(i / 20, True) for i in range(1, 61)] + [(3.02, False)]
    first = learner.paused(dropped, replies, anchor=0.0, refused=3.02)
    assert first.rate < 25 and first.cap == 49.0 and first.hold > 0
    climbing = attrs.evolve(first, rate=first.base * 1.1)  # the climb went past the limit
    second = learner.paused(climbing, replies, anchor=0.0, refused=3.02)
    assert second.hold_span == 2 * first.hold_span


def test_a_fit_over_a_few_ms_never_raises_the_ceiling() -> None:
    # The bug (CI, real sockets, 500/s bucket of 50): 56 admitted within 9 ms of a
    # pause, read with a burst learned a token low, fit 681-780/s; the short-span rule
    # took it as the new ceiling and the pace rose to 690/s, a 429 a second after.
    learner = Learner()
    steady = LimitState(phase="steady", rate=487.7, base=487.7, ceiling=487.7, cap=487.7,
                        server_burst=49.0, burst=44.0, hold_span=learner.hold, first=0.0,
                        last=9.0)
    replies = ([(10.0168 + 0.0002 * i, True) for i in range(30)]
               + [(10.0235 + 0.0001 * i, True) for i in range(26)] + [(10.0258, False)])
    after = learner.paused(steady, replies, anchor=10.0, refused=10.0258)
    assert after.ceiling <= steady.ceiling and after.rate <= steady.rate, after


def test_a_429_soon_after_a_pause_lets_go_a_smaller_burst_after_the_next() -> None:
    # The Redis store's form of the queued-burst bug (1 run in 4 of the fast-bucket
    # benchmark paced at 0.1-0.3 of 500/s, a 429 after every pause): the store cannot
    # see when its burst reaches the server, so the learner lets go less after a pause.
    learner = Learner()
    steady = LimitState(phase="steady", rate=490.3, base=490.3, ceiling=490.3, cap=490.3,
                        server_burst=50.0, burst=45.0, hold_span=learner.hold, first=0.0,
                        last=9.0)
    replies = [(10.02 + 0.0005 * i, True) for i in range(62)] + [(10.052, False)]
    after = learner.paused(steady, replies, anchor=10.0, refused=10.052)
    assert after.burst == 36.0 and after.server_burst == 50.0, after
    # and it stays smaller after a later, ordinary pause
    later = [(20.0 + i / 490, True) for i in range(1, 2001)] + [(24.2, False)]
    again = learner.paused(after, later, anchor=20.0, refused=24.2)
    assert again.burst == 36.0, again
