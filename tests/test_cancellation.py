"""Cancelling at many points leaves nothing behind, and the client still works."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Faults

from .conftest import FAST_POLL, client_tasks, eventually

CANCEL_POINTS = [i * 0.013 for i in range(16)]  # 0 .. ~0.2 s, off the poll rhythm


def request(i: int = 0) -> wan.TextToVideo:
    return wan.TextToVideo(prompt=f"p{i}", resolution="720p", duration=2)


async def assert_clean(client: wan.AsyncWanClient, before: set[asyncio.Task[object]]) -> None:
    # aiohttp may end a cancelled request's body writer a few loop turns later
    await eventually(lambda: client_tasks() - before == set())
    transport = client._transport
    limiter = client.rate_limiter
    assert isinstance(limiter, wan.InProcessRateLimiter)
    assert transport._slots.free == client.max_concurrency  # no slot leaked
    assert limiter._in_flight == 0  # no limiter slot leaked
    fresh = await asyncio.wait_for(client.create_task(request()), 5)  # still usable
    assert fresh.id


def only_wan_errors(exc: BaseException) -> bool:
    """A fault reached the caller as the SDK's own error (or a group of them)."""
    inner = getattr(exc, "exceptions", None)  # an ExceptionGroup from a TaskGroup
    if inner is not None:
        return all(only_wan_errors(e) for e in inner)
    return isinstance(exc, wan.WanError)


async def watch_all(client: wan.AsyncWanClient) -> None:
    task = await client.create_task(request())
    async for _ in client.watch(task.id):
        pass


async def wait_one(client: wan.AsyncWanClient) -> None:
    task = await client.create_task(request())
    await client.wait(task.id)


async def generate_one(client: wan.AsyncWanClient) -> None:
    await client.generate(request())


async def fan_out_many(client: wan.AsyncWanClient) -> None:
    async for _ in client.fan_out([request(i) for i in range(12)], concurrency=6):
        pass


async def fan_out_block(client: wan.AsyncWanClient) -> None:
    async with client.fan_out((request(i) for i in range(12)), concurrency=6) as outcomes:
        async for _ in outcomes:
            pass


async def task_group(client: wan.AsyncWanClient) -> None:
    async with asyncio.TaskGroup() if hasattr(asyncio, "TaskGroup") else _Gather() as group:
        for i in range(6):
            group.create_task(client.generate(request(i)))


class _Gather:
    """A stand-in for asyncio.TaskGroup on Python 3.10."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[object]] = []

    def create_task(self, coro: Awaitable[object]) -> None:
        self.tasks.append(asyncio.ensure_future(coro))

    async def __aenter__(self) -> _Gather:
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await asyncio.gather(*self.tasks)
        finally:
            for t in self.tasks:
                t.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.parametrize("work", [watch_all, wait_one, generate_one, fan_out_many,
                                  fan_out_block, task_group])
async def test_cancelling_at_many_points_leaks_nothing(
    work: Callable[[wan.AsyncWanClient], Awaitable[None]],
) -> None:
    # slow replies and random faults make the cancel points land everywhere: in a
    # create, in a poll, in a retry's backoff, in the limiter, between events
    faults = Faults(latency=0.004, error_rates={"internal_error": 0.1},
                    drop_before_rate=0.05, truncated_rate=0.05)
    async with FakeWanServer(time_scale=0.01, pending_seconds=0.05, faults=faults,
                             seed=11) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=FAST_POLL, max_concurrency=4,
                                      retry=wan.RetryPolicy(initial_backoff=0.005,
                                                            max_backoff=0.02)) as client:
            before = client_tasks()
            for delay in CANCEL_POINTS:
                job = asyncio.ensure_future(work(client))
                await asyncio.sleep(delay)
                job.cancel()
                try:
                    await job
                except asyncio.CancelledError:
                    pass
                except Exception as exc:  # finished with a fault before the cancel point
                    assert only_wan_errors(exc), exc
                server.faults = Faults()  # the fresh call of the check sees no faults
                await assert_clean(client, before)
                server.faults = faults
