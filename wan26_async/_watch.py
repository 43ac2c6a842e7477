"""Watching a task: the polling schedule and the events it yields.

Polling cheaply at scale rests on one observation: tasks of the same shape (model,
resolution, duration) take about as long as each other. A client's `PollPlanner`
learns that time per shape from a few *scout* watches polled densely, and every other
watch of the shape then polls once near its predicted finish, falling back to short
polls if the task runs longer. Until a shape is learned, non-scouts back off
exponentially and are woken the moment a scout learns. Completion is only ever
reported from a reply that shows it.

    create_task ──► watch ──► poll now ──► event (pending)
                        │
        shape unknown ──┼── scout: poll every scout_interval ──► learns the duration
                        │                                             │ wakes the others
        shape known  ───┴── sleep until created + learned + settle ◄──┘
                                  │
                                  ▼
                           poll ──► completed? ─ no ─► short polls (fallback)
"""

from __future__ import annotations

import asyncio
import logging
import random
import statistics
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractContextManager
from functools import partial
from typing import Protocol, TypeVar

import anyio
import attrs

from ._config import PollPolicy
from ._config import spread as _spread
from ._errors import (
    APIConnectionError,
    InternalServerError,
    MalformedResponseError,
    RateLimitError,
    UpstreamError,
    WatchTimeoutError,
)
from ._models import Task, TaskEvent, TaskStatus

__all__ = ["ClosedSignal", "PollPlanner", "PollPolicy", "PushSource", "Shape", "TRANSIENT",
           "WatchPlan", "watch_task"]

_log = logging.getLogger("wan26_async")

#: Failures of one poll that a watch rides out instead of raising.
TRANSIENT = (APIConnectionError, InternalServerError, UpstreamError, RateLimitError,
             MalformedResponseError)

#: What tasks that take about as long share: (model, resolution, duration).
Shape = tuple[str, str, int]
T = TypeVar("T")


class _ShapeStats:
    __slots__ = ("active_scouts", "durations", "learned", "pendings")

    def __init__(self) -> None:
        self.durations: deque[float] = deque(maxlen=16)
        self.pendings: deque[float] = deque(maxlen=16)
        self.active_scouts = 0
        self.learned = asyncio.Event()


class PollPlanner:
    """Learns how long tasks of each shape take, for one client's watches."""

    def __init__(self) -> None:
        self._shapes: dict[Shape, _ShapeStats] = {}

    def _stats(self, shape: Shape) -> _ShapeStats:
        stats = self._shapes.get(shape)
        if stats is None:
            stats = self._shapes[shape] = _ShapeStats()
        return stats

    def estimate(self, shape: Shape) -> tuple[float, float] | None:
        """(pending seconds, total seconds) from creation, or None while unknown."""
        stats = self._shapes.get(shape)
        if stats is None or not stats.durations:
            return None
        pending = statistics.median(stats.pendings) if stats.pendings else 0.0
        return pending, statistics.median(stats.durations)

    def enlist(self, shape: Shape, policy: PollPolicy) -> bool:
        """Should a new watch of ``shape`` scout? (Several while unknown, one after.)"""
        stats = self._stats(shape)
        wanted = policy.scouts if not stats.durations else min(1, policy.scouts)
        if stats.active_scouts < wanted:
            stats.active_scouts += 1
            return True
        return False

    def discharge(self, shape: Shape) -> None:
        """A scout's watch ended."""
        self._stats(shape).active_scouts -= 1

    def observe(self, shape: Shape, *, pending: float | None, total: float | None) -> None:
        """Record precise observations (seconds from creation) and wake waiting watches."""
        stats = self._stats(shape)
        if pending is not None:
            stats.pendings.append(pending)
        if total is not None:
            first = not stats.durations
            stats.durations.append(total)
            if first:
                stats.learned.set()

    async def wait_learned(self, shape: Shape, timeout: float) -> None:  # noqa: ASYNC109 - a wait
        """Sleep up to ``timeout`` seconds, or until ``shape`` is first learned."""
        stats = self._stats(shape)
        if stats.durations or timeout <= 0:
            await asyncio.sleep(max(0.0, timeout))
            return
        # A scope, not asyncio.wait_for: no inner task, and (Python 3.11) a cancellation
        # arriving as the event is set is never swallowed.
        with anyio.move_on_after(timeout):
            await stats.learned.wait()


@attrs.frozen
class WatchPlan:
    """What a watch knows of a task this client created: its shape and creation time."""

    planner: PollPlanner
    shape: Shape
    created_at: float  # loop time


class PushSource(Protocol):
    """Where a watch takes pushed updates from (a ``CallbackReceiver``)."""

    safety_poll: PollPolicy

    def latest(self, task_id: str) -> Task | None: ...

    async def wait_for_update(self, task_id: str, timeout: float) -> Task | None: ...  # noqa: ASYNC109

    def forget(self, task_id: str) -> None: ...


class ClosedSignal(Protocol):
    """A client's closed state (see `_lifecycle.Lifecycle`)."""

    def interruptible(self) -> AbstractContextManager[None]:
        """A scope that ends a wait at once, raising `ClientClosedError`, on closing."""
        ...


async def _unless_closed(closed: ClosedSignal | None, wait: Callable[[], Awaitable[T]]) -> T:
    # A watch sleeping between polls wakes when its client closes and raises at once,
    # instead of sleeping out the interval and then failing (or, worse, polling on).
    if closed is None:
        return await wait()
    with closed.interruptible():
        return await wait()
    raise AssertionError("unreachable: interruptible() raises when it ends a wait")


async def watch_task(
    task_id: str,
    fetch: Callable[[str], Awaitable[Task]],
    *,
    poll: PollPolicy,
    timeout: float | None,  # noqa: ASYNC109 - the public watch(timeout=...)
    push: PushSource | None = None,
    plan: WatchPlan | None = None,
    closed: ClosedSignal | None = None,
) -> AsyncIterator[TaskEvent]:
    """Yield one `TaskEvent` per status change of ``task_id``, ending after a terminal one.

    A status never moves backwards (a stale reply is ignored), an unknown status is
    logged and polled past, and transient failures of a poll are retried here. With
    ``push``, updates come from callbacks and polling is only a slow safety net; with
    ``plan`` (and ``poll.learn``), polls follow the learned schedule described above.
    With ``closed``, a wait between polls ends at once when the client closes (its
    `ClientClosedError` is raised: a closed client never polls on).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = None if timeout is None else started + timeout
    previous: TaskStatus | None = None
    last: Task | None = None
    polls = 0  # polls of the plain backoff so far
    misses = 0  # polls past a predicted finish that found the task still running
    if not poll.learn or push is not None:
        plan = None
    scout = plan is not None and plan.planner.enlist(plan.shape, poll)
    last_poll = started

    def remaining() -> float | None:
        return None if deadline is None else deadline - loop.time()

    async def poll_once() -> Task | None:
        nonlocal last_poll
        left = remaining()
        if left is not None and left <= 0:
            raise WatchTimeoutError(task_id, timeout or 0.0, last)
        try:
            if left is None:
                return await fetch(task_id)
            with anyio.move_on_after(left):  # a scope: no inner task, no lost cancel
                return await fetch(task_id)
            if deadline is not None and loop.time() >= deadline:
                raise WatchTimeoutError(task_id, timeout or 0.0, last) from None
        except TRANSIENT as exc:
            _log.debug("watch %s: poll failed (%s), will poll again", task_id, exc,
                       extra={"wan_task_id": task_id, "wan_error": type(exc).__name__,
                              "wan_status": None if last is None else last.status_text})
        finally:
            last_poll = loop.time()
        return None

    def learn(status: TaskStatus, polled_before: float) -> None:
        # An observation is precise when the poll before it was recent.
        if plan is None or last_poll - polled_before > 2 * poll.scout_interval + 0.05:
            return
        age = last_poll - plan.created_at
        if status is TaskStatus.PROCESSING and previous is TaskStatus.PENDING:
            plan.planner.observe(plan.shape, pending=age, total=None)
        elif status is TaskStatus.COMPLETED:
            plan.planner.observe(plan.shape, pending=None, total=age)

    def planned_wait(status: TaskStatus | None) -> float | None:
        nonlocal misses
        if plan is None:
            return None
        if scout:
            return _spread(poll.scout_interval, poll.jitter)
        estimate = plan.planner.estimate(plan.shape)
        if estimate is None:
            return None
        pending, total = estimate
        now = loop.time()
        target = plan.created_at + total + poll.settle
        if status is TaskStatus.PENDING and now < plan.created_at + pending:
            target = plan.created_at + pending + poll.settle
        if now < target:
            return target - now + random.uniform(0.0, poll.settle)
        misses += 1
        return min(poll.initial, poll.scout_interval * 1.5 ** min(misses - 1, 32))

    try:
        polled_before = started
        task = await poll_once()
        while True:
            if task is not None:
                last = task
                status = task.status
                if status is TaskStatus.UNKNOWN:
                    _log.warning("watch %s: unknown status %r, still polling", task_id,
                                 task.status_text,
                                 extra={"wan_task_id": task_id, "wan_status": task.status_text})
                elif previous is None or status.rank > previous.rank:
                    if previous is not None:
                        learn(status, polled_before)
                    _log.debug("watch %s: %s", task_id, status.value, extra={
                        "wan_task_id": task_id, "wan_status": status.value,
                        "wan_previous": None if previous is None else previous.value})
                    yield TaskEvent(task_id=task_id, status=status, previous=previous,
                                    task=task, elapsed=loop.time() - started)
                    previous = status
                    if status.is_terminal:
                        return
            planned = planned_wait(previous)
            policy = poll if push is None else push.safety_poll
            wait = policy.interval(polls) if planned is None else planned
            left = remaining()
            if left is not None:
                wait = min(wait, max(0.0, left))
            if push is not None:
                pushed = push.latest(task_id)
                if pushed is None or previous is None or pushed.status.rank <= previous.rank:
                    pushed = await _unless_closed(
                        closed, partial(push.wait_for_update, task_id, wait))
                if pushed is not None:
                    task = pushed
                    continue
            elif plan is not None and planned is None:
                await _unless_closed(closed, partial(plan.planner.wait_learned, plan.shape,
                                                     wait))
            else:
                await _unless_closed(closed, partial(asyncio.sleep, wait))
            if planned is None:
                polls += 1
            polled_before = last_poll
            task = await poll_once()
    finally:
        if push is not None:
            push.forget(task_id)
        if scout and plan is not None:
            plan.planner.discharge(plan.shape)
