"""Progress output for long commands: a live line on a terminal, plain lines otherwise."""

from __future__ import annotations

import json
import sys
import time
from typing import TextIO

from .._batch import BatchProgress, BatchSummary

__all__ = ["BatchReporter"]


def _fmt_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class BatchReporter:
    """Shows a batch's progress on ``stream`` (stderr): rewritten in place on a terminal,
    a plain line at most every ``plain_every`` seconds when piped."""

    def __init__(self, *, json_output: bool = False, stream: TextIO | None = None,
                 plain_every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.json = json_output
        self.tty = self.stream.isatty() and not json_output
        self.plain_every = plain_every
        self._last = 0.0
        self._last_line = ""

    def line(self, p: BatchProgress) -> str:
        return (f"{p.finished}/{p.total} done | submitted {p.submitted} running {p.running} "
                f"completed {p.completed} failed {p.failed} | credits {p.credits} | "
                f"ETA {_fmt_eta(p.eta)}")

    def update(self, p: BatchProgress) -> None:
        text = self.line(p)
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            return
        now = time.monotonic()
        if text != self._last_line and now - self._last >= self.plain_every:
            self._last, self._last_line = now, text
            if self.json:
                self.stream.write(json.dumps({"event": "progress", "line": text}) + "\n")
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self, summary: BatchSummary, *, skipped: int = 0, exit_code: int = 0) -> None:
        """The summary line (one JSON object with ``--json``), after the progress."""
        p = summary.progress
        if self.tty:
            self.stream.write("\r\x1b[2K")
        earlier = p.done_before + p.resumed
        done = f"{p.finished}/{p.total} jobs done"
        if earlier:
            how = [f"{p.done_before} finished then"] if p.done_before else []
            how += [f"{p.resumed} submitted then, finished now"] if p.resumed else []
            done += f" ({earlier} from an earlier run: {', '.join(how)})"
        credits = f"credits {p.credits}"
        if p.credits_before:
            credits += f" ({p.credits - p.credits_before} in this run)"
        parts = [done, f"completed {p.completed + p.done_before - p.failed_before}",
                 f"failed {p.failed + p.failed_before}", credits]
        if skipped:
            parts.append(f"skipped {skipped} invalid line(s)")
        if p.not_submitted:
            parts.append(f"not submitted {p.not_submitted} ({summary.stopped_by}); "
                         "fix that and run the same command again")
        if p.ambiguous:
            parts.append(f"{p.ambiguous} may have reached the server without an answer: "
                         "run again with --resend-ambiguous on a gateway that honours "
                         "idempotency keys, or check them in the dashboard")
        if p.unfinished:
            parts.append(f"unfinished {p.unfinished} (run the same command again)")
        text = "; ".join(parts)
        if self.json:
            text = json.dumps({
                "event": "summary", "total": p.total, "done": p.finished,
                "completed": p.completed + p.done_before - p.failed_before,
                "failed": p.failed + p.failed_before, "done_before": p.done_before,
                "resumed": p.resumed, "skipped": skipped, "not_submitted": p.not_submitted,
                "ambiguous": p.ambiguous, "unfinished": p.unfinished, "credits": p.credits,
                "stopped_by": summary.stopped_by, "exit_code": exit_code})
        self.stream.write(text + "\n")
        self.stream.flush()
