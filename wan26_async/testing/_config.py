"""Configuration value objects of the emulator: rate limits and faults.

All of them are frozen attrs classes, built once and handed to `FakeWanServer`.
Times given here are real seconds; `FakeWanServer(time_scale=...)` does not scale them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

import attrs

__all__ = [
    "API_ROUTES",
    "ERROR_TABLE",
    "FAULT_ROUTES",
    "FixedWindow",
    "Fault",
    "FaultKind",
    "Faults",
    "TokenBucket",
    "retry_after_header",
]

#: The spec's error table: code -> (HTTP status, type).
ERROR_TABLE: Mapping[str, tuple[int, str]] = MappingProxyType(
    {
        "invalid_request": (400, "invalid_request_error"),
        "invalid_api_key": (401, "authentication_error"),
        "insufficient_credits": (402, "billing_error"),
        "ip_not_allowed": (403, "permission_error"),
        "model_not_found": (404, "invalid_request_error"),
        "task_not_found": (404, "invalid_request_error"),
        "rate_limit_exceeded": (429, "rate_limit_error"),
        "spend_limit_exceeded": (429, "billing_error"),
        "internal_error": (500, "api_error"),
        "upstream_error": (503, "upstream_error"),
    }
)

#: Routes a fault can target. "*" in `FakeWanServer.inject` means any of them.
FAULT_ROUTES = frozenset({"create", "get", "credits", "video"})
#: The authenticated API routes (the default targets of random faults).
API_ROUTES = frozenset({"create", "get", "credits"})


def retry_after_header(seconds: float) -> str:
    """Format a delay as a `Retry-After` value: whole seconds, rounded up, at least 1."""
    return str(max(1, math.ceil(seconds)))


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


def _probability(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be between 0 and 1, got {value!r}")


@attrs.frozen(kw_only=True)
class TokenBucket:
    """A classic token bucket per API key over all authenticated routes.

    The bucket holds up to `burst` tokens and refills at `rate` tokens per second;
    each admitted request takes one. A refused request gets 429 `rate_limit_exceeded`
    with `Retry-After: ceil(retry_after)` (at least 1); with `retry_after=None` the
    header is the time until the next token instead.
    """

    rate: float = attrs.field(validator=attrs.validators.gt(0))
    burst: int = attrs.field(validator=attrs.validators.gt(0))
    retry_after: float | None = 1.0


@attrs.frozen(kw_only=True)
class FixedWindow:
    """At most `limit` requests per API key in each `window` seconds.

    A window opens at the first request after the previous one ended. A refused
    request gets 429 `rate_limit_exceeded` with `Retry-After` = seconds until the
    window ends, rounded up, at least 1.
    """

    limit: int = attrs.field(validator=attrs.validators.gt(0))
    window: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))


FaultKind = Literal[
    "error",
    "html",
    "empty",
    "truncated",
    "drop_before",
    "drop_after",
    "delay",
    "unknown_status",
    "redirect",
]


@attrs.frozen(kw_only=True)
class Fault:
    """One scripted misbehaviour, queued with `FakeWanServer.inject(route, fault)`.

    Build it with the class methods (`Fault.error(...)`, `Fault.drop_after()`, ...),
    not the constructor. Unless said otherwise a fault replaces the whole handling of
    the request: nothing is checked, created or charged.
    """

    kind: FaultKind
    status: int = 0
    code: str | None = None
    type: str | None = None
    message: str | None = None
    retry_after: str | None = None
    seconds: float = 0.0
    task_status: str | None = None
    location: str | None = None

    @classmethod
    def error(
        cls,
        status: int,
        code: str,
        *,
        type: str | None = None,
        message: str | None = None,
        retry_after: str | float | None = None,
    ) -> Fault:
        """A JSON error envelope with this status and code.

        `type` defaults to the spec's type for `code` (`api_error` for unknown codes);
        `retry_after` is sent verbatim as the `Retry-After` header (a number of seconds
        or any string, e.g. an HTTP-date).
        """
        if type is None:
            type = ERROR_TABLE.get(code, (status, "api_error"))[1]
        return cls(
            kind="error",
            status=status,
            code=code,
            type=type,
            message=message or f"Injected fault: {code}.",
            retry_after=None if retry_after is None else str(retry_after),
        )

    @classmethod
    def html(cls, status: int = 502) -> Fault:
        """An nginx-like HTML error page (`text/html`), as a proxy in front would send."""
        return cls(kind="html", status=status)

    @classmethod
    def empty(cls, status: int = 500) -> Fault:
        """A reply with this status and an empty body."""
        return cls(kind="empty", status=status)

    @classmethod
    def truncated(cls, status: int = 200) -> Fault:
        """Handle the request fully, then send its JSON reply cut in half.

        A create therefore makes (and charges) its task. On the video route the
        headers announce the whole file, half of it is sent, then the connection closes.
        """
        return cls(kind="truncated", status=status)

    @classmethod
    def drop_before(cls) -> Fault:
        """Close the connection without any reply, before doing anything."""
        return cls(kind="drop_before")

    @classmethod
    def drop_after(cls) -> Fault:
        """Handle the request fully (a create makes and charges its task), then close
        the connection without a reply."""
        return cls(kind="drop_after")

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep `seconds` (real time), then handle the request normally.

        The request is handled even if the client gave up meanwhile, as a real server
        would: a create still makes its task.
        """
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds!r}")
        return cls(kind="delay", seconds=seconds)

    @classmethod
    def unknown_status(cls, status: str = "queued_for_review") -> Fault:
        """For task queries only: reply normally but with this status string."""
        return cls(kind="unknown_status", task_status=status)

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Fault:
        """Reply with a redirect to `location`."""
        return cls(kind="redirect", status=status, location=location)

    def applies_to(self, route: str) -> bool:
        """Whether this fault can be used by a request on `route`."""
        return self.kind != "unknown_status" or route == "get"


def _freeze_rates(rates: Mapping[str, float]) -> Mapping[str, float]:
    for code, rate in rates.items():
        if code not in ERROR_TABLE:
            raise ValueError(f"error_rates: unknown error code {code!r}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"error_rates[{code!r}] must be between 0 and 1, got {rate!r}")
    return MappingProxyType(dict(rates))


def _freeze_routes(routes: object) -> frozenset[str]:
    if isinstance(routes, str) or not isinstance(routes, (set, frozenset, list, tuple)):
        raise TypeError("routes must be a collection of route names")
    result = frozenset(str(route) for route in routes)
    unknown = result - FAULT_ROUTES
    if unknown:
        raise ValueError(f"routes: unknown route(s) {sorted(unknown)}; use {sorted(FAULT_ROUTES)}")
    return result


@attrs.frozen(kw_only=True)
class Faults:
    """Random faults for chaos runs: per-request probabilities, drawn from the
    server's seeded RNG.

    Each request on one of `routes` draws at most one fault among: `drop_before_rate`,
    each of `error_rates` (keyed by error code from the spec table, 429 codes carry
    `Retry-After: 1`), `html_rate`, `empty_rate`, `truncated_rate`, `drop_after_rate`,
    `slow_rate` (sleep `slow_seconds`, then handle) and `unknown_status_rate` (task
    queries only). The rates must sum to at most 1. `latency` seconds are added to
    every request on `routes`.

    The callback knobs apply to every callback: `callback_loss_rate` (never sent),
    `callback_duplicate_rate` (sent twice) and `callback_delay` (each delivery waits
    a random 0..callback_delay seconds more, which also reorders them).

    Set them at construction (`FakeWanServer(faults=...)`) or at any time
    (`server.faults = Faults(...)`).
    """

    error_rates: Mapping[str, float] = attrs.field(factory=dict, converter=_freeze_rates)
    html_rate: float = attrs.field(default=0.0, validator=_probability)
    empty_rate: float = attrs.field(default=0.0, validator=_probability)
    truncated_rate: float = attrs.field(default=0.0, validator=_probability)
    drop_before_rate: float = attrs.field(default=0.0, validator=_probability)
    drop_after_rate: float = attrs.field(default=0.0, validator=_probability)
    slow_rate: float = attrs.field(default=0.0, validator=_probability)
    slow_seconds: float = attrs.field(default=5.0, validator=_non_negative)
    unknown_status_rate: float = attrs.field(default=0.0, validator=_probability)
    latency: float = attrs.field(default=0.0, validator=_non_negative)
    callback_loss_rate: float = attrs.field(default=0.0, validator=_probability)
    callback_duplicate_rate: float = attrs.field(default=0.0, validator=_probability)
    callback_delay: float = attrs.field(default=0.0, validator=_non_negative)
    routes: frozenset[str] = attrs.field(default=API_ROUTES, converter=_freeze_routes)

    def __attrs_post_init__(self) -> None:
        total = sum(rate for _, rate in self.request_fault_rates("get"))
        if total > 1.0 + 1e-9:
            raise ValueError(f"the per-request fault rates sum to {total:g}, more than 1")

    def request_fault_rates(self, route: str) -> list[tuple[Fault, float]]:
        """The faults a request on `route` may draw, with their probabilities."""
        table: list[tuple[Fault, float]] = [(Fault.drop_before(), self.drop_before_rate)]
        for code, rate in self.error_rates.items():
            status = ERROR_TABLE[code][0]
            retry_after = "1" if status == 429 else None
            table.append((Fault.error(status, code, retry_after=retry_after), rate))
        table += [
            (Fault.html(), self.html_rate),
            (Fault.empty(), self.empty_rate),
            (Fault.truncated(), self.truncated_rate),
            (Fault.drop_after(), self.drop_after_rate),
            (Fault.delay(self.slow_seconds), self.slow_rate),
        ]
        if route == "get":
            table.append((Fault.unknown_status(), self.unknown_status_rate))
        return [(fault, rate) for fault, rate in table if rate > 0]
