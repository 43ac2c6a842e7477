"""Defaults in one place, and the small value objects that configure a client."""

from __future__ import annotations

import random
from typing import Final

import attrs

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "RetryPolicy",
    "grow",
]

DEFAULT_BASE_URL: Final = "https://api.aivideoapi.ai"
DEFAULT_MAX_CONCURRENCY: Final = 64
DEFAULT_MAX_RETRIES: Final = 5
DEFAULT_TIMEOUT: Final = 60.0
#: Largest API reply body read (replies are small JSON; anything bigger is refused).
MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
API_KEY_ENV: Final = "WAN_API_KEY"
BASE_URL_ENV: Final = "WAN_BASE_URL"

CREATE_PATH: Final = "/v1/videos/generations"
TASK_PATH: Final = "/v1/tasks/"
CREDITS_PATH: Final = "/v1/credits"


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How one HTTP call retries a retryable failure.

    Waits grow exponentially from ``initial_backoff`` by ``multiplier`` up to
    ``max_backoff``, with full jitter (a uniform draw between 0 and that bound), so
    many callers failing together do not retry together. A server's ``Retry-After``
    is honoured instead when present; one longer than ``max_retry_after`` is not
    slept on: the error is raised with ``.retry_after`` set.

    >>> RetryPolicy(max_retries=2).max_retries
    2
    """

    max_retries: int = attrs.field(default=DEFAULT_MAX_RETRIES)
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    multiplier: float = 2.0
    max_retry_after: float = 120.0

    @max_retries.validator
    def _check_retries(self, _: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {value!r}")

    def backoff(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based), with full jitter."""
        bound = grow(self.initial_backoff, self.multiplier, attempt, self.max_backoff)
        return (rng or random).uniform(0.0, bound)


def grow(initial: float, multiplier: float, n: int, cap: float) -> float:
    """``min(cap, initial * multiplier ** n)``, also where the power overflows a float."""
    try:
        return min(cap, initial * multiplier**n)
    except OverflowError:
        return cap
