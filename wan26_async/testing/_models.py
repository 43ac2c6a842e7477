"""What the emulator records: tasks, received requests, callbacks and counters.

Times are `time.monotonic()` seconds, the clock the emulator runs on.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

__all__ = ["CallbackRecord", "FakeTask", "ReceivedRequest", "ServerStats"]


@attrs.define(kw_only=True)
class FakeTask:
    """One generation task as the emulator keeps it.

    Its status is computed from the clock on every read: `pending` until
    `pending_until`, `processing` until `done_at`, then `completed`, or `failed`
    when `will_fail` (then `failure_reason` is the error message).
    """

    id: str
    model: str
    input: dict[str, Any]
    callback_url: str | None
    price: int
    created_at: float
    pending_until: float
    done_at: float
    will_fail: bool
    failure_reason: str | None = None
    idempotency_key: str | None = None
    api_key: str = attrs.field(default="", repr=False)

    def status_at(self, now: float) -> str:
        """The status string at monotonic time `now`."""
        if now < self.pending_until:
            return "pending"
        if now < self.done_at:
            return "processing"
        return "failed" if self.will_fail else "completed"

    def progress_at(self, now: float) -> int:
        """0 while pending, 0..99 while processing, 100 once completed or failed."""
        if now < self.pending_until:
            return 0
        if now >= self.done_at:
            return 100
        span = self.done_at - self.pending_until
        return min(99, int(100 * (now - self.pending_until) / span))

    def updated_at(self, now: float) -> float:
        """Monotonic time of the last status change at `now`."""
        if now < self.pending_until:
            return self.created_at
        if now < self.done_at:
            return self.pending_until
        return self.done_at

    @property
    def status(self) -> str:
        """The status string right now."""
        return self.status_at(time.monotonic())


@attrs.frozen(kw_only=True)
class ReceivedRequest:
    """One HTTP request the emulator received (on any route, faulted or not).

    `headers` keeps the names as the client sent them; use `header()` for a
    case-insensitive lookup. `json` is the decoded body, or None when it is not JSON.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes
    json: object | None
    time: float
    route: str | None
    request_id: str

    def header(self, name: str) -> str | None:
        """The value of header `name` (case-insensitive), or None."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None


@attrs.frozen(kw_only=True)
class CallbackRecord:
    """One callback the emulator sent, or meant to send.

    `status` is the receiver's HTTP status, `error` describes a failed attempt;
    a callback dropped by `Faults.callback_loss_rate` has `lost=True` and neither.
    `duplicate` marks the second copy sent by `Faults.callback_duplicate_rate`.
    """

    task_id: str
    url: str
    body: dict[str, Any]
    time: float
    status: int | None = None
    error: str | None = None
    lost: bool = False
    duplicate: bool = False


@attrs.define(kw_only=True)
class ServerStats:
    """Counters of what the emulator did since it was built (or `reset_records()`)."""

    requests: int = 0
    creates_accepted: int = 0
    creates_replayed: int = 0
    creates_refused: int = 0
    rate_limited: int = 0
    spend_limited: int = 0
    insufficient_credits: int = 0
    faults_injected: int = 0
    videos_served: int = 0
    callbacks_sent: int = 0
    callbacks_failed: int = 0
    callbacks_lost: int = 0
    #: The most requests the server was handling at one moment (a client's concurrency).
    max_in_flight: int = 0
