"""The bounded submit-and-wait pool shared by ``fan_out`` and ``wan26 batch``.

Both run one job per item (submit a create, then wait for the task), a bounded number
at once, taking the items lazily, and both stop submitting for the whole account after
the first 402 insufficient credits or 429 spend limit. That is written once, here:

* `SubmitPool.run` takes the next item only when a slot is free (and, with
  ``read_ahead``, only while fewer than that many finished jobs wait to be read), and
  runs each job in a task of one anyio task group. Cancelling ``run`` cancels every
  job at once; no item is taken afterwards. Nothing is left running when it returns.
* `SubmitPool.submit` wraps one create: after an account-wide refusal it raises
  `NotSubmittedError` instead of sending anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

import anyio

from ._errors import APIError, InsufficientCreditsError, NotSubmittedError, SpendLimitError

__all__ = ["ACCOUNT_WIDE", "SubmitPool"]

T = TypeVar("T")
R = TypeVar("R")

#: Refusals that hold for every later create of the account, not only this one.
ACCOUNT_WIDE = (InsufficientCreditsError, SpendLimitError)


class SubmitPool:
    """Runs jobs ``concurrency`` at a time; see the module docstring.

    ``read_ahead`` (None: unbounded) caps the jobs started whose result the consumer
    has not read yet (running or finished): the consumer calls `read` for each result
    it takes, and a stalled consumer stalls new submissions. Build it inside the event
    loop that runs it.
    """

    def __init__(self, concurrency: int, *, read_ahead: int | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        if read_ahead is not None and read_ahead < concurrency:
            raise ValueError(f"read_ahead must be >= concurrency, got {read_ahead!r}")
        self._running = anyio.Semaphore(concurrency)
        self._unread = None if read_ahead is None else anyio.Semaphore(read_ahead)
        #: The account-wide refusal that stopped new submissions, once there is one.
        self.stopped_by: APIError | None = None

    async def submit(self, create: Callable[[], Awaitable[R]]) -> R:
        """Run ``create()`` unless an earlier submission was refused for the account.

        Raises `NotSubmittedError` (nothing is sent) after such a refusal; an
        `InsufficientCreditsError` or `SpendLimitError` of ``create()`` itself is
        remembered as that refusal and raised.
        """
        if self.stopped_by is not None:
            raise NotSubmittedError(self.stopped_by)
        try:
            return await create()
        except ACCOUNT_WIDE as exc:
            if self.stopped_by is None:
                self.stopped_by = exc
            raise

    def read(self) -> None:
        """The consumer took one result: one more job may start (with ``read_ahead``)."""
        if self._unread is not None:
            self._unread.release()

    async def run(self, items: Iterable[T], job: Callable[[T], Awaitable[None]]) -> None:
        """Run ``job(item)`` for every item; return when all have ended.

        Items are taken from ``items`` one at a time, only when a job may start, so a
        generator is never listed. An exception of a job cancels the other jobs; one of
        ``items`` ends the input and the jobs started still run to their end. Either is
        then raised as it is (not in an exception group); a job reports its own expected
        failures itself.
        """
        failed: list[Exception] = []  # a job's failure (the first), raised first
        ended: list[Exception] = []  # the failure of ``items``
        running, unread = self._running, self._unread
        iterator = iter(items)
        async with anyio.create_task_group() as group:

            async def one(item: T) -> None:
                try:
                    await job(item)
                except Exception as exc:
                    if not failed:
                        failed.append(exc)
                    group.cancel_scope.cancel()
                finally:
                    running.release()

            while True:
                if unread is not None:
                    await unread.acquire()
                await running.acquire()
                try:
                    item = next(iterator)
                except StopIteration:
                    break
                except Exception as exc:  # the caller's iterable failed: no more input
                    ended.append(exc)
                    break
                group.start_soon(one, item)
        for failure in (failed, ended):
            if failure:
                raise failure[0]
