"""Enqueue one arq job per line of a JSONL file (the format of ``wan26 batch``).

    python enqueue.py jobs.jsonl            # enqueue; a request already queued or done is skipped
    python enqueue.py jobs.jsonl --wait     # ... then print one JSON result line per job

Each line is ``{"model": ..., "input": {...}}``. The job id is derived from the request
(see ``worker.job_id``), so running this twice, or on a file with repeated lines, never
makes a second job for the same request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from arq import create_pool
from arq.jobs import Job
from worker import QUEUE, WorkerSettings, job_id

import wan26_async as wan


def read_jobs(path: str) -> list[tuple[int, str, dict[str, Any]]]:
    """(line, job id, payload) of every line; a bad line stops everything before a job."""
    with open(path, encoding="utf-8") as f:
        lines = [(n, json.loads(text)) for n, text in enumerate(f, 1)
                 if text.strip() and not text.lstrip().startswith("#")]
    return [(n, job_id(wan.request_from_dict(payload)), payload) for n, payload in lines]


async def main(ids: list[tuple[int, str, dict[str, Any]]], wait: bool, timeout: float | None
               ) -> int:
    pool = await create_pool(WorkerSettings.redis_settings, default_queue_name=QUEUE)
    try:
        enqueued = 0
        for _, jid, payload in ids:
            if await pool.enqueue_job("generate", payload, _job_id=jid) is not None:
                enqueued += 1
        print(f"enqueued {enqueued}, already queued or done {len(ids) - enqueued}",
              file=sys.stderr)
        if not wait:
            return 0
        failed = 0
        for n, jid, _ in ids:
            job = Job(jid, pool, _queue_name=QUEUE)
            record: dict[str, Any] = {"line": n, "job_id": jid}
            try:
                record.update(await job.result(timeout=timeout))
            except Exception as exc:  # the job raised (after arq's retries) or timed out
                record.update(status="error", error=f"{type(exc).__name__}: {exc}")
            failed += record["status"] != "completed"
            print(json.dumps(record), flush=True)
        return 1 if failed else 0
    finally:
        await pool.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file")
    parser.add_argument("--wait", action="store_true", help="wait for every result")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per result")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(read_jobs(args.file), args.wait, args.timeout)))
