"""What the client, transport, watch and download tell telemetry, without opentelemetry.

The core imports only this module and `wan26_async._telemetry`, whose `load_telemetry`
imports `_otel` (which imports opentelemetry) the first time a client is built, and
only when opentelemetry is importable; without it, or with no-op providers, a client
holds no telemetry at all (``None``), and every hook on the hot path is one ``is None``
test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from yarl import URL

    from ._models import TaskEvent
    from ._requests import VideoRequest

__all__ = ["NO_SPAN", "Attempt", "AttributeValue", "CallSpan", "Telemetry", "redact_url"]

AttributeValue = str | bool | int | float


class CallSpan(Protocol):
    """The span of one logical call (``wan.create_task``, ...), while it runs."""

    def set_attribute(self, key: str, value: AttributeValue) -> None: ...


class Attempt(Protocol):
    """One HTTP attempt being timed (and traced)."""

    def end(self, status: int, failure: BaseException | None) -> None:
        """The attempt is over: ``status`` is the reply's (0 for none), ``failure`` what
        ended it (an SDK error, an aiohttp exception, a cancellation), else None."""


class Telemetry(Protocol):
    """A client's traces and metrics (see `wan26_async._otel.OtelTelemetry`)."""

    #: Still waiting for a global provider to be set (so `active` may turn True).
    pending: bool

    def active(self) -> bool:
        """Does anything record now? (False until a global provider is set.)"""

    def call(self, name: str, *, task_id: str | None = None,
             request: VideoRequest | None = None) -> AbstractContextManager[CallSpan]:
        """The span of a logical call, current while the block runs."""

    def attempt(self, method: str, url: URL, headers: Mapping[str, str], resend_count: int,
                *, waited: float | None = None,
                propagate_context: bool = True) -> tuple[Attempt, Mapping[str, str]]:
        """Start one HTTP attempt; return it and the headers to send (with the W3C trace
        context when ``propagate_context``). ``waited``: seconds spent in the limiter."""

    def watch(self, task_id: str, events: AsyncIterator[TaskEvent]) -> AsyncIterator[TaskEvent]:
        """``events`` inside a ``wan.watch`` span, counted in ``wan.watches.active``."""


class _NoSpan:
    """The span of a call when nothing traces: a shared, stateless no-op."""

    __slots__ = ()

    def __enter__(self) -> _NoSpan:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        return None


NO_SPAN = _NoSpan()


def redact_url(url: str) -> str:
    """``url`` for a span or a log line: credentials and query values replaced by
    ``REDACTED`` (a signed video URL's signature, a callback URL's token), the fragment
    dropped."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "REDACTED:REDACTED@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        query = urlencode([(k, "REDACTED") for k, _ in parse_qsl(query, keep_blank_values=True)],
                          safe="")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
