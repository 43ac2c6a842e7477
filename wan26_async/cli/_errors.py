"""What the wan26 command says when something goes wrong, and the exit status it returns.

An error is one line on stderr, ``error: ...``, worded for a person at a shell (the
options to type, not the Python arguments), or with ``--json`` one JSON object
``{"error": {"type", "code", "message", "request_id"}}``. The exit status says the kind:

    0    success (batch: every job completed)
    1    a task or job failed (batch: some did not complete); the demo went wrong
    2    bad input: a wrong option, an invalid request or batch line, a file problem
    3    configuration or authentication: no key, a malformed key, an unsafe base URL,
         401 invalid_api_key, 403 ip_not_allowed
    4    stopped before the end: credits or spend limit reached, a --timeout passed,
         batch jobs left to a rerun (run the same command again)
    5    the gateway: nothing answered, no reply in time, a server error
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import sys
from typing import Any, TextIO

import attrs

from .._errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    AuthenticationError,
    ConfigurationError,
    InsufficientCreditsError,
    PermissionDeniedError,
    SpendLimitError,
    ValidationError,
    WanError,
    WatchTimeoutError,
)

__all__ = [
    "CliError",
    "Described",
    "EXIT_CONFIG",
    "EXIT_FAILED",
    "EXIT_GATEWAY",
    "EXIT_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_STOPPED",
    "RetryNotes",
    "describe",
    "report",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INPUT = 2
EXIT_CONFIG = 3
EXIT_STOPPED = 4
EXIT_GATEWAY = 5
EXIT_INTERRUPTED = 130


#: The ``type`` a `CliError` reports in JSON, by its code.
_CLI_TYPES = {"usage": "UsageError", "file_error": "FileError",
              "configuration_error": "ConfigurationError", "interrupted": "Interrupted"}


class CliError(Exception):
    """An error the command found itself (an option, a file), with its exit status."""

    def __init__(self, message: str, *, code: str = "invalid_input",
                 exit_code: int = EXIT_INPUT, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.type = _CLI_TYPES.get(code, "InputError")
        self.code = code
        self.exit_code = exit_code
        self.details = details or []


@attrs.frozen
class Described:
    """An error as the command reports it."""

    type: str
    code: str
    message: str
    request_id: str | None
    exit_code: int
    details: tuple[str, ...] = ()


def _key_source(api_key_given: bool) -> str:
    return "the key given with --api-key" if api_key_given else "$WAN_API_KEY"


def _cli_words(message: str, api_key_given: bool) -> str:
    """Python advice of the SDK's messages, said as what to type in the CLI."""
    message = message.replace("pass allow_insecure_http=True", "pass --allow-insecure-http")
    message = message.replace("pass api_key=... or set the WAN_API_KEY environment variable",
                              "pass --api-key KEY or set WAN_API_KEY")
    message = message.replace("check WAN_API_KEY (it must start with 'sk-' and be active)",
                              f"check {_key_source(api_key_given)}: is it the one the "
                              "dashboard shows, still active?")
    if message.startswith("base_url "):
        message = "--base-url" + message[len("base_url"):]
    return message


def _connection_words(message: str, base_url: str | None) -> str:
    """'Cannot connect to host 127.0.0.1:9 ssl:default [...]' said plainly."""
    where = base_url or "the gateway"
    lowered = message.lower()
    check = (f"check that the gateway runs at {where} and that --base-url (or "
             "$WAN_BASE_URL) is right")
    if "connect call failed" in lowered or "refused" in lowered:
        return f"nothing answered at {where} (connection refused); {check}"
    if ("name or service not known" in lowered or "nodename nor servname" in lowered
            or "name resolution" in lowered or "no address associated" in lowered):
        return f"the host of {where} was not found (DNS); {check}"
    if "timeout" in lowered or "timed out" in lowered:
        return f"nothing answered at {where} in time; {check}"
    if message.startswith("TLS failed"):
        return message
    return re.sub(r"\s*ssl:\S+", "", message) + f"; {check}"


def describe(exc: BaseException, *, api_key_given: bool = False,
             base_url: str | None = None) -> Described:
    """The type, code, message and exit status the command reports for ``exc``."""
    name = type(exc).__name__
    if isinstance(exc, CliError):
        return Described(exc.type, exc.code, str(exc), None, exc.exit_code,
                         tuple(exc.details))
    if isinstance(exc, APIError):
        code = exc.code or f"http_{exc.status_code}"
        message = _cli_words(str(exc), api_key_given)
        if isinstance(exc, AuthenticationError | PermissionDeniedError):
            status = EXIT_CONFIG
        elif isinstance(exc, InsufficientCreditsError | SpendLimitError):
            status = EXIT_STOPPED
        elif exc.status_code >= 500:
            status = EXIT_GATEWAY
        else:
            status = EXIT_INPUT
        return Described(name, code, message, exc.request_id, status)
    if isinstance(exc, ConfigurationError):
        return Described(name, "configuration_error", _cli_words(str(exc), api_key_given),
                         None, EXIT_CONFIG)
    if isinstance(exc, ValidationError):
        return Described(name, "validation_error", str(exc), None, EXIT_INPUT)
    if isinstance(exc, WatchTimeoutError):
        return Described(name, "timeout", f"{exc} (the task keeps running: wan26 watch "
                         f"{exc.task_id} follows it again)", None, EXIT_STOPPED)
    if isinstance(exc, APITimeoutError):
        return Described(name, "timeout", _connection_words(str(exc), base_url), None,
                         EXIT_GATEWAY)
    if isinstance(exc, APIConnectionError):
        return Described(name, "connection_error", _connection_words(str(exc), base_url),
                         None, EXIT_GATEWAY)
    if isinstance(exc, sqlite3.Error):
        return Described("FileError", "file_error", f"writing the batch journal failed: "
                         f"{exc} (is the disk full?); run the same command again once it is "
                         "fixed", None, EXIT_INPUT)
    if isinstance(exc, OSError):
        where = f" {exc.filename}" if exc.filename else ""
        what = exc.strerror or str(exc)
        return Described("FileError", "file_error", f"cannot use{where}: {what}", None,
                         EXIT_INPUT)
    if isinstance(exc, WanError):
        return Described(name, "error", str(exc), None, EXIT_INPUT)
    return Described(name, "invalid_input", str(exc), None, EXIT_INPUT)


def report(err: Described, *, json_output: bool, stream: TextIO | None = None) -> None:
    """Print ``err`` on stderr: one ``error:`` line (details indented under it), or one
    JSON object with ``--json``."""
    stream = stream or sys.stderr
    if json_output:
        body: dict[str, Any] = {"type": err.type, "code": err.code, "message": err.message,
                                "request_id": err.request_id, "exit_code": err.exit_code}
        if err.details:
            body["details"] = list(err.details)
        stream.write(json.dumps({"error": body}) + "\n")
    else:
        stream.write(f"error: {err.message}\n" + "".join(f"  {d}\n" for d in err.details))
    stream.flush()


class RetryNotes(logging.Handler):
    """Shows ``retrying (2/5) ...`` on a terminal while a call retries.

    The transport logs each retry at DEBUG on the ``wan26_async`` logger as
    ``METHOD PATH: retry N in S s after ERROR`` (with ``wan_attempt``, ``wan_delay`` and
    ``wan_error`` fields); this handler turns those records into one note line each and
    ignores every other record.
    """

    def __init__(self, max_retries: int, base_url: str | None,
                 stream: TextIO | None = None) -> None:
        super().__init__(logging.DEBUG)
        self.max_retries = max_retries
        self.base_url = base_url
        self.stream = stream or sys.stderr

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if ": retry " not in str(record.msg) or not isinstance(args, tuple) or len(args) != 5:
            return
        # the record's extra= fields when it has them, else its arguments
        attempt = getattr(record, "wan_attempt", args[2])
        delay = getattr(record, "wan_delay", args[3])
        error = getattr(record, "wan_error", args[4])
        wait = f" in {delay:.1f} s" if isinstance(delay, int | float) and delay >= 0.05 else ""
        why = {"APIConnectionError": "nothing answered", "APITimeoutError": "no reply in time",
               "RateLimitError": "rate limited"}.get(str(error), str(error))
        where = f" at {self.base_url}" if why.startswith("nothing") and self.base_url else ""
        try:
            self.stream.write(f"{why}{where}; retrying ({attempt}/{self.max_retries})"
                              f"{wait}\n")
            self.stream.flush()
        except (OSError, ValueError):  # a closed stderr must not break the call
            pass

    @classmethod
    def install(cls, max_retries: int, base_url: str | None) -> RetryNotes | None:
        """Attach a handler when stderr is a terminal; returns it (None when not)."""
        if not sys.stderr.isatty():
            return None
        handler = cls(max_retries, base_url)
        logger = logging.getLogger("wan26_async")
        logger.addHandler(handler)
        if not logger.isEnabledFor(logging.DEBUG):
            logger.setLevel(logging.DEBUG)  # the records go to this handler only:
            logger.propagate = False  # no other output appears (--debug keeps its own)
        return handler
