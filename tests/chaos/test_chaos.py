"""Chaos: many generations through the emulator with every fault on at once.

Every fault the emulator has is switched on together (random 500/503, 429 from the
error table and from a token bucket, dropped connections before and after the server
made the task, replies slower than the client's timeout, HTML pages, empty and cut-off
bodies, unknown statuses, callbacks lost, duplicated and reordered), and on top of them
a "storm" coroutine injects bursts of 503, 500, HTML 502 and 429 into every route.
Then the run is audited:

(a) every request has exactly one outcome;
(b) no generation was made twice: each server task has its own Idempotency-Key, and
    every server task belongs to exactly one request (its outcome's task, or the key of
    its ambiguous-create error);
(c) every watch's events are valid: statuses from the four, first ``previous`` None,
    never backwards, exactly one terminal event, and it is the last;
(d) closing the client leaves no task of its own running, its session and connector
    closed, and no unclosed-resource warning;
(e) the credits reconcile: initial - balance == the price of the server's completed
    tasks (failed ones refunded), and every completed task is an ok outcome or the
    task of an ambiguous create.

The default run is small (a few seconds). ``WAN_CHAOS_FULL=1`` (``nox -s chaos``) runs
500 generations per variant. ``WAN_CHAOS_SEED=n`` picks the seed (printed in the output
and in every assertion message) so a failure can be replayed: the emulator's fault
draws, task failures and the request mix all come from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import random
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import attrs
import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Fault, Faults, TokenBucket

from ..conftest import client_tasks

DEFAULT_SEED = 20260226
SEED = int(os.environ.get("WAN_CHAOS_SEED") or DEFAULT_SEED)
FULL = os.environ.get("WAN_CHAOS_FULL", "") not in ("", "0")
N = 500 if FULL else 60
CONCURRENCY = 100 if FULL else 30

CLIENT_TIMEOUT = 0.5  # seconds per HTTP call
SLOW_SECONDS = 0.8  # a "slow" reply comes after the client gave up on it
INITIAL_CREDITS = 10_000_000
# The emulator's token bucket, which the client's default limiter learns under all
# the other 429 noise.
RATE, BURST = 300, 30
S = wan.TaskStatus
STATUSES = frozenset({S.PENDING, S.PROCESSING, S.COMPLETED, S.FAILED})
IMG = "https://example.com/first-frame.png"
VID = "https://example.com/reference.mp4"
AUD = "https://example.com/voice.mp3"

POLL = wan.PollPolicy(initial=0.01, multiplier=1.5, max_interval=0.05, jitter=0.1,
                      scout_interval=0.01, settle=0.005)
# Pushed watches still poll, as a safety net for lost callbacks: fast here.
SAFETY_POLL = wan.PollPolicy(initial=0.05, multiplier=1.5, max_interval=0.2, jitter=0.1,
                             learn=False)
# Enough retries that a resent create practically always gets through the faults
# (a fault hits about 1 request in 4: 11 in a row is ~1e-7).
RETRY = wan.RetryPolicy(max_retries=10, initial_backoff=0.01, max_backoff=0.05)


def chaos_faults() -> Faults:
    """Every random fault of the emulator at once (about 1 request in 4 is hit)."""
    return Faults(
        error_rates={"internal_error": 0.03, "upstream_error": 0.03,
                     "rate_limit_exceeded": 0.002},
        drop_before_rate=0.02,
        drop_after_rate=0.02,
        slow_rate=0.015,
        slow_seconds=SLOW_SECONDS,
        html_rate=0.02,
        empty_rate=0.01,
        truncated_rate=0.02,
        unknown_status_rate=0.03,
        callback_loss_rate=0.2,
        callback_duplicate_rate=0.3,
        callback_delay=0.05,
    )


ALL_FAULT_KINDS = frozenset({"500", "503", "429", "drop_before", "drop_after", "delay", "html",
                             "empty", "truncated", "unknown_status"})

# Bursts injected into every route by the storm coroutine.
STORMS = (
    Fault.error(503, "upstream_error"),
    Fault.error(500, "internal_error"),
    Fault.html(502),
    Fault.error(429, "rate_limit_exceeded", retry_after="0.2"),
)


def make_requests(rng: random.Random, n: int) -> list[wan.VideoRequest]:
    """A seeded mix of the three models, both resolutions, several durations; one in
    ten carries the emulator's ``[fail]`` marker (a content refusal)."""
    requests: list[wan.VideoRequest] = []
    for i in range(n):
        prompt = f"chaos {i}" + (" [fail]" if rng.random() < 0.1 else "")
        resolution = rng.choice(["720p", "1080p", None])
        duration = rng.choice([2, 3, 4, None])
        kind = rng.randrange(3)
        request: wan.VideoRequest
        if kind == 0:
            request = wan.TextToVideo(prompt=prompt, resolution=resolution, duration=duration,
                                      audio_urls=[AUD] if rng.random() < 0.2 else None)
        elif kind == 1:
            request = wan.ImageToVideo(prompt=prompt, image_urls=[IMG], resolution=resolution,
                                       duration=duration)
        else:
            request = wan.ReferenceToVideo(prompt=prompt, image_urls=[IMG], video_urls=[VID],
                                           resolution=resolution, duration=duration)
        requests.append(request)
    return requests


@attrs.define
class Run:
    """What one chaos run left behind, for the audits."""

    variant: str
    server: FakeWanServer
    outcomes: list[wan.Outcome]
    watches: dict[str, list[list[wan.TaskEvent]]]
    stray_tasks: list[str]
    session_closed: bool
    connector_closed: bool
    transport_session_dropped: bool
    resource_warnings: list[str]
    receiver: wan.CallbackReceiver | None = attrs.field(repr=False)
    elapsed: float
    fault_kinds: Counter[str]


def record_watches(client: wan.AsyncWanClient) -> dict[str, list[list[wan.TaskEvent]]]:
    """Wrap ``client.watch`` so every watch's events are kept (``fan_out`` waits through
    ``client.wait``, which watches through ``client.watch``)."""
    watches: dict[str, list[list[wan.TaskEvent]]] = {}
    original = client.watch

    def watch(task_id: str, **kw: Any) -> AsyncIterator[wan.TaskEvent]:
        seen: list[wan.TaskEvent] = []
        watches.setdefault(task_id, []).append(seen)

        async def recorded() -> AsyncIterator[wan.TaskEvent]:
            async for event in original(task_id, **kw):
                seen.append(event)
                yield event

        return recorded()

    client.watch = watch  # type: ignore[method-assign]
    return watches


async def drive_with_watches(
    client: wan.AsyncWanClient, requests: list[wan.VideoRequest], concurrency: int,
    done: Callable[[], None],
) -> list[wan.Outcome]:
    """The caller's own loop: create_task, then client.watch to the end, per request."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, request: wan.VideoRequest) -> wan.Outcome:
        try:
            return await run_one(index, request)
        finally:
            done()

    async def run_one(index: int, request: wan.VideoRequest) -> wan.Outcome:
        async with gate:
            try:
                task = await client.create_task(request)
                last: wan.Task | None = None
                async for event in client.watch(task.id):
                    last = event.task
                if last is None:
                    raise AssertionError(f"the watch of {task.id} yielded nothing")
                if last.status is S.FAILED:
                    return wan.Outcome(index=index, request=request, task=last,
                                       error=wan.TaskFailedError(last))
                return wan.Outcome(index=index, request=request, task=last)
            except Exception as exc:  # audited below: only expected errors may appear
                return wan.Outcome(index=index, request=request, error=exc)

    return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))


async def storms(server: FakeWanServer, rng: random.Random, calm: asyncio.Event) -> None:
    """Every 0.1-0.4 s, a burst of 5-25 identical faults for whatever requests come next
    (an unused burst is dropped for the next one), until the run is nearly done."""
    while not calm.is_set():
        await asyncio.sleep(rng.uniform(0.1, 0.4))
        server.clear_faults()
        server.inject("*", rng.choice(STORMS), times=rng.randint(5, 25))
    server.clear_faults()


def count_faults(server: FakeWanServer) -> Counter[str]:
    """Count the faults the emulator applies, by route and kind (e.g. ``create:drop_after``),
    so a run can prove each one really happened."""
    kinds: Counter[str] = Counter()
    picker = server._fault_picker
    pick = picker.pick

    def counting_pick(route: str, faults: Faults, rng: random.Random) -> Fault | None:
        fault = pick(route, faults, rng)
        if fault is not None:
            kind = fault.kind if fault.kind != "error" else f"{fault.status}"
            kinds[f"{route}:{kind}"] += 1
        return fault

    picker.pick = counting_pick  # type: ignore[method-assign]
    return kinds


def _emulator_task(task: asyncio.Task[Any]) -> bool:
    # The emulator's callback deliveries run on this loop too; they are not the client's.
    return "CallbackSender" in task.get_coro().__qualname__  # type: ignore[union-attr]


@contextlib.contextmanager
def catching_leaks() -> Iterator[list[str]]:
    """Collect, while the block runs, unclosed-resource warnings and what the loop's
    exception handler is told ("Unclosed client session", "Task was destroyed but it is
    pending!", "Task exception was never retrieved"). Read the list after the block."""
    loop = asyncio.get_running_loop()
    leaks: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: leaks.append(str(context.get("message"))))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield leaks
            gc.collect()
    finally:
        loop.set_exception_handler(previous)
    leaks += [str(w.message) for w in caught
              if issubclass(w.category, ResourceWarning) or "Unclosed" in str(w.message)]


async def run_chaos(variant: str, seed: int, n: int) -> Run:
    """Fan ``n`` seeded requests out through an emulator with every fault on; stop the
    client, then the emulator, and return everything the audit needs."""
    requests = make_requests(random.Random(seed), n)
    before = client_tasks()
    started = time.monotonic()
    with catching_leaks() as leaks:
        async with contextlib.AsyncExitStack() as stack:
            server = await stack.enter_async_context(FakeWanServer(
                seed=seed, faults=chaos_faults(), failure_rate=0.05,
                rate_limit=TokenBucket(rate=RATE, burst=BURST), credits=INITIAL_CREDITS,
                time_scale=0.01, pending_seconds=2.0,
            ))
            kinds = count_faults(server)
            receiver = None
            if variant == "callbacks":
                receiver = await stack.enter_async_context(
                    wan.CallbackReceiver(safety_poll=SAFETY_POLL))
            limiter = wan.InProcessRateLimiter()  # learns the limit under fire
            stack.push_async_callback(limiter.aclose)
            client = wan.AsyncWanClient(
                api_key=server.api_key, base_url=server.base_url, timeout=CLIENT_TIMEOUT,
                poll=POLL, retry=RETRY, callbacks=receiver, rate_limiter=limiter,
                resend_ambiguous_creates=variant == "resend",
            )
            watches = record_watches(client)
            calm = asyncio.Event()
            finished = 0

            def done() -> None:  # storms end when 90 % of the requests have an outcome
                nonlocal finished
                finished += 1
                if finished >= 0.9 * n:
                    calm.set()

            storm = asyncio.ensure_future(storms(server, random.Random(seed + 1), calm))
            try:
                if variant == "callbacks":
                    outcomes = await drive_with_watches(client, requests, CONCURRENCY, done)
                else:
                    outcomes = []
                    async for outcome in client.fan_out(requests, concurrency=CONCURRENCY):
                        outcomes.append(outcome)
                        done()
            finally:
                storm.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await storm
                session = client._transport._session
                connector = session.connector if session is not None else None
                await client.aclose()
            # (d) right after aclose, with the emulator (same loop) still running
            stray = [repr(t) for t in client_tasks() - before
                     if t is not asyncio.current_task() and not _emulator_task(t)]
            session_closed = session is not None and session.closed
            connector_closed = connector is not None and connector.closed
            dropped = client._transport._session is None
            del client, session, connector
        # The emulator is stopped: no late (slow) create can add a task any more. Let the
        # tasks it made run out their clock, so every one is completed or failed.
        last_done = max((t.done_at for t in server.tasks.values()), default=0.0)
        await asyncio.sleep(max(0.0, last_done - time.monotonic()) + 0.01)
    return Run(variant=variant, server=server, outcomes=outcomes, watches=watches,
               stray_tasks=stray, session_closed=session_closed,
               connector_closed=connector_closed, transport_session_dropped=dropped,
               resource_warnings=leaks, receiver=receiver,
               elapsed=time.monotonic() - started, fault_kinds=kinds)


def check_events(events: list[wan.TaskEvent], where: str) -> None:
    """(c) one watch's events: valid statuses, never backwards, one terminal, last."""
    assert events, f"{where}: no events"
    assert events[0].previous is None, f"{where}: first event has a previous"
    previous: wan.TaskStatus | None = None
    for event in events:
        assert event.status in STATUSES, f"{where}: status {event.status!r} not of the four"
        assert event.previous is previous, f"{where}: previous {event.previous} != {previous}"
        if previous is not None:
            assert event.status.rank > previous.rank, f"{where}: {previous} -> {event.status}"
        assert event.task.status is event.status, f"{where}: event and task disagree"
        previous = event.status
    terminal = [e for e in events if e.status.is_terminal]
    assert len(terminal) == 1 and terminal[0] is events[-1], f"{where}: terminal events"


def audit(run: Run, n: int, seed: int) -> dict[str, int]:
    """Assert (a)-(e) on a run; return a summary of what happened."""
    ctx = f"[WAN_CHAOS_SEED={seed} variant={run.variant} n={n}]"
    server, outcomes = run.server, run.outcomes
    now = time.monotonic()
    status = {tid: t.status_at(now) for tid, t in server.tasks.items()}

    # (a) exactly one outcome per request, each either ok or with an error.
    assert sorted(o.index for o in outcomes) == list(range(n)), f"{ctx} outcomes by index"
    for o in outcomes:
        assert o.ok != (o.error is not None), f"{ctx} outcome {o.index}: {o!r}"
    allowed: tuple[type[BaseException], ...] = (wan.TaskFailedError,)
    if run.variant != "resend":
        allowed += (wan.AmbiguousSubmissionError,)
    unexpected = [(o.index, repr(o.error)) for o in outcomes
                  if o.error is not None and not isinstance(o.error, allowed)]
    assert not unexpected, f"{ctx} unexpected outcome errors: {unexpected[:10]}"

    # (b) no generation twice: one key per server task, each task owned by one request.
    keys = [t.idempotency_key for t in server.tasks.values()]
    assert None not in keys, f"{ctx} a create without Idempotency-Key"
    dupes = [k for k, c in Counter(keys).items() if c > 1]
    assert not dupes, f"{ctx} generations created twice: {dupes}"
    assert len(server.tasks) <= n, f"{ctx} {len(server.tasks)} server tasks for {n} requests"
    with_task = [o for o in outcomes if o.task is not None]
    task_ids = [o.task.id for o in with_task]  # type: ignore[union-attr]
    assert len(set(task_ids)) == len(task_ids), f"{ctx} two requests share a task"
    assert set(task_ids) <= set(server.tasks), f"{ctx} an outcome's task is not on the server"
    ambiguous = {o.error.idempotency_key: o for o in outcomes  # type: ignore[union-attr]
                 if isinstance(o.error, wan.AmbiguousSubmissionError)}
    orphans = [t for t in server.tasks.values() if t.id not in set(task_ids)]
    for t in orphans:  # made, but its create's reply was lost: the caller holds its key
        assert t.idempotency_key in ambiguous, f"{ctx} server task {t.id} belongs to no one"
    for o in with_task:  # the SDK's price estimate is what the server charged
        assert o.task is not None and isinstance(o.request, wan.VideoRequest)
        price = server.tasks[o.task.id].price
        assert o.request.estimated_credits == price, f"{ctx} price of {o.index}"
    if run.variant == "resend":
        assert not ambiguous and len(server.tasks) == n, f"{ctx} resend: one task each"

    # (c) the events of every task seen to its end.
    for o in with_task:
        assert o.task is not None
        where = f"{ctx} task {o.task.id} (request {o.index})"
        seen = run.watches.get(o.task.id, [])
        assert len(seen) == 1, f"{where}: watched {len(seen)} times"
        check_events(seen[0], where)
        final = seen[0][-1].status
        if o.ok:
            assert final is S.COMPLETED and o.task.video_url, where
        else:
            assert isinstance(o.error, wan.TaskFailedError) and final is S.FAILED, where
        assert status[o.task.id] == final.value, f"{where}: server says {status[o.task.id]}"
    for tid, seen in run.watches.items():
        for events in seen:
            check_events(events, f"{ctx} task {tid}")

    # (d) clean shutdown.
    assert not run.stray_tasks, f"{ctx} tasks left running: {run.stray_tasks[:5]}"
    assert run.session_closed and run.connector_closed, f"{ctx} session/connector open"
    assert run.transport_session_dropped, f"{ctx} the transport still holds its session"
    assert not run.resource_warnings, f"{ctx} {run.resource_warnings[:5]}"

    # (e) credits: only completed tasks are paid for, failed ones were refunded.
    assert all(s in ("completed", "failed") for s in status.values()), f"{ctx} unfinished"
    completed = {tid for tid, s in status.items() if s == "completed"}
    charged = INITIAL_CREDITS - server.balance
    expected = sum(server.tasks[tid].price for tid in completed)
    assert charged == expected, f"{ctx} charged {charged}, completed tasks cost {expected}"
    ok_ids = {o.task.id for o in outcomes if o.ok}  # type: ignore[union-attr]
    orphan_ids = {t.id for t in orphans}
    assert ok_ids <= completed, f"{ctx} an ok outcome the server did not complete"
    assert completed == ok_ids | (orphan_ids & completed), f"{ctx} completed != ok + orphans"

    # The faults really happened (all of them in the full run).
    stats = server.stats
    assert stats.faults_injected > 0 and stats.creates_accepted == len(server.tasks), ctx
    kinds = {key.split(":")[1] for key in run.fault_kinds}
    if FULL:
        missing = ALL_FAULT_KINDS - kinds
        assert not missing, f"{ctx} faults that never happened: {missing}"
        made_then_lost = ("create:drop_after", "create:delay", "create:truncated")
        assert any(run.fault_kinds[key] for key in made_then_lost), f"{ctx} {run.fault_kinds}"
        assert stats.rate_limited > 0, f"{ctx} the token bucket never refused"
    if run.variant == "callbacks":
        assert run.receiver is not None and run.receiver.received > 0, ctx
        if FULL:
            assert stats.callbacks_lost > 0, ctx
            assert any(c.duplicate and c.status == 200 for c in server.callbacks), ctx
    return {
        "ok": len(ok_ids),
        "failed": sum(isinstance(o.error, wan.TaskFailedError) for o in outcomes),
        "ambiguous": len(ambiguous),
        "ambiguous_made": len(orphans),
        "server_tasks": len(server.tasks),
        "requests": stats.requests,
        "faults": stats.faults_injected,
        "rate_limited": stats.rate_limited,
        "replayed": stats.creates_replayed,
        "callbacks_lost": stats.callbacks_lost,
        "fault_kinds": len(kinds),
    }


@pytest.fixture(autouse=True)
def _announce_seed(capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n[chaos] WAN_CHAOS_SEED={SEED} WAN_CHAOS_FULL={int(FULL)} n={N}")


@pytest.mark.chaos
@pytest.mark.parametrize("variant", ["polling", "callbacks", "resend"])
async def test_every_fault_at_once_keeps_every_guarantee(variant: str) -> None:
    """polling: fan_out, pure polling. callbacks: create_task + client.watch per request,
    pushed by a CallbackReceiver (callbacks lost, duplicated, reordered). resend: fan_out
    with resend_ambiguous_creates=True: no ambiguous outcome, still no duplicate."""
    run = await run_chaos(variant, SEED, N)
    summary = audit(run, N, SEED)
    print(f"[chaos] {variant}: {run.elapsed:.1f} s {summary}")
