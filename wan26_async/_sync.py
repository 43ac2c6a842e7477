"""WanClient: the blocking facade, one `AsyncWanClient` on a private loop in one thread.

Every call is handed to that loop through an anyio `BlockingPortal` (see `_portal`)
and the calling thread waits for its result, so the facade works from plain code, from
many threads at once (they share the one client, its limiter and its
``max_concurrency``) and from a thread whose own event loop is running (a notebook
cell). The methods are the async client's, a few lines each.
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._callbacks import CallbackReceiver
from ._client import AsyncWanClient
from ._config import (
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    PollPolicy,
    RetryPolicy,
)
from ._models import Credits, Outcome, Task, TaskEvent
from ._portal import BlockingIterator, LoopThread
from ._requests import VideoRequest

if TYPE_CHECKING:
    from ._ratelimit import RateLimiter

__all__ = ["WanClient"]


class WanClient:
    """A blocking client of the Wan 2.6 video generation API.

    The same client as `AsyncWanClient`, for code that does not run an event loop:
    scripts, threads, notebooks, Django or Flask views, Celery tasks. Every method of
    the async client is here, blocking, with the same arguments and the same
    exceptions:

        with WanClient() as client:                  # WAN_API_KEY from the environment
            task = client.generate(TextToVideo(prompt="a robot in the rain"))
            client.download(task.video_url, "robot.mp4")

    The client runs one `AsyncWanClient` on a private event loop in one background
    thread, so it also works where an event loop is already running (a notebook cell,
    where ``asyncio.run`` fails). It is thread-safe: share one client between threads
    and they share its connection pool, its limiter and ``max_concurrency``. Ctrl-C
    during a call cancels that call cleanly and raises `KeyboardInterrupt`.

    Close it (or leave ``with``) to end its thread; one never closed warns with a
    `ResourceWarning`. A client belongs to the process that made it: after
    ``os.fork()`` (Celery's prefork pool, ``multiprocessing``) make a new one in the
    child, where the parent's raises `WanError`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_retries: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        rate_limiter: RateLimiter | None = None,
        callbacks: CallbackReceiver | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        resend_ambiguous_creates: bool = False,
        allow_insecure_http: bool = False,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        tracer_provider: object | None = None,
        meter_provider: object | None = None,
    ) -> None:
        """Start the client's thread; the connection pool is opened by the first call.

        The arguments are those of `AsyncWanClient`, except ``session`` (an aiohttp
        session belongs to one event loop, and this client's loop is private):

        - ``api_key``: the API key (``sk-...``); default ``$WAN_API_KEY``.
        - ``base_url``: the gateway; default ``$WAN_BASE_URL``, else
          ``https://api.aivideoapi.ai``.
        - ``max_concurrency``: requests in flight at once, across every thread using the
          client.
        - ``max_retries``: how often one HTTP call is retried after a retryable failure
          (default 5); or ``retry``, a `RetryPolicy` that sets the backoff too (not both).
        - ``timeout``: seconds per HTTP call.
        - ``rate_limiter``: replaces the in-process limiter the client makes and owns,
          for example with ``wan26_async.redis.RedisRateLimiter`` to pace many processes
          that share one key. It runs on this client's thread, so no other client can
          use it: `close` closes it too (a Redis limiter's connections with it).
        - ``callbacks``: a `CallbackReceiver`; creates carry its URL, and watches take the
          updates it receives instead of polling. One not running yet is started on the
          client's loop and stopped when the client closes.
        - ``poll``: a `PollPolicy`, how watches poll.
        - ``resend_ambiguous_creates``: resend a create whose reply was lost, with the same
          ``Idempotency-Key`` (safe only on a gateway that honours the key).
        - ``allow_insecure_http``: allow a plain ``http://`` base URL to a host other than
          loopback (the key then travels unencrypted).
        - ``max_response_bytes``: the largest reply body read; a bigger one raises
          `MalformedResponseError`.
        - ``tracer_provider``, ``meter_provider``: OpenTelemetry providers (``otel`` extra)
          for this client's spans and metrics, instead of the global ones.

        Raises `ConfigurationError` for a missing or malformed key, an unsafe base URL, or
        a setting out of range.
        """
        self._loop = loop = LoopThread("WanClient")
        self._started: CallbackReceiver | None = None  # a receiver this client started
        self._limiter = rate_limiter  # given: bound to this loop, closed with the client
        self._view = False  # a with_options view: shares the loop, does not own it

        def build() -> AsyncWanClient:
            return AsyncWanClient(
                api_key, base_url, max_concurrency=max_concurrency, max_retries=max_retries,
                timeout=timeout, rate_limiter=rate_limiter, callbacks=callbacks, retry=retry,
                poll=poll, resend_ambiguous_creates=resend_ambiguous_creates,
                allow_insecure_http=allow_insecure_http, max_response_bytes=max_response_bytes,
                tracer_provider=tracer_provider, meter_provider=meter_provider,
            )

        try:
            self._client = loop.call_soon(build)
            if callbacks is not None and not _running(callbacks):
                loop.run(callbacks.start)
                self._started = callbacks
        except BaseException:
            loop.close(self._aclose if hasattr(self, "_client") else _nothing)
            raise

    @property
    def base_url(self) -> str:
        """The API's base URL, without a trailing slash."""
        return self._client.base_url

    @property
    def max_concurrency(self) -> int:
        """Requests in flight at once, across every thread using this client."""
        return self._client.max_concurrency

    @property
    def rate_limiter(self) -> RateLimiter:
        """The limiter every HTTP call of this client passes through."""
        return self._client.rate_limiter

    def __repr__(self) -> str:
        return f"WanClient(base_url={self._client.base_url!r}, api_key=<hidden>)"

    # -- lifecycle ----------------------------------------------------------------------

    def __enter__(self) -> WanClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client: stop its open iterators and calls still running, close
        every connection it opened, end its thread. Idempotent.

        Calls running in other threads at that moment, and every call or watch after
        it, raise `ClientClosedError` (as the async client's do). In a process forked
        from the one that made the client this only forgets it (its thread does not
        exist there).
        """
        if self._view:
            if not self._loop.closed and not self._loop.forked:
                self._loop.run(self._client.aclose)
            return
        self._loop.close(self._aclose)

    async def _aclose(self) -> None:
        try:
            await self._client.aclose()
        finally:
            try:
                if self._started is not None:
                    await self._started.stop()
            finally:
                if self._limiter is not None:
                    await self._limiter.aclose()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        loop = getattr(self, "_loop", None)
        if loop is not None and hasattr(self, "_client") and not self._view \
                and loop.abandon(self._aclose):
            _warn(f"unclosed {self!r}: call close() or use 'with WanClient() as client:'",
                  ResourceWarning, source=self)

    def with_options(
        self,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
    ) -> WanClient:
        """A view of this client with other per-call settings; the rest is shared.

        The view uses this client's thread, connection pool, ``max_concurrency``,
        limiter (``view.rate_limiter is client.rate_limiter``), callbacks and learned
        poll schedule; settings not given are this client's. A view needs no closing:
        closing the client closes its views. Closing a view closes only the view:

            fast = client.with_options(timeout=10, max_retries=0)
            credits = fast.get_credits()

        Raises `ConfigurationError` for a timeout that is not positive or for both
        ``max_retries`` and ``retry``.
        """
        self._loop.check_usable()
        view = copy.copy(self)
        view._client = self._loop.call_soon(lambda: self._client.with_options(
            timeout=timeout, max_retries=max_retries, retry=retry, poll=poll))
        view._started, view._view, view._limiter = None, True, None
        return view

    # -- calls --------------------------------------------------------------------------

    def create_task(
        self,
        request: VideoRequest,
        *,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        resend_ambiguous: bool | None = None,
    ) -> Task:
        """Submit a generation and return the new task (status ``PENDING``).

        Credits (``request.estimated_credits``) are charged now and refunded if the task
        fails. ``callback_url`` asks the server to POST the result there.
        Every create carries an ``Idempotency-Key`` (``idempotency_key``, or a fresh one).

        Raises `ValidationError` before any I/O for a bad request or callback URL;
        `InsufficientCreditsError`, `SpendLimitError` and every other `APIError`; and,
        when the request was sent but no clear answer came back, an error that is also
        `AmbiguousSubmissionError` (the task may exist; it is not resent unless
        ``resend_ambiguous``/``resend_ambiguous_creates`` is set).
        """
        return self._loop.run(lambda: self._client.create_task(
            request, callback_url=callback_url, idempotency_key=idempotency_key,
            resend_ambiguous=resend_ambiguous))

    def get_task(self, task_id: str) -> Task:
        """The task as the server sees it now. Raises `TaskNotFoundError` for an unknown id."""
        return self._loop.run(lambda: self._client.get_task(task_id))

    def get_credits(self) -> Credits:
        """The account's credit balance."""
        return self._loop.run(self._client.get_credits)

    def download(
        self,
        url: str,
        dest: str | os.PathLike[str],
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Download a result video to ``dest`` (a file path, or a directory to put it in)
        and return the file's path.

        The video is streamed to disk in chunks (memory stays flat), written to a
        temporary file beside ``dest`` and renamed on success, so a failure never leaves
        a half-written file. A dropped connection is resumed where it stopped (HTTP
        range) up to the retry policy's limit. ``progress(done, total)`` is called as
        bytes arrive (``total`` None when the host does not say), on the client's own
        thread: keep it short, and do not call the client from it. The API key is never
        sent to the video host.

            task = client.generate(request)
            path = client.download(task.video_url, "out.mp4")

        Raises `ValidationError` for a URL that is not http(s), `APIError` for an error
        reply of the host, `APIConnectionError` when the retries run out.
        """
        return self._loop.run(lambda: self._client.download(url, dest, progress=progress))

    # -- waiting ------------------------------------------------------------------------

    def watch(
        self, task_id: str, *, timeout: float | None = None, poll: PollPolicy | None = None
    ) -> BlockingIterator[TaskEvent]:
        """Yield a `TaskEvent` per status change of the task, the first at once, and stop
        after ``COMPLETED`` or ``FAILED``.

        Transient failures (connection errors, 5xx, 429, malformed replies) are retried
        inside the watch; `TaskNotFoundError` and auth errors are raised.
        ``timeout`` (seconds) raises `WatchTimeoutError` with the last seen task.
        ``close()`` the iterator (or use ``with``) to stop watching early:

            for event in client.watch(task.id, timeout=600):
                print(f"{event.elapsed:5.1f}s {event.previous} -> {event.status}")
        """
        return self._loop.iterate(lambda: self._client.watch(task_id, timeout=timeout, poll=poll))

    def wait(self, task_id: str, *, timeout: float | None = None,
             poll: PollPolicy | None = None) -> Task:
        """Wait for the task to finish; return it when ``COMPLETED``.

        Raises `TaskFailedError` (with ``.task`` and ``.reason``) when it ``FAILED``,
        `WatchTimeoutError` when ``timeout`` passes first.
        """
        return self._loop.run(lambda: self._client.wait(task_id, timeout=timeout, poll=poll))

    def generate(
        self,
        request: VideoRequest,
        *,
        timeout: float | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Create a task and wait for it: `create_task` then `wait`.

        ``timeout`` bounds the wait (not the create). Raises as both do.
        """
        return self._loop.run(lambda: self._client.generate(
            request, timeout=timeout, callback_url=callback_url,
            idempotency_key=idempotency_key))

    def fan_out(
        self,
        requests: Iterable[VideoRequest | Mapping[str, Any]],
        *,
        concurrency: int = 32,
        callback_url: str | None = None,
        ordered: bool = False,
        timeout: float | None = None,
        check_credits: bool = False,
    ) -> BlockingIterator[Outcome]:
        """Run many generations at once; yield one `Outcome` per request as each finishes.

        At most ``concurrency`` generations run at a time. One failure does not stop the
        others; it is that outcome's ``error``. A 402 insufficient credits or a 429
        spend limit stops new submissions: the requests not yet submitted come back with
        a `NotSubmittedError`, and tasks already running are watched to the end.
        ``ordered=True`` yields the outcomes in input order instead. ``timeout`` bounds
        each task's wait. ``check_credits=True`` first compares the batch's
        ``estimated_credits`` with the balance and raises `InsufficientCreditsError`
        without submitting anything when it is short.

        Items may be request objects or create bodies (``{"model", "input"}``, with an
        optional ``callback_url``); an invalid body is that item's outcome.

        Leaving early never pays: ``close()``, the end of a ``with`` block or a
        ``break`` stops submitting; no create is sent afterwards (tasks already created
        keep running on the server):

            with client.fan_out(requests, concurrency=32) as outcomes:
                for outcome in outcomes:
                    print(outcome.index, outcome.task.video_url if outcome.ok else outcome.error)
        """
        return self._loop.iterate(lambda: self._client.fan_out(
            requests, concurrency=concurrency, callback_url=callback_url, ordered=ordered,
            timeout=timeout, check_credits=check_credits))


def _running(receiver: CallbackReceiver) -> bool:
    try:
        receiver.url  # noqa: B018 - raises RuntimeError until the receiver is started
    except RuntimeError:
        return False
    return True


async def _nothing() -> None:
    """What closing a client whose start failed has to finish: nothing."""
