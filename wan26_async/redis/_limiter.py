"""`RedisRateLimiter`: the learner's state in Redis, shared by every process of a key.

The gate and the pacing run as Lua scripts inside Redis (`wan26_async.redis._scripts`),
atomic and one round trip each; the decisions are the one learner's
(`wan26_async._ratelimit._learner`), the same as `InProcessRateLimiter`'s: after a pause
that a process began, it reads the replies every process reported, asks the learner,
and commits the new state unless another pause began meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections import deque
from collections.abc import Mapping

from .._ratelimit._contract import RateLimiter
from .._ratelimit._fit import DecisionClock
from .._ratelimit._learner import Learner, LimitState
from .._ratelimit._memory import InProcessRateLimiter
from ._fallback import DOWN, Fallback
from ._pump import Pump
from ._scripts import ACQUIRE, COMMIT, LIMITED, SEED
from ._state import (
    STATE_FIELDS,
    decode_state,
    decode_wave,
    encode_state,
    encode_wave,
    scope_for,
    scope_from_env,
    text,
    where,
)

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wan26_async.redis needs the redis package: pip install 'wan26-async[redis]'"
    ) from exc

__all__ = ["RedisRateLimiter"]

_log = logging.getLogger("wan26_async")

#: Events kept in Redis for the next fit.
_MAX_EVENTS = 4096
#: How long a process waits after beginning a pause before it fits, for the replies the
#: other processes have not reported yet (s; in a learning phase, and once steady).
_REPORT_WAIT = (0.1, 0.25)
#: A fit reads the replies decided up to this long after the refusal (ms): what was in
#: flight with it.
_AFTER_REFUSAL_MS = 50.0


class RedisRateLimiter(Pump, Fallback, RateLimiter):
    """The `RateLimiter` of a fleet: the 429 gate, the pace and the learned limit in Redis.

    ``redis`` is a ``redis.asyncio.Redis`` (see `from_url`); it is not closed by
    `aclose` unless built by `from_url`. ``scope`` names the limit shared: give
    ``scope_for(base_url, api_key)``, or let the client `bind` it. ``rate``, ``burst``,
    ``initial_window``, ``margin``, ``default_retry_after`` and ``learner`` mean what they
    mean for `InProcessRateLimiter`.

    Tuning, rarely needed: ``horizon`` (s) is how far ahead a process reserves send
    slots in one round trip; ``state_ttl`` (s) how long an unused learned limit is kept;
    ``op_timeout`` (s) how long a Redis call may take before the fallback takes over;
    ``reconnect_interval`` (s) how often Redis is tried again meanwhile.

    One instance serves one event loop; each process (or thread with its own loop)
    makes its own, with the same ``scope``. The client does not close a limiter it was
    given: ``await limiter.aclose()`` when done.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        scope: str | None = None,
        prefix: str = "wan26:rl",
        rate: float | None = None,
        burst: float | None = None,
        initial_window: int = 4,
        margin: float = 0.98,
        default_retry_after: float = 1.0,
        learner: Learner | None = None,
        horizon: float = 0.1,
        state_ttl: float = 86_400.0,
        op_timeout: float = 1.0,
        reconnect_interval: float = 1.0,
        owns_redis: bool = False,
        where: str | None = None,
    ) -> None:
        self.learner = learner or Learner(initial_window=float(initial_window), margin=margin,
                                          default_retry_after=default_retry_after)
        #: the shared state, as of the last reply from Redis
        self.state: LimitState = self.learner.initial(rate, burst)
        self.redis = redis
        self.prefix = prefix
        self._scope = scope
        self._bound: str | None = None
        self._keys: list[str] | None = None
        self._horizon_ms = horizon * 1000.0
        self._ttl_ms = str(int(state_ttl * 1000))
        self._max_events = _MAX_EVENTS
        self._op_timeout = op_timeout
        self._reconnect_interval = reconnect_interval
        self._owns_redis = owns_redis
        self._where = where or "redis"
        self._acquire_script = redis.register_script(ACQUIRE)
        self._limited_script = redis.register_script(LIMITED)
        self._commit_script = redis.register_script(COMMIT)
        self._seed_script = redis.register_script(SEED)
        self._member = secrets.token_hex(4)
        self._seq = 0
        # local
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._queued = 0  # waiters not resolved yet
        self._slots: set[asyncio.TimerHandle] = set()  # reserved slots not reached yet
        self._in_flight = 0
        self._window = math.inf if self.state.told else self.learner.initial_window
        self._local_gate = 0.0  # loop time until which this process knows of a pause
        self._next_ask = 0.0  # loop time before which asking Redis again gives nothing
        self._pump_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._idle = False
        self._events: list[float] = []  # when admitted requests were decided, not reported
        self._untimed: list[float] = []  # the first wave's replies, timed when reported
        self._clock = DecisionClock()
        # Redis's clock (ms) minus the loop's (s * 1000), and how far off it may be
        self._offset: float | None = None
        self._offset_error = math.inf
        self._flush_timer: asyncio.TimerHandle | None = None
        self._flush_task: asyncio.Task[None] | None = None
        self._started_told = False
        # the fallback
        self.degraded = False  #: True while Redis is unreachable
        self._fallback: InProcessRateLimiter | None = None
        self._fallback_in_flight = 0
        self._fallback_used = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._back: asyncio.Future[None] | None = None  # set when Redis answers again
        self._closed = False
        # counters
        self.round_trips = 0  #: calls to Redis
        self.rate_limited = 0  #: 429s seen by this process
        self.pauses = 0  #: pauses this process began (the others see them in Redis)
        self.outages = 0  #: times this process fell back to its in-process limiter

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        scope: str | None = None,
        prefix: str = "wan26:rl",
        redis_options: Mapping[str, object] | None = None,
        rate: float | None = None,
        burst: float | None = None,
        initial_window: int = 4,
        margin: float = 0.98,
        default_retry_after: float = 1.0,
        learner: Learner | None = None,
        horizon: float = 0.1,
        state_ttl: float = 86_400.0,
        op_timeout: float = 1.0,
        reconnect_interval: float = 1.0,
    ) -> RedisRateLimiter:
        """A limiter on the Redis at ``url`` (``redis://[:password@]host:port/db``,
        ``rediss://`` for TLS, ``unix://``); its connections are closed by `aclose`.
        ``redis_options`` go to ``redis.asyncio.Redis.from_url``; the rest to the
        constructor."""
        settings: dict[str, object] = {
            "socket_timeout": op_timeout,
            "socket_connect_timeout": op_timeout,
            "retry": Retry(NoBackoff(), 1),  # once at once: a restarted server's new socket
        }
        settings.update(redis_options or {})
        client = aioredis.Redis.from_url(url, **settings)  # type: ignore[arg-type]
        return cls(client, scope=scope, prefix=prefix, owns_redis=True, where=where(url), rate=rate,
                   burst=burst, initial_window=initial_window, margin=margin,
                   default_retry_after=default_retry_after, learner=learner,
                   horizon=horizon, state_ttl=state_ttl, op_timeout=op_timeout,
                   reconnect_interval=reconnect_interval)

    def __repr__(self) -> str:
        return (f"RedisRateLimiter({self._where}, rate={self.rate!r}, burst={self.burst!r}, "
                f"phase={self.phase!r}{', degraded' if self.degraded else ''})")

    @property
    def rate(self) -> float | None:
        """The shared pace in requests/s (None while unpaced), as of the last reply."""
        return self.state.rate or None

    @property
    def burst(self) -> float:
        """Requests let go at once after a pause."""
        return self.state.burst

    @property
    def phase(self) -> str:
        """``start``, ``probe`` or ``steady`` (see `InProcessRateLimiter.phase`)."""
        return self.state.phase

    # -- scope ------------------------------------------------------------------------

    def bind(self, base_url: str, api_key: str) -> None:
        """Name the limit by the client's base URL and key, unless ``scope`` was given.

        A client calls this when it is built with this limiter (once the SDK's client
        does so); until then pass ``scope=scope_for(base_url, api_key)``, or rely on
        ``$WAN_API_KEY`` / ``$WAN_BASE_URL``, which name the scope when nothing else did.
        """
        if self._keys is None:  # a limiter in use keeps its keys
            self._bound = scope_for(base_url, api_key)

    @property
    def scope(self) -> str:
        """The scope in use: ``scope``, else the bound one, else from the environment."""
        if self._scope is not None:
            return self._scope
        return self._bound if self._bound is not None else scope_from_env()

    @property
    def keys(self) -> list[str]:
        """The Redis keys of this limit: state, gate and events."""
        if self._keys is None:
            base = f"{self.prefix}:{{{self.scope}}}"
            self._keys = [f"{base}:state", f"{base}:gate", f"{base}:events"]
        return self._keys

    # -- the interface ----------------------------------------------------------------

    def try_acquire(self) -> bool:
        fallback = self._fallback
        if self.degraded and fallback is not None and fallback.try_acquire():
            self._fallback_in_flight += 1
            return True
        return False

    async def acquire(self) -> None:
        loop = self._bind_loop()
        self.keys  # noqa: B018 - a missing scope fails here, before anything is sent
        while True:
            if self.degraded:
                if await self._acquire_fallback(loop):
                    return
                continue  # Redis is back: ask it
            fut: asyncio.Future[bool] = loop.create_future()
            self._waiters.append(fut)
            self._queued += 1
            self._kick()
            try:
                granted = await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    if fut.result():  # granted just as we were cancelled: give it back
                        self._in_flight -= 1
                else:
                    self._queued -= 1
                self._kick()
                raise
            if granted:
                return

    def release(self) -> None:
        if self._fallback_in_flight > 0 and self._fallback is not None:
            self._fallback_in_flight -= 1
            self._fallback.release()
            return
        self._in_flight = max(0, self._in_flight - 1)
        if self.state.phase == "start":
            self._kick()

    def on_success(self, sent_at: float | None = None) -> None:
        if self.degraded and self._fallback is not None and self._fallback_used:
            self._fallback.on_success(sent_at)
        loop = self._loop
        if loop is None:
            return
        if self.state.phase == "start":
            self._window = self.learner.grow_window(self._window)
        self._record(loop.time(), sent_at)
        if self._flush_timer is None and not self.degraded:
            # learning phases report at once, a steady pace rides on the next acquire
            delay = 0.02 if self.state.phase != "steady" else 0.2
            self._flush_timer = loop.call_later(delay, self._flush_soon)

    async def on_rate_limited(self, retry_after: float | None,
                              sent_at: float | None = None) -> None:
        loop = self._bind_loop()
        refused = self._clock.decided(loop.time(), sent_at)
        self.rate_limited += 1
        wait = (self.learner.default_retry_after if retry_after is None
                else max(0.0, retry_after))
        self._local_gate = max(self._local_gate, loop.time() + wait)
        self._drop_slots()  # reserved before the 429: the server's bucket is empty now
        if self.degraded:
            await self._get_fallback().on_rate_limited(retry_after, sent_at)
            return
        args = self._event_args()
        self._seq += 1  # the refusal's own event
        refused_ms = -1.0 if self._offset is None else refused * 1000.0 + self._offset
        try:
            reply = await self._call(self._limited_script, args,
                                     [f"{wait * 1000:.3f}", f"{refused_ms:.3f}"], clock_at=5)
        except DOWN as exc:
            self._degrade(exc)
            await self._get_fallback().on_rate_limited(retry_after, sent_at)
            return
        if int(reply[0]) != 1:
            return  # a pause already on: every process waits for it
        self.pauses += 1
        _log.info("rate limited (429): pausing every process of this limit for %.2f s", wait)
        phase, pause = text(reply[1]), text(reply[2])
        limited_at, anchor = float(reply[3]), float(reply[4])
        # The fit waits for the replies that other processes have not reported yet.
        await asyncio.sleep(min(_REPORT_WAIT[phase == "steady"], wait / 2))
        try:
            await self._learn(pause, anchor, limited_at)
        except DOWN as exc:
            self._degrade(exc)

    async def aclose(self) -> None:
        self._closed = True
        self.degraded = True  # any late caller uses the in-process limiter
        tasks = [t for t in (self._pump_task, self._reconnect_task, self._flush_task)
                 if t is not None]
        self._pump_task = self._reconnect_task = self._flush_task = None
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self._drop_slots()
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.cancel()
        if self._fallback is not None:
            await self._fallback.aclose()
        if self._owns_redis:
            self._owns_redis = False
            close = getattr(self.redis, "aclose", None) or self.redis.close  # redis < 5.0.1
            await close()

    # -- learning ---------------------------------------------------------------------

    async def _learn(self, pause: str, anchor_ms: float, refused_ms: float) -> None:
        """Have the learner fit the replies since the previous pause, and commit the new
        state unless another pause began meanwhile."""
        state_key, _, events_key = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(state_key, [*STATE_FIELDS, "wdata", "wstart"])
            until = refused_ms + _AFTER_REFUSAL_MS
            pipe.zrangebyscore(events_key, f"{anchor_ms:.3f}", f"{until:.3f}", withscores=True)
            self.round_trips += 1
            fields, members = await asyncio.wait_for(pipe.execute(), self._op_timeout)
        before = decode_state(fields[:len(STATE_FIELDS)])
        wdata, wstart_ = fields[len(STATE_FIELDS):]
        replies = sorted((score / 1000.0, not text(member).startswith("x:"))
                         for member, score in members)
        wstart = float(text(wstart_)) if wstart_ else 0.0
        wave = decode_wave(text(wdata), wstart) if before.wave and wdata else None
        after = self.learner.paused(before, replies, anchor=anchor_ms / 1000.0,
                                    refused=refused_ms / 1000.0, wave=wave)
        if after is before:
            return
        if before.phase == "start":  # the first wave, for the probe's fit
            wstart = replies[0][0] if replies else 0.0
            wave_data = encode_wave(replies, wstart)
        else:
            wave_data = encode_wave(wave or [], wstart) if after.wave else ""
        _log.debug("fit after pause %s (%s -> %s): %d replies, pace %.2f/s", pause,
                   before.phase, after.phase, len(replies), after.rate)
        stored = await self._call(
            self._commit_script,
            [self._ttl_ms, pause, *encode_state(after), "wdata", wave_data,
             "wstart", f"{wstart:.6f}"],
            keys=[state_key, events_key])
        if int(stored) == 1:
            self.state = after
            if after.phase == "steady":
                _log.info("learned the server's rate limit: pacing every process at %.1f "
                          "requests/s (bursts of %g)", after.rate, after.burst)
