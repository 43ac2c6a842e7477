"""fan_out: many generations at once, one Outcome per request, nothing lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ._errors import (
    APIError,
    InsufficientCreditsError,
    NotSubmittedError,
    SpendLimitError,
    TaskFailedError,
    WanError,
)
from ._models import Outcome
from ._requests import VideoRequest
from ._wire import request_from_payload

if TYPE_CHECKING:
    from ._client import AsyncWanClient

__all__ = ["fan_out"]


async def fan_out(
    client: AsyncWanClient,
    requests: Iterable[VideoRequest | Mapping[str, Any]],
    *,
    concurrency: int,
    callback_url: str | None,
    ordered: bool,
    timeout: float | None,
    check_credits: bool = False,
) -> AsyncIterator[Outcome]:
    """See `AsyncWanClient.fan_out`."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
    items = list(enumerate(requests))
    if check_credits:
        await _check_balance(client, [item for _, item in items])
    total = len(items)
    pending = iter(items)
    done: asyncio.Queue[Outcome] = asyncio.Queue()
    stopped: list[APIError] = []  # the account-wide refusal that stopped submissions

    async def run_one(index: int, item: VideoRequest | Mapping[str, Any]) -> Outcome:
        request: Any = item
        hook = callback_url
        try:
            if not isinstance(item, VideoRequest):
                request = request_from_payload(item)
                hook = item.get("callback_url", callback_url)
            if stopped:
                return Outcome(index=index, request=request, error=NotSubmittedError(stopped[0]))
            try:
                task = await client.create_task(request, callback_url=hook)
            except (InsufficientCreditsError, SpendLimitError) as exc:
                if not stopped:
                    stopped.append(exc)
                return Outcome(index=index, request=request, error=exc)
            try:
                final = await client.wait(task.id, timeout=timeout)
            except TaskFailedError as exc:
                return Outcome(index=index, request=request, task=exc.task, error=exc)
            except WanError as exc:
                return Outcome(index=index, request=request, task=task, error=exc)
            return Outcome(index=index, request=request, task=final)
        except Exception as exc:  # one request's failure never stops the others
            return Outcome(index=index, request=request, error=exc)

    async def worker() -> None:
        for index, item in pending:
            await done.put(await run_one(index, item))

    workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, total))]
    try:
        buffered: dict[int, Outcome] = {}
        next_index = 0
        for _ in range(total):
            outcome = await done.get()
            if not ordered:
                yield outcome
                continue
            buffered[outcome.index] = outcome
            while next_index in buffered:
                yield buffered.pop(next_index)
                next_index += 1
    finally:
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def _check_balance(
    client: AsyncWanClient, items: list[VideoRequest | Mapping[str, Any]]
) -> None:
    """Refuse a batch whose estimated price exceeds the balance, before submitting any."""
    needed = 0
    for item in items:
        try:
            request = item if isinstance(item, VideoRequest) else request_from_payload(item)
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
