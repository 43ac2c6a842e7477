"""``max_concurrency``: the slots every request of a client takes one of, fair to creates.

A free slot is taken without a coroutine (the hot path, see `Transport.request`). When
none is free, callers queue in two lines: creates, and everything else (polls mostly).
A freed slot goes straight to the next caller, taking the two lines in turn while both
wait, so thousands of waiting polls never starve a create: creates get three slots of
four as they free up (all of them when no poll waits), polls the fourth. Creates come
first because a task started earlier finishes earlier, and a poll of a task not yet
done is a request wasted; polls keep a share so that a stream of creates never holds
back the completions it waits for.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["CREATES_PER_OTHER", "Slots"]

#: While both wait, this many creates get a slot for each other request.
CREATES_PER_OTHER = 3


class Slots:
    """A count of free slots and two FIFO queues of waiters (creates, others)."""

    __slots__ = ("_run", "creates", "free", "others")

    def __init__(self, size: int) -> None:
        self.free = size
        self.creates: deque[asyncio.Future[None]] = deque()
        self.others: deque[asyncio.Future[None]] = deque()
        self._run = 0  # creates handed a slot in a row while others waited

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
            if self.creates and (self._run < CREATES_PER_OTHER or not self.others):
                fut = self.creates.popleft()
                self._run = self._run + 1 if self.others else 0
            else:
                fut = self.others.popleft()
                self._run = 0
            if not fut.done():
                fut.set_result(None)  # the slot goes straight to the next waiter
                return
        self.free += 1
