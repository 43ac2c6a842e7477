"""Enqueue one Celery job per line of a JSONL file (the format of ``wan26 batch``).

    python enqueue.py jobs.jsonl            # enqueue; a request already queued or done is skipped
    python enqueue.py jobs.jsonl --wait     # ... then print one JSON result line per line

Each line is ``{"model": ..., "input": {...}}``. The job id is derived from the request
(``jobs.job_id``) and is also the Celery task id, so running this twice, or on a file
with repeated lines, never makes a second job for the same request. A job that ended
without a final result (``ambiguous``, ``timeout``, ``refused``) is enqueued again.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from jobs import job_id
from tasks import app, generate, job_store

import wan26_async as wan


def read_jobs(path: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(line, job id, payload) of every line; a bad line stops everything before a job."""
    with open(path, encoding="utf-8") as f:
        lines = [(n, json.loads(text)) for n, text in enumerate(f, 1)
                 if text.strip() and not text.lstrip().startswith("#")]
    return [(n, job_id(wan.request_from_dict(payload)), payload) for n, payload in lines]


def enqueue(jobs: list[tuple[int, str, dict[str, Any]]]) -> int:
    """Send each job not yet queued or done; return how many were sent."""
    store, sent = job_store(), 0
    for _, jid, payload in jobs:
        if not store.mark_queued(jid):  # queued, running or done (or repeated in the file)
            continue
        app.AsyncResult(jid).forget()  # an earlier run's result is not this run's
        try:
            generate.apply_async(args=[payload], task_id=jid)
        except BaseException:
            store.unmark_queued(jid)
            raise
        sent += 1
    return sent


def wait(jobs: list[tuple[int, str, dict[str, Any]]], timeout: float | None) -> int:
    """Print one JSON result line per line of the file; the number not completed."""
    failed = 0
    for n, jid, _ in jobs:
        record: dict[str, Any] = {"line": n, "job_id": jid}
        try:
            record.update(app.AsyncResult(jid).get(timeout=timeout))
        except Exception as exc:  # the job raised, or the wait timed out
            record.update(status="error", error=f"{type(exc).__name__}: {exc}")
        failed += record["status"] != "completed"
        print(json.dumps(record), flush=True)
    return failed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--wait", action="store_true", help="wait for every result")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per result")
    args = parser.parse_args()
    jobs = read_jobs(args.file)
    sent = enqueue(jobs)
    print(f"enqueued {sent}, already queued or done {len(jobs) - sent}", file=sys.stderr)
    sys.exit(1 if args.wait and wait(jobs, args.timeout) else 0)
