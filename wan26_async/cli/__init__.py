"""The wan26 command: a demo against the emulator, and one command per API call.

    wan26 demo                      generations of every model against the built-in emulator
    wan26 generate t2v --prompt P   one generation (--wait, --download PATH; price shown first)
    wan26 credits                   the account's balance
    wan26 task TASK_ID              one query of a task
    wan26 watch TASK_ID             status changes until the task ends (exit 0 completed, 1 failed)
    wan26 batch JOBS.jsonl --out R  one generation per line, resumable (exit 0 all done)
    wan26 fake-server --port 8123   the emulator, for your own tests

The key comes from ``--api-key`` or ``$WAN_API_KEY``, the gateway from ``--base-url`` or
``$WAN_BASE_URL``. Errors print one line (a traceback only with ``--debug``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from .._client import AsyncWanClient
from .._errors import ConfigurationError, WanError
from .._ratelimit import RateLimiter
from .._models import Task
from .._version import __version__
from ._generate import add_generate_parser, run_generate

__all__ = ["main"]


def _client(args: argparse.Namespace) -> AsyncWanClient:
    return AsyncWanClient(api_key=args.api_key, base_url=args.base_url)


def _task_json(task: Task) -> dict[str, Any]:
    return {"id": task.id, "status": task.status.value, "video_url": task.video_url,
            "error": task.error, "raw": dict(task.raw)}


async def _credits(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        credits = await client.get_credits()
    print(json.dumps({"balance": credits.balance}) if args.json else f"{credits.balance:g}")
    return 0


async def _task(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        task = await client.get_task(args.task_id)
    if args.json:
        print(json.dumps(_task_json(task)))
    else:
        print(f"{task.id}  {task.status_text or task.status.value}"
              + (f"  {task.video_url}" if task.video_url else "")
              + (f"  ({task.error})" if task.error else ""))
    return 0


async def _watch(args: argparse.Namespace) -> int:
    last: Task | None = None
    # on a terminal one status line, redrawn as time passes; piped, a line per change
    live = not args.json and sys.stdout.isatty()
    loop = asyncio.get_running_loop()
    began = loop.time()
    chain: list[str] = []

    def draw(end: str = "") -> None:
        sys.stdout.write(f"\r{loop.time() - began:6.1f}s  {' -> '.join(chain) or '...'}"
                         f"\x1b[K{end}")
        sys.stdout.flush()

    async def tick() -> None:
        while True:
            draw()
            await asyncio.sleep(0.2)

    ticker = asyncio.ensure_future(tick()) if live else None
    try:
        async with _client(args) as client:
            async for event in client.watch(args.task_id, timeout=args.timeout):
                last = event.task
                if args.json:
                    print(json.dumps({"elapsed": round(event.elapsed, 3),
                                      "status": event.status.value,
                                      "previous": event.previous and event.previous.value,
                                      "task": _task_json(event.task)}), flush=True)
                elif live:
                    label = event.task.status_text or event.status.value
                    chain.append(label if not chain else f"{label} ({event.elapsed:.1f}s)")
                    draw()
                else:
                    print(f"{event.elapsed:6.1f}s  {event.status.value}", flush=True)
    finally:
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            draw("\n")
    if last is not None and last.error and not args.json:
        print(f"failed: {last.error}")
    if last is not None and last.video_url and not args.json:
        print(last.video_url)
    return 0 if last is not None and last.status.value == "completed" else 1


def _redis_limiter(args: argparse.Namespace) -> RateLimiter:
    """The limiter shared through Redis by every process of this key (``--redis-url``)."""
    import os

    from .._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL

    try:
        from ..redis import RedisRateLimiter, scope_for
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from None
    key = args.api_key or os.environ.get(API_KEY_ENV) or ""
    base_url = args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    return RedisRateLimiter.from_url(args.redis_url, scope=scope_for(base_url, key))


def _shard(text: str) -> tuple[int, int]:
    from .._batch import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def _batch(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .._batch import load_jobs, run_batch, shard_jobs
    from ._progress import BatchReporter

    jobs = load_jobs(Path(args.file))
    if args.shard is not None:
        jobs = shard_jobs(jobs, *args.shard)
    reporter = BatchReporter(json_output=args.json)
    limiter = _redis_limiter(args) if args.redis_url else None
    try:
        async with AsyncWanClient(api_key=args.api_key, base_url=args.base_url,
                                  rate_limiter=limiter) as client:
            summary = await run_batch(
                client, jobs, Path(args.out), concurrency=args.concurrency,
                journal_path=Path(args.journal) if args.journal else None,
                resend_ambiguous=args.resend_ambiguous, on_progress=reporter.update,
            )
    finally:
        if limiter is not None:
            await limiter.aclose()
    reporter.finish(summary)
    return 0 if summary.complete else 3


async def _generate(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        return await run_generate(args, client)


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return asyncio.run(run_demo(json_output=args.json))


def _common(defaults: bool) -> argparse.ArgumentParser:
    # The options are accepted before and after the command; after it, they default to
    # SUPPRESS so that they do not overwrite what was given before it.
    common = argparse.ArgumentParser(add_help=False)
    unset: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    common.add_argument("--api-key", help="API key (default: $WAN_API_KEY)", **unset)
    common.add_argument("--base-url", help="gateway URL (default: $WAN_BASE_URL or the public "
                        "one)", **unset)
    common.add_argument("--json", action="store_true", help="machine-readable output", **unset)
    common.add_argument("--debug", action="store_true", help="debug logs and full tracebacks",
                        **unset)
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wan26", parents=[_common(True)],
        description="The wan26 command: the Wan 2.6 video API from the shell.",
        epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    common = _common(False)
    parser.add_argument("--version", action="version", version=f"wan26-async {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("demo", parents=[common],
                   help="generations of every model against the built-in emulator")
    sub.add_parser("credits", parents=[common], help="show the credit balance")
    add_generate_parser(sub, common)
    p = sub.add_parser("task", parents=[common], help="query one task")
    p.add_argument("task_id")
    p = sub.add_parser("watch", parents=[common], help="follow a task until it ends")
    p.add_argument("task_id")
    p.add_argument("--timeout", type=float, default=None, help="give up after S seconds")
    p = sub.add_parser("batch", parents=[common], help="run one generation per JSONL line")
    p.add_argument("file", help="JSONL: one {\"model\": ..., \"input\": {...}} per line")
    p.add_argument("--out", required=True, help="JSONL results, one line per job")
    p.add_argument("--concurrency", type=int, default=16, help="jobs in flight (default 16)")
    p.add_argument("--journal", help="journal path (default: OUT.journal)")
    p.add_argument("--resend-ambiguous", action="store_true",
                   help="resend creates that may have reached the server, with the same "
                        "idempotency key (only on a gateway that honours it)")
    p.add_argument("--redis-url", metavar="URL",
                   help="share the rate limit through this Redis with every other process "
                        "of the key, e.g. other shards (needs wan26-async[redis])")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="run only lines I, I+N, I+2N, ... (each shard with its own --out)")
    # Listed for --help; its own options are parsed by the emulator's command line.
    sub.add_parser("fake-server", add_help=False,
                   help="run the API emulator (wan26 fake-server --help for its options)")
    return parser


_COMMANDS = {"credits": _credits, "task": _task, "watch": _watch, "batch": _batch,
             "generate": _generate}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wan26`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "fake-server" in argv:  # its options belong to the emulator's own command line
        from ..testing._cli import main as fake_server_main

        at = argv.index("fake-server")
        own = argv[at + 1:]
        if "--json" in argv[:at] and "--json" not in own:  # wan26 --json fake-server
            own.append("--json")
        return fake_server_main(own)
    args = _parser().parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    try:
        if args.command == "demo":
            return _demo(args)
        return asyncio.run(_COMMANDS[args.command](args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (WanError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
