"""A closed client raises `ClientClosedError` (a `WanError`) at once from every call and
every watch, and a call or watch waiting when it closes ends at once: it never polls on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Fault

from .conftest import FAST_RETRY, eventually

#: Every call lands here within this long, or it did not end "at once" (generous: the
#: promise is microseconds, and the machine may be busy).
AT_ONCE = 1.0
#: A watch between polls sleeps this long: only closing can end the wait in a test.
SLEEPY = wan.PollPolicy(initial=30.0, max_interval=30.0, learn=False)


@pytest.fixture
async def slow_server() -> AsyncIterator[FakeWanServer]:
    """Tasks stay pending for a minute: a watch of one is still running when we close."""
    async with FakeWanServer(pending_seconds=60.0) as srv:
        yield srv


def make_client(server: FakeWanServer, **kw: Any) -> wan.AsyncWanClient:
    kw.setdefault("poll", SLEEPY)
    return wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                              retry=FAST_RETRY, timeout=5, **kw)


async def raises_closed_at_once(call: Callable[[], Awaitable[object]]) -> wan.ClientClosedError:
    with anyio.fail_after(AT_ONCE), pytest.raises(wan.ClientClosedError) as info:
        await call()
    err = info.value
    assert isinstance(err, wan.WanError)
    assert "closed" in str(err) and "new client" in str(err)  # what happened, what to do
    return err


async def first_of(events: AsyncIterator[wan.TaskEvent]) -> wan.TaskEvent:
    async for event in events:
        return event
    raise AssertionError("the watch ended without an event")


async def test_every_call_and_watch_of_a_closed_client_raises_at_once_and_sends_nothing(
    server: FakeWanServer, tmp_path: Path
) -> None:
    client = make_client(server)
    task = await client.create_task(wan.TextToVideo(prompt="p"))
    request = wan.TextToVideo(prompt="p")
    await client.aclose()
    sent = len(server.requests)
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "create_task": lambda: client.create_task(request),
        "get_task": lambda: client.get_task(task.id),
        "get_credits": client.get_credits,
        "wait": lambda: client.wait(task.id),
        "generate": lambda: client.generate(request),
        "download": lambda: client.download(server.video_url(task.id), tmp_path),
        "watch": lambda: first_of(client.watch(task.id)),
        "fan_out": lambda: first_of(client.fan_out([request])),  # type: ignore[arg-type]
        "view": lambda: client.with_options(timeout=1).get_credits(),
    }
    for name, call in calls.items():
        err = await raises_closed_at_once(call)
        assert not isinstance(err, wan.AmbiguousSubmissionError), name  # nothing was sent
    assert len(server.requests) == sent
    assert list(tmp_path.iterdir()) == []


async def test_a_closed_client_s_error_is_not_taken_for_a_transient_one(
    server: FakeWanServer
) -> None:
    # The watch rides out connection errors; a closed client is not one of them.
    async with make_client(server) as client:
        task = await client.create_task(wan.TextToVideo(prompt="p"))
    err = await raises_closed_at_once(lambda: first_of(client.watch(task.id)))
    assert not isinstance(err, wan.APIConnectionError)


async def test_closing_ends_a_watch_sleeping_between_polls_without_another_poll(
    slow_server: FakeWanServer
) -> None:
    client = make_client(slow_server)
    task = await client.create_task(wan.TextToVideo(prompt="p"))
    events: list[wan.TaskEvent] = []
    failure: list[BaseException] = []

    async def watch() -> None:
        try:
            async for event in client.watch(task.id):
                events.append(event)
        except wan.WanError as exc:
            failure.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch)
        await eventually(lambda: bool(events))  # the first poll answered; 30 s to the next
        polls = len(slow_server.requests)
        with anyio.fail_after(AT_ONCE):
            await client.aclose()
            await eventually(lambda: bool(failure), timeout=AT_ONCE)
    assert isinstance(failure[0], wan.ClientClosedError)
    assert len(slow_server.requests) == polls  # it did not poll on
    assert [e.status for e in events] == [wan.TaskStatus.PENDING]


async def test_closing_ends_a_pushed_watch_waiting_for_a_callback(
    slow_server: FakeWanServer
) -> None:
    slow_push = wan.PollPolicy(initial=30.0, max_interval=30.0, learn=False)
    async with wan.CallbackReceiver(safety_poll=slow_push) as receiver:
        client = make_client(slow_server, callbacks=receiver)
        task = await client.create_task(wan.TextToVideo(prompt="p"))
        watch = client.watch(task.id)
        assert (await first_of(watch)).status is wan.TaskStatus.PENDING

        async def close_soon() -> None:
            await client.aclose()

        async with anyio.create_task_group() as tg:
            with anyio.fail_after(AT_ONCE), pytest.raises(wan.ClientClosedError):
                tg.start_soon(close_soon)
                await first_of(watch)


async def test_closing_ends_a_call_paused_by_the_rate_limit_at_once(
    server: FakeWanServer
) -> None:
    client = make_client(server)
    server.inject("credits", Fault.error(429, "rate_limit_exceeded", retry_after="30"))
    failure: list[BaseException] = []

    async def call() -> None:
        try:
            await client.get_credits()
        except wan.WanError as exc:
            failure.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(call)
        await eventually(lambda: server.stats.faults_injected == 1)  # now paused for 30 s
        with anyio.fail_after(AT_ONCE):
            await client.aclose()
            await eventually(lambda: bool(failure), timeout=AT_ONCE)
    assert isinstance(failure[0], wan.ClientClosedError)
    assert [r.route for r in server.requests] == ["credits"]  # not sent again


async def test_a_create_in_flight_when_the_client_closes_is_ambiguous(
    server: FakeWanServer
) -> None:
    client = make_client(server)
    server.inject("create", Fault.delay(3.0))  # the server makes the task, slowly
    failure: list[BaseException] = []

    async def create() -> None:
        try:
            await client.create_task(wan.TextToVideo(prompt="p"), idempotency_key="k-1")
        except wan.WanError as exc:
            failure.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(create)
        await eventually(lambda: any(r.route == "create" for r in server.requests))
        with anyio.fail_after(AT_ONCE):
            await client.aclose()
            await eventually(lambda: bool(failure), timeout=AT_ONCE)
    err = failure[0]
    # Closed, and the task may exist (it was sent): the key to look it up is kept.
    assert isinstance(err, wan.ClientClosedError)
    assert isinstance(err, wan.AmbiguousSubmissionError)
    assert err.idempotency_key == "k-1"


async def test_a_cancelled_wait_is_still_a_cancellation(slow_server: FakeWanServer) -> None:
    # The scope that closing cancels must never swallow or convert a real cancellation.
    async with make_client(slow_server) as maker, make_client(slow_server) as client:
        task = await maker.create_task(wan.TextToVideo(prompt="p"))
        waiting = asyncio.ensure_future(client.wait(task.id))  # not its task: it polls
        await eventually(lambda: len(slow_server.requests) >= 2)  # polled; now sleeping
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting


async def test_a_call_cancelled_as_the_client_closes_is_cancelled(
    server: FakeWanServer
) -> None:
    client = make_client(server)
    server.inject("credits", Fault.error(429, "rate_limit_exceeded", retry_after="30"))
    call = asyncio.ensure_future(client.get_credits())
    await eventually(lambda: server.stats.faults_injected == 1)  # paused for 30 s
    call.cancel()
    await client.aclose()  # both at once: the cancellation wins, it is not an error
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_closing_ends_a_watch_waiting_for_its_shape_to_be_learned(
    slow_server: FakeWanServer,
) -> None:
    # Watches of tasks this client created wait while the shape's scouts poll (no scope
    # and no poll of their own): closing ends them at once too, with no poll.
    learning = wan.PollPolicy(scouts=1)
    client = make_client(slow_server, poll=learning)
    tasks = [await client.create_task(wan.TextToVideo(prompt=f"p{i}")) for i in range(3)]
    watches = [asyncio.ensure_future(first_of(client.watch(t.id))) for t in tasks]
    # each has its first event from the create reply; then the scout polls, the rest wait
    await asyncio.gather(*watches)
    waits = [asyncio.ensure_future(client.wait(t.id)) for t in tasks]
    await eventually(lambda: sum(r.method == "GET" for r in slow_server.requests) >= 1)
    polls = sum(r.method == "GET" for r in slow_server.requests)
    await asyncio.sleep(0.05)
    with anyio.fail_after(AT_ONCE):
        await client.aclose()
        for waiting in waits:
            with pytest.raises(wan.ClientClosedError):
                await waiting
    assert sum(r.method == "GET" for r in slow_server.requests) == polls


async def test_a_sleep_cancelled_as_closing_resolves_it_is_cancelled() -> None:
    # The watch's sleep is a future that closing resolves with the error: a task
    # cancelled in the same loop pass still ends cancelled, and no error is left
    # unretrieved (asyncio would log "Future exception was never retrieved").
    import gc

    from wan26_async._lifecycle import Lifecycle, sleep, wake

    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context))
    try:
        life = Lifecycle()
        sleeper = asyncio.ensure_future(life.sleep(30))
        await asyncio.sleep(0)
        life.close()
        sleeper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await sleeper
        del sleeper
        gc.collect()
    finally:
        loop.set_exception_handler(None)
    assert not logged, logged
    with pytest.raises(wan.ClientClosedError):
        await life.sleep(0)  # closed: at once, before sleeping
    wakers: set[asyncio.Future[bool]] = set()
    woken = asyncio.ensure_future(sleep(30, wakers))
    await asyncio.sleep(0)
    wake(wakers)
    with anyio.fail_after(AT_ONCE):
        assert await woken is True
    assert not wakers
    assert await sleep(0.01) is False
