"""When Redis cannot be reached: each process limits alone, then goes back to Redis.

The fallback only ever decides *when* a request leaves, so no request is lost or sent
twice because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._ratelimit._learner import Learner, LimitState
from .._ratelimit._memory import InProcessRateLimiter
from ._state import encode_state

__all__ = ["DOWN", "Fallback"]

_log = logging.getLogger("wan26_async")

try:
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wan26_async.redis needs the redis package: pip install 'wan26-async[redis]'"
    ) from exc

#: Failures of Redis that switch a limiter to its in-process fallback.
DOWN = (RedisError, OSError, asyncio.TimeoutError)


class Fallback:
    """The fallback half of `RedisRateLimiter` (a mixin: the attributes are its)."""

    learner: Learner
    state: LimitState
    degraded: bool
    outages: int
    round_trips: int
    _where: str
    _closed: bool
    _op_timeout: float
    _reconnect_interval: float
    _next_ask: float
    _waiters: deque[asyncio.Future[bool]]
    _queued: int
    _events: list[float]
    _fallback: InProcessRateLimiter | None
    _fallback_in_flight: int
    _fallback_used: bool
    _reconnect_task: asyncio.Task[None] | None
    _back: asyncio.Future[None] | None

    if TYPE_CHECKING:  # the pump's
        def _drop_slots(self) -> None: ...

        def _kick(self) -> None: ...

        async def _seed(self, mode: str, fields: Sequence[str]) -> None: ...

        async def _ping(self) -> None: ...

    async def _acquire_fallback(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Wait on the in-process limiter, or until Redis answers again (False): a waiter
        must not stay with it then, or two pacers would send at once."""
        fallback = self._get_fallback()
        self._fallback_used = True
        if fallback.try_acquire():
            self._fallback_in_flight += 1
            return True
        back = self._back
        if back is None or back.done():
            back = self._back = loop.create_future()
        waiter = asyncio.ensure_future(fallback.acquire())
        try:
            await asyncio.wait([waiter, back], return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
            if not waiter.cancelled() and waiter.exception() is None:
                fallback.release()  # granted as we were cancelled: give it back
            raise
        if not waiter.done():
            waiter.cancel()  # the in-process limiter gives back a slot granted meanwhile
            with contextlib.suppress(asyncio.CancelledError):
                await waiter
        if waiter.cancelled():
            if not self.degraded or back.done():
                return False
            raise asyncio.CancelledError  # the in-process limiter was closed
        waiter.result()
        self._fallback_in_flight += 1
        return True

    def _get_fallback(self) -> InProcessRateLimiter:
        if self._fallback is None:
            state = self.state
            if state.phase == "steady" and state.rate > 0:
                # no burst: the shared pace had the server's bucket about empty
                self._fallback = InProcessRateLimiter(state.rate, burst=1,
                                                      learner=self.learner)
            else:
                self._fallback = InProcessRateLimiter(learner=self.learner)
        return self._fallback

    def _degrade(self, exc: BaseException) -> None:
        """Redis failed: every waiter goes to the in-process limiter until it is back."""
        if self.degraded:
            return
        self.degraded = True
        self.outages += 1
        _log.warning("Redis at %s is unreachable (%s): limiting in this process only until "
                     "it answers again", self._where, exc.__class__.__name__ + (
                         f": {exc}" if str(exc) else ""))
        self._get_fallback()
        self._drop_slots()
        self._events.clear()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                self._queued -= 1
                fut.set_result(False)  # the waiter asks the fallback
        if not self._closed and self._reconnect_task is None:
            self._reconnect_task = asyncio.ensure_future(self._reconnect())

    async def _reconnect(self) -> None:
        try:
            while not self._closed:
                await asyncio.sleep(self._reconnect_interval)
                fallback = self._fallback
                state = self.state
                if fallback is not None and fallback.learning and fallback.phase == "steady":
                    state = fallback.state  # learned meanwhile
                try:
                    if state.phase == "steady" and state.rate > 0:
                        # a Redis restarted empty gets back what this process knows
                        await self._seed("restore", encode_state(state))
                    else:
                        await self._ping()
                except DOWN:
                    continue
                self.degraded = False
                self._next_ask = 0.0
                if self._back is not None and not self._back.done():
                    self._back.set_result(None)  # the fallback's waiters come back
                _log.warning("Redis at %s answers again: the limit is shared again",
                             self._where)
                self._kick()
                return
        finally:
            self._reconnect_task = None
