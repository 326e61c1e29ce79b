"""Know before you spend: what a graph will ask of Slurm, before anything is submitted.

``preview(*exprs)`` plans the graph as ``compute`` would and returns a :class:`Preview`:
per array job and in total, the elements, the requested cpus / memory / GPUs per element,
the **worst case** core-hours, GPU-hours and memory (GB) hours from the time limits, the
throttle, the stage, and what the cache already holds. It also asks the backend when
each array job would start (on Slurm: ``sbatch --test-only`` with its real flags, every
array job in one round trip) and reports the scheduler's own words where it cannot.
Everything it asks goes through the backend's capabilities (``cluster_facts``,
``expected_starts``): this module speaks no Slurm. A task whose ``mem`` or ``time`` is
``"auto"`` shows what it learned from its past runs, and from how many
(:meth:`Preview.learned_lines`).

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

import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from lazyslurm.backends.base import Start
from lazyslurm.errors import BudgetExceededError
from lazyslurm.planning.cost import (
    UNBOUNDED,
    ClusterFacts,
    JobCost,
    PartitionFacts,
    TotalCost,
    job_cost,
    needs_facts,
    plan_costs,
    total_cost,
)
from lazyslurm.usage import Usage, usage

if TYPE_CHECKING:
    from lazyslurm.cluster import Cluster
    from lazyslurm.planning.planner import Plan

__all__ = [
    "UNBOUNDED",
    "ClusterFacts",
    "JobCost",
    "PartitionFacts",
    "Preview",
    "Start",
    "TotalCost",
    "Usage",
    "check_budget",
    "job_cost",
    "preview",
    "preview_plan",
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


# --------------------------------------------------------------------------- the preview


@attrs.frozen
class Preview:
    """What a graph will ask of the cluster: per array job and in total. Submits nothing.

    ``jobs``: a :class:`JobCost` per array job, in submission order; ``cached``: nodes
    found in the store (not run again); ``session``: nodes already computed in this
    cluster session; ``starts``: array job id -> :class:`Start` (Slurm backends);
    ``backend``: the backend's name; ``learned``: array job id -> what a task with
    ``mem``/``time`` ``"auto"`` learned from its past runs, in words.
    """

    jobs: tuple[JobCost, ...]
    cached: int = 0
    session: int = 0
    starts: Mapping[str, Start] = attrs.field(factory=dict)
    backend: str = ""
    learned: Mapping[str, str] = attrs.field(factory=dict)

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

    def learned_lines(self) -> list[str]:
        """One line per array job whose task learns its requests: what, from how many
        runs (or that there is no history yet)."""
        names = {c.id: c.name for c in self.jobs}
        return [f"{aj} {names.get(aj, '')}: {text}" for aj, text in self.learned.items()]

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
        learned = self.learned_lines()
        if learned:
            out += ["", 'learned requests (mem/time "auto"):', *(f"  {n}" for n in learned)]
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
        learned = "".join(f"<li>{e(n)}</li>" for n in self.learned_lines())
        return (
            f"<div class='lazyslurm-preview'><ul>{summary}</ul>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
            + (f"<p>assumed:</p><ul>{notes}</ul>" if notes else "")
            + (f"<p>learned requests:</p><ul>{learned}</ul>" if learned else "")
            + "</div>"
        )

    def exceeds(self, max_core_hours: float) -> bool:
        """Whether the worst case may use more than ``max_core_hours`` (unbounded does)."""
        worst = self.total.core_hours
        return worst is None or worst > max_core_hours


def preview_plan(
    cl: Cluster, plan: Plan, *, start: bool = True, cached: int = 0, session: int = 0
) -> Preview:
    """The :class:`Preview` of an already made plan. The backend is asked for the
    partitions' defaults (its one probe) when some task leaves its time unset, and
    (``start``) for every array job's expected start."""
    backend = cl.backend
    defaults = backend.defaults
    facts: ClusterFacts | None = None
    if plan.array_jobs and (start or needs_facts(plan.array_jobs, defaults)):
        facts = backend.cluster_facts()
    starts = backend.expected_starts(plan.array_jobs) if start and plan.array_jobs else {}
    jobs = plan_costs(plan.array_jobs, defaults=defaults, facts=facts)
    learned = {
        aj.id: aj.learned.describe(aj.resources) for aj in plan.array_jobs if aj.learned is not None
    }
    return Preview(
        jobs,
        cached=cached,
        session=session,
        starts=starts,
        backend=cl.backend_name,
        learned=learned,
    )


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
# What a run used (requested against used, per task) is lazyslurm.usage's report:
# ``usage(run_id)`` here is the same function.
