"""Replies in: JSON and the ``{"code", "msg", "data"}`` envelope, read tolerantly, and
every error reply mapped to its exception class by one table.

The spec documents only the create reply and the error envelope; the other bodies are
read the way gateways of this kind write them (docs/wire-format.md lists every
assumption). Nothing in a reply can make this module raise anything but an `APIError`
(`MalformedResponseError` for a success reply it cannot read); `error_from_reply`
never raises at all.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Mapping
from datetime import timezone
from types import MappingProxyType
from typing import Any

from ._errors import (
    APIError,
    AuthenticationError,
    BadRequestError,
    InsufficientCreditsError,
    InternalServerError,
    MalformedResponseError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SpendLimitError,
    TaskNotFoundError,
    UpstreamError,
)

__all__ = [
    "ERRORS",
    "MAX_ERROR_TEXT",
    "decode_json",
    "error_from_reply",
    "malformed",
    "parse_retry_after",
    "redirect_error",
    "request_id_of",
    "too_large",
    "unwrap_envelope",
]

#: How much of a non-JSON error body an exception keeps (proxy HTML pages can be big).
MAX_ERROR_TEXT = 2000

#: Every error code of the spec: its HTTP status and the class raised for it.
ERRORS: Mapping[str, tuple[int, type[APIError]]] = MappingProxyType({
    "invalid_request": (400, BadRequestError),
    "invalid_api_key": (401, AuthenticationError),
    "insufficient_credits": (402, InsufficientCreditsError),
    "ip_not_allowed": (403, PermissionDeniedError),
    "model_not_found": (404, ModelNotFoundError),
    "task_not_found": (404, TaskNotFoundError),
    "rate_limit_exceeded": (429, RateLimitError),
    "spend_limit_exceeded": (429, SpendLimitError),
    "internal_error": (500, InternalServerError),
    "upstream_error": (503, UpstreamError),
})


def _common_base(classes: list[type[APIError]]) -> type[APIError]:
    return next(base for base in classes[0].__mro__
                if all(issubclass(cls, base) for cls in classes))


# A reply without a known code maps by its status: to the class its codes share
# (404 -> NotFoundError). Derived from ERRORS, so the two cannot disagree.
_BY_STATUS: dict[int, type[APIError]] = {
    status: _common_base([cls for s, cls in ERRORS.values() if s == status])
    for status in {s for s, _ in ERRORS.values()}
}

_HINTS: dict[type[APIError], str] = {
    AuthenticationError: "check WAN_API_KEY (it must start with 'sk-' and be active)",
    InsufficientCreditsError: "top up in Dashboard > Billing",
    PermissionDeniedError: "add this machine's IP to the key's allowlist",
    SpendLimitError: "raise the key's spend limit or wait for its period to end",
}


def _class_for(status: int, code: str | None) -> type[APIError]:
    row = ERRORS.get(code) if code is not None else None
    if status == 429:
        # A 429 is a rate limit (waited on and retried) unless it says spend limit; a
        # code of another family on a 429 ("invalid_request") is not believed.
        return SpendLimitError if row is not None and row[1] is SpendLimitError \
            else RateLimitError
    if row is not None:
        return row[1]
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    return InternalServerError if status >= 500 else APIError


def error_from_reply(
    status: int,
    body: bytes,
    headers: Mapping[str, str],
    *,
    retry_after: float | None = None,
) -> APIError:
    """Build the right `APIError` for an error reply, whatever its body looks like.

    The error envelope ``{"error": {"code", "message", "type"}}`` is used when present;
    anything else (proxy HTML, empty, truncated JSON) still maps by HTTP status and keeps
    the text, cut to `MAX_ERROR_TEXT` characters. Never raises.
    """
    code: str | None = None
    etype: str | None = None
    message: str | None = None
    decoded: object
    try:
        decoded = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        decoded = body[:MAX_ERROR_TEXT].decode("utf-8", "replace")
    if isinstance(decoded, dict):
        err = decoded.get("error")
        if isinstance(err, dict):
            code = _str_or_none(err.get("code"))
            etype = _str_or_none(err.get("type"))
            message = _str_or_none(err.get("message"))
        elif isinstance(err, str):
            message = err
        if message is None:
            message = _str_or_none(decoded.get("msg")) or _str_or_none(decoded.get("message"))
    cls = _class_for(status, code)
    if message is None:
        snippet = decoded.strip()[:200] if isinstance(decoded, str) else ""
        message = f"unexpected HTTP {status} reply" + (f": {snippet!r}" if snippet else "")
    hint = _HINTS.get(cls)
    if hint:
        message = f"{message} ({hint})"
    kw: dict[str, Any] = {
        "status_code": status,
        "code": code,
        "type": etype,
        "body": decoded,
        "request_id": request_id_of(headers),
        "headers": headers,
    }
    if cls is RateLimitError:
        return RateLimitError(message, retry_after=retry_after, **kw)
    return cls(message, **kw)


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None


_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "x-trace-id")


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The reply's request id, from the first request-id header present (any case)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    return next((lowered[name] for name in _REQUEST_ID_HEADERS if name in lowered), None)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # the asctime form carries no zone: it is GMT (RFC 9110)
            when = when.replace(tzinfo=timezone.utc)
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
        return None
    return max(0.0, seconds)


# -- success replies -------------------------------------------------------------------


def malformed(why: str, status: int, body: object,
              headers: Mapping[str, str]) -> MalformedResponseError:
    """The error for a success reply that is not what the API sends, saying ``why``."""
    return MalformedResponseError(
        f"{why}; the server or a proxy in between sent something else (retry, or report "
        "it with the request id)",
        status_code=status,
        body=body,
        request_id=request_id_of(headers),
        headers=headers,
    )


def too_large(status: int, headers: Mapping[str, str], cap: int) -> MalformedResponseError:
    """The error for a reply whose body was cut at ``cap`` bytes."""
    return MalformedResponseError(
        f"reply body is larger than {cap} bytes; refused (API replies are small JSON)",
        status_code=status, request_id=request_id_of(headers), headers=headers,
    )


def redirect_error(status: int, headers: Mapping[str, str]) -> APIError:
    """The error for a 3xx reply: redirects are never followed."""
    location = headers.get("Location", "")
    return APIError(
        f"the server redirected to {location!r}; redirects are not followed so the "
        "API key never leaves base_url: set base_url to the final address",
        status_code=status, request_id=request_id_of(headers), headers=headers,
    )


def decode_json(body: bytes, status: int, headers: Mapping[str, str]) -> Any:
    """Decode a success reply's body, or raise `MalformedResponseError` (never ValueError)."""
    try:
        if body[:1] == b"{" and body[1:2] != b"\0":
            # what json.loads does with bytes that start so (no BOM, not UTF-16/32),
            # without its encoding sniffing
            return _DECODER.decode(body.decode("utf-8", "surrogatepass"))
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deep nesting
        text = body[:MAX_ERROR_TEXT].decode("utf-8", "replace")
        raise malformed("reply is not valid JSON", status, text, headers) from None


_DECODER = json.JSONDecoder()  # json.loads's own default decoder is private


def unwrap_envelope(decoded: Any, status: int, headers: Mapping[str, str]) -> dict[str, Any]:
    """Return the ``data`` object of a ``{"code", "msg", "data"}`` envelope.

    Tolerates a bare object without the envelope. An envelope whose ``code`` says error,
    or an ``{"error": ...}`` body, raises the mapped `APIError` even on HTTP 200. A bare
    task object (one with a status or task id) is data, even with an ``error`` field.
    """
    if not isinstance(decoded, dict):
        raise malformed("reply is not a JSON object", status, decoded, headers)
    err = decoded.get("error")
    if err and "data" not in decoded and not _TASK_KEYS.intersection(decoded):
        code = err.get("code") if isinstance(err, dict) else None
        row = ERRORS.get(code) if isinstance(code, str) else None
        fallback = 400 if row is None else row[0]
        raise error_from_reply(_status_from_code(decoded, fallback),
                               json.dumps(decoded).encode(), headers)
    code = decoded.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and code not in (0, 200):
        raise error_from_reply(_status_from_code(decoded, 500), json.dumps(decoded).encode(),
                               headers)
    data = decoded.get("data", decoded)
    if not isinstance(data, dict):
        raise malformed("reply's 'data' is not a JSON object", status, decoded, headers)
    return data


_TASK_KEYS = frozenset({"status", "state", "taskId", "task_id", "taskStatus"})


def _status_from_code(decoded: dict[str, Any], default: int) -> int:
    code = decoded.get("code")
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
        return code
    return default
