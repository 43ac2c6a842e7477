"""The emulator as a process: ``wan26 fake-server`` and ``python -m wan26_async.testing``.

Prints one line, ``FakeWanServer listening on http://127.0.0.1:8123 (api key sk-...)``
(with ``--json``: ``{"base_url": ..., "api_key": ..., "pid": ...}``), flushed so a parent
process can read it, then serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

import attrs

from ._config import Faults, FixedWindow, TokenBucket
from ._models import FakeTask
from ._server import DEFAULT_API_KEY, FakeWanServer

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ServerOptions", "add_arguments", "announce", "announce_json", "follow_schedule",
           "main", "parse_schedule", "run_forever", "serve_forever", "server_from_args"]


class ServerOptions(TypedDict, total=False):
    """The keyword arguments of `FakeWanServer`, each meaning what it means there."""

    host: str
    port: int
    api_key: str
    forbidden_keys: Collection[str]
    credits: float
    pending_seconds: float
    processing_seconds: float | Callable[[FakeTask], float] | None
    time_scale: float
    failure_rate: float
    seed: int | None
    rate_limit: TokenBucket | FixedWindow | None
    spend_limit: float | None
    faults: Faults | None
    video_path: Path | str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the fake-server options to `parser` (e.g. a ``wan26`` subcommand's)."""
    parser.add_argument("--host", default="127.0.0.1", help="interface (default %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port; 0 picks a free one")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the valid key")
    parser.add_argument(
        "--forbidden-key", action="append", default=[], metavar="KEY",
        help="a key answered with 403 ip_not_allowed (repeatable)",
    )  # fmt: skip
    parser.add_argument("--credits", type=float, default=100_000, help="initial balance")
    parser.add_argument(
        "--time-scale", type=float, default=1.0, help="multiplies every task duration"
    )
    parser.add_argument("--pending-seconds", type=float, default=1.0,
                        help="seconds a task stays pending (default %(default)s)")
    parser.add_argument(
        "--processing-seconds", type=float, default=None,
        help="fixed processing time (default: duration x 4 at 1080p, x 2.5 at 720p)",
    )  # fmt: skip
    parser.add_argument("--failure-rate", type=float, default=0.0, metavar="P",
                        help="fraction of tasks that fail at random, 0-1 (default 0)")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed of the random choices, for a repeatable run")
    parser.add_argument("--spend-limit", type=float, default=None, metavar="CREDITS",
                        help="credits the key may spend, net of refunds (429 past it)")
    bucket = parser.add_argument_group("token bucket rate limit")
    bucket.add_argument("--rate-limit", type=float, metavar="RATE", help="requests per second")
    bucket.add_argument("--burst", type=int, metavar="N", help="bucket size (default: RATE)")
    bucket.add_argument("--retry-after", type=float, default=1.0, metavar="S",
                        help="Retry-After of a refused request (default %(default)s)")
    bucket.add_argument("--rate-schedule", metavar="T:RATE,...", default=None,
                        help="change the bucket's rate to RATE at T seconds after the first "
                        "request, e.g. 0:50,10:20,16:50 (a limit that drops and returns)")
    window = parser.add_argument_group("fixed window rate limit")
    window.add_argument("--window-limit", type=int, metavar="N", help="requests per window")
    window.add_argument("--window", type=float, default=60.0, metavar="S", help="window length")


def server_from_args(args: argparse.Namespace) -> FakeWanServer:
    """Build the server described by options parsed with `add_arguments`."""
    if args.rate_limit is not None and args.window_limit is not None:
        raise ValueError("use either --rate-limit or --window-limit, not both")
    if args.burst is not None and args.rate_limit is None:
        raise ValueError("--burst needs --rate-limit")
    rate_limit: TokenBucket | FixedWindow | None = None
    if args.rate_limit is not None:
        burst = args.burst if args.burst is not None else max(1, math.ceil(args.rate_limit))
        rate_limit = TokenBucket(rate=args.rate_limit, burst=burst, retry_after=args.retry_after)
    elif args.window_limit is not None:
        rate_limit = FixedWindow(limit=args.window_limit, window=args.window)
    return FakeWanServer(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        forbidden_keys=args.forbidden_key,
        credits=args.credits,
        time_scale=args.time_scale,
        pending_seconds=args.pending_seconds,
        processing_seconds=args.processing_seconds,
        failure_rate=args.failure_rate,
        seed=args.seed,
        spend_limit=args.spend_limit,
        rate_limit=rate_limit,
    )


def parse_schedule(text: str) -> list[tuple[float, float]]:
    """``"0:50,10:20"`` as ``[(0.0, 50.0), (10.0, 20.0)]`` (seconds, requests/s)."""
    try:
        steps = [(float(t), float(r)) for t, r in (item.split(":") for item in text.split(","))]
    except ValueError:
        raise ValueError(f"--rate-schedule takes T:RATE,... (e.g. 0:50,10:20), got {text!r}"
                         ) from None
    return sorted(steps)


async def follow_schedule(server: FakeWanServer, steps: list[tuple[float, float]]) -> None:
    """Change the token bucket's rate at each step's time after the first request."""
    loop = asyncio.get_running_loop()
    while server.stats.requests == 0:  # noqa: ASYNC110 - the emulator's own clock
        await asyncio.sleep(0.005)
    started = loop.time()
    for at, rate in steps:
        await asyncio.sleep(max(0.0, started + at - loop.time()))
        current = server.rate_limit
        if isinstance(current, TokenBucket):
            server.rate_limit = attrs.evolve(current, rate=rate)


def announce(server: FakeWanServer) -> None:
    """Print the line a parent process waits for, and flush it."""
    print(f"FakeWanServer listening on {server.base_url} (api key {server.api_key})", flush=True)


def announce_json(server: FakeWanServer) -> None:
    """`announce` as one JSON object: ``base_url``, ``api_key``, ``pid``."""
    print(json.dumps({"base_url": server.base_url, "api_key": server.api_key,
                      "pid": os.getpid()}), flush=True)


async def serve_forever(
    server: FakeWanServer,
    *,
    on_ready: Callable[[FakeWanServer], None] | None = announce,
    stop: asyncio.Event | None = None,
) -> None:
    """Run `server` until SIGINT/SIGTERM (or until `stop` is set), then stop it cleanly.

    `on_ready` is called once it listens (by default it prints the listening line).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # Windows, or not the main thread: Ctrl-C raises KeyboardInterrupt
        installed.append(sig)
    try:
        async with server:
            if on_ready is not None:
                on_ready(server)
            await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


def run_forever(**options: Unpack[ServerOptions]) -> None:
    """Build ``FakeWanServer(**options)``, print where it listens, serve until Ctrl-C."""
    server = FakeWanServer(**options)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(server))


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m wan26_async.testing``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="wan26 fake-server", description="Run the Wan 2.6 API emulator until Ctrl-C."
    )
    add_arguments(parser)
    parser.add_argument("--json", action="store_true",
                        help="print where it listens as one JSON object")
    args = parser.parse_args(argv)
    try:
        server = server_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    steps = parse_schedule(args.rate_schedule) if args.rate_schedule else []
    if steps and args.rate_limit is None:
        parser.error("--rate-schedule needs --rate-limit")
    ready = announce_json if args.json else announce
    tasks: set[asyncio.Task[None]] = set()

    def on_ready(running: FakeWanServer) -> None:
        ready(running)
        if steps:
            tasks.add(asyncio.ensure_future(follow_schedule(running, steps)))

    try:
        asyncio.run(serve_forever(server, on_ready=on_ready))
    except KeyboardInterrupt:
        pass
    except OSError as exc:
        print(f"fake-server: {exc}", file=sys.stderr)
        return 1
    return 0
