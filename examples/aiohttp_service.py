"""Embedding the client in an aiohttp web service: one client for the app's lifetime.

    WAN_API_KEY=sk-... python examples/aiohttp_service.py      # then:
    curl -X POST localhost:8080/videos -d '{"prompt": "a robot in the rain"}'
    curl localhost:8080/videos/<task id>

The client is made when the app starts and closed when it stops (``cleanup_ctx``),
so every request handler shares one connection pool and one rate limiter: a burst of
requests to the service cannot overrun the API's limit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

import wan26_async as wan

CLIENT = web.AppKey("wan_client", wan.AsyncWanClient)


async def wan_client(app: web.Application) -> AsyncIterator[None]:
    async with wan.AsyncWanClient() as client:  # WAN_API_KEY / WAN_BASE_URL
        app[CLIENT] = client
        yield


async def create(request: web.Request) -> web.Response:
    body = await request.json()
    try:
        video = wan.TextToVideo(prompt=body.get("prompt"), duration=body.get("duration"),
                                resolution=body.get("resolution"))
    except wan.ValidationError as exc:
        return web.json_response({"error": str(exc), "field": exc.field}, status=400)
    try:
        task = await request.app[CLIENT].create_task(video)
    except wan.InsufficientCreditsError:
        return web.json_response({"error": "out of credits"}, status=402)
    return web.json_response({"id": task.id, "credits": video.estimated_credits}, status=202)


async def status(request: web.Request) -> web.Response:
    try:
        task = await request.app[CLIENT].get_task(request.match_info["task_id"])
    except wan.TaskNotFoundError:
        raise web.HTTPNotFound() from None
    return web.json_response({"id": task.id, "status": task.status.value,
                              "video_url": task.video_url, "error": task.error})


def make_app() -> web.Application:
    app = web.Application()
    app.cleanup_ctx.append(wan_client)
    app.router.add_post("/videos", create)
    app.router.add_get("/videos/{task_id}", status)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), port=8080)
