"""Shared fixtures: an emulator on a loopback port and a client bound to it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from unittest import mock

import aiohttp
import aioresponses.core
import pytest

import wan26_async as wan
from wan26_async.testing import FakeWanServer

# aioresponses 0.7.9 predates aiohttp 3.14, whose ClientResponse requires a
# ``stream_writer`` (pnuckowski/aioresponses#289, fix pending in #288). Until a release
# has it, hand mocked responses a stub writer; a no-op on older aiohttp.
if "stream_writer" in inspect.signature(aiohttp.ClientResponse.__init__).parameters:

    class _CompatClientResponse(aiohttp.ClientResponse):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", mock.Mock(output_size=0))
            super().__init__(*args, **kwargs)

    aioresponses.core.ClientResponse = _CompatClientResponse  # type: ignore[misc]


#: Fast timing for tests: a 5 s 1080p task takes 20 s * 0.005 = 0.1 s.
FAST = {"time_scale": 0.005, "pending_seconds": 0.02}
FAST_POLL = wan.PollPolicy(initial=0.01, multiplier=1.5, max_interval=0.05, jitter=0.1,
                           scout_interval=0.01, settle=0.005)
FAST_RETRY = wan.RetryPolicy(max_retries=5, initial_backoff=0.01, max_backoff=0.05)


@pytest.fixture
async def server() -> AsyncIterator[FakeWanServer]:
    async with FakeWanServer(**FAST) as srv:
        yield srv


@pytest.fixture
async def client(server: FakeWanServer) -> AsyncIterator[wan.AsyncWanClient]:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=FAST_POLL, retry=FAST_RETRY, timeout=5) as c:
        yield c


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], *, timeout: float = 5.0
) -> None:
    """Wait until ``condition()`` is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(0.005)


def client_tasks() -> set[asyncio.Task[Any]]:
    """The running asyncio tasks, less the emulator's own connection handlers (it runs on
    the same loop in these tests), so a test can prove the client left nothing behind."""
    server_side = ("RequestHandler", "_accept_connection")  # handlers, accepting sockets
    return {t for t in asyncio.all_tasks()
            if not any(name in t.get_coro().__qualname__  # type: ignore[union-attr]
                       for name in server_side)}
