"""Throughput of ``create_task`` against a hand-written raw aiohttp loop.

Both sides send N creates at the same concurrency to a minimal fast local server
running in another process (``benchmarks/_fastserver.py``). Each round runs both,
the order swapped every round; a shared machine's noise only adds time, so the best
rounds are compared. The client's CPU seconds (``time.process_time()``) are printed
per run too. Target: SDK time / raw time <= 1.10.

    python benchmarks/throughput.py [--n 10000] [--concurrency 64] [--rounds 7] [--json]
    python benchmarks/throughput.py --profile      # the SDK side once under cProfile
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ctypes
import ctypes.util
import gc
import json
import platform
import pstats
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
import attrs

import wan26_async as wan

try:  # python -m benchmarks.throughput
    from benchmarks._fastserver import CREATE_PATH, start_server, stop_server
except ModuleNotFoundError:  # python benchmarks/throughput.py
    from _fastserver import CREATE_PATH, start_server, stop_server  # type: ignore[no-redef,import-not-found]

TARGET = 1.10
API_KEY = "sk-bench"
PROMPT = "A robot walks through a rainy neon alley at night, cinematic, slow dolly shot"


@dataclass
class Run:
    """One timed run of one side."""

    side: str
    n: int
    seconds: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.n / self.seconds


Call = Callable[[], Awaitable[str]]


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


# -- the two sides ----------------------------------------------------------------------


async def raw_run(base_url: str, body: dict[str, Any], n: int, concurrency: int,
                  distinct: bool = False) -> Run:
    """A careful hand-written client: JSON-encode the body per call, a fresh uuid4
    idempotency key per call, read and parse the reply, take ``data.taskId`` (with
    ``distinct``, a new body dict per call, built before the timed part)."""
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


async def sdk_run(base_url: str, request: wan.VideoRequest, n: int, concurrency: int,
                  distinct: bool = False) -> Run:
    """``AsyncWanClient.create_task`` with a prebuilt request (with ``distinct``, a new
    request object per call, built before the timed part, so nothing is reused)."""
    fresh = iter([attrs.evolve(request) for _ in range(n + concurrency)] if distinct else [])
    async with wan.AsyncWanClient(api_key=API_KEY, base_url=base_url,
                                  max_concurrency=concurrency) as client:

        async def call() -> str:
            return (await client.create_task(next(fresh) if distinct else request)).id

        await _warm(call, concurrency)
        wall, cpu = await _drive(call, n, concurrency)
    return Run("sdk", n, wall, cpu)


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


# -- reporting --------------------------------------------------------------------------


def _fmt_round(i: int, raw: Run, sdk: Run, first: str) -> str:
    return (f"round {i}: raw {raw.n} req in {raw.seconds:.2f} s ({raw.rate:.0f}/s, "
            f"cpu {raw.cpu:.2f} s) | sdk {sdk.seconds:.2f} s ({sdk.rate:.0f}/s, "
            f"cpu {sdk.cpu:.2f} s)  [{first} first]")


def profile_sdk(base_url: str, request: wan.VideoRequest, n: int, concurrency: int,
                top: int = 25) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run = asyncio.run(sdk_run(base_url, request, n, concurrency))
    profiler.disable()
    print(f"profiled sdk run: {run.n} req in {run.seconds:.2f} s "
          f"({run.rate:.0f}/s under cProfile, cpu {run.cpu:.2f} s)")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.sort_stats(pstats.SortKey.TIME).print_stats(top)
    print("the SDK's own functions (coroutines count one call per resumption):")
    stats.print_stats(r"wan26_async[/\\]", 15)


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


def _sigterm_as_ctrl_c(signum: int, frame: object) -> None:
    # Handled like Ctrl-C, so the finally that stops the server runs: through the SIGINT
    # handler when there is one (asyncio.run's cancels its task cleanly), else directly
    # (SIGINT is ignored in a job started in the background).
    if callable(signal.getsignal(signal.SIGINT)):
        signal.raise_signal(signal.SIGINT)
    else:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="creates per run (10000)")
    parser.add_argument("--concurrency", type=int, default=64, help="in-flight calls (64)")
    parser.add_argument("--rounds", type=int, default=7, help="rounds of raw + sdk (7)")
    parser.add_argument("--json", action="store_true",
                        help="also print one JSON object with the figures at the end")
    parser.add_argument("--run-timeout", type=float, default=300.0,
                        help="fail (with task stacks) if one run takes longer (300 s)")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's dynamic malloc thresholds alone (noisier)")
    parser.add_argument("--distinct", action="store_true",
                        help="a new request object (SDK) / body dict (raw) per call, "
                             "built before the timed part: no reuse of an encoded body")
    parser.add_argument("--profile", action="store_true",
                        help="run the SDK side once under cProfile; print the top 25 "
                             "functions by tottime (no rounds)")
    args = parser.parse_args(argv)
    if args.n < 1 or args.concurrency < 1 or args.rounds < 1 or args.run_timeout <= 0:
        parser.error("--n, --concurrency, --rounds and --run-timeout must be positive")

    request = wan.TextToVideo(prompt=PROMPT, duration=5)
    body = request.to_payload()  # the raw loop sends the very same JSON

    signal.signal(signal.SIGTERM, _sigterm_as_ctrl_c)
    malloc_pinned = False if args.malloc_default else _pin_malloc_thresholds()
    proc, port = start_server()
    try:
        base_url = f"http://127.0.0.1:{port}"
        if args.profile:
            profile_sdk(base_url, request, args.n, args.concurrency)
            return 0
        print(f"fast server pid {proc.pid} on {base_url}; n={args.n} "
              f"concurrency={args.concurrency} rounds={args.rounds}; "
              f"malloc thresholds pinned: {'yes' if malloc_pinned else 'no'}", flush=True)
        raws: list[Run] = []
        sdks: list[Run] = []
        for i in range(1, args.rounds + 1):
            sdk_first = i % 2 == 0
            raw = sdk = None
            for side in (("sdk", "raw") if sdk_first else ("raw", "sdk")):
                if side == "raw":
                    raw = asyncio.run(_guarded(raw_run(base_url, body, args.n,
                                                       args.concurrency, args.distinct),
                                               args.run_timeout))
                else:
                    sdk = asyncio.run(_guarded(sdk_run(base_url, request, args.n,
                                                       args.concurrency, args.distinct),
                                               args.run_timeout))
            assert raw is not None and sdk is not None
            raws.append(raw)
            sdks.append(sdk)
            print(_fmt_round(i, raw, sdk, "sdk" if sdk_first else "raw"), flush=True)
    finally:
        stop_server(proc)

    best_raw = min(raws, key=lambda r: r.seconds)
    best_sdk = min(sdks, key=lambda r: r.seconds)
    ratio = best_sdk.seconds / best_raw.seconds
    cpu_ratio = min(r.cpu for r in sdks) / min(r.cpu for r in raws)
    verdict = "ok" if ratio <= TARGET else "over target"
    print(f"best raw: {best_raw.rate:.0f}/s   best sdk: {best_sdk.rate:.0f}/s   "
          f"sdk/raw time ratio: {ratio:.2f} (target <= {TARGET:.2f}, {verdict})   "
          f"best cpu ratio: {cpu_ratio:.2f}")
    if args.json:
        print(json.dumps({
            "n": args.n,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "best_raw_rate": round(best_raw.rate, 1),
            "best_sdk_rate": round(best_sdk.rate, 1),
            "best_raw_seconds": round(best_raw.seconds, 4),
            "best_sdk_seconds": round(best_sdk.seconds, 4),
            "ratio": round(ratio, 4),
            "cpu_ratio": round(cpu_ratio, 4),
            "target": TARGET,
            "raw": [{**asdict(r), "rate": round(r.rate, 1)} for r in raws],
            "sdk": [{**asdict(r), "rate": round(r.rate, 1)} for r in sdks],
            "malloc_pinned": malloc_pinned,
            "python": platform.python_version(),
            "aiohttp": aiohttp.__version__,
            "wan26_async": wan.__version__,
        }))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; the server was stopped", file=sys.stderr)
        sys.exit(130)
