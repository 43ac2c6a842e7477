"""wan26 batch: validated up front, one result per job, resumable after a kill."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import wan26_async as wan
from wan26_async._batch import Journal, run_batch
from wan26_async._jobs import BatchError, load_jobs, read_jobs
from wan26_async.testing import FakeWanServer

from .conftest import FAST, FAST_POLL, FAST_RETRY, client_tasks, eventually


def write_jobs(path: Path, n: int, *, bad: dict[int, str] | None = None) -> Path:
    lines = []
    for i in range(1, n + 1):
        if bad and i in bad:
            lines.append(bad[i])
            continue
        model = ["wan-2.6-text-to-video", "wan-2.6-image-to-video",
                 "wan-2.6-reference-to-video"][i % 3]
        inp: dict[str, object] = {"prompt": f"job {i}", "duration": 2, "resolution": "720p"}
        if model != "wan-2.6-text-to-video":
            inp["image_urls"] = ["https://example.com/a.png"]
        lines.append(json.dumps({"model": model, "input": inp}))
    path.write_text("\n".join(lines) + "\n")
    return path


def results(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def client_for(server: FakeWanServer) -> wan.AsyncWanClient:
    return wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                              poll=FAST_POLL, retry=FAST_RETRY)


async def test_every_job_gets_one_result_line_and_a_rerun_submits_nothing(
    server: FakeWanServer, tmp_path: Path
) -> None:
    jobs = load_jobs(write_jobs(tmp_path / "jobs.jsonl", 9))
    out = tmp_path / "out.jsonl"
    async with client_for(server) as client:
        summary = await run_batch(client, jobs, out, concurrency=4)
        assert summary.complete and summary.progress.completed == 9
        assert sorted(r["line"] for r in results(out)) == list(range(1, 10))
        assert all(r["status"] == "completed" and r["video_url"] for r in results(out))
        creates = server.stats.creates_accepted
        again = await run_batch(client, jobs, out, concurrency=4)
    assert again.complete and again.progress.done_before == 9
    assert server.stats.creates_accepted == creates == 9
    assert len(results(out)) == 9


def test_invalid_lines_are_reported_with_line_numbers_before_anything_is_sent(
    tmp_path: Path,
) -> None:
    path = write_jobs(tmp_path / "jobs.jsonl", 5, bad={
        2: '{"model": "wan-2.6-text-to-video", "input": {"prompt": "x", "duration": 99}}',
        4: "{not json",
    })
    with pytest.raises(BatchError) as info:
        load_jobs(path)
    text = str(info.value)
    assert "line 2: duration" in text and "line 4: not JSON" in text
    assert len(info.value.errors) == 2


async def test_a_job_killed_mid_create_is_not_resent_without_opt_in(
    server: FakeWanServer, tmp_path: Path
) -> None:
    jobs = load_jobs(write_jobs(tmp_path / "jobs.jsonl", 3))
    out = tmp_path / "out.jsonl"
    journal = Journal(out.with_name(out.name + ".journal"))
    journal.set(jobs[0], "key-of-a-lost-create", "submitting")  # killed before the reply
    journal.close()
    async with client_for(server) as client:
        summary = await run_batch(client, jobs, out)
        assert summary.progress.ambiguous == 1 and not summary.complete
        assert server.stats.creates_accepted == 2
        summary = await run_batch(client, jobs, out, resend_ambiguous=True)
    assert summary.complete
    created = [r for r in server.requests if r.route == "create"]
    assert created[-1].header("Idempotency-Key") == "key-of-a-lost-create"


async def test_insufficient_credits_stops_submissions_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    async with FakeWanServer(credits=48 * 4, **FAST) as server:  # four 720p x 2 s jobs
        jobs = load_jobs(write_jobs(tmp_path / "jobs.jsonl", 7))
        out = tmp_path / "out.jsonl"
        async with client_for(server) as client:
            summary = await run_batch(client, jobs, out, concurrency=1)
            p = summary.progress
            assert (p.completed, p.not_submitted) == (4, 3) and not summary.complete
            assert summary.stopped_by and "insufficient_credits" in summary.stopped_by
            server.balance = 10_000
            summary = await run_batch(client, jobs, out, concurrency=1)
        assert summary.complete
        assert sorted(r["line"] for r in results(out)) == list(range(1, 8))
        assert len(server.tasks) == 7


def test_a_batch_killed_with_sigkill_and_resumed_completes_every_job_exactly_once(
    tmp_path: Path,
) -> None:
    n = 30
    jobs = write_jobs(tmp_path / "jobs.jsonl", n)
    out = tmp_path / "out.jsonl"
    with FakeWanServer(time_scale=0.05, pending_seconds=1).run_in_thread() as server:
        env = {**os.environ, "WAN_API_KEY": server.api_key, "WAN_BASE_URL": server.base_url}
        cmd = [sys.executable, "-m", "wan26_async.cli", "batch", str(jobs), "--out", str(out),
               "--concurrency", "4", "--resend-ambiguous"]
        proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while (not out.exists() or len(out.read_text().splitlines()) < 5) and (
                time.monotonic() < deadline):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert 5 <= len(results(out)) < n  # killed mid-run
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        lines = sorted(r["line"] for r in results(out))
        assert lines == list(range(1, n + 1))  # each job exactly once in the output
        assert len(server.tasks) == n  # and exactly once on the server
        assert "30/30 jobs done (" in done.stderr and "from an earlier run" in done.stderr
        assert f"credits {48 * n} (" in done.stderr  # charged by both runs, nothing twice


async def test_a_cancelled_batch_sends_no_create_afterwards_and_a_rerun_finishes(
    tmp_path: Path,
) -> None:
    # Ctrl-C inside the process: the pool and the progress ticker end with the batch.
    async with FakeWanServer(time_scale=0.02, pending_seconds=0.5) as server:  # ~0.1 s jobs
        jobs = load_jobs(write_jobs(tmp_path / "jobs.jsonl", 20))
        out = tmp_path / "out.jsonl"
        async with client_for(server) as client:
            before = client_tasks()
            reports: list[int] = []
            run = asyncio.ensure_future(run_batch(
                client, jobs, out, concurrency=3,
                on_progress=lambda p: reports.append(p.finished)))
            await eventually(lambda: out.exists() and len(results(out)) >= 2)
            run.cancel()
            with pytest.raises(asyncio.CancelledError):
                await run
            assert client_tasks() - before == set()  # no job, no ticker left running
            assert reports
            await client.get_credits()
            created = len(server.tasks)
            assert created < len(jobs)
            # every task made has finished: a job still alive would have sent the next
            await eventually(lambda: all(t.status == "completed"
                                         for t in server.tasks.values()))
            await client.get_credits()
            assert len(server.tasks) == created
            # a create cut off by the cancel may have made its task: resent with its
            # idempotency key, it is not made twice
            summary = await run_batch(client, jobs, out, concurrency=3, resend_ambiguous=True)
    assert summary.complete
    assert sorted(r["line"] for r in results(out)) == list(range(1, 21))
    assert len(server.tasks) == 20  # the cancelled run's tasks were watched, not remade


async def test_progress_counts_credits_from_submission_and_takes_refunds_off(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        '{"model": "t2v", "input": {"prompt": "fine", "duration": 2, "resolution": "720p"}}\n'
        '{"model": "t2v", "input": {"prompt": "[fail] no", "duration": 3, '
        '"resolution": "720p"}}\n')
    seen: list[tuple[int, int, int]] = []
    async with FakeWanServer(time_scale=0.02, pending_seconds=0.2) as server:
        async with client_for(server) as client:
            summary = await run_batch(
                client, load_jobs(path), tmp_path / "out.jsonl", concurrency=2,
                on_progress=lambda p: seen.append((p.credits, p.completed, p.failed)))
    # charged while running (48 + 72), before any result; the failed one refunded at the end
    assert any(credits == 120 and completed == failed == 0 for credits, completed, failed
               in seen), seen
    assert summary.progress.credits == 48
    assert {r["line"]: r["credits"] for r in results(tmp_path / "out.jsonl")} == {1: 48, 2: 0}


async def test_a_resumed_batch_counts_the_jobs_an_earlier_run_submitted(tmp_path: Path) -> None:
    jobs = load_jobs(write_jobs(tmp_path / "jobs.jsonl", 4))
    out = tmp_path / "out.jsonl"
    async with FakeWanServer(time_scale=0.02, pending_seconds=0.3) as server:
        async with client_for(server) as client:
            first = await run_batch(client, jobs, out, wait_timeout=0.01)  # all submitted
            assert first.progress.unfinished == 4 and not first.complete
            again = await run_batch(client, jobs, out)
            rerun = await run_batch(client, jobs, out)
    p = again.progress
    assert (p.resumed, p.done_before, p.submitted, p.completed) == (4, 0, 0, 4)
    assert p.credits == 4 * 48 and again.complete
    assert len(server.tasks) == 4
    q = rerun.progress
    assert (q.done_before, q.resumed, q.completed, q.credits, q.credits_before) == (
        4, 0, 0, 4 * 48, 4 * 48)


async def test_a_refused_create_is_a_failed_job_and_a_line_callback_url_is_sent(
    server: FakeWanServer, tmp_path: Path
) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_text(
        '{"model": "foo", "input": {"prompt": "p", "duration": 2}}\n'
        '{"model": "t2v", "input": {"prompt": "p", "duration": 2, "resolution": "720p"}, '
        '"callback_url": "https://hooks.example.com/wan"}\n')
    out = tmp_path / "out.jsonl"
    async with client_for(server) as client:
        summary = await run_batch(client, load_jobs(path), out)
    by_line = {r["line"]: r for r in results(out)}
    assert by_line[1]["status"] == "failed" and by_line[1]["task_id"] is None
    assert "model_not_found" in str(by_line[1]["error"])
    assert by_line[2]["status"] == "completed"
    assert summary.progress.failed == 1 and summary.complete
    bodies = [r.json for r in server.requests if r.route == "create"]
    assert [b.get("callback_url") for b in bodies if isinstance(b, dict)
            and b.get("model") == "wan-2.6-text-to-video"] == ["https://hooks.example.com/wan"]


def test_read_jobs_returns_the_valid_jobs_and_each_invalid_line(tmp_path: Path) -> None:
    path = write_jobs(tmp_path / "jobs.jsonl", 4, bad={
        3: '{"model": "t2v", "input": {"prompt": "x", "durations": 2}}'})
    jobs, errors = read_jobs(path)
    assert [job.line for job in jobs] == [1, 2, 4]
    assert len(errors) == 1 and errors[0].startswith("line 3: input['durations']")
    assert "did you mean 'duration'?" in errors[0]


async def test_a_journal_that_cannot_be_opened_is_a_batch_error(
    server: FakeWanServer, tmp_path: Path
) -> None:
    jobs = load_jobs(write_jobs(tmp_path / "jobs.jsonl", 1))
    async with client_for(server) as client:
        with pytest.raises(BatchError, match="cannot open the journal"):
            await run_batch(client, jobs, tmp_path / "out.jsonl",
                            journal_path=tmp_path / "missing" / "j.sqlite")
        with pytest.raises(ValueError, match="concurrency must be"):
            await run_batch(client, jobs, tmp_path / "out.jsonl", concurrency=0)
    assert server.stats.creates_accepted == 0
