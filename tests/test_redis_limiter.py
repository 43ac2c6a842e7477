"""The limiter shared through Redis: a real redis-server on a loopback port, never a mock.

Clients in other threads (each with its own event loop) and other processes share one
limit: one pause for all, one learned rate, one pace; Redis down or restarted, every
create is still made exactly once. Skipped only when ``redis-server`` is not installed
(``apt-get install redis-server``; ``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Fault, TokenBucket

from . import redis_server
from .conftest import eventually

pytestmark = pytest.mark.skipif(
    not redis_server.available(),
    reason="redis-server is not installed (apt-get install redis-server; .ci/run does)")

redis_asyncio = pytest.importorskip("redis.asyncio", reason="the redis package (test extra)")
from wan26_async._ratelimit import LimitState  # noqa: E402
from wan26_async._ratelimit._learner import ramp  # noqa: E402
from wan26_async.redis import RedisRateLimiter, scope_for  # noqa: E402
from wan26_async.redis._scripts import ACQUIRE  # noqa: E402
from wan26_async.redis._state import STATE_FIELDS, decode_state, encode_state  # noqa: E402

REQUEST = wan.TextToVideo(prompt="p", resolution="720p", duration=2)
MANY_RETRIES = wan.RetryPolicy(max_retries=100, initial_backoff=0.01)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server.RedisServer() as server:
        yield server.url


@pytest.fixture
def prefix() -> str:
    """Keys of their own for each test (one server serves the module)."""
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    """A plain client to look at what the limiter keeps."""
    client = redis_asyncio.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


def client_for(server: FakeWanServer, limiter: wan.RateLimiter) -> wan.AsyncWanClient:
    return wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                              rate_limiter=limiter, retry=MANY_RETRIES)


async def everything_kept(redis: Any, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` with its value, whatever its type."""
    found: dict[str, Any] = {}
    for key in await redis.keys(f"{prefix}*"):
        kind = await redis.type(key)
        if kind == "hash":
            found[key] = await redis.hgetall(key)
        elif kind == "zset":
            found[key] = await redis.zrange(key, 0, -1, withscores=True)
        else:
            found[key] = await redis.get(key)
    return found


# -- one pace, one pause, one learned rate -----------------------------------------------


async def test_a_told_rate_is_one_pace_for_every_client(redis_url: str, prefix: str) -> None:
    async with FakeWanServer(rate_limit=TokenBucket(rate=100, burst=5), credits=1e9) as server:
        limiters = [RedisRateLimiter.from_url(redis_url, prefix=prefix, scope="told", rate=100,
                                              burst=5) for _ in range(2)]
        # Two connections per client: requests paced while many connections are still
        # opening would reach the server together (on a busy machine, a connect can take
        # 100 ms), which no pace on the client's side can prevent. Two in flight per client
        # still send far faster than 100/s on loopback, so the pace is what is tested.
        clients = [wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      rate_limiter=limiter, retry=MANY_RETRIES,
                                      max_concurrency=2) for limiter in limiters]
        await asyncio.gather(*(c.create_task(REQUEST) for c in clients for _ in range(50)))
        for c in clients:
            await c.aclose()
        for limiter in limiters:
            await limiter.aclose()
    # two clients told 100/s each would send 200/s, which the server's bucket (100/s,
    # burst 5) refuses; sharing one pace they send 100/s and meet no 429
    assert server.stats.rate_limited == 0
    assert len(server.tasks) == 100
    assert sum(limiter.pauses for limiter in limiters) == 0


def wait_until(condition: Callable[[], bool], *, timeout: float = 10.0) -> None:
    """Wait (blocking) until ``condition()`` is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.01)


def test_one_429_pauses_every_client_in_every_thread_once(redis_url: str, prefix: str) -> None:
    stop = threading.Event()
    limiters: list[RedisRateLimiter] = []
    made: list[int] = []  # the thread of each create made

    def create_times(server: FakeWanServer) -> list[float]:
        return sorted(r.time for r in list(server.requests) if r.route == "create")

    def long_gaps(times: list[float]) -> list[float]:
        return [b - a for a, b in itertools.pairwise(times) if b - a > 0.5]

    def went_on_after_the_pause(server: FakeWanServer) -> bool:
        times = create_times(server)
        gaps = [i for i, (a, b) in enumerate(itertools.pairwise(times)) if b - a > 0.5]
        return bool(gaps) and len(times) - gaps[-1] > 20

    async def worker(base_url: str, api_key: str) -> None:
        limiter = RedisRateLimiter.from_url(redis_url, prefix=prefix, scope="pause", rate=60,
                                            burst=2)
        limiters.append(limiter)
        async with wan.AsyncWanClient(api_key=api_key, base_url=base_url,
                                      rate_limiter=limiter, retry=MANY_RETRIES) as client:
            while not stop.is_set():
                await client.create_task(REQUEST)
                made.append(threading.get_ident())
        await limiter.aclose()

    with FakeWanServer(credits=1e9).run_in_thread() as server:
        threads = [threading.Thread(target=asyncio.run, args=(worker(server.base_url,
                                                                     server.api_key),))
                   for _ in range(3)]
        for t in threads:
            t.start()
        wait_until(lambda: len(set(made)) == 3)  # every thread is creating
        server.inject("create", Fault.error(429, "rate_limit_exceeded", retry_after="1"))
        wait_until(lambda: went_on_after_the_pause(server))
        stop.set()
        for t in threads:
            t.join(10)
        times = create_times(server)
    gaps = long_gaps(times)
    # every thread stopped for the one Retry-After (a reserved slot may leave in the
    # first 0.1 s), then went on; nobody waited alone for a 429 it did not get, and
    # nobody waited twice (two Retry-Afters)
    assert len(gaps) == 1 and 0.8 <= gaps[0] < 2.0, gaps
    assert sum(limiter.pauses for limiter in limiters) == 1
    assert sum(limiter.rate_limited for limiter in limiters) == 1
    assert len(made) == len(times) - 1  # each create once, the refused one resent


@pytest.mark.parametrize("state", [
    # climbing toward the cap, then held there, then looking above it
    LimitState(phase="steady", rate=40.0, burst=9.0, server_burst=10.0, ceiling=50.0,
               base=40.0, add=0.4, cap=50.0, look=1.0, lift=1.5, most=60.0),
    # a hold before a climb (after a drop)
    LimitState(phase="steady", rate=20.0, burst=9.0, server_burst=10.0, ceiling=50.0,
               base=20.0, add=0.4, cap=50.0, hold=30.0, look=1.0, lift=1.5),
    # a told pace never moves
    LimitState(phase="steady", rate=40.0, burst=4.0, server_burst=5.0, ceiling=40.0,
               base=40.0, cap=40.0, told=True),
], ids=["climb-hold-look", "hold-then-climb", "told"])
async def test_the_redis_pace_steps_as_the_learner_does(
    redis: Any, prefix: str, state: LimitState,
) -> None:
    # One learner, two stores: the ACQUIRE script steps the pace per slot exactly as
    # `ramp` does in memory (a drift between them was a bug of the first round).
    keys = [f"{prefix}:state", f"{prefix}:gate", f"{prefix}:events"]
    fields = encode_state(state)
    await redis.hset(keys[0], mapping=dict(zip(fields[::2], fields[1::2], strict=True)))
    acquire = redis.register_script(ACQUIRE)
    expected = attrs.evolve(state)
    for want in (1, 30, 7, 200, 400):
        await acquire(keys=keys, args=[60_000, 100, "p", 0, 0, want, 1e12])
        for _ in range(want):
            ramp(expected)
        kept = decode_state(await redis.hmget(keys[0], STATE_FIELDS))
        for name in ("rate", "hold", "cap", "ceiling"):
            assert getattr(kept, name) == pytest.approx(getattr(expected, name), rel=1e-6), (
                name, want)


async def test_the_first_wave_is_reported_timed_by_the_quick_round_trips(
    redis: Any, redis_url: str, prefix: str,
) -> None:
    # The first requests open connections: their round trips are slow (50 ms here) before
    # the server decides, and nothing quicker is known when they return. They are timed
    # by the quickest round trip known when reported, as later ones are (else they
    # seemed 25 ms early, and the first wave read as a smaller burst plus refill).
    limiter = RedisRateLimiter.from_url(redis_url, scope="s", prefix=prefix)
    try:
        await limiter.acquire()  # hears Redis's clock
        limiter.release()
        now = asyncio.get_running_loop().time()
        for _ in range(4):
            limiter.on_success(now - 0.050)
        for _ in range(2):
            limiter.on_success(now - 0.002)
        offset = limiter._offset  # Redis's clock (ms) minus the loop's
        assert offset is not None
        await limiter._flush()
        scores = [score for _, score in
                  await redis.zrange(limiter.keys[2], 0, -1, withscores=True)]
        decided = now * 1000.0 + offset - 1.0  # ms: half the 2 ms trip before the reply
        assert len(scores) == 6
        assert all(abs(score - decided) < 0.5 for score in scores), (scores, decided)
    finally:
        await limiter.aclose()


async def test_the_learned_limit_is_shared_and_the_keys_hold_no_api_key(
    redis_url: str, prefix: str, redis: Any
) -> None:
    async with FakeWanServer(rate_limit=TokenBucket(rate=100, burst=10, retry_after=1),
                             credits=1e9) as server:
        scope = scope_for(server.base_url, server.api_key)
        first = RedisRateLimiter.from_url(redis_url, prefix=prefix, scope=scope)
        second = RedisRateLimiter.from_url(redis_url, prefix=prefix, scope=scope)
        try:  # closed whatever fails: a connection left open warns in a later test
            async with client_for(server, first) as client:
                await asyncio.gather(*(client.create_task(REQUEST) for _ in range(250)))
            assert first.phase == "steady" and first.rate is not None
            assert 85 <= first.rate <= 101
            learning = server.stats.rate_limited
            assert learning <= 25
            await asyncio.sleep(0.2)  # the server's bucket refills
            # a new process of the same key: paced at the learned rate from its first one
            async with client_for(server, second) as client:
                await asyncio.gather(*(client.create_task(REQUEST) for _ in range(120)))
            assert second.phase == "steady"
            assert second.rate == pytest.approx(first.rate, rel=0.05)
            assert server.stats.rate_limited - learning <= 1
            assert len(server.tasks) == 370
            kept = await everything_kept(redis, prefix)
        finally:
            await first.aclose()
            await second.aclose()
    assert kept and all(scope in key for key in kept)
    assert server.api_key not in json.dumps(kept)
    assert server.api_key[3:] not in json.dumps(kept)


async def test_the_fast_path_is_one_round_trip_per_request(redis_url: str, prefix: str) -> None:
    async with FakeWanServer(credits=1e9) as server:
        limiter = RedisRateLimiter.from_url(redis_url, prefix=prefix, scope="fast", rate=1000,
                                            burst=10)
        async with client_for(server, limiter) as client:
            for _ in range(20):
                await client.create_task(REQUEST)
            await client.get_credits()
        await limiter.aclose()
    assert limiter.round_trips <= 21 + 2  # 21 calls, the told rate stored once, a report


# -- the scope ----------------------------------------------------------------------------


async def test_the_scope_is_a_hash_given_bound_or_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    digest = scope_for("https://gw.example/", "sk-secret")
    assert digest == scope_for("https://gw.example", "sk-secret") and "secret" not in digest
    assert digest != scope_for("https://other.example", "sk-secret")
    monkeypatch.delenv("WAN_API_KEY", raising=False)
    limiter = RedisRateLimiter.from_url(redis_url)
    with pytest.raises(wan.ConfigurationError, match="scope"):
        await limiter.acquire()  # refused before anything is sent
    assert limiter.round_trips == 0
    monkeypatch.setenv("WAN_API_KEY", "sk-from-env")
    monkeypatch.setenv("WAN_BASE_URL", "https://gw.example")
    assert limiter.scope == digest.replace(digest, scope_for("https://gw.example", "sk-from-env"))
    limiter.bind("https://gw.example", "sk-secret")  # what a client does with its own key
    assert limiter.scope == digest
    assert RedisRateLimiter.from_url(redis_url, scope="mine").scope == "mine"
    assert all(digest in key for key in limiter.keys)
    await limiter.aclose()


# -- failures: a worker killed, Redis down, Redis restarted ---------------------------------

def _steady(redis_url: str, prefix: str, scope: str) -> bool:
    async def phase() -> str | None:
        plain = redis_asyncio.Redis.from_url(redis_url, decode_responses=True)
        try:
            value: str | None = await plain.hget(f"{prefix}:{{{scope}}}:state", "phase")
            return value
        finally:
            await plain.aclose()

    return asyncio.run(phase()) == "steady"


_KILLED_WORKER = """
import asyncio, sys
import wan26_async as wan
from wan26_async.redis import RedisRateLimiter

class Loud(RedisRateLimiter):
    async def on_rate_limited(self, retry_after, sent_at=None):
        print("429", flush=True)
        await super().on_rate_limited(retry_after, sent_at)

async def main(url, prefix, scope, base_url, api_key):
    limiter = Loud.from_url(url, prefix=prefix, scope=scope)
    async with wan.AsyncWanClient(api_key=api_key, base_url=base_url, rate_limiter=limiter,
                                  max_retries=1000) as client:
        request = wan.TextToVideo(prompt="p", resolution="720p", duration=2)
        await asyncio.gather(*(client.create_task(request) for _ in range(10000)))

asyncio.run(main(*sys.argv[1:]))
"""


@pytest.mark.parametrize("when", ["opening a pause", "pacing"])
def test_a_killed_worker_does_not_stall_the_others(
    redis_url: str, prefix: str, when: str
) -> None:
    with FakeWanServer(rate_limit=TokenBucket(rate=50, burst=5, retry_after=1),
                       credits=1e9).run_in_thread() as server:
        scope = scope_for(server.base_url, server.api_key)
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_WORKER, redis_url, prefix, scope, server.base_url,
             server.api_key], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "429"  # it opened the pause
        if when == "pacing":  # the limit learned: it holds slots of the shared pace
            assert proc.stdout.readline().strip() == "429"  # the probe's end
            deadline = time.monotonic() + 10
            while not _steady(redis_url, prefix, scope) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.5)
        proc.send_signal(signal.SIGKILL)  # dies with no goodbye: slots, a fit not stored
        proc.wait(10)
        proc.stdout.close()
        killed_at = time.monotonic()

        async def survivor() -> RedisRateLimiter:
            limiter = RedisRateLimiter.from_url(redis_url, prefix=prefix, scope=scope)
            async with client_for(server, limiter) as client:
                await asyncio.gather(*(client.create_task(REQUEST) for _ in range(60)))
            await limiter.aclose()
            return limiter

        limiter = asyncio.run(survivor())
        done_at = time.monotonic()
        after = sorted(r.time for r in server.requests if r.time > killed_at)
    # nothing the dead worker held outlives its pause (1 s): the survivor goes on at once
    assert after and after[0] - killed_at < 1.5
    gaps = [b - a for a, b in itertools.pairwise(after)]
    assert max(gaps) < 1.5
    assert done_at - killed_at < 8
    assert limiter.phase == "steady"


async def test_redis_down_falls_back_with_one_warning_and_every_create_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = f"redis://:hunter2@127.0.0.1:{redis_server.free_port()}/0"  # nothing listens
    caplog.set_level(logging.WARNING, logger="wan26_async")
    async with FakeWanServer(rate_limit=TokenBucket(rate=200, burst=10, retry_after=1),
                             credits=1e9) as server:
        limiter = RedisRateLimiter.from_url(down, scope=scope_for(server.base_url,
                                                                  server.api_key))
        async with client_for(server, limiter) as client:
            tasks = await asyncio.gather(*(client.create_task(REQUEST) for _ in range(80)))
        await limiter.aclose()
    assert limiter.degraded and limiter.outages == 1
    assert len({t.id for t in tasks}) == 80 == len(server.tasks)
    assert server.stats.creates_accepted == 80  # none lost, none twice
    keys = [r.header("Idempotency-Key") for r in server.requests if r.route == "create"]
    created = {t.idempotency_key for t in server.tasks.values()}
    assert len(created) == 80 and created <= set(keys)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    assert "hunter2" not in caplog.text and server.api_key not in caplog.text


async def test_a_redis_restart_mid_run_loses_no_task() -> None:
    with redis_server.RedisServer() as store:
        async with FakeWanServer(rate_limit=TokenBucket(rate=100, burst=10, retry_after=1),
                                 credits=1e9) as server:
            scope = scope_for(server.base_url, server.api_key)
            limiter = RedisRateLimiter.from_url(store.url, scope=scope, reconnect_interval=0.2)
            async with client_for(server, limiter) as client:
                run = asyncio.gather(*(client.create_task(REQUEST) for _ in range(400)))
                await eventually(lambda: len(server.tasks) >= 200, timeout=20)
                learned = limiter.phase == "steady"
                store.kill()  # SIGKILL: every connection drops, every key is gone
                await asyncio.sleep(0.3)
                store.start()  # empty, on the same port
                tasks = await run
                await eventually(lambda: not limiter.degraded, timeout=5)
            await limiter.aclose()
            plain = redis_asyncio.Redis.from_url(store.url, decode_responses=True)
            state = await plain.hgetall(limiter.keys[0])
            await plain.aclose()
    assert limiter.outages >= 1
    assert len({t.id for t in tasks}) == 400 == len(server.tasks)
    assert server.stats.creates_accepted == 400
    if learned:  # the process gave the restarted Redis back the rate it had learned
        assert state.get("phase") == "steady"


# -- wan26 batch over shards, and the fleet recipe on arq ------------------------------------


def _write_jobs(path: Path, n: int, *, repeat: int = 0) -> Path:
    lines = [json.dumps({"model": "wan-2.6-text-to-video",
                         "input": {"prompt": f"job {i}", "duration": 2, "resolution": "720p"}})
             for i in range(n)]
    lines += lines[:repeat]  # the same requests again
    path.write_text("\n".join(lines) + "\n")
    return path


def _env(server: FakeWanServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WAN_", "FLEET_"))}
    env.update(WAN_API_KEY=server.api_key, WAN_BASE_URL=server.base_url, **extra)
    return env


def test_wan26_batch_shards_share_one_limiter(redis_url: str, tmp_path: Path) -> None:
    jobs = _write_jobs(tmp_path / "jobs.jsonl", 40)
    with FakeWanServer(time_scale=0.005, pending_seconds=0.02, credits=1e9,
                       rate_limit=TokenBucket(rate=60, burst=10, retry_after=1)
                       ).run_in_thread() as server:
        shards = [subprocess.Popen(
            [sys.executable, "-m", "wan26_async.cli", "batch", str(jobs), "--out",
             str(tmp_path / f"out{i}.jsonl"), "--shard", f"{i}/2", "--redis-url", redis_url,
             "--json"], env=_env(server), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True) for i in (1, 2)]
        for shard in shards:
            _, err = shard.communicate(timeout=60)
            assert shard.returncode == 0, err
    lines = [json.loads(line)["line"] for i in (1, 2)
             for line in (tmp_path / f"out{i}.jsonl").read_text().splitlines()]
    assert sorted(lines) == list(range(1, 41))  # disjoint shards, every line once
    assert server.stats.creates_accepted == 40 == len(server.tasks)


def test_the_arq_fleet_recipe_makes_every_generation_exactly_once(
    redis_url: str, tmp_path: Path
) -> None:
    pytest.importorskip("arq", reason="the fleet recipe needs arq (pip install arq)")
    fleet = ROOT / "examples" / "fleet"
    jobs = _write_jobs(tmp_path / "jobs.jsonl", 24, repeat=4)  # 28 lines, 24 requests
    with FakeWanServer(time_scale=0.005, pending_seconds=0.02, credits=1e9,
                       rate_limit=TokenBucket(rate=40, burst=10, retry_after=1)
                       ).run_in_thread() as server:
        env = _env(server, REDIS_URL=redis_url, FLEET_QUEUE=f"q{uuid.uuid4().hex[:8]}")

        def enqueue(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "enqueue.py", str(jobs), *args], cwd=fleet,
                                  env=env, capture_output=True, text=True, timeout=60)

        first = enqueue()
        assert first.returncode == 0, first.stderr
        assert "enqueued 24, already queued or done 4" in first.stderr
        workers = [subprocess.Popen([sys.executable, "worker.py", "--burst"], cwd=fleet,
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    text=True) for _ in range(2)]
        for worker in workers:
            _, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
        again = enqueue("--wait", "--timeout", "10")  # the same file: nothing new to do
        assert again.returncode == 0, again.stderr
        assert "enqueued 0, already queued or done 28" in again.stderr
        results = [json.loads(line) for line in again.stdout.splitlines()]
    assert len(results) == 28 and all(r["status"] == "completed" for r in results)
    job_ids = {r["job_id"] for r in results}
    assert len(job_ids) == 24 and len({r["task_id"] for r in results}) == 24
    # every generation made once, its job id as its idempotency key
    assert server.stats.creates_accepted == 24 == len(server.tasks)
    assert {t.idempotency_key for t in server.tasks.values()} == job_ids
