"""The pump of `RedisRateLimiter`: one task per limiter that reserves send slots in
Redis for the waiters, and the calls to Redis with the clock offset they measure."""

from __future__ import annotations

import asyncio
import logging
import math
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._ratelimit._fit import DecisionClock
from .._ratelimit._learner import LimitState
from ._fallback import DOWN
from ._state import encode_state, text

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.commands.core import AsyncScript

__all__ = ["Pump"]

_log = logging.getLogger("wan26_async")

#: Events sent with one call at most (older ones beyond are dropped).
_MAX_REPORT = 1000


class Pump:
    """The pump half of `RedisRateLimiter` (a mixin: the attributes are its)."""

    state: LimitState
    redis: aioredis.Redis
    degraded: bool
    round_trips: int
    _loop: asyncio.AbstractEventLoop | None
    _closed: bool
    _op_timeout: float
    _ttl_ms: str
    _max_events: int
    _member: str
    _seq: int
    _horizon_ms: float
    _acquire_script: AsyncScript
    _seed_script: AsyncScript
    _waiters: deque[asyncio.Future[bool]]
    _queued: int
    _slots: set[asyncio.TimerHandle]
    _in_flight: int
    _window: float
    _local_gate: float
    _next_ask: float
    _pump_task: asyncio.Task[None] | None
    _wakeup: asyncio.Event | None
    _idle: bool
    _events: list[float]
    _untimed: list[float]
    _clock: DecisionClock
    _offset: float | None
    _offset_error: float
    _flush_timer: asyncio.TimerHandle | None
    _flush_task: asyncio.Task[None] | None
    _started_told: bool

    if TYPE_CHECKING:  # the other half's
        @property
        def keys(self) -> list[str]: ...

        def _degrade(self, exc: BaseException) -> None: ...

    # -- talking to Redis -------------------------------------------------------------

    async def _call(self, script: AsyncScript, args: Sequence[str], extra: Sequence[str] = (),
                    keys: Sequence[str] | None = None, clock_at: int | None = None
                    ) -> Any:
        """Run a script; ``clock_at`` is the index of Redis's ``now`` in its reply."""
        self.round_trips += 1
        loop = self._loop
        sent = loop.time() if loop is not None else 0.0
        reply = await asyncio.wait_for(
            script(keys=list(self.keys if keys is None else keys), args=[*args, *extra]),
            self._op_timeout)
        if clock_at is not None and loop is not None:
            self._sample_clock(sent, loop.time(), float(reply[clock_at]))
        return reply

    async def _seed(self, mode: str, fields: Sequence[str]) -> None:
        await self._call(self._seed_script, [self._ttl_ms, mode, *fields], keys=self.keys[:1])

    async def _ping(self) -> None:
        self.round_trips += 1
        await asyncio.wait_for(self.redis.ping(), self._op_timeout)

    def _sample_clock(self, sent: float, received: float, redis_ms: float) -> None:
        """Redis read its clock between ``sent`` and ``received`` (loop time): keep the
        offset of the quickest such call, or this one if it rules the kept one out."""
        low, high = redis_ms - received * 1000.0, redis_ms - sent * 1000.0
        error = (high - low) / 2
        offset = self._offset
        if offset is None or error < self._offset_error or not low <= offset <= high:
            self._offset, self._offset_error = low + error, error

    def _record(self, now: float, sent: float | None) -> None:
        """An admitted request, sent at ``sent`` and replied to ``now``: to report."""
        decided = self._clock.decided(now, sent)
        if self.state.phase == "start":
            self._untimed.append(now)  # timed when reported (`DecisionClock.offset`)
            return
        self._events.append(decided)
        if len(self._events) > _MAX_REPORT:
            del self._events[: len(self._events) - _MAX_REPORT]

    def _event_args(self) -> list[str]:
        """The common ARGV: ttl, the most events kept, member prefix, first sequence
        number, the events' times on Redis's clock."""
        half = self._clock.offset()
        events = [*self._events, *(t - half for t in self._untimed)]
        self._events, self._untimed = [], []
        if events and self._flush_timer is not None:
            self._flush_timer.cancel()  # they ride on this call
            self._flush_timer = None
        offset = self._offset
        if offset is None:  # Redis not heard from yet: nothing to place them with
            events = []
        seq = self._seq
        self._seq += len(events)
        return [self._ttl_ms, str(self._max_events), self._member, str(seq), str(len(events)),
                *(f"{t * 1000.0 + (offset or 0.0):.3f}" for t in events)]

    def _flush_soon(self) -> None:
        self._flush_timer = None
        if (self._events or self._untimed) and self._flush_task is None and not self.degraded:
            self._flush_task = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            await self._call(self._acquire_script, self._event_args(),
                             ["0", f"{self._horizon_ms:.3f}"], clock_at=6)
        except DOWN as exc:
            self._degrade(exc)
        finally:
            self._flush_task = None
        loop = self._loop
        if (self._events or self._untimed) and self._flush_timer is None and loop is not None:
            self._flush_timer = loop.call_later(0.0, self._flush_soon)  # came meanwhile

    # -- the pump: one task per limiter that reserves slots for the waiters -----------

    def _bind_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._wakeup = asyncio.Event()
        return loop

    def _kick(self) -> None:
        if self._closed:
            return
        if self._pump_task is None:
            self._pump_task = asyncio.ensure_future(self._pump())
        elif self._idle and self._wakeup is not None:
            self._wakeup.set()

    def _wanted(self) -> int:
        want = self._queued - len(self._slots)
        if self.state.phase == "start":
            room = self._window - self._in_flight - len(self._slots)
            want = min(want, int(room) if room < 1e9 else want)
        return want

    async def _pump(self) -> None:
        loop = self._bind_loop()
        wakeup = self._wakeup
        assert wakeup is not None
        try:
            while not self._closed:
                if self.degraded or self._wanted() <= 0:
                    self._idle = True
                    wakeup.clear()
                    await wakeup.wait()
                    self._idle = False
                    continue
                now = loop.time()
                later = max(self._local_gate, self._next_ask)
                if later > now:
                    await asyncio.sleep(later - now)
                    continue
                await self._ask(loop, self._wanted())
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never leave waiters stranded on a bug: fall back
            _log.exception("RedisRateLimiter: unexpected error; limiting in-process")
            self._pump_task = None
            self._degrade(exc)

    async def _ask(self, loop: asyncio.AbstractEventLoop, want: int) -> None:
        if self.state.told and not self._started_told:
            try:
                await self._seed("told", encode_state(self.state))
            except DOWN as exc:
                self._degrade(exc)
                return
            self._started_told = True
        sent = loop.time()
        try:
            reply = await self._call(self._acquire_script, self._event_args(),
                                     [str(want), f"{self._horizon_ms:.3f}"], clock_at=6)
        except DOWN as exc:
            self._degrade(exc)
            return
        now = loop.time()
        # when Redis ran the script, on our clock: by the offset of the quickest call (a
        # call that waited for a connection would put every slot it gives late)
        base = (sent + now) / 2
        if self._offset is not None:
            base = min(now, max(sent, (float(reply[6]) - self._offset) / 1000.0))
        state = self.state
        state.phase, state.rate, state.burst = text(reply[0]), float(reply[1]), float(reply[2])
        if state.phase != "start":
            self._window = math.inf
        self._next_ask = base + float(reply[4]) / 1000.0
        for raw in reply[7:]:
            at = base + float(raw) / 1000.0
            if at <= now:
                self._grant()
            else:
                holder: list[asyncio.TimerHandle] = []
                handle = loop.call_at(at, self._fire, holder)
                holder.append(handle)
                self._slots.add(handle)

    def _fire(self, holder: list[asyncio.TimerHandle]) -> None:
        self._slots.discard(holder[0])
        self._grant()

    def _grant(self) -> None:
        """A reserved slot is reached: the first waiter goes (an unclaimed slot lapses)."""
        while self._waiters:
            fut = self._waiters.popleft()
            if fut.done():
                continue
            self._queued -= 1
            self._in_flight += 1
            fut.set_result(True)
            break
        self._kick()

    def _drop_slots(self) -> None:
        for handle in self._slots:
            handle.cancel()
        self._slots.clear()
