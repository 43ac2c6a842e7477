"""No request without a reason: what watches and polls cost of the rate limit."""

from __future__ import annotations

import asyncio

import anyio
import pytest

import wan26_async as wan
from wan26_async._slots import Slots
from wan26_async.testing import FakeWanServer

from .conftest import FAST_POLL, FAST_RETRY, eventually

S = wan.TaskStatus
SHAPE = {"resolution": "720p", "duration": 2}


def polls_of(server: FakeWanServer, task_id: str) -> list[float]:
    return [r.time for r in server.requests if r.route == "get" and task_id in r.path]


async def test_a_watch_of_a_created_task_starts_from_the_create_reply(
    server: FakeWanServer, client: wan.AsyncWanClient
) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="p", **SHAPE))
    events = client.watch(task.id)
    first = await events.__anext__()
    assert first.status is S.PENDING and first.previous is None and first.task.id == task.id
    assert polls_of(server, task.id) == []  # the create reply said it: no poll for it
    rest = [e.status async for e in events]
    assert rest[-1] is S.COMPLETED and len(polls_of(server, task.id)) >= 1


async def test_a_second_watch_of_the_same_task_polls_for_its_first_event(
    server: FakeWanServer, client: wan.AsyncWanClient
) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="p", **SHAPE))
    await client.wait(task.id, timeout=10)
    before = len(polls_of(server, task.id))
    events = [e.status async for e in client.watch(task.id)]
    assert events == [S.COMPLETED]  # the state now, not the create reply of long ago
    assert len(polls_of(server, task.id)) == before + 1


async def test_a_watch_after_a_create_sends_no_poll_before_the_learned_finish(
    server: FakeWanServer, client: wan.AsyncWanClient
) -> None:
    # three scouts learn the shape ...
    learners = [await client.create_task(wan.TextToVideo(prompt=f"l{i}", **SHAPE))
                for i in range(3)]
    async with anyio.create_task_group() as group:
        for task in learners:
            group.start_soon(client.wait, task.id)
    # ... then of two new watches one keeps scouting, the other polls at the finish
    fresh = [await client.create_task(wan.TextToVideo(prompt=f"f{i}", **SHAPE))
             for i in range(2)]
    async with anyio.create_task_group() as group:
        for task in fresh:
            group.start_soon(client.wait, task.id)
    early = [sum(1 for t in polls_of(server, task.id) if t < server.tasks[task.id].done_at)
             for task in fresh]
    assert min(early) == 0, f"polls before the finish: {early}"
    planned = fresh[early.index(0)]
    assert len(polls_of(server, planned.id)) <= 3


async def test_slots_go_three_to_creates_for_one_to_others_while_both_wait() -> None:
    slots = Slots(1)
    assert slots.try_take() and not slots.try_take()
    order: list[str] = []

    async def take(name: str, create: bool) -> None:
        await slots.wait(create)
        order.append(name)
        slots.give()

    async with anyio.create_task_group() as group:
        for i in range(6):
            group.start_soon(take, f"poll{i}", False)
        for i in range(7):
            group.start_soon(take, f"create{i}", True)
        await eventually(lambda: len(slots.others) == 6 and len(slots.creates) == 7)
        slots.give()
    assert order == ["create0", "create1", "create2", "poll0", "create3", "create4",
                     "create5", "poll1", "create6", "poll2", "poll3", "poll4", "poll5"]


async def test_a_waiter_cancelled_as_it_is_handed_a_slot_passes_it_on() -> None:
    slots = Slots(1)
    assert slots.try_take()
    got: list[str] = []

    async def take(name: str) -> None:
        await slots.wait(True)
        got.append(name)

    first = asyncio.create_task(take("a"))
    second = asyncio.create_task(take("b"))
    await eventually(lambda: len(slots.creates) == 2)
    slots.give()  # handed to "a" ...
    first.cancel()  # ... which is cancelled before it runs: "b" gets the slot
    await second
    with pytest.raises(asyncio.CancelledError):
        await first
    assert got == ["b"] and slots.free == 0 and not slots.creates


async def test_a_create_is_not_starved_by_thousands_of_waiting_polls(
    server: FakeWanServer,
) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=FAST_POLL, retry=FAST_RETRY, timeout=10,
                                  max_concurrency=2) as client:
        task = await client.create_task(wan.TextToVideo(prompt="p", **SHAPE))
        async with anyio.create_task_group() as group:
            for _ in range(2000):
                group.start_soon(client.get_task, task.id)
            await eventually(lambda: sum(1 for r in server.requests if r.route == "get") >= 10)
            seen = len(server.requests)
            await client.create_task(wan.TextToVideo(prompt="q", **SHAPE))
            order = [r.route for r in server.requests[seen:]]
            gets_before_create = order.index("create")
    # 2000 polls queued first; the create waits for at most a slot's turn or two
    assert gets_before_create <= 6, gets_before_create


@pytest.mark.parametrize("learn", [True, False])
async def test_the_first_event_needs_no_poll_with_or_without_learning(
    server: FakeWanServer, learn: bool
) -> None:
    poll = wan.PollPolicy(initial=0.01, max_interval=0.05, learn=learn, scout_interval=0.01,
                          settle=0.005)
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=poll, retry=FAST_RETRY) as client:
        task = await client.create_task(wan.TextToVideo(prompt="p", **SHAPE))
        async for event in client.watch(task.id):
            assert event.status is S.PENDING
            break
    assert polls_of(server, task.id) == []
