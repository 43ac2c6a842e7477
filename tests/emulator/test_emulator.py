"""Tests of the API emulator itself, over real loopback sockets with a plain aiohttp client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from wan26_async.testing import (
    DEFAULT_API_KEY,
    SAMPLE_VIDEO,
    FakeTask,
    FakeWanServer,
    Fault,
    Faults,
    FixedWindow,
    TokenBucket,
)

T2V = "wan-2.6-text-to-video"
I2V = "wan-2.6-image-to-video"
R2V = "wan-2.6-reference-to-video"
IMG = "https://example.com/a.png"
VID = "https://example.com/a.mp4"
CREATE = "/v1/videos/generations"

# The three curl examples of the spec, verbatim.
SPEC_EXAMPLES: list[dict[str, Any]] = [
    {
        "model": T2V,
        "callback_url": "https://your-server.com/webhook",
        "input": {
            "prompt": "A cinematic shot of a small robot walking through a rainy neon alley",
            "aspect_ratio": "16:9",
            "resolution": "1080p",
            "duration": 5,
        },
    },
    {
        "model": I2V,
        "callback_url": "https://your-server.com/webhook",
        "input": {
            "prompt": "The subject turns toward the camera while the background lights move softly",
            "image_urls": ["https://example.com/first-frame.png"],
            "resolution": "1080p",
            "duration": 5,
        },
    },
    {
        "model": R2V,
        "callback_url": "https://your-server.com/webhook",
        "input": {
            "prompt": "character1 walks into the room and speaks to character2.",
            "image_urls": ["https://example.com/character1.png"],
            "video_urls": ["https://example.com/character2.mp4"],
            "aspect_ratio": "16:9",
            "resolution": "1080p",
            "duration": 8,
            "shot_type": "multi",
        },
    },
]


# -- helpers --------------------------------------------------------------------------


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `predicate()` is true, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.005)


def auth(key: str = DEFAULT_API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def t2v(**input: Any) -> dict[str, Any]:
    return {"model": T2V, "input": {"prompt": "a robot", **input}}


class Api:
    """A thin raw-HTTP helper bound to one server."""

    def __init__(self, http: aiohttp.ClientSession, server: FakeWanServer) -> None:
        self.http = http
        self.server = server

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> tuple[int, Any, Any]:
        hdrs = auth() if headers is None else headers
        data = None if body is None else json.dumps(body)
        if data is not None:
            hdrs = {**hdrs, "Content-Type": "application/json"}
        async with self.http.request(
            method, self.server.base_url + path, data=data, headers=hdrs, **kwargs
        ) as resp:
            text = await resp.text()
            try:
                payload: Any = json.loads(text)
            except ValueError:
                payload = text
            return resp.status, payload, resp.headers

    async def create(self, body: object, **kwargs: Any) -> tuple[int, Any, Any]:
        return await self.call("POST", CREATE, body=body, **kwargs)

    async def create_id(self, body: object, **kwargs: Any) -> str:
        status, payload, _ = await self.create(body, **kwargs)
        assert status == 200, payload
        return str(payload["data"]["taskId"])

    async def task(self, task_id: str) -> dict[str, Any]:
        status, payload, _ = await self.call("GET", f"/v1/tasks/{task_id}")
        assert status == 200, payload
        data: dict[str, Any] = payload["data"]
        return data

    async def balance(self) -> float:
        status, payload, _ = await self.call("GET", "/v1/credits")
        assert status == 200, payload
        return float(payload["data"]["balance"])

    async def until_done(self, task_id: str, timeout: float = 5.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            data = await self.task(task_id)
            if data["status"] in ("completed", "failed"):
                return data
            assert time.monotonic() < deadline, f"task still {data['status']}"
            await asyncio.sleep(0.005)


def assert_error(status: int, payload: Any, want_status: int, code: str, type_: str) -> None:
    assert status == want_status, payload
    assert payload["error"]["code"] == code
    assert payload["error"]["type"] == type_
    assert isinstance(payload["error"]["message"], str) and payload["error"]["message"]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def server() -> AsyncIterator[FakeWanServer]:
    # 10 ms pending, 100 ms processing for a default (1080p, 5 s) request.
    async with FakeWanServer(time_scale=0.005, pending_seconds=2.0) as running:
        yield running


@pytest.fixture
def api(http: aiohttp.ClientSession, server: FakeWanServer) -> Api:
    return Api(http, server)


@asynccontextmanager
async def serving(**options: Any) -> AsyncIterator[FakeWanServer]:
    async with FakeWanServer(**options) as running:
        yield running


class Receiver:
    """A tiny webhook receiver on loopback that records every POST."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[tuple[dict[str, str], Any]] = []
        self.url = ""

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append((dict(request.headers), await request.json()))
        return web.Response(status=self.status)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Receiver]:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
        try:
            yield self
        finally:
            await runner.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- envelopes, auth, request ids ------------------------------------------------------


async def test_create_returns_the_spec_envelope_with_a_uuid(api: Api) -> None:
    status, payload, headers = await api.create(t2v())
    assert status == 200
    assert set(payload) == {"code", "msg", "data"}
    assert payload["code"] == 200 and payload["msg"] == "success"
    task_id = payload["data"]["taskId"]
    assert len(task_id) == 36 and task_id.count("-") == 4
    assert headers["X-Request-Id"].startswith("req_")


@pytest.mark.parametrize(
    ("headers", "code", "status"),
    [
        ({}, "invalid_api_key", 401),
        ({"Authorization": f"Basic {DEFAULT_API_KEY}"}, "invalid_api_key", 401),
        ({"Authorization": "Bearer "}, "invalid_api_key", 401),
        ({"Authorization": "Bearer pk-not-an-sk-key"}, "invalid_api_key", 401),
        ({"Authorization": "Bearer sk-unknown-key"}, "invalid_api_key", 401),
        ({"Authorization": "Bearer sk-forbidden"}, "ip_not_allowed", 403),
    ],
)
@pytest.mark.parametrize("route", ["create", "get", "credits"])
async def test_auth_is_checked_on_every_api_route(
    http: aiohttp.ClientSession, headers: dict[str, str], code: str, status: int, route: str
) -> None:
    async with serving(forbidden_keys=["sk-forbidden", "not-sk-forbidden"]) as server:
        api = Api(http, server)
        method, path, body = {
            "create": ("POST", CREATE, t2v()),
            "get": ("GET", "/v1/tasks/whatever", None),
            "credits": ("GET", "/v1/credits", None),
        }[route]
        got, payload, _ = await api.call(method, path, body=body, headers=headers)
        kind = "authentication_error" if status == 401 else "permission_error"
        assert_error(got, payload, status, code, kind)
        assert server.tasks == {}


async def test_a_forbidden_key_without_the_sk_prefix_is_just_invalid(
    http: aiohttp.ClientSession,
) -> None:
    async with serving(forbidden_keys=["bad-key"]) as server:
        status, payload, _ = await Api(http, server).create(t2v(), headers=auth("bad-key"))
        assert_error(status, payload, 401, "invalid_api_key", "authentication_error")


async def test_every_reply_carries_a_distinct_request_id(api: Api, server: FakeWanServer) -> None:
    task_id = await api.create_id(t2v())
    server.inject("credits", Fault.html())
    replies = [
        await api.create(t2v(), headers={}),
        await api.call("GET", "/v1/tasks/nope"),
        await api.call("GET", "/no/such/route"),
        await api.call("GET", "/v1/credits"),
        await api.call("GET", f"/videos/{task_id}.mp4", headers={}),
    ]
    ids = [headers["X-Request-Id"] for _, _, headers in replies]
    assert all(rid.startswith("req_") and len(rid) > 8 for rid in ids)
    assert len(set(ids)) == len(ids)
    assert [r.request_id for r in server.requests[1:]] == ids


async def test_unknown_routes_and_methods_get_the_error_envelope(api: Api) -> None:
    status, payload, _ = await api.call("GET", "/v1/nothing")
    assert_error(status, payload, 404, "not_found", "invalid_request_error")
    status, payload, headers = await api.call("GET", CREATE)
    assert_error(status, payload, 405, "method_not_allowed", "invalid_request_error")
    assert "POST" in headers["Allow"]


# -- validation --------------------------------------------------------------------------

I2V_BASE: dict[str, Any] = {"prompt": "p", "image_urls": [IMG]}
R2V_BASE: dict[str, Any] = {"prompt": "p", "image_urls": [IMG]}
BASES = {T2V: {"prompt": "p"}, I2V: I2V_BASE, R2V: R2V_BASE}

# (model, changes to the model's minimal valid input, accepted?, field named in the error)
RULES: list[tuple[str, dict[str, Any], bool, str]] = [
    (T2V, {"prompt": "x" * 1500}, True, ""),
    (T2V, {"prompt": "x" * 1501}, False, "input.prompt"),
    (T2V, {"prompt": ""}, False, "input.prompt"),
    (T2V, {"prompt": 5}, False, "input.prompt"),
    (T2V, {"prompt": None}, False, "input.prompt"),
    (I2V, {"prompt": "x" * 1501}, False, "input.prompt"),
    (T2V, {"negative_prompt": "x" * 500}, True, ""),
    (T2V, {"negative_prompt": "x" * 501}, False, "input.negative_prompt"),
    (T2V, {"negative_prompt": ["no"]}, False, "input.negative_prompt"),
    (T2V, {"resolution": "720p"}, True, ""),
    (R2V, {"resolution": "1080p"}, True, ""),
    (T2V, {"resolution": "4k"}, False, "input.resolution"),
    (T2V, {"resolution": "1080P"}, False, "input.resolution"),
    (T2V, {"shot_type": "single"}, True, ""),
    (T2V, {"shot_type": "multi"}, True, ""),
    (T2V, {"shot_type": "multi", "prompt_extend": True}, True, ""),
    (T2V, {"shot_type": "multi", "prompt_extend": False}, False, "input.prompt_extend"),
    (I2V, {"shot_type": "multi", "prompt_extend": False}, False, "input.prompt_extend"),
    (T2V, {"shot_type": "double"}, False, "input.shot_type"),
    (T2V, {"prompt_extend": False, "watermark": True}, True, ""),
    (T2V, {"prompt_extend": "yes"}, False, "input.prompt_extend"),
    (T2V, {"watermark": 1}, False, "input.watermark"),
    (T2V, {"seed": 0}, True, ""),
    (T2V, {"seed": 2147483647}, True, ""),
    (T2V, {"seed": -1}, False, "input.seed"),
    (T2V, {"seed": 2147483648}, False, "input.seed"),
    (T2V, {"seed": True}, False, "input.seed"),
    (T2V, {"seed": 1.5}, False, "input.seed"),
    (T2V, {"aspect_ratio": "3:4"}, True, ""),
    (R2V, {"aspect_ratio": "9:16"}, True, ""),
    (T2V, {"aspect_ratio": "21:9"}, False, "input.aspect_ratio"),
    (R2V, {"aspect_ratio": "2:1"}, False, "input.aspect_ratio"),
    (I2V, {"aspect_ratio": "21:9"}, True, ""),  # not an i2v field: ignored
    (T2V, {"duration": 2}, True, ""),
    (T2V, {"duration": 15}, True, ""),
    (T2V, {"duration": 1}, False, "input.duration"),
    (T2V, {"duration": 16}, False, "input.duration"),
    (T2V, {"duration": True}, False, "input.duration"),
    (T2V, {"duration": 5.0}, False, "input.duration"),
    (T2V, {"duration": "5"}, False, "input.duration"),
    (I2V, {"duration": 15}, True, ""),
    (I2V, {"duration": 16}, False, "input.duration"),
    (R2V, {"duration": 10}, True, ""),
    (R2V, {"duration": 11}, False, "input.duration"),
    (R2V, {"duration": 1}, False, "input.duration"),
    (T2V, {"audio_urls": ["https://example.com/a.mp3", "http://x.io/b.wav"]}, True, ""),
    (T2V, {"audio_urls": []}, True, ""),
    (T2V, {"audio_urls": ["ftp://example.com/a.mp3"]}, False, "input.audio_urls"),
    (T2V, {"audio_urls": "https://example.com/a.mp3"}, False, "input.audio_urls"),
    (I2V, {"audio_urls": ["not a url"]}, False, "input.audio_urls"),
    (R2V, {"audio_urls": "ignored"}, True, ""),  # not an r2v field
    (I2V, {"audio": False}, True, ""),
    (I2V, {"audio": "yes"}, False, "input.audio"),
    (R2V, {"audio": 0}, False, "input.audio"),
    (T2V, {"audio": "yes"}, True, ""),  # not a t2v field
    (I2V, {"image_urls": None}, False, "input.image_urls"),
    (I2V, {"image_urls": []}, False, "input.image_urls"),
    (I2V, {"image_urls": [IMG, IMG]}, False, "input.image_urls"),
    (I2V, {"image_urls": IMG}, False, "input.image_urls"),
    (I2V, {"image_urls": ["data:image/png;base64,iVBORw0KGgo="]}, False, "base64"),
    (I2V, {"image_urls": ["iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB"]}, False, "base64"),
    (I2V, {"image_urls": ["http://example.com/x.png"]}, True, ""),
    (R2V, {"image_urls": [IMG] * 5}, True, ""),
    (R2V, {"image_urls": [IMG] * 6}, False, "input.image_urls"),
    (R2V, {"image_urls": None, "video_urls": [VID] * 3}, True, ""),
    (R2V, {"image_urls": None, "video_urls": [VID] * 4}, False, "input.video_urls"),
    (R2V, {"image_urls": [IMG] * 2, "video_urls": [VID] * 3}, True, ""),
    (R2V, {"image_urls": [IMG] * 3, "video_urls": [VID] * 3}, False, "combined"),
    (R2V, {"image_urls": None}, False, "at least one"),
    (R2V, {"image_urls": [], "video_urls": []}, False, "at least one"),
    (R2V, {"video_urls": ["file:///etc/passwd"]}, False, "input.video_urls"),
    (T2V, {"something_new": {"nested": 1}}, True, ""),  # unknown fields pass through
    (T2V, {"negative_prompt": None, "seed": None}, True, ""),  # null = not sent
]


@pytest.mark.parametrize(("model", "changes", "accepted", "named"), RULES)
async def test_each_input_rule_at_its_edge(
    api: Api, server: FakeWanServer, model: str, changes: dict[str, Any], accepted: bool, named: str
) -> None:
    input = {**BASES[model], **changes}
    status, payload, _ = await api.create({"model": model, "input": input})
    if accepted:
        assert status == 200, payload
        (task,) = server.tasks.values()
        assert task.input == input  # unknown fields are kept, as received
    else:
        assert_error(status, payload, 400, "invalid_request", "invalid_request_error")
        assert named in payload["error"]["message"]
        assert server.tasks == {}
        assert server.balance == 100_000


async def test_the_i2v_base64_refusal_says_base64_is_not_supported(api: Api) -> None:
    body = {"model": I2V, "input": {"prompt": "p", "image_urls": ["data:image/png;base64,AAAA"]}}
    status, payload, _ = await api.create(body)
    assert status == 400
    assert (
        "base64" in payload["error"]["message"] and "not supported" in payload["error"]["message"]
    )


async def test_the_duration_message_names_field_rule_and_model(api: Api) -> None:
    _, payload, _ = await api.create(t2v(duration=20))
    assert payload["error"]["message"].startswith(
        "input.duration must be an integer between 2 and 15 for wan-2.6-text-to-video"
    )


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"input": {"prompt": "p"}}, 400, "invalid_request", "'model' is required."),
        ({"model": 7, "input": {"prompt": "p"}}, 400, "invalid_request", "'model'"),
        ({"model": "wan-9", "input": {"prompt": "p"}}, 404, "model_not_found", "wan-9"),
        ({"model": T2V}, 400, "invalid_request", "'input' is required."),
        ({"model": T2V, "input": "p"}, 400, "invalid_request", "'input' must be an object"),
        ([t2v()], 400, "invalid_request", "JSON object"),
        ({**t2v(), "callback_url": "ftp://x/y"}, 400, "invalid_request", "callback_url"),
        ({**t2v(), "callback_url": 5}, 400, "invalid_request", "callback_url"),
    ],
)
async def test_malformed_bodies_are_refused(
    api: Api, body: object, status: int, code: str, message: str
) -> None:
    got, payload, _ = await api.create(body)
    assert_error(got, payload, status, code, "invalid_request_error")
    assert message in payload["error"]["message"]


async def test_a_body_that_is_not_json_is_refused(api: Api, server: FakeWanServer) -> None:
    url = server.base_url + CREATE
    async with api.http.post(url, data=b"{nope", headers=auth()) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "invalid_request"


async def test_the_order_of_checks_puts_auth_then_model_then_input(api: Api) -> None:
    status, _, _ = await api.create({"model": "nope"}, headers={})
    assert status == 401
    status, payload, _ = await api.create({"model": "nope", "input": {"duration": 99}})
    assert (status, payload["error"]["code"]) == (404, "model_not_found")


@pytest.mark.parametrize(("body", "price"), list(zip(SPEC_EXAMPLES, [200, 200, 320], strict=True)))
async def test_the_spec_examples_are_accepted_and_priced(
    http: aiohttp.ClientSession, body: dict[str, Any], price: int
) -> None:
    # Default timing: done long after the test, so no callback goes to your-server.com.
    async with serving(pending_seconds=60) as server:
        api = Api(http, server)
        task_id = await api.create_id(body)
        assert server.tasks[task_id].price == price
        assert server.tasks[task_id].callback_url == "https://your-server.com/webhook"
        assert await api.balance() == 100_000 - price
        data = await api.task(task_id)
        assert data["credits"] == price and data["model"] == body["model"]


@pytest.mark.parametrize(
    ("input", "price"),
    [
        ({}, 200),
        ({"resolution": "720p"}, 120),
        ({"resolution": "720p", "duration": 2}, 48),
        ({"resolution": "1080p", "duration": 15}, 600),
        ({"duration": 3}, 120),
    ],
)
async def test_pricing_is_credits_per_second_times_duration(
    api: Api, server: FakeWanServer, input: dict[str, Any], price: int
) -> None:
    task_id = await api.create_id(t2v(**input))
    assert server.tasks[task_id].price == price
    assert server.balance == 100_000 - price
    assert server.spent == price


# -- task lifecycle ------------------------------------------------------------------------


async def test_a_task_goes_pending_processing_completed_with_a_playable_video(
    http: aiohttp.ClientSession,
) -> None:
    async with serving(time_scale=0.01, pending_seconds=10) as server:  # 0.1 s + 0.2 s
        api = Api(http, server)
        task_id = await api.create_id(t2v())
        seen: list[str] = []
        progress: list[int] = []
        deadline = time.monotonic() + 5
        while not seen or seen[-1] != "completed":
            assert time.monotonic() < deadline
            data = await api.task(task_id)
            if not seen or seen[-1] != data["status"]:
                seen.append(data["status"])
            progress.append(data["progress"])
            await asyncio.sleep(0.005)
        assert seen == ["pending", "processing", "completed"]
        assert progress == sorted(progress) and progress[0] == 0 and progress[-1] == 100
        assert any(0 < p < 100 for p in progress)

        assert set(data) == {
            "taskId", "model", "status", "progress", "credits", "createdAt", "updatedAt", "output"
        }  # fmt: skip
        assert data["createdAt"].endswith("Z") and data["updatedAt"] > data["createdAt"]
        video_url = data["output"]["video_url"]
        assert video_url == f"{server.base_url}/videos/{task_id}.mp4"
        async with http.get(video_url) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "video/mp4"
            video = await resp.read()
        assert video[4:8] == b"ftyp" and video == SAMPLE_VIDEO.read_bytes()
        assert 1_000 < len(video) < 100_000
        (video_request,) = [r for r in server.requests if r.route == "video"]
        assert video_request.header("Authorization") is None
        assert server.stats.videos_served == 1


async def test_processing_time_follows_the_request_shape() -> None:
    async with serving(pending_seconds=1.5) as server, aiohttp.ClientSession() as http:
        api = Api(http, server)
        full = server.tasks[await api.create_id(t2v())]
        short = server.tasks[await api.create_id(t2v(resolution="720p", duration=3))]
    assert full.pending_until - full.created_at == pytest.approx(1.5)
    assert full.done_at - full.pending_until == pytest.approx(20.0)
    assert short.done_at - short.pending_until == pytest.approx(7.5)


async def test_processing_seconds_can_be_a_number_or_a_function(
    http: aiohttp.ClientSession,
) -> None:
    def by_prompt(task: FakeTask) -> float:
        return 3.0 if "slow" in task.input["prompt"] else 1.0

    async with serving(processing_seconds=by_prompt, time_scale=0.5) as server:
        api = Api(http, server)
        slow = server.tasks[await api.create_id(t2v(prompt="slow one"))]
        fast = server.tasks[await api.create_id(t2v(prompt="fast one"))]
        assert slow.done_at - slow.pending_until == pytest.approx(1.5)
        assert fast.done_at - fast.pending_until == pytest.approx(0.5)
        server.processing_seconds = 4
        fixed = server.tasks[await api.create_id(t2v())]
        assert fixed.done_at - fixed.pending_until == pytest.approx(2.0)


def test_status_is_computed_from_the_clock() -> None:
    task = FakeTask(
        id="t", model=T2V, input={}, callback_url=None, price=1,
        created_at=10.0, pending_until=11.0, done_at=21.0, will_fail=False,
    )  # fmt: skip
    assert [task.status_at(t) for t in (10.0, 10.99, 11.0, 20.99, 21.0)] == [
        "pending", "pending", "processing", "processing", "completed",
    ]  # fmt: skip
    assert [task.progress_at(t) for t in (10.5, 11.0, 16.0, 20.999, 21.0)] == [0, 0, 50, 99, 100]
    task.will_fail = True
    assert task.status_at(21.0) == "failed"


async def test_a_fail_marker_task_fails_and_is_refunded(api: Api, server: FakeWanServer) -> None:
    task_id = await api.create_id(t2v(prompt="a [fail] video"))
    assert await api.balance() == 100_000 - 200
    data = await api.until_done(task_id)
    assert data["status"] == "failed"
    assert data["error"]["code"] == "upstream_error" and data["error"]["message"]
    assert "output" not in data
    assert await api.balance() == 100_000
    assert server.balance == 100_000 and server.spent == 0
    status, _, _ = await api.call("GET", f"/videos/{task_id}.mp4", headers={})
    assert status == 404


async def test_the_refund_shows_in_server_balance_without_any_request() -> None:
    async with serving(time_scale=0.002, pending_seconds=1) as server:
        async with aiohttp.ClientSession() as http:
            task_id = await Api(http, server).create_id(t2v(prompt="[fail]"))
        assert server.balance == 100_000 - 200
        await eventually(lambda: server.tasks[task_id].status == "failed")
        assert server.balance == 100_000


async def test_failure_rate_fails_tasks_at_random_reproducibly(
    http: aiohttp.ClientSession,
) -> None:
    outcomes = []
    for _ in range(2):
        async with serving(failure_rate=0.5, seed=7) as server:
            api = Api(http, server)
            ids = [await api.create_id(t2v()) for _ in range(20)]
            outcomes.append([server.tasks[i].will_fail for i in ids])
    assert outcomes[0] == outcomes[1]
    assert 0 < sum(outcomes[0]) < 20


async def test_unknown_tasks_and_videos_are_404(api: Api, server: FakeWanServer) -> None:
    status, payload, _ = await api.call("GET", "/v1/tasks/0000")
    assert_error(status, payload, 404, "task_not_found", "invalid_request_error")
    status, payload, _ = await api.call("GET", "/videos/0000.mp4", headers={})
    assert status == 404
    task_id = await api.create_id(t2v())
    status, _, _ = await api.call("GET", f"/videos/{task_id}.mp4", headers={})
    assert status == 404  # not completed yet


async def test_tasks_are_visible_only_to_the_key_that_made_them(
    http: aiohttp.ClientSession,
) -> None:
    async with serving() as server:
        api = Api(http, server)
        task_id = await api.create_id(t2v())
        server.api_key = "sk-another-key"
        status, payload, _ = await api.call(
            "GET", f"/v1/tasks/{task_id}", headers=auth(server.api_key)
        )
        assert_error(status, payload, 404, "task_not_found", "invalid_request_error")


async def test_the_video_supports_ranges_and_can_be_swapped(
    api: Api, server: FakeWanServer, tmp_path: Path
) -> None:
    task_id = await api.create_id(t2v())
    await api.until_done(task_id)
    url = server.video_url(task_id)
    async with api.http.get(url, headers={"Range": "bytes=0-99"}) as resp:
        assert resp.status == 206
        assert await resp.read() == SAMPLE_VIDEO.read_bytes()[:100]
    other = tmp_path / "other.mp4"
    other.write_bytes(b"\x00\x00\x00\x08ftypnot-really")
    server.video_path = other
    async with api.http.get(url) as resp:
        assert await resp.read() == other.read_bytes()


async def test_credits_are_an_int_when_whole(http: aiohttp.ClientSession) -> None:
    async with serving(credits=250.5) as server:
        api = Api(http, server)
        _, payload, _ = await api.call("GET", "/v1/credits")
        assert payload == {"code": 200, "msg": "success", "data": {"balance": 250.5}}
        server.balance = 300
        _, payload, _ = await api.call("GET", "/v1/credits")
        assert payload["data"]["balance"] == 300 and isinstance(payload["data"]["balance"], int)


# -- billing limits --------------------------------------------------------------------------


async def test_insufficient_credits_is_402(http: aiohttp.ClientSession) -> None:
    async with serving(credits=199) as server:
        api = Api(http, server)
        status, payload, _ = await api.create(t2v())
        assert_error(status, payload, 402, "insufficient_credits", "billing_error")
        await api.create_id(t2v(resolution="720p"))  # 120 fits
        assert server.balance == 79
        assert server.stats.insufficient_credits == 1


async def test_spend_limit_is_429_billing_without_retry_after(http: aiohttp.ClientSession) -> None:
    async with serving(spend_limit=300) as server:
        api = Api(http, server)
        await api.create_id(t2v())
        status, payload, headers = await api.create(t2v())
        assert_error(status, payload, 429, "spend_limit_exceeded", "billing_error")
        assert "Retry-After" not in headers
        assert len(server.tasks) == 1 and server.stats.spend_limited == 1


async def test_spend_limit_counts_spend_net_of_refunds(http: aiohttp.ClientSession) -> None:
    async with serving(spend_limit=200, time_scale=0.002, pending_seconds=1) as server:
        api = Api(http, server)
        task_id = await api.create_id(t2v(prompt="[fail]"))
        status, _, _ = await api.create(t2v())
        assert status == 429
        await api.until_done(task_id)
        await api.create_id(t2v())


# -- rate limits --------------------------------------------------------------------------


async def test_token_bucket_admits_a_burst_then_429s(http: aiohttp.ClientSession) -> None:
    async with serving(rate_limit=TokenBucket(rate=0.001, burst=3)) as server:
        api = Api(http, server)
        for _ in range(2):
            await api.create_id(t2v())
        assert await api.balance() == 100_000 - 400  # the third token
        status, payload, headers = await api.create(t2v())
        assert_error(status, payload, 429, "rate_limit_exceeded", "rate_limit_error")
        assert headers["Retry-After"] == "1"
        status, _, _ = await api.call("GET", "/v1/credits")
        assert status == 429
        status, _, _ = await api.create(t2v(), headers={})  # unauthenticated: 401 first
        assert status == 401
        assert server.stats.rate_limited == 2
        assert len(server.tasks) == 2


async def test_token_bucket_refills_and_rounds_retry_after_up(
    http: aiohttp.ClientSession,
) -> None:
    async with serving(rate_limit=TokenBucket(rate=20, burst=1, retry_after=2.5)) as server:
        api = Api(http, server)
        await api.create_id(t2v())
        status, _, headers = await api.create(t2v())
        assert (status, headers["Retry-After"]) == (429, "3")
        await asyncio.sleep(0.06)  # more than one token's worth (50 ms) at 20/s
        await api.create_id(t2v())


async def test_fixed_window_counts_requests_per_window(http: aiohttp.ClientSession) -> None:
    async with serving(rate_limit=FixedWindow(limit=2, window=30)) as server:
        api = Api(http, server)
        await api.create_id(t2v())
        await api.balance()
        status, payload, headers = await api.create(t2v())
        assert_error(status, payload, 429, "rate_limit_exceeded", "rate_limit_error")
        assert headers["Retry-After"] == "30"
        server.rate_limit = FixedWindow(limit=1, window=0.05)
        await api.create_id(t2v())
        status, _, headers = await api.create(t2v())
        assert (status, headers["Retry-After"]) == (429, "1")
        await asyncio.sleep(0.06)  # the window has ended
        await api.create_id(t2v())
        assert server.stats.rate_limited == 2


# -- idempotency --------------------------------------------------------------------------


async def test_an_idempotency_key_replays_the_same_task(api: Api, server: FakeWanServer) -> None:
    headers = {**auth(), "Idempotency-Key": "key-1"}
    first = await api.create_id(t2v(), headers=headers)
    again = await api.create_id(t2v(), headers=headers)
    assert again == first
    assert len(server.tasks) == 1 and server.balance == 100_000 - 200
    assert server.tasks[first].idempotency_key == "key-1"
    assert server.stats.creates_replayed == 1
    status, payload, _ = await api.create(t2v(prompt="another"), headers=headers)
    assert_error(status, payload, 400, "invalid_request", "invalid_request_error")
    assert "idempotency key" in payload["error"]["message"]
    other = await api.create_id(t2v(), headers={**auth(), "Idempotency-Key": "key-2"})
    assert other != first
    assert await api.create_id(t2v()) not in (first, other)  # no key: always new


# -- scripted faults ----------------------------------------------------------------------


async def test_an_injected_error_comes_before_auth(api: Api, server: FakeWanServer) -> None:
    server.inject("create", Fault.error(500, "internal_error"))
    status, payload, _ = await api.create(t2v(), headers={})
    assert_error(status, payload, 500, "internal_error", "api_error")
    status, payload, _ = await api.create(t2v(), headers={})
    assert status == 401
    assert server.stats.faults_injected == 1


@pytest.mark.parametrize(
    ("fault", "status", "code", "type_", "retry_after"),
    [
        (Fault.error(503, "upstream_error"), 503, "upstream_error", "upstream_error", None),
        (Fault.error(429, "rate_limit_exceeded", retry_after=2), 429, "rate_limit_exceeded",
         "rate_limit_error", "2"),
        (Fault.error(429, "rate_limit_exceeded", retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
         429, "rate_limit_exceeded", "rate_limit_error", "Wed, 21 Oct 2015 07:28:00 GMT"),
        (Fault.error(418, "teapot", type="odd_error", message="short and stout"), 418, "teapot",
         "odd_error", None),
    ],
)  # fmt: skip
async def test_injected_errors_use_the_spec_envelope(
    api: Api,
    server: FakeWanServer,
    fault: Fault,
    status: int,
    code: str,
    type_: str,
    retry_after: str | None,
) -> None:
    server.inject("get", fault)
    got, payload, headers = await api.call("GET", "/v1/tasks/anything")
    assert_error(got, payload, status, code, type_)
    assert headers.get("Retry-After") == retry_after


async def test_html_empty_and_redirect_faults(api: Api, server: FakeWanServer) -> None:
    server.inject("credits", Fault.html())
    server.inject("credits", Fault.empty(503))
    server.inject("credits", Fault.redirect("https://elsewhere.example/v1/credits", status=307))
    async with api.http.get(server.base_url + "/v1/credits", headers=auth()) as resp:
        assert resp.status == 502 and resp.content_type == "text/html"
        assert "<center>nginx</center>" in await resp.text()
    async with api.http.get(server.base_url + "/v1/credits", headers=auth()) as resp:
        assert resp.status == 503 and await resp.read() == b""
    async with api.http.get(
        server.base_url + "/v1/credits", headers=auth(), allow_redirects=False
    ) as resp:
        assert resp.status == 307
        assert resp.headers["Location"] == "https://elsewhere.example/v1/credits"
    assert await api.balance() == 100_000


async def test_a_truncated_create_reply_still_made_the_task(
    api: Api, server: FakeWanServer
) -> None:
    server.inject("create", Fault.truncated())
    async with api.http.post(server.base_url + CREATE, json=t2v(), headers=auth()) as resp:
        assert resp.status == 200 and resp.content_type == "application/json"
        text = await resp.text()
    with pytest.raises(ValueError):
        json.loads(text)
    (task_id,) = server.tasks
    assert text and text in json.dumps({"code": 200, "msg": "success", "data": {"taskId": task_id}})


async def test_drop_before_closes_the_connection_and_makes_nothing(
    api: Api, server: FakeWanServer
) -> None:
    server.inject("create", Fault.drop_before())
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await api.create(t2v())
    assert server.tasks == {} and server.balance == 100_000
    assert len(server.requests) == 1  # still recorded
    await api.create_id(t2v())  # the next request is served normally


async def test_drop_after_makes_and_charges_the_task_but_never_replies(
    api: Api, server: FakeWanServer
) -> None:
    server.inject("create", Fault.drop_after())
    with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        await api.create(t2v())
    assert len(server.tasks) == 1 and server.balance == 100_000 - 200


async def test_a_delayed_create_times_the_client_out_but_still_makes_the_task(
    api: Api, server: FakeWanServer
) -> None:
    server.inject("create", Fault.delay(0.3))
    with pytest.raises(asyncio.TimeoutError):
        await api.create(t2v(), timeout=aiohttp.ClientTimeout(total=0.05))
    assert server.tasks == {}
    await eventually(lambda: len(server.tasks) == 1)


async def test_unknown_status_is_only_for_task_queries(api: Api, server: FakeWanServer) -> None:
    server.inject("*", Fault.unknown_status())
    task_id = await api.create_id(t2v())  # not consumed by a create
    assert (await api.task(task_id))["status"] == "queued_for_review"
    assert (await api.task(task_id))["status"] in ("pending", "processing")
    server.inject("get", Fault.unknown_status("moderating"))
    assert (await api.task(task_id))["status"] == "moderating"


async def test_faults_are_used_in_order_and_times(api: Api, server: FakeWanServer) -> None:
    server.inject("credits", Fault.empty(500), times=2)
    server.inject("*", Fault.html(504))
    server.inject("get", Fault.error(503, "upstream_error"))
    statuses = [(await api.call("GET", "/v1/credits"))[0] for _ in range(4)]
    assert statuses == [500, 500, 504, 200]
    assert (await api.call("GET", "/v1/tasks/x"))[0] == 503
    server.inject("*", Fault.empty(500), times=5)
    server.clear_faults()
    assert (await api.call("GET", "/v1/credits"))[0] == 200
    assert server.stats.faults_injected == 4


async def test_a_truncated_video_cuts_the_download(api: Api, server: FakeWanServer) -> None:
    task_id = await api.create_id(t2v())
    await api.until_done(task_id)
    server.inject("video", Fault.truncated())
    with pytest.raises(aiohttp.ClientPayloadError):
        async with api.http.get(server.video_url(task_id)) as resp:
            assert resp.headers["Content-Length"] == str(SAMPLE_VIDEO.stat().st_size)
            await resp.read()
    async with api.http.get(server.video_url(task_id)) as resp:
        assert await resp.read() == SAMPLE_VIDEO.read_bytes()


def test_fault_configs_are_validated() -> None:
    with pytest.raises(ValueError, match="unknown error code"):
        Faults(error_rates={"nope": 0.1})
    with pytest.raises(ValueError, match="sum"):
        Faults(html_rate=0.6, empty_rate=0.6)
    with pytest.raises(ValueError):
        Faults(routes={"create", "upload"})
    with pytest.raises(ValueError):
        FakeWanServer().inject("upload", Fault.empty())
    assert Fault.error(402, "insufficient_credits").type == "billing_error"
    assert Fault.error(599, "custom").type == "api_error"


# -- random faults ------------------------------------------------------------------------


async def test_random_faults_follow_their_rates_and_routes(api: Api, server: FakeWanServer) -> None:
    server.faults = Faults(error_rates={"rate_limit_exceeded": 1.0}, routes={"credits"})
    status, payload, headers = await api.call("GET", "/v1/credits")
    assert_error(status, payload, 429, "rate_limit_exceeded", "rate_limit_error")
    assert headers["Retry-After"] == "1"
    await api.create_id(t2v())  # create is not in routes
    server.faults = Faults(error_rates={"internal_error": 0.3}, html_rate=0.3)
    statuses = [(await api.call("GET", "/v1/credits"))[0] for _ in range(60)]
    assert {200, 500, 502} == set(statuses)
    assert server.stats.faults_injected == 1 + statuses.count(500) + statuses.count(502)


async def test_random_faults_are_reproducible_with_a_seed(http: aiohttp.ClientSession) -> None:
    runs = []
    for _ in range(2):
        async with serving(seed=3, faults=Faults(empty_rate=0.3, truncated_rate=0.3)) as server:
            api = Api(http, server)
            runs.append([(await api.call("GET", "/v1/credits"))[0] for _ in range(25)])
    assert runs[0] == runs[1]


async def test_random_drops_and_unknown_statuses(api: Api, server: FakeWanServer) -> None:
    task_id = await api.create_id(t2v())
    server.faults = Faults(drop_before_rate=0.5, unknown_status_rate=0.5, routes={"get"})
    outcomes = set()
    for _ in range(40):
        try:
            outcomes.add((await api.task(task_id))["status"])
        except aiohttp.ClientConnectionError:
            outcomes.add("dropped")
    assert outcomes >= {"dropped", "queued_for_review"}


async def test_latency_is_added_to_api_replies(api: Api, server: FakeWanServer) -> None:
    server.faults = Faults(latency=0.1)
    started = time.monotonic()
    await api.balance()
    assert time.monotonic() - started >= 0.1


# -- callbacks ----------------------------------------------------------------------------


async def test_callbacks_post_the_task_reply_when_done(http: aiohttp.ClientSession) -> None:
    receiver = Receiver()
    async with receiver.running(), serving(time_scale=0.002, pending_seconds=1) as server:
        api = Api(http, server)
        ok = await api.create_id({**t2v(), "callback_url": receiver.url})
        bad = await api.create_id({**t2v(prompt="[fail]"), "callback_url": receiver.url})
        await eventually(lambda: len(server.callbacks) == 2)
        by_task = {body["data"]["taskId"]: (headers, body) for headers, body in receiver.received}
        assert by_task[ok][1] == {"code": 200, "msg": "success", "data": await api.task(ok)}
        assert by_task[bad][1]["data"] == await api.task(bad)
        assert by_task[bad][1]["data"]["status"] == "failed"
        assert by_task[ok][0]["Content-Type"] == "application/json"
        assert all(r.status == 200 and r.error is None for r in server.callbacks)
        assert server.stats.callbacks_sent == 2


async def test_callback_loss_and_duplicates(http: aiohttp.ClientSession) -> None:
    receiver = Receiver()
    async with receiver.running(), serving(time_scale=0.002, pending_seconds=1) as server:
        api = Api(http, server)
        server.faults = Faults(callback_loss_rate=1.0)
        lost = await api.create_id({**t2v(), "callback_url": receiver.url})
        await eventually(lambda: len(server.callbacks) == 1)
        assert server.callbacks[0].lost and server.callbacks[0].task_id == lost
        server.faults = Faults(callback_duplicate_rate=1.0, callback_delay=0.05)
        twice = await api.create_id({**t2v(), "callback_url": receiver.url})
        await eventually(lambda: len(server.callbacks) == 3)
        assert [body["data"]["taskId"] for _, body in receiver.received] == [twice, twice]
        assert sorted(r.duplicate for r in server.callbacks[1:]) == [False, True]
        assert server.stats.callbacks_lost == 1 and server.stats.callbacks_sent == 2


async def test_failed_callback_deliveries_are_recorded(http: aiohttp.ClientSession) -> None:
    receiver = Receiver(status=500)
    async with receiver.running(), serving(time_scale=0.002, pending_seconds=1) as server:
        api = Api(http, server)
        await api.create_id({**t2v(), "callback_url": receiver.url})
        await api.create_id({**t2v(), "callback_url": f"http://127.0.0.1:{free_port()}/gone"})
        await eventually(lambda: len(server.callbacks) == 2)
        statuses = {r.status for r in server.callbacks}
        assert statuses == {500, None}
        assert any(r.error for r in server.callbacks)
        assert server.stats.callbacks_failed == 2


async def test_pending_callbacks_are_dropped_at_stop(http: aiohttp.ClientSession) -> None:
    receiver = Receiver()
    async with receiver.running():
        async with serving(pending_seconds=30) as server:
            await Api(http, server).create_id({**t2v(), "callback_url": receiver.url})
        assert receiver.received == [] and server.callbacks == []


# -- scale ----------------------------------------------------------------------------------


async def test_thousands_of_tasks_cost_no_coroutines_or_timers() -> None:
    receiver = Receiver()
    async with receiver.running(), serving(credits=1_000_000) as server:
        connector = aiohttp.TCPConnector(limit=50)
        async with aiohttp.ClientSession(connector=connector) as http:
            api = Api(http, server)
            before = len(asyncio.all_tasks())
            bodies = [{**t2v(), "callback_url": receiver.url} for _ in range(3000)]
            await asyncio.gather(*(api.create_id(body) for body in bodies))
            assert len(server.tasks) == 3000
            # Only the server's per-connection handlers (at most 50 connections) remain.
            assert len(asyncio.all_tasks()) <= before + 50
            loop = asyncio.get_running_loop()
            timers = getattr(loop, "_scheduled", None)
            if timers is not None:  # CPython's loop: connection keep-alives, not one per task
                assert len(timers) < 300
            started = time.monotonic()
            task_ids = list(server.tasks)
            for task_id in task_ids[:: len(task_ids) // 50]:
                await api.task(task_id)
            assert time.monotonic() - started < 2.0


# -- records ---------------------------------------------------------------------------------


async def test_requests_are_recorded_as_received(api: Api, server: FakeWanServer) -> None:
    body = t2v(brand_new_field=[1, 2])
    await api.create(body, headers={**auth(), "X-Custom-Thing": "yes"})
    await api.call("GET", "/v1/credits?verbose=1")
    create, credits = server.requests
    assert (create.method, create.path, create.route) == ("POST", CREATE, "create")
    assert create.headers["X-Custom-Thing"] == "yes"
    assert create.header("x-custom-thing") == "yes"
    assert create.json == body and json.loads(create.body) == body
    assert (credits.query, credits.body, credits.json) == ("verbose=1", b"", None)
    assert credits.time >= create.time
    server.reset_records()
    assert server.requests == [] and server.stats.requests == 0
    assert len(server.tasks) == 1


# -- thread mode, CLI and pytest plugin -----------------------------------------------------


def get_json(url: str, key: str = DEFAULT_API_KEY) -> Any:
    request = urllib.request.Request(url, headers=auth(key))
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_thread_mode_serves_synchronous_code() -> None:
    with FakeWanServer(credits=42, time_scale=0.002).run_in_thread() as server:
        assert get_json(server.base_url + "/v1/credits")["data"]["balance"] == 42
        request = urllib.request.Request(
            server.base_url + CREATE,
            data=json.dumps(t2v(resolution="720p", duration=2)).encode(),
            headers={**auth(), "Content-Type": "application/json"},
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 402
        refused.value.close()
        server.balance = 1000
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["code"] == 200
        assert server.balance == 1000 - 48
        base_url = server.base_url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base_url + "/v1/credits", timeout=1)


async def test_thread_mode_works_next_to_another_event_loop(http: aiohttp.ClientSession) -> None:
    with FakeWanServer(time_scale=0.002).run_in_thread() as server:
        api = Api(http, server)
        server.inject("create", Fault.drop_after())
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await api.create(t2v())
        assert len(server.tasks) == 1


def test_thread_mode_reports_start_up_errors() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError), FakeWanServer(port=port).run_in_thread():
            pass


def test_the_cli_prints_its_address_and_stops_on_sigint() -> None:
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root), "PYTHONUNBUFFERED": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "wan26_async.testing", "--port", "0", "--credits", "77",
         "--api-key", "sk-cli-key", "--rate-limit", "50"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=root,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("FakeWanServer listening on http://127.0.0.1:"), line
        assert line.rstrip().endswith("(api key sk-cli-key)")
        base_url = line.split()[3]
        assert get_json(base_url + "/v1/credits", "sk-cli-key")["data"]["balance"] == 77
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def wan_server_options() -> dict[str, Any]:
    return {"credits": 1234}


def test_the_pytest_fixture_serves_in_a_thread(wan_server: FakeWanServer) -> None:
    assert wan_server.time_scale == 0.01
    assert get_json(wan_server.base_url + "/v1/credits")["data"]["balance"] == 1234
