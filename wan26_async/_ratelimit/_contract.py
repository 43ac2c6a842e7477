"""The `RateLimiter` contract: what the transport tells a limiter, and when.

For every HTTP attempt the transport calls, in this order:

1. `try_acquire` (the hot path; False means "call `acquire`"), else ``await acquire()``:
   return when the request may leave;
2. it sends the request at ``sent_at = loop.time()`` (the running loop's clock);
3. `release` once the attempt is over, whatever its outcome;
4. `on_success(sent_at)` for every reply that is not a 429 ``rate_limit_exceeded``
   (the server admitted the request), or ``await on_rate_limited(retry_after, sent_at)``
   for one that is.

`bind` is called once, when a client is built with the limiter, with the client's base
URL and API key: a limiter shared between processes names its state by them.
"""

from __future__ import annotations

import abc

__all__ = ["RateLimiter"]


class RateLimiter(abc.ABC):
    """Decides when each request of a client may leave (see the module docstring).

    Subclass it to pace requests your own way: only `acquire` and `on_rate_limited` are
    required. Times given to it are ``loop.time()`` of the loop the client runs on; an
    implementation is bound to the event loop of its first use.
    """

    def bind(self, base_url: str, api_key: str) -> None:  # noqa: B027 - optional hook
        """A client was built with this limiter: its base URL and API key. A no-op by
        default; a limiter whose state outlives the process names it by these."""

    @abc.abstractmethod
    async def acquire(self) -> None:
        """Return when the next request may be sent. Cancellation-safe: a caller
        cancelled while waiting holds no slot."""

    def try_acquire(self) -> bool:
        """Take a send slot now without waiting, if one is free (the hot path); False
        means: call `acquire`. The default always says False."""
        return False

    def release(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """A request that passed `acquire` is over (whatever its outcome)."""

    def on_success(self, sent_at: float | None = None) -> None:  # noqa: B027 - optional
        """The request sent at ``sent_at`` (loop time) was admitted: its reply was not a
        429 ``rate_limit_exceeded``. None when the time is not known."""

    @abc.abstractmethod
    async def on_rate_limited(self, retry_after: float | None,
                              sent_at: float | None = None) -> None:
        """The request sent at ``sent_at`` was refused with 429 ``rate_limit_exceeded``:
        pause every caller until ``retry_after`` seconds from now (a default when the
        server gave none)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release what the limiter holds (timers, connections). Idempotent."""
