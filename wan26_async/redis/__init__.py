"""A rate limiter shared by every process that uses one API key: its state lives in Redis.

    import wan26_async as wan
    from wan26_async.redis import RedisRateLimiter

    limiter = RedisRateLimiter.from_url("redis://localhost:6379/0")
    async with wan.AsyncWanClient(api_key, base_url, rate_limiter=limiter) as client:
        ...   # the client names the limit by its base URL and key (`scope_for`)
    await limiter.aclose()

Needs the optional extra: ``pip install "wan26-async[redis]"``.

It is the default `InProcessRateLimiter`'s learner (the 429 gate, slow start, a probe, a
fitted token bucket, recovery after a drop) with its state in Redis: the gate, the pace
and what was learned are shared by every process and machine whose limiter has the same
``scope`` (by default a hash of the base URL and the API key, never the key itself): one
429 pauses them all, and a rate learned by one paces the others. Each update is one Lua
script, atomic and one round trip, on Redis's clock. See "Scaling out" in the docs.

When Redis cannot be reached, each limiter falls back to an `InProcessRateLimiter` in
its own process (with a warning) and goes back to Redis once it answers again; it only
ever decides *when* a request leaves, so no request is lost or sent twice because of it.
"""

from __future__ import annotations

from ._limiter import RedisRateLimiter
from ._state import scope_for

__all__ = ["RedisRateLimiter", "scope_for"]
