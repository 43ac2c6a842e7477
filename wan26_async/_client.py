"""AsyncWanClient: short methods composing requests, the transport and the watch."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

import aiohttp

from ._config import (
    CREATE_PATH,
    CREDITS_PATH,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT,
    MAX_RESPONSE_BYTES,
    TASK_PATH,
    ClientConfig,
    PollPolicy,
    RetryPolicy,
    check_api_key,
    check_base_url,
)
from ._download import download
from ._encode import new_idempotency_key, request_body
from ._errors import ConfigurationError, TaskFailedError, ValidationError
from ._fanout import FanOut
from ._lifecycle import Lifecycle
from ._models import Credits, Task, TaskEvent, TaskStatus
from ._observe import NO_SPAN
from ._parse import parse_create_reply, parse_credits, parse_task
from ._planner import Watches
from ._ratelimit import InProcessRateLimiter, RateLimiter
from ._requests import VideoRequest, request_shape
from ._settings import CLOSED_UNDER, CallbackSource, ClientSettings, closed_error
from ._telemetry import load_telemetry
from ._transport import Transport
from ._urls import url_problem
from ._watch import watch_task

__all__ = ["AsyncWanClient"]

class AsyncWanClient(ClientSettings):
    """An async client of the Wan 2.6 video generation API.

    One client holds one connection pool, one limiter and one retry policy shared by
    every call made through it; create one per application and close it at the end:

        async with AsyncWanClient() as client:
            task = await client.generate(TextToVideo(prompt="a robot in the rain"))
            print(task.video_url)
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        max_retries: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        session: aiohttp.ClientSession | None = None,
        rate_limiter: RateLimiter | None = None,
        callbacks: CallbackSource | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
        resend_ambiguous_creates: bool = False,
        allow_insecure_http: bool = False,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        tracer_provider: object | None = None,
        meter_provider: object | None = None,
    ) -> None:
        """Check the settings; the connection pool is opened by the first call.

        - ``api_key``: the API key (``sk-...``); default ``$WAN_API_KEY``.
        - ``base_url``: the gateway; default ``$WAN_BASE_URL``, else
          ``https://api.aivideoapi.ai``.
        - ``max_concurrency``: requests in flight at once, across every call of the client.
        - ``max_retries``: how often one HTTP call is retried after a retryable failure
          (default 5); or ``retry``, a `RetryPolicy` that sets the backoff too (not both).
        - ``timeout``: seconds per HTTP call.
        - ``session``: an ``aiohttp.ClientSession`` to borrow; the client never closes it.
        - ``rate_limiter``: replaces the in-process limiter the client makes and owns,
          for example with ``wan26_async.redis.RedisRateLimiter`` to pace many processes
          that share one key.
        - ``callbacks``: a `CallbackReceiver`; creates carry its URL, and watches take the
          updates it receives instead of polling.
        - ``poll``: a `PollPolicy`, how watches poll.
        - ``resend_ambiguous_creates``: resend a create whose reply was lost, with the same
          ``Idempotency-Key`` (safe only on a gateway that honours the key).
        - ``allow_insecure_http``: allow a plain ``http://`` base URL to a host other than
          loopback (the key then travels unencrypted).
        - ``max_response_bytes``: the largest reply body read; a bigger one raises
          `MalformedResponseError`.
        - ``tracer_provider``, ``meter_provider``: OpenTelemetry providers (``otel`` extra)
          for this client's spans and metrics, instead of the global ones.

        Raises `ConfigurationError` for a missing or malformed key, an unsafe base URL, or
        a setting out of range.
        """
        key = check_api_key(api_key)
        url = check_base_url(base_url, allow_insecure_http)
        if not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ConfigurationError(f"max_concurrency must be >= 1, got {max_concurrency!r}")
        if timeout <= 0:
            raise ConfigurationError(f"timeout must be positive seconds, got {timeout!r}")
        if retry is None:
            retry = RetryPolicy(max_retries=DEFAULT_MAX_RETRIES if max_retries is None
                                else max_retries)
        elif max_retries is not None:
            raise ConfigurationError("pass max_retries or retry=RetryPolicy(...), not both")
        config = ClientConfig(base_url=url, max_concurrency=max_concurrency, timeout=timeout,
                              retry=retry, poll=poll or PollPolicy(),
                              resend_ambiguous_creates=resend_ambiguous_creates,
                              max_response_bytes=max_response_bytes)
        self._rate_limiter = rate_limiter or InProcessRateLimiter()
        self._owns_limiter = rate_limiter is None
        self.rate_limiter.bind(url, key)  # a shared limiter scopes its state by them
        self._callbacks = callbacks
        self._lifecycle = Lifecycle()
        self._view = False
        self._watches = Watches()  # what watches of the tasks it creates know
        self._transport = Transport(
            api_key=key,
            base_url=url,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retry=retry,
            limiter=self.rate_limiter,
            session=session,
            max_response_bytes=max_response_bytes,
            telemetry=load_telemetry(tracer_provider, meter_provider),
        )
        self._configure(config)

    def __repr__(self) -> str:
        return f"AsyncWanClient(base_url={self.base_url!r}, api_key=<hidden>)"

    async def __aenter__(self) -> AsyncWanClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection this client opened (not a borrowed session) and its
        views; every later call or watch raises `ClientClosedError`, and those waiting
        now end with it at once. Idempotent. On a view, closes only the view."""
        self._lifecycle.close()
        if self._view:
            return
        await self._transport.aclose()
        if self._owns_limiter:  # a limiter passed in may be shared: its owner closes it
            await self.rate_limiter.aclose()

    # -- calls ------------------------------------------------------------------------

    async def create_task(
        self,
        request: VideoRequest,
        *,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        resend_ambiguous: bool | None = None,
    ) -> Task:
        """Submit a generation and return the new task (status ``PENDING``).

        Credits (``request.estimated_credits``) are charged now and refunded if the task
        fails. ``callback_url`` asks the server to POST the result there.
        Every create carries an ``Idempotency-Key`` (``idempotency_key``, or a fresh one).

        Raises `ValidationError` before any I/O for a bad request or callback URL;
        `InsufficientCreditsError`, `SpendLimitError` and every other `APIError`; and,
        when the request was sent but no clear answer came back, an error that is also
        `AmbiguousSubmissionError` (the task may exist; it is not resent unless
        ``resend_ambiguous``/``resend_ambiguous_creates`` is set).
        """
        if not isinstance(request, VideoRequest):
            raise ValidationError("request", "must be a TextToVideo, ImageToVideo or "
                                  "ReferenceToVideo", value=request)
        callbacks = self._callbacks
        if callback_url is None and callbacks is not None:
            callback_url = callbacks.callback_url
        if callback_url is not None:
            _check_callback_url(callback_url, request.model)
        key = idempotency_key or new_idempotency_key()
        resend = (self._config.resend_ambiguous_creates if resend_ambiguous is None
                  else resend_ambiguous)
        # What `_open` does, inline (every create runs this): no guard object per call.
        life = self._lifecycle
        if life.closed:
            raise life.error()
        transport = self._transport
        tel = transport.telemetry
        span = NO_SPAN if tel is None else tel.call("wan.create_task", request=request)
        try:
            if span is NO_SPAN:  # nothing traces: no span to enter
                task_id, data = await transport.request(
                    "POST", CREATE_PATH, parse_create_reply,
                    body=request_body(request, callback_url), idempotency_key=key,
                    resend=resend, closed=life,
                )
            else:
                with span as current:
                    task_id, data = await transport.request(
                        "POST", CREATE_PATH, parse_create_reply,
                        body=request_body(request, callback_url), idempotency_key=key,
                        resend=resend, closed=life,
                    )
                    current.set_attribute("wan.task_id", task_id)
        except CLOSED_UNDER as exc:
            if life.closed:
                raise closed_error(life, key) from exc
            raise
        if callbacks is not None:
            callbacks._expect(task_id)
        task = Task(id=task_id, status=TaskStatus.PENDING, status_text="pending",
                    model=request.model, raw=data)
        self._watches.created(task, request_shape(request))
        return task

    async def get_task(self, task_id: str) -> Task:
        """The task as the server sees it now. Raises `TaskNotFoundError` for an unknown id."""
        tel = self._transport.telemetry
        if tel is None:
            return await self._poll(task_id)
        with tel.call("wan.get_task", task_id=task_id):
            return await self._poll(task_id)

    async def _poll(self, task_id: str) -> Task:
        # get_task without its span: a watch's polls are children of its own span.
        path = TASK_PATH + _task_path(task_id)
        with self._open():
            return await self._transport.request("GET", path, _task_parser(task_id),
                                                 closed=self._lifecycle)

    async def get_credits(self) -> Credits:
        """The account's credit balance."""
        tel = self._transport.telemetry
        with self._open(), NO_SPAN if tel is None else tel.call("wan.get_credits"):
            return await self._transport.request("GET", CREDITS_PATH, parse_credits,
                                                 closed=self._lifecycle)

    async def download(
        self,
        url: str,
        dest: str | os.PathLike[str],
        *,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> Path:
        """Download a result video to ``dest`` (a file path, or a directory to put it in)
        and return the file's path.

        The video is streamed to disk in chunks (memory stays flat), written to a
        temporary file beside ``dest`` and renamed on success, so a failure never leaves
        a half-written file. A dropped connection is resumed where it stopped (HTTP
        range) up to the retry policy's limit. ``progress(done, total)`` is called as
        bytes arrive (``total`` None when the host does not say). The API key is never
        sent to the video host.

            task = await client.generate(request)
            path = await client.download(task.video_url, "out.mp4")

        Raises `ValidationError` for a URL that is not http(s), `APIError` for an error
        reply of the host, `APIConnectionError` when the retries run out.
        """
        tel = self._transport.telemetry
        # a long call with backoffs of its own: all of it ends at once on closing
        with self._open(), self._lifecycle.interruptible(), \
                NO_SPAN if tel is None else tel.call("wan.download"):
            return await download(self._transport.session(), url, dest, retry=self.retry,
                                  timeout=self._download_timeout, progress=progress,
                                  telemetry=tel)

    # -- waiting ----------------------------------------------------------------------

    def watch(
        self, task_id: str, *, timeout: float | None = None, poll: PollPolicy | None = None
    ) -> AsyncIterator[TaskEvent]:
        """Yield a `TaskEvent` per status change of the task, the first at once, and stop
        after ``COMPLETED`` or ``FAILED``.

        Transient failures (connection errors, 5xx, 429, malformed replies) are retried
        inside the watch; `TaskNotFoundError` and auth errors are raised.
        ``timeout`` (seconds) raises `WatchTimeoutError` with the last seen task:

            async for event in client.watch(task.id, timeout=600):
                print(f"{event.elapsed:5.1f}s {event.previous} -> {event.status}")
        """
        _task_path(task_id)
        self._lifecycle.check()
        events = watch_task(task_id, self._poll, poll=poll or self.poll, timeout=timeout,
                            push=self.callbacks, plan=self._watches.plan(task_id),
                            closed=self._lifecycle)
        tel = self._transport.telemetry
        return events if tel is None or not tel.active() else tel.watch(task_id, events)

    async def wait(self, task_id: str, *, timeout: float | None = None,
                   poll: PollPolicy | None = None) -> Task:
        """Wait for the task to finish; return it when ``COMPLETED``.

        Raises `TaskFailedError` (with ``.task`` and ``.reason``) when it ``FAILED``,
        `WatchTimeoutError` when ``timeout`` passes first.
        """
        task: Task | None = None
        tel = self._transport.telemetry
        with NO_SPAN if tel is None else tel.call("wan.wait", task_id=task_id):
            async for event in self.watch(task_id, timeout=timeout, poll=poll):
                task = event.task
            assert task is not None  # a watch ends only after a terminal event
            if task.status is TaskStatus.FAILED:
                raise TaskFailedError(task)
            return task

    async def generate(
        self,
        request: VideoRequest,
        *,
        timeout: float | None = None,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
    ) -> Task:
        """Create a task and wait for it: `create_task` then `wait`.

        ``timeout`` bounds the wait (not the create). Raises as both do.
        """
        task = await self.create_task(request, callback_url=callback_url,
                                      idempotency_key=idempotency_key)
        return await self.wait(task.id, timeout=timeout)

    def fan_out(
        self,
        requests: Iterable[VideoRequest | Mapping[str, Any]],
        *,
        concurrency: int = 32,
        callback_url: str | None = None,
        ordered: bool = False,
        timeout: float | None = None,
        check_credits: bool = False,
    ) -> FanOut:
        """Run many generations at once; yield one `Outcome` per request as each finishes.

        At most ``concurrency`` generations run at a time. One failure does not stop the
        others; it is that outcome's ``error``. A 402 insufficient credits or a 429
        spend limit stops new submissions: the requests not yet submitted come back with
        a `NotSubmittedError`, and tasks already running are watched to the end.
        ``ordered=True`` yields the outcomes in input order instead. ``timeout`` bounds
        each task's wait. ``check_credits=True`` first compares the batch's
        ``estimated_credits`` with the balance and raises `InsufficientCreditsError`
        without submitting anything when it is short.

        Items may be request objects or create bodies (``{"model", "input"}``, with an
        optional ``callback_url``); an invalid body is that item's outcome.

            async for outcome in client.fan_out(requests, concurrency=32):
                print(outcome.index, outcome.task.video_url if outcome.ok else outcome.error)

        Leaving early never pays: leaving ``async with client.fan_out(...) as outcomes:``
        or ``await outcomes.aclose()`` cancels every request not yet submitted at once
        (see `FanOut`). Requests are taken from ``requests`` lazily, as slots free up;
        ``check_credits=True`` lists them all first, to price the whole batch.
        """
        self._lifecycle.check()
        return FanOut(self, requests, concurrency=concurrency, callback_url=callback_url,
                      ordered=ordered, timeout=timeout, check_credits=check_credits)


def _task_parser(task_id: str) -> Any:
    def parse(data: dict[str, Any], status: int, headers: Mapping[str, str]) -> Task:
        return parse_task(data, task_id)

    return parse


def _task_path(task_id: str) -> str:
    if not isinstance(task_id, str) or not task_id.strip():
        raise ValidationError("task_id", "must be a non-empty string", value=task_id)
    return quote(task_id, safe="")


def _check_callback_url(url: object, model: str) -> None:
    problem = url_problem(url)
    if problem is not None:
        raise ValidationError("callback_url", problem, model=model, value=url)
