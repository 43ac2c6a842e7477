"""A batch file read into jobs: one create body per JSONL line, checked up front, and
the lines dealt into shards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs

from ._errors import ValidationError, WanError
from ._from_dict import request_from_dict
from ._requests import VideoRequest

__all__ = ["BatchError", "Job", "load_jobs", "parse_shard", "read_jobs", "shard_jobs"]


class BatchError(WanError):
    """The batch cannot start: unreadable lines (``errors`` lists them by line number),
    or a journal that belongs to a different input file."""

    def __init__(self, message: str, errors: list[str] | None = None) -> None:
        self.errors = errors or []
        super().__init__(message + "".join(f"\n  {e}" for e in self.errors[:20]))


@attrs.frozen
class Job:
    """One line of a batch file: its number, its checked request and callback URL."""

    line: int
    request: VideoRequest
    fingerprint: str
    callback_url: str | None = None


def read_jobs(path: Path) -> tuple[list[Job], list[str]]:
    """Read and validate every line; return the valid jobs and the invalid lines, each
    as ``"line N: reason"``. Raises OSError (or UnicodeDecodeError) for an unreadable
    file."""
    jobs: list[Job] = []
    errors: list[str] = []
    with path.open(encoding="utf-8") as f:
        for n, raw in enumerate(f, 1):
            text = raw.strip()
            if not text or text.startswith("#"):
                continue
            try:
                payload = json.loads(text)
                request = request_from_dict(payload)
            except json.JSONDecodeError as exc:
                errors.append(f"line {n}: not JSON ({exc.msg})")
                continue
            except ValidationError as exc:
                errors.append(f"line {n}: {exc}")
                continue
            callback_url = payload.get("callback_url")
            body: dict[str, Any] = dict(request.to_payload())
            if callback_url is not None:  # only then: journals of older runs still match
                body["callback_url"] = callback_url
            jobs.append(Job(n, request, json.dumps(body, sort_keys=True), callback_url))
    return jobs, errors


def load_jobs(path: Path) -> list[Job]:
    """Read and validate every line up front; raise `BatchError` listing bad lines."""
    jobs, errors = read_jobs(path)
    if errors:
        raise BatchError(f"{path}: {len(errors)} invalid line(s); nothing was submitted "
                         "(fix them, or pass --skip-invalid to run the others)", errors)
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"``: the I-th (from 1) of N shards; raise ValueError for anything else."""
    index, sep, count = text.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = 0
    if not sep or not 1 <= i <= n:
        raise ValueError(f"a shard is I/N with 1 <= I <= N, like 1/4; got {text!r}")
    return i, n


def shard_jobs(jobs: list[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard ``index`` of ``count``: lines are dealt in turn (line 1 to shard 1,
    line 2 to shard 2, ...), so the N shards of one file are disjoint and cover it."""
    return [job for job in jobs if (job.line - 1) % count == index - 1]
