"""CallbackReceiver: the server pushes task updates instead of the client polling.

The callback body is not in the spec; it is assumed to look like the task-query reply
(the ``{"code", "msg", "data"}`` envelope or a bare task object) and is parsed by the
same tolerant code. A callback is accepted only with the secret token of the URL that
was handed out, for a task this receiver was told to expect, within a size cap; any
other POST gets a 4xx and changes nothing. Duplicates and stale callbacks are
acknowledged and ignored: a task's status never moves backwards.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from collections import OrderedDict
from types import TracebackType

from aiohttp import web
from yarl import URL

from ._config import PollPolicy
from ._decode import unwrap_envelope
from ._errors import ConfigurationError, WanError
from ._lifecycle import ClosedSignal, Wakers, nap, wake
from ._models import Task, TaskStatus
from ._parse import parse_task

__all__ = ["CallbackReceiver", "DEFAULT_SAFETY_POLL", "MAX_CALLBACK_BYTES"]

_log = logging.getLogger("wan26_async")

#: Largest callback body accepted (a task reply is well under a kilobyte).
MAX_CALLBACK_BYTES = 64 * 1024
#: How many finished tasks are remembered, to acknowledge their late duplicates.
_FINISHED_MEMORY = 100_000
#: The safety-net polling of a pushed watch: a lost callback still ends it, later.
DEFAULT_SAFETY_POLL = PollPolicy(initial=30.0, multiplier=2.0, max_interval=120.0, jitter=0.1,
                                 learn=False)


class CallbackReceiver:
    """Receives the gateway's task callbacks so watches need not poll.

    Run on its own small aiohttp server:

        receiver = wan.CallbackReceiver(public_url="https://hooks.example.com/wan", port=8080)
        async with receiver, wan.AsyncWanClient(callbacks=receiver) as client:
            task = await client.create_task(request)   # callback_url filled in
            async for event in client.watch(task.id):  # pushed events
                ...

    or mounted into an existing aiohttp application with `attach` (then give
    ``public_url``, the address the gateway reaches that route at).

    ``url`` is where it listens (no token); ``callback_url`` is the URL handed to the
    gateway, ``public_url`` (or ``url``) with the secret token as a query parameter.
    ``safety_poll`` is how pushed watches still poll now and then.
    """

    def __init__(
        self,
        public_url: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        path: str = "/wan26/callback",
        token: str | None = None,
        max_body_bytes: int = MAX_CALLBACK_BYTES,
        safety_poll: PollPolicy = DEFAULT_SAFETY_POLL,
    ) -> None:
        if public_url is not None and URL(public_url).scheme not in ("http", "https"):
            raise ConfigurationError(f"public_url must be an http(s) URL, got {public_url!r}")
        if not path.startswith("/"):
            raise ConfigurationError(f"path must start with '/', got {path!r}")
        self.public_url = public_url
        self.host = host
        self.port = port
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.safety_poll = safety_poll
        self._token = token or secrets.token_urlsafe(24)
        self._runner: web.AppRunner | None = None
        self._attached = False
        self._expected: set[str] = set()
        self._latest: dict[str, Task] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._changed: dict[str, Wakers] = {}  # the watches waiting for a push
        self.received = 0  # callbacks accepted (duplicates included)
        self.rejected = 0  # callbacks refused with a 4xx

    def __repr__(self) -> str:
        running = self._runner is not None or self._attached
        where = self.url if running else f"{self.host}:{self.port}{self.path} (not running)"
        return f"CallbackReceiver({where}, public_url={self.public_url!r})"

    # -- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """Where the receiver listens, without the token (after `start`)."""
        if self._runner is None and not self._attached:
            raise RuntimeError("the receiver is not started: use 'async with receiver'")
        return f"http://{_host_for_url(self.host)}:{self.port}{self.path}"

    @property
    def callback_url(self) -> str:
        """The URL to hand to the gateway: the public URL with the secret token."""
        if self.public_url is None and self._attached:
            raise ConfigurationError("an attached receiver needs public_url=...")
        base = URL(self.public_url or self.url)
        return str(base.update_query(token=self._token))

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Start the receiver's own server on ``host``:``port``."""
        if self._runner is not None:
            return
        app = web.Application(client_max_size=self.max_body_bytes)
        self.attach(app, path=self.path)
        self._attached = False
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        server = site._server
        if self.port == 0 and server is not None:
            sockets = getattr(server, "sockets", None) or []
            self.port = sockets[0].getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop the receiver's server. Idempotent."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> CallbackReceiver:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def attach(self, app: web.Application, *, path: str | None = None) -> None:
        """Mount the receiver's route (POST ``path``) into an existing aiohttp app."""
        if path is not None:
            self.path = path
        app.router.add_post(self.path, self._handle)
        self._attached = True

    # -- what watches use ----------------------------------------------------------------

    def _expect(self, task_id: str) -> None:
        # Accept callbacks for ``task_id`` (the client calls this after each create).
        if task_id not in self._finished:
            self._expected.add(task_id)

    def _pushed(self, task_id: str) -> Task | None:
        # The task as last pushed, or None.
        return self._latest.get(task_id)

    async def _wait_pushed(self, task_id: str, timeout: float,
                           closed: ClosedSignal | None = None) -> Task | None:
        # Wait up to ``timeout`` seconds for a pushed update of ``task_id`` (None: none
        # came); closing ``closed`` ends it at once (ClientClosedError).
        waiting = self._changed.get(task_id)
        if waiting is None:
            waiting = self._changed[task_id] = set()
        pushed = await nap(closed, timeout, waiting)
        return self._latest.get(task_id) if pushed else None

    def _forget(self, task_id: str) -> None:
        # Drop what is held for a task whose watch has ended.
        self._changed.pop(task_id, None)
        task = self._latest.pop(task_id, None)
        if task is not None and task.done:
            self._finish(task_id)

    def _finish(self, task_id: str) -> None:
        self._expected.discard(task_id)
        self._finished[task_id] = None
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)

    # -- the route -------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.query.get("token", "")
        if not hmac.compare_digest(token.encode(), self._token.encode()):
            return self._refuse(403, "missing or wrong token")
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            return self._refuse(413, "body too large")
        body = await request.content.read(self.max_body_bytes + 1)
        if len(body) > self.max_body_bytes:
            return self._refuse(413, "body too large")
        try:
            task = parse_task(unwrap_envelope(json.loads(body), 200, {}))
        except (ValueError, UnicodeDecodeError, WanError):
            return self._refuse(400, "malformed callback body")
        if task.id in self._finished:
            self.received += 1
            return web.json_response({"ok": True, "ignored": "already finished"})
        if task.id not in self._expected:
            return self._refuse(404, "unknown task")
        self.received += 1
        self._push(task)
        return web.json_response({"ok": True})

    def _push(self, task: Task) -> None:
        if task.status is TaskStatus.UNKNOWN:
            return
        current = self._latest.get(task.id)
        if current is not None and task.status.rank <= current.status.rank:
            return  # a duplicate or a stale callback: never move backwards
        self._latest[task.id] = task
        waiting = self._changed.get(task.id)
        if waiting:
            wake(waiting)

    def _refuse(self, status: int, why: str) -> web.Response:
        self.rejected += 1
        _log.warning("callback refused (%d): %s", status, why,
                     extra={"wan_http_status": status, "wan_error": why})
        return web.json_response({"error": why}, status=status)


def _host_for_url(host: str) -> str:
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
