"""fan_out: leaving early never pays, read-ahead is bounded, inputs are taken lazily.

"No create afterwards" is shown three ways, all over real sockets: the creates the
emulator received are no more than the client had started when the fan-out was left
(a spy on ``client.create_task`` counts those); nothing of the fan-out is still
running once it is left; and after every task created has finished (when a submitter
still alive would have moved on to the next request) and a round trip of our own has
been answered, the emulator's count has not moved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

import wan26_async as wan
from wan26_async._pool import SubmitPool
from wan26_async.testing import FakeWanServer

from .conftest import FAST_POLL, FAST_RETRY, client_tasks, eventually

#: More than the poll schedule's three scouts: the other watches wait for a scout to
#: learn the task's duration, and are woken the moment the first one finishes, just as
#: the consumer gets its first outcome and leaves (the moment a cancellation was lost).
CONCURRENCY = 6


@pytest.fixture
async def server() -> Any:
    async with FakeWanServer(pending_seconds=0.01, processing_seconds=0.3,
                             time_scale=1.0) as srv:
        yield srv


@pytest.fixture
async def client(server: FakeWanServer) -> Any:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=FAST_POLL, retry=FAST_RETRY, timeout=5) as c:
        yield c


def request(i: int) -> wan.TextToVideo:
    return wan.TextToVideo(prompt=f"p{i}", resolution="720p", duration=2)


class Requests:
    """A lazy input that records how far it was consumed."""

    def __init__(self, n: int = 60) -> None:
        self.n = n
        self.taken = 0

    def __iter__(self) -> Iterator[wan.TextToVideo]:
        for i in range(self.n):
            self.taken += 1
            yield request(i)


class CreateSpy:
    """Counts the creates the client started (sent or about to be)."""

    def __init__(self, client: wan.AsyncWanClient) -> None:
        self.started = 0
        original = client.create_task

        async def create_task(*args: Any, **kwargs: Any) -> wan.Task:
            self.started += 1
            return await original(*args, **kwargs)

        client.create_task = create_task  # type: ignore[method-assign]


def creates(server: FakeWanServer) -> int:
    return sum(1 for r in server.requests if r.route == "create")


async def assert_no_create_after_leaving(
    client: wan.AsyncWanClient, server: FakeWanServer, spy: CreateSpy, started: int,
    total: int,
) -> None:
    """``started``: creates the client had started when the fan-out was left."""
    await client.get_credits()  # answered after the server has read what was sent before
    sent = creates(server)
    assert sent <= started < total
    # Once every task created has finished, a submitter still alive would send more.
    await eventually(lambda: all(t.status == "completed" for t in server.tasks.values()))
    await client.get_credits()
    assert creates(server) == sent
    assert spy.started == started


async def test_leaving_the_block_with_break_sends_no_create_afterwards(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    spy, before, requests = CreateSpy(client), client_tasks(), Requests()
    async with client.fan_out(requests, concurrency=CONCURRENCY) as outcomes:
        async for outcome in outcomes:
            first = outcome
            break
        started = spy.started
    assert client_tasks() - before == set()  # nothing is left that could submit
    assert first.ok
    await assert_no_create_after_leaving(client, server, spy, started, requests.n)


async def test_leaving_the_block_with_an_exception_sends_no_create_afterwards(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    spy, before, requests = CreateSpy(client), client_tasks(), Requests()
    with pytest.raises(KeyError):  # the caller's own error comes out as it is
        async with client.fan_out(requests, concurrency=CONCURRENCY) as outcomes:
            async for _ in outcomes:
                started = spy.started
                raise KeyError("the caller's bug")
    assert client_tasks() - before == set()
    await assert_no_create_after_leaving(client, server, spy, started, requests.n)


async def test_aclose_cancels_the_rest_instead_of_draining_it(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    spy, before, requests = CreateSpy(client), client_tasks(), Requests()
    outcomes = client.fan_out(requests, concurrency=CONCURRENCY)
    first = await outcomes.__anext__()
    started = spy.started
    await outcomes.aclose()  # returns once nothing of the fan-out runs
    assert client_tasks() - before == set()
    assert first.ok
    with pytest.raises(StopAsyncIteration):
        await outcomes.__anext__()
    await assert_no_create_after_leaving(client, server, spy, started, requests.n)


async def test_a_break_stops_submitting_when_the_iterator_is_dropped(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    spy, before, requests = CreateSpy(client), client_tasks(), Requests()
    async for outcome in client.fan_out(requests, concurrency=CONCURRENCY):
        first = outcome
        break
    started = spy.started  # the loop's iterator is gone: it was finalized
    await eventually(lambda: client_tasks() - before == set())
    assert first.ok
    await assert_no_create_after_leaving(client, server, spy, started, requests.n)


@pytest.mark.parametrize("block", [True, False], ids=["in-a-block", "plain-loop"])
async def test_cancelling_the_consuming_task_sends_no_create_afterwards(
    block: bool, client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    spy, before, requests = CreateSpy(client), client_tasks(), Requests()
    got_one = asyncio.Event()

    async def consume() -> None:
        if block:
            async with client.fan_out(requests, concurrency=CONCURRENCY) as outcomes:
                async for _ in outcomes:
                    got_one.set()
        else:
            async for _ in client.fan_out(requests, concurrency=CONCURRENCY):
                got_one.set()

    consumer = asyncio.ensure_future(consume())
    await asyncio.wait_for(got_one.wait(), 5)
    consumer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await consumer
    started = spy.started  # the consumer has taken its cancellation: the fan-out is left
    assert client_tasks() - before == set()
    await assert_no_create_after_leaving(client, server, spy, started, requests.n)


async def test_a_consumer_that_stops_reading_stops_new_submissions(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    # Kept but not read, a fan-out holds at most 2 x concurrency outcomes not yet read.
    requests = Requests()
    bound = 2 * CONCURRENCY
    async with client.fan_out(requests, concurrency=CONCURRENCY) as outcomes:
        first = await outcomes.__anext__()
        await eventually(lambda: creates(server) == 1 + bound)
        await eventually(lambda: all(t.status == "completed" for t in server.tasks.values()))
        await client.get_credits()
        assert creates(server) == 1 + bound  # everything done, nothing more started
        assert requests.taken == 1 + bound  # and the input was not read further
        # Reading one more outcome lets exactly one more request in.
        await outcomes.__anext__()
        await eventually(lambda: creates(server) == 2 + bound)
        assert requests.taken == 2 + bound
    assert first.ok


async def test_a_generator_of_a_million_requests_is_taken_as_slots_free(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    requests = Requests(1_000_000)
    seen = []
    async with client.fan_out(requests, concurrency=CONCURRENCY) as outcomes:
        async for outcome in outcomes:
            seen.append(outcome.index)
            assert outcome.request.prompt == request(outcome.index).prompt
            # never more taken than read, plus what may run or wait to be read
            assert requests.taken <= len(seen) + 2 * CONCURRENCY
            if len(seen) == 5:
                break
    assert requests.taken <= 5 + 2 * CONCURRENCY
    # index is the position in the input (checked above), one outcome per request
    assert len(set(seen)) == 5 and max(seen) < requests.taken


async def test_ordered_output_keeps_input_positions_from_a_generator(
    client: wan.AsyncWanClient,
) -> None:
    outcomes = [o async for o in client.fan_out(Requests(8), concurrency=CONCURRENCY,
                                                ordered=True)]
    assert [o.index for o in outcomes] == list(range(8))
    assert [o.request.prompt for o in outcomes] == [request(i).prompt for i in range(8)]
    assert all(o.ok for o in outcomes)


async def test_the_account_wide_stop_reports_every_later_request_once() -> None:
    async with FakeWanServer(credits=48 * 3, time_scale=0.005, pending_seconds=0.02) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=FAST_POLL, retry=FAST_RETRY) as client:
            requests = Requests(40)  # 48 credits each: three can be paid
            outcomes = [o async for o in client.fan_out(requests, concurrency=1)]
    assert sorted(o.index for o in outcomes) == list(range(40))
    assert sum(o.ok for o in outcomes) == 3 and len(server.tasks) == 3
    refused = [o for o in outcomes if isinstance(o.error, wan.InsufficientCreditsError)]
    skipped = [o for o in outcomes if isinstance(o.error, wan.NotSubmittedError)]
    assert len(refused) == 1 and len(skipped) == 36
    assert all(o.error.cause is refused[0].error for o in skipped)  # type: ignore[union-attr]


async def test_a_failing_input_ends_the_fan_out_with_its_error_after_the_started_ones(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    def broken() -> Iterator[wan.TextToVideo]:
        yield request(1)
        yield request(2)
        raise OSError("the prompts file went away")

    seen: list[wan.Outcome] = []
    with pytest.raises(OSError, match="went away"):
        async for outcome in client.fan_out(broken(), concurrency=CONCURRENCY):
            seen.append(outcome)
    assert sorted(o.index for o in seen) == [0, 1] and all(o.ok for o in seen)
    assert creates(server) == 2


async def test_check_credits_prices_a_generator_before_submitting_any(
    client: wan.AsyncWanClient, server: FakeWanServer
) -> None:
    server.balance = 48 * 4
    requests = Requests(5)  # 240 credits
    with pytest.raises(wan.InsufficientCreditsError, match="240"):
        async with client.fan_out(requests, check_credits=True) as outcomes:
            async for _ in outcomes:
                pass
    assert requests.taken == 5 and creates(server) == 0  # listed to be priced, not sent


async def test_concurrency_below_one_is_refused_when_called(
    client: wan.AsyncWanClient,
) -> None:
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        client.fan_out([request(0)], concurrency=0)


async def test_a_job_that_swallows_its_cancellation_does_not_let_the_pool_move_on() -> None:
    # The pool takes no item once it is cancelled, whatever a job does with the cancel.
    taken: list[int] = []
    swallowed = asyncio.Event()

    def items() -> Iterator[int]:
        for i in range(100):
            taken.append(i)
            yield i

    async def job(i: int) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            swallowed.set()  # and returns as if it had finished

    pool = SubmitPool(2)
    run = asyncio.ensure_future(pool.run(items(), job))
    await eventually(lambda: len(taken) == 2)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    assert swallowed.is_set() and taken == [0, 1]
