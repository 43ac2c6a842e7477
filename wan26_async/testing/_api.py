"""The API that `FakeWanServer` emulates: auth, admission, create, queries, callbacks.

`Api` is mixed into `FakeWanServer`, which sets every attribute declared here (its
public ones are documented there); this module holds the routes' behaviour, the server
module its lifecycle, records and fault middleware.
"""

from __future__ import annotations

import functools
import json
import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from aiohttp import web

from ._callbacks import CallbackSender
from ._config import Faults, retry_after_header
from ._http import CURRENT_CALL, ApiError, number, success
from ._ledger import Ledger
from ._models import CallbackRecord, FakeTask, ServerStats
from ._ratelimit import Limiter
from ._scheduler import Scheduler
from ._validation import (
    DEFAULT_DURATION,
    DEFAULT_RESOLUTION,
    MODELS,
    InvalidRequest,
    is_http_url,
    price_of,
    validate_input,
)

__all__ = ["FAIL_MARKER", "Api"]

#: A prompt containing this marker makes its task fail, like a content refusal.
FAIL_MARKER = "[fail]"

_REFUSAL_REASON = "The input contains sensitive or prohibited content."
_UPSTREAM_REASON = "The upstream AI provider returned an error."


class Api:
    """The routes of the emulated API and the task model behind them."""

    api_key: str
    forbidden_keys: frozenset[str]
    pending_seconds: float
    processing_seconds: float | Callable[[FakeTask], float] | None
    time_scale: float
    failure_rate: float
    spend_limit: float | None
    faults: Faults
    video_path: Path
    tasks: dict[str, FakeTask]
    callbacks: list[CallbackRecord]
    stats: ServerStats
    _rng: random.Random
    _ledger: Ledger
    _limiter: Limiter | None
    _idempotency: dict[tuple[str, str], tuple[str, str]]
    _wall_offset: float
    _scheduler: Scheduler
    _callbacks: CallbackSender
    _runner: web.AppRunner | None

    def video_url(self, task_id: str) -> str:
        """Where the video of task `task_id` is served (the server knows its address)."""
        raise NotImplementedError

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
        balance = self._ledger.balance(time.monotonic())
        return web.json_response(success({"balance": number(balance)}))

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
