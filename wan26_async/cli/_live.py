"""A live per-task progress board for a terminal, drawn with rich (the ``cli`` extra).

Without rich, or when output is not a terminal, the commands print plain lines.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["LiveBoard", "live_board"]


class LiveBoard:
    """Log lines scroll above a table of tasks that redraws in place."""

    def __init__(self, labels: list[str]) -> None:
        from rich.console import Console
        from rich.live import Live

        self._labels = labels
        self._rows: dict[int, dict[str, Any]] = {
            n: {"status": "waiting", "task": "", "since": time.monotonic(), "until": None}
            for n in range(1, len(labels) + 1)
        }
        self._started = time.monotonic()
        self.console = Console()
        self._live = Live(self._render(), console=self.console, refresh_per_second=8,
                          get_renderable=self._render, transient=True)
        self._live.start()

    def _render(self) -> Any:
        from rich.table import Table

        table = Table(title=f"{time.monotonic() - self._started:5.1f}s", title_justify="left")
        for column in ("#", "model", "task", "status", "seconds"):
            table.add_column(column, justify="right" if column in ("#", "seconds") else "left")
        colour = {"completed": "green", "failed": "red", "processing": "yellow"}
        for n, row in self._rows.items():
            status = row["status"]
            table.add_row(str(n), self._labels[n - 1], row["task"],
                          f"[{colour.get(status, 'white')}]{status}[/]",
                          f"{(row['until'] or time.monotonic()) - row['since']:.1f}")
        return table

    def log(self, line: str) -> None:
        self._live.console.print(line, highlight=False, markup=False)

    def update(self, record: dict[str, Any]) -> None:
        row = self._rows.get(record.get("n", 0))
        if row is None:
            return
        if record.get("task_id"):
            row["task"] = str(record["task_id"])[:8]
        if record.get("event") == "submitted":
            row["status"] = "submitted"
        elif record.get("event") == "status":
            row["status"] = record["status"]
        elif record.get("event") == "error":
            row["status"] = "error"
        if row["status"] in ("completed", "failed", "error") and row["until"] is None:
            row["until"] = time.monotonic()

    def stop(self) -> None:
        """Clear the board (a summary follows it)."""
        self._live.stop()


def live_board(labels: list[str], *, json_output: bool) -> LiveBoard | None:
    """A board when output is a terminal and rich is installed, else None."""
    if json_output or not sys.stdout.isatty():
        return None
    try:
        return LiveBoard(labels)
    except ImportError:
        return None
