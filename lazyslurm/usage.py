"""What a run used, per task: requested against used memory, CPU and time (docs/usage.md).

The figures come from the runner, everywhere: every outcome record says what its element
used (wall and CPU time, peak memory, the request it ran with; read from the records'
headers and the packs' usage trailers, never the results, in one command:
:func:`lazyslurm.cache.usage_lines`). Where the scheduler keeps accounting
(``backend.accounting``: on Slurm, one ``sacct``), its figures override the runner's for
the elements that ran alone (Elapsed, TotalCPU, MaxRSS when it sampled one), give every
attempt of an element (requeues, resubmissions) and the request it ran with, and cover
the elements that left no record (``OUT_OF_MEMORY``, ``TIMEOUT``).

``run.usage()``, ``lazyslurm usage RUN [--json]``, the notebook display and
``visualize(run=run, usage=True)`` all show this report.

>>> r = Request(mem_mb=1024, cpus=2, time_min=10)
>>> a = Attempt(1, r, "COMPLETED", elapsed_s=60.0, cpu_s=30.0, peak_mb=100.0, source="runner")
>>> e = ElementUsage("aj0", 0, "f-0", "f", (a,))
>>> t = summarize("f", ("aj0",), r, [e], reserved=1 / 3)
>>> round(t.core_hours_allocated * 3600), round(t.core_hours_used * 3600), t.warnings[0][:39]
(120, 30, 'f: memory used under 25% of the request')
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from lazyslurm.graph.resources import Learned
from lazyslurm.planning.cost import JobCost, job_cost
from lazyslurm.planning.learn import Sample, learn, percentile

if TYPE_CHECKING:
    from lazyslurm.backends.base import Accounted, RunHandle
    from lazyslurm.cache import UsageLine
    from lazyslurm.cluster import Cluster
    from lazyslurm.planning.planner import ArrayJob

__all__ = [
    "MEM_UNDER",
    "TIME_OVER",
    "Attempt",
    "ElementUsage",
    "Request",
    "TaskUsage",
    "Usage",
    "duration_text",
    "hours_text",
    "mem_text",
    "percent_text",
    "report",
    "summarize",
    "usage",
]

MEM_UNDER = 0.25  # warn when the peak is under this share of the memory asked
TIME_OVER = 0.90  # warn when an element ran over this share of its time limit


@attrs.frozen
class Request:
    """What an attempt asked for: memory (MB, per node), CPUs and time limit (minutes);
    None where unknown."""

    mem_mb: float | None = None
    cpus: int = 1
    time_min: int | None = None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen
class Attempt:
    """One attempt of an element (1: the first; a requeued or resubmitted element has
    more), the request it ran with and what it used.

    ``source``: where the figures come from: ``runner`` (its outcome record), ``sacct``,
    or ``sacct+runner`` (sacct's, the runner's where sacct has none: a peak sacct did not
    sample). ``measured``: how the peak was measured (``hwm``: the element's own
    high-water mark; ``proc``: its process's, an upper bound; ``wait``: its process's,
    seen by the parent that reaped it; ``sacct``: MaxRSS of its largest step)."""

    number: int
    request: Request
    state: str  # Slurm's words: COMPLETED, FAILED, OUT_OF_MEMORY, TIMEOUT, CRASHED, ...
    elapsed_s: float | None = None
    cpu_s: float | None = None
    peak_mb: float | None = None
    source: str = ""
    measured: str = ""
    node: str = ""
    start: float | None = None  # Unix time
    runner: Mapping[str, str] | None = attrs.field(default=None, eq=False)  # its own line

    def to_json(self) -> dict[str, Any]:
        out = attrs.asdict(self, recurse=False)
        out["request"] = self.request.to_json()
        out["runner"] = dict(self.runner) if self.runner is not None else None
        return out


@attrs.frozen
class ElementUsage:
    """One element of a run (element ``index`` of ``array_job``, node ``key``) and its
    attempts, oldest first (none: it has not run, or left no trace)."""

    array_job: str
    index: int
    key: str
    task: str
    attempts: tuple[Attempt, ...] = ()
    packed: bool = False  # run with others in one Slurm element (its figures: the runner's)

    @property
    def last(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def to_json(self) -> dict[str, Any]:
        return {
            "array_job": self.array_job,
            "index": self.index,
            "key": self.key,
            "task": self.task,
            "packed": self.packed,
            "attempts": [a.to_json() for a in self.attempts],
        }


def mem_text(mb: float | None) -> str:
    if mb is None:
        return "-"
    if mb >= 1024:
        return f"{mb / 1024:.3g}G"
    return f"{mb:.0f}M"


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = round(seconds)
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def percent_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def hours_text(value: float | None) -> str:
    """Core-hours for a table: three digits, and tiny amounts as such.

    >>> hours_text(None), hours_text(0), hours_text(12.345), hours_text(0.0000361)
    ('unbounded', '0', '12.3', '<0.001')
    """
    if value is None:
        return "unbounded"
    if value == 0:
        return "0"
    return "<0.001" if value < 0.001 else f"{value:.3g}"


def _time_option(minutes: int) -> str:
    h, m = divmod(minutes, 60)
    return f"{h}:{m:02d}:00"


@attrs.frozen
class TaskUsage:
    """One task of a run (its array jobs with one request): requested against used.

    ``peak_mb``/``elapsed_s`` are the largest of its elements' last attempts (p95 too);
    core-hours: ``reserved`` is the worst case (every element to its time limit: what the
    scheduler plans for), ``allocated`` what the attempts held (elapsed x CPUs, every
    attempt), ``used`` their CPU time, ``wasted`` allocated but idle (allocated - used).
    ``suggest``: what ``mem="auto"``/``time="auto"`` would ask after this run."""

    task: str
    array_jobs: tuple[str, ...]
    request: Request
    elements: int
    measured: int = 0
    peak_mb: float | None = None
    peak_p95_mb: float | None = None
    elapsed_s: float | None = None
    elapsed_p95_s: float | None = None
    cpu_s: float = 0.0
    core_hours_reserved: float | None = None
    core_hours_allocated: float = 0.0
    core_hours_used: float = 0.0
    attempts: int = 0  # every attempt of every element (more than elements: retries)
    states: Mapping[str, int] = attrs.field(factory=dict)  # last attempts' states
    learned: Learned | None = None
    learned_text: str = ""  # what was learned, in words (Learned.describe)
    suggest: Mapping[str, str] = attrs.field(factory=dict)
    warnings: tuple[str, ...] = ()

    @property
    def core_hours_wasted(self) -> float:
        return max(0.0, self.core_hours_allocated - self.core_hours_used)

    @property
    def mem_ratio(self) -> float | None:
        """Peak over the memory asked."""
        if self.peak_mb is None or not self.request.mem_mb:
            return None
        return self.peak_mb / self.request.mem_mb

    @property
    def cpu_ratio(self) -> float | None:
        """CPU time used over CPU time allocated."""
        if not self.core_hours_allocated:
            return None
        return self.core_hours_used / self.core_hours_allocated

    @property
    def time_ratio(self) -> float | None:
        """The longest element over its time limit."""
        if self.elapsed_s is None or not self.request.time_min:
            return None
        return self.elapsed_s / (self.request.time_min * 60)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "array_jobs": list(self.array_jobs),
            "elements": self.elements,
            "measured": self.measured,
            "attempts": self.attempts,
            "states": dict(self.states),
            "request": self.request.to_json(),
            "learned": self.learned.to_json() if self.learned is not None else None,
            "used": {
                "peak_mb": self.peak_mb,
                "peak_p95_mb": self.peak_p95_mb,
                "elapsed_s": self.elapsed_s,
                "elapsed_p95_s": self.elapsed_p95_s,
                "cpu_s": self.cpu_s,
            },
            "efficiency": {
                "mem": self.mem_ratio,
                "cpu": self.cpu_ratio,
                "time": self.time_ratio,
            },
            "core_hours": {
                "reserved": self.core_hours_reserved,
                "allocated": self.core_hours_allocated,
                "used": self.core_hours_used,
                "wasted": self.core_hours_wasted,
            },
            "suggest": dict(self.suggest),
            "warnings": list(self.warnings),
        }

    def row(self) -> list[str]:
        """The text table's row (:data:`Usage.HEADERS`)."""
        r = self.request
        return [
            self.task,
            f"{self.measured}/{self.elements}",
            mem_text(r.mem_mb),
            mem_text(self.peak_mb),
            percent_text(self.mem_ratio),
            str(r.cpus),
            percent_text(self.cpu_ratio),
            "-" if r.time_min is None else duration_text(r.time_min * 60),
            duration_text(self.elapsed_s),
            percent_text(self.time_ratio),
            hours_text(self.core_hours_reserved),
            hours_text(self.core_hours_allocated),
            hours_text(self.core_hours_wasted),
        ]


@attrs.frozen
class Usage:
    """What a run used, per task (:class:`TaskUsage`) and per element
    (:class:`ElementUsage`), with warnings. ``sources``: where the figures come from
    (``runner``, ``sacct``); ``note``: what is missing (no accounting, say)."""

    run_id: str
    tasks: tuple[TaskUsage, ...] = ()
    elements: tuple[ElementUsage, ...] = ()
    sources: tuple[str, ...] = ()
    note: str = ""

    HEADERS = (
        "TASK",
        "MEASURED",
        "MEM ASKED",
        "PEAK",
        "MEM%",
        "CPUS",
        "CPU%",
        "TIME LIMIT",
        "LONGEST",
        "TIME%",
        "WORST CORE-H",
        "CORE-H",
        "WASTED CORE-H",
    )

    @property
    def available(self) -> bool:
        """Whether any element has figures."""
        return any(t.measured for t in self.tasks)

    @property
    def warnings(self) -> tuple[str, ...]:
        return tuple(w for t in self.tasks for w in t.warnings)

    @property
    def core_hours_wasted(self) -> float:
        return sum(t.core_hours_wasted for t in self.tasks)

    def retried(self) -> list[ElementUsage]:
        """The elements with more than one attempt."""
        return [e for e in self.elements if len(e.attempts) > 1]

    def summary(self) -> str:
        allocated = sum(t.core_hours_allocated for t in self.tasks)
        measured = sum(t.measured for t in self.tasks)
        total = sum(t.elements for t in self.tasks)
        where = " and ".join(self.sources) or "nowhere"
        return (
            f"run {self.run_id}: {measured} of {total} element(s) measured (figures from "
            f"{where}); {hours_text(allocated)} core-hours allocated, "
            f"{hours_text(self.core_hours_wasted)} of them idle"
        )

    def __str__(self) -> str:
        lines = [self.summary()]
        if self.note:
            lines.append(f"note: {self.note}")
        cells = [list(self.HEADERS), *(t.row() for t in self.tasks)]
        widths = [max(len(r[i]) for r in cells) for i in range(len(self.HEADERS))]
        lines += [
            "  ".join(
                c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
            ).rstrip()
            for row in cells
        ]
        if self.warnings:
            lines += ["", "warnings:", *(f"  {w}" for w in self.warnings)]
        learned = [f"  {t.task}: {t.learned_text}" for t in self.tasks if t.learned_text]
        if learned:
            lines += ["", "learned requests:", *learned]
        retried = self.retried()
        if retried:
            lines += ["", "attempts:"]
            for e in retried[:20]:
                steps = " -> ".join(_attempt_text(a) for a in e.attempts)
                lines.append(f"  {e.array_job}[{e.index}] {e.key}: {steps}")
            if len(retried) > 20:
                lines.append(f"  ... and {len(retried) - 20} more element(s)")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run_id,
            "sources": list(self.sources),
            "note": self.note,
            "core_hours_wasted": self.core_hours_wasted,
            "tasks": [t.to_json() for t in self.tasks],
            "elements": [e.to_json() for e in self.elements],
            "warnings": list(self.warnings),
        }

    def json(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    def _repr_html_(self) -> str:
        from lazyslurm.registry import executor

        return str(executor().usage_html(self))


def _attempt_text(a: Attempt) -> str:
    r = a.request
    limit = "" if r.time_min is None else f", limit {duration_text(r.time_min * 60)}"
    return (
        f"{a.number} {a.state} (asked {mem_text(r.mem_mb)}{limit}; peak {mem_text(a.peak_mb)}, "
        f"{duration_text(a.elapsed_s)})"
    )


# --------------------------------------------------------------------------- assembling


def _epoch(text: str) -> float | None:
    """sacct's ``2026-01-02T03:04:05`` (local time) as a Unix time; None for Unknown."""
    try:
        return _dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def _runner_state(line: UsageLine) -> str:
    if line.kind == "error":
        return "CRASHED" if line.fields.get("mb") == "wait" else "FAILED"
    return "COMPLETED"


def _runner_attempt(line: UsageLine, base: Request, number: int | None = None) -> Attempt:
    """An attempt from the runner's line (its request: what the line says, else
    ``base``, the array job's)."""
    rm, rc, rt = line.number("rm"), line.number("rc"), line.number("rt")
    request = Request(
        mem_mb=rm if rm is not None else base.mem_mb,
        cpus=int(rc) if rc is not None else base.cpus,
        time_min=int(rt) if rt is not None else base.time_min,
    )
    peak = line.number("m")
    a = line.number("a")
    return Attempt(
        number=number if number is not None else int(a) if a is not None else 1,
        request=request,
        state=_runner_state(line),
        elapsed_s=line.number("w"),
        cpu_s=line.number("c"),
        peak_mb=None if peak is None else peak / 1024,
        source="runner",
        measured=line.fields.get("mb", ""),
        node=line.fields.get("h", ""),
        start=line.number("s"),
        runner=line.fields,
    )


def _sacct_attempt(row: Accounted, base: Request) -> Attempt:
    return Attempt(
        number=row.attempt,
        request=Request(
            mem_mb=row.req_mem_mb if row.req_mem_mb is not None else base.mem_mb,
            cpus=row.cpus or base.cpus,
            time_min=row.time_limit_min if row.time_limit_min is not None else base.time_min,
        ),
        state=row.state,
        elapsed_s=float(row.elapsed_s) if row.start not in ("", "Unknown", "None") else None,
        cpu_s=row.total_cpu_s,
        peak_mb=row.max_rss_mb,
        source="sacct",
        measured="sacct" if row.max_rss_mb is not None else "",
        node=row.node,
        start=_epoch(row.start),
    )


def _merge(sacct: Attempt, line: UsageLine) -> Attempt:
    """sacct's attempt, with the runner's figures where sacct has none."""
    mine = _runner_attempt(line, sacct.request, sacct.number)
    peak, measured = sacct.peak_mb, sacct.measured
    if peak is None:
        peak, measured = mine.peak_mb, mine.measured
    return attrs.evolve(
        sacct,
        elapsed_s=sacct.elapsed_s if sacct.elapsed_s is not None else mine.elapsed_s,
        cpu_s=sacct.cpu_s if sacct.cpu_s is not None else mine.cpu_s,
        peak_mb=peak,
        measured=measured,
        source="sacct+runner",
        start=sacct.start if sacct.start is not None else mine.start,
        runner=line.fields,
    )


def element_usage(
    aj: ArrayJob,
    index: int,
    base: Request,
    line: UsageLine | None,
    rows: Sequence[Accounted],
) -> ElementUsage:
    """Element ``index`` of ``aj``: its runner line (if any) and sacct's rows of its
    Slurm element (every attempt; for a packed one, the pack's: not its own figures)."""
    key = aj.keys[index]
    packed = aj.pack > 1
    attempts: list[Attempt] = []
    if packed or not rows:
        if line is not None:
            attempts.append(_runner_attempt(line, base))
        elif rows and rows[-1].state not in ("COMPLETED", "RUNNING", "PENDING"):
            # the pack ended badly before this element left a record
            attempts.append(
                Attempt(
                    number=rows[-1].attempt,
                    request=_sacct_attempt(rows[-1], base).request,
                    state=rows[-1].state,
                    source="sacct",
                    node=rows[-1].node,
                )
            )
    else:  # sacct's attempts; the runner's figures fill in the one that wrote its record
        numbers = [row.attempt for row in rows]
        wrote = int(line.number("a") or 0) if line is not None else 0
        if wrote not in numbers:
            wrote = numbers[-1]
        for row in rows:
            a = _sacct_attempt(row, base)
            if line is not None and row.attempt == wrote:
                a = _merge(a, line)
            attempts.append(a)
    return ElementUsage(aj.id, index, key, aj.name, tuple(attempts), packed)


def summarize(
    task: str,
    array_jobs: tuple[str, ...],
    request: Request,
    elements: Sequence[ElementUsage],
    *,
    reserved: float | None = None,
    allocated: float | None = None,
    used: float | None = None,
    learned: Learned | None = None,
    learned_text: str = "",
    workers: int = 1,
) -> TaskUsage:
    """One task's row from its elements. ``allocated``/``used`` (core-hours): the
    scheduler's own for packed elements (their Slurm elements'), else worked out from
    the attempts (elapsed x CPUs, CPU time); ``workers``: packed elements that ran at
    once in one Slurm element (their peaks add up there)."""
    last = [e.last for e in elements if e.last is not None]
    peaks = [a.peak_mb for a in last if a.peak_mb is not None]
    times = [a.elapsed_s for a in last if a.elapsed_s is not None]
    every = [a for e in elements for a in e.attempts]
    if allocated is None:
        allocated = sum((a.elapsed_s or 0.0) * a.request.cpus for a in every) / 3600 / workers
    cpu_s = sum(a.cpu_s or 0.0 for a in every)
    if used is None:
        used = cpu_s / 3600
    states: dict[str, int] = {}
    for a in last:
        states[a.state] = states.get(a.state, 0) + 1
    measured = sum(1 for a in last if a.peak_mb is not None or a.elapsed_s is not None)
    samples = [
        Sample("", e.key, f.peak_mb * 1024 if f.peak_mb is not None else None, f.elapsed_s)
        for e in elements
        if (f := e.last) is not None and f.state == "COMPLETED"
    ]
    advice = learn(samples)
    suggest: dict[str, str] = {}
    if advice.mem_mb is not None:
        suggest["mem"] = f"{advice.mem_mb}M"
    if advice.timeout_min is not None:
        suggest["time"] = _time_option(advice.timeout_min)
    peak = max(peaks) if peaks else None
    longest = max(times) if times else None
    warnings: list[str] = []
    asked = request.mem_mb
    if peak is not None and asked and peak * workers < MEM_UNDER * asked:
        fix = f'ask mem="{suggest["mem"]}"' if "mem" in suggest else "ask less"
        together = f" ({workers} at once: {mem_text(peak * workers)})" if workers > 1 else ""
        warnings.append(
            f"{task}: memory used under {MEM_UNDER:.0%} of the request: peak "
            f"{mem_text(peak)}{together} of {mem_text(asked)} asked "
            f'({peak * workers / asked:.0%}); {fix}, or mem="auto"'
        )
    if longest is not None and request.time_min and longest > TIME_OVER * request.time_min * 60:
        fix = f'ask time="{suggest["time"]}"' if "time" in suggest else "ask more"
        warnings.append(
            f"{task}: time over {TIME_OVER:.0%} of the limit: the longest element ran "
            f"{duration_text(longest)} of {duration_text(request.time_min * 60)} "
            f'({longest / (request.time_min * 60):.0%}); {fix}, or time="auto"'
        )
    for state, words in (("OUT_OF_MEMORY", "ran out of memory"), ("TIMEOUT", "ran out of time")):
        n = states.get(state, 0)
        if n:
            asked_text = (
                mem_text(request.mem_mb)
                if state == "OUT_OF_MEMORY"
                else (duration_text(request.time_min * 60) if request.time_min else "its limit")
            )
            warnings.append(
                f"{task}: {n} element(s) {words} ({state}) at {asked_text}: ask more, or "
                "let on-cluster retries escalate it"
            )
    return TaskUsage(
        task=task,
        array_jobs=array_jobs,
        request=request,
        elements=len(elements),
        measured=measured,
        peak_mb=peak,
        peak_p95_mb=percentile(peaks) if peaks else None,
        elapsed_s=longest,
        elapsed_p95_s=percentile(times) if times else None,
        cpu_s=cpu_s,
        core_hours_reserved=reserved,
        core_hours_allocated=allocated,
        core_hours_used=used,
        attempts=len(every),
        states=states,
        learned=learned,
        learned_text=learned_text,
        suggest=suggest,
        warnings=tuple(warnings),
    )


def report(
    run_id: str,
    array_jobs: Sequence[ArrayJob],
    lines: Iterable[UsageLine],
    rows: Iterable[Accounted] = (),
    *,
    costs: Mapping[str, JobCost] | None = None,
    sources: tuple[str, ...] = (),
    note: str = "",
) -> Usage:
    """The report from what was read: the runner's ``lines`` and the scheduler's
    ``rows`` (every attempt), for the run's ``array_jobs``; ``costs``: each array job's
    request and worst case (:func:`~lazyslurm.planning.cost.job_cost`). Pure."""
    by_key = {u.key: u for u in lines}
    by_element: dict[tuple[str, int], list[Accounted]] = {}
    for row in rows:
        by_element.setdefault((row.array_job, row.index), []).append(row)
    for attempts in by_element.values():
        attempts.sort(key=lambda r: r.attempt)
    costs = costs or {}
    groups: dict[tuple[Any, ...], list[ArrayJob]] = {}
    for aj in array_jobs:
        groups.setdefault((aj.name, aj.resources, aj.pack > 1), []).append(aj)
    elements: list[ElementUsage] = []
    tasks: list[TaskUsage] = []
    for (name, _, packed), ajs in groups.items():
        first = costs.get(ajs[0].id)
        base = Request(
            mem_mb=first.mem_mb if first is not None else ajs[0].resources.mem_mb,  # type: ignore[arg-type]
            cpus=first.cpus if first is not None else ajs[0].resources.cpus_per_task or 1,
            time_min=first.time_min if first is not None else ajs[0].resources.timeout_min,  # type: ignore[arg-type]
        )
        mine: list[ElementUsage] = []
        for aj in ajs:
            for i, key in enumerate(aj.keys):
                slurm = by_element.get((aj.id, aj.slurm_index(i)), [])
                mine.append(element_usage(aj, i, base, by_key.get(key), slurm))
        allocated = used = None
        workers = 1
        if packed:
            workers = max(1, min(base.cpus, ajs[0].pack)) if base.cpus > 1 else 1
            packs = [
                row
                for aj in ajs
                for j in range(aj.slurm_size)
                for row in by_element.get((aj.id, j), [])
            ]
            if packs:  # the scheduler's own figures of the Slurm elements
                allocated = sum(r.elapsed_s * (r.cpus or base.cpus) for r in packs) / 3600
                used = sum(r.total_cpu_s or 0.0 for r in packs) / 3600
        worst = [costs.get(aj.id) for aj in ajs]
        reserved: float | None = None
        if all(c is not None and c.core_hours is not None for c in worst):
            reserved = sum(c.core_hours or 0.0 for c in worst if c is not None)
        tasks.append(
            summarize(
                name,
                tuple(aj.id for aj in ajs),
                base,
                mine,
                reserved=reserved,
                allocated=allocated,
                used=used,
                learned=ajs[0].learned,
                learned_text=ajs[0].learned.describe(ajs[0].resources) if ajs[0].learned else "",
                workers=workers,
            )
        )
        elements.extend(mine)
    return Usage(run_id, tuple(tasks), tuple(elements), sources, note)


def usage(run: Any, cluster: Cluster | None = None) -> Usage:
    """What ``run`` (a :class:`~lazyslurm.execute.Run` or a run id) used, per task and
    per element: the runner's records everywhere (one command), the scheduler's
    accounting where there is one (one more: on Slurm, ``sacct``)."""
    from lazyslurm.cache import usage_lines
    from lazyslurm.cluster import resolve_cluster

    if isinstance(run, str):
        cl = resolve_cluster(cluster)
        handle = _handle(cl, run)
    else:
        cl = cluster or run.cluster
        handle = run.handle
        if handle is None:
            return Usage(run.id or "", note="nothing ran: every node was already computed")
    backend = cl.backend
    lines = usage_lines(cl, runs=[handle.run_id])
    accounted = backend.accounting(handle)
    facts = backend.cluster_facts()
    costs = {
        aj.id: job_cost(
            aj.id, aj.name, aj.size, aj.resources, defaults=backend.defaults, facts=facts
        )
        for aj in handle.array_jobs
    }
    sources: tuple[str, ...] = ("runner",) if lines else ()
    if accounted.rows:
        sources += ("sacct",)
    note = accounted.note
    if note and lines:
        note = f"{note}; the figures are the runner's own"
    return report(
        handle.run_id,
        handle.array_jobs,
        lines,
        accounted.rows,
        costs=costs,
        sources=sources,
        note=note,
    )


def _handle(cl: Cluster, run_id: str) -> RunHandle:
    """A run's handle from its directory, with the subgraphs its tasks submitted."""
    from lazyslurm.cache import read_run
    from lazyslurm.dynamic import extend_handle, read_records

    _, handle, _ = read_run(cl, run_id)
    return extend_handle(handle, read_records(cl.backend, run_id))
