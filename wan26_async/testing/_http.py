"""HTTP building blocks of the emulator: the spec's envelopes, per-request state,
proxy-style error pages and dropped connections."""

from __future__ import annotations

import contextvars
import http
from typing import Any

import attrs
from aiohttp import web

from ._config import ERROR_TABLE

__all__ = [
    "CURRENT_CALL",
    "NOT_JSON",
    "ApiError",
    "Call",
    "drop_connection",
    "error_response",
    "nginx_page",
    "number",
    "success",
]

#: Marks a request body that is empty or not JSON.
NOT_JSON = object()

# Status shown in the access log for a connection closed without a reply (as nginx does).
_NO_REPLY = 444


class ApiError(Exception):
    """Raised by handlers; becomes the spec's JSON error envelope.

    Status and type default to the spec's error table for `code`.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        status_of_code, type_of_code = ERROR_TABLE.get(code, (400, "invalid_request_error"))
        self.code = code
        self.message = message
        self.status = status or status_of_code
        self.type = type or type_of_code
        self.headers = headers

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.type, self.message, self.headers)


def error_response(
    status: int, code: str, type: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    """``{"error": {"code", "message", "type"}}`` with this status."""
    body = {"error": {"code": code, "message": message, "type": type}}
    return web.json_response(body, status=status, headers=headers)


def success(data: dict[str, Any]) -> dict[str, Any]:
    """The success envelope around `data`."""
    return {"code": 200, "msg": "success", "data": data}


def number(value: float) -> int | float:
    """`value` as an int when it is whole (balances read better that way)."""
    return int(value) if float(value).is_integer() else value


def nginx_page(status: int) -> str:
    """The HTML error page an nginx proxy sends for `status`."""
    try:
        title = f"{status} {http.HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    )


def drop_connection(request: web.Request) -> web.Response:
    """Close the client's connection; return a response that can no longer be sent.

    Returning (rather than raising) keeps aiohttp quiet: it fails to write to the
    closed transport and moves on, logging only an access line with status 444.
    """
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=_NO_REPLY)


@attrs.define
class Call:
    """Per-request state shared by the middleware, faults and route handlers."""

    request: web.Request
    route: str | None
    request_id: str
    json: object
    status_override: str | None = None


#: The request being handled by the current task (set by the middleware).
CURRENT_CALL: contextvars.ContextVar[Call] = contextvars.ContextVar("wan26_fake_call")
