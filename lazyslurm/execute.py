"""``submit``/``compute``: plan -> stage -> submit -> watch -> gather. One loop, every backend.

>>> from lazyslurm import task, Cluster
>>> @task
... def inc(x): return x + 1
>>> with Cluster("sync", workdir=getfixture("tmp_path")):
...     compute(inc(1), [inc(inc(1)), 5])
(2, [3, 5])
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

import attrs
import cloudpickle

from lazyslurm.backends.base import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    ElementFailure,
    RunHandle,
    Snapshot,
)
from lazyslurm.cache import RunSummary, list_runs, lookup
from lazyslurm.cluster import Cluster, resolve_cluster
from lazyslurm.dynamic import extend_handle, fill_states, known_records, read_records
from lazyslurm.errors import (
    DependencyNeverSatisfiedError,
    ElementCancelledError,
    ElementFailedError,
    ElementOutOfMemoryError,
    ElementTimeoutError,
    NodeFailError,
    TaskCancelledError,
    remote_error,
)
from lazyslurm.graph.core import Job
from lazyslurm.graph.traverse import collect, lift_outputs
from lazyslurm.planning import rules
from lazyslurm.planning.encode import encode_run, read_manifest
from lazyslurm.planning.planner import ArrayJob, Plan, make_plan
from lazyslurm.runner import resolve
from lazyslurm.store import Redirect, Ref, RefList, RunLayout, decode_outcome

__all__ = [
    "EXECUTOR",
    "Callback",
    "Run",
    "RunStatus",
    "compute",
    "job_logs",
    "plan",
    "runs",
    "submit",
]

log = logging.getLogger("lazyslurm")


class Callback(Protocol):
    """Event hooks for embedding; implement any subset of these methods."""

    def on_submit(self, run: Run) -> None: ...
    def on_state(self, node: str, old: str, new: str) -> None: ...
    def on_done(self, run: Run) -> None: ...
    def on_poll(self, run: Run, snapshot: Snapshot) -> None: ...


def _emit(callbacks: Sequence[Any], event: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(*args)


def plan(*exprs: Any, cluster: Cluster | None = None, cache: bool | None = None) -> Plan:
    """The plan ``compute(*exprs)`` would submit now, as data (submits nothing).

    With caching on, ``plan.cached`` holds the keys found in the store (not run again).
    """
    cl = resolve_cluster(cluster)
    _, roots = lift_outputs(exprs)
    return _make_plan(cl, roots, cache)[0]


def _make_plan(cl: Cluster, roots: list[Job], cache: bool | None) -> tuple[Plan, dict[str, str]]:
    """The plan of ``roots`` given the session's memory and, with caching, the store."""
    done: dict[str, str | None] = dict(cl.computed)
    found: dict[str, str] = {}
    if cache if cache is not None else cl.cache:
        found = lookup(cl, [j.key for j in collect(roots, done) if j.task.pure])
        done.update(found)
    p = make_plan(roots, done=done, max_array_size=cl.max_array_size())
    return attrs.evolve(p, cached=frozenset(found)), found


_FAILURE_TYPES: dict[str, type[ElementFailedError]] = {
    "TIMEOUT": ElementTimeoutError,
    "DEADLINE": ElementTimeoutError,
    "OUT_OF_MEMORY": ElementOutOfMemoryError,
    "NODE_FAIL": NodeFailError,
    "BOOT_FAIL": NodeFailError,
    "PREEMPTED": NodeFailError,
    "CANCELLED": ElementCancelledError,
}


@attrs.frozen
class RunStatus:
    """Element counts of a run: overall ``state``, ``counts`` per state, and per array job
    ``array_jobs[id] = (task name, counts)``."""

    run_id: str
    state: str
    counts: dict[str, int]
    array_jobs: dict[str, tuple[str, dict[str, int]]]

    def __str__(self) -> str:
        lines = [f"run {self.run_id}: {self.state} {_fmt_counts(self.counts)}"]
        for aj, (name, counts) in self.array_jobs.items():
            lines.append(f"  {aj} {name}: {_fmt_counts(counts)}")
        return "\n".join(lines)


def _fmt_counts(counts: Mapping[str, int]) -> str:
    order = (DONE, RUNNING, PENDING, FAILED, CANCELLED)
    return " ".join(f"{s.lower()}={counts[s]}" for s in order if counts.get(s))


def _overall(counts: Mapping[str, int]) -> str:
    if counts.get(RUNNING) or counts.get(PENDING):
        return RUNNING if counts.get(RUNNING) or counts.get(DONE) else PENDING
    if counts.get(FAILED):
        return FAILED
    if counts.get(CANCELLED):
        return CANCELLED
    return DONE


class Run:
    """A submitted graph. ``compute(...)`` is ``submit(...).result()``.

    Everything a run needs lives in its run directory, so :meth:`attach` rebuilds it in
    another process, even after its jobs have left Slurm's memory.
    """

    def __init__(
        self,
        cluster: Cluster,
        handle: RunHandle | None,
        templates: list[Any],
        callbacks: Sequence[Any] = (),
        plan: Plan | None = None,
    ) -> None:
        self.cluster = cluster
        self.handle = handle
        self.plan = plan
        self.id = handle.run_id if handle else ""
        self._templates = templates
        self._callbacks = list(callbacks)
        self._last: Snapshot | None = None
        self._finished = False

    def __repr__(self) -> str:
        n = len(self.handle.array_jobs) if self.handle else 0
        return f"Run({self.id or 'nothing to run'}, {n} array jobs)"

    @property
    def array_jobs(self) -> tuple[ArrayJob, ...]:
        return self.handle.array_jobs if self.handle else ()

    @property
    def last_snapshot(self) -> Snapshot | None:
        """The element states seen by the last poll (None before the first)."""
        return self._last

    @classmethod
    def attach(
        cls, run_id: str, cluster: Cluster | None = None, callbacks: Sequence[Any] = ()
    ) -> Run:
        """Re-attach to a run from its run directory (from any process)."""
        cl = resolve_cluster(cluster)
        layout = RunLayout.of(run_id)
        names = [layout.manifest, layout.outputs, layout.jobids]
        files = cl.backend.read_files(names)
        if names[0] not in files:
            msg = f"no run {run_id!r} in {cl.backend_name} work directory {cl.backend.workdir}"
            raise KeyError(msg)
        manifest, array_jobs = read_manifest(files[names[0]])
        job_ids = dict(
            pair.split("=", 1) for pair in files.get(names[2], b"").decode().split() if "=" in pair
        )
        handle = RunHandle(run_id=run_id, array_jobs=array_jobs, job_ids=job_ids)
        handle = extend_handle(handle, read_records(cl.backend, run_id))
        for key, run in manifest.get("external", {}).items():
            if run is not None:
                cl.computed.setdefault(key, run)
        templates = (
            cloudpickle.loads(files[names[1]])
            if names[1] in files
            else [Ref(k) for k in manifest.get("outputs", [])]
        )
        return cls(cl, handle, templates, callbacks)

    # -- watching
    def poll(self) -> Snapshot | None:
        """Query the backend once (one status command for the whole run)."""
        if self.handle is None:
            return None
        snap = self.cluster.backend.poll(self.handle)
        if len(snap.states) < len(self.handle.array_jobs):  # subgraphs a worker ran inline
            snap = fill_states(self.cluster.backend, self.handle, snap)
        self._notify(snap)
        self._last = snap
        return snap

    def _notify(self, snap: Snapshot) -> None:
        _emit(self._callbacks, "on_poll", self, snap)
        if not (self._callbacks or log.isEnabledFor(logging.DEBUG)):
            return
        old = self._last
        for aj in self.array_jobs:
            after = snap.states[aj.id]
            before = old.states.get(aj.id) if old else None
            before = before if before is not None else [PENDING] * aj.size
            if before == after:
                continue
            for key, b, a in zip(aj.keys, before, after, strict=True):
                if a != b:
                    log.debug("%s: %s -> %s", key, b, a)
                    _emit(self._callbacks, "on_state", key, b, a)

    def expand(self) -> bool:
        """Add the subgraphs that tasks of this run submitted (tasks that returned lazy
        values: docs/dynamic.md) to the array jobs watched. True if there were new ones."""
        if self.handle is None:
            return False
        seen = getattr(self.cluster.backend, "dynamic_records", None)
        if seen is not None and seen(self.handle) == known_records(self.handle):
            return False  # the last poll counted no new record: nothing to read
        new = extend_handle(self.handle, read_records(self.cluster.backend, self.id))
        if new is self.handle:
            return False
        self.handle = new
        return True

    def _new_records(self) -> bool:
        """Whether the last poll counted subgraph records this run lacks (backends that
        count them in their poll: Slurm; the others are checked when the run ends)."""
        seen = getattr(self.cluster.backend, "dynamic_records", None)
        if seen is None or self.handle is None:
            return False
        count = seen(self.handle)
        return count is not None and count > known_records(self.handle)

    def status(self) -> RunStatus:
        """Counts per state, overall and per array job (polls once; subgraphs that tasks
        submitted are included, each right after the array job that made it)."""
        self.expand()
        snap = self.poll()
        total: dict[str, int] = {}
        per: dict[str, tuple[str, dict[str, int]]] = {}
        if snap is not None:
            for aj in self.array_jobs:
                counts: dict[str, int] = {}
                for s in snap.states[aj.id]:
                    counts[s] = counts.get(s, 0) + 1
                    total[s] = total.get(s, 0) + 1
                per[aj.id] = (aj.name, counts)
        return RunStatus(self.id, _overall(total), total, per)

    def wait(self, timeout: float | None = None) -> Snapshot | None:
        """Poll until every element is in an end state (adaptive delay); Ctrl-C cancels."""
        if self.handle is None:
            return None
        backend = self.cluster.backend
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self.cluster.poll_min_s
        try:
            while True:
                before = self._last
                snap = self.poll()
                assert snap is not None
                if snap.finished:
                    if not self.expand():  # no subgraph appeared meanwhile
                        break
                    continue
                if self._new_records():  # show subgraphs as they appear (Slurm)
                    self.expand()
                if deadline is not None and time.monotonic() >= deadline:
                    msg = f"run {self.id} not finished after {timeout} s"
                    raise TimeoutError(msg)
                progressed = before is None or before.states != snap.states
                delay = (
                    self.cluster.poll_min_s
                    if progressed
                    else min(delay * 1.5, self.cluster.poll_max_s)
                )
                wait_s = delay if deadline is None else min(delay, deadline - time.monotonic())
                backend.wait_for_change(self.handle, max(wait_s, 0.0))
        except KeyboardInterrupt:
            log.info("interrupted: cancelling run %s", self.id)
            backend.cancel(self.handle)
            raise
        self._finish(snap)
        return snap

    def _finish(self, snap: Snapshot) -> None:
        if self._finished:
            return
        self._finished = True
        done = [
            key
            for aj in self.array_jobs
            for key, s in zip(aj.keys, snap.states[aj.id], strict=True)
            if s == DONE
        ]
        self.cluster.record(self.id, done)
        for aj in self.array_jobs:
            for idx, key in enumerate(aj.keys):
                self.cluster.ran[key] = (self.id, aj.id, idx)
        log.info("run %s finished: %s", self.id, _fmt_counts(snap.counts_total()))
        _emit(self._callbacks, "on_done", self)

    def visualize(self, **kwargs: Any) -> Any:
        """Draw this run's plan, coloured by the states of the last poll."""
        from lazyslurm.draw import visualize

        return visualize(run=self, **kwargs)

    def cancel(self) -> None:
        """Cancel every unfinished element of the run."""
        if self.handle is not None:
            self.cluster.backend.cancel(self.handle)

    def _locate(self, node: Any) -> tuple[ArrayJob, int]:
        key = node.key if hasattr(node, "key") and not isinstance(node, str) else str(node)
        for aj in self.array_jobs:
            if key in aj.keys:
                return aj, aj.keys.index(key)
        msg = f"{node!r} is not a node of run {self.id}"
        raise KeyError(msg)

    def logs(self, node: Any) -> tuple[str, str]:
        """``(stdout, stderr)`` of one node (a Job or its key), in one transfer."""
        aj, idx = self._locate(node)
        return read_logs(self.cluster, self.id, aj.id, idx)

    # -- outcome
    def raise_failures(self, snap: Snapshot) -> None:
        """Raise the first failure that is not a consequence of another one."""
        roots: list[tuple[ArrayJob, int, ElementFailure | None]] = []
        cancelled: list[str] = []
        ajs = self.array_jobs
        caused = rules.causes(rules.Edges(ajs), [snap.states[aj.id] for aj in ajs])
        for n, aj in enumerate(ajs):
            for idx, s in enumerate(snap.states[aj.id]):
                if s == DONE:
                    continue
                if (n, idx) in caused:
                    cancelled.append(aj.keys[idx])
                else:
                    roots.append((aj, idx, snap.failures.get((aj.id, idx))))
        if not roots and not cancelled:
            return
        if not roots:
            job_key = cancelled[0]
            msg = (
                f"{len(cancelled)} task(s) were cancelled by Slurm because a dependency "
                f"failed (first: {job_key})"
            )
            err = DependencyNeverSatisfiedError(msg, key=job_key, state="CANCELLED")
            raise _with_cancelled(err, cancelled[1:], job_key, 1)
        aj, idx, failure = roots[0]
        key = aj.keys[idx]
        layout = RunLayout.of(self.id)
        paths = [layout.error(key), layout.log(aj.id, idx, "err")]
        files = self.cluster.backend.read_files(paths)
        note = ""
        if cancelled:
            note = (
                f"\n({len(cancelled)} dependent task(s) cancelled because of this failure, "
                f"e.g. {cancelled[0]})"
            )
        if len(roots) > 1:
            note += f"\n({len(roots) - 1} other task(s) failed too)"
        record = files.get(paths[0])
        if record is not None:
            _, payload = decode_outcome(record, key=key, path=paths[0], run=self.id)
            data = cloudpickle.loads(payload)
            original = None
            if data["exception"] is not None:
                try:
                    original = cloudpickle.loads(data["exception"])
                except Exception:
                    original = None
            err: Exception = remote_error(
                original,
                type_name=data["type_name"],
                message=data["message"] + note,
                task=aj.name,
                key=key,
                remote_traceback=data["traceback"],
            )
            raise _with_cancelled(err, cancelled, key, len(roots))
        stderr = files.get(paths[1], b"").decode(errors="replace")
        tail = "\n".join(stderr.splitlines()[-20:])
        state = failure.state if failure else "UNKNOWN"
        cls = _FAILURE_TYPES.get(state.split()[0], ElementFailedError)
        job_id = f"{failure.job_id}_{idx}" if failure and failure.job_id else ""
        msg = (
            f"task {aj.name!r} (key {key}, array job {aj.id} index {idx}"
            f"{', Slurm job ' + job_id if job_id else ''}) ended {state}"
            f"{' exit code ' + failure.exit_code if failure and failure.exit_code else ''}"
            f"{': ' + failure.reason if failure and failure.reason else ''}{note}"
            f"\n--- stderr tail ---\n{tail}"
        )
        err = cls(
            msg,
            job_id=failure.job_id if failure else "",
            array_index=idx,
            state=state,
            exit_code=failure.exit_code if failure else "",
            stderr_tail=tail,
            key=key,
        )
        raise _with_cancelled(err, cancelled, key, len(roots))

    def result(self, *, fetch: bool = True) -> tuple[Any, ...] | None:
        """Wait, raise the first failure, then return the outputs (fetched in one read)."""
        snap = self.wait()
        if snap is not None:
            self.raise_failures(snap)
        if not fetch:
            return None
        return fetch_outputs(self.cluster, self._templates)


def _with_cancelled(err: Exception, cancelled: list[str], cause: str, failures: int) -> Exception:
    """Attach ``err.cancelled``: a :class:`TaskCancelledError` per dependent that never ran."""
    why = cause if failures == 1 else f"{cause} (or one of {failures - 1} other failed tasks)"
    err.cancelled = [  # type: ignore[attr-defined]
        TaskCancelledError(f"task {k} was cancelled because {why} failed", key=k, cause_key=cause)
        for k in cancelled
    ]
    return err


def fetch_outputs(cluster: Cluster, templates: list[Any]) -> tuple[Any, ...]:
    """Resolve output templates, reading every missing result in one transfer."""
    needed: list[str] = []
    for key in _template_keys(templates):
        if key not in cluster.values:
            needed.append(key)
    if needed:
        paths = {RunLayout.of(cluster.computed[k]).result(k): k for k in needed}
        files = cluster.backend.read_files(list(paths))
        missing = [k for p, k in paths.items() if p not in files]
        if missing:
            msg = f"results missing from the store for {len(missing)} node(s), e.g. {missing[0]}"
            raise ElementFailedError(msg, key=missing[0])
        redirects = {}
        for p, k in paths.items():
            run = cluster.computed[k]
            _, payload = decode_outcome(files[p], key=k, path=p, run=run)
            value = cloudpickle.loads(payload)
            if type(value) is Redirect:  # a task that returned a lazy value
                redirects[k] = value
            else:
                cluster.values[k] = value
        for k, red in redirects.items():  # one more transfer per level of nesting
            for key, run in red.runs.items():
                cluster.computed.setdefault(key, run)
            (cluster.values[k],) = fetch_outputs(cluster, [red.template])
    return tuple(resolve(t, cluster.values.__getitem__) for t in templates)


def _template_keys(templates: Iterable[Any]) -> list[str]:
    """Node keys the output templates refer to, each once, in first-seen order."""
    keys: list[str] = []
    stack = list(templates)
    while stack:
        obj = stack.pop()
        t = type(obj)
        if t is Ref:
            keys.append(obj.key)
        elif t is RefList:
            keys.extend(obj.keys)
        elif t in (list, tuple, set, frozenset):
            stack.extend(obj)
        elif t is dict:
            stack.extend(obj.values())
    return list(dict.fromkeys(keys))


def submit(
    *exprs: Any,
    cluster: Cluster | None = None,
    callbacks: Sequence[Any] = (),
    label: str = "",
    cache: bool | None = None,
    progress: bool | None = None,
) -> Run:
    """Plan ``exprs`` and submit the whole DAG at once; return a :class:`Run` at once.

    With ``cache=True`` (or ``Cluster(cache=True)``), nodes whose results are already in
    the cluster's store (from any earlier run) are not submitted again.
    """
    cl = resolve_cluster(cluster)
    templates, roots = lift_outputs(exprs)
    callbacks = [*callbacks, *_progress_callbacks(progress)]
    p, found = _make_plan(cl, roots, cache)
    cl.computed.update(found)
    if not p.array_jobs:
        return Run(cl, None, templates, callbacks, plan=p)
    run_id = RunLayout.new_run_id()
    by_value = getattr(cl.backend, "ships_by_value", False)
    child = getattr(cl.backend, "child_config", None)
    dynamic = {"limits": cl.dynamic_limits, "by_value": by_value, **(child() if child else {})}
    files = encode_run(
        p,
        run_id=run_id,
        outputs=_template_keys(templates),
        meta={
            "created": time.time(),
            "label": label,
            "user": os.environ.get("USER", ""),
            "backend": cl.backend_name,
            "dynamic": dynamic,  # what tasks returning lazy values need (docs/dynamic.md)
        },
        by_value=by_value,
        templates=templates,
    )
    handle = cl.backend.start(run_id, p.array_jobs, files)
    run = Run(cl, handle, templates, callbacks, plan=p)
    log.info("submitted run %s: %d array jobs, %d tasks", run_id, len(p.array_jobs), p.nodes)
    _emit(run._callbacks, "on_submit", run)
    return run


def _progress_callbacks(progress: bool | None) -> list[Any]:
    """The live progress display, when wanted and possible (a terminal, rich installed)."""
    if progress is False:
        return []
    from lazyslurm.progress import make_progress

    display = make_progress(force=bool(progress))
    return [display] if display is not None else []


def compute(
    *exprs: Any,
    cluster: Cluster | None = None,
    callbacks: Sequence[Any] = (),
    fetch: bool = True,
    cache: bool | None = None,
    progress: bool | None = None,
) -> tuple[Any, ...]:
    """Run everything ``exprs`` need and return their results, as a tuple.

    A ``Job`` gives its result, a ``JobArray`` the list of its results, containers are
    rebuilt with results in place; anything else is returned as is. A failed task
    re-raises with its original exception type.
    """
    run = submit(*exprs, cluster=cluster, callbacks=callbacks, cache=cache, progress=progress)
    out = run.result(fetch=fetch)
    return out if out is not None else ()


def job_logs(job: Job, cluster: Cluster | None = None) -> tuple[str, str]:
    """``(stdout, stderr)`` of the element that ran ``job`` (in this session, or found in
    the store with ``cache``)."""
    cl = resolve_cluster(cluster)
    where = cl.ran.get(job.key)
    if where is not None:
        return read_logs(cl, *where)
    run_id = cl.computed.get(job.key)  # a cache hit from a run of another session
    if run_id is None:
        msg = f"{job!r} has not run in this cluster session"
        raise KeyError(msg)
    return Run.attach(run_id, cl).logs(job)


def read_logs(cluster: Cluster, run_id: str, array_job: str, index: int) -> tuple[str, str]:
    """``(stdout, stderr)`` of one element, in one transfer."""
    layout = RunLayout.of(run_id)
    paths = [layout.log(array_job, index, s) for s in ("out", "err")]
    files = cluster.backend.read_files(paths)
    out, err = (files.get(p, b"").decode(errors="replace") for p in paths)
    return out, err


def runs(cluster: Cluster | None = None) -> list[RunSummary]:
    """Runs in the cluster's store, newest first (one command, also over SSH)."""
    cl = resolve_cluster(cluster)
    return list_runs(cl.backend.shell, str(cl.backend.workdir))


class _Executor:
    """What lazy values reach through :mod:`lazyslurm.registry` (``job.compute()``, ...)."""

    def compute(self, *exprs: Any, **kwargs: Any) -> tuple[Any, ...]:
        return compute(*exprs, **kwargs)

    def visualize(self, *exprs: Any, **kwargs: Any) -> Any:
        from lazyslurm.draw import visualize

        return visualize(*exprs, **kwargs)

    def job_logs(self, job: Any, cluster: Any = None) -> tuple[str, str]:
        return job_logs(job, cluster=cluster)


EXECUTOR = _Executor()
