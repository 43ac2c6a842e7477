"""One generation as a job that pays once, however often the queue delivers it.

Celery's ``acks_late`` delivers a job again when its worker dies mid-job; this module
makes that safe. Before creating, a job records in Redis that its create is starting
(``SET NX``: one run wins), and after the create the task id. A run that finds a task
id watches that task instead of creating one; a run that finds a create started and
no task id (the worker died mid-create, so a task may or may not exist) reports the job
``"ambiguous"`` and sends nothing, unless ``resend_ambiguous`` is set: then it resends
with the same ``Idempotency-Key``, the job id, and the gateway answers with the task it
already made, if it made one.

Nothing here imports Celery: `run_job` takes a `wan.WanClient` and a `JobStore`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from datetime import datetime, timezone
from typing import Any

import redis

import wan26_async as wan

__all__ = ["JobStore", "job_id", "run_job"]

#: How long a job's record (and the mark that it is queued) is kept: while kept, the
#: same request is neither enqueued nor created again.
DEFAULT_TTL = 7 * 86400


def job_id(request: wan.VideoRequest) -> str:
    """The id of the job of ``request``: ``"wan-"`` + SHA-256 of its canonical payload.

    The same request always gets the same id; to generate one prompt twice on purpose,
    make the requests differ (a ``seed``, for example)."""
    canonical = json.dumps(request.to_payload(), sort_keys=True, separators=(",", ":"))
    return "wan-" + hashlib.sha256(canonical.encode()).hexdigest()


class JobStore:
    """What the fleet knows of each job, in Redis, under ``prefix``.

    ``{prefix}:job:{id}`` is the job's record, a JSON object: ``"state"`` is
    ``"creating"`` (a run started the create) or ``"created"`` (with ``"task_id"``), and
    ``"host"``, ``"pid"``, ``"at"`` say which run wrote it and when.
    ``{prefix}:queued:{id}`` marks a job that is queued, running or done.
    """

    def __init__(self, client: redis.Redis, *, prefix: str, ttl: int = DEFAULT_TTL) -> None:
        self.redis = client
        self.prefix = prefix
        self.ttl = ttl

    @classmethod
    def from_url(cls, url: str, *, prefix: str, ttl: int = DEFAULT_TTL) -> JobStore:
        return cls(redis.Redis.from_url(url, decode_responses=True), prefix=prefix, ttl=ttl)

    def _key(self, kind: str, jid: str) -> str:
        return f"{self.prefix}:{kind}:{jid}"

    def mark_queued(self, jid: str) -> bool:
        """Mark the job queued; False if it already is (queued, running or done)."""
        return bool(self.redis.set(self._key("queued", jid), _now(), nx=True, ex=self.ttl))

    def unmark_queued(self, jid: str) -> None:
        """Let the job be enqueued again (its record, if any, stays)."""
        self.redis.delete(self._key("queued", jid))

    def claim(self, jid: str) -> dict[str, Any] | None:
        """Record that this run starts the job's create, atomically: None when this run
        did, else the record another run wrote first."""
        key, mine = self._key("job", jid), _record("creating")
        while True:
            if self.redis.set(key, json.dumps(mine), nx=True, ex=self.ttl):
                return None
            theirs = self.get(jid)
            if theirs is not None:  # else it expired between the two calls: try again
                return theirs

    def created(self, jid: str, task_id: str) -> None:
        """Record the task the job's create made."""
        record = _record("created", task_id=task_id)
        self.redis.set(self._key("job", jid), json.dumps(record), ex=self.ttl)

    def get(self, jid: str) -> dict[str, Any] | None:
        text = self.redis.get(self._key("job", jid))
        return None if text is None else dict(json.loads(str(text)))

    def release(self, jid: str) -> None:
        """Forget the job: its create made no task, so it may be enqueued and made anew."""
        self.redis.delete(self._key("job", jid), self._key("queued", jid))


def run_job(
    client: wan.WanClient,
    store: JobStore,
    payload: dict[str, Any],
    *,
    resend_ambiguous: bool = False,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Generate ``payload`` (``{"model": ..., "input": {...}}``) once, and return the
    job's result as a plain dict: ``job_id``, ``status`` (``"completed"``, ``"failed"``,
    ``"refused"``, ``"ambiguous"``, ``"timeout"`` or ``"invalid"``), ``task_id``,
    ``video_url`` and ``error``.

    A failed generation, a refused create and an ambiguous one are results, not errors
    to retry. An error that is none of these (the task vanished, no connection to the
    gateway before anything was sent) is raised; the job then made no second task."""
    try:
        request = wan.request_from_dict(payload)  # checked: a misspelled key is refused
    except wan.ValidationError as exc:
        return _result(None, "invalid", error=str(exc))
    jid = job_id(request)
    record = store.claim(jid)
    if record is not None and record.get("task_id"):
        task_id = str(record["task_id"])  # an earlier run made it: watch it, pay nothing
    elif record is not None and not resend_ambiguous:
        store.unmark_queued(jid)  # enqueue it again, with the opt-in, to resend it
        return _ambiguous(jid, record, "a run of this job started its create and stopped "
                          "before it recorded the task (its worker died?)")
    else:  # this run claimed the create, or resends an ambiguous one under the same key
        try:
            task = client.create_task(request, idempotency_key=jid,
                                      resend_ambiguous=resend_ambiguous)
        except wan.AmbiguousSubmissionError as exc:
            store.unmark_queued(jid)
            return _ambiguous(jid, store.get(jid), str(exc))
        except wan.APIError as exc:  # refused (no credits, a bad request): no task made
            store.release(jid)
            return _result(jid, "refused", error=str(exc))
        except wan.WanError:  # nothing was sent (not ambiguous): no task was made
            store.release(jid)
            raise
        store.created(jid, task.id)
        task_id = task.id
    try:
        task = client.wait(task_id, timeout=timeout)
    except wan.TaskFailedError as exc:  # a result (credits refunded), not a retry
        task = exc.task
    except wan.WatchTimeoutError as exc:
        store.unmark_queued(jid)  # enqueue it again to watch on
        return _result(jid, "timeout", task_id=task_id, error=str(exc))
    return _result(jid, task.status.value, task_id=task.id, video_url=task.video_url,
                   error=task.error)


def _result(jid: str | None, status: str, *, task_id: str | None = None,
            video_url: str | None = None, error: str | None = None) -> dict[str, Any]:
    return {"job_id": jid, "status": status, "task_id": task_id, "video_url": video_url,
            "error": error}


def _ambiguous(jid: str, record: dict[str, Any] | None, why: str) -> dict[str, Any]:
    result = _result(jid, "ambiguous", error=(
        f"{why}; a task may exist and be charged. Not resent: to resend it with the "
        f"same Idempotency-Key ({jid}), set WAN_RESEND_AMBIGUOUS=1 on the workers and "
        f"enqueue it again"))
    result["create_started"] = {k: record[k] for k in ("host", "pid", "at")
                                if record and k in record}
    return result


def _record(state: str, **fields: Any) -> dict[str, Any]:
    return {"state": state, **fields, "host": socket.gethostname(), "pid": os.getpid(),
            "at": _now()}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")
