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
import uuid
from collections.abc import Awaitable, Callable, Collection
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from ._callbacks import CallbackSender
from ._config import FAULT_ROUTES, Fault, Faults, FixedWindow, TokenBucket, retry_after_header
from ._faults import FaultPicker, apply_fault
from ._http import CURRENT_CALL, NOT_JSON, ApiError, Call, error_response, number, success
from ._ledger import Ledger
from ._models import CallbackRecord, FakeTask, ReceivedRequest, ServerStats
from ._ratelimit import Limiter, make_limiter
from ._scheduler import Scheduler
from ._thread import ServerThread
from ._validation import (
    DEFAULT_DURATION,
    DEFAULT_RESOLUTION,
    MODELS,
    InvalidRequest,
    is_http_url,
    price_of,
    validate_input,
)

__all__ = ["DEFAULT_API_KEY", "FAIL_MARKER", "SAMPLE_VIDEO", "FakeWanServer"]

_log = logging.getLogger("wan26_async.testing")

DEFAULT_API_KEY = "sk-fake-0123456789abcdef"
#: A prompt containing this marker makes its task fail, like a content refusal.
FAIL_MARKER = "[fail]"
#: The video served for completed tasks: 1 s, 64x36, H.264, faststart.
SAMPLE_VIDEO = Path(__file__).with_name("sample.mp4")

_REFUSAL_REASON = "The input contains sensitive or prohibited content."
_UPSTREAM_REASON = "The upstream AI provider returned an error."
# Requests still running at stop (e.g. under a delay fault) get this long to finish.
_SHUTDOWN_TIMEOUT = 0.5

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeWanServer:
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

    def run_in_thread(self) -> ServerThread:
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

    def _authenticate(self, request: web.Request) -> str:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key:
            raise ApiError(
                "invalid_api_key", "Missing API key: send 'Authorization: Bearer sk-...'."
            )
        if key == self.api_key:
            return key
        if not key.startswith("sk-"):
            raise ApiError("invalid_api_key", "Invalid API key: it must start with 'sk-'.")
        if key in self.forbidden_keys:
            raise ApiError("ip_not_allowed", "Request IP is not in the key's allowlist.")
        raise ApiError("invalid_api_key", "Invalid API key: it is unknown, disabled or deleted.")

    def _admit(self, key: str) -> None:
        limiter = self._limiter
        if limiter is None:
            return
        wait = limiter.admit(key, time.monotonic())
        if wait is not None:
            self.stats.rate_limited += 1
            raise ApiError(
                "rate_limit_exceeded",
                "Too many requests, please slow down.",
                headers={"Retry-After": retry_after_header(wait)},
            )

    # -- routes --------------------------------------------------------------------

    async def _handle_create(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        self._admit(key)
        try:
            # Synchronous: checking and creating cannot interleave with another create.
            return self._create(
                CURRENT_CALL.get().json, key, request.headers.get("Idempotency-Key")
            )
        except ApiError:
            self.stats.creates_refused += 1
            raise

    def _create(self, body: object, key: str, idempotency_key: str | None) -> web.Response:
        if not isinstance(body, dict):
            raise ApiError("invalid_request", "The request body must be a JSON object.")
        fingerprint = ""
        if idempotency_key:
            fingerprint = json.dumps(body, sort_keys=True, separators=(",", ":"))
            prior = self._idempotency.get((key, idempotency_key))
            if prior is not None:
                if prior[0] != fingerprint:
                    raise ApiError(
                        "invalid_request",
                        f"The idempotency key {idempotency_key!r} was reused with a different "
                        "request body; use a new key for a new request.",
                    )
                self.stats.creates_replayed += 1
                return web.json_response(
                    success({"taskId": prior[1]}), headers={"Idempotent-Replayed": "true"}
                )

        model, input, callback_url = _checked_body(body)
        price = price_of(input)
        now = time.monotonic()
        if self.spend_limit is not None and self._ledger.spent(now) + price > self.spend_limit:
            self.stats.spend_limited += 1
            raise ApiError(
                "spend_limit_exceeded",
                f"Key spend limit reached: this task costs {price} credits and the key "
                f"may spend {number(self.spend_limit)} in total.",
            )
        if self._ledger.balance(now) < price:
            self.stats.insufficient_credits += 1
            raise ApiError(
                "insufficient_credits",
                f"Your credit balance is too low ({price} credits needed). Please top up.",
            )

        task = self._new_task(model, input, callback_url, price, now, key, idempotency_key)
        self._ledger.charge(price)
        if task.will_fail:
            self._ledger.refund_at(task.done_at, price)
        if task.callback_url is not None:
            self._scheduler.call_at(task.done_at, functools.partial(self._task_done, task))
        if idempotency_key:
            self._idempotency[(key, idempotency_key)] = (fingerprint, task.id)
        self.stats.creates_accepted += 1
        return web.json_response(success({"taskId": task.id}))

    def _new_task(
        self,
        model: str,
        input: dict[str, Any],
        callback_url: str | None,
        price: int,
        now: float,
        key: str,
        idempotency_key: str | None,
    ) -> FakeTask:
        will_fail, reason = False, None
        if FAIL_MARKER in input["prompt"]:
            will_fail, reason = True, _REFUSAL_REASON
        elif self.failure_rate > 0 and self._rng.random() < self.failure_rate:
            will_fail, reason = True, _UPSTREAM_REASON
        pending_until = now + self.pending_seconds * self.time_scale
        task = FakeTask(
            id=str(uuid.uuid4()),
            model=model,
            input=input,
            callback_url=callback_url,
            price=price,
            created_at=now,
            pending_until=pending_until,
            done_at=pending_until,
            will_fail=will_fail,
            failure_reason=reason,
            idempotency_key=idempotency_key or None,
            api_key=key,
        )
        task.done_at = pending_until + self._processing_seconds(task) * self.time_scale
        self.tasks[task.id] = task
        return task

    def _processing_seconds(self, task: FakeTask) -> float:
        setting = self.processing_seconds
        if callable(setting):
            return float(setting(task))
        if setting is not None:
            return float(setting)
        resolution = task.input.get("resolution") or DEFAULT_RESOLUTION
        duration = task.input.get("duration") or DEFAULT_DURATION
        return float(duration) * (4.0 if resolution == "1080p" else 2.5)

    async def _handle_get(self, request: web.Request) -> web.StreamResponse:
        key = self._authenticate(request)
        self._admit(key)
        task_id = request.match_info["task_id"]
        task = self.tasks.get(task_id)
        if task is None or task.api_key != key:
            raise ApiError("task_not_found", f"Task {task_id!r} does not exist.")
        status = CURRENT_CALL.get().status_override
        return web.json_response(self._task_envelope(task, time.monotonic(), status))

    async def _handle_credits(self, request: web.Request) -> web.StreamResponse:
        self._admit(self._authenticate(request))
        return web.json_response(success({"balance": number(self.balance)}))

    async def _handle_video(self, request: web.Request) -> web.StreamResponse:
        path = self._video_file(request)
        self.stats.videos_served += 1
        return web.FileResponse(path)

    def _video_file(self, request: web.Request) -> Path:
        task = self.tasks.get(request.match_info.get("task_id", ""))
        if task is None or task.status_at(time.monotonic()) != "completed":
            raise ApiError("not_found", "No such video.", status=404)
        return self.video_path

    # -- task replies and callbacks ----------------------------------------------------

    def _iso(self, monotonic: float) -> str:
        moment = datetime.fromtimestamp(self._wall_offset + monotonic, tz=timezone.utc)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def _task_envelope(
        self, task: FakeTask, now: float, status_override: str | None = None
    ) -> dict[str, Any]:
        status = task.status_at(now)
        data: dict[str, Any] = {
            "taskId": task.id,
            "model": task.model,
            "status": status_override or status,
            "progress": task.progress_at(now),
            "credits": task.price,
            "createdAt": self._iso(task.created_at),
            "updatedAt": self._iso(task.updated_at(now)),
        }
        if status == "completed":
            data["output"] = {"video_url": self.video_url(task.id)}
        elif status == "failed":
            data["error"] = {"code": "upstream_error", "message": task.failure_reason}
        return success(data)

    def _task_done(self, task: FakeTask) -> None:
        """Scheduled at `task.done_at` for a task with a callback URL."""
        url = task.callback_url
        if url is None or self._runner is None:
            return
        body = self._task_envelope(task, task.done_at)
        faults = self.faults
        if faults.callback_loss_rate and self._rng.random() < faults.callback_loss_rate:
            self._record_callback(
                CallbackRecord(
                    task_id=task.id, url=url, body=body, time=time.monotonic(), lost=True
                )
            )
            return
        copies = 1
        if faults.callback_duplicate_rate and self._rng.random() < faults.callback_duplicate_rate:
            copies = 2
        for copy in range(copies):
            delay = self._rng.uniform(0, faults.callback_delay) if faults.callback_delay else 0.0
            send = functools.partial(self._callbacks.send, task.id, url, body, duplicate=copy > 0)
            self._scheduler.call_at(time.monotonic() + delay, send)

    def _record_callback(self, record: CallbackRecord) -> None:
        self.callbacks.append(record)
        if record.lost:
            self.stats.callbacks_lost += 1
        elif record.status is not None and record.status < 300:
            self.stats.callbacks_sent += 1
        else:
            self.stats.callbacks_failed += 1


def _checked_body(body: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """`model`, `input` and `callback_url` of a create body, checked per the spec."""
    model = body.get("model")
    if model is None:
        raise ApiError("invalid_request", "'model' is required.")
    if not isinstance(model, str):
        raise ApiError("invalid_request", "'model' must be a string.")
    if model not in MODELS:
        raise ApiError("model_not_found", f"Model {model!r} does not exist or is inactive.")
    input = body.get("input")
    try:
        validate_input(model, input)
    except InvalidRequest as exc:
        raise ApiError("invalid_request", exc.message) from None
    assert isinstance(input, dict)  # validate_input guarantees it
    callback_url = body.get("callback_url")
    if callback_url is not None and not is_http_url(callback_url):
        raise ApiError("invalid_request", "'callback_url' must be an http(s) URL.")
    return model, input, callback_url
