"""Delivery of task callbacks through one client session owned by the server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import aiohttp

from ._models import CallbackRecord

__all__ = ["CallbackSender"]

_TIMEOUT = aiohttp.ClientTimeout(total=5.0)


class CallbackSender:
    """POSTs callback bodies as JSON and reports each attempt as a `CallbackRecord`.

    Open and close it on the server's event loop; closing cancels deliveries in flight.
    """

    def __init__(self, report: Callable[[CallbackRecord], None]) -> None:
        self._report = report
        self._session: aiohttp.ClientSession | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=_TIMEOUT)

    async def close(self) -> None:
        for sending in list(self._sending):
            sending.cancel()
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def send(self, task_id: str, url: str, body: dict[str, Any], *, duplicate: bool) -> None:
        """Start delivering `body` to `url` (no-op once closed)."""
        if self._session is None:
            return
        sending = asyncio.ensure_future(self._post(self._session, task_id, url, body, duplicate))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _post(
        self,
        session: aiohttp.ClientSession,
        task_id: str,
        url: str,
        body: dict[str, Any],
        duplicate: bool,
    ) -> None:
        status: int | None = None
        error: str | None = None
        try:
            async with session.post(
                url,
                data=json.dumps(body).encode(),
                headers={"Content-Type": "application/json", "User-Agent": "FakeWanServer"},
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        self._report(
            CallbackRecord(
                task_id=task_id,
                url=url,
                body=body,
                time=time.monotonic(),
                status=status,
                error=error,
                duplicate=duplicate,
            )
        )
