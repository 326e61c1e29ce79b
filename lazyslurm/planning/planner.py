"""Graph -> stages -> array jobs -> dependency kinds. Pure functions, no I/O.

>>> from lazyslurm.graph import task
>>> @task
... def f(x): return x
>>> @task
... def g(xs): return xs
>>> a = f.map(range(4))
>>> b = f.options(mem="1G").map(a)   # element-wise over a, other resources
>>> p = make_plan([g(b)])
>>> [(aj.name, aj.size, [(k, u.id) for k, u in aj.dependencies]) for aj in p.array_jobs]
[('f', 4, []), ('f', 4, [('aftercorr', 'aj0')]), ('g', 1, [('afterok', 'aj1')])]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any

import attrs

from lazyslurm.graph.core import Job, Task, _gc_paused
from lazyslurm.graph.resources import Resources
from lazyslurm.graph.traverse import collect

__all__ = ["AFTERCORR", "AFTEROK", "DEFAULT_MAX_ARRAY_SIZE", "ArrayJob", "Plan", "make_plan"]

AFTEROK = "afterok"
AFTERCORR = "aftercorr"
DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize: indices 0..1000
_key = attrgetter("key")


@attrs.frozen(eq=False)
class ArrayJob:
    """One Slurm array job: elements of one task with one set of resources, one stage."""

    id: str
    task: Task[..., Any]
    resources: Resources
    elements: tuple[Job, ...]
    stage: int
    chunk: int = 0
    nchunks: int = 1
    dependencies: tuple[tuple[str, ArrayJob], ...] = ()
    after: tuple[ArrayJob, ...] = ()  # the subset of dependencies that is ordering only

    @property
    def name(self) -> str:
        """The task's name."""
        return self.task.name

    @property
    def size(self) -> int:
        return len(self.elements)

    @property
    def throttle(self) -> int | None:
        return self.resources.max_concurrent

    def __repr__(self) -> str:
        deps = ", ".join(f"{k}:{u.id}" for k, u in self.dependencies)
        return f"ArrayJob({self.id} {self.name}[{self.size}] stage={self.stage} deps=[{deps}])"


@attrs.frozen(eq=False)
class Plan:
    """What ``compute`` will submit: array jobs in submission (topological) order.

    ``location`` maps a node key to ``(array_job, index)``; ``external`` maps keys that
    are already computed (and referenced by this plan) to the run holding their result.
    """

    array_jobs: tuple[ArrayJob, ...]
    location: Mapping[str, tuple[ArrayJob, int]]
    external: Mapping[str, str | None]
    max_array_size: int
    cached: frozenset[str] = frozenset()  # keys found in the store, not run again

    @property
    def stages(self) -> tuple[tuple[ArrayJob, ...], ...]:
        by_stage: dict[int, list[ArrayJob]] = {}
        for aj in self.array_jobs:
            by_stage.setdefault(aj.stage, []).append(aj)
        return tuple(tuple(by_stage[s]) for s in sorted(by_stage))

    @property
    def nodes(self) -> int:
        return len(self.location)

    def _repr_html_(self) -> str:
        """Notebook display: one row per array job and the jobs picture."""
        from lazyslurm.notebook import plan_html

        return plan_html(self)

    def describe(self) -> list[str]:
        """One line per array job, for printing."""
        lines = []
        for aj in self.array_jobs:
            deps = ", ".join(f"{k} {u.id}" for k, u in aj.dependencies) or "none"
            res = " ".join(f"{k}={v}" for k, v in aj.resources.describe().items())
            chunk = f" chunk {aj.chunk + 1}/{aj.nchunks}" if aj.nchunks > 1 else ""
            lines.append(
                f"{aj.id}: {aj.name} x{aj.size}{chunk} (stage {aj.stage}) {res} after: {deps}"
            )
        return lines


def _stages(nodes: Sequence[Job], done: Mapping[str, Any]) -> dict[str, int]:
    """Stage of each node: 0 for sources, else one more than its latest dependency."""
    stage: dict[str, int] = {}
    get = stage.get
    for job in nodes:
        deps, order = job._deps, job._order
        if not deps and not order:  # most nodes of a sweep: skip building a tuple
            stage[job.key] = 0
            continue
        s = 0
        for dep in (deps + order) if order else deps:
            ds = get(dep.key)
            if ds is not None and ds >= s:
                s = ds + 1
        stage[job.key] = s
    return stage


@_gc_paused()  # planning builds O(nodes) objects, none of them cyclic garbage
def make_plan(
    roots: Iterable[Job],
    *,
    done: Mapping[str, str | None] | None = None,
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
) -> Plan:
    """Plan everything ``roots`` need that is not in ``done`` (key -> run holding it).

    Sibling calls of one task with equal resources in the same stage share an array job
    (a Python loop of calls plans like ``task.map``); arrays over ``max_array_size`` are
    split into chunks. An edge is ``aftercorr`` when element i needs exactly element i of
    an upstream array of the same size (more than one element: for single jobs the two are
    the same and ``afterok`` reads plainer), else ``afterok`` on the whole upstream array.
    Dependencies on ``done`` nodes are dropped (their results are read from the store).
    """
    if max_array_size < 1:
        msg = f"max_array_size must be at least 1, got {max_array_size}"
        raise ValueError(msg)
    done = done or {}
    nodes = collect(roots, done)
    stage = _stages(nodes, done)

    # sibling merging: (stage, function, resources) -> elements, in first-seen order.
    # Each distinct (function, name, resources) is numbered once per Task object, so the
    # (attrs) Resources hash runs once per task, not once per node.
    kinds: dict[tuple[str, str, Resources], int] = {}
    kind_of_task: dict[int, int] = {}  # id(Task) -> kind; the tasks outlive this loop
    groups: dict[tuple[int, int], list[Job]] = {}
    for job in nodes:
        t = job._task
        kind = kind_of_task.get(id(t))
        if kind is None:
            kind = kinds.setdefault((t._token, t._name, t._resources), len(kinds))
            kind_of_task[id(t)] = kind
        group = groups.get((stage[job.key], kind))
        if group is None:
            groups[(stage[job.key], kind)] = [job]
        else:
            group.append(job)

    # chunking; stage-major order keeps submission order topological
    pending: list[tuple[int, Task[..., Any], Resources, tuple[Job, ...], int, int]] = []
    for (s, _), jobs in sorted(groups.items(), key=lambda kv: kv[0][0]):
        res = jobs[0]._task._resources  # the group's first-seen resources
        nchunks = -(-len(jobs) // max_array_size)
        for c in range(nchunks):
            part = tuple(jobs[c * max_array_size : (c + 1) * max_array_size])
            pending.append((s, part[0]._task, res, part, c, nchunks))

    ids = [f"aj{i}" for i in range(len(pending))]
    where: dict[str, tuple[int, int]] = {}
    keys_of: list[list[str]] = []
    for i, (_, _, _, part, _, _) in enumerate(pending):
        keys = list(map(_key, part))
        keys_of.append(keys)
        where.update(zip(keys, zip(repeat(i), range(len(keys))), strict=True))

    external: dict[str, str | None] = {}
    built: list[ArrayJob] = []
    for i, (s, t, res, part, c, nchunks) in enumerate(pending):
        touch: dict[int, dict[int, set[int]]] = {}  # upstream -> element -> its indices
        data_up: set[int] = set()
        for idx, job in enumerate(part):
            if not job._deps and not job._order:
                continue
            for is_data, deps_of in ((True, job._deps), (False, job._order)):
                for dep in deps_of:
                    loc = where.get(dep.key)
                    if loc is None:
                        external[dep.key] = done.get(dep.key)
                        continue
                    touch.setdefault(loc[0], {}).setdefault(idx, set()).add(loc[1])
                    if is_data:
                        data_up.add(loc[0])
        deps = []
        for up in sorted(touch):
            by_element = touch[up]
            elementwise = (
                1 < len(pending[up][3]) == len(part) == len(by_element)
                and all(len(ixs) == 1 and idx in ixs for idx, ixs in by_element.items())
            )
            deps.append((AFTERCORR if elementwise else AFTEROK, built[up]))
        built.append(
            ArrayJob(
                id=ids[i],
                task=t,
                resources=res,
                elements=part,
                stage=s,
                chunk=c,
                nchunks=nchunks,
                dependencies=tuple(deps),
                after=tuple(built[u] for u in sorted(touch) if u not in data_up),
            )
        )
    location: dict[str, tuple[ArrayJob, int]] = {}
    for aj, keys in zip(built, keys_of, strict=True):
        location.update(zip(keys, zip(repeat(aj), range(len(keys))), strict=True))
    return Plan(
        array_jobs=tuple(built),
        location=location,
        external=external,
        max_array_size=max_array_size,
    )
