"""Dynamic expansion: a task that returns a lazy value runs that subgraph from where it ran.

The runner (:mod:`lazyslurm.runner`) imports this module only when a task's value holds a
``Job``, ``JobArray`` or ``JobView``; then :func:`expand`:

1. plans the returned graph with the same planner (nodes already computed in the run, or
   named by it from earlier runs, are not planned again), with array job ids prefixed by
   the element that made them (``aj1_0_aj0``: element 0 of ``aj1``), so that they never
   clash with the run's own;
2. writes their spec files into the SAME run directory;
3. on Slurm (``slurm``/``ssh`` runs): submits them from here with the all-or-nothing held
   submission, then adds ``afterok`` on the subgraph's final array jobs to the Slurm
   dependencies of the already-submitted jobs that depend on this one (``scontrol update``,
   keeping their unfulfilled dependencies; ``--kill-on-invalid-dep`` stays in force), so
   that no process or allocation waits; on the embedded backends (``local``/``sync``): runs
   the subgraph inline, in this worker process (its dependents wait for it anyway);
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
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import attrs

from lazyslurm.backends.base import RunHandle, Snapshot, outcome_keys, snapshot_from_files
from lazyslurm.errors import DynamicBudgetError, DynamicExpansionError, DynamicLimitError
from lazyslurm.graph.traverse import lift_outputs
from lazyslurm.planning.cost import (
    FACTS_SCRIPT,
    JobCost,
    needs_facts,
    parse_facts,
    plan_costs,
    total_cost,
)
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import (
    DEFAULT_MAX_ARRAY_SIZE,
    ArrayJob,
    Plan,
    make_plan,
    subgraph_prefix,
)
from lazyslurm.store import (
    Redirect,
    RunLayout,
    atomic_write,
    decode_outcome,
    read_private,
    template_keys,
)

__all__ = [
    "DEFAULT_LIMITS",
    "expand",
    "extend_handle",
    "fill_states",
    "known_records",
    "parent_of",
    "read_records",
    "renamed",
]

DEFAULT_LIMITS = {"max_depth": 4, "max_tasks": 10_000}
_SLURM_BACKENDS = ("slurm", "ssh")


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


def extend_handle(handle: RunHandle, records: Sequence[Mapping[str, Any]]) -> RunHandle:
    """``handle`` with the array jobs of ``records`` inserted right after the array job
    that made them (the order stays topological), their Slurm ids, and the ``afterok``
    edges the expansions added to dependents. Returns ``handle`` itself if nothing is new.
    """
    ajs = list(handle.array_jobs)
    known = {aj.id for aj in ajs}
    ids = dict(handle.job_ids)
    added: dict[str, list[str]] = {}
    fresh = False
    for rec in sorted(records, key=lambda r: r.get("depth", 1)):
        for dep, finals in rec.get("added", {}).items():
            added.setdefault(dep, []).extend(finals)
        ids.update(rec.get("job_ids", {}))
        parent = rec["parent"][0]
        new = [ArrayJob.from_manifest(e) for e in rec["array_jobs"] if e["id"] not in known]
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


def read_records(backend: Any, run_id: str) -> list[dict[str, Any]]:
    """The dynamic records of a run (one command; a local directory is listed directly)."""
    shell = getattr(backend, "shell", None)
    layout = RunLayout.of(run_id, backend.workdir)
    if shell is None or getattr(shell, "local_files", False):
        return _local_records(layout)
    q = shlex.quote
    script = (
        f"cd {q(layout.dynamic_dir)} 2>/dev/null || exit 0\n"
        'for f in *.json; do [ -f "$f" ] && [ ! -L "$f" ] && [ -O "$f" ] && '
        '{ cat "$f"; echo; }; done; true'
    )
    res = shell.run(script)
    return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def _local_records(layout: RunLayout) -> list[dict[str, Any]]:
    try:
        names = sorted(os.listdir(layout.dynamic_dir))
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if RunLayout.is_dynamic_record(name):
            out.append(json.loads(read_private(f"{layout.dynamic_dir}/{name}")))
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
    records = _local_records(layout)
    parent = next((r for r in records if any(e["id"] == array_job for e in r["array_jobs"])), None)
    depth = (parent["depth"] if parent else 0) + 1
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
    slurm = manifest.get("backend") in _SLURM_BACKENDS
    budget = config.get("budget")
    costs = _costs(plan, config, slurm) if budget else ()
    files = encode_run(plan, run_id=here, outputs=outputs, by_value=bool(config.get("by_value")))
    specs = {rel: data for rel, data in files.items() if rel.startswith("specs/")}
    finals = sorted({plan.location[k][0].id for k in outputs if k in plan.location})
    record: dict[str, Any] = {
        "version": 1,
        "parent": [array_job, index],
        "key": key,
        "task": task,
        "depth": depth,
        "tasks": plan.nodes,
        "outputs": outputs,
        "final": finals,
        "array_jobs": [aj.to_manifest() for aj in plan.array_jobs],
        "job_ids": {},
        "added": {},
    }
    if budget:
        record["core_hours"] = total_cost(costs).core_hours  # None: unbounded (refused)
    with _reserved(layout, record, limits, budget, costs):
        for rel, data in specs.items():
            atomic_write(f"{layout.root}/{rel}", data)
        if slurm:
            _submit_on_slurm(plan, layout, here, prefix, array_job, config, manifest, record)
        else:
            record["inline"] = True
            _run_inline(plan, layout, here, record, run_one)
    return redirect


def _costs(plan: Plan, config: Mapping[str, Any], slurm: bool) -> tuple[JobCost, ...]:
    """The worst case of each array job of ``plan``, as the client's budget check computes
    it (the cluster's task defaults from the manifest; on Slurm, the partitions' default
    time limits, asked here, where a task sets no time)."""
    from lazyslurm.graph.resources import Resources

    defaults = Resources.from_options(**config.get("defaults", {}))
    facts = None
    if slurm and needs_facts(plan.array_jobs, defaults):
        try:
            res = subprocess.run(
                ["bash", "-c", FACTS_SCRIPT],
                capture_output=True,
                text=True,
                timeout=_SLURM_TIMEOUT_S,
            )
            facts = parse_facts(res.stdout)
        except subprocess.TimeoutExpired:
            facts = None  # then a task without a time limit is unbounded: refused
    return plan_costs(plan.array_jobs, defaults=defaults, facts=facts)


def _held(layout: RunLayout, mine: str) -> tuple[int, float]:
    """Tasks and worst-case core-hours the run's expansions hold: their records, and the
    reservations of those still submitting (not ``mine``). Call under :func:`_locked`."""
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
    record: Mapping[str, Any],
    limits: Mapping[str, Any],
    budget: Mapping[str, Any] | None,
    costs: Sequence[JobCost],
) -> Iterator[None]:
    """Check the run's limits (``dynamic_max_tasks``, ``max_core_hours``) against what the
    run's expansions hold, and reserve this one's share, under the run's lock: concurrent
    expansions (elements of one map) see each other's reservations before they submit.
    The record (:func:`_commit`) takes the reservation over; a failure drops it."""
    array_job, index = record["parent"]
    path = layout.dynamic_reservation(array_job, index)
    task, key, tasks = record["task"], record["key"], record["tasks"]
    with _locked(layout):
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
        share = {"tasks": tasks, "core_hours": record.get("core_hours")}
        atomic_write(path, json.dumps(share).encode())
    try:
        yield
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # nothing of it runs (or it was committed: then already gone)
        raise


def _check_budget(
    record: Mapping[str, Any],
    budget: Mapping[str, Any],
    spent: float,
    costs: Sequence[JobCost],
) -> None:
    """Refuse an expansion whose worst case, on top of the run's plan and its other
    expansions, may exceed the run's ``max_core_hours`` (the client's check, on the node)."""
    limit = float(budget["max_core_hours"])
    committed = float(budget.get("committed") or 0.0) + spent
    worst = record.get("core_hours")
    if worst is not None and committed + worst <= limit:
        return
    task, key = record["task"], record["key"]
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


def _commit(layout: RunLayout, record: Mapping[str, Any]) -> None:
    """Write the record, which takes over the expansion's reservation. Call under
    :func:`_locked` (concurrent expansions never count both, nor neither)."""
    array_job, index = record["parent"]
    atomic_write(layout.dynamic_record(array_job, index), json.dumps(record).encode())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(layout.dynamic_reservation(array_job, index))


def _run_inline(
    plan: Plan, layout: RunLayout, here: str, record: dict[str, Any], run_one: Any
) -> None:
    """Embedded backends: run the subgraph in this worker, in plan (topological) order;
    an element whose upstream failed is skipped, as ``--kill-on-invalid-dep`` would."""
    from lazyslurm.planning import rules

    with _locked(layout):
        _commit(layout, record)  # before it runs: status shows it as it appears
    edges = rules.Edges(plan.array_jobs)
    states = [[rules.PENDING] * aj.size for aj in plan.array_jobs]
    failed: tuple[str, str] | None = None
    old = os.environ.get("SLURM_ARRAY_TASK_ID")
    try:
        for n, aj in enumerate(plan.array_jobs):
            for i in range(aj.size):
                if not rules.ready(edges, n, i, states):
                    states[n][i] = rules.CANCELLED
                    continue
                os.environ["SLURM_ARRAY_TASK_ID"] = str(i)
                ok = run_one(layout.root, aj.id, i) == 0
                states[n][i] = rules.DONE if ok else rules.FAILED
                if not ok and failed is None:
                    failed = (aj.name, aj.keys[i])
    finally:
        if old is None:
            os.environ.pop("SLURM_ARRAY_TASK_ID", None)
        else:
            os.environ["SLURM_ARRAY_TASK_ID"] = old
    if failed is not None:
        name, key = failed
        path = layout.error(key)
        try:
            _, payload = decode_outcome(read_private(path), key=key, path=path, run=here)
        except OSError:
            payload = None
        msg = f"the subgraph it returned failed: task {name!r} (key {key})"
        raise DynamicExpansionError(msg, error_record=payload)


_RUNNER_BY_PATH = "lazyslurm/runner/__main__.py"  # how a job script names the runner's file


def _parent_script(
    layout: RunLayout, array_job: str
) -> tuple[str, list[str], list[str], str | None]:
    """Interpreter, launcher words (a container runtime), setup lines and the runner's
    path (None: ``-m lazyslurm.runner``) of the job script that runs us: children
    inherit them (the same environment, image, code, and the cheaper start by path).
    The last line that starts the runner is the ``exec`` one (a multi-rank script's
    ``--gather``: ``srun`` is the line before)."""
    lines = read_private(layout.job_script(array_job)).decode().splitlines()

    def starts_runner(line: str) -> bool:  # -m lazyslurm.runner, or its __main__.py by path
        return "-m lazyslurm.runner" in line or _RUNNER_BY_PATH in line

    starts = [ln for ln in lines[2:] if starts_runner(ln)]
    words = shlex.split(starts[-1].removeprefix("exec "))
    at = next(
        i
        for i in range(1, len(words))
        if words[i : i + 2] == ["-m", "lazyslurm.runner"]
        or words[i].endswith(_RUNNER_BY_PATH)
    )
    setup = [ln for ln in lines[2:] if not starts_runner(ln)]
    runner = words[at] if words[at].endswith(_RUNNER_BY_PATH) else None
    python = at - 1 - (words[at - 1] == "-P")  # `python -P -m lazyslurm.runner` (sbatch.py)
    return words[python], words[:python], setup, runner


@contextlib.contextmanager
def _locked(layout: RunLayout) -> Iterator[None]:
    """One expansion at a time per run checks and reserves the run's limits, and
    re-points dependencies and writes its record (elements of one map expand at once)."""
    fd = os.open(f"{layout.dynamic_dir}/.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _submit_on_slurm(
    plan: Plan,
    layout: RunLayout,
    here: str,
    prefix: str,
    array_job: str,
    config: Mapping[str, Any],
    manifest: Mapping[str, Any],
    record: dict[str, Any],
) -> None:
    """Submit the subgraph held, make the run's dependents of ``array_job`` wait for it,
    release it, then write its record. Anything failing after the submission cancels
    the subgraph (nothing of it has run: it was held) and raises."""
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.sbatch import IDS_MARKER, job_script, sbatch_flags, submit_script

    python, launcher, setup, runner = _parent_script(layout, array_job)
    if shutil.which("sbatch") is None:
        where = f" (inside the container {launcher[0]!r} started?)" if launcher else ""
        msg = (
            f"a task of array job {array_job} returned lazy values, but sbatch is not found "
            f"where it runs{where}: dynamic expansion and @workflow submit from the compute "
            f"node. Use packaging='by-value' or 'wheel', or put Slurm's client (and its "
            f"configuration) in the image"
        )
        raise DynamicExpansionError(msg)
    defaults = Resources.from_options(**config.get("defaults", {}))
    ajs = plan.array_jobs
    flags = {aj.id: sbatch_flags(aj, run_id=here, layout=layout, defaults=defaults) for aj in ajs}
    for aj in ajs:
        text = job_script(
            aj,
            run_id=here,
            layout=layout,
            python=python,
            setup=setup,
            launcher=launcher,
            runner=runner,
        )
        atomic_write(layout.job_script(aj.id), text.encode())
    base = f"{layout.dynamic_dir}/{prefix}"
    script = submit_script(
        ajs,
        run_id=here,
        layout=layout,
        flags=flags,
        jobids=f"{base}ids",
        stderr=f"{base}err",
        release=False,  # released once the dependents wait for it
    )
    atomic_write(f"{base}submit.sh", script.encode())
    res = subprocess.run(["bash", f"{base}submit.sh"], capture_output=True, text=True)
    if res.returncode != 0 or IDS_MARKER not in res.stdout:
        msg = f"submitting the subgraph from the compute node failed: {res.stderr.strip()}"
        raise DynamicExpansionError(msg)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith(IDS_MARKER))
    ids = dict(pair.split("=", 1) for pair in line.split()[1:])
    record["job_ids"] = ids
    try:
        with _cancelled_if_stopped(list(ids.values())), _locked(layout):
            records = _local_records(layout)  # under the lock: earlier expansions' edges
            record["added"] = _repoint_dependents(
                layout, array_job, [ids[f] for f in record["final"]], record, records, manifest
            )
            rel = _slurm(["scontrol", "release", *ids.values()])
            if rel.returncode != 0:
                msg = (
                    f"could not release the subgraph's jobs ({' '.join(ids.values())}) "
                    f"after {_TRIES} tries: {_said(rel)}. The subgraph was cancelled"
                )
                raise DynamicExpansionError(msg)
            _commit(layout, record)
    except BaseException:
        _slurm(["scancel", *ids.values()])
        raise


@contextlib.contextmanager
def _cancelled_if_stopped(ids: list[str]) -> Iterator[None]:
    """While the subgraph is held, Slurm stopping this element (SIGTERM: its time limit,
    scancel) cancels the subgraph first: held jobs that nobody releases would stay queued
    forever. Then the signal does what it did before (the checkpoint hooks, or death)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # installed outside Python: leave it to the default
        previous = signal.SIG_DFL

    def stop(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", *ids], capture_output=True, timeout=_SLURM_TIMEOUT_S)
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Slurm's client fails now and then while slurmctld is busy or restarting ("Socket timed
# out on send/recv operation", "Unable to contact slurm controller"): each command is
# tried this many times, waiting _BACKOFF_S * 2**n seconds between tries
_TRIES = 4
_BACKOFF_S = 1.0
_SLURM_TIMEOUT_S = 120.0  # one command; its own timeouts are shorter (MessageTimeout)
_GONE = "Invalid job id specified"  # squeue: none of the jobs asked for is known any more


def _slurm(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command here, retrying a failure with backoff; the last try's
    result. A job id Slurm no longer knows is an answer, not a failure: not retried."""
    res: subprocess.CompletedProcess[str] | None = None
    for n in range(_TRIES):
        if n:
            time.sleep(_BACKOFF_S * 2 ** (n - 1))
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=_SLURM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            said = f"timed out after {_SLURM_TIMEOUT_S:g} s"
            res = subprocess.CompletedProcess(argv, -1, "", said)
            continue
        if res.returncode == 0 or _GONE in res.stderr:
            return res
    assert res is not None
    return res


def _said(res: subprocess.CompletedProcess[str]) -> str:
    """A failed command's exit status and last words, for a message."""
    words = " / ".join(ln.strip() for ln in res.stderr.strip().splitlines()[-2:] if ln.strip())
    return f"exit {res.returncode}" + (f": {words}" if words else " and no message")


def _repoint_dependents(
    layout: RunLayout,
    array_job: str,
    final_ids: list[str],
    record: Mapping[str, Any],
    records: list[dict[str, Any]],
    manifest: Mapping[str, Any],
) -> dict[str, list[str]]:
    """Add ``afterok`` on ``final_ids`` to every pending job depending on ``array_job``
    (in the run's graph as extended by earlier expansions). Returns what was added.
    Raises :class:`~lazyslurm.errors.DynamicExpansionError` when Slurm cannot say which
    of them are pending (``squeue`` kept failing) or refuses an update: a dependent left
    as it is would start before the subgraph ends and fail for want of its results."""
    deps: dict[str, set[str]] = {}
    slurm_ids: dict[str, str] = {}
    for e in manifest["array_jobs"]:
        deps[e["id"]] = {u for _, u in e["dependencies"]}
    try:
        text = read_private(layout.jobids).decode()
    except OSError:
        text = ""
    slurm_ids.update(pair.split("=", 1) for pair in text.split() if "=" in pair)
    for rec in records:
        for e in rec["array_jobs"]:
            deps[e["id"]] = {u for _, u in e["dependencies"]}
        slurm_ids.update(rec.get("job_ids", {}))
    for rec in records:
        for d, finals in rec.get("added", {}).items():
            deps.setdefault(d, set()).update(finals)
    dependents = sorted(d for d, ups in deps.items() if array_job in ups)
    targets = {slurm_ids[d]: d for d in dependents if d in slurm_ids}
    if not targets:
        return {}
    res = _slurm(["squeue", "-h", "-t", "PENDING", "-j", ",".join(targets), "-o", "%i|%E"])
    if res.returncode != 0 and _GONE not in res.stderr:
        names = ", ".join(f"{d} (job {sid})" for sid, d in sorted(targets.items()))
        msg = (
            f"could not make the jobs waiting for this task wait for the subgraph it "
            f"returned: squeue, asked which of {names} are pending, failed {_TRIES} times "
            f"({_said(res)}). The subgraph was cancelled; is slurmctld reachable from the "
            f"compute node?"
        )
        raise DynamicExpansionError(msg)
    current: dict[str, str] = {}
    for line in res.stdout.splitlines() if res.returncode == 0 else ():
        job, _, dep = line.partition("|")
        current.setdefault(job.split("_", 1)[0], dep.strip())
    new = "afterok:" + ":".join(final_ids)
    added: dict[str, list[str]] = {}
    for sid, dep in current.items():
        if sid not in targets:
            continue
        keep = [item.split("(", 1)[0] for item in dep.split(",") if item.endswith("(unfulfilled)")]
        spec = ",".join([*keep, new])
        upd = _slurm(["scontrol", "update", f"jobid={sid}", f"dependency={spec}"])
        if upd.returncode != 0:
            msg = (
                f"could not make job {sid} ({targets[sid]}) wait for the subgraph "
                f"(scontrol update dependency={spec}): {_said(upd)}. The subgraph was "
                f"cancelled"
            )
            raise DynamicExpansionError(msg)
        added[targets[sid]] = list(record["final"])
    return added
