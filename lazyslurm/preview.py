"""Know before you spend: what a graph will ask of Slurm, before anything is submitted.

``preview(*exprs)`` plans the graph as ``compute`` would and returns a :class:`Preview`:
per array job and in total, the elements, the requested cpus / memory / GPUs per element,
the **worst case** core-hours, GPU-hours and memory (GB) hours from the time limits, the
throttle, the stage, and what the cache already holds. On the ``slurm`` and ``ssh``
backends it also asks Slurm when each array job would start (``sbatch --test-only`` with
its real flags, every array job in one shell round trip) and reports Slurm's own words
where it cannot.

The arithmetic is pure and lives in :mod:`lazyslurm.planning.cost` (:func:`job_cost`,
:func:`total_cost`; re-exported here), so that a dynamic expansion enforces the budget on
the node with the same numbers; where a task leaves its time or cpus unset, the cluster's
defaults are used, then the partition's ``DefaultTime`` (else its ``MaxTime``) where Slurm
told us; what is still unknown is reported as ``unbounded``.

>>> from lazyslurm.graph.resources import Resources
>>> c = job_cost("aj0", "train", 10, Resources(timeout_min=30, cpus_per_task=4, mem_mb=2048))
>>> c.core_hours, c.mem_gb_hours, c.gpu_hours
(20.0, 10.0, 0.0)
>>> job_cost("aj1", "f", 3, Resources()).core_hours is None    # no time limit: unbounded
True
"""

from __future__ import annotations

import datetime as _dt
import html
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from lazyslurm.errors import BudgetExceededError
from lazyslurm.graph.resources import Resources
from lazyslurm.planning.cost import (
    FACTS_SCRIPT,
    UNBOUNDED,
    ClusterFacts,
    JobCost,
    PartitionFacts,
    TotalCost,
    job_cost,
    needs_facts,
    parse_facts,
    plan_costs,
    sum_or_none,
    total_cost,
)

if TYPE_CHECKING:
    from lazyslurm.cluster import Cluster
    from lazyslurm.planning.planner import Plan

__all__ = [
    "UNBOUNDED",
    "ClusterFacts",
    "JobCost",
    "JobUsage",
    "PartitionFacts",
    "Preview",
    "Start",
    "TotalCost",
    "Usage",
    "check_budget",
    "job_cost",
    "parse_facts",
    "parse_test_only",
    "preview",
    "preview_plan",
    "start_query_script",
    "total_cost",
    "usage",
]

_PREVIEW_RUN = "preview"  # run id used in the --test-only flags (nothing is written)
_QUERY_TIMEOUT_S = 120.0  # the one round trip of partition facts and sbatch --test-only


def _hours(value: float | None) -> str:
    if value is None:
        return UNBOUNDED
    if value == 0:
        return "0"
    return f"{value:.3g}" if value < 100 else f"{value:,.0f}"


def _mem(mb: int | None) -> str:
    if mb is None:
        return "?"
    return f"{mb / 1024:g}G" if mb >= 1024 and mb % 1024 == 0 else f"{mb}M"


def _time(minutes: int | None) -> str:
    if minutes is None:
        return UNBOUNDED
    d, rest = divmod(minutes, 1440)
    h, m = divmod(rest, 60)
    return f"{d}-{h:02d}:{m:02d}:00" if d else f"{h:02d}:{m:02d}:00"


# --------------------------------------------------------------------------- expected start


@attrs.frozen
class Start:
    """Slurm's answer to ``sbatch --test-only`` for one array job."""

    when: _dt.datetime | None  # None: Slurm could not say (see ``text``)
    text: str  # Slurm's own words

    def __str__(self) -> str:
        return self.when.strftime("%Y-%m-%d %H:%M:%S") if self.when else self.text


_TEST_ONLY_RE = re.compile(r"Job \d+ to start at (\S+)")


def parse_test_only(text: str) -> Start:
    """Slurm's ``sbatch --test-only`` output -> :class:`Start`.

    >>> s = parse_test_only("sbatch: Job 12 to start at 2026-12-02T05:15:26 using 1 "
    ...                     "processors on nodes vm in partition debug")
    >>> s.when.isoformat(), s.text[:38]
    ('2026-12-02T05:15:26', 'Job 12 to start at 2026-12-02T05:15:26')
    >>> parse_test_only("sbatch: error: invalid partition specified: nope\\n"
    ...                 "allocation failure: Invalid partition name specified").when is None
    True
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    words = " / ".join(ln.removeprefix("sbatch: ") for ln in lines) or "no answer from sbatch"
    m = _TEST_ONLY_RE.search(text)
    if m is None:
        return Start(None, words)
    try:
        when = _dt.datetime.fromisoformat(m.group(1))
    except ValueError:
        return Start(None, words)
    return Start(when, words)


def start_query_script(flags: Mapping[str, Sequence[str]]) -> str:
    """One script: the cluster facts, then ``sbatch --test-only`` per array job (flags
    quoted; a trivial ``--wrap`` stands in for the job script), each answer marked.

    >>> print(start_query_script({"aj0": ["--time=3", "--job-name=a b"]}).splitlines()[-1])
    echo LZ-START aj0; sbatch --test-only --time=3 '--job-name=a b' --wrap=true 2>&1
    """
    q = shlex.quote
    lines = [FACTS_SCRIPT.rstrip("\n")]
    for aj, fl in flags.items():
        args = " ".join(q(f) for f in fl)
        lines.append(f"echo LZ-START {q(aj)}; sbatch --test-only {args} --wrap=true 2>&1")
    return "\n".join(lines)


def _split_starts(text: str) -> dict[str, Start]:
    out: dict[str, Start] = {}
    chunks = re.split(r"^LZ-START (\S+)\n", text, flags=re.MULTILINE)
    for aj, body in zip(chunks[1::2], chunks[2::2], strict=True):
        out[aj] = parse_test_only(body)
    return out


def _ask_slurm(backend: Any, plan: Plan, *, start: bool) -> tuple[ClusterFacts, dict[str, Start]]:
    """Facts and (with ``start``) every array job's expected start: one round trip."""
    from lazyslurm.planning.sbatch import sbatch_flags
    from lazyslurm.store import RunLayout

    flags: dict[str, list[str]] = {}
    if start:
        layout = RunLayout.of(_PREVIEW_RUN, backend.workdir)
        for aj in plan.array_jobs:
            job = attrs.evolve(aj, dependencies=(), after=())  # alone: --test-only has no deps
            flags[aj.id] = sbatch_flags(
                job, run_id=_PREVIEW_RUN, layout=layout, defaults=backend.defaults
            )
    res = backend.shell.run(start_query_script(flags), timeout_s=_QUERY_TIMEOUT_S)
    head, _, _ = res.stdout.partition("LZ-START ")
    return parse_facts(head), _split_starts(res.stdout)


# --------------------------------------------------------------------------- the preview


@attrs.frozen
class Preview:
    """What a graph will ask of the cluster: per array job and in total. Submits nothing.

    ``jobs``: a :class:`JobCost` per array job, in submission order; ``cached``: nodes
    found in the store (not run again); ``session``: nodes already computed in this
    cluster session; ``starts``: array job id -> :class:`Start` (Slurm backends);
    ``backend``: the backend's name.
    """

    jobs: tuple[JobCost, ...]
    cached: int = 0
    session: int = 0
    starts: Mapping[str, Start] = attrs.field(factory=dict)
    backend: str = ""

    @property
    def total(self) -> TotalCost:
        return total_cost(self.jobs)

    @property
    def first_start(self) -> Start | None:
        """Slurm's expected start of the first stage (the earliest of its array jobs)."""
        first = [self.starts[c.id] for c in self.jobs if c.stage == 0 and c.id in self.starts]
        known = [s for s in first if s.when is not None]
        if known:
            return min(known, key=lambda s: s.when)  # type: ignore[arg-type,return-value]
        return first[0] if first else None

    def summary_lines(self) -> list[str]:
        """The top lines: jobs, worst case, throttle, cache, expected start."""
        t = self.total
        bounded = ""
        if t.core_hours is None:
            known = sum(c.core_hours or 0.0 for c in self.jobs)
            unbounded = [c.id for c in self.jobs if c.core_hours is None]
            bounded = (
                f" ({_hours(known)} core-hours in the array jobs with a time limit; no limit "
                f"for {', '.join(unbounded[:4])}{' ...' if len(unbounded) > 4 else ''})"
            )
        lines = [
            f"{t.array_jobs} array job(s) (sbatch calls), {t.elements} element(s) in "
            f"{t.stages} stage(s), at most {t.at_once} at once",
            f"worst case: {_hours(t.core_hours)} core-hours, {_hours(t.gpu_hours)} GPU-hours, "
            f"{_hours(t.mem_gb_hours)} GB-hours of memory (every element running to its "
            f"time limit){bounded}",
        ]
        if self.cached or self.session:
            lines.append(
                f"not run again: {self.cached} node(s) found in the cache, {self.session} "
                "already computed in this session"
            )
        first = self.first_start
        if first is not None:
            lines.append(f"expected start (Slurm, first stage): {first}")
        elif self.jobs and self.backend in ("local", "sync"):
            lines.append(f"expected start: at once (backend {self.backend!r} runs here)")
        return lines

    def rows(self) -> list[list[str]]:
        """The table's rows (strings), one per array job."""
        out = []
        for c in self.jobs:
            chunk = f" {c.chunk + 1}/{c.nchunks}" if c.nchunks > 1 else ""
            start = self.starts.get(c.id)
            out.append(
                [
                    c.id,
                    c.name + chunk,
                    str(c.stage),
                    str(c.elements),
                    str(c.throttle or "-"),
                    str(c.cpus),
                    _mem(c.mem_mb),
                    str(c.gpus),
                    _time(c.time_min),
                    _hours(c.core_hours),
                    _hours(c.gpu_hours),
                    _hours(c.mem_gb_hours),
                    "" if start is None else str(start),
                ]
            )
        return out

    HEADERS = (
        "ARRAY JOB",
        "TASK",
        "STAGE",
        "ELEMENTS",
        "THROTTLE",
        "CPUS",
        "MEM",
        "GPUS",
        "TIME",
        "CORE-H",
        "GPU-H",
        "GB-H",
        "START",
    )

    def assumptions(self) -> list[str]:
        """What was assumed where the tasks left a value unset, once per distinct note."""
        seen: dict[str, list[str]] = {}
        for c in self.jobs:
            for note in c.assumptions:
                seen.setdefault(note, []).append(c.id)
        return [f"{', '.join(ids)}: {note}" for note, ids in seen.items()]

    def __str__(self) -> str:
        rows = self.rows()
        headers = list(self.HEADERS)
        if not self.starts:
            headers.pop()
            rows = [r[:-1] for r in rows]
        cells = [headers, *rows]
        widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
        left = {0, 1, len(self.HEADERS) - 1}
        table = [
            "  ".join(
                cell.ljust(widths[i]) if i in left else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
            for row in cells
        ]
        notes = self.assumptions()
        out = [*self.summary_lines()]
        if self.jobs:
            out += ["", *table]
        else:
            out.append("nothing to run")
        if notes:
            out += ["", "assumed:", *(f"  {n}" for n in notes)]
        if self.starts:
            out += [
                "",
                "START: Slurm's estimate (sbatch --test-only) were each array job submitted "
                "alone now; dependencies delay later stages",
            ]
        return "\n".join(out)

    def _repr_html_(self) -> str:
        e = html.escape
        head = "".join(f"<th>{e(h)}</th>" for h in self.HEADERS[: 13 if self.starts else 12])
        body = "".join(
            "<tr>" + "".join(f"<td>{e(c)}</td>" for c in (r if self.starts else r[:-1])) + "</tr>"
            for r in self.rows()
        )
        summary = "".join(f"<li>{e(line)}</li>" for line in self.summary_lines())
        notes = "".join(f"<li>{e(n)}</li>" for n in self.assumptions())
        return (
            f"<div class='lazyslurm-preview'><ul>{summary}</ul>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<p>assumed:</p><ul>{notes}</ul>" if notes else "")
            + "</div>"
        )

    def exceeds(self, max_core_hours: float) -> bool:
        """Whether the worst case may use more than ``max_core_hours`` (unbounded does)."""
        worst = self.total.core_hours
        return worst is None or worst > max_core_hours


def _slurm_backend(cl: Cluster) -> Any:
    from lazyslurm.backends.slurm import SlurmBackend

    backend = cl.backend
    return backend if isinstance(backend, SlurmBackend) else None


def preview_plan(
    cl: Cluster, plan: Plan, *, start: bool = True, cached: int = 0, session: int = 0
) -> Preview:
    """The :class:`Preview` of an already made plan. On Slurm, one round trip asks for the
    partitions' defaults and (``start``) every array job's ``sbatch --test-only``; with
    ``start=False`` it is made only if some task leaves its time unset."""
    slurm = _slurm_backend(cl)
    defaults = slurm.defaults if slurm is not None else Resources()
    facts: ClusterFacts | None = None
    starts: dict[str, Start] = {}
    if slurm is not None and plan.array_jobs and (start or needs_facts(plan.array_jobs, defaults)):
        facts, starts = _ask_slurm(slurm, plan, start=start)
    jobs = plan_costs(plan.array_jobs, defaults=defaults, facts=facts)
    return Preview(jobs, cached=cached, session=session, starts=starts, backend=cl.backend_name)


def preview(
    *exprs: Any, cluster: Cluster | None = None, cache: bool | None = None, start: bool = True
) -> Preview:
    """What ``compute(*exprs)`` would ask of the cluster now, worst case; submits nothing.

    ``start=False`` skips asking Slurm for the expected start (``sbatch --test-only``).
    """
    from lazyslurm.cache import plan_with_store
    from lazyslurm.cluster import resolve_cluster
    from lazyslurm.graph.traverse import collect, lift_outputs

    cl = resolve_cluster(cluster)
    _, roots = lift_outputs(exprs)
    plan, found = plan_with_store(cl, roots, cache)
    session = 0
    if cl.session.computed():
        session = sum(1 for j in collect(roots) if cl.session.is_computed(j.key))
    return preview_plan(cl, plan, start=start, cached=len(found), session=session)


def check_budget(cl: Cluster, plan: Plan, max_core_hours: float, *, cached: int = 0) -> float:
    """Raise :class:`~lazyslurm.errors.BudgetExceededError` (nothing submitted) if the
    plan's worst case may exceed ``max_core_hours``; else return that worst case
    (core-hours), which the run's dynamic expansions count against the same budget."""
    p = preview_plan(cl, plan, start=False, cached=cached)
    worst = p.total.core_hours
    if not p.exceeds(max_core_hours) and worst is not None:
        return worst
    why = (
        f"its worst case is {_hours(worst)} core-hours"
        if worst is not None
        else "its worst case is unbounded (a task has no time limit: set time=...)"
    )
    top = "\n".join(f"  {line}" for line in p.summary_lines())
    # the unbounded first, then the most core-hours
    heavy = sorted(p.jobs, key=lambda c: (c.core_hours is not None, -(c.core_hours or 0.0)))[:3]
    biggest = "\n".join(
        f"  {c.id} {c.name}: {c.elements} x {c.cpus} cpu x {_time(c.time_min)} = "
        f"{_hours(c.core_hours)} core-hours"
        for c in heavy
    )
    msg = (
        f"refusing to submit: the budget is max_core_hours={max_core_hours:g} but {why}. "
        f"Nothing was submitted.\n{top}\nlargest array jobs:\n{biggest}\n"
        "Lower the time limits or the element counts, or raise max_core_hours."
    )
    raise BudgetExceededError(msg, worst_core_hours=worst, max_core_hours=max_core_hours)


# --------------------------------------------------------------------------- after the run


@attrs.frozen
class JobUsage:
    """One array job of a finished run: its worst case and what sacct says was used."""

    cost: JobCost
    recorded: int  # elements sacct has a row for
    core_hours: float  # used: elapsed x allocated cpus, added up
    max_elapsed_s: int  # the longest element

    @property
    def ratio(self) -> float | None:
        """Used / worst case core-hours (None if the worst case is unbounded or zero)."""
        worst = self.cost.core_hours
        return None if not worst else self.core_hours / worst


@attrs.frozen
class Usage:
    """A run's worst case against what accounting recorded; ``note`` explains a skip."""

    run_id: str
    jobs: tuple[JobUsage, ...] = ()
    note: str = ""

    @property
    def available(self) -> bool:
        return not self.note

    def __str__(self) -> str:
        if self.note:
            return f"run {self.run_id}: {self.note}"
        worst = sum_or_none(u.cost.core_hours for u in self.jobs)
        used = sum(u.core_hours for u in self.jobs)
        ratio = f" ({used / worst:.1%} of the worst case)" if worst else ""
        lines = [
            f"run {self.run_id}: used {used:.3g} core-hours of a worst case of "
            f"{_hours(worst)}{ratio} (sacct: elapsed x allocated cpus)"
        ]
        cells = [
            [
                "ARRAY JOB",
                "TASK",
                "ELEMENTS",
                "RECORDED",
                "TIME LIMIT",
                "LONGEST",
                "WORST CORE-H",
                "USED CORE-H",
                "USED/WORST",
            ]
        ]
        for u in self.jobs:
            c = u.cost
            cells.append(
                [
                    c.id,
                    c.name,
                    str(c.elements),
                    str(u.recorded),
                    _time(c.time_min),
                    f"{u.max_elapsed_s}s",
                    _hours(c.core_hours),
                    f"{u.core_hours:.3g}",
                    "-" if u.ratio is None else f"{u.ratio:.1%}",
                ]
            )
        widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
        lines += [
            "  ".join(
                cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
            for row in cells
        ]
        return "\n".join(lines)


_SACCT_USAGE = "JobID,ElapsedRaw,AllocCPUS,State"


def _parse_usage(text: str) -> dict[str, list[tuple[int, int]]]:
    """Master job id -> [(elapsed s, allocated cpus)] per recorded element."""
    from lazyslurm.backends.slurm import parse_array_ids

    out: dict[str, list[tuple[int, int]]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or "." in parts[0] or not parts[1].isdigit():
            continue
        master, indices = parse_array_ids(parts[0])
        if indices is not None and len(indices) != 1:
            continue  # a range of elements that never started
        cpus = int(parts[2]) if parts[2].isdigit() else 0
        out.setdefault(master, []).append((int(parts[1]), cpus))
    return out


def usage(run_id: str, cluster: Cluster | None = None) -> Usage:
    """Compare a run's worst case with what ``sacct`` says it used (one round trip).

    Where there is no accounting (a ``local`` backend, or a Slurm cluster without
    slurmdbd) the result only carries a ``note`` saying so.
    """
    from lazyslurm.cache import read_run
    from lazyslurm.cluster import resolve_cluster

    cl = resolve_cluster(cluster)
    _, run, _ = read_run(cl, run_id)  # its handle: records and Slurm job ids
    slurm = _slurm_backend(cl)
    if slurm is None:
        return Usage(run_id, note=f"backend {cl.backend_name!r} has no Slurm accounting (sacct)")
    if slurm.status_source != "sacct":
        return Usage(
            run_id,
            note="this cluster has no accounting (AccountingStorageType=none): sacct cannot "
            "say what the run used",
        )
    ids = [run.job_ids.get(aj.id, "") for aj in run.array_jobs]
    if not all(ids):
        return Usage(run_id, note="the run has no Slurm job ids (was it submitted?)")
    script = (
        FACTS_SCRIPT + f"sacct -X -n -P -j {shlex.quote(','.join(ids))} -o {_SACCT_USAGE} 2>&1 | "
        "sed 's/^/LZ-ACCT /'"
    )
    res = slurm.shell.run(script)
    facts = parse_facts(res.stdout)
    acct = "\n".join(ln[8:] for ln in res.stdout.splitlines() if ln.startswith("LZ-ACCT "))
    used = _parse_usage(acct)
    stage: dict[str, int] = {}
    jobs = []
    for aj, job_id in zip(run.array_jobs, ids, strict=True):
        stage[aj.id] = 1 + max((stage[up] for _, up in aj.dependencies), default=-1)
        cost = job_cost(
            aj.id,
            aj.name,
            aj.size,
            aj.resources,
            stage=stage[aj.id],
            defaults=slurm.defaults,
            facts=facts,
        )
        rows = used.get(job_id, [])
        jobs.append(
            JobUsage(
                cost=cost,
                recorded=len(rows),
                core_hours=sum(e * c for e, c in rows) / 3600,
                max_elapsed_s=max((e for e, _ in rows), default=0),
            )
        )
    return Usage(run_id, tuple(jobs))
