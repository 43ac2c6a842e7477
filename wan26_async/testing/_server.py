"""`FakeWanServer`: the Wan 2.6 API emulated on a loopback port.

Routes (names used by `inject` and `Faults.routes` in brackets):

    POST /v1/videos/generations     [create]  create a task
    GET  /v1/tasks/{taskId}         [get]     query a task
    GET  /v1/credits                [credits] the balance
    GET  /videos/{taskId}.mp4       [video]   the "CDN": a small real MP4, no auth

Every request goes through one middleware that records it, gives it an
`X-Request-Id`, and applies a scripted or random fault before anything else.
Task status is computed from the clock on each read; the only timer is one
`Scheduler`, for callbacks.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from ._api import Api
from ._callbacks import CallbackSender
from ._config import FAULT_ROUTES, Fault, Faults, FixedWindow, TokenBucket
from ._faults import FaultPicker, apply_fault
from ._http import CURRENT_CALL, NOT_JSON, ApiError, Call, error_response
from ._ledger import Ledger
from ._models import CallbackRecord, FakeTask, ReceivedRequest, ServerStats
from ._ratelimit import Limiter, make_limiter
from ._scheduler import Scheduler
from ._thread import ServerThread

__all__ = ["DEFAULT_API_KEY", "SAMPLE_VIDEO", "FakeWanServer"]

_log = logging.getLogger("wan26_async.testing")

DEFAULT_API_KEY = "sk-fake-0123456789abcdef"
#: The video served for completed tasks: 1 s, 64x36, H.264, faststart.
SAMPLE_VIDEO = Path(__file__).with_name("sample.mp4")

# Requests still running at stop (e.g. under a delay fault) get this long to finish.
_SHUTDOWN_TIMEOUT = 0.5

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeWanServer(Api):
    """An emulator of the Wan 2.6 API on a loopback port, for tests, demos and benchmarks.

    Example:

        async with FakeWanServer(time_scale=0.01) as server:
            ...  # point a client at server.base_url with server.api_key

    or, from synchronous code or another event loop:

        with FakeWanServer().run_in_thread() as server:
            ...

    A create is checked in this order: auth (401 `invalid_api_key`, 403
    `ip_not_allowed` for `forbidden_keys`), rate limit (429 `rate_limit_exceeded`),
    JSON object body (400), `Idempotency-Key` replay, `model` present (400) and known
    (404 `model_not_found`), the spec's input rules (400), `callback_url` (400),
    `spend_limit` (429 `spend_limit_exceeded`; spend is counted net of refunds),
    balance (402 `insufficient_credits`). Fields the spec does not list for a model
    are accepted and ignored.

    An accepted create is charged at once (credits/sec of the resolution x duration:
    720p 24, 1080p 40; defaults 1080p, 5 s). Its task is `pending` for
    `pending_seconds`, then `processing` for `processing_seconds` (by default
    `duration * 4.0` at 1080p, `duration * 2.5` at 720p), then `completed` or
    `failed`; `time_scale` multiplies both. A task fails when its prompt contains
    ``[fail]`` (mimicking a content refusal) or at random by `failure_rate`; its price
    is refunded at the moment it fails. Completed tasks link to a real MP4 served by
    this server (`video_path`, swappable). A create repeating an `Idempotency-Key`
    already used with the same body returns the same task without charging again;
    with another body it gets 400 `invalid_request`.

    When a task with a `callback_url` completes or fails, the server POSTs the same
    JSON body a task query would get to that URL (one scheduler timer for all tasks,
    one client session; see `Faults` for loss, duplicates and delay).

    Faults: queue exact ones with `inject()`, or random ones with `faults=Faults(...)`.
    Records: `requests`, `tasks`, `callbacks`, `stats`, `balance`, `spent`.

    Arguments (all keyword-only):
        host, port: where to listen; port 0 picks a free port (see `port` after start).
        api_key: the one valid key. forbidden_keys: keys answered with 403.
        credits: the initial balance.
        pending_seconds, processing_seconds, time_scale: the timing model above;
            `processing_seconds` may be a function of the `FakeTask`.
        failure_rate, seed: random task failures; `seed` makes every random choice
            of the server (failures, random faults, callback faults) reproducible.
        rate_limit: a `TokenBucket` or `FixedWindow` per API key, or None.
        spend_limit: total credits the key may spend (net of refunds), or None.
        faults: random `Faults` (none by default). video_path: the MP4 to serve.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        forbidden_keys: Collection[str] = (),
        credits: float = 100_000,
        pending_seconds: float = 1.0,
        processing_seconds: float | Callable[[FakeTask], float] | None = None,
        time_scale: float = 1.0,
        failure_rate: float = 0.0,
        seed: int | None = None,
        rate_limit: TokenBucket | FixedWindow | None = None,
        spend_limit: float | None = None,
        faults: Faults | None = None,
        video_path: Path | str = SAMPLE_VIDEO,
    ) -> None:
        if not api_key.startswith("sk-"):
            raise ValueError("api_key must start with 'sk-' (as the spec requires)")
        if time_scale < 0 or pending_seconds < 0:
            raise ValueError("time_scale and pending_seconds must be >= 0")
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be between 0 and 1, got {failure_rate!r}")
        self.host = host
        self.api_key = api_key
        self.forbidden_keys = frozenset(forbidden_keys)
        self.pending_seconds = pending_seconds
        self.processing_seconds = processing_seconds
        self.time_scale = time_scale
        self.failure_rate = failure_rate
        self.spend_limit = spend_limit
        #: Random faults; replace at any time.
        self.faults = faults if faults is not None else Faults()
        #: The file served for every completed task's video; replace at any time.
        self.video_path = Path(video_path)
        #: Every task created, by id.
        self.tasks: dict[str, FakeTask] = {}
        #: Every request received, in arrival order.
        self.requests: list[ReceivedRequest] = []
        #: Every callback attempt (and lost callback), in the order they ended.
        self.callbacks: list[CallbackRecord] = []
        self.stats = ServerStats()
        #: The web application; usable with aiohttp's own test utilities too.
        self.app = self._make_app()

        self._port = port
        self._rng = random.Random(seed)
        self._ledger = Ledger(credits)
        self._rate_limit = rate_limit
        self._limiter: Limiter | None = make_limiter(rate_limit)
        self._idempotency: dict[tuple[str, str], tuple[str, str]] = {}
        self._fault_picker = FaultPicker()
        self._wall_offset = time.time() - time.monotonic()
        self._scheduler = Scheduler()
        self._callbacks = CallbackSender(self._record_callback)
        self._runner: web.AppRunner | None = None
        self._in_flight = 0  # requests being handled now (see stats.max_in_flight)

    # -- lifecycle ---------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/videos/generations", self._handle_create, name="create")
        app.router.add_get("/v1/tasks/{task_id}", self._handle_get, name="get")
        app.router.add_get("/v1/credits", self._handle_credits, name="credits")
        app.router.add_get("/videos/{task_id}.mp4", self._handle_video, name="video")
        return app

    async def start(self) -> None:
        """Start listening; `base_url` and `port` are valid afterwards."""
        if self._runner is not None:
            raise RuntimeError("FakeWanServer is already started")
        runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=_SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        self._callbacks.open()
        self._scheduler.start(asyncio.get_running_loop())

    async def stop(self) -> None:
        """Stop listening, drop pending callbacks and close every connection."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        self._scheduler.close()
        await self._callbacks.close()
        await runner.cleanup()

    async def __aenter__(self) -> FakeWanServer:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run_in_thread(self) -> ServerThread[FakeWanServer]:
        """A context manager running this server on its own event loop in a daemon
        thread: ``with FakeWanServer().run_in_thread() as server: ...``."""
        return ServerThread(self)

    # -- public state ------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (the one picked by the OS when built with `port=0`)."""
        return self._port

    @property
    def base_url(self) -> str:
        """``http://HOST:PORT``, without a trailing slash. Only valid once started."""
        if self._runner is None:
            raise RuntimeError("FakeWanServer is not started")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self._port}"

    @property
    def balance(self) -> float:
        """The credit balance now (refunds of tasks failed by now included); settable."""
        return self._ledger.balance(time.monotonic())

    @balance.setter
    def balance(self, value: float) -> None:
        self._ledger.set_balance(value)

    @property
    def spent(self) -> float:
        """Credits charged so far, net of refunds: what `spend_limit` is checked against."""
        return self._ledger.spent(time.monotonic())

    @property
    def rate_limit(self) -> TokenBucket | FixedWindow | None:
        """The rate limit; setting it starts again from fresh buckets or windows."""
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, value: TokenBucket | FixedWindow | None) -> None:
        self._rate_limit = value
        self._limiter = make_limiter(value)

    def video_url(self, task_id: str) -> str:
        """Where the video of task `task_id` is served."""
        return f"{self.base_url}/videos/{task_id}.mp4"

    def inject(self, route: str, fault: Fault, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests on `route`.

        `route` is "create", "get", "credits", "video" or "*" (any of them). Queued
        faults are used first-in first-out by matching requests, before any other
        handling (even auth), and before random `faults`. Thread-safe.
        """
        if route != "*" and route not in FAULT_ROUTES:
            raise ValueError(f"unknown route {route!r}; use one of {sorted(FAULT_ROUTES)} or '*'")
        if times < 1:
            raise ValueError(f"times must be >= 1, got {times!r}")
        self._fault_picker.push(route, fault, times)

    def clear_faults(self) -> None:
        """Forget every fault queued by `inject()` and not used yet."""
        self._fault_picker.clear()

    def reset_records(self) -> None:
        """Clear `requests`, `callbacks` and `stats` (tasks and balance are kept)."""
        self.requests.clear()
        self.callbacks.clear()
        self.stats = ServerStats()

    def task_reply(self, task_id: str) -> dict[str, Any]:
        """The JSON body a query of task `task_id` would get now."""
        return self._task_envelope(self.tasks[task_id], time.monotonic())

    # -- every request -------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        request_id = "req_" + secrets.token_hex(12)
        self._in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self._in_flight)
        try:
            response = await self._serve(request, handler, request_id)
        except Exception:
            _log.exception("FakeWanServer: unexpected error")
            response = error_response(500, "internal_error", "api_error", "Emulator bug.")
        finally:
            self._in_flight -= 1
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        return response

    async def _serve(
        self, request: web.Request, handler: _Handler, request_id: str
    ) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPException as exc:  # e.g. 413, body over aiohttp's client_max_size
            return error_response(
                exc.status, "invalid_request", "invalid_request_error", exc.reason
            )
        try:
            decoded: object = json.loads(body) if body else NOT_JSON
        except ValueError:
            decoded = NOT_JSON
        route = request.match_info.route.name
        call = Call(request=request, route=route, request_id=request_id, json=decoded)
        CURRENT_CALL.set(call)
        self._record_request(call, body)

        async def handle() -> web.StreamResponse:
            return await self._dispatch(request, handler)

        if route is None:
            return await handle()
        faults = self.faults
        if faults.latency and route in faults.routes:
            await asyncio.sleep(faults.latency)
        fault = self._fault_picker.pick(route, faults, self._rng)
        if fault is None:
            return await handle()
        self.stats.faults_injected += 1
        return await apply_fault(fault, call, handle, functools.partial(self._video_file, request))

    def _record_request(self, call: Call, body: bytes) -> None:
        request = call.request
        headers: dict[str, str] = {}
        for raw_name, raw_value in request.raw_headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.requests.append(
            ReceivedRequest(
                method=request.method,
                path=request.path,
                query=request.query_string,
                headers=headers,
                body=body,
                json=None if call.json is NOT_JSON else call.json,
                time=time.monotonic(),
                route=call.route,
                request_id=call.request_id,
            )
        )
        self.stats.requests += 1

    async def _dispatch(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as error:
            return error.response()
        except web.HTTPMethodNotAllowed as exc:
            return error_response(
                405, "method_not_allowed", "invalid_request_error",
                f"Method {request.method} is not allowed on {request.path}.",
                {"Allow": ", ".join(sorted(exc.allowed_methods))},
            )  # fmt: skip
        except web.HTTPNotFound:
            return error_response(
                404, "not_found", "invalid_request_error", f"No route for {request.path}."
            )
