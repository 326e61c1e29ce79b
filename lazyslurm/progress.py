"""A live progress display per array job (rich), shown when output is a terminal.

Used as a callback by ``compute``/``submit``: off with ``progress=False`` or when stderr
is not a TTY; ``progress=True`` forces it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["RichProgress", "make_progress"]


def make_progress(force: bool = False) -> RichProgress | None:
    """A display, or None when it would not be seen (no TTY) or rich is missing."""
    if not force and not sys.stderr.isatty():
        return None
    try:
        import rich  # noqa: F401
    except ImportError:
        return None
    return RichProgress()


class RichProgress:
    """done / running / pending / failed per array job, with elapsed time."""

    def __init__(self) -> None:
        from rich.console import Console

        self._console = Console(stderr=True)
        self._live: Any = None
        self._t0 = time.monotonic()

    def _table(self, run: Any, snap: Any) -> Any:
        from rich.table import Table

        title = f"lazyslurm run {run.id}  {time.monotonic() - self._t0:6.1f} s"
        since = getattr(snap, "unreachable_since", None)
        if since is not None:
            title += (
                f"  [bold red]cluster unreachable since "
                f"{time.strftime('%H:%M:%S', time.localtime(since))}[/]: last known states"
                f" ({snap.unreachable_reason[:120]})"
            )
        table = Table(
            title=title,
            title_justify="left",
            box=None,
            pad_edge=False,
        )
        for col in ("array job", "task", "done", "running", "pending", "failed", "cancelled"):
            table.add_column(col, justify="left" if col in ("array job", "task") else "right")
        for aj in run.array_jobs:
            counts: dict[str, int] = {}
            for s in snap.states[aj.id]:
                counts[s] = counts.get(s, 0) + 1
            table.add_row(
                aj.id,
                f"{aj.name} x{aj.size}",
                *(
                    str(counts.get(s, 0))
                    for s in ("DONE", "RUNNING", "PENDING", "FAILED", "CANCELLED")
                ),
            )
        return table

    def on_submit(self, run: Any) -> None:
        self._t0 = time.monotonic()

    def on_poll(self, run: Any, snap: Any) -> None:
        # shown from the first poll, so a run submitted and never waited on leaves no
        # display running (and the terminal's cursor as it was)
        if self._live is None and not snap.finished:
            from rich.live import Live

            self._live = Live(console=self._console, refresh_per_second=4, transient=False)
            self._live.start()
        if self._live is not None:
            self._live.update(self._table(run, snap))

    def on_done(self, run: Any) -> None:
        # finished before a poll saw it run
        if self._live is None and run.last_snapshot is not None:
            self._console.print(self._table(run, run.last_snapshot))
        if self._live is not None:
            if run.last_snapshot is not None:
                self._live.update(self._table(run, run.last_snapshot))
            self._live.stop()
            self._live = None
