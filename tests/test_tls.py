"""TLS verification stays on: a certificate the system does not trust is refused."""

from __future__ import annotations

import ssl

import pytest
import trustme
from aiohttp import web

import wan26_async as wan


async def test_an_untrusted_certificate_is_refused_not_ignored() -> None:
    ca = trustme.CA()  # a CA nobody trusts
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    hits = 0

    async def credits(request: web.Request) -> web.Response:
        nonlocal hits
        hits += 1
        return web.json_response({"code": 200, "data": {"balance": 1}})

    app = web.Application()
    app.router.add_get("/v1/credits", credits)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with wan.AsyncWanClient(api_key="sk-tls-test", base_url=f"https://127.0.0.1:{port}",
                                      max_retries=3) as client:
            with pytest.raises(wan.APIConnectionError, match="TLS") as info:
                await client.get_credits()
        assert "sk-tls-test" not in str(info.value)
        assert hits == 0  # the key never reached a server it could not verify
    finally:
        await runner.cleanup()
