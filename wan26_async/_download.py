"""Downloading a result video: streamed to disk, resumed on a dropped connection.

The API key is never sent with a download: the video host is not the API. The file
is written to a temporary file beside the destination and renamed only once it is
complete, so a failure never leaves a half-written video under the final name.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp
from yarl import URL

from ._config import RetryPolicy
from ._decode import request_id_of
from ._errors import APIConnectionError, APIError, ValidationError
from ._observe import Telemetry, redact_url

__all__ = ["CHUNK", "Progress", "download"]

_log = logging.getLogger("wan26_async")

CHUNK = 256 * 1024
#: Called with (bytes written so far, total bytes or None when the server did not say).
Progress = Callable[[int, int | None], None]


def _target(url: str, dest: str | os.PathLike[str]) -> Path:
    path = Path(dest)
    if path.is_dir():
        name = Path(unquote(urlsplit(url).path)).name or "video.mp4"
        path = path / name
    return path


async def download(
    session: aiohttp.ClientSession,
    url: str,
    dest: str | os.PathLike[str],
    *,
    retry: RetryPolicy,
    timeout: aiohttp.ClientTimeout,
    progress: Progress | None = None,
    telemetry: Telemetry | None = None,
) -> Path:
    """See `AsyncWanClient.download`. With ``telemetry``, each attempt is a CLIENT span
    (no trace context is sent: the video host is not the API)."""
    if not isinstance(url, str) or urlsplit(url).scheme.lower() not in ("http", "https"):
        raise ValidationError("url", "must be the http(s) video URL of a completed task",
                              value=url)
    path = _target(url, dest)
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    done = 0
    total: int | None = None
    attempt = 0
    tel = telemetry if telemetry is not None and telemetry.active() else None
    try:
        with part.open("wb") as out:
            while True:
                headers = {"Range": f"bytes={done}-"} if done else {}
                span = None if tel is None else tel.attempt(
                    "GET", URL(url), headers, attempt, propagate_context=False)[0]
                status = 0
                try:
                    async with session.get(url, headers=headers, timeout=timeout,
                                           allow_redirects=True) as resp:
                        status = resp.status
                        if resp.status == 200 and done:
                            out.seek(0)  # the server ignored the range: start over
                            out.truncate()
                            done = 0
                        elif resp.status not in (200, 206):
                            raise APIError(
                                f"download of {url} failed with HTTP {resp.status}",
                                status_code=resp.status, request_id=request_id_of(resp.headers),
                                headers=resp.headers,
                            )
                        if resp.content_length is not None:
                            total = done + resp.content_length
                        async for chunk in resp.content.iter_chunked(CHUNK):
                            out.write(chunk)
                            done += len(chunk)
                            if progress is not None:
                                progress(done, total)
                    if total is not None and done < total:
                        raise aiohttp.ClientPayloadError(f"got {done} of {total} bytes")
                    if span is not None:
                        span.end(status, None)
                    break
                except BaseException as exc:
                    if span is not None:
                        span.end(status, exc)
                    if not isinstance(exc, aiohttp.ClientError) and (
                            isinstance(exc, OSError) or not isinstance(exc, asyncio.TimeoutError)):
                        raise  # a local disk error (retrying will not help), an HTTP error
                    if attempt >= retry.max_retries:
                        raise APIConnectionError(
                            f"download of {url} failed after {attempt + 1} attempts at "
                            f"{done} bytes: {exc or type(exc).__name__}") from exc
                    attempt += 1
                    _log.debug("download %s: resuming at %d bytes after %s", redact_url(url),
                               done, type(exc).__name__, extra={
                                   "wan_attempt": attempt, "wan_bytes": done,
                                   "wan_error": type(exc).__name__})
                    await asyncio.sleep(retry.backoff(attempt - 1))
        os.replace(part, path)
    except BaseException:
        with contextlib.suppress(OSError):
            part.unlink()
        raise
    return path
