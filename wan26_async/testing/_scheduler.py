"""One timer for every future event of the emulator (no coroutine per task)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections.abc import Callable

__all__ = ["Scheduler"]

_log = logging.getLogger("wan26_async.testing")

# Timers may fire a hair early; events due within this slack run in that turn.
_SLACK = 0.001


class Scheduler:
    """Runs callables at monotonic times, from a heap drained by a single loop timer.

    Must be used from the event loop's thread.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_due = float("inf")

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def call_at(self, due: float, callback: Callable[[], None]) -> None:
        """Run `callback` at monotonic time `due` (or soon after)."""
        heapq.heappush(self._heap, (due, next(self._seq), callback))
        if due < self._timer_due:
            self._arm()

    def close(self) -> None:
        """Forget every pending event."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._timer_due = float("inf")
        self._heap.clear()
        self._loop = None

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_due = float("inf")
        if not self._heap or self._loop is None:
            return
        due = self._heap[0][0]
        self._timer_due = due
        self._timer = self._loop.call_later(max(0.0, due - time.monotonic()), self._run)

    def _run(self) -> None:
        self._timer = None
        now = time.monotonic() + _SLACK
        while self._heap and self._heap[0][0] <= now:
            _, _, callback = heapq.heappop(self._heap)
            try:
                callback()
            except Exception:  # one broken event must not stop the others
                _log.exception("FakeWanServer: scheduled event failed")
        self._arm()
