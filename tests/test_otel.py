"""OpenTelemetry: the spans, events and metrics a user's exporter sees, against the
emulator over real sockets, and nothing at all without opentelemetry installed."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest
from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NoOpTracerProvider, SpanKind, StatusCode

import wan26_async as wan
from wan26_async.testing import FakeWanServer, TokenBucket

from .conftest import FAST, FAST_POLL, FAST_RETRY, eventually

ROOT = Path(__file__).resolve().parent.parent


@attrs.define
class Otel:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name in (None, s.name)]

    def metric_points(self, name: str) -> list[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return []
        return [point for rm in data.resource_metrics for sm in rm.scope_metrics
                for metric in sm.metrics if metric.name == name
                for point in metric.data.data_points]

    def exported_text(self) -> str:
        """Every byte an exporter would ship: spans (with events) and metrics as JSON."""
        spans = [s.to_json() for s in self.exporter.get_finished_spans()]
        data = self.reader.get_metrics_data()
        return "\n".join([*spans, data.to_json() if data is not None else ""])


@pytest.fixture
def otel() -> Iterator[Otel]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(exporter, reader, tracer_provider, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
async def traced(server: FakeWanServer, otel: Otel) -> AsyncIterator[wan.AsyncWanClient]:
    async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=FAST_POLL, retry=FAST_RETRY, timeout=5,
                                  tracer_provider=otel.tracer_provider,
                                  meter_provider=otel.meter_provider) as client:
        yield client


def request() -> wan.TextToVideo:
    return wan.TextToVideo(prompt="a lighthouse at dusk", resolution="720p", duration=2)


def children(otel: Otel, parent: ReadableSpan, name: str | None = None) -> list[ReadableSpan]:
    return [s for s in otel.spans(name)
            if s.parent is not None and s.parent.span_id == parent.context.span_id]


# -- one generation, one trace ------------------------------------------------------------


async def test_a_generation_is_one_trace_of_calls_attempts_and_status_events(
    traced: wan.AsyncWanClient, server: FakeWanServer, otel: Otel, tmp_path: Path
) -> None:
    app = otel.tracer_provider.get_tracer("app")
    with app.start_as_current_span("job") as job:
        task = await traced.generate(request())
        await traced.download(task.video_url, tmp_path / "out.mp4")
    trace_id = job.get_span_context().trace_id
    (root,) = otel.spans("job")
    assert all(s.context.trace_id == trace_id for s in otel.spans())

    (create,) = children(otel, root, "wan.create_task")
    assert create.attributes == {"wan.model": "wan-2.6-text-to-video",
                                 "wan.estimated_credits": request().estimated_credits,
                                 "wan.task_id": task.id}
    (post,) = children(otel, create)
    assert post.name == "POST" and post.kind is SpanKind.CLIENT
    assert post.attributes == {
        "http.request.method": "POST", "server.address": "127.0.0.1",
        "server.port": server.port, "url.full": f"{server.base_url}/v1/videos/generations",
        "http.response.status_code": 200,
    }

    (wait,) = children(otel, root, "wan.wait")
    assert wait.attributes == {"wan.task_id": task.id}
    (watch,) = children(otel, wait)
    assert watch.name == "wan.watch" and watch.attributes == {"wan.task_id": task.id}
    statuses = [e.attributes["wan.task.status"] for e in watch.events
                if e.name == "wan.task.status" and e.attributes is not None]
    assert statuses[-1] == "completed"
    ranks = [wan.TaskStatus(s).rank for s in statuses]
    assert ranks == sorted(set(ranks))  # one event per change, never backwards
    polls = children(otel, watch)
    assert polls and all(p.name == "GET" and p.kind is SpanKind.CLIENT for p in polls)
    assert {p.attributes["url.full"] for p in polls} == {
        f"{server.base_url}/v1/tasks/{task.id}"}
    gets = [r for r in server.requests if r.route == "get"]
    assert len(polls) == len(gets)

    (download,) = children(otel, root, "wan.download")
    (fetch,) = children(otel, download)
    assert fetch.name == "GET" and fetch.attributes["url.full"] == task.video_url
    assert fetch.attributes["http.response.status_code"] == 200
    assert all(s.status.status_code is StatusCode.UNSET for s in otel.spans())


async def test_api_requests_carry_the_attempts_trace_context_and_downloads_none(
    traced: wan.AsyncWanClient, server: FakeWanServer, otel: Otel, tmp_path: Path
) -> None:
    task = await traced.generate(request())
    await traced.download(task.video_url, tmp_path / "out.mp4")
    attempts = {s.context.span_id: s for s in otel.spans() if s.kind is SpanKind.CLIENT}
    for received in server.requests:
        header = received.header("traceparent")
        if received.route == "video":
            assert header is None
            continue
        assert header is not None, received.path
        _version, trace_id, span_id, _flags = header.split("-")
        span = attempts[int(span_id, 16)]  # the attempt's own span is the parent
        assert int(trace_id, 16) == span.context.trace_id
        assert span.attributes["url.full"].endswith(received.path)
    assert any(r.route == "video" for r in server.requests)


async def test_fan_out_nests_every_call_under_the_callers_span(
    traced: wan.AsyncWanClient, otel: Otel
) -> None:
    app = otel.tracer_provider.get_tracer("app")
    with app.start_as_current_span("batch"):
        async with traced.fan_out([request() for _ in range(4)], concurrency=2) as outcomes:
            results = [o async for o in outcomes]
    assert all(o.ok for o in results)
    (batch,) = otel.spans("batch")
    assert len(children(otel, batch, "wan.create_task")) == 4
    assert len(children(otel, batch, "wan.wait")) == 4


async def test_a_failed_call_marks_its_spans_with_the_error_type_only(
    traced: wan.AsyncWanClient, otel: Otel
) -> None:
    with pytest.raises(wan.TaskNotFoundError):
        await traced.get_task("no-such-task")
    (call,) = otel.spans("wan.get_task")
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes["error.type"] == "wan26_async.TaskNotFoundError"
    assert not call.events  # no exception event: a server's message is not exported
    (attempt,) = children(otel, call)
    assert attempt.attributes["error.type"] == "404"
    assert attempt.attributes["http.response.status_code"] == 404


# -- a 429 storm ---------------------------------------------------------------------------


async def test_a_429_storm_shows_each_refused_attempt_and_counts_every_rejection(
    otel: Otel
) -> None:
    async with FakeWanServer(rate_limit=TokenBucket(rate=20, burst=2, retry_after=1),
                             **FAST) as server:
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      retry=wan.RetryPolicy(max_retries=10),
                                      tracer_provider=otel.tracer_provider,
                                      meter_provider=otel.meter_provider) as client:
            await asyncio.gather(*(client.get_credits() for _ in range(8)))
    refused = server.stats.rate_limited
    assert refused >= 1
    attempts = otel.spans("GET")
    assert len(attempts) == len(server.requests) == 8 + refused
    rejected = [s for s in attempts if s.attributes["http.response.status_code"] == 429]
    assert len(rejected) == refused
    assert all(s.attributes["error.type"] == "429" and s.status.status_code is StatusCode.ERROR
               for s in rejected)
    resent = [s for s in attempts if "http.request.resend_count" in s.attributes]
    assert len(resent) == refused  # every refused attempt was sent again, and said so
    assert all(s.attributes["http.request.resend_count"] >= 1 for s in resent)
    for call in otel.spans("wan.get_credits"):  # each call is the parent of its attempts
        assert children(otel, call)
    points = otel.metric_points("wan.rate_limit.rejections")
    assert sum(p.value for p in points) == refused
    assert {p.attributes["error.type"] for p in points} == {"rate_limit_exceeded"}
    waits = otel.metric_points("wan.rate_limit.wait")
    assert sum(p.count for p in waits) == len(attempts)
    assert max(p.max for p in waits) >= 0.5  # someone waited out the Retry-After pause


# -- metrics ---------------------------------------------------------------------------------


async def test_request_durations_and_open_watches_are_measured(
    traced: wan.AsyncWanClient, otel: Otel
) -> None:
    task = await traced.create_task(request())
    events = traced.watch(task.id)
    first = await anext(events)
    assert first.task_id == task.id

    def open_watches() -> int:
        return sum(p.value for p in otel.metric_points("wan.watches.active"))

    assert open_watches() == 1
    async for _ in events:
        pass
    await eventually(lambda: open_watches() == 0)

    durations = otel.metric_points("http.client.request.duration")
    by_method = {p.attributes["http.request.method"]: p for p in durations}
    assert by_method["POST"].count == 1 and by_method["GET"].count >= 1
    for point in durations:
        assert set(point.attributes) == {"http.request.method", "server.address",
                                         "server.port", "http.response.status_code"}
        assert point.attributes["http.response.status_code"] == 200
        assert point.sum > 0


async def test_a_watch_left_early_closes_its_span_and_its_count(
    traced: wan.AsyncWanClient, otel: Otel
) -> None:
    task = await traced.create_task(request())
    with anyio.fail_after(5):
        async for _ in traced.watch(task.id):
            break
    await eventually(lambda: bool(otel.spans("wan.watch")))
    assert sum(p.value for p in otel.metric_points("wan.watches.active")) == 0


# -- nothing leaks ----------------------------------------------------------------------------


async def test_no_key_token_or_query_string_in_any_span_metric_or_log(
    server: FakeWanServer, otel: Otel, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wan26_async")
    receiver = wan.CallbackReceiver()
    secrets = [server.api_key]
    async with receiver, wan.AsyncWanClient(
        api_key=server.api_key, base_url=server.base_url, poll=FAST_POLL, retry=FAST_RETRY,
        callbacks=receiver, tracer_provider=otel.tracer_provider,
        meter_provider=otel.meter_provider,
    ) as client:
        callback_url = receiver.callback_url
        query = callback_url.partition("?")[2]
        assert query, "the receiver's URL carries its token in the query string"
        secrets += [query, *(value for _, _, value in
                             (part.partition("=") for part in query.split("&")))]
        task = await client.generate(request())
        other = await client.create_task(request(),
                                         callback_url="http://127.0.0.1:9/x?sig=hunter2")
        secrets += ["hunter2"]
        signed = f"{task.video_url}?Signature=opensesame"
        secrets += ["opensesame"]
        await client.download(signed, tmp_path / "out.mp4")
        with pytest.raises(wan.TaskNotFoundError):
            await client.get_task("missing")
        assert (await client.get_task(other.id)).id == other.id
    (fetch,) = children(otel, otel.spans("wan.download")[0])
    assert fetch.attributes["url.full"] == f"{task.video_url}?Signature=REDACTED"

    logs = "\n".join(json.dumps({**r.__dict__, "message": r.getMessage()}, default=str)
                     for r in caplog.records)
    assert logs  # debug logging was on
    exported = otel.exported_text()
    for secret in secrets:
        assert secret and secret not in exported, secret
        assert secret not in logs, secret


# -- structured logs ---------------------------------------------------------------------------


async def test_log_records_carry_the_task_attempt_and_status_as_fields(
    client: wan.AsyncWanClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wan26_async")
    task = await client.generate(request())
    changes = [r for r in caplog.records if getattr(r, "wan_task_id", None) == task.id]
    assert [r.__dict__["wan_status"] for r in changes][-1] == "completed"
    replies = [r.__dict__ for r in caplog.records if hasattr(r, "wan_http_status")]
    assert {(r["wan_method"], r["wan_http_status"], r["wan_attempt"]) for r in replies} >= {
        ("POST", 200, 0), ("GET", 200, 0)}


# -- cost when off -------------------------------------------------------------------------------


def test_no_op_providers_leave_the_client_without_telemetry() -> None:
    client = wan.AsyncWanClient(api_key="sk-test", base_url="http://127.0.0.1:9",
                                tracer_provider=NoOpTracerProvider(),
                                meter_provider=NoOpMeterProvider())
    assert client._transport.telemetry is None  # the hot path skips every hook


def test_a_provider_that_is_not_one_is_refused() -> None:
    with pytest.raises(wan.ConfigurationError, match="TracerProvider"):
        wan.AsyncWanClient(api_key="sk-test", base_url="http://127.0.0.1:9",
                           tracer_provider=object())


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_without_opentelemetry_nothing_of_it_is_imported_and_calls_work() -> None:
    out = _run("""
        import asyncio, sys
        from importlib.abc import MetaPathFinder

        class Block(MetaPathFinder):  # as if opentelemetry were not installed
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Block())
        import wan26_async as wan
        from wan26_async.testing import FakeWanServer

        async def main():
            async with FakeWanServer(time_scale=0.002, pending_seconds=0.01) as server:
                async with wan.AsyncWanClient(api_key=server.api_key,
                                              base_url=server.base_url) as client:
                    assert client._transport.telemetry is None
                    task = await client.generate(wan.TextToVideo(prompt="x", duration=2))
                    assert task.status is wan.TaskStatus.COMPLETED
                try:
                    wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                       tracer_provider=object())
                except wan.ConfigurationError as err:
                    assert "wan26-async[otel]" in str(err)
                else:
                    raise AssertionError("a tracer_provider without opentelemetry was taken")

        asyncio.run(main())
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        assert "wan26_async._otel" not in sys.modules
        print("ok")
    """)
    assert out.strip() == "ok"


def test_a_client_built_before_the_global_providers_reports_once_they_are_set() -> None:
    # In a fresh process: the global providers can be set only once per process.
    out = _run("""
        import asyncio
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter)
        import wan26_async as wan
        from wan26_async.testing import FakeWanServer

        async def main():
            async with FakeWanServer() as server:
                async with wan.AsyncWanClient(api_key=server.api_key,
                                              base_url=server.base_url) as client:
                    await client.get_credits()  # no provider yet: nothing recorded
                    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
                    provider = TracerProvider()
                    provider.add_span_processor(SimpleSpanProcessor(exporter))
                    trace.set_tracer_provider(provider)
                    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
                    await client.get_credits()
            names = [s.name for s in exporter.get_finished_spans()]
            assert names == ["GET", "wan.get_credits"], names
            data = reader.get_metrics_data().to_json()
            assert "http.client.request.duration" in data

        asyncio.run(main())
        print("ok")
    """)
    assert out.strip() == "ok"


def test_until_a_global_provider_is_set_calls_do_not_ask_the_api_for_it_again() -> None:
    # The no-op path's budget: a look at the API's slots, not get_tracer_provider(),
    # which searches os.environ each time. Each provider is still found once it is set.
    out = _run("""
        import asyncio
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter)
        import wan26_async as wan
        from wan26_async.testing import FakeWanServer

        asked = []
        for module, name in ((trace, "get_tracer_provider"), (metrics, "get_meter_provider")):
            def counted(real=getattr(module, name), name=name):
                asked.append(name)
                return real()
            setattr(module, name, counted)

        async def main():
            async with FakeWanServer() as server:
                async with wan.AsyncWanClient(api_key=server.api_key,
                                              base_url=server.base_url) as client:
                    built = len(asked)
                    for _ in range(3):
                        await client.get_credits()
                    assert len(asked) == built, asked[built:]
                    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
                    provider = TracerProvider()
                    provider.add_span_processor(SimpleSpanProcessor(exporter))
                    trace.set_tracer_provider(provider)
                    await client.get_credits()
                    assert [s.name for s in exporter.get_finished_spans()] == [
                        "GET", "wan.get_credits"]
                    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
                    await client.get_credits()
            assert len(exporter.get_finished_spans()) == 4
            points = [p for rm in reader.get_metrics_data().resource_metrics
                      for sm in rm.scope_metrics for m in sm.metrics
                      if m.name == "http.client.request.duration" for p in m.data.data_points]
            assert sum(p.count for p in points) == 1, points  # from the call after the set

        asyncio.run(main())
        print("ok")
    """)
    assert out.strip() == "ok"
