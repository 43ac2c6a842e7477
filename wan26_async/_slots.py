"""``max_concurrency``: the slots every request of a client takes one of, fair to creates.

A free slot is taken without a coroutine (the hot path, see `Transport.request`). When
none is free, callers queue in two lines: creates, and everything else (polls mostly).
A freed slot goes straight to the next caller, taking the two lines in turn while both
wait, so thousands of waiting polls never starve a create: creates get at least half
of the slots as they free up, and all of them when no poll waits.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["Slots"]


class Slots:
    """A count of free slots and two FIFO queues of waiters (creates, others)."""

    __slots__ = ("_creates_next", "creates", "free", "others")

    def __init__(self, size: int) -> None:
        self.free = size
        self.creates: deque[asyncio.Future[None]] = deque()
        self.others: deque[asyncio.Future[None]] = deque()
        self._creates_next = True

    def try_take(self) -> bool:
        """Take a free slot at once, if one is free and nobody waits for one."""
        if self.free > 0 and not self.creates and not self.others:
            self.free -= 1
            return True
        return False

    async def wait(self, create: bool = False) -> None:
        """Wait for a slot (``create``: in the creates' line)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self.creates if create else self.others).append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self.give()  # handed a slot just as we were cancelled: pass it on
            raise

    def give(self) -> None:
        """A slot is free: hand it to the next waiter, or count it free."""
        while self.creates or self.others:
            if self.creates and (self._creates_next or not self.others):
                fut = self.creates.popleft()
                self._creates_next = False
            else:
                fut = self.others.popleft()
                self._creates_next = True
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the next waiter
                return
        self.free += 1
