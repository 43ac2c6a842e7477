"""A minimal, fast local server for the throughput benchmark.

Answers ``POST /v1/videos/generations`` with a prebuilt success envelope and a
counter as the task id: no validation, no auth check, keep-alive on, no access log.
Run it in its own process; it prints ``PORT <n>`` on stdout once it is listening::

    python -m benchmarks._fastserver [--port 0]

`start_server` / `stop_server` do that from the benchmark (``subprocess.Popen``);
`spawn` starts any server of this folder that way.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

from aiohttp import web

CREATE_PATH = "/v1/videos/generations"
_HEAD = b'{"code":200,"msg":"success","data":{"taskId":"task-'
_TAIL = b'"}}'


def make_app() -> web.Application:
    counter = 0

    async def create(request: web.Request) -> web.Response:
        nonlocal counter
        counter += 1
        await request.read()  # drain the body so the connection can be reused
        return web.Response(body=_HEAD + str(counter).encode() + _TAIL,
                            content_type="application/json")

    app = web.Application()
    app.router.add_post(CREATE_PATH, create)
    return app


async def _serve(port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]  # (host, port) of the listening socket
    print(f"PORT {bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.port))


def start_server() -> tuple[subprocess.Popen[str], int]:
    """Start the server in a child process; return it and the port it listens on."""
    return spawn("benchmarks._fastserver")


def spawn(module: str, *options: str) -> tuple[subprocess.Popen[str], int]:
    """Run ``python -m module --port 0 *options`` (a server of this folder that prints
    ``PORT <n>`` once listening) in a child process; return it and the port."""
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", *options],
        stdout=subprocess.PIPE, text=True, cwd=root, env=env,
        start_new_session=True,  # a terminal's Ctrl-C goes to the benchmark, which stops us
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the child prints or exits
        if not line.startswith("PORT "):
            raise RuntimeError(f"{module} failed to start (said {line!r}, "
                               f"exit code {proc.poll()})")
        return proc, int(line.split()[1])
    except BaseException:
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen[str], timeout: float = 5.0) -> None:
    """Terminate the server and wait for it (kill it if it does not go)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


if __name__ == "__main__":
    main()
