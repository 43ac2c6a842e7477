"""Fan out many generations from a script and save every video.

    WAN_API_KEY=sk-... python examples/fan_out_script.py prompts.txt out/

One prompt per line. Runs them 16 at a time through one client, pacing at the
server's limit, and prints one line per result as each finishes. Without a key
(``--emulator``) it runs against the built-in emulator instead.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

import wan26_async as wan
from wan26_async.testing import FakeWanServer


async def main(prompts: list[str], out: Path, *, emulator: bool) -> int:
    requests = [wan.TextToVideo(prompt=p, resolution="720p", duration=5) for p in prompts]
    print(f"{len(requests)} videos, about {sum(r.estimated_credits for r in requests)} credits")
    async with contextlib.AsyncExitStack() as stack:
        options = {}
        if emulator:
            server = await stack.enter_async_context(
                FakeWanServer(time_scale=0.02, pending_seconds=0.2))
            options = {"api_key": server.api_key, "base_url": server.base_url}
        client = await stack.enter_async_context(wan.AsyncWanClient(**options))
        failures = 0
        async for outcome in client.fan_out(requests, concurrency=16, check_credits=True):
            if outcome.ok and outcome.task and outcome.task.video_url:
                path = await client.download(outcome.task.video_url,
                                             out / f"{outcome.index:04d}.mp4")
                print(f"#{outcome.index} done: {path}")
            else:
                failures += 1
                print(f"#{outcome.index} failed: {outcome.error}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prompts", type=Path, help="a text file, one prompt per line")
    parser.add_argument("out", type=Path, help="folder for the videos")
    parser.add_argument("--emulator", action="store_true", help="no key: use the emulator")
    args = parser.parse_args()
    lines = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    args.out.mkdir(parents=True, exist_ok=True)
    sys.exit(asyncio.run(main(lines, args.out, emulator=args.emulator)))
