"""The learned poll schedule: scouts learn a shape, the others poll near its finish."""

from __future__ import annotations

import asyncio
from collections import Counter

import wan26_async as wan
from wan26_async.testing import FakeTask, FakeWanServer

POLICY = wan.PollPolicy(initial=0.2, multiplier=2.0, max_interval=1.0, scouts=2,
                        scout_interval=0.02, settle=0.01)


def polls_by_task(server: FakeWanServer) -> Counter[str]:
    return Counter(r.path.rsplit("/", 1)[-1] for r in server.requests if r.route == "get")


async def test_non_scouts_poll_far_less_than_scouts_and_report_completion_promptly() -> None:
    async with FakeWanServer(pending_seconds=0.05, processing_seconds=0.5) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=POLICY) as client:
            tasks = [await client.create_task(wan.TextToVideo(prompt=f"p{i}"))
                     for i in range(12)]
            lags: list[float] = []

            async def follow(task: wan.Task) -> None:
                async for event in client.watch(task.id):
                    if event.status is wan.TaskStatus.COMPLETED:
                        done_at = server.tasks[task.id].done_at
                        lags.append(asyncio.get_running_loop().time() - done_at)

            await asyncio.gather(*(follow(t) for t in tasks))
    counts = sorted(polls_by_task(server).values())
    scouts, others = counts[-2:], counts[:-2]
    assert min(scouts) >= 10  # 0.55 s at 0.02 s
    assert max(others) <= 5  # first poll, backoff until learned, one near the finish
    assert max(lags) < 0.3


async def test_a_task_running_longer_than_its_shape_falls_back_to_short_polls() -> None:
    def processing(task: FakeTask) -> float:
        return 1.2 if "slow" in str(task.input.get("prompt")) else 0.3

    async with FakeWanServer(pending_seconds=0.02, processing_seconds=processing) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=POLICY) as client:
            for i in range(3):  # learn the shape: about 0.32 s
                await client.wait((await client.create_task(
                    wan.TextToVideo(prompt=f"fast {i}"))).id)
            slow = await client.create_task(wan.TextToVideo(prompt="slow one"))
            events = [e async for e in client.watch(slow.id)]
            loop_time = asyncio.get_running_loop().time()
    assert events[-1].status is wan.TaskStatus.COMPLETED
    # completion seen within the fallback's short interval (bounded by policy.initial)
    assert loop_time - server.tasks[slow.id].done_at < POLICY.initial + 0.1
    # and it was only reported from a reply that showed it
    assert server.tasks[slow.id].done_at <= loop_time


async def test_tasks_not_created_by_this_client_use_plain_backoff(
    server: FakeWanServer,
) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=POLICY) as creator:
        task = await creator.create_task(wan.TextToVideo(prompt="p", resolution="720p",
                                                         duration=2))
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=POLICY) as watcher:
        final = await watcher.wait(task.id, timeout=10)
    assert final.status is wan.TaskStatus.COMPLETED
