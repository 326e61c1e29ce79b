"""A live progress display: one ``rich.progress`` bar per array job, shown on a terminal.

Used as a callback by ``compute``/``submit``: off with ``progress=False``; when stderr is
not a TTY (``| cat``, ``nohup``, a batch job), two plain lines instead (the run id when
submitted, the counts when it ends: :class:`PlainProgress`), unless logging already shows
lazyslurm's INFO records; ``progress=True`` forces the bars (off a terminal, the final
bars are printed once, when the run ends). Each bar shows the elements done of the array
job's total, how many are running, failures in red, the rate of finished elements and the
ETA (narrow terminals drop the rate, then the ETA, and cut long names with "…": one line
per array job at any width):

    lazyslurm run 20261202-061500-ab12cd
    aj0 train_model     ━━━━━━━━━━━━╸━━━━━━━━━  6/12  4 running  1 failed  2.1/s  0:00:03
    aj1 select_best     ━━━━━━━━━━━━━━━━━━━━━━  0/1   0 running            -      -:--:--

The title line also says what the run does besides its elements: while the first job
of a ``packaging="wheel"`` run creates its environment, ``creating the environment
(once): 7 wheels, 12 s`` (the elements shown running are waiting for it), then
``created the environment (once): 7 wheels in 31 s``.

On Ctrl-C the display is removed, not left as a stale frame, and the one line of
:func:`interrupted_line` says what was cancelled and how to look at it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = [
    "NotebookProgress",
    "PlainProgress",
    "RichProgress",
    "install_interrupt_hook",
    "interrupted_line",
    "make_progress",
]

DONE, RUNNING, FAILED, CANCELLED = "DONE", "RUNNING", "FAILED", "CANCELLED"
_ENDED = (DONE, FAILED, CANCELLED)


def make_progress(force: bool = False) -> RichProgress | PlainProgress | None:
    """A display: bars on a terminal; in a Jupyter kernel a :class:`NotebookProgress`
    (an HTML display updated in place); off a terminal (``| cat``, ``nohup``, a batch
    job) a :class:`PlainProgress` (two lines on stderr: the run id, then a summary),
    unless logging already shows lazyslurm's INFO records (which say the same); None
    when nothing is to be shown.
    """
    if in_notebook():
        return NotebookProgress()
    if not force and not _isatty(sys.stderr):
        return None if logging_shows_info() else PlainProgress()
    return RichProgress()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed
        return False


def logging_shows_info() -> bool:
    """Whether the ``lazyslurm`` logger's INFO records reach a handler (configured by the
    program, e.g. :func:`lazyslurm.logging.configure_logging` or ``basicConfig``)."""
    import logging

    logger = logging.getLogger("lazyslurm")
    return logger.isEnabledFor(logging.INFO) and logger.hasHandlers()


class PlainProgress:
    """Off a terminal: one line on stderr when the run is submitted (its id, which
    ``lazyslurm status`` takes) and one when it ends (the counts), nothing in between.

    >>> import io
    >>> class R:
    ...     id, array_jobs, last_snapshot = "r1", (), None
    >>> out = io.StringIO()
    >>> PlainProgress(out).on_submit(R())
    >>> print(out.getvalue(), end="")
    lazyslurm: submitted run r1 (0 array jobs, 0 elements); watch it: lazyslurm status r1
    """

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream
        self._started = 0.0

    def _print(self, line: str) -> None:
        print(line, file=self._stream if self._stream is not None else sys.stderr, flush=True)

    def on_submit(self, run: Any) -> None:
        self._started = time.monotonic()
        n, elements = len(run.array_jobs), sum(aj.size for aj in run.array_jobs)
        self._print(
            f"lazyslurm: submitted run {run.id} ({n} array job{'s' * (n != 1)}, "
            f"{elements} element{'s' * (elements != 1)}); watch it: lazyslurm status {run.id}"
        )

    def on_done(self, run: Any) -> None:
        snap = run.last_snapshot
        counts = snap.counts_total() if snap is not None else {}
        order = (DONE, FAILED, CANCELLED)
        said = ", ".join(f"{counts[s]} {s.lower()}" for s in order if counts.get(s))
        took = f" in {time.monotonic() - self._started:.1f} s" if self._started else ""
        self._print(f"lazyslurm: run {run.id} finished{took}: {said or 'nothing ran'}")


def in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (IPython already imported, with a kernel)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    try:
        shell = ipython.get_ipython()
    except Exception:
        return False
    return shell is not None and getattr(shell, "kernel", None) is not None


def interrupted_line(run_id: str, counts: dict[str, int], cancelled: int) -> str:
    """The one line printed when Ctrl-C cancels a run.

    >>> line = interrupted_line("r1", {"DONE": 3, "RUNNING": 2, "PENDING": 5}, 7)
    >>> print(line)  # doctest: +NORMALIZE_WHITESPACE
    lazyslurm: interrupted: cancelled run r1 (7 of 10 elements unfinished, 3 done);
    inspect it: lazyslurm status r1

    """
    total = sum(counts.values())
    done = counts.get(DONE, 0)
    failed = counts.get(FAILED, 0)
    extra = f", {done} done" + (f", {failed} failed" if failed else "")
    return (
        f"lazyslurm: interrupted: cancelled run {run_id} ({cancelled} of {total} elements "
        f"unfinished{extra}); inspect it: lazyslurm status {run_id}"
    )


def layout(width: int, id_width: int, name_width: int, digits: int) -> dict[str, int]:
    """Widths of the columns of a console ``width`` columns wide, so that each array job
    stays one line: the rate shows from 100 columns, the ETA from 72; the name (cut with
    "…" when longer) and the bar (6 to 30) share what the other columns leave.

    >>> layout(120, 3, 10, 2)
    {'id': 3, 'name': 10, 'bar': 30, 'rate': 1, 'eta': 1}
    >>> layout(80, 3, 45, 4)
    {'id': 3, 'name': 20, 'bar': 9, 'rate': 0, 'eta': 1}
    >>> layout(60, 3, 45, 4)
    {'id': 3, 'name': 11, 'bar': 6, 'rate': 0, 'eta': 0}
    """
    rate, eta = int(width >= 100), int(width >= 72)
    counts = 4 * digits + 20  # "done/total  N running  N failed"
    fixed = id_width + counts + 9 * rate + 7 * eta
    gaps = 3 + rate + eta  # one space between columns
    room = max(0, width - fixed - gaps - 1)
    bar = max(6, min(30, max(room // 3, room - name_width)))
    name = max(4, min(name_width, room - bar))
    return {"id": id_width, "name": name, "bar": bar, "rate": rate, "eta": eta}


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` columns with "…", else padded.

    >>> fit("train_model_on_everything", 12), fit("eval", 6)
    ('train_model…', 'eval  ')
    """
    return text[: width - 1] + "…" if len(text) > width else text.ljust(width)


def _columns(widths: dict[str, int]) -> tuple[Any, ...]:
    from rich.progress import BarColumn, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.table import Column
    from rich.text import Text

    def one_line() -> Column:  # never wraps: a narrow terminal cuts, with "…"
        return Column(no_wrap=True, overflow="ellipsis")

    class Counts(ProgressColumn):
        """``done/total``, running, failures in red (and cancelled, if any)."""

        def render(self, task: Any) -> Text:
            f = task.fields
            total = int(task.total or 0)
            width = f["width"]
            text = Text(f"{f['done']:>{width}}/{total:<{width}}", style="progress.download")
            text.append(f"  {f['running']} running", style="cyan")
            if f["failed"]:
                text.append(f"  {f['failed']} failed", style="bold red")
            if f["cancelled"]:
                text.append(f"  {f['cancelled']} cancelled", style="yellow")
            return text

    class Rate(ProgressColumn):
        """Finished elements per second (or per minute when slow)."""

        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            if not speed:
                return Text("   -  ", style="progress.data.speed")
            if speed < 0.1:
                return Text(f"{speed * 60:5.1f}/min", style="progress.data.speed")
            return Text(f"{speed:5.1f}/s", style="progress.data.speed")

    columns: list[Any] = [
        TextColumn("[bold blue]{task.fields[aj]}", table_column=one_line()),
        TextColumn("{task.description}", markup=False, table_column=one_line()),
        BarColumn(bar_width=widths["bar"], table_column=one_line()),
        Counts(table_column=one_line()),
    ]
    if widths["rate"]:
        columns.append(Rate(table_column=one_line()))
    if widths["eta"]:
        columns.append(TimeRemainingColumn(table_column=one_line()))
    return tuple(columns)


class RichProgress:
    """One ``rich.progress`` bar per array job; a title line with the run id.

    ``console`` defaults to a rich console on stderr.
    """

    def __init__(self, console: Any = None) -> None:
        from rich.console import Console

        self._console = console if console is not None else Console(stderr=True)
        self._progress: Any = None
        self._bars: dict[str, Any] = {}
        self._width, self._digits = 4, 1  # of the names and counts of the first bars
        self._started = False
        self.unreachable = ""  # "cluster unreachable since ...": shown in the title
        # what the run does besides its elements ("creating the environment (once): ...")
        self.note = ""

    def _ensure(self, run: Any) -> Any:
        if self._progress is None:
            from rich.progress import Progress
            from rich.text import Text

            display = self

            class Titled(Progress):
                def get_renderables(self) -> Any:
                    # inside the live region: cleared with the bars on Ctrl-C
                    title = Text.assemble(
                        ("lazyslurm run ", "bold"),
                        run.id,
                        (display.unreachable, "bold red"),
                        (f"  {display.note}" if display.note else "", "yellow"),
                    )
                    title.no_wrap, title.overflow = True, "ellipsis"
                    yield title
                    yield from super().get_renderables()

            longest = max((2 * aj.depth + len(aj.name) for aj in run.array_jobs), default=4)
            self._digits = max((len(str(aj.size)) for aj in run.array_jobs), default=1)
            ids = max((len(aj.id) for aj in run.array_jobs), default=3)
            widths = layout(self._console.width, ids, longest, self._digits)
            self._width = widths["name"]
            self._progress = Titled(
                *_columns(widths),
                console=self._console,
                refresh_per_second=4,
                transient=False,
                auto_refresh=False,
            )
            self._add_bars(run)
        return self._progress

    def _add_bars(self, run: Any) -> None:
        """A bar per array job not shown yet: all of them at first, then the subgraphs
        that tasks returned (dynamic expansion), indented by their depth."""
        assert self._progress is not None
        for aj in run.array_jobs:
            if aj.id in self._bars:
                continue
            self._bars[aj.id] = self._progress.add_task(
                fit("  " * aj.depth + aj.name, self._width),
                total=aj.size,
                width=self._digits,
                aj=aj.id,
                done=0,
                running=0,
                failed=0,
                cancelled=0,
            )

    def _update(self, run: Any, snap: Any) -> None:
        progress = self._ensure(run)
        if len(self._bars) < len(run.array_jobs):
            self._add_bars(run)
        since = getattr(snap, "unreachable_since", None)
        self.unreachable = (
            ""
            if since is None
            else f"  cluster unreachable since {time.strftime('%H:%M:%S', time.localtime(since))}"
            f": last known states ({(snap.unreachable_reason or '')[:120]})"
        )
        self.note = getattr(snap, "note", "")
        for aj in run.array_jobs:
            counts: dict[str, int] = {}
            for s in snap.states.get(aj.id, ()):
                counts[s] = counts.get(s, 0) + 1
            progress.update(
                self._bars[aj.id],
                completed=sum(counts.get(s, 0) for s in _ENDED),
                done=counts.get(DONE, 0),
                running=counts.get(RUNNING, 0),
                failed=counts.get(FAILED, 0),
                cancelled=counts.get(CANCELLED, 0),
            )

    def on_submit(self, run: Any) -> None:
        self._ensure(run)

    def on_poll(self, run: Any, snap: Any) -> None:
        # shown from the first poll, so a run submitted and never waited on leaves no
        # display running (and the terminal's cursor as it was)
        if not self._started and not snap.finished:
            self._ensure(run).start()
            self._started = True
        self._update(run, snap)
        if self._started:
            self._progress.refresh()

    def on_done(self, run: Any) -> None:
        if run.last_snapshot is None:
            return
        self._update(run, run.last_snapshot)
        if self._started:
            self._progress.refresh()
            self._progress.stop()
            self._started = False
        else:  # finished before a poll saw it run (or off a terminal): print it once
            for renderable in self._progress.get_renderables():
                self._console.print(renderable)

    def on_interrupt(self, run: Any, line: str) -> None:
        """Ctrl-C: remove the live bars (no stale frame left behind)."""
        if self._started:
            self._progress.live.transient = True
            self._progress.stop()
            self._started = False


def install_interrupt_hook() -> None:
    """Make an uncaught :class:`~lazyslurm.errors.RunInterrupted` print its one line
    instead of a traceback (other exceptions go to the previous ``sys.excepthook``), then
    end the program by SIGINT, as an uncaught plain ``KeyboardInterrupt`` does: a shell
    sees status 130 and stops its loop (Python itself does this only for the exact type).
    In an interactive session (``python -i``, the REPL) the line is all.

    Installed when a Ctrl-C cancels a run, not at import.
    """
    previous = sys.excepthook
    if getattr(previous, "_lazyslurm_interrupt", False):
        return

    def hook(tp: type[BaseException], value: BaseException, tb: Any) -> None:
        from lazyslurm.errors import RunInterrupted

        if isinstance(value, RunInterrupted):
            print(str(value), file=sys.stderr)
            if not (hasattr(sys, "ps1") or sys.flags.interactive):
                _die_by_sigint_at_exit()
            return
        previous(tp, value, tb)

    hook._lazyslurm_interrupt = True  # type: ignore[attr-defined]
    sys.excepthook = hook


def _die_by_sigint_at_exit() -> None:
    """At interpreter exit, once the other exit functions ran, die by SIGINT."""
    import atexit

    def die() -> None:
        import os
        import signal

        atexit.unregister(die)
        atexit._run_exitfuncs()  # those registered before this one (it runs first)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)

    atexit.register(die)


class NotebookProgress(RichProgress):
    """The same bars in a notebook: rendered to HTML by rich and shown with one
    ``IPython.display`` output, updated in place at every poll (no ipywidgets needed)."""

    def __init__(self) -> None:
        import io

        from rich.console import Console

        # the bars are drawn into this console's record, never to a stream
        super().__init__(
            Console(
                file=io.StringIO(),
                record=True,
                width=110,
                force_terminal=True,
                force_jupyter=False,
                color_system="truecolor",
            )
        )
        self._handle: Any = None

    def _bundle(self) -> dict[str, str]:
        console = self._console
        for renderable in self._progress.get_renderables():
            console.print(renderable)
        text = console.export_text(clear=False)
        html = console.export_html(
            inline_styles=True,
            code_format=(
                "<pre style=\"font-family:Menlo,'DejaVu Sans Mono',consolas,monospace;"
                'line-height:1.25;margin:0">{code}</pre>'
            ),
        )  # clears the record for the next frame
        return {"text/plain": text.rstrip(), "text/html": html}

    def _show(self, bundle: dict[str, str]) -> None:
        from IPython.display import display

        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)

    def on_poll(self, run: Any, snap: Any) -> None:
        self._update(run, snap)
        if self._handle is not None or not snap.finished:
            self._show(self._bundle())

    def on_done(self, run: Any) -> None:
        if run.last_snapshot is not None:
            self._update(run, run.last_snapshot)
            self._show(self._bundle())

    def on_interrupt(self, run: Any, line: str) -> None:
        """Ctrl-C (interrupt the kernel): the bars give way to the one line."""
        if self._handle is not None:
            self._handle.update({"text/plain": line}, raw=True)
