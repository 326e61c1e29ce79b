"""Dynamic expansion: a task that returns a lazy value runs that subgraph from where it ran.

The runner (:mod:`lazyslurm.runner`) imports this module only when a task's value holds a
``Job``, ``JobArray`` or ``JobView``; then :func:`expand`:

1. plans the returned graph with the same planner (nodes already computed in the run, or
   named by it from earlier runs, are not planned again), with array job ids prefixed by
   the element that made them (``aj1_0_aj0``: element 0 of ``aj1``), so that they never
   clash with the run's own;
2. writes their spec files into the SAME run directory;
3. checks the run's limits (``dynamic_max_tasks``, ``max_core_hours``) and reserves its
   share under the run's lock, then hands the subgraph (:class:`Subgraph`) to the compute
   node side of the run's backend, the module its client named in the manifest
   (``start_subgraph``): on Slurm (:mod:`lazyslurm.backends.slurm.node`) it is submitted
   from here, held, and the already-queued dependents of this task are made to wait for
   it, so that no process or allocation waits; on the embedded backends
   (:mod:`lazyslurm.backends.local.node`) it runs inline, in this worker process;
4. writes ``dynamic/AJ.INDEX.json`` (the subgraph's array jobs, Slurm ids, the dependencies
   it added) and returns a :class:`~lazyslurm.store.Redirect` that the runner stores as the
   task's result: readers (the runner's loader, ``compute``, ``Run.attach``, the cache)
   follow it to the subgraph's outputs.

The client reads the records back (:func:`read_records`) and adds the array jobs to the
run it watches (:func:`extend_handle`): status, pictures and failures include them.
See docs/dynamic.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import shlex
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from lazyslurm.backends.base import (
    Backend,
    RunHandle,
    Snapshot,
    outcome_keys,
    snapshot_from_files,
)
from lazyslurm.errors import DynamicBudgetError, DynamicExpansionError, DynamicLimitError
from lazyslurm.graph.traverse import lift_outputs
from lazyslurm.planning.cost import JobCost, needs_facts, plan_costs, total_cost
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import (
    DEFAULT_MAX_ARRAY_SIZE,
    ArrayJob,
    Plan,
    make_plan,
    subgraph_prefix,
)
from lazyslurm.store import (
    INSIDE,
    Redirect,
    RunLayout,
    atomic_write,
    read_private,
    template_keys,
)

__all__ = [
    "DEFAULT_LIMITS",
    "Subgraph",
    "SubgraphRecord",
    "commit",
    "expand",
    "extend_handle",
    "fill_states",
    "known_records",
    "local_records",
    "locked",
    "parent_of",
    "read_records",
    "renamed",
]

DEFAULT_LIMITS = {"max_depth": 4, "max_tasks": 10_000}
_RECORD_VERSION = 1


@attrs.define
class SubgraphRecord:
    """What ``dynamic/AJ.INDEX.json`` says of the subgraph element ``INDEX`` of array job
    ``AJ`` returned: who made it (``parent``, ``key``, ``task``, ``depth``), what it is
    (``tasks``, its ``array_jobs`` as manifest entries, its ``outputs`` and the ``final``
    array jobs that make them), and what its submission did: the scheduler's ``job_ids``
    and the ``afterok`` edges ``added`` to dependents (array job -> final array jobs).
    ``core_hours``: its worst case, where the run has a budget; ``inline``: it ran in the
    worker that made it (embedded backends)."""

    parent: tuple[str, int]
    key: str
    task: str
    depth: int
    tasks: int
    outputs: list[str]
    final: list[str]
    array_jobs: list[dict[str, Any]]
    job_ids: dict[str, str] = attrs.field(factory=dict)
    added: dict[str, list[str]] = attrs.field(factory=dict)
    core_hours: float | None = None
    inline: bool = False

    def to_json(self) -> bytes:
        data = attrs.asdict(self)
        data["version"] = _RECORD_VERSION
        data["parent"] = list(self.parent)
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, text: str | bytes) -> SubgraphRecord:
        data = json.loads(text)
        data.pop("version", None)
        names = {f.name for f in attrs.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        fields["parent"] = (str(data["parent"][0]), int(data["parent"][1]))
        return cls(**fields)


# --------------------------------------------------------------------------- pure helpers


def renamed(plan: Plan, prefix: str) -> Plan:
    """``plan`` with every array job id prefixed (ids are bash names: keep them so).

    >>> from lazyslurm.graph import task
    >>> f = task(lambda x: x)
    >>> p = renamed(make_plan([f(f(1))]), "aj1_0_")
    >>> [(aj.id, aj.dependencies) for aj in p.array_jobs]
    [('aj1_0_aj0', ()), ('aj1_0_aj1', (('afterok', 'aj1_0_aj0'),))]
    """
    new = {aj.id: prefix + aj.id for aj in plan.array_jobs}
    ajs = tuple(
        attrs.evolve(
            aj,
            id=new[aj.id],
            dependencies=tuple((k, new[u]) for k, u in aj.dependencies),
            after=tuple(new[u] for u in aj.after),
        )
        for aj in plan.array_jobs
    )
    by_id = {aj.id: aj for aj in ajs}
    return attrs.evolve(
        plan,
        array_jobs=ajs,
        members={new[k]: v for k, v in plan.members.items()},
        location={k: (by_id[new[aj.id]], i) for k, (aj, i) in plan.location.items()},
    )


def extend_handle(handle: RunHandle, records: Sequence[SubgraphRecord]) -> RunHandle:
    """``handle`` with the array jobs of ``records`` inserted right after the array job
    that made them (the order stays topological), their Slurm ids, and the ``afterok``
    edges the expansions added to dependents. Returns ``handle`` itself if nothing is new.
    """
    ajs = list(handle.array_jobs)
    known = {aj.id for aj in ajs}
    ids = dict(handle.job_ids)
    added: dict[str, list[str]] = {}
    fresh = False
    for rec in sorted(records, key=lambda r: r.depth):
        for dep, finals in rec.added.items():
            added.setdefault(dep, []).extend(finals)
        ids.update(rec.job_ids)
        parent = rec.parent[0]
        new = [ArrayJob.from_manifest(e) for e in rec.array_jobs if e["id"] not in known]
        if not new:
            continue
        fresh = True
        known.update(aj.id for aj in new)
        at = next((n for n, aj in enumerate(ajs) if aj.id == parent), len(ajs) - 1) + 1
        while at < len(ajs) and ajs[at].id.startswith(f"{parent}_"):
            at += 1  # after the subgraphs of the parent's other elements
        ajs[at:at] = new
    out = []
    for aj in ajs:
        more = tuple(
            ("afterok", f) for f in added.get(aj.id, ()) if ("afterok", f) not in aj.dependencies
        )
        if more:
            fresh = True
            aj = attrs.evolve(aj, dependencies=aj.dependencies + tuple(dict.fromkeys(more)))
        out.append(aj)
    if not fresh:
        return handle
    # stages for display: a subgraph starts one stage after the array job that made it,
    # and everything downstream of it moves down accordingly
    stage: dict[str, int] = {}
    staged = []
    for aj in out:
        parent = parent_of(aj.id)
        s = stage[parent] + 1 if parent in stage and not aj.dependencies else aj.stage
        for _, up in aj.dependencies:
            if up in stage:
                s = max(s, stage[up] + 1)
        stage[aj.id] = s
        staged.append(aj if s == aj.stage else attrs.evolve(aj, stage=s))
    return attrs.evolve(handle, array_jobs=tuple(staged), job_ids=ids)


def known_records(handle: RunHandle) -> int:
    """How many subgraph records ``handle`` already holds (one per expanding element)."""
    return len({aj.id.rsplit("_", 1)[0] for aj in handle.array_jobs if aj.parent})


def parent_of(array_job: str) -> str | None:
    """The array job whose element submitted ``array_job`` (None for the run's own).

    >>> parent_of("aj1_0_aj0"), parent_of("aj1_0_aj0_3_aj2"), parent_of("aj1")
    ('aj1', 'aj1_0_aj0', None)
    """
    return ArrayJob(array_job, "", ()).parent


# --------------------------------------------------------------------------- client side


def read_records(backend: Backend, run_id: str) -> list[SubgraphRecord]:
    """The dynamic records of a run (one command; a local directory is listed directly)."""
    shell = backend.shell
    layout = RunLayout.of(run_id, backend.workdir)
    if shell.local_files:
        return local_records(layout)
    q = shlex.quote
    script = (
        f"cd {q(layout.dynamic_dir)} 2>/dev/null || exit 0\n"
        'for f in *.json; do [ -f "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] && '
        '{ cat "$f"; echo; }; done; true'
    )
    res = shell.run(script)
    return [SubgraphRecord.from_json(line) for line in res.stdout.splitlines() if line.strip()]


def local_records(layout: RunLayout) -> list[SubgraphRecord]:
    """The run's subgraph records, read from its local directory (on the node, or a
    client on the same file system)."""
    try:
        names = sorted(os.listdir(layout.dynamic_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if RunLayout.is_dynamic_record(name):
            out.append(SubgraphRecord.from_json(read_private(f"{layout.dynamic_dir}/{name}")))
    return out


def fill_states(backend: Any, handle: RunHandle, snap: Snapshot) -> Snapshot:
    """Add the array jobs a backend does not track (subgraphs run inline by a local
    worker) to ``snap``, from the run's result and error files."""
    missing = [aj for aj in handle.array_jobs if aj.id not in snap.states]
    if not missing:
        return snap
    layout = RunLayout.of(handle.run_id, backend.workdir)
    results, errors = outcome_keys(layout.root)
    part = snapshot_from_files(
        attrs.evolve(handle, array_jobs=tuple(missing)), results, errors, unfinished="PENDING"
    )
    return Snapshot(
        states={**snap.states, **part.states}, failures={**snap.failures, **part.failures}
    )


# --------------------------------------------------------------------------- runner side


def expand(
    value: Any,
    layout: RunLayout,
    array_job: str,
    index: int,
    key: str,
    header: Mapping[str, Any],
    run_one: Any,
) -> Redirect:
    """Plan and start the subgraph ``value`` holds; return the redirect to its outputs.
    ``run_one(run_dir, array_job, index)`` runs one element here (the runner's
    ``run_element``), for the embedded backends."""
    here = layout.root.rsplit("/", 1)[-1]
    manifest = json.loads(read_private(layout.manifest))
    config = manifest.get("dynamic") or {}
    limits = {**DEFAULT_LIMITS, **config.get("limits", {})}
    records = local_records(layout)
    parent = next((r for r in records if any(e["id"] == array_job for e in r.array_jobs)), None)
    depth = (parent.depth if parent else 0) + 1
    task = header.get("task", "")
    if depth > limits["max_depth"]:
        msg = (
            f"task {task!r} (key {key}) returned a lazy value {depth} levels deep; this run "
            f"allows {limits['max_depth']} (a runaway recursion?). Raise "
            f"Cluster(dynamic_max_depth=...) if this is meant"
        )
        raise DynamicLimitError(msg)

    templates, roots = lift_outputs([value])
    template = templates[0]
    results, _ = outcome_keys(layout.root)
    done: dict[str, str | None] = dict.fromkeys(results, here)
    for k, run in {**manifest.get("external", {}), **header.get("external", {})}.items():
        done.setdefault(k, run or here)
    plan = make_plan(  # not packed: a subgraph's results are found by run (Redirect)
        roots,
        done=done,
        max_array_size=config.get("max_array_size") or DEFAULT_MAX_ARRAY_SIZE,
        packing=False,
    )
    prefix = subgraph_prefix(array_job, index)
    plan = renamed(plan, prefix)
    outputs = template_keys([template])
    redirect = Redirect(template, {k: done.get(k) or here for k in outputs})
    if not plan.array_jobs:
        return redirect
    node = _node_side(config, manifest, task, key)
    budget = config.get("budget")
    costs = _costs(plan, config, node) if budget else ()
    files = encode_run(plan, run_id=here, outputs=outputs, by_value=bool(config.get("by_value")))
    specs = {INSIDE.spec(aj.id): files[INSIDE.spec(aj.id)] for aj in plan.array_jobs}
    finals = sorted({plan.location[k][0].id for k in outputs if k in plan.location})
    record = SubgraphRecord(
        parent=(array_job, index),
        key=key,
        task=task,
        depth=depth,
        tasks=plan.nodes,
        outputs=outputs,
        final=finals,
        array_jobs=[aj.to_manifest() for aj in plan.array_jobs],
        core_hours=total_cost(costs).core_hours if budget else None,  # None: unbounded
    )
    sub = Subgraph(plan, layout, here, prefix, array_job, config, manifest, record, run_one)
    with _reserved(layout, record, limits, budget, costs):
        for rel, data in specs.items():
            atomic_write(f"{layout.root}/{rel}", data)
        node.start_subgraph(sub)
    return redirect


def _costs(plan: Plan, config: Mapping[str, Any], node: Any) -> tuple[JobCost, ...]:
    """The worst case of each array job of ``plan``, as the client's budget check computes
    it (the cluster's task defaults from the manifest; the partitions' default time limits
    from the backend's node side, asked here, where a task sets no time)."""
    from lazyslurm.graph.resources import Resources

    defaults = Resources.from_options(**config.get("defaults", {}))
    facts = node.cost_facts() if needs_facts(plan.array_jobs, defaults) else None
    return plan_costs(plan.array_jobs, defaults=defaults, facts=facts)


def _node_side(config: Mapping[str, Any], manifest: Mapping[str, Any], task: str, key: str) -> Any:
    """The compute-node side of the run's backend (the module its client named in the
    manifest): what submits a subgraph from here."""
    name = config.get("node")
    if not name:
        backend = manifest.get("backend", "?")
        msg = (
            f"task {task!r} (key {key}) returned a lazy value, but backend {backend!r} has no "
            f"compute-node side to submit it from (its `node` is None): return values, or "
            f"run on a backend that expands (local, sync, slurm, ssh)"
        )
        raise DynamicExpansionError(msg)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        msg = (
            f"task {task!r} (key {key}) returned a lazy value, but the backend's node side "
            f"{name!r} cannot be imported where it runs ({exc}): install lazyslurm there"
        )
        raise DynamicExpansionError(msg) from exc


@attrs.frozen
class Subgraph:
    """A planned subgraph, for the backend's node side (``start_subgraph(sub)``): its
    ``plan`` (ids prefixed by ``prefix``), the run (``layout``, ``run_id``), the expanding
    element's ``array_job``, the run's ``config`` (the manifest's ``dynamic`` part) and
    ``manifest``, the ``record`` to fill (``job_ids``, ``added``) and commit, and
    ``run_one(run_dir, array_job, index)``, which runs one element here (embedded)."""

    plan: Plan
    layout: RunLayout
    run_id: str
    prefix: str
    array_job: str
    config: Mapping[str, Any]
    manifest: Mapping[str, Any]
    record: SubgraphRecord
    run_one: Any


def _held(layout: RunLayout, mine: str) -> tuple[int, float]:
    """Tasks and worst-case core-hours the run's expansions hold: their records, and the
    reservations of those still submitting (not ``mine``). Call under :func:`locked`."""
    tasks, hours = 0, 0.0
    try:
        names = sorted(os.listdir(layout.dynamic_dir))
    except (FileNotFoundError, NotADirectoryError):
        return tasks, hours
    for name in names:
        if name == mine or not (
            RunLayout.is_dynamic_record(name) or RunLayout.is_dynamic_reservation(name)
        ):
            continue
        try:
            held = json.loads(read_private(f"{layout.dynamic_dir}/{name}"))
        except FileNotFoundError:
            continue
        tasks += held.get("tasks", 0)
        hours += held.get("core_hours") or 0.0
    return tasks, hours


@contextlib.contextmanager
def _reserved(
    layout: RunLayout,
    record: SubgraphRecord,
    limits: Mapping[str, Any],
    budget: Mapping[str, Any] | None,
    costs: Sequence[JobCost],
) -> Iterator[None]:
    """Check the run's limits (``dynamic_max_tasks``, ``max_core_hours``) against what the
    run's expansions hold, and reserve this one's share, under the run's lock: concurrent
    expansions (elements of one map) see each other's reservations before they submit.
    The record (:func:`commit`) takes the reservation over; a failure drops it."""
    array_job, index = record.parent
    path = layout.dynamic_reservation(array_job, index)
    task, key, tasks = record.task, record.key, record.tasks
    with locked(layout):
        used, spent = _held(layout, path.rsplit("/", 1)[-1])
        if used + tasks > limits["max_tasks"]:
            msg = (
                f"task {task!r} (key {key}) returned a graph of {tasks} tasks; with the "
                f"{used} tasks of this run's other expansions that exceeds the run's limit of "
                f"{limits['max_tasks']}, so nothing of it was submitted. Raise "
                f"Cluster(dynamic_max_tasks=...) if this is meant"
            )
            raise DynamicLimitError(msg)
        if budget:
            _check_budget(record, budget, spent, costs)
        share = {"tasks": tasks, "core_hours": record.core_hours}
        atomic_write(path, json.dumps(share).encode())
    try:
        yield
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # nothing of it runs (or it was committed: then already gone)
        raise


def _check_budget(
    record: SubgraphRecord,
    budget: Mapping[str, Any],
    spent: float,
    costs: Sequence[JobCost],
) -> None:
    """Refuse an expansion whose worst case, on top of the run's plan and its other
    expansions, may exceed the run's ``max_core_hours`` (the client's check, on the node)."""
    limit = float(budget["max_core_hours"])
    committed = float(budget.get("committed") or 0.0) + spent
    worst = record.core_hours
    if worst is not None and committed + worst <= limit:
        return
    task, key = record.task, record.key
    if worst is None:
        unbounded = [c for c in costs if c.core_hours is None]
        why = (
            f"its worst case is unbounded (task {unbounded[0].name!r} has no time limit: "
            f"set time=...)"
        )
    else:
        big = max(costs, key=lambda c: c.core_hours or 0.0)
        why = (
            f"its worst case is {worst:.3g} core-hours (largest: {big.id} {big.name}, "
            f"{big.elements} x {big.cpus} cpu x {big.time_min} min)"
        )
    msg = (
        f"task {task!r} (key {key}) returned a graph that the run's budget cannot hold: "
        f"max_core_hours={limit:g}, of which the run already committed {committed:.3g} "
        f"(its plan and earlier expansions, worst case), and {why}. Nothing of it was "
        f"submitted. Lower the subgraph's time limits or element counts, or raise "
        f"max_core_hours"
    )
    total = None if worst is None else committed + worst
    raise DynamicBudgetError(msg, worst_core_hours=total, max_core_hours=limit)


def commit(layout: RunLayout, record: SubgraphRecord) -> None:
    """Write the record, which takes over the expansion's reservation. Call under
    :func:`locked` (concurrent expansions never count both, nor neither)."""
    array_job, index = record.parent
    atomic_write(layout.dynamic_record(array_job, index), record.to_json())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.dynamic_reservation(array_job, index))


@contextlib.contextmanager
def locked(layout: RunLayout) -> Iterator[None]:
    """One expansion at a time per run checks and reserves the run's limits, and
    re-points dependencies and writes its record (elements of one map expand at once)."""
    fd = os.open(f"{layout.dynamic_dir}/.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
