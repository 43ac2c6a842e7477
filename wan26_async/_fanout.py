"""fan_out: many generations at once, one Outcome per request, nothing lost, and leaving
early never pays.

`FanOut` is what ``client.fan_out(...)`` returns: an async iterator and an async
context manager. Its work runs in one task it owns (started on first use), inside the
anyio task group of a `SubmitPool`; leaving the ``async with`` block, ``aclose()``,
a cancelled ``__anext__`` or dropping the iterator cancels that task at once, so no
create is sent afterwards. The task holds no reference to the `FanOut`, so a ``break``
out of a plain ``async for`` drops the last one and finalizes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, Protocol

import anyio

from ._errors import InsufficientCreditsError, NotSubmittedError, TaskFailedError, WanError
from ._from_dict import request_from_dict
from ._models import Credits, Outcome, Task
from ._pool import SubmitPool
from ._requests import VideoRequest

__all__ = ["Client", "FanOut", "Item"]

Item = VideoRequest | Mapping[str, Any]


class Client(Protocol):
    """What a fan-out needs of a client (an ``AsyncWanClient``)."""

    def create_task(self, request: VideoRequest, *,
                    callback_url: str | None = None) -> Awaitable[Task]: ...

    def wait(self, task_id: str, *, timeout: float | None = None) -> Awaitable[Task]: ...

    def get_credits(self) -> Awaitable[Credits]: ...


class FanOut:
    """One `Outcome` per request, as each finishes (``ordered=True``: in input order).

    Use it as ``async for outcome in client.fan_out(requests)``, or, to be sure nothing
    more is submitted once you stop reading:

        async with client.fan_out(requests) as outcomes:
            async for outcome in outcomes:
                ...

    Leaving the block (a ``break``, an exception, a cancellation) or ``await
    outcomes.aclose()`` cancels every request not yet submitted at once; a plain
    ``break`` does so when the iterator is dropped. Like an async generator, a
    cancelled ``__anext__`` ends the iteration. Tasks already created keep running on
    the server (the API has no cancel call); their outcomes are not waited for.

    At most ``concurrency`` generations run at once, and at most ``2 * concurrency``
    are submitted whose outcome you have not read yet: a consumer that stops reading
    stops new submissions soon.
    """

    def __init__(
        self,
        client: Client,
        requests: Iterable[Item],
        *,
        concurrency: int,
        callback_url: str | None,
        ordered: bool,
        timeout: float | None,
        check_credits: bool = False,
    ) -> None:
        if not isinstance(concurrency, int) or concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
        self._run: _Run | None = None
        self._closed = False
        self._start_args = (client, iter(requests), concurrency, callback_url, ordered,
                            timeout, check_credits)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running" if self._run else "not started"
        return f"<FanOut {state}>"

    def _start(self) -> _Run:
        run = self._run
        if run is None:
            run = self._run = _Run(*self._start_args)
            del self._start_args  # the run owns the input now
        return run

    # -- iteration ---------------------------------------------------------------------

    def __aiter__(self) -> FanOut:
        return self

    async def __anext__(self) -> Outcome:
        if self._closed:
            raise StopAsyncIteration
        run = self._start()
        try:
            return await run.next()
        except StopAsyncIteration:
            self._closed = True
            raise
        except BaseException:  # a cancellation or the fan-out's own failure: it is over
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Stop now: cancel every request not yet submitted and stop waiting for the
        others. Returns once nothing of this fan-out runs. Idempotent."""
        self._closed = True
        run = self._run
        if run is not None:
            await run.stop()

    # -- the block ---------------------------------------------------------------------

    async def __aenter__(self) -> FanOut:
        self._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __del__(self) -> None:
        run = getattr(self, "_run", None)
        if run is not None:
            run.cancel_soon()


class _Run:
    """The running fan-out: its pool, its outcomes not yet read and the task it runs in.
    Referenced by the `FanOut`, never the other way round."""

    def __init__(
        self,
        client: Client,
        requests: Iterator[Item],
        concurrency: int,
        callback_url: str | None,
        ordered: bool,
        timeout: float | None,
        check_credits: bool,
    ) -> None:
        self.client = client
        self.callback_url = callback_url
        self.timeout = timeout
        self.pool = SubmitPool(concurrency, read_ahead=2 * concurrency)
        self.outbox = _Outbox(ordered)
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(self._main(requests, check_credits))

    async def _main(self, requests: Iterator[Item], check_credits: bool) -> None:
        error: Exception | None = None
        try:
            items: Iterable[Item] = requests
            if check_credits:
                items = list(requests)  # the price of the whole batch needs all of it
                await _check_balance(self.client, items)
            await self.pool.run(enumerate(items), self._one)
        except Exception as exc:
            error = exc
        finally:
            self.outbox.finish(error)

    async def _one(self, entry: tuple[int, Item]) -> None:
        self.outbox.put(await self._outcome(*entry))

    async def _outcome(self, index: int, item: Item) -> Outcome:
        request: Item = item
        hook = self.callback_url
        client = self.client
        try:
            if not isinstance(item, VideoRequest):
                request = built = request_from_dict(item)
                hook = item.get("callback_url", hook)
            else:
                built = item
            try:
                task: Task = await self.pool.submit(
                    lambda: client.create_task(built, callback_url=hook))
            except NotSubmittedError as exc:
                return Outcome(index=index, request=request, error=exc)
            try:
                final = await client.wait(task.id, timeout=self.timeout)
            except TaskFailedError as exc:
                return Outcome(index=index, request=request, task=exc.task, error=exc)
            except WanError as exc:
                return Outcome(index=index, request=request, task=task, error=exc)
            return Outcome(index=index, request=request, task=final)
        except Exception as exc:  # one request's failure never stops the others
            return Outcome(index=index, request=request, error=exc)

    async def next(self) -> Outcome:
        outcome = await self.outbox.get()
        self.pool.read()
        return outcome

    async def stop(self) -> None:
        task = self.task
        task.cancel()
        if not task.done():
            # Shielded: the wait is short (the task is cancelled already), and leaving
            # it half way would leave the task running after we return.
            with anyio.CancelScope(shield=True):
                await asyncio.wait([task])
        self.outbox.finish(None)

    def cancel_soon(self) -> None:
        """Cancel from a finalizer, which may run in another thread or after the loop."""
        if self.task.done() or self.loop.is_closed():
            return
        try:
            same_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            same_loop = False
        if same_loop:
            self.task.cancel()
        else:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self.loop.call_soon_threadsafe(self.task.cancel)


class _Outbox:
    """Outcomes finished but not yet read, in the order they are to be read."""

    def __init__(self, ordered: bool) -> None:
        self._ordered = ordered
        self._queue: deque[Outcome] = deque()
        self._held: dict[int, Outcome] = {}  # ordered: by index, until those before are out
        self._next_index = 0
        self._finished = False
        self._error: Exception | None = None
        self._changed = anyio.Event()

    def put(self, outcome: Outcome) -> None:
        if self._ordered:
            self._held[outcome.index] = outcome
        else:
            self._queue.append(outcome)
        self._wake()

    def finish(self, error: Exception | None) -> None:
        """No more outcomes will come; ``error`` ends the iteration once they are read."""
        if not self._finished:
            self._finished, self._error = True, error
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def _take(self) -> Outcome | None:
        if not self._ordered:
            return self._queue.popleft() if self._queue else None
        outcome = self._held.pop(self._next_index, None)
        if outcome is not None:
            self._next_index += 1
        return outcome

    async def get(self) -> Outcome:
        """The next outcome; StopAsyncIteration after the last (or the error that ended
        the fan-out, once)."""
        while True:
            outcome = self._take()
            if outcome is not None:
                return outcome
            if self._finished:
                error, self._error = self._error, None
                if error is not None:
                    raise error
                raise StopAsyncIteration
            await self._changed.wait()


async def _check_balance(client: Client, items: list[Item]) -> None:
    """Refuse a batch whose estimated price exceeds the balance, before submitting any."""
    needed = 0
    for item in items:
        try:
            request = item if isinstance(item, VideoRequest) else request_from_dict(item)
        except WanError:
            continue  # reported as that request's outcome
        needed += request.estimated_credits
    balance = (await client.get_credits()).balance
    if needed > balance:
        raise InsufficientCreditsError(
            f"the batch needs about {needed} credits and the balance is {balance:g}; "
            "nothing was submitted (top up, or split the batch)",
            status_code=402, code="insufficient_credits", type="billing_error",
        )
