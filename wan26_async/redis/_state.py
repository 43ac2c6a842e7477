"""How the learner's state and the first wave are written in Redis, and the scope's name."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import attrs

from .._config import API_KEY_ENV, BASE_URL_ENV, DEFAULT_BASE_URL
from .._errors import ConfigurationError
from .._ratelimit._learner import LimitState

__all__ = ["STATE_FIELDS", "decode_state", "decode_wave", "encode_state", "encode_wave",
           "scope_for", "scope_from_env", "text", "where"]

#: The hash field of each `LimitState` attribute.
_NAMES = {"phase": "phase", "rate": "rate", "burst": "burst", "server_burst": "sburst",
          "ceiling": "ceiling", "base": "base", "step": "step", "add": "add", "cap": "cap",
          "hold": "hold", "hold_span": "hspan", "look": "look", "lift": "lift",
          "most": "most", "first": "first", "last": "last", "wave": "wave",
          "told": "told"}
STATE_FIELDS = list(_NAMES.values())
#: The fields that are times (s on the store's clock; -1: none), kept in Redis as ms.
_TIMES = ("first", "last")


def scope_for(base_url: str, api_key: str) -> str:
    """The scope of the limit of ``api_key`` at ``base_url``: a SHA-256 of both, so the
    Redis keys name the limit without revealing the key."""
    material = f"{base_url.rstrip('/')}\n{api_key}".encode()
    return hashlib.sha256(material).hexdigest()[:32]


def scope_from_env() -> str:
    """The scope named by ``$WAN_API_KEY`` (and ``$WAN_BASE_URL``), for a limiter given
    no scope and not bound to a client; raises `ConfigurationError` when it is unset."""
    api_key = os.environ.get(API_KEY_ENV)
    if not api_key:
        raise ConfigurationError(
            "RedisRateLimiter needs a scope: pass scope=wan26_async.redis.scope_for("
            f"base_url, api_key), or set {API_KEY_ENV} (and {BASE_URL_ENV})"
        )
    return scope_for(os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL, api_key)


def text(value: bytes | str | float | int) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def where(url: str) -> str:
    """The Redis URL without its password, for log lines."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def encode_state(state: LimitState) -> list[str]:
    """``field, value, ...`` for HSET. Times (``first``) go in as ms on Redis's clock."""
    out: list[str] = []
    for name, field in _NAMES.items():
        value = getattr(state, name)
        if isinstance(value, bool):
            out += [field, "1" if value else "0"]
        elif isinstance(value, str):
            out += [field, value]
        elif name in _TIMES:
            out += [field, f"{value * 1000.0:.6f}" if value >= 0 else "-1"]
        else:
            out += [field, repr(float(value))]
    return out


def decode_state(values: Sequence[bytes | str | None]) -> LimitState:
    """The state from ``HMGET key *STATE_FIELDS`` (missing fields take their defaults)."""
    found: dict[str, object] = {}
    for (name, _), raw in zip(_NAMES.items(), values, strict=True):
        if raw is None:
            continue
        value = text(raw)
        if name == "phase":
            found[name] = value
        elif name in ("wave", "told"):
            found[name] = value == "1"
        elif name in _TIMES:
            found[name] = float(value) / 1000.0 if float(value) >= 0 else -1.0
        else:
            found[name] = float(value)
    return attrs.evolve(LimitState(), **found)  # type: ignore[arg-type]


def encode_wave(events: Sequence[tuple[float, bool]], start: float) -> str:
    """The first wave's decisions (s) as ms after ``start``, refusals marked ``x``."""
    return ",".join(f"{(t - start) * 1000:.3f}{'' if ok else 'x'}" for t, ok in events)


def decode_wave(data: str, start: float) -> list[tuple[float, bool]]:
    return [(start + float(item.rstrip("x")) / 1000.0, not item.endswith("x"))
            for item in data.split(",") if item]
