"""``wan26 batch``: one generation per JSONL line, resumable, with an exit status per outcome.

Exit status: 0 every job completed; 1 every job has a result but some failed (or lines
were skipped with ``--skip-invalid``); 2 invalid input (nothing was sent); 4 some jobs
are left to a rerun (not submitted after a 402 or spend limit, ambiguous, unfinished).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._batch import BatchSummary, run_batch
from .._client import AsyncWanClient
from .._jobs import Job, parse_shard, read_jobs, shard_jobs
from .._ratelimit import RateLimiter
from .._requests import IMAGE_TO_VIDEO, REFERENCE_TO_VIDEO, TEXT_TO_VIDEO
from ._errors import EXIT_FAILED, EXIT_OK, EXIT_STOPPED, CliError
from ._progress import BatchReporter

__all__ = ["add_batch_parser", "exit_status", "positive_int", "run_batch_command"]

_KNOWN_MODELS = (TEXT_TO_VIDEO, IMAGE_TO_VIDEO, REFERENCE_TO_VIDEO)


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def _shard(text: str) -> tuple[int, int]:
    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_batch_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "batch", parents=[common], help="run one generation per JSONL line",
        description="Run one generation per line of a JSONL file, every line checked "
        "before anything is sent; one result line per job in --out; resumable: run the "
        "same command again after a kill. Exit status 0 all completed, 1 some failed, "
        "2 invalid input, 4 some left to a rerun.")
    p.add_argument("file", help="JSONL: one {\"model\": ..., \"input\": {...}} per line "
                   "(model: a full name or t2v, i2v, r2v)")
    p.add_argument("--out", required=True, metavar="PATH",
                   help="JSONL results, one line per job (its directory must exist)")
    p.add_argument("--concurrency", type=positive_int, default=16, metavar="N",
                   help="jobs in flight at once, 1 or more (default 16)")
    p.add_argument("--journal", metavar="PATH", help="journal path (default: OUT.journal)")
    p.add_argument("--skip-invalid", action="store_true",
                   help="run the valid lines and report each invalid one, instead of "
                        "refusing the whole file")
    p.add_argument("--resend-ambiguous", action="store_true",
                   help="resend creates that may have reached the server, with the same "
                        "idempotency key (only on a gateway that honours it)")
    p.add_argument("--redis-url", metavar="URL",
                   help="share the rate limit through this Redis with every other process "
                        "of the key, e.g. other shards (needs wan26-async[redis])")
    p.add_argument("--shard", type=_shard, metavar="I/N",
                   help="run only lines I, I+N, I+2N, ... (each shard with its own --out)")


def _check_writable(path: Path, option: str) -> None:
    """Refuse an output path the batch could not write, before anything is sent."""
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise CliError(f"{option} {path} is a directory; give a file path, like "
                       f"{path / 'results.jsonl'}", code="file_error")
    if path.exists() and not path.is_file():
        raise CliError(f"{option} {path} is not a regular file", code="file_error")
    if not folder.is_dir():
        raise CliError(f"{option} {path}: the directory {folder} does not exist "
                       f"(create it with: mkdir -p {folder})", code="file_error")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                    and not os.access(path, os.W_OK)):
        raise CliError(f"{option} {path}: no permission to write there", code="file_error")


def _say(args: argparse.Namespace, text: str, **record: object) -> None:
    if args.json:
        print(json.dumps(record), file=sys.stderr, flush=True)
    else:
        print(text, file=sys.stderr, flush=True)


def _warn_unknown_models(args: argparse.Namespace, jobs: list[Job]) -> None:
    lines: dict[str, list[int]] = {}
    for job in jobs:
        if job.request.model not in _KNOWN_MODELS:
            lines.setdefault(job.request.model, []).append(job.line)
    for model, numbers in lines.items():
        shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
        _say(args, f"warning: model {model!r} (line {shown}) is not one this SDK knows "
             f"(t2v, i2v, r2v or {', '.join(_KNOWN_MODELS)}); it is sent as it is, and a "
             "gateway without it refuses those jobs",
             event="warning", code="unknown_model", model=model, lines=numbers)


def _load(args: argparse.Namespace) -> tuple[list[Job], int]:
    path = Path(args.file)
    try:
        jobs, errors = read_jobs(path)
    except UnicodeDecodeError as exc:
        raise CliError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start})"
                       ) from None
    if errors and not args.skip_invalid:
        raise CliError(f"{path}: {len(errors)} invalid line(s); nothing was submitted (fix "
                       "them, or pass --skip-invalid to run the other lines)", details=errors)
    for error in errors:
        number, _, reason = error.partition(": ")
        _say(args, f"skipped {error}", event="skipped",
             line=int(number.removeprefix("line ")), reason=reason)
    if args.shard is not None:
        jobs = shard_jobs(jobs, *args.shard)
    return jobs, len(errors)


def exit_status(summary: BatchSummary, skipped: int) -> int:
    """0 all completed, 4 some left to a rerun, 1 some failed or skipped."""
    p = summary.progress
    if not summary.complete:
        return EXIT_STOPPED
    if p.failed or p.failed_before or skipped:  # the output as a whole, earlier runs too
        return EXIT_FAILED
    return EXIT_OK


async def run_batch_command(
    args: argparse.Namespace,
    make_client: Callable[[RateLimiter | None], AsyncWanClient],
    make_limiter: Callable[[argparse.Namespace], RateLimiter],
) -> int:
    """Run ``wan26 batch``; returns its exit status."""
    jobs, skipped = _load(args)
    out = Path(args.out)
    _check_writable(out, "--out")
    if args.journal:
        _check_writable(Path(args.journal), "--journal")
    _warn_unknown_models(args, jobs)
    reporter = BatchReporter(json_output=args.json)
    limiter = make_limiter(args) if args.redis_url else None
    try:
        async with make_client(limiter) as client:
            summary = await run_batch(
                client, jobs, out, concurrency=args.concurrency,
                journal_path=Path(args.journal) if args.journal else None,
                resend_ambiguous=args.resend_ambiguous, on_progress=reporter.update,
            )
    except OSError as exc:  # the checks above passed: a write failed (disk full, ...)
        raise CliError(f"writing the results to {out} failed: {exc.strerror or exc} (is "
                       "the disk full?); run the same command again once it is fixed",
                       code="file_error") from None
    finally:
        if limiter is not None:
            await limiter.aclose()
    status = exit_status(summary, skipped)
    reporter.finish(summary, skipped=skipped, exit_code=status)
    return status
