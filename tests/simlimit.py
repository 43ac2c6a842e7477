"""A simulated clock, server limits and callers, to drive a limiter with no sockets.

`run(limiter, shape, ...)` runs callers that send back to back through ``limiter`` on an
event loop whose clock is virtual: a sleep or a timer moves the clock instead of
waiting, so a minute of traffic takes a fraction of a second. Each request takes a
simulated trip to the server (``latency`` plus up to ``jitter`` each way), where
``shape`` admits or refuses it as a server limit would, with a ``Retry-After``. The
callers talk to the limiter exactly as the transport does (`RateLimiter`'s contract).
"""

from __future__ import annotations

import asyncio
import math
import random
import selectors
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import attrs

from wan26_async import RateLimiter

T = TypeVar("T")


class _Selector(selectors.DefaultSelector):
    """A selector that, instead of blocking for ``timeout``, moves the clock by it."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = 1000.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            raise RuntimeError("simulation stalled: nothing is scheduled and nothing can wake")
        if timeout > 0:
            # at least a microsecond, as on a real clock: a timer a hair away must come
            self.clock += max(timeout, 1e-6)
        return super().select(0)


class VirtualLoop(asyncio.SelectorEventLoop):
    """An asyncio loop on a virtual clock (no I/O of its own but the self-pipe)."""

    def __init__(self) -> None:
        self._selector_ = _Selector()
        super().__init__(self._selector_)

    def time(self) -> float:
        return self._selector_.clock


def run_virtual(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


# -- server limits ----------------------------------------------------------------------


class Shape(Protocol):
    def admit(self, now: float) -> float | None:
        """None: admitted; else the Retry-After (s) of a 429."""


@attrs.define
class Bucket:
    """A token bucket (full at first); ``retry_after`` None: the time to the next token."""

    rate: float
    burst: float
    retry_after: float | None = 1.0
    tokens: float = attrs.field(default=math.nan)
    at: float | None = None

    def admit(self, now: float) -> float | None:
        if self.at is None:
            self.tokens, self.at = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return self.retry_after if self.retry_after is not None else (
            (1.0 - self.tokens) / self.rate)


@attrs.define
class FixedWindow:
    """``limit`` requests per window of ``window`` s; Retry-After points at its end."""

    limit: int
    window: float
    start: float | None = None
    count: int = 0

    def admit(self, now: float) -> float | None:
        if self.start is None or now >= self.start + self.window:
            self.start = now if self.start is None else (
                self.start + math.floor((now - self.start) / self.window) * self.window)
            self.count = 0
        if self.count < self.limit:
            self.count += 1
            return None
        return max(1.0, math.ceil(self.start + self.window - now))


@attrs.define
class SlidingWindow:
    """At most ``limit`` requests in any ``window`` s; Retry-After: until one slides out."""

    limit: int
    window: float
    times: deque[float] = attrs.field(factory=deque)

    def admit(self, now: float) -> float | None:
        while self.times and self.times[0] <= now - self.window:
            self.times.popleft()
        if len(self.times) < self.limit:
            self.times.append(now)
            return None
        return max(0.001, self.times[0] + self.window - now)


@attrs.define
class Changing:
    """One bucket whose rate changes at given times: ``[(from_time, rate), ...]`` (times
    from the start of the run)."""

    bucket: Bucket
    schedule: list[tuple[float, float]]
    origin: float | None = None

    def admit(self, now: float) -> float | None:
        if self.origin is None:
            self.origin = now
        for since, rate in self.schedule:
            if now - self.origin >= since:
                self.bucket.rate = rate
        return self.bucket.admit(now)


@attrs.define
class Shared:
    """A bucket of which other clients, unseen, take ``others`` requests/s."""

    bucket: Bucket
    others: float
    last: float | None = None

    def admit(self, now: float) -> float | None:
        if self.last is None:
            self.last = now
        while self.last + 1.0 / self.others <= now:  # the unseen clients' requests
            self.last += 1.0 / self.others
            self.bucket.admit(self.last)
        return self.bucket.admit(now)


# -- callers ----------------------------------------------------------------------------


@attrs.define
class Run:
    """What the server saw: when it admitted and refused (virtual s from the start)."""

    admitted: list[float] = attrs.field(factory=list)
    refused: list[float] = attrs.field(factory=list)
    duration: float = 0.0

    def rate(self, start: float, end: float) -> float:
        """Admitted requests/s between ``start`` and ``end``."""
        return sum(1 for t in self.admitted if start <= t < end) / (end - start)

    def refusals(self, start: float, end: float) -> int:
        return sum(1 for t in self.refused if start <= t < end)

    def admissions(self, start: float, end: float) -> int:
        return sum(1 for t in self.admitted if start <= t < end)


def run(
    limiter: RateLimiter,
    shape: Shape,
    *,
    seconds: float,
    callers: int,
    latency: float = 0.002,
    jitter: float = 0.0,
    seed: int = 0,
    send_cost: float = 0.0,
    first_trip: float = 0.0,
) -> Run:
    """Callers send back to back for ``seconds`` of virtual time through ``limiter``.

    ``send_cost`` (s) is the client's time to send one request, during which nothing
    else runs: requests let go together reach the server together, once all are sent
    (one event loop for client and server, as with the emulator; or a busy client).
    ``first_trip`` (s) more delays a request on its way to the server when it opens a
    connection: when more are in flight than ever before (a pool's connections are
    kept; the first requests of a client open theirs, and the server is slow to take
    its first ones)."""
    rng = random.Random(seed)
    out = Run(duration=seconds)
    wire = [0.0]  # when the client is done sending what it has let go
    pool = [0, 0]  # requests in flight, connections opened

    async def main() -> Run:
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + seconds

        def trip() -> float:
            return latency + rng.random() * jitter

        async def caller() -> None:
            while loop.time() < end:
                if not limiter.try_acquire():
                    await limiter.acquire()
                sent = loop.time()
                if send_cost:
                    wire[0] = max(sent, wire[0]) + send_cost
                    while loop.time() < wire[0]:  # noqa: ASYNC110 (virtual time; it moves)
                        await asyncio.sleep(wire[0] - loop.time())
                pool[0] += 1
                opening = pool[0] > pool[1]
                pool[1] = max(pool)
                await asyncio.sleep(trip() + (first_trip if opening else 0.0))
                pool[0] -= 1
                decided = loop.time()
                retry_after = shape.admit(decided)
                await asyncio.sleep(trip())
                if retry_after is None:
                    out.admitted.append(decided - start)
                    limiter.on_success(sent)
                    limiter.release()
                else:
                    out.refused.append(decided - start)
                    limiter.release()
                    await limiter.on_rate_limited(retry_after, sent)

        tasks = [asyncio.ensure_future(caller()) for _ in range(callers)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await limiter.aclose()
        return out

    return run_virtual(main)
