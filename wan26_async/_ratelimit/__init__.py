"""When a request may leave: the `RateLimiter` contract, the one learner and its
in-memory store (`wan26_async.redis` holds the Redis store of the same learner)."""

from __future__ import annotations

from ._contract import RateLimiter
from ._fit import fit_bucket, fit_rate
from ._learner import Learner, LimitState
from ._memory import InProcessRateLimiter

__all__ = ["InProcessRateLimiter", "Learner", "LimitState", "RateLimiter", "fit_bucket",
           "fit_rate"]
