"""The wan26 command: a demo against the emulator, and one command per API call.

    wan26 demo                      generations of every model against the built-in emulator
    wan26 generate t2v --prompt P   one generation (--wait, --download PATH; price shown first)
    wan26 credits                   the account's balance
    wan26 task TASK_ID              one query of a task
    wan26 watch TASK_ID             status changes until the task ends (exit 0 completed, 1 failed)
    wan26 batch JOBS.jsonl --out R  one generation per line, resumable (exit 0 all completed)
    wan26 fake-server --port 8123   the emulator, for your own tests

The key comes from ``--api-key`` or ``$WAN_API_KEY``, the gateway from ``--base-url`` or
``$WAN_BASE_URL``. Errors print one line (a traceback only with ``--debug``); exit
status: 0 success, 1 a task or job failed, 2 bad input, 3 configuration or
authentication, 4 stopped before the end (credits, a timeout, a batch left to a rerun),
5 the gateway (unreachable, server error), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sqlite3
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .._client import AsyncWanClient
from .._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES
from .._errors import ConfigurationError, WanError
from .._models import Task
from .._ratelimit import RateLimiter
from .._version import __version__
from ._batch_cmd import add_batch_parser, run_batch_command
from ._errors import (
    EXIT_CONFIG,
    EXIT_INPUT,
    EXIT_INTERRUPTED,
    CliError,
    RetryNotes,
    describe,
    report,
)
from ._generate import add_generate_parser, run_generate

__all__ = ["main"]


def _api_key(args: argparse.Namespace) -> str:
    """The key, checked with advice in the command line's words."""
    key: str | None = args.api_key
    source = "--api-key"
    if key is None:
        key, source = os.environ.get(API_KEY_ENV), f"${API_KEY_ENV}"
    if not key:
        raise CliError(f"no API key: pass --api-key KEY or set {API_KEY_ENV} (wan26 demo "
                       "needs none)", code="configuration_error", exit_code=EXIT_CONFIG)
    if not key.startswith("sk-"):
        raise CliError(f"the key in {source} must start with 'sk-' (copy it again from the "
                       "dashboard)", code="configuration_error", exit_code=EXIT_CONFIG)
    return key


def _client(args: argparse.Namespace, rate_limiter: RateLimiter | None = None
            ) -> AsyncWanClient:
    return AsyncWanClient(api_key=_api_key(args), base_url=args.base_url,
                          allow_insecure_http=args.allow_insecure_http,
                          rate_limiter=rate_limiter)


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
    try:
        from ..redis import RedisRateLimiter, scope_for
    except ImportError as exc:
        raise ConfigurationError(str(exc)) from None
    return RedisRateLimiter.from_url(args.redis_url,
                                     scope=scope_for(_base_url(args), _api_key(args)))


def _base_url(args: argparse.Namespace) -> str:
    return str(getattr(args, "base_url", None) or os.environ.get(BASE_URL_ENV)
               or DEFAULT_BASE_URL)


async def _batch(args: argparse.Namespace) -> int:
    return await run_batch_command(args, lambda limiter: _client(args, limiter),
                                   _redis_limiter)


async def _generate(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        return await run_generate(args, client)


def _demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    given = [option for option, value in (("--api-key", args.api_key),
                                           ("--base-url", args.base_url)) if value]
    if given:
        raise CliError(f"wan26 demo runs its own emulator and takes no {' or '.join(given)}; "
                       "to try your gateway, use wan26 generate t2v --prompt ... --wait",
                       code="usage")
    return asyncio.run(run_demo(json_output=args.json))


def _common(defaults: bool) -> _Parser:
    # The options are accepted before and after the command; after it, they default to
    # SUPPRESS so that they do not overwrite what was given before it.
    common = _Parser(add_help=False)
    unset: dict[str, Any] = {} if defaults else {"default": argparse.SUPPRESS}
    common.add_argument("--api-key", help="API key (default: $WAN_API_KEY)", **unset)
    common.add_argument("--base-url", help="gateway URL (default: $WAN_BASE_URL or the public "
                        "one)", **unset)
    common.add_argument("--allow-insecure-http", action="store_true",
                        help="allow a plain-http --base-url to a host other than this machine "
                             "(sends the key unencrypted)", **unset)
    common.add_argument("--json", action="store_true",
                        help="machine-readable output; errors as one JSON object on stderr",
                        **unset)
    common.add_argument("--debug", action="store_true", help="debug logs and full tracebacks",
                        **unset)
    return common


def _parser() -> _Parser:
    parser = _Parser(
        prog="wan26", parents=[_common(True)],
        description="The wan26 command: the Wan 2.6 video API from the shell.",
        epilog=__doc__.split("\n\n")[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    common = _common(False)
    parser.add_argument("--version", action="version", version=f"wan26-async {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("demo", parents=[common],
                   help="generations of every model against the built-in emulator",
                   description="Start the API emulator in this process (no key, no network) "
                   "and run seven generations on it: two of each model and one that fails "
                   "on purpose, to show the refund; one line per status change, a table, "
                   "one video downloaded (into a temporary folder removed at the end) and "
                   "the credits spent. --api-key and --base-url are refused: it never "
                   "talks to a real gateway.")
    sub.add_parser("credits", parents=[common], help="show the credit balance",
                   description="Print the account's credit balance.")
    add_generate_parser(sub, common)
    p = sub.add_parser("task", parents=[common], help="query one task",
                       description="Query a task once: its status, video URL or error.")
    p.add_argument("task_id", help="the id create printed (submitted ...)")
    p = sub.add_parser("watch", parents=[common], help="follow a task until it ends",
                       description="Follow a task until it ends; exit status 0 if it "
                       "completed, 1 if it failed, 4 if --timeout passed first.")
    p.add_argument("task_id", help="the id create printed (submitted ...)")
    p.add_argument("--timeout", type=float, default=None, help="give up after S seconds")
    add_batch_parser(sub, common)
    # Listed for --help; its own options are parsed by the emulator's command line.
    sub.add_parser("fake-server", add_help=False,
                   help="run the API emulator (wan26 fake-server --help for its options)")
    return parser


_COMMANDS = {"credits": _credits, "task": _task, "watch": _watch, "batch": _batch,
             "generate": _generate}


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one JSON object on stderr with ``--json``."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if _Parser.json_errors:
            report(describe(CliError(f"{self.prog}: {message}", code="usage")),
                   json_output=True)
            sys.exit(EXIT_INPUT)
        super().error(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wan26`` console script; returns the exit status (see the
    module docstring and docs/cli.md for what each means)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "fake-server" in argv:  # its options belong to the emulator's own command line
        from ..testing._cli import main as fake_server_main

        at = argv.index("fake-server")
        own = argv[at + 1:]
        if "--json" in argv[:at] and "--json" not in own:  # wan26 --json fake-server
            own.append("--json")
        return fake_server_main(own)
    _Parser.json_errors = "--json" in argv
    args = _parser().parse_args(argv)
    if args.debug:
        logging.basicConfig(level=logging.DEBUG, format="%(asctime)s %(name)s %(message)s")
    notes = None if args.command == "demo" else RetryNotes.install(DEFAULT_MAX_RETRIES,
                                                                   _base_url(args))
    try:
        if args.command == "demo":
            return _demo(args)
        return asyncio.run(_COMMANDS[args.command](args))
    except KeyboardInterrupt:
        if args.json:
            report(describe(CliError("interrupted", code="interrupted",
                                     exit_code=EXIT_INTERRUPTED)), json_output=True)
        else:
            print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (WanError, CliError, ValueError, OSError, sqlite3.Error) as exc:
        if args.debug:
            raise
        err = describe(exc, api_key_given=args.api_key is not None, base_url=_base_url(args))
        report(err, json_output=args.json)
        return err.exit_code
    finally:
        if notes is not None:
            logging.getLogger("wan26_async").removeHandler(notes)
