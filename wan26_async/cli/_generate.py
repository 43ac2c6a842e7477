"""``wan26 generate {t2v,i2v,r2v}``: one generation from the shell, with a price preview."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import attrs

from .._client import AsyncWanClient
from .._models import TaskStatus
from .._requests import ImageToVideo, ReferenceToVideo, TextToVideo, VideoRequest

__all__ = ["DEFAULT_CONFIRM_ABOVE", "add_generate_parser", "build_request", "run_generate"]

_CLASSES: dict[str, type[VideoRequest]] = {
    "t2v": TextToVideo, "i2v": ImageToVideo, "r2v": ReferenceToVideo,
}
#: Ask before spending more than this many credits, unless --yes.
DEFAULT_CONFIRM_ABOVE = 400


def add_generate_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("generate", parents=[common], help="submit one generation",
                       description="Submit one generation; every input field is an option. "
                       "Shows the price first, and asks before spending more than "
                       "--confirm-above credits unless --yes.")
    p.add_argument("kind", choices=sorted(_CLASSES), help="t2v, i2v or r2v")
    p.add_argument("--prompt", required=True,
                   help="what the video shows (r2v: character1, character2, ... name the "
                        "references)")
    p.add_argument("--negative-prompt", metavar="TEXT", help="what the video must not show")
    p.add_argument("--resolution", choices=["720p", "1080p"],
                   help="default 1080p (720p costs less)")
    p.add_argument("--aspect-ratio", choices=["16:9", "9:16", "1:1", "4:3", "3:4"],
                   help="t2v and r2v")
    p.add_argument("--duration", type=int, help="seconds: 2-15 (r2v: 2-10)")
    p.add_argument("--seed", type=int, help="a fixed seed, for a repeatable result")
    p.add_argument("--shot-type", choices=["single", "multi"],
                   help="one continuous shot or several")
    p.add_argument("--prompt-extend", action=argparse.BooleanOptionalAction, default=None,
                   help="let the server rewrite the prompt in more detail")
    p.add_argument("--watermark", action=argparse.BooleanOptionalAction, default=None,
                   help="add the provider's watermark")
    p.add_argument("--audio", action=argparse.BooleanOptionalAction, default=None,
                   help="i2v and r2v: generate audio")
    p.add_argument("--image-url", action="append", dest="image_urls", metavar="URL",
                   help="i2v: the first frame; r2v: a reference (repeatable)")
    p.add_argument("--video-url", action="append", dest="video_urls", metavar="URL",
                   help="r2v: a reference video (repeatable)")
    p.add_argument("--audio-url", action="append", dest="audio_urls", metavar="URL",
                   help="t2v and i2v: reference/driving audio (repeatable)")
    p.add_argument("--model", help="override the model name (a gateway's newer model)")
    p.add_argument("--callback-url", help="where the gateway POSTs the result")
    p.add_argument("--wait", action="store_true", help="follow the task until it ends")
    p.add_argument("--download", metavar="PATH", help="save the video (implies --wait)")
    p.add_argument("--timeout", type=float, default=None, help="give up waiting after S s")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask before spending")
    p.add_argument("--confirm-above", type=int, default=DEFAULT_CONFIRM_ABOVE, metavar="N",
                   help=f"ask before spending more than N credits (default "
                        f"{DEFAULT_CONFIRM_ABOVE})")


def build_request(args: argparse.Namespace) -> VideoRequest:
    """The request the options describe; raises ValidationError (or TypeError for an
    option the model does not take)."""
    cls = _CLASSES[args.kind]
    fields = ("prompt", "negative_prompt", "resolution", "aspect_ratio", "duration", "seed",
              "shot_type", "prompt_extend", "watermark", "audio", "image_urls", "video_urls",
              "audio_urls", "model")
    given = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    accepted = {f.name for f in attrs.fields(cls) if f.init}
    unknown = sorted(set(given) - accepted)
    if unknown:
        options = ", ".join("--" + name.replace("_", "-").rstrip("s") for name in unknown)
        raise ValueError(f"{options} is not an input of {args.kind}")
    return cls(**given)


async def run_generate(args: argparse.Namespace, client: AsyncWanClient) -> int:
    request = build_request(args)
    price = request.estimated_credits
    out = sys.stdout
    if not args.json:
        print(f"{request.model}: about {price} credits (refunded if it fails)", file=sys.stderr)
    if price > args.confirm_above and not args.yes:
        if not sys.stdin.isatty():
            raise ValueError(f"this costs about {price} credits, above --confirm-above "
                             f"{args.confirm_above}; pass --yes to submit it")
        answer = await asyncio.to_thread(input, f"Submit for about {price} credits? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not submitted", file=sys.stderr)
            return 1
    task = await client.create_task(request, callback_url=args.callback_url)
    result: dict[str, Any] = {"id": task.id, "status": task.status.value,
                              "estimated_credits": price}
    if not args.json:
        print(f"submitted {task.id}", file=out, flush=True)
    if not (args.wait or args.download):
        if args.json:
            print(json.dumps(result), file=out)
        return 0
    final = task
    async for event in client.watch(task.id, timeout=args.timeout):
        final = event.task
        if not args.json:
            print(f"{event.elapsed:6.1f}s  {event.status.value}", file=out, flush=True)
    result.update(status=final.status.value, video_url=final.video_url, error=final.error)
    if final.status is TaskStatus.COMPLETED and args.download and final.video_url:
        path = await client.download(final.video_url, args.download)
        result["path"] = str(path)
        result["bytes"] = path.stat().st_size
    if args.json:
        print(json.dumps(result), file=out)
    elif final.status is TaskStatus.COMPLETED:
        print(final.video_url, file=out)
        if "path" in result:
            print(f"saved {result['path']} ({result['bytes']} bytes)", file=out)
    else:
        print(f"failed: {final.error} (credits refunded)", file=out)
    return 0 if final.status is TaskStatus.COMPLETED else 1
