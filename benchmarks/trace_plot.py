"""Draw one generation's trace from the spans the SDK really exported.

One ``generate`` and one ``download`` run inside an application span against the
in-process emulator, with an OpenTelemetry SDK tracer provider and an in-memory
exporter; one poll is answered 503 so the trace shows a resend. The exported spans
are drawn as a timeline (one row per span, indented by depth; status events of
``wan.watch`` as markers) into ``docs/img/trace.png``, and listed on stdout.

    python benchmarks/trace_plot.py [--out docs/img/trace.png] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import wan26_async as wan
from wan26_async.testing import FakeWanServer, Fault

ROOT = Path(__file__).resolve().parent.parent


async def record(time_scale: float) -> list[ReadableSpan]:
    """Run one traced generation and download; return the finished spans."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("app")
    poll = wan.PollPolicy(initial=0.1, multiplier=1.5, max_interval=0.4, scout_interval=0.1)
    async with FakeWanServer(time_scale=time_scale, pending_seconds=4) as server:
        server.inject("get", Fault.error(503, "upstream_error"))  # the first poll: resent
        async with wan.AsyncWanClient(api_key=server.api_key, base_url=server.base_url,
                                      poll=poll, tracer_provider=provider) as client:
            with tracer.start_as_current_span("make_video"), \
                    tempfile.TemporaryDirectory() as tmp:
                task = await client.generate(
                    wan.TextToVideo(prompt="a lighthouse at dusk", resolution="720p",
                                    duration=5))
                await client.download(task.video_url, Path(tmp) / "out.mp4")
    provider.shutdown()
    return list(exporter.get_finished_spans())


def _depths(spans: Sequence[ReadableSpan]) -> dict[int, int]:
    parent = {s.context.span_id: (s.parent.span_id if s.parent else None) for s in spans}
    depths: dict[int, int] = {}
    for span_id in parent:
        depth, up = 0, parent[span_id]
        while up is not None and up in parent:
            depth, up = depth + 1, parent[up]
        depths[span_id] = depth
    return depths


def _label(span: ReadableSpan) -> str:
    attrs = span.attributes or {}
    if span.name in ("GET", "POST"):
        path = str(attrs.get("url.full", "")).split("/", 3)[-1]
        head, _, tail = path.rpartition("/")
        path = f"{head}/{tail[:8]}..." if len(tail) > 12 else path  # a task id, shortened
        status = attrs.get("http.response.status_code", "-")
        resend = attrs.get("http.request.resend_count")
        return f"{span.name} /{path} {status}" + (f" (resend {resend})" if resend else "")
    return span.name


def plot(spans: Sequence[ReadableSpan], path: Path) -> None:
    """A timeline of ``spans``: rows in start order, indented by depth."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ordered = sorted(spans, key=lambda s: (s.start_time or 0, -(s.end_time or 0)))
    depths = _depths(ordered)
    t0 = min(s.start_time or 0 for s in ordered)
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(ordered) + 1.2))
    colours = {0: "#4c72b0", 1: "#55a868", 2: "#8172b2", 3: "#c44e52"}
    for row, span in enumerate(ordered):
        start = ((span.start_time or 0) - t0) / 1e9
        width = max(((span.end_time or 0) - (span.start_time or 0)) / 1e9, 0.004)
        depth = depths[span.context.span_id]
        failed = "error.type" in (span.attributes or {})
        ax.barh(row, width, left=start, height=0.6,
                color="#dd8452" if failed else colours.get(depth, "#937860"))
        ax.text(start + width + 0.01, row, "  " * depth + _label(span), va="center",
                fontsize=8)
        for event in span.events:
            if event.name == "wan.task.status":
                when = (event.timestamp - t0) / 1e9
                ax.plot(when, row, marker="v", color="black", markersize=6)
                status = (event.attributes or {}).get("wan.task.status", "")
                ax.text(when, row - 0.45, str(status), fontsize=7, ha="center")
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("seconds since the application span started")
    ax.set_title("One generation's trace (orange: an attempt that failed and was resent)",
                 fontsize=10)
    end = max(((s.end_time or 0) - t0) / 1e9 for s in ordered)
    ax.set_xlim(0, end * 1.45)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "trace.png")
    parser.add_argument("--time-scale", type=float, default=0.05,
                        help="the emulator's time scale (0.05: a 720p 5 s task takes ~0.8 s)")
    args = parser.parse_args(argv)
    spans = asyncio.run(record(args.time_scale))
    depths = _depths(spans)
    for span in sorted(spans, key=lambda s: s.start_time or 0):
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        print(f"{'  ' * depths[span.context.span_id]}{_label(span):<50} {ms:8.1f} ms")
    plot(spans, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
