"""The sides of `benchmarks/throughput.py`, each run in a worker process of its own.

A worker (``throughput.py --worker SIDE``) makes one timed run of one side and prints
it as one JSON line. ``wan26_async`` is imported only inside the runs, so the no-otel
side can block opentelemetry before anything of the package is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import ctypes.util
import faulthandler
import gc
import importlib.abc
import json
import pstats
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

try:  # python -m benchmarks.throughput
    from benchmarks._fastserver import CREATE_PATH
except ModuleNotFoundError:  # python benchmarks/throughput.py
    from _fastserver import CREATE_PATH  # type: ignore[no-redef,import-not-found]

if TYPE_CHECKING:  # wan26_async is imported in the runs, after the no-otel block
    import wan26_async as wan

API_KEY = "sk-bench"
PROMPT = "A robot walks through a rainy neon alley at night, cinematic, slow dolly shot"


@dataclass
class Run:
    """One timed run of one side."""

    side: str
    n: int
    seconds: float
    cpu: float
    check: str = ""  # what the worker verified about its set-up

    @property
    def rate(self) -> float:
        return self.n / self.seconds


Call = Callable[[], Awaitable[str]]


class _NoOpentelemetry(importlib.abc.MetaPathFinder):
    """Makes ``import opentelemetry`` fail as if it were not installed."""

    def find_spec(self, name: str, path: Sequence[str] | None = None,
                  target: object = None) -> None:
        if name == "opentelemetry" or name.startswith("opentelemetry."):
            raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
        return None


async def _drive(call: Call, n: int, concurrency: int) -> tuple[float, float]:
    """Run ``call`` n times from ``concurrency`` workers; wall and CPU seconds."""
    remaining = n
    ids: list[str] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            ids.append(await call())

    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if len(ids) != n or not all(ids):
        raise RuntimeError(f"expected {n} task ids, got {len(ids)}")
    return wall, cpu


async def _warm(call: Call, concurrency: int) -> None:
    """Open every pooled connection before timing: ``concurrency`` calls at once."""
    await asyncio.gather(*(call() for _ in range(concurrency)))


def _request() -> wan.VideoRequest:
    import wan26_async as wan

    return wan.TextToVideo(prompt=PROMPT, duration=5)


def _fresh(request: wan.VideoRequest, count: int, distinct: bool) -> Callable[[], Any]:
    """The request of each call: the same one, or (``distinct``) a new object per call,
    all built before the timed part."""
    import attrs

    if not distinct:
        return lambda: request
    return iter([attrs.evolve(request) for _ in range(count)]).__next__


async def raw_run(base_url: str, n: int, concurrency: int, distinct: bool) -> Run:
    """A careful hand-written client: JSON-encode the body per call, a fresh uuid4
    idempotency key per call, read and parse the reply, take ``data.taskId`` (with
    ``distinct``, a new body dict per call, built before the timed part)."""
    body = _request().to_payload()  # the very JSON the SDK sends
    fresh = iter([{**body, "input": dict(body["input"])} for _ in range(n + concurrency)]
                 if distinct else [])
    url = base_url + CREATE_PATH
    base_headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def call() -> str:
            headers = {**base_headers, "Idempotency-Key": str(uuid.uuid4())}
            data = json.dumps(next(fresh) if distinct else body, separators=(",", ":"),
                              ensure_ascii=False).encode()
            async with session.post(url, data=data, headers=headers) as resp:
                raw = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"HTTP {resp.status}: {raw[:200]!r}")
            return str(json.loads(raw)["data"]["taskId"])

        await _warm(call, concurrency)
        wall, cpu = await _drive(call, n, concurrency)
    return Run("raw", n, wall, cpu)


def _otel_sdk(processor: str) -> tuple[dict[str, Any], Callable[[int], str]]:
    """The providers of the otel-sdk side, and a check of what they recorded."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        BatchSpanProcessor(exporter) if processor == "batch" else SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[reader])

    def check(calls: int) -> str:
        tracer_provider.force_flush()
        spans = len(exporter.get_finished_spans())
        data = reader.get_metrics_data()
        durations = sum(point.count for rm in (data.resource_metrics if data else ())
                        for sm in rm.scope_metrics for metric in sm.metrics
                        if metric.name == "http.client.request.duration"
                        for point in metric.data.data_points
                        if isinstance(point, HistogramDataPoint))
        tracer_provider.shutdown()
        meter_provider.shutdown()
        if spans != 2 * calls or durations != calls:
            raise RuntimeError(f"otel-sdk recorded {spans} spans and {durations} durations "
                               f"for {calls} creates (spans dropped?)")
        return f"{processor} span processor: {spans} spans, {durations} durations"

    return {"tracer_provider": tracer_provider, "meter_provider": meter_provider}, check


def _otel_state(side: str, client: wan.AsyncWanClient) -> str:
    """What the client's telemetry is, refusing a side whose set-up is not what it says."""
    loaded = "opentelemetry" in sys.modules
    telemetry = client._transport.telemetry
    if side == "no-otel" and (loaded or telemetry is not None):
        raise RuntimeError("no-otel side: opentelemetry was imported")
    if side == "otel-api":
        from opentelemetry import trace

        if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider) \
                or telemetry is None:
            raise RuntimeError("otel-api side: a global tracer provider is set")
    if not loaded:
        return "opentelemetry not imported"
    from opentelemetry.version import __version__ as otel_version

    state = "none" if telemetry is None else "pending (global proxies)" \
        if telemetry.pending else "recording"
    return f"opentelemetry-api {otel_version} loaded, telemetry {state}"


async def client_run(side: str, base_url: str, n: int, concurrency: int, distinct: bool,
                     processor: str) -> Run:
    """``AsyncWanClient.create_task`` (with the side's telemetry set-up)."""
    import wan26_async as wan

    request = _request()
    next_request = _fresh(request, n + concurrency, distinct)
    providers, check = _otel_sdk(processor) if side == "otel-sdk" else ({}, None)
    async with wan.AsyncWanClient(api_key=API_KEY, base_url=base_url,
                                  max_concurrency=concurrency, **providers) as client:

        async def call() -> str:
            return (await client.create_task(next_request())).id

        await _warm(call, concurrency)
        wall, cpu = await _drive(call, n, concurrency)
        state = _otel_state(side, client)
    if check is not None:
        state += "; " + check(n + concurrency)
    return Run(side, n, wall, cpu, state)


def blocking_run(base_url: str, n: int, concurrency: int, threads: int,
                 distinct: bool) -> Run:
    """``WanClient.create_task`` from ``threads`` threads sharing one client."""
    import wan26_async as wan

    next_request = _fresh(_request(), n + threads, distinct)
    lock = threading.Lock()
    remaining = n
    ids: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    with wan.WanClient(api_key=API_KEY, base_url=base_url,
                       max_concurrency=concurrency) as client:

        def worker() -> None:
            nonlocal remaining
            try:
                with lock:
                    request = next_request()
                client.create_task(request)  # warm: one connection per thread
                start.wait()
                while True:
                    with lock:
                        if remaining <= 0:
                            return
                        remaining -= 1
                        request = next_request()
                    ids.append(client.create_task(request).id)
            except BaseException as exc:
                errors.append(exc)
                start.abort()

        pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
        for thread in pool:
            thread.start()
        gc.collect()
        start.wait()
        t0, c0 = time.perf_counter(), time.process_time()
        for thread in pool:
            thread.join()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        state = _otel_state("blocking", client._client)
    if errors:
        raise errors[0]
    if len(ids) != n or not all(ids):
        raise RuntimeError(f"expected {n} task ids, got {len(ids)}")
    return Run("blocking", n, wall, cpu, f"{threads} threads; {state}")


async def _guarded(run: Awaitable[Run], timeout: float) -> Run:
    """Await one run; if it takes over ``timeout`` s, print every pending task's stack
    to stderr and fail, rather than hang the benchmark (and its server) forever."""
    main = asyncio.ensure_future(run)
    done, _ = await asyncio.wait({main}, timeout=timeout)
    if not done:
        me = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not me:
                print(f"pending: {task!r}", file=sys.stderr)
                task.print_stack(limit=15, file=sys.stderr)
        main.cancel()
        raise RuntimeError(f"a run took over {timeout:g} s (hung?); pending tasks above")
    return main.result()


def run_side(args: argparse.Namespace) -> Run:
    """One run of ``args.worker`` in this (worker) process."""
    side, base_url = args.worker, f"http://127.0.0.1:{args.port}"
    if side == "blocking":
        faulthandler.dump_traceback_later(args.run_timeout, exit=True)  # every thread
        try:
            return blocking_run(base_url, args.n, args.concurrency, args.threads,
                                args.distinct)
        finally:
            faulthandler.cancel_dump_traceback_later()
    if side == "raw":
        run = raw_run(base_url, args.n, args.concurrency, args.distinct)
    else:
        run = client_run(side, base_url, args.n, args.concurrency, args.distinct,
                         args.span_processor)
    return asyncio.run(_guarded(run, args.run_timeout))


def worker_main(args: argparse.Namespace) -> int:
    if args.worker == "no-otel":
        sys.meta_path.insert(0, _NoOpentelemetry())
    if not args.malloc_default:
        _pin_malloc_thresholds()
    if not args.profile:
        print(json.dumps(asdict(run_side(args))), flush=True)
        return 0
    profiler = cProfile.Profile()
    profiler.enable()
    run = run_side(args)
    profiler.disable()
    print(f"profiled {run.side} run: {run.n} req in {run.seconds:.2f} s "
          f"({run.rate:.0f}/s under cProfile, cpu {run.cpu:.2f} s; {run.check})")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(25)
    print("the SDK's own functions (coroutines count one call per resumption):")
    stats.print_stats(r"wan26_async[/\\]", 15)
    return 0


def _pin_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds (off their dynamic defaults).

    asyncio reads each socket into a fresh 256 KiB buffer. Whether glibc serves that
    from the heap or maps, faults in and unmaps fresh pages on every read depends on
    the process's allocation history; under the dynamic defaults that flips with the
    hash seed and moves one side's per-call CPU by ~15 %, run to run. Pinning the
    thresholds takes that out of the comparison. False where it is not glibc.
    """
    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(libc.mallopt(m_mmap_threshold, 4 << 20)
                    and libc.mallopt(m_trim_threshold, 64 << 20))
    except (OSError, AttributeError):
        return False
