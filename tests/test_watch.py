"""watch, wait, generate and fan_out against the emulator."""

from __future__ import annotations

import asyncio
import logging

import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Fault, Faults

from .conftest import FAST, FAST_POLL, FAST_RETRY, client_tasks, eventually

S = wan.TaskStatus


def statuses(events: list[wan.TaskEvent]) -> list[tuple[S | None, S]]:
    return [(e.previous, e.status) for e in events]


async def test_watch_yields_each_status_change_once_and_stops() -> None:
    async with FakeWanServer(time_scale=0.02, pending_seconds=10) as server:  # 0.2 s pending
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=FAST_POLL) as client:
            task = await client.create_task(wan.TextToVideo(prompt="p", resolution="720p",
                                                            duration=2))
            events = [e async for e in client.watch(task.id)]
    assert statuses(events) == [(None, S.PENDING), (S.PENDING, S.PROCESSING),
                                (S.PROCESSING, S.COMPLETED)]
    assert all(e.task_id == task.id for e in events)
    assert [e.elapsed for e in events] == sorted(e.elapsed for e in events)
    assert events[-1].task.video_url and events[-1].is_terminal


async def test_a_task_already_completed_gives_one_event(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="p", resolution="720p", duration=2))
    await client.wait(task.id)
    events = [e async for e in client.watch(task.id)]
    assert statuses(events) == [(None, S.COMPLETED)]


async def test_a_failed_task_ends_the_watch_with_failed(client: wan.AsyncWanClient) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="[fail] p", duration=2))
    events = [e async for e in client.watch(task.id)]
    assert events[-1].status is S.FAILED and events[-1].task.error
    assert [e.status for e in events].count(S.FAILED) == 1


async def test_upper_case_statuses_are_understood(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="p"))
    server.inject("get", Fault.unknown_status("PENDING"))
    server.inject("get", Fault.unknown_status("Processing"))
    events = [e async for e in client.watch(task.id)]
    assert statuses(events)[:2] == [(None, S.PENDING), (S.PENDING, S.PROCESSING)]
    assert events[-1].status is S.COMPLETED


async def test_unknown_status_is_logged_and_polled_past(
    client: wan.AsyncWanClient, server: FakeWanServer, caplog: pytest.LogCaptureFixture
) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="p", resolution="720p", duration=2))
    server.inject("get", Fault.unknown_status("queued_for_review"), times=2)
    events = [e async for e in client.watch(task.id)]
    assert S.UNKNOWN not in [e.status for e in events]
    assert events[-1].status is S.COMPLETED
    assert "queued_for_review" in caplog.text
    assert any(r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize("fault", [
    Fault.error(500, "internal_error"), Fault.error(503, "upstream_error"),
    Fault.error(429, "rate_limit_exceeded", retry_after="0"), Fault.html(502),
    Fault.truncated(), Fault.drop_before(), Fault.empty(500),
])
async def test_transient_faults_mid_watch_give_the_same_events(
    server: FakeWanServer, fault: Fault
) -> None:
    # no per-call retries: the watch itself must ride the faults out
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=FAST_POLL, max_retries=0) as client:
        task = await client.create_task(wan.TextToVideo(prompt="p", resolution="720p",
                                                        duration=2))
        server.inject("get", fault, times=3)
        events = [e async for e in client.watch(task.id)]
    # the first event is the create reply's; the faulty polls may hide PROCESSING
    assert [e.status for e in events] in ([S.PENDING, S.PROCESSING, S.COMPLETED],
                                          [S.PENDING, S.COMPLETED])


async def test_task_not_found_is_raised_from_the_watch(client: wan.AsyncWanClient) -> None:
    with pytest.raises(wan.TaskNotFoundError):
        async for _ in client.watch("nope"):
            pass


async def test_watch_timeout_raises_with_the_last_task(client: wan.AsyncWanClient) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="p", duration=15))  # 0.3 s
    seen = []
    with pytest.raises(wan.WatchTimeoutError) as info:
        async for event in client.watch(task.id, timeout=0.1):
            seen.append(event)
    assert info.value.task is not None and info.value.task.id == task.id
    assert not info.value.task.done and seen


def polls_of(server: FakeWanServer, task_id: str) -> int:
    return sum(1 for r in server.requests if r.route == "get" and r.path.endswith(task_id))


async def assert_no_more_polls(server: FakeWanServer, task_id: str) -> None:
    """A watch still alive polls at least every FAST_POLL.max_interval (0.05 s): it
    would poll again before the task (0.3 s long) is done on the server."""
    polls = polls_of(server, task_id)
    await eventually(lambda: server.tasks[task_id].status == "completed")
    assert polls_of(server, task_id) == polls


@pytest.mark.parametrize("leave", ["break", "aclose"])
async def test_leaving_a_watch_early_stops_polling(
    leave: str, client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    before = client_tasks()
    task = await client.create_task(wan.TextToVideo(prompt="p", duration=15))  # 0.3 s
    if leave == "break":
        async for _ in client.watch(task.id):
            break  # the watch is finalized once the loop drops it
    else:
        watch = client.watch(task.id)
        async for _ in watch:
            break
        await watch.aclose()  # type: ignore[attr-defined]
    await eventually(lambda: client_tasks() - before == set())
    await assert_no_more_polls(server, task.id)


async def test_cancelling_a_wait_leaves_no_stray_tasks(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    task = await client.create_task(wan.TextToVideo(prompt="p", duration=15))
    before = client_tasks()
    waiter = asyncio.ensure_future(client.wait(task.id))
    await eventually(lambda: polls_of(server, task.id) >= 2)  # cancelled mid-watch
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert client_tasks() - before == set()
    await assert_no_more_polls(server, task.id)
    assert (await client.get_task(task.id)).id == task.id  # the client still works


async def test_generate_returns_the_completed_task(client: wan.AsyncWanClient) -> None:
    task = await client.generate(wan.ImageToVideo(prompt="p", image_urls=["https://a/b.png"],
                                                  resolution="720p", duration=2))
    assert task.status is S.COMPLETED and task.video_url


async def test_generate_raises_task_failed(client: wan.AsyncWanClient) -> None:
    with pytest.raises(wan.TaskFailedError) as info:
        await client.generate(wan.TextToVideo(prompt="[fail]", duration=2))
    assert info.value.task.status is S.FAILED


# -- fan_out ------------------------------------------------------------------------------


async def test_fan_out_gives_one_outcome_per_request_with_failures_isolated() -> None:
    async with FakeWanServer(failure_rate=0.3, seed=7, **FAST) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=FAST_POLL, retry=FAST_RETRY) as client:
            requests = [wan.TextToVideo(prompt=f"p{i}", resolution="720p", duration=2)
                        for i in range(40)]
            outcomes = [o async for o in client.fan_out(requests, concurrency=16)]
    assert sorted(o.index for o in outcomes) == list(range(40))
    failed = [o for o in outcomes if not o.ok]
    assert failed and all(isinstance(o.error, wan.TaskFailedError) for o in failed)
    assert all(o.request is requests[o.index] for o in outcomes)
    assert len(server.tasks) == 40  # each submitted exactly once


async def test_fan_out_ordered_yields_in_input_order(client: wan.AsyncWanClient) -> None:
    requests = [wan.TextToVideo(prompt="p", resolution="720p", duration=d)
                for d in (6, 2, 4, 3)]
    outcomes = [o async for o in client.fan_out(requests, ordered=True)]
    assert [o.index for o in outcomes] == [0, 1, 2, 3]


async def test_fan_out_stops_submitting_after_insufficient_credits() -> None:
    async with FakeWanServer(credits=200 * 3, **FAST) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=FAST_POLL, retry=FAST_RETRY) as client:
            requests = [wan.TextToVideo(prompt=f"p{i}") for i in range(8)]  # 200 each
            outcomes = [o async for o in client.fan_out(requests, concurrency=1)]
    assert sorted(o.index for o in outcomes) == list(range(8))
    assert sum(o.ok for o in outcomes) == 3
    errors = [o.error for o in sorted(outcomes, key=lambda o: o.index)[3:]]
    assert isinstance(errors[0], wan.InsufficientCreditsError)
    assert all(isinstance(e, wan.NotSubmittedError) for e in errors[1:])
    assert len(server.tasks) == 3


async def test_fan_out_takes_payload_dicts_and_reports_invalid_ones(
    client: wan.AsyncWanClient,
) -> None:
    outcomes = [o async for o in client.fan_out([
        {"model": "wan-2.6-text-to-video", "input": {"prompt": "p", "duration": 2,
                                                     "resolution": "720p"}},
        {"model": "wan-2.6-text-to-video", "input": {"prompt": "p", "duration": 99}},
    ], ordered=True)]
    assert outcomes[0].ok
    assert isinstance(outcomes[1].error, wan.ValidationError)


async def test_breaking_out_of_fan_out_cancels_the_rest(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    before = client_tasks()
    requests = [wan.TextToVideo(prompt="p", resolution="720p", duration=2)] + [
        wan.TextToVideo(prompt=f"p{i}", duration=15) for i in range(7)]  # 0.3 s each
    async for outcome in client.fan_out(requests, concurrency=4, ordered=True):
        first = outcome
        break  # a plain break: the iterator is finalized when the loop drops it
    assert first.index == 0 and first.ok
    await eventually(lambda: client_tasks() - before == set())
    created = len(server.tasks)
    assert created < len(requests)
    # the watches of the long tasks ended with the fan-out: no more polls, no more creates
    for task_id in server.tasks:
        await assert_no_more_polls(server, task_id)
    await client.get_credits()
    assert len(server.tasks) == created


async def test_fan_out_stops_submitting_at_the_spend_limit_and_watches_the_rest() -> None:
    async with FakeWanServer(spend_limit=48 * 5, **FAST) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=FAST_POLL, retry=FAST_RETRY) as client:
            requests = [wan.TextToVideo(prompt=f"p{i}", resolution="720p", duration=2)
                        for i in range(12)]
            outcomes = [o async for o in client.fan_out(requests, concurrency=2)]
    assert sorted(o.index for o in outcomes) == list(range(12))
    assert sum(o.ok for o in outcomes) == 5  # the tasks already running finished
    errors = [o.error for o in outcomes if not o.ok]
    assert sum(isinstance(e, wan.SpendLimitError) for e in errors) >= 1
    assert all(isinstance(e, wan.SpendLimitError | wan.NotSubmittedError) for e in errors)
    assert len(server.tasks) == 5


async def test_fan_out_under_faults_never_creates_a_task_twice() -> None:
    faults = Faults(error_rates={"internal_error": 0.1, "upstream_error": 0.05},
                    drop_before_rate=0.05, drop_after_rate=0.05, html_rate=0.05,
                    truncated_rate=0.05)
    async with FakeWanServer(faults=faults, seed=3, **FAST) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=FAST_POLL, retry=FAST_RETRY) as client:
            requests = [wan.TextToVideo(prompt=f"p{i}", resolution="720p", duration=2)
                        for i in range(60)]
            outcomes = [o async for o in client.fan_out(requests, concurrency=16)]
    assert sorted(o.index for o in outcomes) == list(range(60))
    keys = [t.idempotency_key for t in server.tasks.values()]
    assert len(keys) == len(set(keys))  # no generation was created twice
    assert len(server.tasks) <= 60
    ambiguous = [o for o in outcomes if isinstance(o.error, wan.AmbiguousSubmissionError)]
    assert sum(o.ok for o in outcomes) + len(ambiguous) >= 50
    for o in outcomes:
        assert o.ok or o.error is not None


async def test_fan_out_can_refuse_a_batch_the_balance_cannot_pay(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    server.balance = 500
    requests = [wan.TextToVideo(prompt=f"p{i}") for i in range(3)]  # 600 credits
    with pytest.raises(wan.InsufficientCreditsError, match="600"):
        async for _ in client.fan_out(requests, check_credits=True):
            pass
    assert server.tasks == {}
