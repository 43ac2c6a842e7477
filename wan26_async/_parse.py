"""Task and Credits out of a reply's ``data`` (a task query, a callback, a create).

Read tolerantly: the task-query and credits bodies are not in the spec, so the fields
are looked for where gateways of this kind put them (docs/wire-format.md lists every
assumption), the decoded JSON is kept in ``raw``, and nothing in ``data`` can make a
parser raise anything but `MalformedResponseError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._decode import malformed
from ._errors import MalformedResponseError
from ._models import Credits, Task, TaskStatus

__all__ = ["parse_create_reply", "parse_credits", "parse_task"]


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
    task_id = data.get("taskId")
    if task_id is None:
        task_id = _first(data, "task_id", "id")
    if not isinstance(task_id, str | int) or isinstance(task_id, bool) or task_id == "":
        raise malformed("create reply has no task id", status, data, headers)
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
        raise malformed("credits reply has no balance", status, data, headers)
    return Credits(balance=balance, raw=data)
