"""End to end under one rate limit: N generations through ``fan_out``, every request paid.

The emulator runs in another process with one token bucket (50/s, burst 10,
``Retry-After: 1``) on every request of the key: creates, polls and credits alike. N
generations (default 1000) of tasks that take 10 s from creation (pending 1 s,
processing 9 s) go through ``client.fan_out`` with concurrency N, so the rate limit is
the only bound, in two modes:

* ``polling``: the default client (the learned poll schedule);
* ``callbacks``: a client with a `CallbackReceiver` (the emulator posts callbacks).

Printed per mode: the makespan (first create launched to last outcome), the ideal
``N / rate + task seconds + 1`` (every request a create, each completion known at once,
plus a second of slack), makespan / ideal, polls per task, creates sent, 429s (on creates
and on polls), and when the last create was accepted. Requests are counted on the wire
(an aiohttp trace on the session the client borrows). Real time: the server's limit is
wall-clock, so the run cannot be scaled down (about 31 s of ideal per mode at N=1000).

    python benchmarks/end_to_end.py [--tasks 1000] [--modes polling,callbacks] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import time
from typing import Any

import wan26_async as wan

try:  # python -m benchmarks.end_to_end
    from benchmarks._emulator import emulator
    from benchmarks.watch_scale import RequestCounts
except ModuleNotFoundError:  # python benchmarks/end_to_end.py
    from _emulator import emulator  # type: ignore[no-redef,import-not-found]
    from watch_scale import RequestCounts  # type: ignore[no-redef,import-not-found]


def requests(n: int) -> list[wan.TextToVideo]:
    return [wan.TextToVideo(prompt=f"job {i}", resolution="720p", duration=5)
            for i in range(n)]


async def run(base_url: str, api_key: str, n: int, mode: str, concurrency: int,
              ideal: float) -> dict[str, Any]:
    counts = RequestCounts()
    accepted: list[float] = []  # when each create was answered 200
    config = counts.trace_config()

    async def create_answered(_: Any, __: Any, params: Any) -> None:
        if params.method == "POST" and params.response.status == 200:
            accepted.append(time.monotonic())

    config.on_request_end.append(create_answered)
    errors: collections.Counter[str] = collections.Counter()
    ok = 0
    async with contextlib.AsyncExitStack() as stack:
        session = await stack.enter_async_context(counts.session(traced=config))
        receiver = None
        if mode == "callbacks":
            receiver = await stack.enter_async_context(wan.CallbackReceiver())
        client = await stack.enter_async_context(wan.AsyncWanClient(
            api_key=api_key, base_url=base_url, session=session, callbacks=receiver))
        cpu = time.process_time()
        started = time.monotonic()
        async with client.fan_out(requests(n), concurrency=concurrency) as outcomes:
            async for outcome in outcomes:
                if outcome.ok:
                    ok += 1
                else:
                    errors[type(outcome.error).__name__] += 1
        makespan = time.monotonic() - started
        cpu = time.process_time() - cpu
    return {
        "mode": mode, "tasks": n, "completed": ok, "errors": dict(errors),
        "makespan_seconds": round(makespan, 2), "ideal_seconds": round(ideal, 2),
        "makespan_over_ideal": round(makespan / ideal, 3),
        "polls_per_task": round(counts.polls / n, 3), "polls": counts.polls,
        "creates": counts.creates, "creates_429": counts.creates_429,
        "polls_429": counts.polls_429, "other_requests": counts.other,
        "last_create_accepted_at": round(max(accepted) - started, 2) if accepted else None,
        "cpu_seconds": round(cpu, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--modes", default="polling,callbacks")
    parser.add_argument("--task-seconds", type=float, default=10.0,
                        help="from creation to completion, pending 1 s included")
    parser.add_argument("--rate", type=float, default=50.0, help="the bucket's requests/s")
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--concurrency", type=int, default=None,
                        help="fan_out concurrency (default: --tasks, never the bound)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    n = args.tasks
    ideal = n / args.rate + args.task_seconds + 1.0
    results: dict[str, Any] = {"tasks": n, "rate": args.rate, "burst": args.burst,
                               "task_seconds": args.task_seconds}
    print(f"{n} generations of {args.task_seconds:g} s through fan_out, one bucket of "
          f"{args.rate:g}/s burst {args.burst} on every request; ideal {ideal:.1f} s",
          flush=True)
    for mode in args.modes.split(","):
        if mode not in ("polling", "callbacks"):
            parser.error(f"unknown mode {mode!r}: use polling and/or callbacks")
        options = ("--rate-limit", str(args.rate), "--burst", str(args.burst),
                   "--retry-after", "1", "--pending-seconds", "1",
                   "--processing-seconds", str(args.task_seconds - 1.0))
        with emulator(*options) as (base_url, api_key):  # a fresh bucket per mode
            result = asyncio.run(run(base_url, api_key, n, mode, args.concurrency or n, ideal))
        results[mode] = result
        failed = f", {sum(result['errors'].values())} failed {result['errors']}" \
            if result["errors"] else ""
        print(f"{mode:>9}: makespan {result['makespan_seconds']:.1f} s = "
              f"{result['makespan_over_ideal']:.2f} x ideal, {result['polls_per_task']:.2f} "
              f"polls/task, {result['creates']} creates (last accepted at "
              f"{result['last_create_accepted_at']} s), 429s: {result['creates_429']} on "
              f"creates, {result['polls_429']} on polls; client CPU "
              f"{result['cpu_seconds']:.1f} s{failed}", flush=True)
    print("targets: callbacks <= 1.10 x ideal with <= 0.05 polls/task; polling <= 1.35 x "
          "ideal (its floor is about 1.29: one poll per task)")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
