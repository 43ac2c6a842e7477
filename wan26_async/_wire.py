"""The one cattrs converter: request payloads out, reply envelopes in.

Requests are written with unset fields left out. Replies are read tolerantly, because
the spec documents only the create reply: the task-query, credits and callback bodies
are parsed the way gateways of this kind write them (docs/wire-format.md lists every
assumption), the decoded JSON is kept in ``raw``, and nothing in a reply can make this
module raise anything but `MalformedResponseError`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any

import attrs
import cattrs
from cattrs.gen import make_dict_unstructure_fn, override

from ._errors import (
    STATUS_BY_CODE,
    MalformedResponseError,
    error_from_reply,
    request_id_of,
)
from ._from_dict import request_from_dict
from ._models import Credits, Task, TaskStatus
from ._requests import DEFAULT_DURATION, Resolution, VideoRequest

__all__ = [
    "converter",
    "parse_create_reply",
    "parse_credits",
    "parse_task",
    "request_from_dict",
    "request_from_payload",
    "request_payload",
    "unwrap_envelope",
]

converter = cattrs.Converter()


def _is_request(cls: type) -> bool:
    return isinstance(cls, type) and issubclass(cls, VideoRequest)


def _request_unstructure_factory(cls: type) -> Callable[[Any], dict[str, Any]]:
    # model goes beside "input", extra_input is merged into it; None means "unset";
    # enum members go out as their plain string values.
    enums: dict[str, Any] = {
        f.name: override(unstruct_hook=_enum_value)
        for f in attrs.fields(cls)
        if f.name in VideoRequest.ENUM_FIELDS
    }
    return make_dict_unstructure_fn(
        cls,
        converter,
        _cattrs_omit_if_default=True,
        model=override(omit=True),
        extra_input=override(omit=True),
        _encoded_input=override(omit=True),
        **enums,
    )


def _enum_value(member: Enum | None) -> Any:
    return None if member is None else member.value


converter.register_unstructure_hook_factory(_is_request, _request_unstructure_factory)


def request_shape(request: VideoRequest) -> tuple[str, str, int]:
    """What tasks that take about as long share: (model, resolution, duration), with the
    server's defaults; one shared tuple per shape."""
    shape = (request.model, (request.resolution or Resolution.P1080).value,
             request.duration or DEFAULT_DURATION)
    return _SHAPES.setdefault(shape, shape)


_SHAPES: dict[tuple[str, str, int], tuple[str, str, int]] = {}


def request_body(request: VideoRequest, callback_url: str | None = None) -> bytes:
    """The create call's JSON body. A request is frozen, so its encoded ``input`` is
    computed once and reused (do not mutate values nested in ``extra_input``)."""
    encoded = request._encoded_input
    if encoded is None:
        encoded = _dumps(request_payload(request)["input"])
        object.__setattr__(request, "_encoded_input", encoded)
    head = _MODEL_HEADS.get(request.model)
    if head is None:
        head = _MODEL_HEADS[request.model] = b'{"model":' + _dumps(request.model)
    if callback_url is not None:
        head += b',"callback_url":' + _dumps(callback_url)
    return head + b',"input":' + encoded + b"}"


_MODEL_HEADS: dict[str, bytes] = {}
# One encoder, made once: json.dumps(..., separators=...) builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def new_idempotency_key() -> str:
    """A random (version 4) UUID string, made at half the cost of ``str(uuid4())``."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def request_payload(request: VideoRequest) -> dict[str, Any]:
    """``{"model": ..., "input": {...}}`` for a request object (see ``to_payload``)."""
    data: dict[str, Any] = converter.unstructure(request)
    if request.extra_input:
        data.update(request.extra_input)
    return {"model": request.model, "input": data}


#: The old private name of `request_from_dict`, kept for code that imported it.
request_from_payload = request_from_dict


# -- replies ---------------------------------------------------------------------------


def decode_json(body: bytes, status: int, headers: Mapping[str, str]) -> Any:
    """Decode a success reply's body, or raise `MalformedResponseError` (never ValueError)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        text = body[:2000].decode("utf-8", "replace")
        raise _malformed("reply is not valid JSON", status, text, headers) from None


def _malformed(why: str, status: int, body: object, headers: Mapping[str, str]) -> Exception:
    return MalformedResponseError(
        f"{why}; the server or a proxy in between sent something else (retry, or report "
        "it with the request id)",
        status_code=status,
        body=body,
        request_id=request_id_of(headers),
        headers=headers,
    )


def unwrap_envelope(decoded: Any, status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    """Return the ``data`` object of a ``{"code", "msg", "data"}`` envelope.

    Tolerates a bare object without the envelope. An envelope whose ``code`` says error,
    or an ``{"error": ...}`` body, raises the mapped `APIError` even on HTTP 200. A bare
    task object (one with a status or task id) is data, even with an ``error`` field.
    """
    if not isinstance(decoded, dict):
        raise _malformed("reply is not a JSON object", status, decoded, headers)
    err = decoded.get("error")
    if err and "data" not in decoded and not _TASK_KEYS.intersection(decoded):
        code = err.get("code") if isinstance(err, dict) else None
        fallback = STATUS_BY_CODE.get(code, 400) if isinstance(code, str) else 400
        raise error_from_reply(_status_from_code(decoded, fallback),
                               json.dumps(decoded).encode(), headers)
    code = decoded.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and code not in (0, 200):
        raise error_from_reply(_status_from_code(decoded, 500), json.dumps(decoded).encode(),
                               headers)
    data = decoded.get("data", decoded)
    if not isinstance(data, dict):
        raise _malformed("reply's 'data' is not a JSON object", status, decoded, headers)
    return data


_TASK_KEYS = frozenset({"status", "state", "taskId", "task_id", "taskStatus"})


def _status_from_code(decoded: dict[str, Any], default: int) -> int:
    code = decoded.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return default


def _first(data: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        value = data.get(name)
        if value is not None:
            return value
    return None


def parse_create_reply(
    data: dict[str, Any], status: int, headers: Mapping[str, str]
) -> tuple[str, dict[str, Any]]:
    """The new task's id, and the reply's ``data``, from a create reply."""
    task_id = _first(data, "taskId", "task_id", "id")
    if not isinstance(task_id, str | int) or isinstance(task_id, bool) or task_id == "":
        raise _malformed("create reply has no task id", status, data, headers)
    return str(task_id), data


_STATUSES = {s.value: s for s in TaskStatus if s is not TaskStatus.UNKNOWN}

# Where gateways of this kind put the result URL, most specific first.
_VIDEO_PATHS: tuple[tuple[str, ...], ...] = (
    ("output", "video_url"),
    ("output", "videoUrl"),
    ("output", "url"),
    ("output", "video_urls"),
    ("output", "videos"),
    ("output",),
    ("video_url",),
    ("videoUrl",),
    ("video_urls",),
    ("result", "video_url"),
    ("result", "url"),
    ("result",),
    ("results",),
    ("videos",),
    ("video",),
    ("url",),
)


def _dig(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, Mapping):
            return None
        data = data.get(key)
    return data


def _as_url(value: Any) -> str | None:
    if isinstance(value, str) and value.startswith(("http://", "https://")):
        return value
    if isinstance(value, list) and value:
        return _as_url(value[0])
    if isinstance(value, Mapping):
        return _as_url(_first(value, "video_url", "videoUrl", "url"))
    return None


def _video_url(data: Mapping[str, Any]) -> str | None:
    for path in _VIDEO_PATHS:
        url = _as_url(_dig(data, path))
        if url is not None:
            return url
    return None


def _failure(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    err = _first(data, "error", "failure", "fail_reason", "failReason", "error_message",
                 "errorMessage", "message")
    if isinstance(err, Mapping):
        message = _first(err, "message", "msg", "reason", "detail")
        code = err.get("code")
        return (str(message) if message is not None else None,
                str(code) if code is not None else None)
    if err is not None and not isinstance(err, bool):
        return str(err), None
    return None, None


def parse_task(data: Mapping[str, Any], task_id: str | None = None) -> Task:
    """A `Task` from a task-query reply's ``data`` (or a callback body's).

    The id is read from ``taskId``/``task_id``/``id`` (else ``task_id`` is used); the
    status in any letter case; a status outside the spec's four becomes
    ``TaskStatus.UNKNOWN`` with the text kept in ``status_text``.
    """
    raw_id = _first(data, "taskId", "task_id", "id")
    if isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and raw_id != "":
        tid = str(raw_id)
    elif task_id is not None:
        tid = task_id
    else:
        raise MalformedResponseError("task reply has no task id", status_code=200, body=data)
    status_raw = _first(data, "status", "state", "taskStatus", "task_status")
    status_text = str(status_raw) if status_raw is not None else ""
    status = _STATUSES.get(status_text.strip().lower(), TaskStatus.UNKNOWN)
    error, error_code = _failure(data) if status is TaskStatus.FAILED else (None, None)
    progress = data.get("progress")
    model = data.get("model")
    return Task(
        id=tid,
        status=status,
        status_text=status_text,
        video_url=_video_url(data) if status is TaskStatus.COMPLETED else None,
        error=error,
        error_code=error_code,
        progress=int(progress) if isinstance(progress, int | float)
        and not isinstance(progress, bool) and math.isfinite(progress) else None,
        model=model if isinstance(model, str) else None,
        raw=data,
    )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return int(number) if number.is_integer() else number
    if isinstance(value, Mapping):
        return _number(_first(value, "balance", "credits", "remaining", "available"))
    return None


def parse_credits(data: Mapping[str, Any], status: int, headers: Mapping[str, str]) -> Credits:
    """`Credits` from a credits reply's ``data`` (``balance``/``credits``/``remaining``)."""
    balance = _number(_first(data, "balance", "credits", "remaining", "available", "amount"))
    if balance is None:
        raise _malformed("credits reply has no balance", status, data, headers)
    return Credits(balance=balance, raw=data)


def _structure_task(value: Any, _: type) -> Task:
    if not isinstance(value, Mapping):
        raise MalformedResponseError("task is not a JSON object", status_code=200, body=value)
    return parse_task(value)


converter.register_structure_hook(Task, _structure_task)
converter.register_structure_hook(
    Credits, lambda value, _: parse_credits(value if isinstance(value, Mapping) else {}, 200, {})
)
converter.register_unstructure_hook(Task, lambda task: dict(task.raw))
converter.register_unstructure_hook(Credits, lambda credits: dict(credits.raw))
