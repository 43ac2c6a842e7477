"""Defaults in one place, and the frozen value objects that configure a client.

A client's settings are one `ClientConfig`; ``client.with_options(...)`` makes a view
with an evolved copy of it. Nothing reads a setting from anywhere else, so settings
cannot drift apart between calls, watches and downloads.
"""

from __future__ import annotations

import ipaddress
import os
import random
from typing import Final
from urllib.parse import urlsplit

import attrs

from ._errors import ConfigurationError

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "CREATE_PATH",
    "CREDITS_PATH",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_TIMEOUT",
    "MAX_RESPONSE_BYTES",
    "TASK_PATH",
    "ClientConfig",
    "PollPolicy",
    "RetryPolicy",
    "check_api_key",
    "check_base_url",
    "grow",
    "spread",
]

DEFAULT_BASE_URL: Final = "https://api.aivideoapi.ai"
DEFAULT_MAX_CONCURRENCY: Final = 64
DEFAULT_MAX_RETRIES: Final = 5
DEFAULT_TIMEOUT: Final = 60.0
#: Largest API reply body read (replies are small JSON; anything bigger is refused).
MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
API_KEY_ENV: Final = "WAN_API_KEY"
BASE_URL_ENV: Final = "WAN_BASE_URL"

CREATE_PATH: Final = "/v1/videos/generations"
TASK_PATH: Final = "/v1/tasks/"
CREDITS_PATH: Final = "/v1/credits"


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """How one HTTP call retries a retryable failure.

    Waits grow exponentially from ``initial_backoff`` by ``multiplier`` up to
    ``max_backoff``, with full jitter (a uniform draw between 0 and that bound), so
    many callers failing together do not retry together. A server's ``Retry-After``
    is honoured instead when present; one longer than ``max_retry_after`` is not
    slept on: the error is raised with ``.retry_after`` set.

    >>> RetryPolicy(max_retries=2).max_retries
    2
    """

    max_retries: int = attrs.field(default=DEFAULT_MAX_RETRIES)
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    multiplier: float = 2.0
    max_retry_after: float = 120.0

    @max_retries.validator
    def _check_retries(self, _: attrs.Attribute[int], value: int) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"max_retries must be a whole number >= 0, got {value!r}")

    def backoff(self, attempt: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0-based), with full jitter."""
        bound = grow(self.initial_backoff, self.multiplier, attempt, self.max_backoff)
        return (rng or random).uniform(0.0, bound)


def grow(initial: float, multiplier: float, n: int, cap: float) -> float:
    """``min(cap, initial * multiplier ** n)``, also where the power overflows a float."""
    try:
        return min(cap, initial * multiplier**n)
    except OverflowError:
        return cap


def spread(base: float, jitter: float, rng: random.Random | None = None) -> float:
    """``base`` moved by a uniform draw within +/- ``jitter`` (a fraction), never below 0."""
    width = base * jitter
    return max(0.0, base + (rng or random).uniform(-width, width))


@attrs.frozen(kw_only=True)
class PollPolicy:
    """How often a watch asks for a task's status.

    Plain backoff (tasks of unknown shape, or created elsewhere): the first wait is
    ``initial`` seconds, each next one ``multiplier`` times longer up to ``max_interval``,
    each spread by +/- ``jitter`` (a fraction) so watches started together do not poll
    together.

    Learned schedule (``learn=True``, tasks created by this client): up to ``scouts``
    watches per unknown shape poll every ``scout_interval`` seconds to learn how long
    that shape takes; the others then poll ``settle`` seconds after their predicted
    finish, and every ``scout_interval`` (growing to ``initial``) if it was not yet done.

    >>> PollPolicy(initial=0.5, max_interval=4).interval(10, rng=random.Random(0)) <= 4.4
    True
    """

    initial: float = 2.0
    multiplier: float = 2.0
    max_interval: float = 15.0
    jitter: float = 0.1
    learn: bool = True
    scouts: int = 3
    scout_interval: float = 0.25
    settle: float = 0.1

    def interval(self, poll: int, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after poll number ``poll`` (0-based) of the plain backoff."""
        return spread(grow(self.initial, self.multiplier, poll, self.max_interval),
                      self.jitter, rng)


def _positive_seconds(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{attribute.name} must be positive seconds, got {value!r}")


@attrs.frozen(kw_only=True)
class ClientConfig:
    """Every setting of one client, as one value (see `AsyncWanClient`).

    ``timeout`` is seconds per HTTP call, ``retry`` how a call retries, ``poll`` how a
    watch polls. ``base_url``, ``max_concurrency``, ``resend_ambiguous_creates`` and
    ``max_response_bytes`` belong to the client's transport, which its views share.
    Replace fields with `evolve`; a client's settings never change in place.
    """

    base_url: str = DEFAULT_BASE_URL
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    timeout: float = attrs.field(default=DEFAULT_TIMEOUT, validator=_positive_seconds)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    poll: PollPolicy = attrs.field(factory=PollPolicy)
    resend_ambiguous_creates: bool = False
    max_response_bytes: int = MAX_RESPONSE_BYTES

    def evolve(
        self,
        *,
        timeout: float | None = None,
        max_retries: int | None = None,
        retry: RetryPolicy | None = None,
        poll: PollPolicy | None = None,
    ) -> ClientConfig:
        """A copy with the per-call settings given replaced (None keeps this one's).

        ``max_retries`` alone keeps this config's backoff and changes only the count;
        giving both ``max_retries`` and ``retry`` is refused (`ConfigurationError`).
        """
        if max_retries is not None and retry is not None:
            raise ConfigurationError("pass max_retries or retry=RetryPolicy(...), not both")
        if max_retries is not None:
            retry = attrs.evolve(self.retry, max_retries=max_retries)
        return attrs.evolve(
            self,
            timeout=self.timeout if timeout is None else timeout,
            retry=self.retry if retry is None else retry,
            poll=self.poll if poll is None else poll,
        )


def check_base_url(base_url: str | None, allow_insecure_http: bool = False) -> str:
    """``base_url`` (else ``$WAN_BASE_URL``, else the public gateway), checked and without
    a trailing slash; raises `ConfigurationError` for one that is unsafe or malformed."""
    base_url = base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL
    parts = urlsplit(base_url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}")
    if scheme == "http" and not allow_insecure_http and not _is_loopback(parts.hostname):
        raise ConfigurationError(
            f"base_url {base_url!r} is plain http to a remote host, which would send the API "
            "key unencrypted; use https, or pass allow_insecure_http=True if you must"
        )
    if parts.query or parts.fragment:
        raise ConfigurationError(f"base_url must not have a query or fragment: {base_url!r}")
    return base_url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_api_key(api_key: str | None) -> str:
    """``api_key`` (else ``$WAN_API_KEY``), checked; raises `ConfigurationError`."""
    if api_key is None:
        api_key = os.environ.get(API_KEY_ENV)
    if not api_key:
        raise ConfigurationError(
            f"no API key: pass api_key=... or set the {API_KEY_ENV} environment variable"
        )
    if not isinstance(api_key, str) or not api_key.startswith("sk-"):
        raise ConfigurationError("the API key must be a string starting with 'sk-' "
                                 "(copy it again from the dashboard)")
    return api_key
