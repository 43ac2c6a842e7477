"""``wan26 demo``: a few generations of every model against the in-process emulator."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Callable

from .._client import AsyncWanClient
from .._config import PollPolicy
from .._errors import WanError
from .._models import Task, TaskStatus
from .._requests import ImageToVideo, ReferenceToVideo, TextToVideo, VideoRequest
from ._live import live_board

__all__ = ["demo_requests", "run_demo"]

_SHORT = {
    "wan-2.6-text-to-video": "t2v",
    "wan-2.6-image-to-video": "i2v",
    "wan-2.6-reference-to-video": "r2v",
}


def demo_requests() -> list[VideoRequest]:
    """Two generations of each model, and one the emulator refuses (to show a refund)."""
    img = "https://example.com/first-frame.png"
    return [
        TextToVideo(prompt="A small robot walks through a rainy neon alley", duration=5),
        TextToVideo(prompt="Waves at dawn, slow aerial shot", resolution="720p", duration=3,
                    aspect_ratio="9:16"),
        ImageToVideo(prompt="The subject turns toward the camera", image_urls=[img],
                     duration=5),
        ImageToVideo(prompt="Leaves drift across the frame", image_urls=[img],
                     resolution="720p", duration=4),
        ReferenceToVideo(prompt="character1 walks into the room and speaks to character2.",
                         image_urls=["https://example.com/character1.png"],
                         video_urls=["https://example.com/character2.mp4"], duration=8,
                         shot_type="multi"),
        ReferenceToVideo(prompt="character1 waves", image_urls=[img], resolution="720p",
                         duration=3),
        TextToVideo(prompt="[fail] something the provider refuses", resolution="720p",
                    duration=2),
    ]


async def run_demo(*, json_output: bool = False, time_scale: float = 0.1) -> int:
    """Run the demo; returns the exit status (0 when it behaved as expected)."""
    from ..testing import FakeWanServer

    requests = demo_requests()
    board = live_board([_SHORT.get(r.model, "?") for r in requests], json_output=json_output)

    def say(line: str, **record: object) -> None:
        if json_output:
            print(json.dumps(record), flush=True)
        elif board is not None:
            board.log(line)
            board.update(record)
        else:
            print(line, flush=True)

    async with FakeWanServer(time_scale=time_scale, pending_seconds=0.5) as server:
        say(f"emulator listening on {server.base_url} (no key or network needed)",
            event="start", base_url=server.base_url)
        poll = PollPolicy(initial=0.2, multiplier=1.5, max_interval=1.0, scout_interval=0.1,
                          settle=0.05)
        async with AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                  poll=poll) as client:
            before = (await client.get_credits()).balance
            started = time.monotonic()
            try:
                finals = await asyncio.gather(
                    *(_one(client, i, request, started, say)
                      for i, request in enumerate(requests, 1))
                )
            finally:
                if board is not None:
                    board.stop()
                    board = None
            after = (await client.get_credits()).balance
            _table(requests, finals, say)
            first = next((task for task, _ in finals
                          if task is not None and task.video_url), None)
            if first is not None and first.video_url:
                # the folder goes with the demo: nothing is left in the temporary directory
                with tempfile.TemporaryDirectory(prefix="wan26-demo-") as folder:
                    path = await client.download(first.video_url, folder)
                    size = path.stat().st_size
                say(f"downloaded {first.id[:8]} ({size} bytes, a real MP4; removed again: "
                    "wan26 generate ... --download PATH keeps one)", event="download",
                    bytes=size)
    results = [task.status if task is not None else None for task, _ in finals]
    completed = sum(1 for status in results if status is TaskStatus.COMPLETED)
    failed = len(results) - completed
    say(f"done in {time.monotonic() - started:.1f}s: {completed} completed, {failed} failed "
        f"(refunded); credits spent: {before - after:g}",
        event="summary", completed=completed, failed=failed, credits_spent=before - after)
    return 0 if completed == len(results) - 1 else 1


def _table(requests: list[VideoRequest], finals: list[tuple[Task | None, float]],
           say: Callable[..., None]) -> None:
    say("", event="table")
    say(f"{'#':>3}  {'model':<5} {'status':<10} {'seconds':>7} {'credits':>7}", event="table")
    for n, (request, (task, seconds)) in enumerate(zip(requests, finals, strict=True), 1):
        status = task.status.value if task is not None else "error"
        credits = request.estimated_credits if status == "completed" else 0
        say(f"{n:>3}  {_SHORT.get(request.model, '?'):<5} {status:<10} {seconds:>7.1f} "
            f"{credits:>7}", event="row", n=n, status=status, seconds=round(seconds, 2),
            credits=credits)
    say("", event="table")


async def _one(client: AsyncWanClient, n: int, request: VideoRequest, started: float,
               say: Callable[..., None]) -> tuple[Task | None, float]:
    name = f"#{n} {_SHORT.get(request.model, request.model)}"
    begun = time.monotonic()
    try:
        task = await client.create_task(request)
    except WanError as exc:
        say(f"{time.monotonic() - started:5.1f}s  {name:<7} not submitted: {exc}",
            event="error", n=n, error=str(exc))
        return None, time.monotonic() - begun
    say(f"{time.monotonic() - started:5.1f}s  {name:<7} {task.id[:8]}  submitted "
        f"({request.estimated_credits} credits)", event="submitted", n=n, task_id=task.id,
        credits=request.estimated_credits)
    final = task
    async for event in client.watch(task.id):
        final = event.task
        status = event.status
        extra = ""
        if status is TaskStatus.COMPLETED:
            extra = f"  {event.task.video_url}"
        elif status is TaskStatus.FAILED:
            extra = f"  ({(event.task.error or '').rstrip('.')}; credits refunded)"
        say(f"{time.monotonic() - started:5.1f}s  {name:<7} {task.id[:8]}  "
            f"{event.previous.value if event.previous else 'new'} -> {status.value}{extra}",
            event="status", n=n, task_id=task.id, status=status.value,
            previous=event.previous.value if event.previous else None)
    return final, time.monotonic() - begun
