"""WanClient: the blocking facade, one `AsyncWanClient` on a private loop in one thread.

Every call is handed to that loop through an anyio `BlockingPortal` and the calling
thread waits for its result, so the facade works from plain code, from many threads
at once (they share the one client, its limiter and its ``max_concurrency``) and from
a thread whose own event loop is running (a notebook cell). An interrupted wait
(Ctrl-C) cancels its call on the loop before the interrupt goes on up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._callbacks import CallbackReceiver
from ._client import AsyncWanClient
from ._config import DEFAULT_MAX_CONCURRENCY, DEFAULT_TIMEOUT, MAX_RESPONSE_BYTES, RetryPolicy
from ._errors import APIConnectionError, WanError
from ._models import Credits, Outcome, Task, TaskEvent
from ._requests import VideoRequest
from ._watch import PollPolicy

if TYPE_CHECKING:
    from ._ratelimit import RateLimiter

__all__ = ["BlockingIterator", "WanClient"]

T = TypeVar("T")

#: How long an interrupted call may take to unwind on the loop before the interrupt
#: is raised anyway (a cancelled HTTP call ends in milliseconds).
_UNWIND_SECONDS = 10.0


class _Loop:
    """A daemon thread running an event loop with a `BlockingPortal` in its main task.

    The thread is a daemon so that a client nobody closed cannot keep the interpreter
    from exiting; `WanClient.close` stops and joins it.
    """

    def __init__(self) -> None:
        started: concurrent.futures.Future[tuple[BlockingPortal, asyncio.AbstractEventLoop]]
        started = concurrent.futures.Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                started.set_result((portal, asyncio.get_running_loop()))
                await portal.sleep_until_stopped()

        def main() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # pragma: no cover - only if the loop cannot start
                if not started.done():
                    started.set_exception(exc)

        self.thread = threading.Thread(target=main, name="wan26-WanClient", daemon=True)
        self.thread.start()
        self.portal, self.loop = started.result()


class BlockingIterator(Iterator[T]):
    """A plain iterator over an async iterator of a `WanClient` (``watch``, ``fan_out``).

    Each ``next()`` blocks until the next item. Leaving early never pays: ``close()``,
    the end of a ``with`` block, or dropping the iterator (a ``break`` out of a ``for``
    loop over it) closes the async iterator on the client's loop, which cancels every
    request not yet submitted. Use it from one thread at a time.
    """

    def __init__(self, owner: WanClient, source: AsyncIterator[T]) -> None:
        self._owner = owner
        self._source = source
        self._closed = False

    def __iter__(self) -> BlockingIterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return self._owner._run(self._source.__anext__)
        except StopAsyncIteration:
            self._closed = True
            raise StopIteration from None

    def close(self) -> None:
        """Stop now: nothing more is submitted, and this returns once that is so.
        Idempotent. Tasks already created keep running on the server."""
        if self._closed:
            return
        self._closed = True
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None and not self._owner._closed:
            self._owner._run(aclose)

    def __enter__(self) -> BlockingIterator[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self._owner._close_later(self._source)


class WanClient:
    """A blocking client of the Wan 2.6 video generation API.

    The same client as `AsyncWanClient`, for code that does not run an event loop:
    scripts, threads, notebooks, Django or Flask views, Celery tasks. Every method of
    the async client is here, blocking, with the same arguments and the same
    exceptions::

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

    The arguments are those of `AsyncWanClient`, except ``session`` (an aiohttp
    session belongs to one event loop; this client's loop is private). A
    ``callbacks`` receiver that is not running yet is started on the client's loop and
    stopped when the client closes.

    Raises `ConfigurationError` for a missing or malformed key or an unsafe base URL.
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
    ) -> None:
        self._closed = True  # until the loop runs and the async client is built
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Calls running now, each with the event set once it has unwound on the loop.
        self._calls: dict[concurrent.futures.Future[Any], threading.Event] = {}
        self._iterators: weakref.WeakSet[BlockingIterator[Any]] = weakref.WeakSet()
        self._closers: set[asyncio.Future[Any]] = set()  # touched on the loop only
        self._callbacks: CallbackReceiver | None = None  # the receiver this client started
        loop = self._loop = _Loop()

        def build() -> AsyncWanClient:
            return AsyncWanClient(
                api_key, base_url, max_concurrency=max_concurrency, max_retries=max_retries,
                timeout=timeout, rate_limiter=rate_limiter, callbacks=callbacks, retry=retry,
                poll=poll, resend_ambiguous_creates=resend_ambiguous_creates,
                allow_insecure_http=allow_insecure_http, max_response_bytes=max_response_bytes,
            )

        try:
            self._client = loop.portal.call(build)
            if callbacks is not None and not _running(callbacks):
                loop.portal.call(callbacks.start)
                self._callbacks = callbacks
        except BaseException:
            loop.portal.call(loop.portal.stop, True)
            loop.thread.join()
            raise
        self._closed = False

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

        Calls running in other threads at that moment raise `APIConnectionError`.
        In a process forked from the one that made the client this only forgets it
        (its thread does not exist there).
        """
        if threading.get_ident() == self._loop.thread.ident:
            raise WanError("close() was called on the WanClient's own thread (from a "
                           "download progress callback?); close it from your code instead")
        with self._lock:
            if self._closed:
                return
            self._closed = True
            calls = list(self._calls.items())
        if os.getpid() != self._pid:
            return
        for call, _ in calls:
            call.cancel()
        for _, unwound in calls:  # an iterator's step must end before it can be closed
            unwound.wait(_UNWIND_SECONDS)
        portal = self._loop.portal
        sources = [it._source for it in list(self._iterators) if not it._closed]
        portal.call(self._shutdown, sources)
        portal.call(portal.stop, True)
        self._loop.thread.join()

    async def _shutdown(self, sources: list[AsyncIterator[Any]]) -> None:
        with anyio.CancelScope(shield=True):
            for source in sources:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):  # it failed on its own
                        await aclose()
            if self._closers:
                await asyncio.gather(*self._closers, return_exceptions=True)
            await self._client.aclose()
            if self._callbacks is not None:
                await self._callbacks.stop()

    def __del__(self, _warn: Callable[..., None] = warnings.warn) -> None:
        if getattr(self, "_closed", True) or os.getpid() != self._pid:
            return
        self._closed = True
        _warn(f"unclosed {self!r}: call close() or use 'with WanClient() as client:'",
              ResourceWarning, source=self)
        portal, client = self._loop.portal, self._client

        async def shut() -> None:
            try:
                await client.aclose()
            finally:
                await portal.stop(cancel_remaining=True)

        _soon(self._loop.loop, shut)

    def _close_later(self, source: AsyncIterator[Any]) -> None:
        """Close an iterator dropped without ``close()``. Called from ``__del__``, so in
        any thread: on the loop's own it is only scheduled; elsewhere (a ``break`` out of
        a ``for`` loop) it returns once the iterator is closed, so nothing is submitted
        after the loop is left."""
        aclose = getattr(source, "aclose", None)
        if aclose is None or self._closed or os.getpid() != self._pid:
            return
        closers, closed = self._closers, threading.Event()

        async def run() -> None:
            try:
                await aclose()
            finally:
                closed.set()

        def track(future: asyncio.Future[Any]) -> None:
            closers.add(future)
            future.add_done_callback(closers.discard)

        _soon(self._loop.loop, run, track)
        thread = self._loop.thread
        if threading.get_ident() != thread.ident and thread.is_alive() \
                and not sys.is_finalizing():
            closed.wait(_UNWIND_SECONDS)

    # -- running a call on the loop -----------------------------------------------------

    def _check_usable(self) -> None:
        if os.getpid() != self._pid:
            raise WanError(
                f"this WanClient was made in process {self._pid} and cannot be used in "
                f"process {os.getpid()} (after os.fork(), e.g. a Celery prefork or "
                "multiprocessing worker): its thread does not exist here; make one "
                "WanClient per process, after the fork"
            )
        if self._closed:
            raise APIConnectionError("the client is closed; create a new WanClient")
        if threading.get_ident() == self._loop.thread.ident:
            raise WanError("a WanClient method was called on the client's own thread (from "
                           "a download progress callback?); call it from your code instead")

    def _run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call()`` on the loop and wait for its result in this thread."""
        self._check_usable()
        unwound = threading.Event()

        async def run() -> T:
            try:
                return await call()
            finally:
                unwound.set()

        with self._lock:
            if self._closed:
                raise APIConnectionError("the client is closed; create a new WanClient")
            future = self._loop.portal.start_task_soon(run)
            self._calls[future] = unwound
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise APIConnectionError("the WanClient was closed while this call ran") from None
        except BaseException:
            # Interrupted while waiting (KeyboardInterrupt from Ctrl-C, or an exception a
            # signal handler raised): cancel the call on the loop and let it unwind first.
            if not future.done():
                future.cancel()
                unwound.wait(_UNWIND_SECONDS)
            raise
        finally:
            with self._lock:
                self._calls.pop(future, None)

    def _iterate(self, make: Callable[[], AsyncIterator[T]]) -> BlockingIterator[T]:
        self._check_usable()
        iterator = BlockingIterator(self, self._loop.portal.call(make))
        self._iterators.add(iterator)
        return iterator

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
        `InsufficientCreditsError`, `SpendLimitError` and the other `APIError`\\ s; and,
        when the request was sent but no clear answer came back, an error that is also
        `AmbiguousSubmissionError` (the task may exist; it is not resent unless
        ``resend_ambiguous``/``resend_ambiguous_creates`` is set).
        """
        return self._run(lambda: self._client.create_task(
            request, callback_url=callback_url, idempotency_key=idempotency_key,
            resend_ambiguous=resend_ambiguous))

    def get_task(self, task_id: str) -> Task:
        """The task as the server sees it now. Raises `TaskNotFoundError` for an unknown id."""
        return self._run(lambda: self._client.get_task(task_id))

    def get_credits(self) -> Credits:
        """The account's credit balance."""
        return self._run(self._client.get_credits)

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
        return self._run(lambda: self._client.download(url, dest, progress=progress))

    # -- waiting ------------------------------------------------------------------------

    def watch(
        self, task_id: str, *, timeout: float | None = None, poll: PollPolicy | None = None
    ) -> BlockingIterator[TaskEvent]:
        """Yield a `TaskEvent` per status change of the task, the first at once, and stop
        after ``COMPLETED`` or ``FAILED``.

        Transient failures (connection errors, 5xx, 429, malformed replies) are retried
        inside the watch; `TaskNotFoundError` and auth errors are raised.
        ``timeout`` (seconds) raises `WatchTimeoutError` with the last seen task.
        ``close()`` the iterator (or use ``with``) to stop watching early::

            for event in client.watch(task.id, timeout=600):
                print(f"{event.elapsed:5.1f}s {event.previous} -> {event.status}")
        """
        return self._iterate(lambda: self._client.watch(task_id, timeout=timeout, poll=poll))

    def wait(self, task_id: str, *, timeout: float | None = None,
             poll: PollPolicy | None = None) -> Task:
        """Wait for the task to finish; return it when ``COMPLETED``.

        Raises `TaskFailedError` (with ``.task`` and ``.reason``) when it ``FAILED``,
        `WatchTimeoutError` when ``timeout`` passes first.
        """
        return self._run(lambda: self._client.wait(task_id, timeout=timeout, poll=poll))

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
        return self._run(lambda: self._client.generate(
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
        keep running on the server)::

            with client.fan_out(requests, concurrency=32) as outcomes:
                for outcome in outcomes:
                    print(outcome.index, outcome.task.video_url if outcome.ok else outcome.error)
        """
        return self._iterate(lambda: self._client.fan_out(
            requests, concurrency=concurrency, callback_url=callback_url, ordered=ordered,
            timeout=timeout, check_credits=check_credits))


def _running(receiver: CallbackReceiver) -> bool:
    try:
        receiver.url  # noqa: B018 - raises RuntimeError until the receiver is started
    except RuntimeError:
        return False
    return True


def _soon(
    loop: asyncio.AbstractEventLoop,
    work: Callable[[], Awaitable[None]],
    track: Callable[[asyncio.Future[Any]], None] | None = None,
) -> None:
    """Start ``work()`` on ``loop`` from any thread, without waiting (for ``__del__``)."""

    def start() -> None:
        future = asyncio.ensure_future(work())
        _pending.add(future)
        future.add_done_callback(_pending.discard)
        if track is not None:
            track(future)

    with contextlib.suppress(RuntimeError):  # a closed loop: nothing runs there any more
        loop.call_soon_threadsafe(start)


#: Strong references to the work `_soon` started, so it is not collected half-done.
_pending: set[asyncio.Future[Any]] = set()
