"""Watching thousands of tasks at once: polls per task, completion lag, memory per watch.

2000 tasks are created at once and all watched at once by one client against the
emulator running in another process: half 1080p x 5 s (20 s of processing), half
720p x 3 s (7.5 s), each pending 1 s first. Printed:

* polls per task (every GET of a task, first poll included),
* p50/p95 lag between the server-side completion (the task's ``updatedAt``) and the
  COMPLETED event,
* client memory per watch (tracemalloc, in a separate pass so it does not slow the
  timed runs),

for the polling client, for the same client with plain backoff (the baseline, no
learning), and with a `CallbackReceiver` (pushed events).

    python benchmarks/watch_scale.py [--tasks 2000] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
import tracemalloc
from datetime import datetime
from pathlib import Path
from typing import Any

import wan26_async as wan

try:  # python -m benchmarks.watch_scale
    from benchmarks._emulator import emulator
except ModuleNotFoundError:  # python benchmarks/watch_scale.py
    from _emulator import emulator  # type: ignore[no-redef,import-not-found]

SHAPES = [
    {"resolution": "1080p", "duration": 5},  # 20 s of processing
    {"resolution": "720p", "duration": 3},  # 7.5 s
]


def requests(n: int) -> list[wan.TextToVideo]:
    return [wan.TextToVideo(prompt=f"task {i}", **SHAPES[i % 2]) for i in range(n)]


def _wall(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


async def run(base_url: str, api_key: str, n: int, mode: str) -> dict[str, Any]:
    """mode: 'learned', 'backoff' (plain 1 s x1.5 cap 8 s) or 'callbacks'."""
    polls = 0
    poll_times: list[float] = []
    lags: list[float] = []
    receiver = wan.CallbackReceiver() if mode == "callbacks" else None
    poll = wan.PollPolicy() if mode != "backoff" else wan.PollPolicy(
        initial=1.0, multiplier=1.5, max_interval=8.0, learn=False)
    async with contextlib.AsyncExitStack() as stack:
        if receiver is not None:
            await stack.enter_async_context(receiver)
        client = await stack.enter_async_context(wan.AsyncWanClient(
            api_key=api_key, base_url=base_url, poll=poll, callbacks=receiver))
        get_task = client.get_task

        async def counting_get(task_id: str) -> wan.Task:
            nonlocal polls
            polls += 1
            poll_times.append(time.monotonic())
            return await get_task(task_id)

        client.get_task = counting_get  # type: ignore[method-assign]
        started = time.monotonic()
        tasks = await asyncio.gather(*(client.create_task(r) for r in requests(n)))
        created = time.monotonic() - started

        async def follow(task: wan.Task) -> None:
            async for event in client.watch(task.id):
                if event.status is wan.TaskStatus.COMPLETED:
                    lags.append(time.time() - _wall(event.task.raw["updatedAt"]))

        await asyncio.gather(*(follow(t) for t in tasks))
        total = time.monotonic() - started
    lags.sort()
    return {
        "mode": mode, "tasks": n, "create_seconds": round(created, 2),
        "total_seconds": round(total, 2), "polls_per_task": round(polls / n, 2),
        "lag_p50": round(statistics.median(lags), 3),
        "lag_p95": round(lags[int(0.95 * (len(lags) - 1))], 3),
        "poll_times": [t - started for t in poll_times],
    }


def plot(results: dict[str, Any], path: str) -> None:
    """Polls per second over time for each way of watching."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    styles = {"learned": "tab:green", "backoff": "tab:gray", "callbacks": "tab:blue"}
    for mode, colour in styles.items():
        if mode not in results:
            continue
        times = results[mode]["poll_times"]
        end = max([*times, 1.0])
        bins = [i * 0.5 for i in range(int(end / 0.5) + 2)]
        ax.hist(times, bins=bins, weights=[2.0] * len(times), histtype="step", linewidth=1.5,
                color=colour, label=f"{mode}: {results[mode]['polls_per_task']:.2f} polls/task,"
                f" p95 lag {results[mode]['lag_p95']:.2f} s")
    ax.set_xlabel("seconds since the creates were launched")
    ax.set_ylabel("polls/s")
    ax.set_title(f"{results['learned']['tasks'] if 'learned' in results else ''} tasks "
                 "watched at once (half 20 s, half 7.5 s)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"plot written to {path}")


async def memory_per_watch(base_url: str, api_key: str, n: int) -> float:
    """Bytes held per active watch, measured with tracemalloc while all are waiting."""
    async with wan.AsyncWanClient(api_key=api_key, base_url=base_url) as client:
        tasks = await asyncio.gather(*(client.create_task(r) for r in requests(n)))
        await client.get_credits()  # warm everything the watches share
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
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
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        used = sum(s.size_diff for s in after.compare_to(before, "filename"))
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
    return used / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--modes", default="learned,backoff,callbacks")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plot", metavar="PNG", help="draw polls/s over time (matplotlib)")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with emulator("--pending-seconds", "1") as (base_url, api_key):
        for mode in args.modes.split(","):
            result = asyncio.run(run(base_url, api_key, args.tasks, mode))
            results[mode] = result
            print(f"{mode:>9}: {result['polls_per_task']:5.2f} polls/task, lag p50 "
                  f"{result['lag_p50']:.2f} s p95 {result['lag_p95']:.2f} s "
                  f"(created in {result['create_seconds']} s, all done in "
                  f"{result['total_seconds']} s)", flush=True)
        per_watch = asyncio.run(memory_per_watch(base_url, api_key, args.tasks))
        results["memory_per_watch_bytes"] = round(per_watch)
        print(f"memory per watch: {per_watch / 1024:.1f} KiB", flush=True)
    print("targets: <= 6 polls/task, p95 <= 1.0 s, <= 10 KiB/watch; "
          "with callbacks <= 1.5 polls/task, p95 <= 0.5 s")
    if args.plot:
        plot(results, args.plot)
    if args.json:
        for mode in ("learned", "backoff", "callbacks"):
            results.get(mode, {}).pop("poll_times", None)
        print(json.dumps(results))


if __name__ == "__main__":
    main()
