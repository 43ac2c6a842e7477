"""A fleet worker on arq: one job per generation, every worker sharing one rate limit.

    export REDIS_URL=redis://localhost:6379/0 WAN_API_KEY=sk-...
    python worker.py            # as many of these as you like, on as many machines
    python worker.py --burst    # or: stop once the queue is empty

(or ``arq worker.WorkerSettings`` from this folder). Jobs are enqueued by ``enqueue.py``.

* The job id is derived from the request (a SHA-256 of its canonical payload): arq does
  not enqueue a job whose id is queued, running or has a result kept, so enqueueing the
  same file twice makes nothing new.
* The same id is the create's ``Idempotency-Key``: when a job runs again anyway (a worker
  killed mid-job is retried by arq; a result expired and the job was enqueued again),
  the gateway answers with the task it already made instead of charging a second one.
* Every worker's client has a `RedisRateLimiter` of the same scope: one 429 pauses the
  whole fleet, and the rate learned by one worker paces all of them.
"""

from __future__ import annotations

import hashlib
import json
import logging.config
import os
import sys
from typing import Any

from arq import run_worker
from arq.connections import RedisSettings
from arq.logs import default_log_config

import wan26_async as wan
from wan26_async.redis import RedisRateLimiter, scope_for

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
QUEUE = os.environ.get("FLEET_QUEUE", "wan26:fleet")


def job_id(request: wan.VideoRequest) -> str:
    """The id of the job of ``request``: the same request always gets the same id (to
    generate one prompt twice on purpose, make the requests differ, e.g. by ``seed``)."""
    canonical = json.dumps(request.to_payload(), sort_keys=True, separators=(",", ":"))
    return "wan-" + hashlib.sha256(canonical.encode()).hexdigest()


async def generate(ctx: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The job: create the task (the job id is its idempotency key) and wait for it."""
    client: wan.AsyncWanClient = ctx["wan"]
    request = wan.request_from_dict(payload)  # checked: a misspelled key is refused
    key = ctx["job_id"]
    task = await client.create_task(request, idempotency_key=key, resend_ambiguous=True)
    try:
        task = await client.wait(task.id, timeout=3000)
    except wan.TaskFailedError as exc:  # a result, not a reason to run the job again
        task = exc.task
    return {"task_id": task.id, "status": task.status.value, "video_url": task.video_url,
            "error": task.error}


async def startup(ctx: dict[str, Any]) -> None:
    api_key = os.environ["WAN_API_KEY"]
    base_url = os.environ.get("WAN_BASE_URL", "https://api.aivideoapi.ai")
    limiter = RedisRateLimiter.from_url(REDIS_URL, scope=scope_for(base_url, api_key))
    ctx["limiter"] = limiter
    ctx["wan"] = wan.AsyncWanClient(api_key=api_key, base_url=base_url, rate_limiter=limiter,
                                    max_retries=50)  # 429s wait on the shared gate


async def shutdown(ctx: dict[str, Any]) -> None:
    if "wan" in ctx:
        await ctx["wan"].aclose()
        await ctx["limiter"].aclose()  # the client does not close a limiter it was given


class WorkerSettings:
    functions = (generate,)
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = RedisSettings.from_dsn(REDIS_URL)
    queue_name = QUEUE
    max_jobs = int(os.environ.get("FLEET_MAX_JOBS", "32"))  # jobs in flight per worker
    job_timeout = 3600  # a generation takes minutes; arq retries a job that times out
    keep_result = 7 * 86400  # while kept, the same job cannot be enqueued again
    max_tries = 5


if __name__ == "__main__":
    logging.config.dictConfig(default_log_config(verbose=False))  # arq's job log lines
    run_worker(WorkerSettings, burst="--burst" in sys.argv[1:])
