"""The settings half of `AsyncWanClient`: read-only settings from one frozen config,
views with other settings (`with_options`), and the closed-client guard of every call."""

from __future__ import annotations

import copy
from types import TracebackType
from typing import TYPE_CHECKING, Protocol

import aiohttp

from ._config import ClientConfig, PollPolicy, RetryPolicy
from ._errors import APIConnectionError, ClientClosedError, WanError, as_ambiguous
from ._lifecycle import Lifecycle
from ._ratelimit import RateLimiter
from ._transport import Transport
from ._watch import PushSource

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["CLOSED_UNDER", "CallbackSource", "ClientSettings", "closed_error"]


class CallbackSource(PushSource, Protocol):
    """What a client needs of a callback receiver (see ``wan.CallbackReceiver``)."""

    @property
    def callback_url(self) -> str: ...

    def _expect(self, task_id: str) -> None: ...


class ClientSettings:
    """Settings and lifecycle shared by `AsyncWanClient` and its views."""

    _config: ClientConfig
    _transport: Transport
    _lifecycle: Lifecycle
    _view: bool
    _rate_limiter: RateLimiter
    _callbacks: CallbackSource | None
    _download_timeout: aiohttp.ClientTimeout

    def _configure(self, config: ClientConfig) -> None:
        self._config = config
        # A download may take long: only connecting and each read are bounded.
        self._download_timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=config.timeout, sock_read=config.timeout)

    # -- settings (read-only: one frozen config; a different one is `with_options`) ---

    @property
    def base_url(self) -> str:
        return self._config.base_url

    @property
    def max_concurrency(self) -> int:
        """Requests in flight at once, across every call of this client and its views."""
        return self._config.max_concurrency

    @property
    def timeout(self) -> float:
        """Seconds per HTTP call."""
        return self._config.timeout

    @property
    def retry(self) -> RetryPolicy:
        """How each HTTP call (and each download) retries."""
        return self._config.retry

    @property
    def poll(self) -> PollPolicy:
        """How watches poll (the default of ``watch(poll=...)``)."""
        return self._config.poll

    @property
    def resend_ambiguous_creates(self) -> bool:
        return self._config.resend_ambiguous_creates

    @property
    def rate_limiter(self) -> RateLimiter:
        """The limiter every call passes through (shared with this client's views)."""
        return self._rate_limiter

    @property
    def callbacks(self) -> CallbackSource | None:
        return self._callbacks

    def with_options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
    ) -> Self:
        """A view of this client with other per-call settings; the rest is shared.

        The view uses this client's session and connection pool, ``max_concurrency``,
        limiter (``view.rate_limiter is client.rate_limiter``), callbacks and learned
        poll schedule; settings not given are this client's. ``max_retries`` alone keeps
        the backoff of ``client.retry``. A view needs no closing: closing the client
        closes its views. Closing a view closes only the view (its later calls raise
        `ClientClosedError`); the client stays open:

            fast = client.with_options(timeout=10, max_retries=0)
            credits = await fast.get_credits()

        Raises `ConfigurationError` for a timeout that is not positive or for both
        ``max_retries`` and ``retry``.
        """
        config = self._config.evolve(timeout=timeout, max_retries=max_retries, retry=retry,
                                     poll=poll)
        view = copy.copy(self)  # shares the transport's pool, the limiter, the planner...
        view._configure(config)
        view._transport = self._transport.with_options(retry=config.retry,
                                                       timeout=config.timeout)
        view._lifecycle = self._lifecycle.child()
        view._view = True
        return view

    def _open(self, idempotency_key: str | None = None) -> _Call:
        """Run one call: `ClientClosedError` at once when this client is closed, and as
        soon as it closes during the call (a create then also `AmbiguousSubmissionError`:
        it may have been sent). The call's waits end through the transport's
        ``closed=`` (a scope only where it waits); a request in flight ends when closing
        closes the session under it."""
        self._lifecycle.check()
        return _Call(self._lifecycle, idempotency_key)


#: What a call fails with when its client closed under it (RuntimeError: aiohttp's
#: "Session is closed").
CLOSED_UNDER = (ClientClosedError, APIConnectionError, aiohttp.ClientError, RuntimeError)


class _Call:
    """The context of one call (see `ClientSettings._open`): a class, not a generator,
    since every call enters one."""

    __slots__ = ("idempotency_key", "life")

    def __init__(self, life: Lifecycle, idempotency_key: str | None) -> None:
        self.life = life
        self.idempotency_key = idempotency_key

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None or not self.life.closed or not isinstance(exc, CLOSED_UNDER):
            return
        raise closed_error(self.life, self.idempotency_key) from exc


def closed_error(life: Lifecycle, idempotency_key: str | None) -> WanError:
    """What a call fails with when ``life`` closed under it (see `ClientSettings._open`);
    for a create (``idempotency_key`` set), also an `AmbiguousSubmissionError`."""
    err = life.error()
    return err if idempotency_key is None else as_ambiguous(err, idempotency_key)

