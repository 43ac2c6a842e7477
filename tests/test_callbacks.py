"""Pushed watches: the emulator POSTs callbacks to a CallbackReceiver."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Faults

from .conftest import FAST, FAST_RETRY

SLOW_SAFETY = wan.PollPolicy(initial=30, max_interval=30)  # never reached in these tests
S = wan.TaskStatus


@pytest.fixture
async def receiver() -> AsyncIterator[wan.CallbackReceiver]:
    async with wan.CallbackReceiver(safety_poll=SLOW_SAFETY) as r:
        yield r


def task_polls(server: FakeWanServer, task_id: str) -> int:
    return sum(1 for r in server.requests if r.route == "get" and task_id in r.path)


async def test_pushed_watch_of_a_created_task_sends_no_poll_at_all(
    server: FakeWanServer, receiver: wan.CallbackReceiver
) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  callbacks=receiver, retry=FAST_RETRY) as client:
        task = await client.create_task(wan.TextToVideo(prompt="p", resolution="720p",
                                                        duration=2))
        events = [e async for e in client.watch(task.id, timeout=10)]
    create = next(r for r in server.requests if r.route == "create")
    assert isinstance(create.json, dict)
    assert create.json["callback_url"] == receiver.callback_url
    assert "token=" in receiver.callback_url and "token" not in receiver.url
    assert events[-1].status is S.COMPLETED and events[-1].task.video_url
    assert events[0].previous is None and events[0].status is S.PENDING
    assert task_polls(server, task.id) == 0  # PENDING from the create reply, the rest pushed
    assert receiver.received == 1


async def test_pushed_failure_ends_the_watch(
    server: FakeWanServer, receiver: wan.CallbackReceiver
) -> None:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  callbacks=receiver) as client:
        with pytest.raises(wan.TaskFailedError):
            await client.generate(wan.TextToVideo(prompt="[fail] p", duration=2), timeout=10)


async def test_a_lost_callback_still_ends_the_watch_by_polling() -> None:
    async with FakeWanServer(faults=Faults(callback_loss_rate=1.0), **FAST) as server:
        safety = wan.PollPolicy(initial=0.05, max_interval=0.05)
        async with wan.CallbackReceiver(safety_poll=safety) as receiver, wan.AsyncWanClient(
            api_key=server.api_key, base_url=server.base_url, callbacks=receiver
        ) as client:
            task = await client.generate(wan.TextToVideo(prompt="p", resolution="720p",
                                                         duration=2), timeout=10)
        assert task.status is S.COMPLETED
        assert receiver.received == 0 and task_polls(server, task.id) >= 1


async def test_duplicated_callbacks_give_no_duplicate_event() -> None:
    async with FakeWanServer(faults=Faults(callback_duplicate_rate=1.0), **FAST) as server:
        async with wan.CallbackReceiver(safety_poll=SLOW_SAFETY) as receiver, \
                wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                   callbacks=receiver) as client:
            task = await client.create_task(wan.TextToVideo(prompt="p", resolution="720p",
                                                            duration=2))
            events = [e async for e in client.watch(task.id, timeout=10)]
    assert [e.status for e in events].count(S.COMPLETED) == 1


async def post(url: str, body: Any, **kw: Any) -> int:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session, session.post(url, data=data, **kw) as resp:
        return resp.status


def body(task_id: str, status: str) -> dict[str, Any]:
    return {"code": 200, "msg": "success", "data": {"taskId": task_id, "status": status}}


async def test_forged_unknown_oversized_and_malformed_callbacks_are_refused(
    receiver: wan.CallbackReceiver,
) -> None:
    receiver._expect("t1")
    good = receiver.callback_url
    assert await post(receiver.url, body("t1", "completed")) == 403  # no token
    assert await post(receiver.url + "?token=guess", body("t1", "completed")) == 403
    assert await post(good, body("t-unknown", "completed")) == 404
    assert await post(good, b"{not json") == 400
    assert await post(good, [1, 2, 3]) == 400
    assert await post(good, {"data": {"status": "completed"}}) == 400  # no task id
    assert await post(good, b"x" * (receiver.max_body_bytes + 1)) == 413
    assert receiver._pushed("t1") is None and receiver.rejected == 7
    assert await post(good, body("t1", "processing")) == 200
    assert receiver._pushed("t1") is not None


async def test_out_of_order_callbacks_never_move_a_task_backwards(
    receiver: wan.CallbackReceiver,
) -> None:
    receiver._expect("t1")
    for status in ("processing", "completed", "pending", "processing", "completed"):
        assert await post(receiver.callback_url, body("t1", status)) == 200
    latest = receiver._pushed("t1")
    assert latest is not None and latest.status is S.COMPLETED


async def test_receiver_mounts_into_an_existing_app() -> None:
    app = web.Application()
    receiver = wan.CallbackReceiver(public_url="https://hooks.example.com/wan")
    receiver.attach(app, path="/hooks/wan")
    assert receiver.callback_url.startswith("https://hooks.example.com/wan?token=")
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        receiver._expect("t9")
        token = receiver.callback_url.split("token=")[1]
        url = f"http://127.0.0.1:{port}/hooks/wan?token={token}"
        assert await post(url, body("t9", "completed")) == 200
        assert await post(f"http://127.0.0.1:{port}/hooks/wan", body("t9", "failed")) == 403
    finally:
        await runner.cleanup()
    latest = receiver._pushed("t9")
    assert latest is not None and latest.status is S.COMPLETED


async def test_a_pushed_watch_polls_only_once_its_callback_is_late(server: FakeWanServer) -> None:
    # a quick safety poll: without the learned finish, a watch would poll every 20 ms
    safety = wan.PollPolicy(initial=0.02, max_interval=0.02)
    shape = {"resolution": "720p", "duration": 2}
    async with wan.CallbackReceiver(safety_poll=safety) as receiver, wan.AsyncWanClient(
        api_key=server.api_key, base_url=server.base_url, callbacks=receiver,
        retry=FAST_RETRY,
    ) as client:
        first = await client.generate(wan.TextToVideo(prompt="learn", **shape), timeout=10)
        assert first.status is S.COMPLETED  # its callback taught the client the shape
        second = await client.create_task(wan.TextToVideo(prompt="on time", **shape))
        await client.wait(second.id, timeout=10)
        assert task_polls(server, second.id) == 0  # its callback came before it was late
        server.faults = Faults(callback_loss_rate=1.0)
        lost = await client.create_task(wan.TextToVideo(prompt="lost", **shape))
        done = await client.wait(lost.id, timeout=10)
    assert done.status is S.COMPLETED  # ended by the safety poll, once late
    late = [r.time for r in server.requests if r.route == "get" and lost.id in r.path]
    assert late and min(late) >= server.tasks[lost.id].done_at
