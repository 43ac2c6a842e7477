"""The exception tree of wan26-async. It imports nothing of the package: which reply
becomes which error is decided in `wan26_async._decode` (one table of codes).

    WanError
    ├── ConfigurationError (also ValueError)       a client set up wrongly (key, base URL)
    ├── ValidationError (also ValueError)          a request built by the caller breaks a rule
    ├── APIError  .status_code .code .type .message .body .request_id .headers
    │   ├── BadRequestError            400 invalid_request
    │   ├── AuthenticationError        401 invalid_api_key
    │   ├── InsufficientCreditsError   402 insufficient_credits
    │   ├── PermissionDeniedError      403 ip_not_allowed
    │   ├── NotFoundError              404
    │   │   ├── ModelNotFoundError     404 model_not_found
    │   │   └── TaskNotFoundError      404 task_not_found
    │   ├── RateLimitError             429 rate_limit_exceeded  (.retry_after)
    │   ├── SpendLimitError            429 spend_limit_exceeded (never retried)
    │   ├── InternalServerError        500 internal_error (and other 5xx)
    │   ├── UpstreamError              503 upstream_error
    │   └── MalformedResponseError     a 2xx reply that is not the documented envelope
    ├── APIConnectionError                          no usable reply
    │   └── APITimeoutError
    ├── ClientClosedError                           the client (or its view) was closed
    ├── AmbiguousSubmissionError  .idempotency_key  a create may have made a task
    ├── NotSubmittedError  .cause                   fan_out stopped before submitting it
    ├── TaskFailedError  .task                      the task ended FAILED
    └── WatchTimeoutError .task                     the caller's deadline passed

An `AmbiguousSubmissionError` is always *also* the error that caused it: a create whose
connection dropped after the request was written raises an error that is both an
`APIConnectionError` and an `AmbiguousSubmissionError`; one answered by a 500 is both
an `InternalServerError` and an `AmbiguousSubmissionError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._models import Task

__all__ = [
    "APIConnectionError",
    "APIError",
    "APITimeoutError",
    "AmbiguousSubmissionError",
    "AuthenticationError",
    "ConfigurationError",
    "BadRequestError",
    "ClientClosedError",
    "InsufficientCreditsError",
    "InternalServerError",
    "MalformedResponseError",
    "ModelNotFoundError",
    "NotFoundError",
    "NotSubmittedError",
    "PermissionDeniedError",
    "RateLimitError",
    "SpendLimitError",
    "TaskFailedError",
    "TaskNotFoundError",
    "UpstreamError",
    "ValidationError",
    "WanError",
    "WatchTimeoutError",
    "as_ambiguous",
]


class WanError(Exception):
    """Base class of every error raised by wan26-async.

    Every one pickles with its attributes intact (job queues and process pools carry
    errors between processes), the ambiguous combined classes included.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt without calling __init__, whose arguments differ from class to class
        # (and are not the message kept in ``args``): the class, args and attributes.
        cls = type(self)
        base = _AMBIGUOUS_BASE.get(cls)
        return (_rebuild, (cls if base is None else base, base is not None, self.args,
                           dict(self.__dict__)))


def _rebuild(
    cls: type[WanError], ambiguous: bool, args: tuple[object, ...], state: dict[str, object]
) -> WanError:
    """Unpickle an error pickled by `WanError.__reduce__`."""
    if ambiguous:  # the combined class is made at run time: make it again from its base
        cls = _ambiguous_class(cls)
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class ConfigurationError(WanError, ValueError):
    """The client is set up wrongly: no API key, a key not starting with ``sk-``, an
    unsafe or malformed base URL. Raised when the client is built, before any I/O."""


class ValidationError(WanError, ValueError):
    """A request breaks a rule of the API; raised before any network I/O.

    ``field`` names the offending field (``"duration"``, ``"image_urls[0]"``),
    ``rule`` states the rule, ``model`` the model and ``value`` the value refused.
    """

    def __init__(
        self, field: str, rule: str, *, model: str | None = None, value: object = None
    ) -> None:
        self.field = field
        self.rule = rule
        self.model = model
        self.value = value
        where = f" for {model}" if model else ""
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"{field} {rule}{where}, got {shown}")


class APIError(WanError):
    """The API answered with an error reply.

    Attributes: ``status_code`` (HTTP status), ``code`` and ``type`` (from the error
    envelope, or None when the body was not the envelope), ``message``, ``body`` (the
    decoded JSON, or the reply text cut to a sane length), ``request_id`` (from a
    request-id reply header, when present) and ``headers``.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        code: str | None = None,
        type: str | None = None,
        body: object = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message
        self.status_code = status_code
        self.code = code
        self.type = type
        self.body = body
        self.request_id = request_id
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(message)

    def __str__(self) -> str:
        label = f"{self.status_code} {self.code}" if self.code else f"HTTP {self.status_code}"
        rid = f" (request id {self.request_id})" if self.request_id else ""
        return f"{label}: {self.message}{rid}"


class BadRequestError(APIError):
    """400 ``invalid_request``: fix the request; retrying it will not help."""


class AuthenticationError(APIError):
    """401 ``invalid_api_key``: the key is invalid, disabled or deleted."""


class InsufficientCreditsError(APIError):
    """402 ``insufficient_credits``: top up (check with ``client.get_credits()``)."""


class PermissionDeniedError(APIError):
    """403 ``ip_not_allowed``: this machine's IP is not in the key's allowlist."""


class NotFoundError(APIError):
    """404: the model or task does not exist."""


class ModelNotFoundError(NotFoundError):
    """404 ``model_not_found``: the gateway does not offer this model (or it is inactive)."""


class TaskNotFoundError(NotFoundError):
    """404 ``task_not_found``: no task with this id for this API key."""


class RateLimitError(APIError):
    """429 ``rate_limit_exceeded``. ``retry_after`` is the server's wait in seconds, if given.

    The client retries these on its own; you see one only when retries ran out or the
    server asked for a wait longer than ``RetryPolicy.max_retry_after``.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status_code: int,
        code: str | None = None,
        type: str | None = None,
        body: object = None,
        request_id: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, status_code=status_code, code=code, type=type, body=body,
                         request_id=request_id, headers=headers)
        self.retry_after = retry_after


class SpendLimitError(APIError):
    """429 ``spend_limit_exceeded``: the key's hourly/daily/total spend limit is reached.

    Never retried: waiting a few seconds does not lift it.
    """


class InternalServerError(APIError):
    """500 ``internal_error`` (and any other 5xx without a documented code)."""


class UpstreamError(APIError):
    """503 ``upstream_error``: the upstream provider refused or failed (credits are refunded)."""


class MalformedResponseError(APIError):
    """A success reply that is not the documented JSON (HTML, truncated, wrong shape)."""


class APIConnectionError(WanError):
    """No usable reply: the connection failed, was reset, or the reply was unreadable."""


class APITimeoutError(APIConnectionError):
    """The call took longer than the client's ``timeout``."""


class ClientClosedError(WanError):
    """A call or a watch on a client after ``aclose()`` (or the end of its ``async with``
    block), or on a view of one. Raised at once, never retried: make the call inside the
    client's block, or create a new `AsyncWanClient`."""


class AmbiguousSubmissionError(WanError):
    """A create may or may not have made a (paid) task: the request reached the server
    but no clear answer came back (connection reset, timeout, 5xx).

    The client never resends such a create on its own, because a resend could pay twice.
    What to do: look the task up later, or resend with the same ``idempotency_key``
    (``create_task(..., idempotency_key=err.idempotency_key)``) on a gateway that honours
    idempotency keys, or opt in with ``AsyncWanClient(resend_ambiguous_creates=True)``.
    """

    idempotency_key: str


class NotSubmittedError(WanError):
    """``fan_out`` did not submit this request because an earlier submission was refused
    for the whole account (``cause``: insufficient credits or the spend limit). Nothing
    was charged for it; submit it again once the cause is fixed."""

    def __init__(self, cause: APIError) -> None:
        self.cause = cause
        super().__init__(f"not submitted: an earlier submission was refused with {cause}")


class TaskFailedError(WanError):
    """The task ended ``FAILED``; ``task`` is the final task and ``reason`` the server's reason.

    Credits for a failed task are refunded by the server.
    """

    def __init__(self, task: Task) -> None:
        self.task = task
        self.reason = task.error
        super().__init__(f"task {task.id} failed: {task.error or 'no reason given'}")


class WatchTimeoutError(WanError, TimeoutError):
    """The caller's deadline passed before the task finished; ``task`` is the last seen."""

    def __init__(self, task_id: str, timeout: float, task: Task | None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        self.task = task
        last = f" (last seen {task.status.value})" if task is not None else ""
        super().__init__(f"task {task_id} did not finish within {timeout:g} s{last}")


_AMBIGUOUS: dict[type[WanError], type[WanError]] = {}
#: The other way round: each combined class's base, for pickling.
_AMBIGUOUS_BASE: dict[type[WanError], type[WanError]] = {}


def _ambiguous_class(base: type[WanError]) -> type[WanError]:
    """The class that is both ``base`` and `AmbiguousSubmissionError` (one per base)."""
    if issubclass(base, AmbiguousSubmissionError):
        return base
    if issubclass(AmbiguousSubmissionError, base):  # a plain WanError
        return AmbiguousSubmissionError
    cls = _AMBIGUOUS.get(base)
    if cls is None:
        cls = _AMBIGUOUS[base] = type(f"Ambiguous{base.__name__}",
                                      (base, AmbiguousSubmissionError),
                                      {"__module__": __name__, "__doc__": base.__doc__})
        _AMBIGUOUS_BASE[cls] = base
    return cls


def as_ambiguous(err: WanError, idempotency_key: str) -> WanError:
    """Return ``err`` re-typed so it is also an `AmbiguousSubmissionError`."""
    cls = _ambiguous_class(type(err))
    new = cls.__new__(cls)
    new.__dict__.update(err.__dict__)
    note = (f"; the request reached the server, so a task may exist (and be charged): it was "
            f"not resent. Its callback_url, if any, will tell; resending with "
            f"idempotency_key={idempotency_key!r} is safe only on a gateway that honours "
            f"idempotency keys")
    if isinstance(new, APIError):
        new.message += note
        new.args = (new.message,)
    else:
        new.args = (f"{err.args[0] if err.args else err}{note}",)
    new.idempotency_key = idempotency_key  # type: ignore[attr-defined]
    new.__cause__ = err.__cause__
    return new
