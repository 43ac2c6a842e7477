"""A rate limiter shared by every process that uses one API key: its state lives in Redis.

    import wan26_async as wan
    from wan26_async.redis import RedisRateLimiter, scope_for

    limiter = RedisRateLimiter.from_url("redis://localhost:6379/0",
                                        scope=scope_for(base_url, api_key))
    async with wan.AsyncWanClient(api_key, base_url, rate_limiter=limiter) as client:
        ...
    await limiter.aclose()

Needs the optional extra: ``pip install "wan26-async[redis]"``.

It behaves like the default `InProcessRateLimiter` (the 429 gate, slow start, a probe,
a fitted token bucket), but the gate, the pace and what was learned are shared by
every process and machine whose limiter has the same ``scope`` (by default a hash of
the base URL and the API key, never the key itself): one 429 pauses them all, and a
rate learned by one paces the others. Each update is one Lua script, atomic and one
round trip, on Redis's clock. See "Scaling out" in the docs for the design.

When Redis cannot be reached, each limiter falls back to an `InProcessRateLimiter` in
its own process (with a warning) and goes back to Redis once it answers again; it only
ever decides *when* a request leaves, so no request is lost or sent twice because of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import secrets
from collections import deque
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from ._errors import ConfigurationError
from ._limiter import (
    DEFAULT_RETRY_AFTER,
    PROBE_START,
    SENT_AT,
    DecisionClock,
    InProcessRateLimiter,
    RateLimiter,
    burst_shown,
    fit_bucket,
    fit_rate,
    paced_burst,
    rate_in,
)
from ._redis_scripts import ACQUIRE, COMMIT, LIMITED, SEED

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "wan26_async.redis needs the redis package: pip install 'wan26-async[redis]'"
    ) from exc

__all__ = ["RedisRateLimiter", "scope_for"]

_log = logging.getLogger("wan26_async")

#: Failures of Redis that switch a limiter to its in-process fallback.
_DOWN = (RedisError, OSError, asyncio.TimeoutError)
#: Events sent with one call at most (older ones beyond are dropped).
_MAX_EVENTS = 1000


def scope_for(base_url: str, api_key: str) -> str:
    """The scope of the limit of ``api_key`` at ``base_url``: a SHA-256 of both, so the
    Redis keys name the limit without revealing the key."""
    material = f"{base_url.rstrip('/')}\n{api_key}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _where(url: str) -> str:
    """The Redis URL without its password, for log lines."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _fit(events: list[tuple[float, bool]], burst: float, start: float
         ) -> tuple[float, float, float]:
    """`fit_rate`, and the estimate taken from its bracket (`rate_in`)."""
    lowest, highest = fit_rate(events, burst=burst, start=start)
    return rate_in(lowest, highest), lowest, highest


def _encode_wave(events: list[tuple[float, bool]], start: float) -> str:
    """The first wave's decisions (s) as ms after ``start``, refusals marked ``x``."""
    return ",".join(f"{(t - start) * 1000:.3f}{'' if ok else 'x'}" for t, ok in events)


def _decode_wave(text: str, start: float) -> list[tuple[float, bool]]:
    return [(start + float(item.rstrip("x")) / 1000.0, not item.endswith("x"))
            for item in text.split(",") if item]


class RedisRateLimiter(RateLimiter):
    """The `RateLimiter` of a fleet: the 429 gate, the pace and the learned limit in Redis.

    ``redis`` is a ``redis.asyncio.Redis`` (see `from_url`); it is not closed by
    `aclose` unless built by `from_url`. ``scope`` names the limit shared: give
    ``scope_for(base_url, api_key)`` (see `bind` for the other ways). ``rate`` and
    ``burst`` give a known limit instead of learning it (paced with one token of the
    burst kept in reserve); ``initial_window``, ``margin``
    and ``default_retry_after`` are those of `InProcessRateLimiter`.

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
        default_retry_after: float = DEFAULT_RETRY_AFTER,
        horizon: float = 0.1,
        state_ttl: float = 86_400.0,
        op_timeout: float = 1.0,
        reconnect_interval: float = 1.0,
        owns_redis: bool = False,
        where: str | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate must be positive requests per second, got {rate!r}")
        self.redis = redis
        self.prefix = prefix
        self._scope = scope
        self._bound: str | None = None
        self._keys: list[str] | None = None
        self._told = (rate, float(burst) if burst is not None else 1.0) if rate else None
        self._initial_window = initial_window
        self.margin = margin
        self._default_retry_after = default_retry_after
        self._horizon_ms = horizon * 1000.0
        self._ttl_ms = str(int(state_ttl * 1000))
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
        # the shared state, as of the last reply
        self.phase = "start"
        self.rate: float | None = None
        self.burst = 1.0
        # local
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._queued = 0  # waiters not resolved yet
        self._slots: set[asyncio.TimerHandle] = set()  # reserved slots not reached yet
        self._in_flight = 0
        self._window = float(initial_window)
        self._local_gate = 0.0  # loop time until which this process knows of a pause
        self._next_ask = 0.0  # loop time before which asking Redis again gives nothing
        self._pump_task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._idle = False
        self._events: list[float] = []  # when admitted requests were decided, not reported
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
        cls, url: str, *, scope: str | None = None, redis_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> RedisRateLimiter:
        """A limiter on the Redis at ``url`` (``redis://[:password@]host:port/db``,
        ``rediss://`` for TLS, ``unix://``); its connections are closed by `aclose`.
        ``redis_options`` go to ``redis.asyncio.Redis.from_url``; ``options`` to the
        constructor."""
        op_timeout = float(options.get("op_timeout", 1.0))
        settings: dict[str, Any] = {
            "socket_timeout": op_timeout,
            "socket_connect_timeout": op_timeout,
            "retry": Retry(NoBackoff(), 1),  # once at once: a restarted server's new socket
        }
        settings.update(redis_options or {})
        client = aioredis.Redis.from_url(url, **settings)
        return cls(client, scope=scope, owns_redis=True, where=_where(url), **options)

    def __repr__(self) -> str:
        return (f"RedisRateLimiter({self._where}, rate={self.rate!r}, burst={self.burst!r}, "
                f"phase={self.phase!r}{', degraded' if self.degraded else ''})")

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
        if self._bound is not None:
            return self._bound
        api_key = os.environ.get(API_KEY_ENV)
        if not api_key:
            raise ConfigurationError(
                "RedisRateLimiter needs a scope: pass scope=wan26_async.redis.scope_for("
                f"base_url, api_key), or set {API_KEY_ENV} (and {BASE_URL_ENV})"
            )
        return scope_for(os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL, api_key)

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
            if self._loop is not None:
                SENT_AT.set(self._loop.time())
            return True
        return False

    async def acquire(self) -> None:
        loop = self._bind_loop()
        self.keys  # noqa: B018 - a missing scope fails here, before anything is sent
        while True:
            if self.degraded:
                if await self._acquire_fallback(loop):
                    SENT_AT.set(loop.time())
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
                SENT_AT.set(loop.time())
                return

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

    def release(self) -> None:
        if self._fallback_in_flight > 0 and self._fallback is not None:
            self._fallback_in_flight -= 1
            self._fallback.release()
            return
        self._in_flight = max(0, self._in_flight - 1)
        if self.phase == "start":
            self._kick()

    def on_success(self) -> None:
        if self.degraded and self._fallback is not None and self._fallback_used:
            self._fallback.on_success()
        loop = self._loop
        if loop is None:
            return
        if self.phase == "start":
            self._window += 0.5  # slow start, as the in-process limiter
            if self._window > 4096:
                self._window = math.inf
        self._events.append(self._clock.decided(loop.time()))
        if len(self._events) > _MAX_EVENTS:
            del self._events[: len(self._events) - _MAX_EVENTS]
        if self._flush_timer is None and not self.degraded:
            # learning phases report at once, a steady pace rides on the next acquire
            delay = 0.02 if self.phase != "steady" else 0.2
            self._flush_timer = loop.call_later(delay, self._flush_soon)

    async def on_rate_limited(self, retry_after: float | None) -> None:
        loop = self._bind_loop()
        refused = self._clock.decided(loop.time())
        self.rate_limited += 1
        wait = self._default_retry_after if retry_after is None else max(0.0, retry_after)
        self._local_gate = max(self._local_gate, loop.time() + wait)
        self._drop_slots()  # reserved before the 429: the server's bucket is empty now
        if self.degraded:
            await self._get_fallback().on_rate_limited(retry_after)
            return
        args = self._event_args()
        self._seq += 1  # the refusal's own event
        refused_ms = -1.0 if self._offset is None else refused * 1000.0 + self._offset
        try:
            reply = await self._call(self._limited_script, args,
                                     [f"{wait * 1000:.3f}",
                                      f"{self._default_retry_after * 1000:.3f}",
                                      f"{refused_ms:.3f}"], clock_at=5)
        except _DOWN as exc:
            self._degrade(exc)
            await self._get_fallback().on_rate_limited(retry_after)
            return
        if int(reply[0]) != 1:
            return  # a pause already on: every process waits for it
        self.pauses += 1
        _log.info("rate limited (429): pausing every process of this limit for %.2f s", wait)
        phase = _text(reply[1])
        pause, limited_at, anchor = _text(reply[2]), float(reply[3]), float(reply[4])
        if phase == "start":
            self.phase = "probe"
        # The fit waits for the replies that other processes have not reported yet.
        await asyncio.sleep(min(0.25 if phase == "steady" else 0.1, wait / 2))
        try:
            await self._learn(phase, pause, anchor, limited_at)
        except _DOWN as exc:
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

    async def _learn(self, phase: str, pause: str, anchor: float, limited_at: float) -> None:
        """Fit the replies since the previous pause, as `InProcessRateLimiter` does, and
        store the result unless another pause began meanwhile."""
        state_key, _, events_key = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(state_key, ["rate", "burst", "sburst", "first", "asf", "told", "wave",
                                   "wstart"])
            # What the server decided since the last pause (whenever the replies came):
            # up to its refusal, and a little after it (the requests then in flight,
            # whose times are estimates: `fit_bucket` does not trust their order).
            until = limited_at + 50.0
            pipe.zrangebyscore(events_key, f"{anchor:.3f}", f"{until:.3f}", withscores=True)
            self.round_trips += 1
            state, events = await asyncio.wait_for(pipe.execute(), self._op_timeout)
        rate_, burst_, sburst_, first_, asf_, told_, wave_, wstart_ = (
            None if v is None else _text(v) for v in state)
        if told_ == "1":
            return  # a rate given by the user is kept
        rate = float(rate_) if rate_ else None
        burst = float(burst_) if burst_ else 1.0
        server_burst = float(sburst_) if sburst_ else burst
        decided = sorted((score / 1000.0, not _text(member).startswith("x:"))
                         for member, score in events)
        times = [t for t, admitted in decided if admitted]
        wstart = float(wstart_) if wstart_ else 0.0
        wave = _decode_wave(wave_ or "", wstart)
        if phase == "start":
            # What the first wave had admitted before the 429 is the server's burst, and
            # what it refilled meanwhile (told apart after the probe).
            server_burst = float(max(1, len(times)))
            wave, wstart = decided, (decided[0][0] if decided else 0.0)
            burst = paced_burst(server_burst)
            rate = max(1.0, server_burst / self._default_retry_after) * PROBE_START
            new_phase = "probe"
        elif phase == "steady" and rate and (shown := burst_shown(
                len(times), (limited_at - anchor) / 1000.0, rate, server_burst)) is not None:
            server_burst, burst, new_phase = shown, paced_burst(shown), phase
        elif len(times) <= server_burst + 1:
            # refused before more than a burst was admitted: the burst was (partly) spent
            # by then, there is nothing to fit
            rate = (rate or 1.0) * 0.97
            burst = max(1.0, burst - 1.0)
            new_phase = phase
        else:
            now = limited_at / 1000.0
            if phase == "probe" and wave:
                # the first wave and the probe each began with a full bucket: together
                # they tell the burst from what refilled during the first wave
                server_burst, found, lowest, highest = fit_bucket(
                    wave, decided, start=anchor / 1000.0)
                burst = paced_burst(server_burst)
                wave = []
            else:
                found, lowest, highest = _fit(decided, server_burst, anchor / 1000.0)
            if first_ is not None and asf_ is not None:
                first = float(first_) / 1000.0
                if now > first:  # for shapes that are not a bucket: never below what passed
                    found = max(found, float(asf_) / (now - first))
            if phase == "steady" and rate is not None:
                rate = min(found, rate) * 0.97
            else:
                rate = found * self.margin
            new_phase = "steady"
            _log.info("learned the server's rate limit: about %.1f requests/s (burst %g); "
                      "bracket %.1f-%.1f", found, burst, lowest, highest)
        assert rate is not None
        _log.debug("fit after pause %s (%s): %d admitted since the last pause, server burst "
                   "%g: rate %.2f", pause, phase, len(times), server_burst, rate)
        stored = await self._call(
            self._commit_script, [self._ttl_ms, pause, new_phase, f"{rate:.6f}",
                                  f"{burst:g}", f"{server_burst:g}",
                                  _encode_wave(wave, wstart), f"{wstart:.3f}"],
            keys=[state_key, events_key])
        if int(stored) == 1:
            self.phase, self.rate, self.burst = new_phase, rate, burst

    # -- talking to Redis -------------------------------------------------------------

    async def _call(self, script: Any, args: Sequence[str], extra: Sequence[str] = (),
                    keys: Sequence[str] | None = None, clock_at: int | None = None) -> Any:
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

    def _sample_clock(self, sent: float, received: float, redis_ms: float) -> None:
        """Redis read its clock between ``sent`` and ``received`` (loop time): keep the
        offset of the quickest such call, or this one if it rules the kept one out."""
        low, high = redis_ms - received * 1000.0, redis_ms - sent * 1000.0
        error = (high - low) / 2
        offset = self._offset
        if offset is None or error < self._offset_error or not low <= offset <= high:
            self._offset, self._offset_error = low + error, error

    def _event_args(self) -> list[str]:
        """The common ARGV: ttl, member prefix, first sequence number, the events' times
        on Redis's clock."""
        events, self._events = self._events, []
        if events and self._flush_timer is not None:
            self._flush_timer.cancel()  # they ride on this call
            self._flush_timer = None
        offset = self._offset
        if offset is None:  # Redis not heard from yet: nothing to place them with
            events = []
        seq = self._seq
        self._seq += len(events)
        return [self._ttl_ms, self._member, str(seq), str(len(events)),
                *(f"{t * 1000.0 + (offset or 0.0):.3f}" for t in events)]

    def _flush_soon(self) -> None:
        self._flush_timer = None
        if self._events and self._flush_task is None and not self.degraded:
            self._flush_task = asyncio.ensure_future(self._flush())

    async def _flush(self) -> None:
        try:
            await self._call(self._acquire_script, self._event_args(),
                             ["0", f"{self._horizon_ms:.3f}"], clock_at=6)
        except _DOWN as exc:
            self._degrade(exc)
        finally:
            self._flush_task = None
        loop = self._loop
        if self._events and self._flush_timer is None and loop is not None:
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
        if self.phase == "start":
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
        if self._told is not None and not self._started_told:
            rate, burst = self._told
            # one token of slack: requests from many hosts reach the server a little
            # unevenly, and one that comes early must still find a token
            paced = max(1.0, burst - 1.0)
            try:
                await self._call(self._seed_script, [self._ttl_ms, "told", "steady",
                                                     f"{rate:.6f}", f"{paced:g}", f"{burst:g}"],
                                 keys=self.keys[:1])
            except _DOWN as exc:
                self._degrade(exc)
                return
            self._started_told = True
        sent = loop.time()
        try:
            reply = await self._call(self._acquire_script, self._event_args(),
                                     [str(want), f"{self._horizon_ms:.3f}"], clock_at=6)
        except _DOWN as exc:
            self._degrade(exc)
            return
        now = loop.time()
        # when Redis ran the script, on our clock: by the offset of the quickest call (a
        # call that waited for a connection would put every slot it gives late)
        base = (sent + now) / 2
        if self._offset is not None:
            base = min(now, max(sent, (float(reply[6]) - self._offset) / 1000.0))
        self.phase = _text(reply[0])
        self.rate = float(reply[1]) if reply[1] not in (b"", "") else None
        self.burst = float(reply[2])
        if self.phase != "start":
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

    # -- the fallback -----------------------------------------------------------------

    def _get_fallback(self) -> InProcessRateLimiter:
        if self._fallback is None:
            if self.phase == "steady" and self.rate is not None:
                # no burst: the shared pace had the server's bucket about empty
                self._fallback = InProcessRateLimiter(
                    self.rate, burst=1, default_retry_after=self._default_retry_after)
            else:
                self._fallback = InProcessRateLimiter(
                    initial_window=self._initial_window, margin=self.margin,
                    default_retry_after=self._default_retry_after)
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
                rate: float | None
                if fallback is not None and fallback.learning and fallback.phase == "steady" \
                        and fallback.rate:  # learned meanwhile
                    phase, rate, burst = "steady", fallback.rate, fallback.burst
                else:
                    phase, rate, burst = self.phase, self.rate, self.burst
                try:
                    if phase == "steady" and rate is not None:
                        # a Redis restarted empty gets back what this process knows
                        await self._call(self._seed_script, [
                            self._ttl_ms, "restore", "steady", f"{rate:.6f}", f"{burst:g}",
                            f"{burst + 1:g}"], keys=self.keys[:1])
                    else:
                        self.round_trips += 1
                        await asyncio.wait_for(self.redis.ping(), self._op_timeout)
                except _DOWN:
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
