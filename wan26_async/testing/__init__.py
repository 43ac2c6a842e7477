"""Testing support: `FakeWanServer`, an emulator of the Wan 2.6 API on a loopback port.

    from wan26_async.testing import FakeWanServer, Fault, TokenBucket

    async with FakeWanServer(time_scale=0.01, rate_limit=TokenBucket(rate=5, burst=10)) as server:
        server.inject("create", Fault.drop_after())    # the next create is made, reply lost
        ...  # point a client at server.base_url with server.api_key

A prompt containing ``[fail]`` makes its task fail (like a content refusal) and its
credits are refunded. See `FakeWanServer` for the timing model, the order of checks
and what is recorded; `Fault` and `Faults` for scripted and random faults. The
pytest plugin (`wan_server` fixture) and the ``python -m wan26_async.testing``
command line are built on it.

The emulator is self-contained: it shares no code with the SDK, so the SDK's
client-side validation is checked against an independent reading of the spec.
"""

from ._api import FAIL_MARKER
from ._cli import run_forever, serve_forever
from ._config import ERROR_TABLE, Fault, Faults, FixedWindow, TokenBucket
from ._models import CallbackRecord, FakeTask, ReceivedRequest, ServerStats
from ._server import DEFAULT_API_KEY, SAMPLE_VIDEO, FakeWanServer
from ._thread import ServerThread

__all__ = [
    "DEFAULT_API_KEY",
    "ERROR_TABLE",
    "FAIL_MARKER",
    "SAMPLE_VIDEO",
    "CallbackRecord",
    "FakeTask",
    "FakeWanServer",
    "Fault",
    "Faults",
    "FixedWindow",
    "ReceivedRequest",
    "ServerStats",
    "ServerThread",
    "TokenBucket",
    "run_forever",
    "serve_forever",
]
