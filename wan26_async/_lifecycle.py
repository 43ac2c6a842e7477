"""Whether a client (or a view of one) is closed, and the waits that closing ends.

A closed client must never poll on or wait out a backoff: every call checks it first,
and a call or a watch already waiting (the limiter's gate, a free slot, a retry's
backoff, a download) waits inside `Lifecycle.interruptible`, a cancel scope that `close`
cancels, so it ends at once with `ClientClosedError`. A watch's sleeps (thousands at
once) take `Lifecycle.sleep` instead: a future and a timer, no scope, that closing
resolves with the error. A call that waits for nothing enters no scope (the hot path);
its request in flight ends when closing closes the client's session.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

import anyio

from ._errors import ClientClosedError

__all__ = ["ClosedSignal", "Lifecycle", "Wakers", "nap", "sleep", "unless_closed", "wake"]

#: The sleeps to end early on an event (`wake`): a set a sleep puts its future in.
Wakers = set["asyncio.Future[bool]"]

_T = TypeVar("_T")

_CLOSED = ("this AsyncWanClient is closed (aclose() was called, or its 'async with' block "
           "ended); make calls inside the block, or create a new client")
_VIEW_CLOSED = ("this view of an AsyncWanClient (from with_options) was closed; use the "
                "client it came from, or make a new view with client.with_options(...)")


class Lifecycle:
    """Open until `close`; closing one also closes its children (a client's views)."""

    __slots__ = ("__weakref__", "_children", "_message", "_scopes", "_sleepers", "closed")

    def __init__(self, *, view: bool = False) -> None:
        self.closed = False
        self._message = _VIEW_CLOSED if view else _CLOSED
        self._scopes: set[anyio.CancelScope] = set()
        self._sleepers: Wakers = set()
        self._children: weakref.WeakSet[Lifecycle] = weakref.WeakSet()

    def child(self) -> Lifecycle:
        """The lifecycle of a view: closed with this one, or on its own."""
        child = Lifecycle(view=True)
        if self.closed:
            child._message = self._message  # the view's parent is what was closed
            child.closed = True
        self._children.add(child)
        return child

    def close(self) -> None:
        """Mark closed and end every wait inside `interruptible`, here and in children."""
        self.closed = True
        for scope in list(self._scopes):
            scope.cancel()
        for sleeper in list(self._sleepers):
            if not sleeper.done():
                sleeper.set_exception(self.error())
        for child in list(self._children):
            if not child.closed:
                child._message = self._message
                child.close()

    def error(self) -> ClientClosedError:
        return ClientClosedError(self._message)

    def check(self) -> None:
        """Raise `ClientClosedError` when closed."""
        if self.closed:
            raise self.error()

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """Run a wait that `close` ends at once; raises `ClientClosedError` if it did."""
        self.check()
        scope = anyio.CancelScope()
        self._scopes.add(scope)
        try:
            with scope:
                yield
        finally:
            self._scopes.discard(scope)
        if scope.cancelled_caught:
            raise self.error()

    def sleep(self, seconds: float, wakers: Wakers | None = None) -> Awaitable[bool]:
        """`sleep` that closing ends at once with `ClientClosedError`. (Plain functions
        down to `sleep`, which alone is a coroutine: a frame less per waiting watch.)"""
        self.check()
        return sleep(seconds, wakers, self._sleepers)


class ClosedSignal(Protocol):
    """A client's closed state, as a wait needs it (a `Lifecycle`)."""

    def interruptible(self) -> AbstractContextManager[None]:
        """A scope that ends a wait at once, raising `ClientClosedError`, on closing."""
        ...

    def sleep(self, seconds: float, wakers: Wakers | None = None) -> Awaitable[bool]:
        """`sleep` that ends at once, raising `ClientClosedError`, on closing."""
        ...


def _settle(future: asyncio.Future[bool], woken: bool) -> None:
    if not future.done():
        future.set_result(woken)


def wake(wakers: Wakers) -> None:
    """End every sleep waiting on ``wakers`` now (each returns True)."""
    for future in list(wakers):
        _settle(future, True)


async def sleep(seconds: float, wakers: Wakers | None = None,
                sleepers: Wakers | None = None) -> bool:
    """Sleep ``seconds``, or less when ``wake(wakers)`` is called meanwhile: True if it
    was. One future and one timer, no cancel scope and no task: what a watch holds
    while it waits, thousands at once. ``sleepers``: the set a `Lifecycle` ends on
    closing (the future then raises its error). A cancellation is never swallowed: it
    cancels the future, or, if the future was just resolved, the task resumes with it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()
    timer = loop.call_later(max(0.0, seconds), _settle, future, False)
    if wakers is not None:
        wakers.add(future)
    if sleepers is not None:
        sleepers.add(future)
    try:
        return await future
    finally:
        timer.cancel()
        if wakers is not None:
            wakers.discard(future)
        if sleepers is not None:
            sleepers.discard(future)
        if future.done() and not future.cancelled():
            future.exception()  # retrieved, whatever ended the wait


def nap(closed: ClosedSignal | None, seconds: float, wakers: Wakers | None = None
        ) -> Awaitable[bool]:
    """`sleep`, ended at once by closing ``closed`` (if any)."""
    if closed is None:
        return sleep(seconds, wakers)
    return closed.sleep(seconds, wakers)


async def unless_closed(closed: ClosedSignal | None, wait: Callable[..., Awaitable[_T]],
                        *args: Any) -> _T:
    """Await ``wait(*args)``; with ``closed``, inside its scope that closing cancels, so
    a wait of a closed client ends at once instead of being waited out."""
    if closed is None:
        return await wait(*args)
    with closed.interruptible():
        return await wait(*args)
    raise AssertionError("unreachable: interruptible() raises when it ends a wait")
