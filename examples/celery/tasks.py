"""A fleet worker on Celery: one job per generation, every worker sharing one rate limit.

    export REDIS_URL=redis://localhost:6379/0 WAN_API_KEY=sk-...
    celery -A tasks worker --concurrency 8      # from this folder; as many as you like

Jobs are enqueued by ``enqueue.py``. What makes a job pay once is in ``jobs.py``; the
Celery side is:

* ``acks_late`` with ``reject_on_worker_lost``: a job is acknowledged when it ends, so
  the job of a worker process that died (SIGKILL, out of memory) is delivered again,
  and ``jobs.run_job`` watches the task its first run made instead of paying again.
* One `wan.WanClient` per worker process, made after the fork (``worker_process_init``,
  or on first use in a pool that does not fork), closed on ``worker_process_shutdown``.
  A client made before the fork cannot be used in the child.
* Every client has a `RedisRateLimiter` of the same scope: one 429 pauses the whole
  fleet, and the rate learned by one process paces all of them.
* Results are plain JSON dicts in the Redis result backend, kept as long as the jobs'
  records (``CELERY_JOB_TTL``).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown
from jobs import DEFAULT_TTL, JobStore, run_job

import wan26_async as wan
from wan26_async.redis import RedisRateLimiter, scope_for

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
QUEUE = os.environ.get("CELERY_QUEUE", "wan26")
#: Seconds before the broker hands a job no worker acknowledged to another worker, when
#: the whole worker died. Keep it above your longest job: a job still running past it is
#: delivered a second time (which watches, but reports "ambiguous" if it lands mid-create).
VISIBILITY_TIMEOUT = float(os.environ.get("CELERY_VISIBILITY_TIMEOUT", "3600"))
JOB_TTL = int(os.environ.get("CELERY_JOB_TTL", str(DEFAULT_TTL)))
WAIT_TIMEOUT = float(os.environ.get("CELERY_WAIT_TIMEOUT", "3000"))
#: The opt-in: resend an ambiguous create with the same Idempotency-Key.
RESEND_AMBIGUOUS = os.environ.get("WAN_RESEND_AMBIGUOUS", "") == "1"

app = Celery("wan26_fleet", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue=QUEUE,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,  # a job waits minutes: do not hoard them
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    broker_connection_retry_on_startup=True,
    result_expires=JOB_TTL,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
)


def job_store() -> JobStore:
    return JobStore.from_url(REDIS_URL, prefix=f"wan26:celery:{QUEUE}", ttl=JOB_TTL)


class Worker:
    """What one worker process keeps: its client, limiter and job store."""

    def __init__(self) -> None:
        api_key = os.environ["WAN_API_KEY"]
        base_url = os.environ.get("WAN_BASE_URL", "https://api.aivideoapi.ai")
        self.pid = os.getpid()
        limiter = RedisRateLimiter.from_url(REDIS_URL, scope=scope_for(base_url, api_key))
        self.client = wan.WanClient(api_key=api_key, base_url=base_url, rate_limiter=limiter,
                                    max_retries=50)  # 429s wait on the shared gate
        self.store = job_store()


_worker: Worker | None = None
_lock = threading.Lock()


def this_process() -> Worker:
    """The `Worker` of this process, made on first use in each process."""
    global _worker
    with _lock:
        if _worker is None or _worker.pid != os.getpid():  # none yet, or the parent's
            _worker = Worker()
        return _worker


@worker_process_init.connect
def open_client(**_: Any) -> None:
    """In each prefork child, after the fork: make its client before the first job."""
    this_process()


@worker_process_shutdown.connect
def close_client(**_: Any) -> None:
    if _worker is not None and _worker.pid == os.getpid():
        _worker.client.close()


@app.task(name="wan26.generate", acks_late=True, reject_on_worker_lost=True)
def generate(payload: dict[str, Any]) -> dict[str, Any]:
    """The job: generate ``payload`` once (see ``jobs.run_job``); a plain dict result."""
    here = this_process()
    return run_job(here.client, here.store, payload, resend_ambiguous=RESEND_AMBIGUOUS,
                   timeout=WAIT_TIMEOUT)
