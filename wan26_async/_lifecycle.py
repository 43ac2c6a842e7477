"""Whether a client (or a view of one) is closed, and the waits that closing ends.

A closed client must never poll on or wait out a backoff: every call checks it first,
and a call or a watch already waiting (a poll interval, the limiter's gate, a free
slot, a retry's backoff, a download) waits inside `Lifecycle.interruptible`, a cancel
scope that `close` cancels, so it ends at once with `ClientClosedError`. A call that
waits for nothing enters no scope (the hot path); its request in flight ends when
closing closes the client's session.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

import anyio

from ._errors import ClientClosedError

__all__ = ["ClosedSignal", "Lifecycle", "unless_closed"]

_T = TypeVar("_T")

_CLOSED = ("this AsyncWanClient is closed (aclose() was called, or its 'async with' block "
           "ended); make calls inside the block, or create a new client")
_VIEW_CLOSED = ("this view of an AsyncWanClient (from with_options) was closed; use the "
                "client it came from, or make a new view with client.with_options(...)")


class Lifecycle:
    """Open until `close`; closing one also closes its children (a client's views)."""

    __slots__ = ("__weakref__", "_children", "_message", "_scopes", "closed")

    def __init__(self, *, view: bool = False) -> None:
        self.closed = False
        self._message = _VIEW_CLOSED if view else _CLOSED
        self._scopes: set[anyio.CancelScope] = set()
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


class ClosedSignal(Protocol):
    """A client's closed state, as a wait needs it (a `Lifecycle`)."""

    def interruptible(self) -> AbstractContextManager[None]:
        """A scope that ends a wait at once, raising `ClientClosedError`, on closing."""
        ...


async def unless_closed(closed: ClosedSignal | None, wait: Callable[..., Awaitable[_T]],
                        *args: Any) -> _T:
    """Await ``wait(*args)``; with ``closed``, inside its scope that closing cancels, so
    a wait of a closed client ends at once instead of being waited out."""
    if closed is None:
        return await wait(*args)
    with closed.interruptible():
        return await wait(*args)
    raise AssertionError("unreachable: interruptible() raises when it ends a wait")
