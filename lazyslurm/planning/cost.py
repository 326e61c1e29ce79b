"""The worst case of a plan, pure: what preview, the budget check and a dynamic expansion
(on the node) compute, in one place.

Where a task leaves its time or cpus unset, the cluster's defaults are used, then the
partition's ``DefaultTime`` (else its ``MaxTime``) where the scheduler told us
(:class:`ClusterFacts`: the Slurm backend's probe fills them in); what is still unknown is
reported as ``unbounded`` (``None``). Imports only the graph's ``Resources``: it runs on
compute nodes too.

>>> from lazyslurm.graph.resources import Resources
>>> c = job_cost("aj0", "train", 10, Resources(timeout_min=30, cpus_per_task=4, mem_mb=2048))
>>> c.core_hours, c.mem_gb_hours, c.gpu_hours
(20.0, 10.0, 0.0)
>>> job_cost("aj1", "f", 3, Resources()).core_hours is None    # no time limit: unbounded
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from lazyslurm.graph.resources import Resources

__all__ = [
    "UNBOUNDED",
    "ClusterFacts",
    "JobCost",
    "PartitionFacts",
    "TotalCost",
    "job_cost",
    "needs_facts",
    "plan_costs",
    "sum_or_none",
    "total_cost",
]

UNBOUNDED = "unbounded"

# --------------------------------------------------------------------------- cluster facts


@attrs.frozen
class PartitionFacts:
    """What a worst case needs of a partition (``scontrol show partition -o``)."""

    name: str
    default: bool = False
    default_time_min: int | None = None  # DefaultTime; None: NONE
    max_time_min: int | None = None  # MaxTime; None: UNLIMITED
    def_mem_per_cpu_mb: int | None = None


@attrs.frozen
class ClusterFacts:
    """Partitions and the cluster-wide ``DefMemPerCPU``, as Slurm reported them."""

    partitions: Mapping[str, PartitionFacts] = attrs.field(factory=dict)
    def_mem_per_cpu_mb: int | None = None

    def partition(self, name: str | None) -> PartitionFacts | None:
        """The partition ``name``, or the default partition when ``name`` is None."""
        if name is not None:
            return self.partitions.get(name)
        return next((p for p in self.partitions.values() if p.default), None)


# --------------------------------------------------------------------------- arithmetic


def _gpu_count(gpus: str | None) -> int:
    """GPUs in a ``gpus`` value: ``"2"`` or ``"a100:2"``."""
    if not gpus:
        return 0
    last = gpus.rsplit(":", 1)[-1]
    return int(last) if last.isdigit() else 0


def _gres_gpus(gres: str | None) -> int:
    """GPUs per node in a gres: ``"gpu:2"``, ``"gpu:a100:2"``, ``"gpu"`` (1); other gres: 0."""
    total = 0
    for part in (gres or "").split(","):
        bits = part.strip().split(":")
        if bits[0] != "gpu":
            continue
        total += int(bits[-1]) if len(bits) > 1 and bits[-1].isdigit() else 1
    return total


@attrs.frozen
class JobCost:
    """One array job's request and its worst case (``None`` where unbounded or unknown)."""

    id: str
    name: str
    elements: int
    stage: int = 0
    chunk: int = 0
    nchunks: int = 1
    throttle: int | None = None
    cpus: int = 1  # per element
    mem_mb: int | None = None  # per element; None: unknown
    gpus: int = 0  # per element
    time_min: int | None = None  # the limit; None: unbounded
    partition: str | None = None
    assumptions: tuple[str, ...] = ()

    @property
    def at_once(self) -> int:
        """Elements that may run at the same time (the throttle, else all of them)."""
        return min(self.elements, self.throttle) if self.throttle else self.elements

    @property
    def hours(self) -> float | None:
        return None if self.time_min is None else self.time_min / 60

    @property
    def core_hours(self) -> float | None:
        h = self.hours
        return None if h is None else self.elements * self.cpus * h

    @property
    def gpu_hours(self) -> float | None:
        if self.gpus == 0:
            return 0.0
        h = self.hours
        return None if h is None else self.elements * self.gpus * h

    @property
    def mem_gb_hours(self) -> float | None:
        h = self.hours
        if h is None or self.mem_mb is None:
            return None
        return self.elements * self.mem_mb / 1024 * h


def job_cost(
    id: str,
    name: str,
    elements: int,
    resources: Resources,
    *,
    stage: int = 0,
    chunk: int = 0,
    nchunks: int = 1,
    defaults: Resources | None = None,
    facts: ClusterFacts | None = None,
) -> JobCost:
    """The worst case of one array job, saying what it assumed. Pure.

    A value the task leaves unset comes from ``defaults`` (the cluster's), then from
    ``facts`` (the partition's DefaultTime, else MaxTime; DefMemPerCPU), else: 1 cpu per
    task (Slurm's default), memory unknown, time ``unbounded``.
    """
    r = resources.with_defaults(defaults)  # the task's options, else the cluster's

    def pick(field: str) -> Any:
        return getattr(r, field)

    notes: list[str] = []
    part_name = pick("partition")
    part = facts.partition(part_name) if facts is not None else None
    where = f"partition {part.name!r}" if part is not None else "the partition"

    time_min = pick("timeout_min")
    if resources.timeout_min is None and time_min is not None:
        notes.append(f"time {time_min} min: the cluster's default")
    elif time_min is None and part is not None and part.default_time_min is not None:
        time_min = part.default_time_min
        notes.append(f"time {time_min} min: DefaultTime of {where} (no time set)")
    elif time_min is None and part is not None and part.max_time_min is not None:
        time_min = part.max_time_min
        notes.append(f"time {time_min} min: MaxTime of {where} (no time set, no DefaultTime)")
    elif time_min is None:
        known = "" if facts is None else f"; {where} has no DefaultTime and no MaxTime"
        notes.append(f"time: {UNBOUNDED} (no time set{known})")

    nodes = pick("nodes") or 1
    tasks = pick("ntasks") or nodes
    per_task = pick("cpus_per_task")
    if per_task is None:
        per_task = 1
        notes.append("cpus: 1 per task (Slurm's default; none set)")
    cpus = per_task * tasks

    gpus = _gpu_count(pick("gpus")) or _gres_gpus(pick("gres")) * nodes

    mem = pick("mem_mb")
    if mem is not None:
        mem *= nodes  # --mem is per node
    else:
        per_cpu = None
        if part is not None and part.def_mem_per_cpu_mb is not None:
            per_cpu = part.def_mem_per_cpu_mb
        elif facts is not None:
            per_cpu = facts.def_mem_per_cpu_mb
        if per_cpu is not None:
            mem = per_cpu * cpus
            notes.append(f"mem {mem}M: DefMemPerCPU {per_cpu}M x {cpus} cpus (no mem set)")
        else:
            notes.append("mem: unknown (no mem set; Slurm's default may be a whole node)")
    return JobCost(
        id=id,
        name=name,
        elements=elements,
        stage=stage,
        chunk=chunk,
        nchunks=nchunks,
        throttle=pick("max_concurrent"),
        cpus=cpus,
        mem_mb=mem,
        gpus=gpus,
        time_min=time_min,
        partition=part_name if part_name is not None else (part.name if part else None),
        assumptions=tuple(notes),
    )


def sum_or_none(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for v in values:
        if v is None:
            return None
        total += v
    return total


@attrs.frozen
class TotalCost:
    """Totals over array jobs; a worst case is ``None`` (unbounded) if any part is."""

    array_jobs: int
    elements: int
    at_once: int  # an upper bound: every array job's at_once added up
    stages: int
    core_hours: float | None
    gpu_hours: float | None
    mem_gb_hours: float | None


def total_cost(costs: Sequence[JobCost]) -> TotalCost:
    """Add up the array jobs' worst cases. Pure.

    >>> a = JobCost("aj0", "f", 4, time_min=60, cpus=2, throttle=3)
    >>> b = JobCost("aj1", "g", 1, stage=1, time_min=30)
    >>> t = total_cost([a, b])
    >>> t.elements, t.at_once, t.stages, t.core_hours
    (5, 4, 2, 8.5)
    """
    return TotalCost(
        array_jobs=len(costs),
        elements=sum(c.elements for c in costs),
        at_once=sum(c.at_once for c in costs),
        stages=len({c.stage for c in costs}),
        core_hours=sum_or_none(c.core_hours for c in costs),
        gpu_hours=sum_or_none(c.gpu_hours for c in costs),
        mem_gb_hours=sum_or_none(c.mem_gb_hours for c in costs),
    )


def needs_facts(array_jobs: Iterable[Any], defaults: Resources | None = None) -> bool:
    """Whether some array job's time is set neither by its task nor by ``defaults``: then
    only the partition's DefaultTime/MaxTime (:data:`FACTS_SCRIPT`) can bound it."""
    if defaults is not None and defaults.timeout_min is not None:
        return False
    return any(aj.resources.timeout_min is None for aj in array_jobs)


def plan_costs(
    array_jobs: Iterable[Any],
    *,
    defaults: Resources | None = None,
    facts: ClusterFacts | None = None,
) -> tuple[JobCost, ...]:
    """:func:`job_cost` of every array job of a plan (``ArrayJob`` records), in order.

    >>> from lazyslurm.graph import task
    >>> from lazyslurm.planning.planner import make_plan
    >>> f = task(time="02:00:00", cpus_per_task=2)(lambda x: x)
    >>> total_cost(plan_costs(make_plan(f.map(range(3)).jobs).array_jobs)).core_hours
    12.0
    """
    return tuple(
        job_cost(
            aj.id,
            aj.name,
            aj.size,
            aj.resources,
            stage=aj.stage,
            chunk=aj.chunk,
            nchunks=aj.nchunks,
            defaults=defaults,
            facts=facts,
        )
        for aj in array_jobs
    )
