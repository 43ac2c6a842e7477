"""The emulator in another process, for benchmarks (so its work is not the client's)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator

__all__ = ["emulator"]


@contextlib.contextmanager
def emulator(*options: str) -> Iterator[tuple[str, str]]:
    """Run ``python -m wan26_async.testing --port 0 OPTIONS``; yield (base_url, api_key)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "wan26_async.testing", "--port", "0", "--credits", "1e9",
         *options],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        # "FakeWanServer listening on http://127.0.0.1:PORT (api key sk-...)"
        base_url = line.split(" on ", 1)[1].split(" ", 1)[0]
        api_key = line.rsplit("api key ", 1)[1].rstrip(")\n")
        yield base_url, api_key
    finally:
        proc.terminate()
        proc.wait(10)
