"""What a client's watches know before they poll: tasks it created, and how long each
shape of task takes.

Polling cheaply at scale rests on two observations. A task this client just created
is ``PENDING`` (the create reply said so): its watch needs no poll to say it. And tasks
of the same shape (model, resolution, duration) take about as long as each other: a
`PollPlanner` learns that time per shape from a few *scout* watches polled densely, or
from callbacks, and every other watch of the shape then polls once near its predicted
finish. `Watches` holds both for one client (its views share it).
"""

from __future__ import annotations

import asyncio
import statistics
from collections import deque
from collections.abc import Awaitable, Mapping
from typing import Any

import attrs

from ._config import PollPolicy
from ._lifecycle import ClosedSignal, Wakers, nap, wake
from ._models import Task, TaskStatus

__all__ = ["MAX_PLANS", "MAX_SEEDS", "PollPlanner", "Shape", "WatchPlan", "Watches"]

#: What tasks that take about as long share: (model, resolution, duration).
Shape = tuple[str, str, int]

#: How many recently created tasks a client remembers for its poll schedule.
MAX_PLANS = 100_000
#: How many create replies are kept for watches not yet started: the reply's ``data``
#: (the ``raw`` of the `Task` that `create_task` returned, no copy), held until its
#: first watch takes it or this many newer ones push it out.
MAX_SEEDS = MAX_PLANS


class _ShapeStats:
    __slots__ = ("active_scouts", "durations", "total", "waiting")

    def __init__(self) -> None:
        self.durations: deque[float] = deque(maxlen=16)
        self.total: float | None = None  # the median of ``durations``, once there is one
        self.active_scouts = 0
        self.waiting: Wakers = set()  # the watches waiting for it to be learned


class PollPlanner:
    """Learns how long tasks of each shape take, for one client's watches."""

    def __init__(self) -> None:
        self._shapes: dict[Shape, _ShapeStats] = {}

    def _stats(self, shape: Shape) -> _ShapeStats:
        stats = self._shapes.get(shape)
        if stats is None:
            stats = self._shapes[shape] = _ShapeStats()
        return stats

    def estimate(self, shape: Shape) -> float | None:
        """Seconds from creation to completion of tasks of ``shape``, or None while
        unknown (read on every poll: kept, not computed, here)."""
        stats = self._shapes.get(shape)
        return None if stats is None else stats.total

    def enlist(self, shape: Shape, policy: PollPolicy) -> bool:
        """Should a new watch of ``shape`` scout? (Several while unknown, one after.)"""
        stats = self._stats(shape)
        wanted = policy.scouts if not stats.durations else min(1, policy.scouts)
        if stats.active_scouts < wanted:
            stats.active_scouts += 1
            return True
        return False

    def discharge(self, shape: Shape) -> None:
        """A scout's watch ended: a watch waiting for the shape may take its place."""
        stats = self._stats(shape)
        stats.active_scouts -= 1
        if not stats.durations:  # wake the waiting watches
            wake(stats.waiting)

    def observe(self, shape: Shape, total: float) -> None:
        """Record a precise observation of a task's duration (seconds from creation) and
        wake the watches waiting for the shape."""
        stats = self._stats(shape)
        first = not stats.durations
        stats.durations.append(total)
        stats.total = statistics.median(stats.durations)
        if first:
            wake(stats.waiting)

    def wait_learned(self, shape: Shape, timeout: float,
                     closed: ClosedSignal | None = None) -> Awaitable[bool]:
        """Sleep up to ``timeout`` seconds, or until ``shape`` is first learned or one of
        its scouts ends; closing ``closed`` ends it at once (`ClientClosedError`)."""
        stats = self._stats(shape)
        return nap(closed, timeout, None if stats.durations else stats.waiting)


@attrs.frozen
class WatchPlan:
    """What a watch knows of a task this client created: its shape, its creation time
    (loop time) and, for the first watch of it, the create reply's task (``seed``)."""

    planner: PollPlanner
    shape: Shape
    created_at: float
    seed: Task | None = None


class Watches:
    """One client's record of the tasks it created, for the watches of them."""

    def __init__(self) -> None:
        self.planner = PollPlanner()
        # Plain values (a float and a shared shape tuple) for every task: keeping
        # thousands of fresh objects alive here would make the garbage collector scan
        # them. The create reply is kept only until a watch takes it, as its ``data``
        # (a dict of plain values is not scanned, a `Task` always is): the first watch
        # gets a `Task` equal to the one `create_task` returned, made from it.
        self._created_at: dict[str, float] = {}
        self._shape_of: dict[str, Shape] = {}
        self._seeds: dict[str, Mapping[str, Any]] = {}

    def created(self, task: Task, shape: Shape) -> None:
        """This client just created ``task`` (status ``PENDING``, of ``task.model``), of
        ``shape`` (whose model is the task's)."""
        task_id = task.id
        created_at, seeds = self._created_at, self._seeds
        created_at[task_id] = asyncio.get_running_loop().time()
        self._shape_of[task_id] = shape
        seeds[task_id] = task.raw
        if len(created_at) > MAX_PLANS:
            oldest = next(iter(created_at))
            del created_at[oldest], self._shape_of[oldest]
        if len(seeds) > MAX_SEEDS:
            del seeds[next(iter(seeds))]

    def plan(self, task_id: str) -> WatchPlan | None:
        """The plan of a new watch of ``task_id``; None for a task created elsewhere.
        The first watch of a task gets its create reply as the seed."""
        created = self._created_at.get(task_id)
        if created is None:
            return None
        shape = self._shape_of[task_id]
        raw = self._seeds.pop(task_id, None)
        seed = None if raw is None else Task(id=task_id, status=TaskStatus.PENDING,
                                             status_text="pending", model=shape[0], raw=raw)
        return WatchPlan(self.planner, shape, created, seed)
