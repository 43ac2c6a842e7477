"""Resumable batch jobs: one request per JSONL line (read by `wan26_async._jobs`), one
result line per job.

A journal (SQLite in WAL mode, beside the output file) is written before each
submission and after each result, so a run killed at any point (Ctrl-C, SIGKILL) and
started again with the same arguments neither resubmits a job nor loses its result:

* a job is journaled ``submitting`` with its idempotency key *before* its create;
* ``submitted`` with the task id once the create answered;
* its result line is appended to the output *then* the job is journaled ``done``; on
  resume, result lines already in the output count as done (a torn last line is cut).

A job whose create may have reached the server without an answer (killed mid-create,
or an ambiguous failure) is not resent unless ``resend_ambiguous`` is set, in which
case it is resent with the same idempotency key.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import attrs

from ._client import AsyncWanClient
from ._errors import (
    AmbiguousSubmissionError,
    NotSubmittedError,
    TaskFailedError,
    WanError,
    WatchTimeoutError,
)
from ._jobs import BatchError, Job
from ._models import Task, TaskStatus
from ._pool import ACCOUNT_WIDE, SubmitPool

__all__ = ["BatchProgress", "BatchSummary", "Journal", "run_batch"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    line INTEGER PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    state TEXT NOT NULL,
    task_id TEXT,
    updated REAL NOT NULL
)
"""


class Journal:
    """The SQLite journal of a batch (WAL mode: a torn write loses nothing)."""

    def __init__(self, path: Path) -> None:
        try:
            self.db = sqlite3.connect(path, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise BatchError(f"cannot open the journal {path}: {exc} (is the disk full, "
                             "or its directory missing or not writable? --journal PATH "
                             "puts it elsewhere)") from None

    def rows(self) -> dict[int, tuple[str, str, str, str | None]]:
        cur = self.db.execute("SELECT line, fingerprint, idempotency_key, state, task_id "
                              "FROM jobs")
        return {line: (fp, key, state, task_id) for line, fp, key, state, task_id in cur}

    def set(self, job: Job, key: str, state: str, task_id: str | None = None) -> None:
        self.db.execute(
            "INSERT INTO jobs (line, fingerprint, idempotency_key, state, task_id, updated) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(line) DO UPDATE SET state=excluded.state, "
            "task_id=COALESCE(excluded.task_id, jobs.task_id), updated=excluded.updated",
            (job.line, job.fingerprint, key, state, task_id, time.time()),
        )

    def close(self) -> None:
        self.db.close()


@attrs.define
class BatchProgress:
    """Live counts of a batch, passed to the progress callback.

    ``done_before`` jobs had their result from an earlier run (``failed_before`` of
    them did not complete); ``resumed`` were submitted by an earlier run and watched to
    their end by this one. ``credits`` is what the batch has been charged so far, by
    this run and earlier ones: a job's price counts from its submission and is taken off
    again when its task fails (the server refunds it). ``credits_before`` is the part
    of it for the results of earlier runs.
    """

    total: int
    done_before: int = 0
    failed_before: int = 0
    resumed: int = 0
    submitted: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    not_submitted: int = 0
    ambiguous: int = 0
    unfinished: int = 0
    credits: int = 0
    credits_before: int = 0
    started: float = attrs.field(factory=time.monotonic)

    @property
    def finished(self) -> int:
        return self.done_before + self.completed + self.failed

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far, or None before the first result."""
        done_now = self.completed + self.failed
        left = (self.total - self.finished - self.not_submitted - self.ambiguous
                - self.unfinished)
        if done_now == 0 or left <= 0:
            return None if left > 0 else 0.0
        return (time.monotonic() - self.started) / done_now * left


@attrs.frozen
class BatchSummary:
    """How a batch ended. ``complete`` is True when every job has a result line."""

    progress: BatchProgress
    stopped_by: str | None = None

    @property
    def complete(self) -> bool:
        p = self.progress
        return p.finished == p.total


def _read_done(out: Path) -> dict[int, tuple[int, bool]]:
    """The lines already in the output, with the credits each was charged and whether
    it completed; cut a torn last line left by a kill."""
    if not out.exists():
        return {}
    done: dict[int, tuple[int, bool]] = {}
    data = out.read_bytes()
    keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with out.open("r+b") as f:
            f.truncate(keep)
    for raw in data[:keep].splitlines():
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("line"), int):
            credits = record.get("credits")
            done[record["line"]] = (credits if isinstance(credits, int) else 0,
                                    record.get("status") == "completed")
    return done


def _result(job: Job, task: Task | None, error: BaseException | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "line": job.line,
        # one vocabulary: a job ends "completed" or "failed" (a refused create has no task)
        "status": task.status.value if task is not None else "failed",
        "task_id": task.id if task is not None else None,
        "video_url": task.video_url if task is not None else None,
        "credits": job.request.estimated_credits
        if task is not None and task.status is TaskStatus.COMPLETED else 0,
    }
    if error is not None:
        record["error"] = str(error)
    return record


async def run_batch(
    client: AsyncWanClient,
    jobs: list[Job],
    out: Path,
    *,
    concurrency: int = 16,
    journal_path: Path | None = None,
    resend_ambiguous: bool = False,
    wait_timeout: float | None = None,
    on_progress: Callable[[BatchProgress], None] | None = None,
) -> BatchSummary:
    """Run (or resume) a batch; see the module docstring for the guarantees.

    Raises ValueError for a ``concurrency`` below 1, `BatchError` for a journal that
    cannot be opened or belongs to a different input, OSError when the output cannot be
    written.
    """
    if not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
    journal = Journal(journal_path or out.with_name(out.name + ".journal"))
    try:
        return await _run(client, jobs, out, journal, concurrency, resend_ambiguous,
                          wait_timeout, on_progress)
    finally:
        journal.close()


async def _run(
    client: AsyncWanClient,
    jobs: list[Job],
    out: Path,
    journal: Journal,
    concurrency: int,
    resend_ambiguous: bool,
    wait_timeout: float | None,
    on_progress: Callable[[BatchProgress], None] | None,
) -> BatchSummary:
    rows = journal.rows()
    for job in jobs:
        row = rows.get(job.line)
        if row is not None and row[0] != job.fingerprint:
            raise BatchError(f"line {job.line} differs from the run this journal records; "
                             "use a new --out file for a changed input")
    lines = {job.line for job in jobs}
    done = {line: seen for line, seen in _read_done(out).items() if line in lines}
    earlier = sum(credits for credits, _ in done.values())
    progress = BatchProgress(
        total=len(jobs), done_before=len(done), credits=earlier, credits_before=earlier,
        failed_before=sum(1 for _, completed in done.values() if not completed))
    sink = out.open("a", encoding="utf-8")

    def report() -> None:
        if on_progress is not None:
            on_progress(progress)

    def write(job: Job, key: str, task: Task | None, error: BaseException | None) -> None:
        sink.write(json.dumps(_result(job, task, error)) + "\n")
        sink.flush()
        os.fsync(sink.fileno())
        journal.set(job, key, "done")

    pool = SubmitPool(concurrency)  # raises ValueError below 1

    async def create(job: Job, key: str) -> Task:
        journal.set(job, key, "submitting")  # before the create: a kill now is ambiguous
        return await client.create_task(job.request, callback_url=job.callback_url,
                                        idempotency_key=key,
                                        resend_ambiguous=resend_ambiguous or None)

    async def one(job: Job) -> None:
        row = rows.get(job.line)
        key = row[1] if row is not None else str(uuid.uuid4())
        state = row[2] if row is not None else None
        task_id = row[3] if row is not None else None
        if state in ("submitting", "ambiguous") and not resend_ambiguous:
            progress.ambiguous += 1
            return
        price = job.request.estimated_credits
        resumed = task_id is not None  # submitted (and charged) by an earlier run
        if task_id is None:
            try:
                task = await pool.submit(lambda: create(job, key))
            except NotSubmittedError:  # an earlier job was refused for the whole account
                progress.not_submitted += 1
                return
            except AmbiguousSubmissionError:
                journal.set(job, key, "ambiguous")
                progress.ambiguous += 1
                return
            except ACCOUNT_WIDE:
                journal.set(job, key, "not_submitted")
                progress.not_submitted += 1
                return
            except WanError as exc:  # refused for this job alone (400, 404, ...)
                write(job, key, None, exc)
                progress.failed += 1
                return
            task_id = task.id
            journal.set(job, key, "submitted", task_id)
            progress.submitted += 1
        progress.credits += price
        progress.running += 1
        report()
        try:
            final: Task | None = await client.wait(task_id, timeout=wait_timeout)
            error: BaseException | None = None
        except TaskFailedError as exc:
            final, error = exc.task, exc
        except WatchTimeoutError:
            progress.unfinished += 1  # still journaled "submitted": a rerun picks it up
            return
        finally:
            progress.running -= 1
        write(job, key, final, error)
        if resumed:
            progress.resumed += 1
        if error is None:
            progress.completed += 1
        else:
            progress.failed += 1
            progress.credits -= price  # refunded
        report()

    failure: list[Exception] = []  # raised as it is, not in an exception group
    try:
        async with anyio.create_task_group() as group:
            if on_progress is not None:
                group.start_soon(_tick, report)
            try:
                await pool.run((j for j in jobs if j.line not in done), one)
            except Exception as exc:  # a write failed (disk full, ...): a cancel is not
                failure.append(exc)
            group.cancel_scope.cancel()  # the ticker
    finally:
        sink.close()
    if failure:
        raise failure[0]
    report()
    stopped = pool.stopped_by
    return BatchSummary(progress, None if stopped is None else str(stopped))


async def _tick(report: Callable[[], None]) -> None:
    while True:
        await anyio.sleep(1.0)
        report()
