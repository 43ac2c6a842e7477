"""Choosing and applying faults: the `inject()` queue, random draws, and what each
`Fault` kind does to a request."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import attrs
from aiohttp import web

from ._config import Fault, Faults
from ._http import ApiError, Call, drop_connection, error_response, nginx_page

__all__ = ["FaultPicker", "apply_fault"]


@attrs.define
class _Queued:
    route: str
    fault: Fault
    remaining: int


class FaultPicker:
    """Scripted faults first (FIFO, thread-safe), then random ones by rate."""

    def __init__(self) -> None:
        self._queue: deque[_Queued] = deque()
        self._lock = threading.Lock()

    def push(self, route: str, fault: Fault, times: int) -> None:
        with self._lock:
            self._queue.append(_Queued(route=route, fault=fault, remaining=times))

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()

    def pick(self, route: str, faults: Faults, rng: random.Random) -> Fault | None:
        """The fault for the next request on `route`, if any."""
        with self._lock:
            for queued in self._queue:
                if queued.route in ("*", route) and queued.fault.applies_to(route):
                    queued.remaining -= 1
                    if queued.remaining <= 0:
                        self._queue.remove(queued)
                    return queued.fault
        if route not in faults.routes:
            return None
        table = faults.request_fault_rates(route)
        if not table:
            return None
        draw = rng.random()
        for fault, rate in table:
            if draw < rate:
                return fault
            draw -= rate
        return None


async def apply_fault(
    fault: Fault,
    call: Call,
    handle: Callable[[], Awaitable[web.StreamResponse]],
    video_file: Callable[[], Path],
) -> web.StreamResponse:
    """Answer `call` as `fault` says; `handle()` runs the normal handling of the
    request and `video_file()` finds the file a video request asks for."""
    request = call.request
    kind = fault.kind
    if kind == "drop_before":
        return drop_connection(request)
    if kind == "error":
        headers = None if fault.retry_after is None else {"Retry-After": fault.retry_after}
        return error_response(
            fault.status, fault.code or "internal_error", fault.type or "api_error",
            fault.message or "Injected fault.", headers,
        )  # fmt: skip
    if kind == "html":
        return web.Response(
            status=fault.status, text=nginx_page(fault.status), content_type="text/html"
        )
    if kind == "empty":
        return web.Response(status=fault.status)
    if kind == "redirect":
        return web.Response(status=fault.status, headers={"Location": fault.location or "/"})
    if kind == "delay":
        await asyncio.sleep(fault.seconds)
    elif kind == "unknown_status":
        call.status_override = fault.task_status
    elif kind == "drop_after":
        await handle()
        return drop_connection(request)
    elif kind == "truncated":
        if call.route == "video":
            return await _truncated_video(call, video_file)
        response = await handle()
        body = response.body if isinstance(response, web.Response) else None
        data = bytes(body) if isinstance(body, (bytes, bytearray)) else b""
        return web.Response(
            status=fault.status, body=data[: len(data) // 2], content_type="application/json"
        )
    return await handle()


async def _truncated_video(call: Call, video_file: Callable[[], Path]) -> web.StreamResponse:
    """Announce the whole file, send half of it, then close the connection."""
    try:
        path = video_file()
    except ApiError as error:
        return error.response()
    data = await asyncio.to_thread(path.read_bytes)
    response = web.StreamResponse(
        headers={"Content-Type": "video/mp4", "X-Request-Id": call.request_id}
    )
    response.content_length = len(data)
    await response.prepare(call.request)
    await response.write(data[: len(data) // 2])
    drop_connection(call.request)
    return response
