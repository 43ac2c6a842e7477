"""pytest plugin of wan26-async (registered through the ``pytest11`` entry point).

Fixtures:

``wan_server``
    A started `FakeWanServer` running in its own thread (``run_in_thread()``), so it
    works with pytest-asyncio, anyio, trio or plain synchronous tests. Timing is fast
    by default: ``time_scale=0.01`` and ``pending_seconds=5`` (0.05 s pending, 0.2 s
    processing for a default 1080p x 5 s request).

``wan_server_options``
    A dict of extra `FakeWanServer` keyword arguments, empty by default. Override it
    in a test module or ``conftest.py`` to configure the server:

        import pytest
        from wan26_async.testing import TokenBucket

        @pytest.fixture
        def wan_server_options():
            return {"credits": 500, "rate_limit": TokenBucket(rate=10, burst=5)}

        async def test_balance(wan_server):
            async with wan26_async.AsyncWanClient(
                api_key=wan_server.api_key, base_url=wan_server.base_url
            ) as client:
                assert (await client.get_credits()).balance == 500
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._server import FakeWanServer

__all__ = ["FIXTURE_DEFAULTS", "wan_server", "wan_server_options"]

#: Defaults of the `wan_server` fixture; `wan_server_options` overrides them.
FIXTURE_DEFAULTS: dict[str, Any] = {"time_scale": 0.01, "pending_seconds": 5.0}


@pytest.fixture
def wan_server_options() -> dict[str, Any]:
    """Keyword arguments for the `wan_server` fixture's `FakeWanServer` (override me)."""
    return {}


@pytest.fixture
def wan_server(wan_server_options: dict[str, Any]) -> Iterator[FakeWanServer]:
    """A started `FakeWanServer` in a background thread, stopped after the test."""
    from ._server import FakeWanServer  # imported late: keep pytest start-up light

    server = FakeWanServer(**{**FIXTURE_DEFAULTS, **wan_server_options})
    with server.run_in_thread() as running:
        yield running
