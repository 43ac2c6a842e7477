"""The one place HTTP happens: auth, the limiter, retries, Retry-After, size caps, errors.

Every call of a client (create, get, credits, each poll of a watch) goes through
`Transport.request`. The rules it keeps:

* The API key is sent only to the base URL's origin; redirects are never followed.
* A GET is retried on connection errors, timeouts, 5xx, malformed replies and 429
  ``rate_limit_exceeded``.
* A create is resent only when the server certainly made no task: a 429
  ``rate_limit_exceeded``, or a connection that failed before the request was written.
  Any other failure after the request was written raises an error that is also an
  `AmbiguousSubmissionError`, unless the caller opted in to resending with the same
  ``Idempotency-Key``.
* 400, 401, 402, 403, 404 and 429 ``spend_limit_exceeded`` are never retried.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import aiohttp
from yarl import URL

from ._config import MAX_RESPONSE_BYTES, RetryPolicy
from ._decode import (
    decode_json,
    error_from_reply,
    parse_retry_after,
    redirect_error,
    too_large,
    unwrap_envelope,
)
from ._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    MalformedResponseError,
    RateLimitError,
    SpendLimitError,
    WanError,
    as_ambiguous,
)
from ._lifecycle import Lifecycle, unless_closed
from ._observe import Telemetry
from ._ratelimit import RateLimiter
from ._slots import Slots
from ._version import __version__

__all__ = ["Parser", "Transport"]

_log = logging.getLogger("wan26_async")
_T = TypeVar("_T")
#: Reads a reply's ``data`` (with its HTTP status and headers) into the call's result.
Parser = Callable[[dict[str, Any], int, Mapping[str, str]], _T]


class _Retry(Exception):
    """Internal: the attempt failed in a way that may be retried after ``delay``."""

    def __init__(
        self, error: WanError, delay: float | None = None, *, sent: bool = False,
        rate_limited: bool = False, sent_at: float | None = None,
    ) -> None:
        self.error = error
        self.sent_at = sent_at  # when the refused request left (loop time)
        self.delay = delay
        self.sent = sent  # the request reached the server: a create may have made a task
        self.rate_limited = rate_limited  # a 429: ``delay`` is its Retry-After, or None


class Transport:
    """Sends API calls for one client. Owns (or borrows) one aiohttp session."""

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str,
        timeout: float,
        max_concurrency: int,
        retry: RetryPolicy,
        limiter: RateLimiter,
        session: aiohttp.ClientSession | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.base_url = base_url
        self.telemetry = telemetry  # None: nothing records, the hot path skips it all
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": f"wan26-async/{__version__}",
        }
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_concurrency = max_concurrency
        self._slots = Slots(max_concurrency)
        self.retry = retry
        self.limiter = limiter
        self._session = session
        self._owns_session = session is None
        self._max_bytes = max_response_bytes
        self._closed = False
        self._urls: dict[str, URL] = {}
        self._parent: Transport | None = None  # set on a view: the session is the parent's

    # -- lifecycle --------------------------------------------------------------------

    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (made on first use). It carries no API key: the key is
        added per API request, so other hosts (downloads) never see it."""
        return self._get_session()

    def with_options(self, *, retry: RetryPolicy, timeout: float) -> Transport:
        """A transport for a client view: this one's session, slots, limiter and URLs,
        its own retry policy and timeout. It needs no closing (closing this one ends it)."""
        view = copy.copy(self)
        view.retry = retry
        view._timeout = aiohttp.ClientTimeout(total=timeout)
        view._parent = self if self._parent is None else self._parent
        return view

    def _get_session(self) -> aiohttp.ClientSession:
        if self._parent is not None:
            return self._parent._get_session()
        if self._closed:
            raise APIConnectionError("the client is closed; create a new AsyncWanClient")
        session = self._session
        if session is None:
            connector = aiohttp.TCPConnector(limit=self._max_concurrency, ttl_dns_cache=300)
            session = self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, trust_env=False
            )
        elif session.closed:
            raise APIConnectionError("the borrowed aiohttp session is closed")
        return session

    async def aclose(self) -> None:
        """Close the owned session (a borrowed one is left open). Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session and not session.closed:
            await session.close()
            await _settle_writers()

    def url(self, path: str) -> URL:
        """The absolute URL of an API path (cached for the fixed paths)."""
        url = self._urls.get(path)
        if url is None:
            url = URL(self.base_url + path, encoded=True)
            if len(self._urls) < 16:
                self._urls[path] = url
        return url

    # -- one call ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        parse: Parser[_T],
        *,
        body: bytes | None = None,
        idempotency_key: str | None = None,
        resend: bool = True,
        closed: Lifecycle | None = None,
    ) -> _T:
        """Send one API call, retrying as the rules above allow, and parse its ``data``.

        A call with an ``idempotency_key`` is a create: with ``resend`` False it is resent
        only where no task can exist, and a failure after it was sent raises an error
        that is also an `AmbiguousSubmissionError`. With ``closed`` (the calling client's
        lifecycle), every wait of the call (a free slot, the limiter, a retry's backoff)
        ends at once with `ClientClosedError` when the client closes; the hot path, a
        free slot and an open limiter, enters no scope at all.
        """
        url = self._urls.get(path) or self.url(path)
        headers = self._headers
        if idempotency_key is not None:
            headers = {**headers, "Idempotency-Key": idempotency_key}
        session = self._get_session()
        loop = asyncio.get_running_loop()
        slots = self._slots
        limiter = self.limiter
        tel = self.telemetry
        if tel is not None and not tel.active():
            tel = None
        attempt = 0
        while True:
            # The hot path: no coroutine is made for a free slot or an open limiter.
            if not slots.try_take():
                await unless_closed(closed, slots.wait, idempotency_key is not None)
            try:
                waited = 0.0
                if not limiter.try_acquire():
                    waited = loop.time()
                    await unless_closed(closed, limiter.acquire)
                    waited = loop.time() - waited
                sent_at = loop.time()
                started = time.monotonic() if _log.isEnabledFor(logging.DEBUG) else 0.0
                span, send_headers = (None, headers) if tel is None else tel.attempt(
                    method, url, headers, attempt, waited=waited)
                status = 0  # no reply yet
                failure: BaseException | None = None  # what ended the attempt
                try:
                    async with session.request(
                        method, url, data=body, headers=send_headers, allow_redirects=False,
                        timeout=self._timeout,
                    ) as resp:
                        status = resp.status
                        reply_headers = resp.headers
                        # A reply of a known length under the cap is read whole here
                        # (one coroutine less per call); any other is read in chunks.
                        length = resp.content_length
                        if length is not None and length <= self._max_bytes and \
                                "Content-Encoding" not in reply_headers:
                            raw, cut = await resp.read(), False
                        else:
                            raw, cut = await self._read_capped(resp)
                    if started:
                        _log.debug("%s %s -> %d in %.3f s", method, path, status,
                                   time.monotonic() - started, extra={
                                       "wan_method": method, "wan_path": path,
                                       "wan_http_status": status, "wan_attempt": attempt})
                    return self._handle(status, reply_headers, raw, cut, parse,
                                        idempotency_key, resend, sent_at)
                except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
                    failure = exc
                    self._failed(exc, idempotency_key, resend)
                except BaseException as exc:  # for the span
                    failure = exc.error if isinstance(exc, _Retry) else exc
                    raise
                finally:
                    limiter.release()
                    if span is not None:
                        span.end(status, failure)
            except _Retry as retry:
                err = retry.error
                if retry.rate_limited:
                    await unless_closed(closed, limiter.on_rate_limited, retry.delay,
                                               retry.sent_at)
                if attempt >= self.retry.max_retries:
                    if retry.sent and idempotency_key is not None:
                        raise as_ambiguous(err, idempotency_key) from err.__cause__
                    raise err from err.__cause__
                delay = self.retry.backoff(attempt) if retry.delay is None else retry.delay
                if retry.rate_limited:
                    delay = 0.0  # the limiter's gate does the waiting
                attempt += 1
                if _log.isEnabledFor(logging.DEBUG):
                    _log.debug("%s %s: retry %d in %.2f s after %s", method, path, attempt,
                               delay, type(err).__name__, extra={
                                   "wan_method": method, "wan_path": path,
                                   "wan_attempt": attempt, "wan_delay": delay,
                                   "wan_error": type(err).__name__})
            finally:
                slots.give()
            if delay > 0:
                await unless_closed(closed, asyncio.sleep, delay)

    def _failed(self, exc: BaseException, key: str | None, resend: bool) -> NoReturn:
        """No reply: map the aiohttp failure, retrying only what the rules allow."""
        if isinstance(exc, aiohttp.ClientSSLError | aiohttp.ClientConnectorCertificateError):
            raise APIConnectionError(
                f"TLS failed for {self.base_url}: {exc} (certificates are always verified)"
            ) from exc
        if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ClientConnectorError):
            # The connection was never made: nothing was sent, so any call may retry.
            raise _Retry(_connection_error(exc, self.base_url)) from exc
        err: WanError
        if isinstance(exc, asyncio.TimeoutError):
            err = APITimeoutError(f"no reply from {self.base_url} within "
                                  f"{self._timeout.total:g} s")
        else:
            err = _connection_error(exc, self.base_url)
        err.__cause__ = exc
        _after_send(err, key, resend)

    def _handle(
        self,
        status: int,
        reply_headers: Mapping[str, str],
        raw: bytes,
        cut: bool,
        parse: Parser[_T],
        key: str | None,
        resend: bool,
        sent_at: float,
    ) -> _T:
        if 200 <= status < 300:
            self.limiter.on_success(sent_at)
            if cut:  # a success we cannot read: for a create, the task may exist
                _after_send(too_large(status, reply_headers, self._max_bytes), key, resend)
            try:
                data = unwrap_envelope(decode_json(raw, status, reply_headers), status,
                                       reply_headers)
                return parse(data, status, reply_headers)
            except MalformedResponseError as err:
                _after_send(err, key, resend)
            except APIError as err:
                # An error envelope inside an HTTP 2xx: treat it like the status it names.
                self._error(err, key, resend, sent_at)
        if 300 <= status < 400:
            raise redirect_error(status, reply_headers)
        retry_after = parse_retry_after(reply_headers.get("Retry-After"))
        self._error(error_from_reply(status, raw, reply_headers, retry_after=retry_after),
                    key, resend, sent_at)

    def _error(self, err: APIError, key: str | None, resend: bool,
               sent_at: float | None = None) -> NoReturn:
        if isinstance(err, RateLimitError):
            retry_after = err.retry_after
            if retry_after is not None and retry_after > self.retry.max_retry_after:
                raise err
            # resent whatever the call: a 429 made nothing (the limiter pauses first)
            raise _Retry(err, retry_after, rate_limited=True, sent_at=sent_at)
        self.limiter.on_success(sent_at)
        if isinstance(err, SpendLimitError) or not (err.status_code >= 500
                                                    or err.status_code == 408):
            raise err
        delay = parse_retry_after(err.headers.get("Retry-After"))
        if delay is not None and delay > self.retry.max_retry_after:
            resend = False  # not slept on: raised (marked ambiguous for a create)
        _after_send(err, key, resend, delay)

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> tuple[bytes, bool]:
        """The body of a reply of no or too large a stated length (or compressed), read
        up to the size cap, and whether it was cut there."""
        cap = self._max_bytes
        chunks: list[bytes] = []
        total = 0
        async for chunk in resp.content.iter_any():
            chunks.append(chunk)
            total += len(chunk)
            if total > cap:  # stop reading: the connection is dropped, not drained
                return b"".join(chunks)[:cap], True
        return b"".join(chunks), False


def _connection_error(exc: BaseException, base_url: str) -> APIConnectionError:
    detail = str(exc) or type(exc).__name__
    return APIConnectionError(f"connection to {base_url} failed: {detail}")


def _after_send(
    err: WanError, key: str | None, resend: bool, delay: float | None = None
) -> NoReturn:
    """A failure after the request was written: retry it when allowed, else raise it,
    marked ambiguous for a create (``key`` set) since the server may have made a task."""
    if resend:
        raise _Retry(err, delay, sent=True) from err.__cause__
    if key is not None:
        raise as_ambiguous(err, key) from err.__cause__
    raise err


async def _settle_writers(rounds: int = 20) -> None:
    """Let aiohttp's request-body writers that closing the session cancelled run out, so
    that nothing the client started is still pending when `aclose` returns (a cancelled
    task needs a turn of the loop to end; aiohttp's docs suggest a ``sleep(0)``)."""
    for _ in range(rounds):
        if not any(getattr(t.get_coro(), "__qualname__", "") == "ClientRequest.write_bytes"
                   for t in asyncio.all_tasks() if not t.done()):
            return
        await asyncio.sleep(0)
