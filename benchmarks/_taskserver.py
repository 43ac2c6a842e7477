"""A fast, stateless task server for watch benchmarks: the task id is the task.

A create answers an id that carries the task's whole timeline,
``t-<created_ms>-<pending_ms>-<total_ms>-<n>`` (wall-clock milliseconds of the
creation, then how long it is pending and how long until it is done, both counted from
the creation), and a query computes the status from the id and the clock. Nothing is
stored per task, so 20,000 watches cost this server no more than 20 (it never
saturates before the client it measures). Raw asyncio (one `asyncio.Protocol` per
connection, HTTP/1.1 keep-alive, no framework), in its own process; it prints
``PORT <n>`` once it listens::

    python -m benchmarks._taskserver [--port 0] [--pending-seconds 1] [--time-scale 1]

Routes (replies in the emulator's shapes, see docs/wire-format.md):

    POST /v1/videos/generations   {"code":200,"msg":"success","data":{"taskId":"t-..."}}
    GET  /v1/tasks/{id}           pending -> processing -> completed (with a video URL);
                                  updatedAt is when the status began (completion, at the end)
    GET  /v1/credits              a fixed balance
    GET  /stats                   {"creates", "polls", "requests", "cpu_seconds"} so far
                                  (not counted itself)

``/v1/videos/tasks/{id}`` is answered like ``/v1/tasks/{id}``. Processing lasts
``duration x 4`` s at 1080p and ``duration x 2.5`` s at 720p (as the emulator's
default), or ``--processing-seconds``; ``--time-scale`` multiplies both times. No
auth check and no validation: it is for measuring a client, not for testing one.

`start_server` / `stop_server` / `task_server` run it from a benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import NamedTuple

try:  # python -m benchmarks._taskserver, or imported as benchmarks._taskserver
    from benchmarks._fastserver import spawn, stop_server
except ModuleNotFoundError:  # imported with benchmarks/ on the path
    from _fastserver import spawn, stop_server  # type: ignore[no-redef,import-not-found]

__all__ = ["API_KEY", "Timeline", "decode_task_id", "start_server", "stop_server",
           "task_id", "task_server"]

#: Any key is accepted; the SDK wants one that looks real.
API_KEY = "sk-bench-0123456789abcdef"
MODEL = "wan-2.6-text-to-video"
_CREATE = b"/v1/videos/generations"
_TASK_PREFIXES = (b"/v1/tasks/", b"/v1/videos/tasks/")


class Timeline(NamedTuple):
    """A task's timeline, in wall-clock milliseconds since the epoch."""

    created_ms: int
    pending_until_ms: int
    done_ms: int

    def status(self, now_ms: int) -> str:
        if now_ms < self.pending_until_ms:
            return "pending"
        return "processing" if now_ms < self.done_ms else "completed"


def task_id(created_ms: int, pending_ms: int, total_ms: int, n: int) -> str:
    """The id of a task created at ``created_ms``, pending for ``pending_ms`` and done
    ``total_ms`` after its creation (the ``n``-th made by the server, for uniqueness)."""
    return f"t-{created_ms}-{pending_ms}-{total_ms}-{n}"


def decode_task_id(tid: str) -> Timeline | None:
    """The timeline a `task_id` carries, or None for an id this server did not make."""
    parts = tid.split("-")
    if len(parts) != 5 or parts[0] != "t":
        return None
    try:
        created, pending, total = int(parts[1]), int(parts[2]), int(parts[3])
    except ValueError:
        return None
    return Timeline(created, created + pending, created + max(total, pending))


def _iso(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _reply(status: bytes, body: bytes) -> bytes:
    return (b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def _error(status: bytes, code: str, message: str, kind: str) -> bytes:
    return _reply(status, json.dumps({"error": {"code": code, "message": message,
                                                "type": kind}}).encode())


class TaskServer:
    """What the server answers, separate from the sockets (one per process)."""

    def __init__(self, *, pending_seconds: float, processing_seconds: float | None,
                 time_scale: float, base_url: str = "") -> None:
        self.pending_ms = round(pending_seconds * time_scale * 1000)
        self.processing_seconds = processing_seconds
        self.time_scale = time_scale
        self.base_url = base_url
        self.creates = self.polls = self.requests = 0

    def handle(self, method: bytes, target: bytes, body: bytes) -> bytes:
        path = target.split(b"?", 1)[0]
        if path == b"/stats":
            return _reply(b"200 OK", json.dumps({
                "creates": self.creates, "polls": self.polls, "requests": self.requests,
                "cpu_seconds": time.process_time()}).encode())
        self.requests += 1
        if method == b"POST" and path == _CREATE:
            return self._create(body)
        if method == b"GET":
            for prefix in _TASK_PREFIXES:
                if path.startswith(prefix):
                    self.polls += 1
                    return self._query(path[len(prefix):].decode("latin-1"))
            if path == b"/v1/credits":
                return _reply(b"200 OK", b'{"code":200,"msg":"success","data":'
                              b'{"balance":1000000000}}')
        return _error(b"404 Not Found", "not_found", f"No route for {path!r}.",
                      "invalid_request_error")

    def _create(self, body: bytes) -> bytes:
        try:
            payload = json.loads(body)
            params = payload.get("input") or {}
            resolution = params.get("resolution") or "1080p"
            duration = float(params.get("duration") or 5)
        except (ValueError, AttributeError, TypeError):
            return _error(b"400 Bad Request", "invalid_request", "The body must be a JSON "
                          "create request.", "invalid_request_error")
        if self.processing_seconds is not None:
            processing = self.processing_seconds
        else:
            processing = duration * (4.0 if resolution == "1080p" else 2.5)
        self.creates += 1
        total_ms = self.pending_ms + round(processing * self.time_scale * 1000)
        tid = task_id(int(time.time() * 1000), self.pending_ms, total_ms, self.creates)
        return _reply(b"200 OK", b'{"code":200,"msg":"success","data":{"taskId":"'
                      + tid.encode() + b'"}}')

    def _query(self, tid: str) -> bytes:
        timeline = decode_task_id(tid)
        if timeline is None:
            return _error(b"404 Not Found", "task_not_found", f"Task {tid!r} does not exist.",
                          "invalid_request_error")
        now = int(time.time() * 1000)
        status = timeline.status(now)
        data: dict[str, object] = {"taskId": tid, "model": MODEL, "status": status}
        if status == "pending":
            data["progress"], updated = 0, timeline.created_ms
        elif status == "processing":
            span = max(1, timeline.done_ms - timeline.pending_until_ms)
            data["progress"] = min(99, 100 * (now - timeline.pending_until_ms) // span)
            updated = timeline.pending_until_ms
        else:
            data["progress"], updated = 100, timeline.done_ms
            data["output"] = {"video_url": f"{self.base_url}/videos/{tid}.mp4"}
        data["createdAt"] = _iso(timeline.created_ms)
        data["updatedAt"] = _iso(updated)
        return _reply(b"200 OK", json.dumps({"code": 200, "msg": "success", "data": data},
                                            separators=(",", ":")).encode())


class _Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and Content-Length bodies (what aiohttp sends)."""

    def __init__(self, server: TaskServer) -> None:
        self._server = server
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self._buffer + data if self._buffer else data
        replies: list[bytes] = []
        close = False
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                break
            head = buf[:end]
            lower = head.lower()
            line_end = head.find(b"\r\n")
            method, _, rest = (head if line_end < 0 else head[:line_end]).partition(b" ")
            target = rest.rpartition(b" ")[0]
            length = 0
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(head[at + 17:stop if stop >= 0 else None])
            if b"\r\ntransfer-encoding:" in lower:  # not sent by the SDK: refuse plainly
                replies.append(_error(b"411 Length Required", "invalid_request",
                                      "Send a Content-Length.", "invalid_request_error"))
                close, buf = True, b""
                break
            if len(buf) < end + 4 + length:
                break
            body = buf[end + 4:end + 4 + length]
            buf = buf[end + 4 + length:]
            replies.append(self._server.handle(method, target, body))
            if b"\r\nconnection: close" in lower:
                close, buf = True, b""
                break
        self._buffer = buf
        transport = self._transport
        if transport is not None:
            if replies:
                transport.write(b"".join(replies))
            if close:
                transport.close()


async def _serve(port: int, server: TaskServer) -> None:
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: _Connection(server), "127.0.0.1", port,
                                        backlog=4096)
    bound = listener.sockets[0].getsockname()[1]
    server.base_url = f"http://127.0.0.1:{bound}"
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        listener.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--pending-seconds", type=float, default=1.0)
    parser.add_argument("--processing-seconds", type=float, default=None,
                        help="fixed (default: duration x 4 at 1080p, x 2.5 at 720p)")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiplies the pending and processing times")
    args = parser.parse_args(argv)
    server = TaskServer(pending_seconds=args.pending_seconds,
                        processing_seconds=args.processing_seconds, time_scale=args.time_scale)
    asyncio.run(_serve(args.port, server))


def start_server(*options: str) -> tuple[subprocess.Popen[str], int]:
    """Start the server (with command-line ``options``) in a child process; return it
    and the port it listens on."""
    return spawn("benchmarks._taskserver", *options)


@contextlib.contextmanager
def task_server(*options: str) -> Iterator[tuple[str, str]]:
    """Run the server in another process; yield (base_url, api_key)."""
    proc, port = start_server(*options)
    try:
        yield f"http://127.0.0.1:{port}", API_KEY
    finally:
        stop_server(proc)


if __name__ == "__main__":
    main()
