"""What the API answers: tasks, their status and events, credits, fan-out outcomes."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._requests import VideoRequest

__all__ = ["Credits", "Outcome", "Task", "TaskEvent", "TaskStatus"]


class TaskStatus(str, Enum):
    """A task's status: ``pending -> processing -> completed | failed``.

    ``UNKNOWN`` stands for a status string this SDK does not know (see
    ``Task.status_text``); it is never terminal.
    """

    PENDING = "pending"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    UNKNOWN = "unknown"

    def __str__(self) -> str:
        return str(self.value)

    @property
    def is_terminal(self) -> bool:
        """True for ``COMPLETED`` and ``FAILED``: the task will not change again."""
        return self in _TERMINAL

    @property
    def rank(self) -> int:
        """Position in the life of a task, so a stale reply never moves it backwards."""
        return _RANK[self]


_TERMINAL = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED})
_RANK = {
    TaskStatus.UNKNOWN: -1,
    TaskStatus.PENDING: 0,
    TaskStatus.PROCESSING: 1,
    TaskStatus.COMPLETED: 2,
    TaskStatus.FAILED: 2,
}


def _raw_repr(raw: Mapping[str, Any]) -> str:
    return "{...}" if raw else "{}"


@attrs.frozen(kw_only=True)
class Task:
    """A generation task as the server last described it.

    ``video_url`` is set once the task is ``COMPLETED``; ``error`` holds the server's
    failure reason once it is ``FAILED``. ``status_text`` is the status exactly as the
    server sent it, and ``raw`` the decoded JSON of the reply, for fields not modeled yet.
    """

    id: str
    status: TaskStatus
    status_text: str = ""
    video_url: str | None = None
    error: str | None = None
    error_code: str | None = None
    progress: int | None = None
    model: str | None = None
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False, repr=_raw_repr)

    @property
    def done(self) -> bool:
        """True once the task is ``COMPLETED`` or ``FAILED``."""
        return self.status.is_terminal


@attrs.frozen(kw_only=True)
class TaskEvent:
    """One status change of a task seen by ``client.watch``.

    ``previous`` is None for the first event. ``elapsed`` is seconds since the watch
    began; ``task`` is the task as last seen.
    """

    task_id: str
    status: TaskStatus
    previous: TaskStatus | None
    task: Task
    elapsed: float = 0.0

    @property
    def is_terminal(self) -> bool:
        """True for the last event of a watch (``COMPLETED`` or ``FAILED``)."""
        return self.status.is_terminal


@attrs.frozen(kw_only=True)
class Credits:
    """The account's credit balance (``GET /v1/credits``); ``raw`` is the decoded reply."""

    balance: float
    raw: Mapping[str, Any] = attrs.field(factory=dict, eq=False, hash=False, repr=_raw_repr)


@attrs.frozen(kw_only=True)
class Outcome:
    """The result of one request of ``client.fan_out``: exactly one per request.

    ``index`` is the request's position in the input; ``request`` is the request (or the
    payload mapping as given, when it could not be built). ``task`` is the final task when
    one was made (also for a failed task); ``error`` is the exception when the request
    did not complete (validation, task failed, not submitted, ...), else None.
    """

    index: int
    request: VideoRequest | Mapping[str, Any]
    task: Task | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the task completed."""
        return self.error is None and self.task is not None
