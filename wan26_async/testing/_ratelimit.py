"""Rate limiter state for the emulator, one bucket or window per API key."""

from __future__ import annotations

import math
from typing import Protocol

import attrs

from ._config import FixedWindow, TokenBucket

__all__ = ["Limiter", "make_limiter"]


class Limiter(Protocol):
    """Admits or refuses one request of an API key at time `now` (monotonic seconds)."""

    def admit(self, key: str, now: float) -> float | None:
        """None when admitted, else the delay to announce in `Retry-After`."""


@attrs.define
class _Bucket:
    tokens: float
    updated: float


class _TokenBucketLimiter:
    def __init__(self, config: TokenBucket) -> None:
        self._config = config
        self._buckets: dict[str, _Bucket] = {}

    def admit(self, key: str, now: float) -> float | None:
        rate, burst = self._config.rate, self._config.burst
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(tokens=float(burst), updated=now)
        bucket.tokens = min(float(burst), bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        if self._config.retry_after is not None:
            return self._config.retry_after
        return (1.0 - bucket.tokens) / rate


@attrs.define
class _Window:
    start: float
    count: int


class _FixedWindowLimiter:
    def __init__(self, config: FixedWindow) -> None:
        self._config = config
        self._windows: dict[str, _Window] = {}

    def admit(self, key: str, now: float) -> float | None:
        window = self._windows.get(key)
        if window is None or now >= window.start + self._config.window:
            window = self._windows[key] = _Window(start=now, count=0)
        if window.count < self._config.limit:
            window.count += 1
            return None
        return max(1.0, float(math.ceil(window.start + self._config.window - now)))


def make_limiter(config: TokenBucket | FixedWindow | None) -> Limiter | None:
    """Fresh limiter state for `config` (None: no rate limit)."""
    if config is None:
        return None
    if isinstance(config, TokenBucket):
        return _TokenBucketLimiter(config)
    return _FixedWindowLimiter(config)
