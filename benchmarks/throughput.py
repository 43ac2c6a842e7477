"""Throughput of ``create_task``: the clients and their telemetry against a raw aiohttp loop.

Every side sends N creates to a minimal fast local server running in another process
(``benchmarks/_fastserver.py``), at the same concurrency cap:

- ``raw``: a hand-written aiohttp loop doing the same work (the baseline);
- ``sdk``: ``AsyncWanClient`` as installed here, no telemetry configured;
- ``no-otel``: the same with opentelemetry made unimportable (a ``sys.meta_path``
  finder): checked that no ``opentelemetry`` module is loaded after the run;
- ``otel-api``: opentelemetry importable, no SDK configured (the global providers are
  the API's proxies): the client's no-op path;
- ``otel-sdk``: an opentelemetry-sdk ``TracerProvider`` (``BatchSpanProcessor`` into an
  ``InMemorySpanExporter``; ``--span-processor simple`` for ``SimpleSpanProcessor``)
  and a ``MeterProvider`` with an ``InMemoryMetricReader``, passed as
  ``tracer_provider=``/``meter_provider=``: checked that every span and duration was
  recorded;
- ``blocking``: one ``WanClient`` shared by ``--threads`` threads making blocking calls
  (``max_concurrency`` the same cap; at most ``--threads`` calls in flight).

Each run is a fresh worker process (this script with ``--worker``, importing the
``wan26_async`` of the tree the script is in), so every side starts alike and the
no-otel side can block the import. A round runs every side once,
in an order rotated and reversed round to round, with the same ``PYTHONHASHSEED`` for
every side of a round. A shared machine's noise only adds time, so the best rounds are
compared; per-round paired ratios (median and range) show the spread. CPU seconds
(``time.process_time()``, every thread of the worker) are printed per run.
Targets: sdk time / raw time <= 1.10; otel-api / no-otel <= 1.03.

    python benchmarks/throughput.py [--sides raw,sdk,...] [--n 10000] [--concurrency 64]
                                    [--threads 8] [--rounds 7] [--distinct] [--json]
    python benchmarks/throughput.py --profile [--sides otel-api]  # one run under cProfile
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
import os
import platform
import pstats
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

try:  # python -m benchmarks.throughput
    from benchmarks._fastserver import CREATE_PATH, start_server, stop_server
except ModuleNotFoundError:  # python benchmarks/throughput.py
    from _fastserver import CREATE_PATH, start_server, stop_server  # type: ignore[no-redef,import-not-found]

if TYPE_CHECKING:  # wan26_async is imported in the worker, after the no-otel block
    import wan26_async as wan

SIDES = ("raw", "sdk", "no-otel", "otel-api", "otel-sdk", "blocking")
#: The ratios printed besides every side against raw: (side, baseline, target of side
#: time / baseline time, or None).
RATIOS = (("sdk", "raw", 1.10), ("otel-api", "no-otel", 1.03), ("otel-sdk", "no-otel", None),
          ("blocking", "sdk", None))
BUSY = 1.10  # best round's wall / CPU seconds above which times are the machine's load
API_KEY = "sk-bench"
PROMPT = "A robot walks through a rainy neon alley at night, cinematic, slow dolly shot"
ROOT = Path(__file__).resolve().parent.parent


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


# -- in the worker: the sides ---------------------------------------------------------


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


# -- in the parent: rounds and figures --------------------------------------------------


def spawn(side: str, args: argparse.Namespace, port: int, seed: int) -> Run | None:
    """One run of ``side`` in a fresh worker process (None under ``--profile``, whose
    worker prints its own report)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", side,
           "--port", str(port), "--n", str(args.n), "--concurrency", str(args.concurrency),
           "--threads", str(args.threads), "--run-timeout", str(args.run_timeout),
           "--span-processor", args.span_processor]
    cmd += [flag for flag, on in (("--distinct", args.distinct), ("--profile", args.profile),
                                  ("--malloc-default", args.malloc_default)) if on]
    # The package of the tree this script is in, ahead of any installed one.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONHASHSEED": str(seed), "PYTHONPATH": path}
    if args.profile:
        subprocess.run(cmd, cwd=ROOT, env=env, check=True, timeout=args.run_timeout + 60)
        return None
    done = subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE,
                          text=True, timeout=args.run_timeout + 60)
    return Run(**json.loads(done.stdout.strip().splitlines()[-1]))


def order_of(sides: Sequence[str], i: int) -> list[str]:
    """Round i's order: reversed every other round, rotated by one every two rounds (so
    each pair of sides runs in both orders, two sides included)."""
    k = ((i - 1) // 2) % len(sides)
    order = [*sides[k:], *sides[:k]]
    return order[::-1] if i % 2 == 0 else order


def _spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarize(runs: dict[str, list[Run]]) -> dict[str, Any]:
    """Per side: best and median rate and CPU; per pair of RATIOS: the best rounds' time
    and CPU ratios and the spread of the per-round paired time ratios."""
    sides: dict[str, Any] = {}
    for side, rs in runs.items():
        best = min(rs, key=lambda r: r.seconds)
        sides[side] = {
            "best_rate": round(best.rate, 1),
            "median_rate": round(statistics.median(r.rate for r in rs), 1),
            "best_cpu_us_per_call": round(1e6 * min(r.cpu for r in rs) / best.n, 2),
            "median_cpu_us_per_call": round(1e6 * statistics.median(r.cpu for r in rs)
                                            / best.n, 2),
            "check": best.check,
            "runs": [{**asdict(r), "rate": round(r.rate, 1)} for r in rs],
        }
    ratios = []
    vs_raw = [(side, "raw", None) for side in SIDES if side not in ("raw", "sdk")]
    for side, base, target in [*RATIOS[:1], *vs_raw, *RATIOS[1:]]:
        if side not in runs or base not in runs:
            continue
        xs, bs = runs[side], runs[base]
        time_ratio = min(r.seconds for r in xs) / min(r.seconds for r in bs)
        paired = _spread([x.seconds / b.seconds for x, b in zip(xs, bs, strict=True)])
        paired_cpu = _spread([x.cpu / b.cpu for x, b in zip(xs, bs, strict=True)])
        ratios.append({
            "side": side, "baseline": base, "target": target,
            "time_ratio": round(time_ratio, 4),
            "cpu_ratio": round(min(r.cpu for r in xs) / min(r.cpu for r in bs), 4),
            "paired_time_ratio": {k: round(v, 4) for k, v in paired.items()},
            "paired_cpu_ratio": {k: round(v, 4) for k, v in paired_cpu.items()},
            "verdict": None if target is None else "ok" if time_ratio <= target
            else "over target",
        })
    # A CPU-bound side that waited well beyond its CPU seconds even in its best round
    # did not have a core to itself: its times measure the machine's other load.
    busy = {side: round(min(rs, key=lambda r: r.seconds).seconds
                        / min(rs, key=lambda r: r.seconds).cpu, 3)
            for side, rs in runs.items() if side != "blocking"}
    return {"sides": sides, "ratios": ratios, "best_wall_over_cpu": busy}


def report(summary: dict[str, Any]) -> None:
    print(f"\n{'side':<9} {'best req/s':>10} {'median':>8} {'cpu us/call best':>17} "
          f"{'median':>7}  set-up")
    for side, s in summary["sides"].items():
        print(f"{side:<9} {s['best_rate']:>10.0f} {s['median_rate']:>8.0f} "
              f"{s['best_cpu_us_per_call']:>17.1f} {s['median_cpu_us_per_call']:>7.1f}  "
              f"{s['check']}")
    print()
    print("ratios of the best rounds, then of each round's pair: median (min-max)")
    for r in summary["ratios"]:
        p, c = r["paired_time_ratio"], r["paired_cpu_ratio"]
        target = "" if r["target"] is None else \
            f"  target time <= {r['target']:.2f}: {r['verdict']}"
        print(f"{r['side'] + ' / ' + r['baseline']:<19} time {r['time_ratio']:.3f} "
              f"{p['median']:.3f} ({p['min']:.3f}-{p['max']:.3f})  cpu {r['cpu_ratio']:.3f} "
              f"{c['median']:.3f} ({c['min']:.3f}-{c['max']:.3f}){target}")
    busy = {side: x for side, x in summary["best_wall_over_cpu"].items() if x > BUSY}
    if busy:
        print("even the best rounds waited beyond their CPU time (wall/cpu "
              f"{', '.join(f'{s} {x:.2f}' for s, x in busy.items())}): the machine was "
              "busy, or (at a low --concurrency) the client waited on the server; the "
              "time ratios measure that, the CPU ratios the clients")


def _sigterm_as_ctrl_c(signum: int, frame: object) -> None:
    # Handled like Ctrl-C, so the finally that stops the server runs: through the SIGINT
    # handler when there is one (asyncio.run's cancels its task cleanly), else directly
    # (SIGINT is ignored in a job started in the background).
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:
        raise KeyboardInterrupt


def _sides(text: str) -> list[str]:
    sides = [s.strip() for s in text.split(",") if s.strip()]
    unknown = sorted(set(sides) - set(SIDES))
    if unknown or not sides or len(set(sides)) != len(sides):
        raise argparse.ArgumentTypeError(
            f"a comma-separated list of distinct sides of {','.join(SIDES)}")
    return sides


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", type=_sides, default=None,
                        help=f"sides to run (default: all, {','.join(SIDES)}; "
                             "with --profile: sdk)")
    parser.add_argument("--n", type=int, default=10000, help="creates per run (10000)")
    parser.add_argument("--concurrency", type=int, default=64,
                        help="in-flight calls, the clients' max_concurrency (64)")
    parser.add_argument("--threads", type=int, default=8,
                        help="threads sharing the blocking WanClient (8)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of every side (7)")
    parser.add_argument("--span-processor", choices=("batch", "simple"), default="batch",
                        help="otel-sdk: BatchSpanProcessor or SimpleSpanProcessor (batch)")
    parser.add_argument("--json", action="store_true",
                        help="also print one JSON object with the figures at the end")
    parser.add_argument("--run-timeout", type=float, default=300.0,
                        help="fail (with stacks) if one run takes longer (300 s)")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's dynamic malloc thresholds alone (noisier)")
    parser.add_argument("--distinct", action="store_true",
                        help="a new request object (clients) / body dict (raw) per call, "
                             "built before the timed part: no reuse of an encoded body")
    parser.add_argument("--profile", action="store_true",
                        help="run each side once under cProfile in its worker; print the "
                             "top 25 functions by tottime (no rounds; not blocking)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.n, args.concurrency, args.threads, args.rounds) < 1 or args.run_timeout <= 0:
        parser.error("--n, --concurrency, --threads, --rounds and --run-timeout must be "
                     "positive")
    if args.worker:
        return worker_main(args)
    sides = args.sides or (["sdk"] if args.profile else list(SIDES))
    if args.profile and "blocking" in sides:
        parser.error("--profile profiles one thread: leave blocking out of --sides")

    signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    proc, port = start_server()
    runs: dict[str, list[Run]] = {side: [] for side in sides}
    try:
        if args.profile:
            for side in sides:
                spawn(side, args, port, seed=1)
            return 0
        print(f"fast server pid {proc.pid} on port {port}; n={args.n} "
              f"concurrency={args.concurrency} threads={args.threads} rounds={args.rounds} "
              f"sides={','.join(sides)}; malloc thresholds pinned: "
              f"{'no' if args.malloc_default else 'yes'}; {os.cpu_count()} cpus", flush=True)
        for i in range(1, args.rounds + 1):
            for side in order_of(sides, i):
                run = spawn(side, args, port, seed=i)
                assert run is not None
                runs[side].append(run)
                print(f"round {i} {side:<9} {run.n} req in {run.seconds:.2f} s "
                      f"({run.rate:.0f}/s, cpu {run.cpu:.2f} s)", flush=True)
    finally:
        stop_server(proc)

    summary = summarize(runs)
    report(summary)
    if args.json:
        sys.path.insert(0, str(ROOT))  # the version the workers ran
        import wan26_async as wan

        print(json.dumps({
            "n": args.n, "concurrency": args.concurrency, "threads": args.threads,
            "rounds": args.rounds, "distinct": args.distinct,
            "span_processor": args.span_processor, "malloc_pinned": not args.malloc_default,
            "orders": [order_of(sides, i) for i in range(1, args.rounds + 1)],
            **summary,
            "machine": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "aiohttp": aiohttp.__version__,
            "wan26_async": wan.__version__,
        }))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        sys.exit(130)
