"""Watching thousands of tasks at once: polls per task, completion lag, memory per watch.

Tasks are created at once through ``client.create_task`` and all watched at once by one
client: half 1080p x 5 s, half 720p x 3 s, each pending 1 s first. Two servers, each
in its own process:

* ``--server emulator`` (default, 2000 tasks): the emulator (20 s and 7.5 s of
  processing), for the learned schedule, plain backoff (the baseline, no learning) and a
  `CallbackReceiver` (pushed events);
* ``--server fast`` (default 20,000 tasks): `benchmarks/_taskserver.py`, a stateless
  server whose task ids carry their own timeline, so only the client is measured;
  pending and processing times are the emulator's x ``--fast-time-scale`` (1.5: tasks
  done 31.5 s and 12.75 s after their creation).

Printed for each way of watching:

* polls per task (every GET of a task sent, first poll included),
* p50/p95 lag between the server-side completion (the task's ``updatedAt``) and the
  COMPLETED event,
* client CPU seconds (``time.process_time``, creates and watches; and the watches alone),

and memory per watch while every watch waits, in a fresh process so the timed runs
leave nothing behind: tracemalloc (a pass of its own), and the growth of the resident
set (RSS, another pass without tracemalloc).

    python benchmarks/watch_scale.py [--tasks 2000] [--json]
    python benchmarks/watch_scale.py --server fast [--tasks 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

import wan26_async as wan

try:  # python -m benchmarks.watch_scale
    from benchmarks._emulator import emulator
    from benchmarks._taskserver import task_server
except ModuleNotFoundError:  # python benchmarks/watch_scale.py
    from _emulator import emulator  # type: ignore[no-redef,import-not-found]
    from _taskserver import task_server  # type: ignore[no-redef,import-not-found]

SHAPES = [
    ("1080p", 5),  # (resolution, duration): 20 s of processing on the emulator
    ("720p", 3),  # 7.5 s
]
TASK_PATH = "/v1/tasks/"
CREATE_PATH = "/v1/videos/generations"


def requests(n: int) -> list[wan.TextToVideo]:
    return [wan.TextToVideo(prompt=f"task {i}", resolution=SHAPES[i % 2][0],
                            duration=SHAPES[i % 2][1]) for i in range(n)]


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _rss() -> int:
    """This process's resident set now, in bytes (Linux), else its peak."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- counting requests ---------------------------------------------------------------


class RequestCounts:
    """Every HTTP attempt a client sent, by kind, counted on the wire (an aiohttp trace
    on the session the client borrows), whatever the SDK does inside."""

    def __init__(self) -> None:
        self.creates = self.polls = self.other = 0
        self.creates_429 = self.polls_429 = 0
        self.poll_times: list[float] = []

    def trace_config(self) -> aiohttp.TraceConfig:
        config = aiohttp.TraceConfig()

        async def started(_: Any, __: Any, params: aiohttp.TraceRequestStartParams) -> None:
            path = params.url.path
            if params.method == "GET" and path.startswith(TASK_PATH):
                self.polls += 1
                self.poll_times.append(time.monotonic())
            elif params.method == "POST" and path == CREATE_PATH:
                self.creates += 1
            else:
                self.other += 1

        async def ended(_: Any, __: Any, params: aiohttp.TraceRequestEndParams) -> None:
            if params.response.status == 429:
                if params.method == "POST":
                    self.creates_429 += 1
                else:
                    self.polls_429 += 1

        config.on_request_start.append(started)
        config.on_request_end.append(ended)
        return config

    def session(self, max_concurrency: int = 64,
                traced: aiohttp.TraceConfig | None = None) -> aiohttp.ClientSession:
        """A session like the one the client makes for itself, with the counting trace
        (``traced``: one from `trace_config` with more hooks added)."""
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max_concurrency, ttl_dns_cache=300),
            trust_env=False, trace_configs=[traced or self.trace_config()])


def server_stats(base_url: str) -> Callable[[], dict[str, float]]:
    """The task server's own request counts and CPU seconds (it counts; the client is
    left untouched)."""
    def read() -> dict[str, float]:
        with urllib.request.urlopen(base_url + "/stats", timeout=10) as reply:
            stats: dict[str, float] = json.loads(reply.read())
        return stats

    return read


# -- the timed run -------------------------------------------------------------------


async def run(base_url: str, api_key: str, n: int, mode: str,
              stats: Callable[[], dict[str, float]] | None = None) -> dict[str, Any]:
    """mode: 'learned', 'backoff' (plain 1 s x1.5 cap 8 s) or 'callbacks'. With
    ``stats`` (the task server's counts), the client sends through its own session."""
    done: list[tuple[float, str]] = []  # (wall time of the COMPLETED event, updatedAt)
    server_cpu = None
    counts = RequestCounts()
    receiver = wan.CallbackReceiver() if mode == "callbacks" else None
    poll = wan.PollPolicy() if mode != "backoff" else wan.PollPolicy(
        initial=1.0, multiplier=1.5, max_interval=8.0, learn=False)
    async with contextlib.AsyncExitStack() as stack:
        session = None
        if stats is None:
            session = await stack.enter_async_context(counts.session())
        if receiver is not None:
            await stack.enter_async_context(receiver)
        client = await stack.enter_async_context(wan.AsyncWanClient(
            api_key=api_key, base_url=base_url, poll=poll, callbacks=receiver,
            session=session))
        before = stats() if stats is not None else None
        gc.collect()
        cpu = time.process_time()
        started = time.monotonic()
        tasks = await asyncio.gather(*(client.create_task(r) for r in requests(n)))
        created = time.monotonic() - started
        cpu_created = time.process_time()

        async def follow(task: wan.Task) -> None:
            async for event in client.watch(task.id):
                if event.status is wan.TaskStatus.COMPLETED:
                    done.append((time.time(), event.task.raw["updatedAt"]))

        await asyncio.gather(*(follow(t) for t in tasks))
        total = time.monotonic() - started
        cpu_end = time.process_time()
    if stats is not None and before is not None:
        after = stats()
        counts.polls = int(after["polls"] - before["polls"])
        counts.creates = int(after["creates"] - before["creates"])
        server_cpu = round(after["cpu_seconds"] - before["cpu_seconds"], 2)
    lags = sorted(at - _wall(updated) for at, updated in done)
    return {
        "mode": mode, "tasks": n, "create_seconds": round(created, 2),
        "total_seconds": round(total, 2), "polls_per_task": round(counts.polls / n, 2),
        "creates": counts.creates, "completed": len(done),
        "lag_p50": round(statistics.median(lags), 3),
        "lag_p95": round(lags[int(0.95 * (len(lags) - 1))], 3),
        "cpu_seconds": round(cpu_end - cpu, 2),
        "cpu_watch_seconds": round(cpu_end - cpu_created, 2), "server_cpu_seconds": server_cpu,
        "poll_times": [t - started for t in counts.poll_times],
    }


def plot(results: dict[str, Any], path: str) -> None:
    """Polls per second over time for each way of watching (emulator counts only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    styles = {"learned": "tab:green", "backoff": "tab:gray", "callbacks": "tab:blue"}
    for mode, colour in styles.items():
        if mode not in results or not results[mode]["poll_times"]:
            continue
        times = results[mode]["poll_times"]
        end = max([*times, 1.0])
        bins = [i * 0.5 for i in range(int(end / 0.5) + 2)]
        ax.hist(times, bins=bins, weights=[2.0] * len(times), histtype="step", linewidth=1.5,
                color=colour, label=f"{mode}: {results[mode]['polls_per_task']:.2f} polls/task,"
                f" p95 lag {results[mode]['lag_p95']:.2f} s")
    ax.set_xlabel("seconds since the creates were launched")
    ax.set_ylabel("polls/s")
    ax.set_title(f"{results['tasks']} tasks watched at once ({results['shapes']})", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"plot written to {path}")


# -- memory per watch ----------------------------------------------------------------


async def memory_per_watch(base_url: str, api_key: str, n: int, how: str) -> float:
    """Bytes held per active watch while every watch waits: ``how`` is 'tracemalloc'
    (allocations traced from before the watches start) or 'rss' (resident set growth;
    run it in a fresh process, before anything else has grown and freed the heap)."""
    async with wan.AsyncWanClient(api_key=api_key, base_url=base_url) as client:
        tasks = await asyncio.gather(*(client.create_task(r) for r in requests(n)))
        await client.get_credits()  # warm everything the watches share
        gc.collect()
        if how == "tracemalloc":
            tracemalloc.start()
            snapshot = tracemalloc.take_snapshot()
        rss = _rss()
        events = asyncio.Event()
        seen = 0

        async def follow(task: wan.Task) -> None:
            nonlocal seen
            async for _ in client.watch(task.id):
                seen += 1
                if seen == n:
                    events.set()

        watchers = [asyncio.ensure_future(follow(t)) for t in tasks]
        await events.wait()  # every watch has its first event and is now waiting
        await asyncio.sleep(0.5)
        if how == "tracemalloc":
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            used = sum(s.size_diff for s in after.compare_to(snapshot, "filename"))
        else:
            used = _rss() - rss
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    return used / n


def measure_memory(base_url: str, api_key: str, n: int) -> dict[str, float]:
    """Both memory figures, each in a fresh child process (RSS first: nothing else
    has run there)."""
    figures: dict[str, float] = {}
    for how in ("rss", "tracemalloc"):
        child = subprocess.run(
            [sys.executable, __file__, "--memory-pass", how, "--base-url", base_url,
             "--api-key", api_key, "--tasks", str(n)],
            capture_output=True, text=True, check=True)
        figures[how] = float(child.stdout.strip().splitlines()[-1])
    return figures


@contextlib.contextmanager
def server(kind: str, scale: float) -> Iterator[tuple[str, str]]:
    if kind == "fast":
        with task_server("--pending-seconds", "1", "--time-scale", str(scale)) as where:
            yield where
    else:
        with emulator("--pending-seconds", "1") as where:
            yield where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("emulator", "fast"), default="emulator")
    parser.add_argument("--tasks", type=int, default=None,
                        help="default 2000 (emulator), 20000 (fast)")
    parser.add_argument("--modes", default=None,
                        help="default learned,backoff,callbacks (emulator), learned (fast)")
    parser.add_argument("--fast-time-scale", type=float, default=1.5,
                        help="the fast server's times: the emulator's x this (default 1.5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="PNG", help="draw polls/s over time (matplotlib)")
    parser.add_argument("--memory-pass", choices=("rss", "tracemalloc"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    fast = args.server == "fast"
    n = args.tasks or (20_000 if fast else 2000)
    if args.memory_pass:  # the child of measure_memory
        print(asyncio.run(memory_per_watch(args.base_url, args.api_key, n, args.memory_pass)))
        return
    modes = (args.modes or ("learned" if fast else "learned,backoff,callbacks")).split(",")
    if fast and "callbacks" in modes:
        parser.error("the fast task server sends no callbacks: use --server emulator")
    scale = args.fast_time_scale if fast else 1.0
    shapes = f"half {21 * scale:g} s, half {8.5 * scale:g} s"
    results: dict[str, Any] = {"server": args.server, "tasks": n, "shapes": shapes}
    print(f"{n} tasks against the {args.server} server ({shapes} from creation)", flush=True)
    with server(args.server, scale) as (base_url, api_key):
        stats = server_stats(base_url) if fast else None
        for mode in modes:
            result = asyncio.run(run(base_url, api_key, n, mode, stats))
            results[mode] = result
            print(f"{mode:>9}: {result['polls_per_task']:5.2f} polls/task, lag p50 "
                  f"{result['lag_p50']:.2f} s p95 {result['lag_p95']:.2f} s, client CPU "
                  f"{result['cpu_seconds']:.1f} s ({result['cpu_watch_seconds']:.1f} s "
                  f"watching; created in {result['create_seconds']} s, all done in "
                  f"{result['total_seconds']} s)", flush=True)
            if result["server_cpu_seconds"] is not None:
                print(f"{'':>11}the task server used {result['server_cpu_seconds']:.1f} s "
                      "of CPU meanwhile", flush=True)
        if not fast:
            memory = measure_memory(base_url, api_key, n)
    if fast:  # a slow copy of the server, so that no task ends while memory is measured
        with task_server("--pending-seconds", "1", "--time-scale", "20") as (base_url, key):
            memory = measure_memory(base_url, key, n)
    results["memory_per_watch_bytes"] = round(memory["tracemalloc"])
    results["rss_per_watch_bytes"] = round(memory["rss"])
    print(f"memory per watch: {memory['tracemalloc'] / 1024:.1f} KiB (tracemalloc), "
          f"{memory['rss'] / 1024:.1f} KiB (RSS growth)", flush=True)
    if fast:
        print("targets: <= 1.5 polls/task, p95 lag <= 1.0 s, <= 4 KiB/watch, CPU reported")
    else:
        print("targets: <= 4 polls/task, p95 lag <= 0.5 s; with callbacks <= 1.5 "
              "polls/task, p95 <= 0.5 s")
    if args.plot:
        plot(results, args.plot)
    if args.json:
        for mode in modes:
            results[mode].pop("poll_times", None)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
