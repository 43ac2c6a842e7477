"""Watching a task: the polling schedule and the events it yields."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import attrs

from ._errors import (
    APIConnectionError,
    InternalServerError,
    MalformedResponseError,
    RateLimitError,
    UpstreamError,
    WatchTimeoutError,
)
from ._models import Task, TaskEvent, TaskStatus

__all__ = ["PollPolicy", "PushSource", "watch_task"]

_log = logging.getLogger("wan26_async")

#: Failures of one poll that a watch rides out instead of raising.
TRANSIENT = (APIConnectionError, InternalServerError, UpstreamError, RateLimitError,
             MalformedResponseError)


@attrs.frozen(kw_only=True)
class PollPolicy:
    """How often a watch asks for a task's status.

    The first wait is ``initial`` seconds; each next one is ``multiplier`` times longer,
    up to ``max_interval``; each is spread by +/- ``jitter`` (a fraction) so watches
    started together do not poll together.

    >>> PollPolicy(initial=0.5, max_interval=4).interval(10, rng=random.Random(0)) <= 4.4
    True
    """

    initial: float = 1.0
    multiplier: float = 1.5
    max_interval: float = 15.0
    jitter: float = 0.1

    def interval(self, poll: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after poll number ``poll`` (0-based)."""
        base = min(self.max_interval, self.initial * self.multiplier**poll)
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


class PushSource(Protocol):
    """Where a watch takes pushed updates from (a ``CallbackReceiver``)."""

    safety_poll: PollPolicy

    def latest(self, task_id: str) -> Task | None: ...

    async def wait_for_update(self, task_id: str, timeout: float) -> Task | None: ...

    def forget(self, task_id: str) -> None: ...


async def watch_task(
    task_id: str,
    fetch: Callable[[str], Awaitable[Task]],
    *,
    poll: PollPolicy,
    timeout: float | None,
    push: PushSource | None = None,
) -> AsyncIterator[TaskEvent]:
    """Yield one `TaskEvent` per status change of ``task_id``, ending after a terminal one.

    A status never moves backwards (a stale reply is ignored), an unknown status is
    logged and polled past, and transient failures of a poll are retried here. With
    ``push``, updates come from callbacks and polling is only a slow safety net.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = None if timeout is None else started + timeout
    previous: TaskStatus | None = None
    last: Task | None = None
    polls = 0

    def remaining() -> float | None:
        return None if deadline is None else deadline - loop.time()

    async def poll_once() -> Task | None:
        left = remaining()
        if left is not None and left <= 0:
            raise WatchTimeoutError(task_id, timeout or 0.0, last)
        try:
            return await asyncio.wait_for(fetch(task_id), left)
        except asyncio.TimeoutError:
            if deadline is not None and loop.time() >= deadline:
                raise WatchTimeoutError(task_id, timeout or 0.0, last) from None
        except TRANSIENT as exc:
            _log.debug("watch %s: poll failed (%s), will poll again", task_id, exc)
        return None

    try:
        task = await poll_once()
        while True:
            if task is not None:
                last = task
                status = task.status
                if status is TaskStatus.UNKNOWN:
                    _log.warning("watch %s: unknown status %r, still polling", task_id,
                                 task.status_text)
                elif previous is None or status.rank > previous.rank:
                    yield TaskEvent(task_id=task_id, status=status, previous=previous,
                                    task=task, elapsed=loop.time() - started)
                    previous = status
                    if status.is_terminal:
                        return
            policy = poll if push is None else push.safety_poll
            wait = policy.interval(polls)
            left = remaining()
            if left is not None:
                wait = min(wait, max(0.0, left))
            if push is not None:
                pushed = push.latest(task_id)
                if pushed is None or previous is None or pushed.status.rank <= previous.rank:
                    pushed = await push.wait_for_update(task_id, wait)
                if pushed is not None:
                    task = pushed
                    continue
            else:
                await asyncio.sleep(wait)
            polls += 1
            task = await poll_once()
    finally:
        if push is not None:
            push.forget(task_id)
