"""Watching a task: the polling schedule and the events it yields.

A watch of a task this client just created starts from the create reply: its first
event (``PENDING``) costs no request. After that, polls follow what the client's
`PollPlanner` (see `_planner`) has learned of the task's shape: up to a few *scout*
watches per unknown shape poll densely to learn how long it takes; every other watch
polls once near its predicted finish, falling back to short polls if the task runs
longer. Until a shape is learned, the other watches of it send nothing: they sleep
until a scout learns it (or a scout's place frees up, and one of them takes it).
With callbacks, a watch waits for them and polls only when one is late against the
learned finish (a safety net). Completion is only ever reported
from a reply that shows it.

    create_task ──► watch ──► event (pending, from the create reply)
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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import anyio

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
from ._lifecycle import ClosedSignal, nap
from ._models import Task, TaskEvent, TaskStatus
from ._planner import WatchPlan

__all__ = ["LATE_FACTOR", "LATE_GRACE", "PRECISE", "SCOUT_GROWTH", "TRANSIENT", "PushSource",
           "watch_task"]

_log = logging.getLogger("wan26_async")

#: Failures of one poll that a watch rides out instead of raising.
TRANSIENT = (APIConnectionError, InternalServerError, UpstreamError, RateLimitError,
             MalformedResponseError)

#: A pushed watch polls when its callback is this much later than the learned finish:
#: ``LATE_FACTOR`` times the learned duration, plus ``LATE_GRACE`` seconds (or the
#: safety poll's first interval, if shorter).
LATE_FACTOR = 1.5
LATE_GRACE = 5.0

#: A scout polls every ``scout_interval`` or this share of its task's age, if longer.
SCOUT_GROWTH = 0.02
#: An observation is believed when the poll before it was this recent, as a share of
#: the task's age (or within two scout intervals).
PRECISE = 0.3

class PushSource(Protocol):
    """Where a watch takes pushed updates from (a ``CallbackReceiver``'s plumbing)."""

    safety_poll: PollPolicy

    def _pushed(self, task_id: str) -> Task | None: ...

    async def _wait_pushed(self, task_id: str, timeout: float,  # noqa: ASYNC109
                           closed: ClosedSignal | None = None) -> Task | None: ...

    def _forget(self, task_id: str) -> None: ...


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
    ``plan`` (a task this client created), the first event comes from its create reply
    (``plan.seed``) when there is one, and (with ``poll.learn``) polls follow the learned
    schedule described above. With ``push``, updates come from callbacks and polling is
    only a safety net, late against the learned finish. With ``closed``, a wait between
    polls ends at once when the client closes (its `ClientClosedError` is raised: a
    closed client never polls on).
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = None if timeout is None else started + timeout
    previous: TaskStatus | None = None
    last: Task | None = None
    polls = 0  # polls of the plain (or safety) backoff so far
    misses = 0  # polls past a predicted finish that found the task still running
    seed = None if plan is None else plan.seed
    if not poll.learn:
        plan = None
    scout = plan is not None and push is None and plan.planner.enlist(plan.shape, poll)
    last_poll = started if seed is None or plan is None else plan.created_at

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

    def learn(status: TaskStatus, seen_at: float, since: float | None) -> None:
        # An observation is precise when it was pushed (``since`` None: a callback comes
        # as the status changes) or when the poll before it was recent.
        if plan is None:
            return
        age = seen_at - plan.created_at
        if since is not None and seen_at - since > max(2 * poll.scout_interval + 0.05,
                                                       PRECISE * age):
            return  # seen long after the poll before it: it says little
        if status is TaskStatus.COMPLETED:
            plan.planner.observe(plan.shape, age)

    def planned_wait() -> float | None:
        # Seconds to the next poll by the learned schedule; None: no schedule yet.
        nonlocal misses
        if plan is None:
            return None
        if scout:  # dense at first; a long task is followed to a few percent
            age = loop.time() - plan.created_at
            return _spread(max(poll.scout_interval, SCOUT_GROWTH * age), poll.jitter)
        total = plan.planner.estimate(plan.shape)
        if total is None:
            return None
        now = loop.time()
        if push is not None:  # callbacks: poll only once the callback is late
            grace = min(LATE_GRACE, push.safety_poll.initial)
            late = plan.created_at + total * LATE_FACTOR + grace
            return late - now if now < late else None
        target = plan.created_at + total + poll.settle
        if now < target:
            return target - now + random.uniform(0.0, poll.settle)
        if last_poll < target:
            return 0.0  # the predicted finish has passed since the last poll: poll now
        misses += 1
        return min(poll.initial, poll.scout_interval * 1.5 ** min(misses - 1, 32))

    try:
        polled_before: float | None = started
        task = seed if seed is not None else await poll_once()
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
                        learn(status, loop.time() if polled_before is None else last_poll,
                              polled_before)
                    _log.debug("watch %s: %s", task_id, status.value, extra={
                        "wan_task_id": task_id, "wan_status": status.value,
                        "wan_previous": None if previous is None else previous.value})
                    yield TaskEvent(task_id=task_id, status=status, previous=previous,
                                    task=task, elapsed=loop.time() - started)
                    previous = status
                    if status.is_terminal:
                        return
            planned = planned_wait()
            policy = poll if push is None else push.safety_poll
            if planned is not None:
                wait = planned
            elif plan is not None and push is None:
                wait = poll.max_interval  # waiting for the scouts: woken when they learn
            else:
                wait = policy.interval(polls)
            left = remaining()
            if left is not None:
                wait = min(wait, max(0.0, left))
            if push is not None:
                pushed = push._pushed(task_id)
                if pushed is None or previous is None or pushed.status.rank <= previous.rank:
                    pushed = await push._wait_pushed(task_id, wait, closed)
                if pushed is not None:
                    task = pushed
                    polled_before = None  # pushed: seen as it happened
                    continue
            elif plan is not None and planned is None:
                # The shape's scouts poll for every watch of it: this one waits until
                # they have learned it (then polls on the plan), or until a scout's
                # place frees up (then it scouts), or its timeout.
                await plan.planner.wait_learned(plan.shape, wait, closed)
                if left is None or left > 0:
                    if plan.planner.estimate(plan.shape) is not None:
                        continue  # learned: wait for the predicted finish
                    scout = plan.planner.enlist(plan.shape, poll)
                    if not scout:
                        polls += 1
                        continue
            else:
                await nap(closed, wait)
            if planned is None:
                polls += 1
            polled_before = last_poll
            task = await poll_once()
    finally:
        if push is not None:
            push._forget(task_id)
        if scout and plan is not None:
            plan.planner.discharge(plan.shape)
