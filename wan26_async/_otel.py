"""OpenTelemetry traces and metrics of one client (imported only when opentelemetry is).

Names follow the OpenTelemetry HTTP client conventions and ``API.md``, "Observability":
a CLIENT span per HTTP attempt (named by its method) under a span per logical call
(``wan.create_task``, ``wan.get_task``, ``wan.get_credits``, ``wan.wait``,
``wan.download``, ``wan.watch``), and the metrics ``http.client.request.duration``,
``wan.rate_limit.wait``, ``wan.rate_limit.rejections`` and ``wan.watches.active``.

Nothing secret is recorded: no header, no body, no exception message (a server's
message may quote a callback URL); URLs pass through `redact_url`.

Cost: the tracer and meter are resolved once per client. While the global providers
are not set yet (opentelemetry's proxies), each call looks whether one has been set
since, so a client built before the SDK is configured still reports once it is; that
look reads the API's own module slots (an attribute each), not `get_tracer_provider()`,
which searches ``os.environ`` on every call. A no-op provider makes `load_telemetry`
drop the telemetry altogether.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._errors import APIError, ConfigurationError
from ._observe import NO_SPAN, AttributeValue, CallSpan, redact_url
from ._version import __version__

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from yarl import URL

    from ._models import TaskEvent
    from ._requests import VideoRequest

try:  # the global meter provider before one is set (private in the API: guarded)
    from opentelemetry.metrics import _internal as _metrics_globals
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _ProxyMeters
except ImportError:  # pragma: no cover - a newer API: its proxy then counts as set
    _ProxyMeters = None  # type: ignore[assignment,misc]
    _metrics_globals = None  # type: ignore[assignment]

__all__ = ["Attributes", "DURATION_BUCKETS", "OtelTelemetry", "SCHEMA_URL", "WAIT_BUCKETS",
           "error_type_of"]

SCHEMA_URL = "https://opentelemetry.io/schemas/1.26.0"
#: The HTTP conventions' advised buckets for request durations (seconds).
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                    7.5, 10.0)
#: Limiter waits: most are zero; a 429 pause lasts seconds.
WAIT_BUCKETS = (0.0, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0)
Attributes = dict[str, AttributeValue]


class _Instruments:
    def __init__(self, meter: metrics.Meter) -> None:
        self.duration = meter.create_histogram(
            "http.client.request.duration", unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        self.wait = meter.create_histogram(
            "wan.rate_limit.wait", unit="s",
            description="Time an HTTP attempt waited in the client's rate limiter.",
            explicit_bucket_boundaries_advisory=WAIT_BUCKETS)
        self.rejections = meter.create_counter(
            "wan.rate_limit.rejections", unit="{response}",
            description="HTTP 429 replies, by error.type (the API's error code).")
        self.watches = meter.create_up_down_counter(
            "wan.watches.active", unit="{watch}", description="Watches running now.")


class OtelTelemetry:
    """Traces and metrics of one client through the given or the global providers."""

    def __init__(self, tracer_provider: object | None, meter_provider: object | None) -> None:
        if tracer_provider is not None and not isinstance(tracer_provider,
                                                          trace.TracerProvider):
            raise ConfigurationError("tracer_provider must be an opentelemetry "
                                     f"TracerProvider, got {type(tracer_provider).__name__}")
        if meter_provider is not None and not isinstance(meter_provider, metrics.MeterProvider):
            raise ConfigurationError("meter_provider must be an opentelemetry "
                                     f"MeterProvider, got {type(meter_provider).__name__}")
        self._tracer_provider = tracer_provider
        self._meter_provider = meter_provider
        self.tracer: trace.Tracer | None = None
        self.instruments: _Instruments | None = None
        self._traces_pending = self._metrics_pending = True
        self.pending = True
        self._resolve()

    def _resolve(self) -> None:
        if self._traces_pending:
            tp = self._tracer_provider or trace.get_tracer_provider()
            if not isinstance(tp, trace.ProxyTracerProvider):
                self._traces_pending = False
                if not isinstance(tp, trace.NoOpTracerProvider):
                    self.tracer = tp.get_tracer("wan26_async", __version__,
                                                schema_url=SCHEMA_URL)
        if self._metrics_pending:
            mp = self._meter_provider or metrics.get_meter_provider()
            if _ProxyMeters is None or not isinstance(mp, _ProxyMeters):
                self._metrics_pending = False
                if not isinstance(mp, metrics.NoOpMeterProvider):
                    self.instruments = _Instruments(
                        mp.get_meter("wan26_async", __version__, schema_url=SCHEMA_URL))
        self.pending = self._traces_pending or self._metrics_pending

    def _maybe_set(self) -> bool:
        """While pending: may a global provider have been set since the last look?

        Reads the slots ``set_tracer_provider``/``set_meter_provider`` fill (None until
        then; a slot not found counts as set). A provider named only by the
        ``OTEL_PYTHON_*_PROVIDER`` variables is loaded when the client is built, so the
        environment need not be searched again on every call.
        """
        return ((self._traces_pending and getattr(trace, "_TRACER_PROVIDER", 1) is not None)
                or (self._metrics_pending
                    and getattr(_metrics_globals, "_METER_PROVIDER", 1) is not None))

    def active(self) -> bool:
        if self.pending and self._maybe_set():
            self._resolve()
        return self.tracer is not None or self.instruments is not None

    # -- logical calls ------------------------------------------------------------------

    def call(self, name: str, *, task_id: str | None = None,
             request: VideoRequest | None = None) -> AbstractContextManager[CallSpan]:
        if self.pending and self._maybe_set():
            self._resolve()
        tracer = self.tracer
        if tracer is None:
            return NO_SPAN
        span = tracer.start_span(name, kind=SpanKind.INTERNAL)
        if span.is_recording():
            if task_id is not None:
                span.set_attribute("wan.task_id", task_id)
            if request is not None:
                span.set_attribute("wan.model", request.model)
                span.set_attribute("wan.estimated_credits", request.estimated_credits)
        return _Current(span)

    async def watch(self, task_id: str, events: AsyncIterator[TaskEvent]
                    ) -> AsyncIterator[TaskEvent]:
        tracer, instruments = self.tracer, self.instruments
        span = None if tracer is None else tracer.start_span(
            "wan.watch", kind=SpanKind.INTERNAL, attributes={"wan.task_id": task_id})
        context = None if span is None else trace.set_span_in_context(span)
        if instruments is not None:
            instruments.watches.add(1)
        try:
            while True:
                # Current only while the watch runs (its polls are its children): an
                # async generator's caller may resume it from another context.
                token = None if context is None else otel_context.attach(context)
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    return
                finally:
                    if token is not None:
                        otel_context.detach(token)
                if span is not None and span.is_recording():
                    span.add_event("wan.task.status", {"wan.task.status": event.status.value})
                yield event
        except Exception as exc:
            if span is not None:
                _set_error(span, exc)
            raise
        finally:
            try:
                close = getattr(events, "aclose", None)
                if close is not None:
                    await close()
            finally:
                if instruments is not None:
                    instruments.watches.add(-1)
                if span is not None:
                    span.end()

    # -- HTTP attempts ------------------------------------------------------------------

    def attempt(self, method: str, url: URL, headers: Mapping[str, str], resend_count: int,
                *, waited: float | None = None,
                propagate_context: bool = True) -> tuple[_Attempt, Mapping[str, str]]:
        instruments = self.instruments
        if instruments is not None and waited is not None:
            instruments.wait.record(waited, {"server.address": url.host or "",
                                             "server.port": url.port or 0})
        attempt = _Attempt(self, method, url, resend_count)
        span = attempt.span
        if span is not None and propagate_context:
            headers = dict(headers)
            propagate.inject(headers, context=trace.set_span_in_context(span))
        return attempt, headers


class _Current:
    """A logical call's span, current while its block runs; ended when it leaves."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> _Current:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if isinstance(exc, Exception):  # a cancellation is not the call's failure
                _set_error(self._span, exc)
        finally:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._span.end()

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)


class _Attempt:
    """One HTTP attempt: a CLIENT span (when tracing) and its duration (when metering)."""

    __slots__ = ("_base", "_started", "_telemetry", "span")

    def __init__(self, telemetry: OtelTelemetry, method: str, url: URL,
                 resend_count: int) -> None:
        self._telemetry = telemetry
        self._base: Attributes = {"http.request.method": method,
                                  "server.address": url.host or "",
                                  "server.port": url.port or 0}
        tracer = telemetry.tracer
        self.span: trace.Span | None = None
        if tracer is not None:
            attributes = {**self._base, "url.full": redact_url(str(url))}
            if resend_count:
                attributes["http.request.resend_count"] = resend_count
            self.span = tracer.start_span(method, kind=SpanKind.CLIENT, attributes=attributes)
        self._started = time.perf_counter()

    def end(self, status: int, failure: BaseException | None) -> None:
        seconds = time.perf_counter() - self._started
        error_type: str | None = None
        if status >= 400:
            error_type = str(status)
        elif failure is not None:
            error_type = error_type_of(failure)
        span = self.span
        if span is not None:
            if span.is_recording():
                if status:
                    span.set_attribute("http.response.status_code", status)
                if error_type is not None:
                    span.set_attribute("error.type", error_type)
                    span.set_status(Status(StatusCode.ERROR))
            span.end()
        instruments = self._telemetry.instruments
        if instruments is not None:
            attributes = dict(self._base)
            if status:
                attributes["http.response.status_code"] = status
            if error_type is not None:
                attributes["error.type"] = error_type
            instruments.duration.record(seconds, attributes)
            if status == 429:
                code = failure.code if isinstance(failure, APIError) else None
                instruments.rejections.add(1, {"error.type": code or "429",
                                               "server.address": self._base["server.address"],
                                               "server.port": self._base["server.port"]})


def error_type_of(exc: BaseException) -> str:
    """``error.type`` of an exception: its class, fully qualified (the SDK's by its public
    name), low in cardinality and free of any message."""
    cls = type(exc)
    module = cls.__module__
    if module == "builtins":
        return cls.__qualname__
    if module.startswith("wan26_async"):
        return f"wan26_async.{cls.__qualname__}"
    return f"{module}.{cls.__qualname__}"


def _set_error(span: trace.Span, exc: BaseException) -> None:
    if span.is_recording():
        span.set_attribute("error.type", error_type_of(exc))
        span.set_status(Status(StatusCode.ERROR))
