"""Riding a server's rate limit: makespan / ideal and 429s per task.

The emulator (another process) admits 50 requests/s (token bucket, burst 10,
``Retry-After: 1`` on excess). 1000 creates are launched at once:

* through the SDK, not told the rate (it must learn it and honour every Retry-After);
* through the SDK told the rate (``InProcessRateLimiter(rate=50)``);
* through a hand-written per-coroutine loop that honours Retry-After (the baseline).

ideal = (1000 - 10) / 50 s: what a client told the rate in advance would reach.

    python benchmarks/rate_limit.py [--n 1000] [--rate 50] [--burst 10] [--shape window]

Two more scenarios, each for the in-process limiter, the Redis limiter (a redis-server of
its own, as in ``ratelimit_fleet.py``) and the hand-written loop, 64 callers creating
back to back:

* ``--scenario drop``: 50/s (burst 10), then 20/s for 6 s, then 50/s again: the rate
  admitted 10-12 s after the limit's return, as a share of 50/s, and the 429s from the
  return to then;
* ``--scenario fast``: a 500/s bucket (burst 50): the rate admitted once learned (the
  last 5 s of 12), as a share of 500/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp

import wan26_async as wan

try:  # python -m benchmarks.rate_limit
    from benchmarks._emulator import emulator
except ModuleNotFoundError:  # python benchmarks/rate_limit.py
    from _emulator import emulator  # type: ignore[no-redef,import-not-found]


class CountingLimiter(wan.RateLimiter):
    """Wraps a limiter to count the 429s the client saw and when requests left."""

    def __init__(self, inner: wan.RateLimiter) -> None:
        self.inner = inner
        self.rate_limited = 0
        self.sent: list[float] = []
        self.admitted: list[float] = []
        self.limited_at: list[float] = []

    def bind(self, base_url: str, api_key: str) -> None:
        self.inner.bind(base_url, api_key)

    async def acquire(self) -> None:
        await self.inner.acquire()
        self.sent.append(time.monotonic())

    async def on_rate_limited(self, retry_after: float | None,
                              sent_at: float | None = None) -> None:
        self.rate_limited += 1
        self.limited_at.append(time.monotonic())
        await self.inner.on_rate_limited(retry_after, sent_at)

    def on_success(self, sent_at: float | None = None) -> None:
        self.admitted.append(time.monotonic())
        self.inner.on_success(sent_at)

    def release(self) -> None:
        self.inner.release()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def sdk(base_url: str, api_key: str, n: int, limiter: wan.RateLimiter) -> dict[str, Any]:
    counting = CountingLimiter(limiter)
    request = wan.TextToVideo(prompt="rate limit benchmark", resolution="720p", duration=2)
    async with wan.AsyncWanClient(api_key=api_key, base_url=base_url, rate_limiter=counting,
                                  retry=wan.RetryPolicy(max_retries=1000)) as client:
        started = time.monotonic()
        await asyncio.gather(*(client.create_task(request) for _ in range(n)))
        elapsed = time.monotonic() - started
    late = sum(1 for t in counting.limited_at if t - started > 1.0)
    return {"seconds": elapsed, "429s": counting.rate_limited, "429s_after_1s": late,
            "admitted": [t - started for t in counting.admitted],
            "refused": [t - started for t in counting.limited_at]}


async def hand_written(base_url: str, api_key: str, n: int) -> dict[str, Any]:
    body = json.dumps({"model": "wan-2.6-text-to-video",
                       "input": {"prompt": "rate limit benchmark", "resolution": "720p",
                                 "duration": 2}}).encode()
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    limited = 0
    admitted: list[float] = []
    refused: list[float] = []
    started = time.monotonic()

    async def one(session: aiohttp.ClientSession) -> None:
        nonlocal limited
        while True:
            async with session.post(f"{base_url}/v1/videos/generations", data=body,
                                    headers=headers) as resp:
                await resp.read()
                if resp.status != 429:
                    admitted.append(time.monotonic() - started)
                    return
                limited += 1
                refused.append(time.monotonic() - started)
                await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
        started = time.monotonic()
        await asyncio.gather(*(one(session) for _ in range(n)))
        elapsed = time.monotonic() - started
    return {"seconds": elapsed, "429s": limited, "429s_after_1s": None,
            "admitted": admitted, "refused": refused}


async def back_to_back(base_url: str, api_key: str, limiter: wan.RateLimiter | None,
                       callers: int, seconds: float) -> dict[str, list[float]]:
    """``callers`` loops creating back to back for ``seconds``: when the server admitted
    and refused (s since the start). ``limiter`` None: the hand-written loop."""
    admitted: list[float] = []
    refused: list[float] = []
    started = time.monotonic()
    end = started + seconds
    if limiter is None:
        body = json.dumps({"model": "wan-2.6-text-to-video",
                           "input": {"prompt": "rate limit benchmark", "resolution": "720p",
                                     "duration": 2}}).encode()
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}

        async def hand(session: aiohttp.ClientSession) -> None:
            while time.monotonic() < end:
                async with session.post(f"{base_url}/v1/videos/generations", data=body,
                                        headers=headers) as resp:
                    await resp.read()
                    now = time.monotonic() - started
                    if resp.status != 429:
                        admitted.append(now)
                        continue
                    refused.append(now)
                    await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:
            await asyncio.gather(*(hand(session) for _ in range(callers)))
        return {"admitted": admitted, "refused": refused}
    counting = CountingLimiter(limiter)
    request = wan.TextToVideo(prompt="rate limit benchmark", resolution="720p", duration=2)
    async with wan.AsyncWanClient(api_key=api_key, base_url=base_url, rate_limiter=counting,
                                  retry=wan.RetryPolicy(max_retries=1000)) as client:
        async def sdk_caller() -> None:
            while time.monotonic() < end:
                await client.create_task(request)

        started = time.monotonic()
        await asyncio.gather(*(sdk_caller() for _ in range(callers)))
    await counting.aclose()
    return {"admitted": [t - started for t in counting.admitted],
            "refused": [t - started for t in counting.limited_at]}


def _rate(times: list[float], start: float, end: float) -> float:
    return sum(1 for t in times if start <= t < end) / (end - start)


def scenario(name: str, runs: list[str], redis_url: str | None) -> dict[str, Any]:
    """The drop-and-return or the fast-bucket scenario, for each limiter in ``runs``."""
    from ratelimit_fleet import redis_server  # type: ignore[import-not-found,unused-ignore]

    if name == "drop":
        limit = ["--rate-limit", "50", "--burst", "10", "--retry-after", "1",
                 "--rate-schedule", "0:50,10:20,16:50"]
        seconds, callers, true_rate = 30.0, 64, 50.0
    else:
        limit = ["--rate-limit", "500", "--burst", "50", "--retry-after", "1"]
        seconds, callers, true_rate = 12.0, 30, 500.0
    out: dict[str, Any] = {"scenario": name}
    with redis_server(redis_url) as url:
        for run in runs:
            limiter: wan.RateLimiter | None
            if run == "redis":
                from wan26_async.redis import RedisRateLimiter

                limiter = RedisRateLimiter.from_url(url, prefix=f"bench:{time.time_ns()}")
            elif run == "learned":
                limiter = wan.InProcessRateLimiter()
            else:
                limiter = None
            # a fresh emulator per run: the schedule starts at its first request
            with emulator(*limit) as (base_url, api_key):
                got = asyncio.run(back_to_back(base_url, api_key, limiter, callers, seconds))
            admitted, refused = got["admitted"], got["refused"]
            t0 = admitted[0] if admitted else 0.0
            if name == "drop":
                share = _rate(admitted, t0 + 26, t0 + 28) / true_rate
                late = sum(1 for t in refused if t0 + 16 <= t < t0 + 28)
                during = sum(1 for t in refused if t0 + 10 <= t < t0 + 16)
                result = {"share_12s_after_return": share, "429s_return_to_12s": late,
                          "429s_during_drop": during,
                          "rate_during_drop": _rate(admitted, t0 + 12, t0 + 16),
                          "per_second": [sum(1 for t in admitted if s <= t - t0 < s + 1)
                                         for s in range(int(seconds))]}
                print(f"{run:>8}: {share:.2f} of 50/s 10-12 s after the return, {late} 429s "
                      f"from the return to then; during the drop {result['rate_during_drop']:.1f}"
                      f"/s of 20, {during} 429s", flush=True)
            else:
                share = _rate(admitted, t0 + 7, t0 + 12) / true_rate
                result = {"share_once_learned": share, "429s": len(refused),
                          "429s_last_5s": sum(1 for t in refused if t >= t0 + 7)}
                print(f"{run:>8}: {share:.2f} of 500/s once learned (last 5 s), "
                      f"{len(refused)} 429s ({result['429s_last_5s']} in the last 5 s)",
                      flush=True)
            out[run] = result
    print("targets: drop: >= 0.90 of 50/s within 12 s of the return, <= 10 429s then, both "
          "limiters; fast: >= 0.85 of 500/s once learned")
    return out


def plot(out: dict[str, Any], rate: float, path: str) -> None:
    """Requests admitted (and refused) per second over time, SDK beside the loop."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"learned": "wan26-async (learns the limit)", "told": "wan26-async (told 50/s)",
              "hand": "hand-written loop honouring Retry-After"}
    runs = [run for run in ("learned", "told", "hand") if run in out]
    fig, axes = plt.subplots(len(runs), 1, figsize=(9, 2.6 * len(runs)), sharex=True)
    for ax, run in zip(axes if len(runs) > 1 else [axes], runs, strict=True):
        result = out[run]
        end = max([*result["admitted"], 1.0])
        bins = [i * 0.5 for i in range(int(end / 0.5) + 2)]
        ax.hist(result["admitted"], bins=bins, weights=[2.0] * len(result["admitted"]),
                color="tab:green", label="admitted /s")
        if result["refused"]:
            ax.hist(result["refused"], bins=bins, weights=[2.0] * len(result["refused"]),
                    color="tab:red", alpha=0.6, label="429 /s")
        ax.axhline(rate, color="black", linestyle="--", linewidth=1, label="server limit")
        ax.set_ylim(0, rate * 4)
        ax.set_title(f"{labels[run]}: {result['ratio']:.2f}x ideal, "
                     f"{result['429s_per_task']:.3f} 429s/task", fontsize=10)
        ax.set_ylabel("requests/s")
        ax.legend(loc="upper right", fontsize=8)
    (axes[-1] if len(runs) > 1 else axes).set_xlabel("seconds since launch")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    print(f"plot written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--shape", choices=["bucket", "window"], default="bucket")
    parser.add_argument("--window", type=int, default=10, help="window seconds (--shape window)")
    parser.add_argument("--runs", default=None,
                        help="default: learned,told,hand (bucket); learned,redis,hand (scenarios)")
    parser.add_argument("--scenario", choices=["drop", "fast"], default=None)
    parser.add_argument("--redis-url", default=None, help="a Redis to use (default: our own)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plot", metavar="PNG", help="draw admitted requests/s over time "
                        "(needs matplotlib)")
    args = parser.parse_args()
    if args.scenario:
        result = scenario(args.scenario, (args.runs or "learned,redis,hand").split(","),
                          args.redis_url)
        if args.json:
            print(json.dumps(result))
        return
    args.runs = args.runs or "learned,told,hand"
    if args.shape == "bucket":
        ideal = (args.n - args.burst) / args.rate
    else:
        ideal = (args.n - args.rate * args.window) / args.rate
    out: dict[str, Any] = {"ideal_seconds": ideal, "shape": args.shape}
    limit = (["--rate-limit", str(args.rate), "--burst", str(args.burst), "--retry-after", "1"]
             if args.shape == "bucket" else
             ["--window-limit", str(args.rate * args.window), "--window", str(args.window)])
    with emulator(*limit) as (base_url, api_key):
        for run in args.runs.split(","):
            if run == "learned":
                result = asyncio.run(sdk(base_url, api_key, args.n, wan.InProcessRateLimiter()))
            elif run == "told":
                result = asyncio.run(sdk(base_url, api_key, args.n,
                                         wan.InProcessRateLimiter(rate=args.rate)))
            else:
                result = asyncio.run(hand_written(base_url, api_key, args.n))
            result["ratio"] = result["seconds"] / ideal
            result["429s_per_task"] = result["429s"] / args.n
            out[run] = result
            print(f"{run:>8}: makespan {result['seconds']:6.2f} s = {result['ratio']:.3f} x ideal"
                  f" ({ideal:.1f} s), {result['429s']} 429s = {result['429s_per_task']:.3f}/task"
                  + (f", {result['429s_after_1s']} after the first second"
                     if result["429s_after_1s"] is not None else ""), flush=True)
            time.sleep(2)  # let the server's bucket refill between runs
    print("targets (bucket): learned <= 1.10 x and <= 0.02 429s/task; told <= 1.03 x, "
          "no 429 after the first second")
    if args.plot:
        plot(out, args.rate, args.plot)
    if args.json:
        for run in ("learned", "told", "hand"):
            if run in out:
                out[run] = {k: v for k, v in out[run].items()
                            if k not in ("admitted", "refused")}
        print(json.dumps(out))


if __name__ == "__main__":
    main()
