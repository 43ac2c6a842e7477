"""The machinery under `WanClient`: one event loop in one daemon thread, and the calls of
other threads into it through an anyio `BlockingPortal`.

`LoopThread` runs calls (`run`), wraps async iterators as plain ones (`iterate`) and
closes everything it started (`close`, or `abandon` from ``__del__``). A call whose
waiting thread is interrupted (Ctrl-C) is cancelled on the loop and unwinds there
before the interrupt goes on up. A `LoopThread` belongs to the process that made it:
after ``os.fork()`` the child has none of its thread, and every use raises `WanError`.
Once closed, every use raises `ClientClosedError`, as the async client's calls do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import sys
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from ._errors import ClientClosedError, WanError

__all__ = ["BlockingIterator", "LoopThread", "UNWIND_SECONDS"]

T = TypeVar("T")

#: How long an interrupted or dropped call may take to unwind on the loop before the
#: caller goes on anyway (a cancelled HTTP call ends in milliseconds).
UNWIND_SECONDS = 10.0


class BlockingIterator(Iterator[T]):
    """A plain iterator over an async iterator of a `WanClient` (``watch``, ``fan_out``).

    Each ``next()`` blocks until the next item. Leaving early never pays: ``close()``,
    the end of a ``with`` block, or dropping the iterator (a ``break`` out of a ``for``
    loop over it) closes the async iterator on the client's loop, which cancels every
    request not yet submitted. Use it from one thread at a time.
    """

    def __init__(self, loop: LoopThread, source: AsyncIterator[T]) -> None:
        self._loop = loop
        self._source = source
        self._closed = False

    def __iter__(self) -> BlockingIterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return self._loop.run(self._source.__anext__)
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
        if aclose is not None and not self._loop.closed:
            self._loop.run(aclose)

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
            self._loop.close_later(self._source)


class LoopThread:
    """An event loop in a daemon thread, and the calls of other threads into it.

    The thread is a daemon so that a client nobody closed cannot keep the interpreter
    from exiting; `close` stops and joins it. ``name`` names the owner in errors.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False
        self._pid = os.getpid()
        self._lock = threading.Lock()
        # Calls running now, each with the event set once it has unwound on the loop.
        self._calls: dict[concurrent.futures.Future[Any], threading.Event] = {}
        self._iterators: weakref.WeakSet[BlockingIterator[Any]] = weakref.WeakSet()
        self._closers: set[asyncio.Future[Any]] = set()  # touched on the loop only
        started: concurrent.futures.Future[tuple[BlockingPortal, asyncio.AbstractEventLoop]]
        started = concurrent.futures.Future()

        async def serve() -> None:
            async with BlockingPortal() as portal:
                started.set_result((portal, asyncio.get_running_loop()))
                await portal.sleep_until_stopped()

        def main() -> None:
            try:
                anyio.run(serve)
            except BaseException as exc:  # pragma: no cover - only if no loop can start
                if not started.done():
                    started.set_exception(exc)

        self.thread = threading.Thread(target=main, name=f"wan26-{name}", daemon=True)
        self.thread.start()
        self.portal, self.loop = started.result()

    @property
    def forked(self) -> bool:
        """True in a process forked from the one that made this (its thread is not here)."""
        return os.getpid() != self._pid

    def check_usable(self) -> None:
        """Raise the error a call would get now: forked, closed, or on the loop's thread."""
        if self.forked:
            raise WanError(
                f"this {self.name} was made in process {self._pid} and cannot be used in "
                f"process {os.getpid()} (after os.fork(), e.g. a Celery prefork or "
                f"multiprocessing worker): its thread does not exist here; make one "
                f"{self.name} per process, after the fork"
            )
        if self.closed:
            raise self.closed_error()
        if threading.get_ident() == self.thread.ident:
            raise WanError(f"a {self.name} method was called on the client's own thread "
                           "(from a download progress callback?); call it from your code")

    def closed_error(self, when: str = "") -> ClientClosedError:
        """The error of a call on (or ended by) a closed client: what happened, what to do."""
        return ClientClosedError(
            f"this {self.name} was closed{when} (close() was called, or its 'with' block "
            f"ended); make calls before closing it, or create a new client")

    def call_soon(self, func: Callable[[], T]) -> T:
        """Run plain ``func()`` on the loop's thread (for set-up: no cancellation)."""
        return self.portal.call(func)

    def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call()`` on the loop and wait for its result in this thread."""
        self.check_usable()
        unwound = threading.Event()

        async def run() -> T:
            try:
                return await call()
            finally:
                unwound.set()

        with self._lock:
            if self.closed:
                raise self.closed_error()
            future = self.portal.start_task_soon(run)
            self._calls[future] = unwound
        try:
            return future.result()
        except concurrent.futures.CancelledError:  # only `close` cancels a call's future
            raise self.closed_error(" while this call ran") from None
        except BaseException:
            # Interrupted while waiting (KeyboardInterrupt from Ctrl-C, or an exception a
            # signal handler raised): cancel the call on the loop and let it unwind first.
            if not future.done():
                future.cancel()
                unwound.wait(UNWIND_SECONDS)
            raise
        finally:
            with self._lock:
                self._calls.pop(future, None)

    def iterate(self, make: Callable[[], AsyncIterator[T]]) -> BlockingIterator[T]:
        """A plain iterator over the async iterator ``make()`` builds on the loop."""
        self.check_usable()
        iterator = BlockingIterator(self, self.portal.call(make))
        self._iterators.add(iterator)
        return iterator

    def close_later(self, source: AsyncIterator[Any]) -> None:
        """Close an iterator dropped without ``close()``. Called from ``__del__``, so in
        any thread: on the loop's own it is only scheduled; elsewhere (a ``break`` out of
        a ``for`` loop) it returns once the iterator is closed, so nothing is submitted
        after the loop is left."""
        aclose = getattr(source, "aclose", None)
        if aclose is None or self.closed or self.forked:
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

        _soon(self.loop, run, track)
        if threading.get_ident() != self.thread.ident and self.thread.is_alive() \
                and not sys.is_finalizing():
            closed.wait(UNWIND_SECONDS)

    def close(self, finish: Callable[[], Awaitable[None]]) -> None:
        """Cancel the calls still running, close the open iterators, run ``finish()``
        (closing the async client), stop the loop and join its thread. Idempotent; in
        a forked child it only marks this closed."""
        if threading.get_ident() == self.thread.ident:
            raise WanError(f"close() was called on the {self.name}'s own thread (from a "
                           "download progress callback?); close it from your code instead")
        with self._lock:
            if self.closed:
                return
            self.closed = True
            calls = list(self._calls.items())
        if self.forked:
            return
        for call, _ in calls:
            call.cancel()
        for _, unwound in calls:  # an iterator's step must end before it can be closed
            unwound.wait(UNWIND_SECONDS)
        sources = [it._source for it in list(self._iterators) if not it._closed]
        self.portal.call(self._shutdown, sources, finish)
        self.portal.call(self.portal.stop, True)
        self.thread.join()

    async def _shutdown(self, sources: list[AsyncIterator[Any]],
                        finish: Callable[[], Awaitable[None]]) -> None:
        with anyio.CancelScope(shield=True):
            for source in sources:
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    with contextlib.suppress(Exception):  # it failed on its own
                        await aclose()
            if self._closers:
                await asyncio.gather(*self._closers, return_exceptions=True)
            await finish()

    def abandon(self, finish: Callable[[], Awaitable[None]]) -> bool:
        """For an owner's ``__del__``: if still open, schedule ``finish()`` and the end
        of the loop without waiting (it may run on any thread) and return True."""
        with self._lock:
            if self.closed or self.forked:
                return False
            self.closed = True
        portal = self.portal

        async def shut() -> None:
            try:
                await finish()
            finally:
                await portal.stop(cancel_remaining=True)

        _soon(self.loop, shut)
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
