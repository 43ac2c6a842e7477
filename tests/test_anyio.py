"""The client under anyio (asyncio backend), inside a task group and cancel scopes."""

from __future__ import annotations

import anyio

import wan26_async as wan
from wan26_async.testing import FakeWanServer

from .conftest import FAST_POLL


def test_the_client_works_under_anyio_run_with_a_task_group() -> None:
    results: list[wan.Task] = []

    async def main(base_url: str, api_key: str) -> None:
        async with wan.AsyncWanClient(api_key=api_key, base_url=base_url,
                                      poll=FAST_POLL) as client:
            async with anyio.create_task_group() as group:
                for i in range(5):
                    async def one(i: int = i) -> None:
                        results.append(await client.generate(
                            wan.TextToVideo(prompt=f"p{i}", resolution="720p", duration=2)))
                    group.start_soon(one)
            with anyio.move_on_after(0.05):  # a cancel scope around a long watch
                task = await client.create_task(wan.TextToVideo(prompt="slow", duration=15))
                await client.wait(task.id)
            assert (await client.get_task(task.id)).id == task.id  # still usable

    with FakeWanServer(time_scale=0.01, pending_seconds=0.05).run_in_thread() as server:
        anyio.run(main, server.base_url, server.api_key, backend="asyncio")
    assert len(results) == 5
    assert all(t.status is wan.TaskStatus.COMPLETED for t in results)
