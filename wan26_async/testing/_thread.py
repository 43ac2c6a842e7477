"""Thread mode: a `FakeWanServer` on its own event loop in a daemon thread."""

from __future__ import annotations

import asyncio
import threading
from types import TracebackType
from typing import Generic, Protocol, TypeVar

__all__ = ["ServerThread"]


class _Server(Protocol):
    """What a thread can run: a server started and stopped on its event loop (a
    `FakeWanServer`; named by a protocol, so this module needs not import it)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


_S = TypeVar("_S", bound=_Server)


class ServerThread(Generic[_S]):
    """Runs a `FakeWanServer` on its own event loop in a daemon thread.

    Entering starts the server and blocks until it listens (re-raising a start-up
    error, e.g. a port in use); leaving stops it and joins the thread. Get one from
    `FakeWanServer.run_in_thread()`. `loop` is the server's event loop while it runs.
    """

    def __init__(self, server: _S) -> None:
        self.server = server
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def __enter__(self) -> _S:
        if self._thread is not None:
            raise RuntimeError("this ServerThread was already used")
        self._thread = threading.Thread(target=self._main, name="FakeWanServer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self.server

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop, thread = self.loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as exc:
                self._error = exc
                return
            self.loop = loop
            self._ready.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            self._ready.set()
            loop.close()
