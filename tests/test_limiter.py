"""The shared limiter: told rates, learned token buckets, fixed windows, FIFO release."""

from __future__ import annotations

import asyncio

import pytest

import wan26_async as wan
from wan26_async._ratelimit import fit_bucket, fit_rate
from wan26_async.testing import FakeWanServer, FixedWindow, TokenBucket

from .conftest import eventually

REQUEST = wan.TextToVideo(prompt="p", resolution="720p", duration=2)
MANY_RETRIES = wan.RetryPolicy(max_retries=100, initial_backoff=0.01)


def test_fit_rate_brackets_a_simulated_bucket() -> None:
    # a bucket of burst 5 refilling at 20/s, full at t=0, hit at 40/s: 5 from the
    # burst, then one admission per 50 ms ... until a request finds no token
    events: list[tuple[float, bool]] = []
    tokens, last, rate = 5.0, 0.0, 20.0
    for i in range(60):
        t = i / 40
        tokens = min(5.0, tokens + (t - last) * rate)
        last = t
        ok = tokens >= 1
        tokens -= 1 if ok else 0
        events.append((t, ok))
        if not ok:
            break
    lowest, highest = fit_rate(events, burst=5, start=0.0)
    # 20/s is on the edge of what explains the admissions: found to a part in 10,000
    assert lowest <= 20.0 * 1.0001 and highest >= 20.0
    assert highest - lowest < 3.0


def test_fit_bucket_tells_the_burst_from_the_rate() -> None:
    # a bucket of burst 20 refilling at 200/s. The first wave (a slow start, 3 ms apart)
    # is admitted 22 times before its refusal: the burst and what refilled meanwhile.
    # The probe after the pause (paced at 500/s) runs longer before it is refused.
    def wave(start: float, gap: float) -> list[tuple[float, bool]]:
        events: list[tuple[float, bool]] = []
        tokens, last = 20.0, start
        t = start
        while True:
            t += gap
            tokens = min(20.0, tokens + (t - last) * 200.0)
            last = t
            ok = tokens >= 1
            tokens -= 1 if ok else 0
            events.append((t, ok))
            if not ok:
                return events

    first = wave(0.0, 0.0004)
    probe = wave(2.0, 0.002)
    assert sum(ok for _, ok in first) > 20  # the naive count over-states the burst
    burst, rate, lowest, highest = fit_bucket(first, probe, start=2.0)
    assert burst == 20
    assert lowest <= 200.0 * 1.0001 and highest >= 200.0 * 0.9999
    assert 190 <= rate <= 210
    # the probe alone, taken with the naive burst, under-states the rate
    assert fit_rate(probe, burst=len(first) - 1, start=2.0)[1] < 190


@pytest.mark.xfail(strict=True, reason="open: fitting the burst with the bucket's cap "
                   "fixes this but misreads jittered waves (see the rate-limit issue's notes)")
def test_fit_bucket_reads_a_first_wave_with_a_lull_in_it() -> None:
    # The bug (a busy CI machine, real sockets): a (10, 100/s) bucket's first wave had 4
    # requests decided at once, then its new connections took 180 ms to open, and 10
    # more were decided together then (the bucket full again) before a refusal. Counted
    # as one run of refill since the first, the wave needed a burst of 4 only; with it,
    # the probe read 100,000/s (the learner then paced at 110-125/s for good).
    def bucket(times: list[float]) -> list[tuple[float, bool]]:
        events: list[tuple[float, bool]] = []
        tokens, last = 10.0, times[0]
        for t in times:
            tokens = min(10.0, tokens + (t - last) * 100.0)
            last = t
            ok = tokens >= 1
            tokens -= 1 if ok else 0
            events.append((t, ok))
        return events

    first = bucket([0.0] * 4 + [0.18 + i * 0.0001 for i in range(12)])
    assert sum(ok for _, ok in first) == 14
    times, pace = [1.2] * 9, 56.0  # the probe: 9 at once, then paced from 56/s, growing
    while len(times) < 200:
        times.append(times[-1] + 1 / pace)
        pace *= 1.25 ** (1 / 14)
    probe = bucket(times)
    probe = probe[: next(i for i, (_, ok) in enumerate(probe) if not ok) + 1]
    burst, rate, lowest, highest = fit_bucket(first, probe, start=1.2)
    assert burst == 10
    assert 95 <= rate <= 101 and lowest <= 100.0 * 1.0001 <= highest * 1.0002


def test_fit_rate_from_a_refusal_counts_less_than_a_token_then() -> None:
    # Refused at t=0 (the bucket held less than a token), then a pause of 1 s: two
    # admitted at 1.0 s and the third refused. The first may have taken the fraction
    # left at the refusal plus what refilled; the second needs a whole token refilled
    # (rate >= 1/s); the refusal found less than one after two were taken (rate < 3/s).
    events = [(1.0, True), (1.0, True), (1.0, False)]
    lowest, highest = fit_rate(events, burst=50, start=0.0, full=False)
    assert lowest == pytest.approx(1.0, rel=1e-3) and highest == pytest.approx(3.0, rel=1e-3)
    # taken to be full after the pause, the same replies say nothing of the rate
    assert fit_rate(events, burst=50, start=1.0)[0] == 0.0


def test_fit_rate_with_no_refusal_has_no_upper_bound() -> None:
    lowest, highest = fit_rate([(0.1, True), (0.2, True)], burst=1, start=0.0)
    assert 0 < lowest <= 10.0 * 1.0001 and highest == 100_000.0


async def test_waiters_are_released_in_order_after_a_pause() -> None:
    limiter = wan.InProcessRateLimiter(rate=1000)
    await limiter.acquire()
    limiter.release()
    await limiter.on_rate_limited(0.1)
    order: list[int] = []

    async def caller(i: int) -> None:
        await limiter.acquire()
        order.append(i)
        limiter.release()

    callers = []
    for i in range(20):
        callers.append(asyncio.ensure_future(caller(i)))
        await asyncio.sleep(0)  # each starts waiting in turn
    await asyncio.gather(*callers)
    assert order == list(range(20))
    assert limiter.pauses == 1
    await limiter.aclose()


async def test_a_cancelled_waiter_does_not_hold_a_slot() -> None:
    limiter = wan.InProcessRateLimiter(rate=50)
    await limiter.acquire()  # spends the one token
    waiter = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await asyncio.wait_for(limiter.acquire(), 1.0)  # the next caller still gets through
    await limiter.aclose()


async def test_a_told_rate_paces_from_the_first_request_without_429s() -> None:
    async with FakeWanServer(rate_limit=TokenBucket(rate=100, burst=5), credits=1e9) as server:
        limiter = wan.InProcessRateLimiter(rate=100)
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      rate_limiter=limiter) as client:
            await asyncio.gather(*(client.create_task(REQUEST) for _ in range(40)))
    # 40 at once would find a burst of 5: the server's bucket is the judge of the pace.
    # How close to the told rate it runs is measured on a simulated clock
    # (tests/test_learner_sim.py::test_a_told_rate_is_kept_whatever_the_replies).
    assert server.stats.rate_limited == 0
    assert len(server.tasks) == 40 and limiter.pauses == 0


async def test_an_untold_token_bucket_is_learned_with_few_429s() -> None:
    async with FakeWanServer(rate_limit=TokenBucket(rate=100, burst=10, retry_after=1),
                             credits=1e9) as server:
        limiter = wan.InProcessRateLimiter()
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      rate_limiter=limiter, retry=MANY_RETRIES) as client:
            tasks = await asyncio.gather(*(client.create_task(REQUEST) for _ in range(400)))
    assert len({t.id for t in tasks}) == 400 == len(server.tasks)  # every create, once
    # The wiring over real sockets; how well and how fast the rate is learned is tested
    # on a simulated clock (tests/test_learner_sim.py), where a busy machine cannot skew it.
    assert limiter.phase == "steady"
    # (above 100/s only while it looks above the ceiling: a burst found too big looks
    # after a second, and a look may end the run at up to 1.5x)
    assert limiter.rate is not None and 60 <= limiter.rate <= 150
    assert server.stats.rate_limited <= 40  # not a storm: 0.1 per task at most
    # Mostly 2 pauses; now and then (1 run in 8-10 here) the first wave, spread by
    # connections opening, shows a burst of 7-8 for 10, the fit comes out 15-30 % high,
    # and each pause after trims it by 3 %: up to 9 pauses were seen.
    assert limiter.pauses <= 12


async def test_a_fixed_window_is_ridden_without_a_429_storm() -> None:
    async with FakeWanServer(rate_limit=FixedWindow(limit=60, window=1), credits=1e9) as server:
        limiter = wan.InProcessRateLimiter()
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      rate_limiter=limiter, retry=MANY_RETRIES) as client:
            await asyncio.gather(*(client.create_task(REQUEST) for _ in range(150)))
    assert len(server.tasks) == 150
    # one wave while the limit is unknown, then a pause per window at most: no storm and
    # no backoff spiral (a hand-written retry loop sees several 429s per request); the
    # pace within the windows is measured on a simulated clock (tests/test_learner_sim.py)
    assert server.stats.rate_limited <= 45
    assert limiter.pauses <= 4


async def test_the_slow_start_keeps_the_first_wave_of_429s_small() -> None:
    async with FakeWanServer(rate_limit=TokenBucket(rate=20, burst=10, retry_after=1),
                             credits=1e9) as server:
        limiter = wan.InProcessRateLimiter()
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      rate_limiter=limiter, retry=MANY_RETRIES) as client:
            first = asyncio.gather(*(client.create_task(REQUEST) for _ in range(64)))
            await eventually(lambda: limiter.pauses > 0)
            gate = limiter.paused_until
            # the first wave is what left before the pause: all of it is answered (and
            # released) while the pause lasts, since nothing leaves until it ends
            await eventually(lambda: limiter._in_flight == 0)
            refused_in_first_wave = server.stats.rate_limited
            assert asyncio.get_running_loop().time() < gate  # counted before wave two
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
    assert refused_in_first_wave <= 20  # not all 54 of 64 sent at once


async def test_a_client_that_never_meets_a_429_keeps_a_bounded_reply_log() -> None:
    from wan26_async._ratelimit._memory import MAX_EVENTS

    limiter = wan.InProcessRateLimiter()
    await limiter.acquire()  # binds the loop
    limiter.release()
    limiter.state.phase, limiter.state.rate = "steady", 1000.0  # learned; no pause since
    for _ in range(MAX_EVENTS * 3):
        limiter.on_success()
    assert MAX_EVENTS // 2 <= len(limiter._events) <= MAX_EVENTS
    await limiter.aclose()
