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
import secrets
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import cloudpickle

from lazyslurm.backends.base import (
    CANCELLED,
    DONE,
    PENDING,
    ArrayJobInfo,
    ElementFailure,
    RunHandle,
    Snapshot,
)
from lazyslurm.cluster import Cluster, resolve_cluster
from lazyslurm.errors import (
    DependencyNeverSatisfiedError,
    JobCancelledError,
    JobFailedError,
    JobOutOfMemoryError,
    JobTimeoutError,
    NodeFailError,
    remote_error,
)
from lazyslurm.graph.core import Job
from lazyslurm.graph.traverse import lift_outputs
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import Plan, make_plan
from lazyslurm.runner import resolve

__all__ = ["Callback", "Run", "compute", "job_logs", "plan", "submit"]

log = logging.getLogger("lazyslurm")


class Callback(Protocol):
    """Event hooks for embedding; implement any subset of these methods."""

    def on_submit(self, run: Run) -> None: ...
    def on_state(self, node: str, old: str, new: str) -> None: ...
    def on_done(self, run: Run) -> None: ...


def _emit(callbacks: Sequence[Any], event: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(*args)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def plan(*exprs: Any, cluster: Cluster | None = None) -> Plan:
    """The plan ``compute(*exprs)`` would submit now, as data (submits nothing)."""
    cl = resolve_cluster(cluster)
    _, roots = lift_outputs(exprs)
    return make_plan(roots, done=cl.computed, max_array_size=cl.max_array_size())


_FAILURE_TYPES: dict[str, type[JobFailedError]] = {
    "TIMEOUT": JobTimeoutError,
    "DEADLINE": JobTimeoutError,
    "OUT_OF_MEMORY": JobOutOfMemoryError,
    "NODE_FAIL": NodeFailError,
    "BOOT_FAIL": NodeFailError,
    "PREEMPTED": NodeFailError,
    "CANCELLED": JobCancelledError,
}


class Run:
    """A submitted graph. ``compute(...)`` is ``submit(...).result()``."""

    def __init__(
        self,
        cluster: Cluster,
        plan: Plan,
        handle: RunHandle | None,
        templates: list[Any],
        callbacks: Sequence[Any] = (),
    ) -> None:
        self.cluster = cluster
        self.plan = plan
        self.handle = handle
        self.id = handle.run_id if handle else ""
        self._templates = templates
        self._callbacks = list(callbacks)
        self._last: Snapshot | None = None
        self.polls = 0

    def __repr__(self) -> str:
        return f"Run({self.id or 'nothing to run'}, {len(self.plan.array_jobs)} array jobs)"

    # -- watching
    def poll(self) -> Snapshot | None:
        if self.handle is None:
            return None
        snap = self.cluster.backend.poll(self.handle)
        self.polls += 1
        self._notify(snap)
        self._last = snap
        return snap

    def _notify(self, snap: Snapshot) -> None:
        if not (self._callbacks or log.isEnabledFor(logging.DEBUG)):
            return
        old = self._last
        for aj in self.plan.array_jobs:
            after = snap.states[aj.id]
            before = old.states[aj.id] if old else [PENDING] * aj.size
            if before == after:
                continue
            for job, b, a in zip(aj.elements, before, after):
                if a != b:
                    log.debug("%s: %s -> %s", job.key, b, a)
                    _emit(self._callbacks, "on_state", job.key, b, a)

    def status(self) -> dict[str, dict[str, int]]:
        """Element counts per state, per array job (polls once)."""
        snap = self.poll()
        return snap.counts() if snap else {}

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
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    msg = f"run {self.id} not finished after {timeout} s"
                    raise TimeoutError(msg)
                progressed = before is None or before.states != snap.states
                delay = self.cluster.poll_min_s if progressed else min(
                    delay * 1.5, self.cluster.poll_max_s
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
        done = [
            job.key
            for aj in self.plan.array_jobs
            for job, s in zip(aj.elements, snap.states[aj.id])
            if s == DONE
        ]
        self.cluster.record(self.id, done)
        _emit(self._callbacks, "on_done", self)

    def visualize(self, **kwargs: Any) -> Any:
        """Draw this run's plan, coloured by the states of the last poll."""
        from lazyslurm.draw import visualize

        return visualize(run=self, **kwargs)

    def cancel(self) -> None:
        """Cancel every unfinished element of the run."""
        if self.handle is not None:
            self.cluster.backend.cancel(self.handle)

    # -- outcome
    def raise_failures(self, snap: Snapshot) -> None:
        """Raise the first failure that is not a consequence of another one."""
        roots: list[tuple[Job, str, int, ElementFailure | None]] = []
        cancelled: list[str] = []
        for aj in self.plan.array_jobs:
            for idx, (job, s) in enumerate(zip(aj.elements, snap.states[aj.id])):
                if s == DONE:
                    continue
                failure = snap.failures.get((aj.id, idx))
                if s == CANCELLED and failure is not None and "Dependency" in failure.reason:
                    cancelled.append(job.key)
                else:
                    roots.append((job, aj.id, idx, failure))
        if not roots and not cancelled:
            return
        if not roots:
            job_key = cancelled[0]
            msg = (
                f"{len(cancelled)} task(s) were cancelled by Slurm because a dependency "
                f"failed (first: {job_key})"
            )
            raise DependencyNeverSatisfiedError(msg, key=job_key, state="CANCELLED")
        job, aj_id, idx, failure = roots[0]
        paths = [
            f"runs/{self.id}/errors/{job.key}.pkl",
            f"runs/{self.id}/logs/{aj_id}_{idx}.err",
        ]
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
            data = cloudpickle.loads(record)
            original = None
            if data["exception"] is not None:
                try:
                    original = cloudpickle.loads(data["exception"])
                except Exception:
                    original = None
            raise remote_error(
                original,
                type_name=data["type_name"],
                message=data["message"] + note,
                task=job.task.name,
                key=job.key,
                remote_traceback=data["traceback"],
            )
        stderr = files.get(paths[1], b"").decode(errors="replace")
        tail = "\n".join(stderr.splitlines()[-20:])
        state = failure.state if failure else "UNKNOWN"
        cls = _FAILURE_TYPES.get(state.split()[0], JobFailedError)
        job_id = f"{failure.job_id}_{idx}" if failure and failure.job_id else ""
        msg = (
            f"task {job.task.name!r} (key {job.key}, array job {aj_id} index {idx}"
            f"{', Slurm job ' + job_id if job_id else ''}) ended {state}"
            f"{' exit code ' + failure.exit_code if failure and failure.exit_code else ''}"
            f"{': ' + failure.reason if failure and failure.reason else ''}{note}"
            f"\n--- stderr tail ---\n{tail}"
        )
        raise cls(
            msg,
            job_id=failure.job_id if failure else "",
            array_index=idx,
            state=state,
            exit_code=failure.exit_code if failure else "",
            stderr_tail=tail,
            key=job.key,
        )

    def result(self, *, fetch: bool = True) -> tuple[Any, ...] | None:
        """Wait, raise the first failure, then return the outputs (fetched in one read)."""
        snap = self.wait()
        if snap is not None:
            self.raise_failures(snap)
        if not fetch:
            return None
        return fetch_outputs(self.cluster, self._templates)


def fetch_outputs(cluster: Cluster, templates: list[Any]) -> tuple[Any, ...]:
    """Resolve output templates, reading every missing result in one transfer."""
    needed: list[str] = []
    for key in _template_keys(templates):
        if key not in cluster.values:
            needed.append(key)
    if needed:
        paths = {f"runs/{cluster.computed[k]}/results/{k}.pkl": k for k in needed}
        files = cluster.backend.read_files(list(paths))
        missing = [k for p, k in paths.items() if p not in files]
        if missing:
            msg = f"results missing from the store for {len(missing)} node(s), e.g. {missing[0]}"
            raise JobFailedError(msg, key=missing[0])
        for p, k in paths.items():
            cluster.values[k] = cloudpickle.loads(files[p])
    return tuple(resolve(t, cluster.values.__getitem__) for t in templates)


def _template_keys(templates: Iterable[Any]) -> list[str]:
    from lazyslurm.store import Ref, RefList

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
) -> Run:
    """Plan ``exprs`` and submit the whole DAG at once; return a :class:`Run` at once."""
    cl = resolve_cluster(cluster)
    templates, roots = lift_outputs(exprs)
    p = make_plan(roots, done=cl.computed, max_array_size=cl.max_array_size())
    if not p.array_jobs:
        return Run(cl, p, None, templates, callbacks)
    run_id = new_run_id()
    outputs = _template_keys(templates)
    files = encode_run(
        p,
        run_id=run_id,
        outputs=outputs,
        meta={
            "created": time.time(),
            "label": label,
            "user": os.environ.get("USER", ""),
            "backend": cl.backend_name,
        },
        by_value=getattr(cl.backend, "ships_by_value", False),
    )
    infos = [
        ArrayJobInfo(
            id=aj.id,
            name=aj.name,
            keys=tuple(j.key for j in aj.elements),
            dependencies=tuple((k, u.id) for k, u in aj.dependencies),
            resources=aj.resources,
        )
        for aj in p.array_jobs
    ]
    handle = cl.backend.start(run_id, infos, files)
    for aj in p.array_jobs:
        for idx, job in enumerate(aj.elements):
            cl.where[job.key] = (run_id, aj.id, idx)
    run = Run(cl, p, handle, templates, callbacks)
    log.info("submitted run %s: %d array jobs, %d tasks", run_id, len(p.array_jobs), p.nodes)
    _emit(callbacks, "on_submit", run)
    return run


def compute(
    *exprs: Any,
    cluster: Cluster | None = None,
    callbacks: Sequence[Any] = (),
    fetch: bool = True,
) -> tuple[Any, ...]:
    """Run everything ``exprs`` need and return their results, as a tuple.

    A ``Job`` gives its result, a ``JobArray`` the list of its results, containers are
    rebuilt with results in place; anything else is returned as is. A failed task
    re-raises with its original exception type.
    """
    run = submit(*exprs, cluster=cluster, callbacks=callbacks)
    out = run.result(fetch=fetch)
    return out if out is not None else ()


def job_logs(job: Job, cluster: Cluster | None = None) -> tuple[str, str]:
    """``(stdout, stderr)`` of the element that ran ``job`` in this session."""
    cl = resolve_cluster(cluster)
    try:
        run_id, aj, idx = cl.where[job.key]
    except KeyError:
        msg = f"{job!r} has not run in this cluster session"
        raise KeyError(msg) from None
    paths = [f"runs/{run_id}/logs/{aj}_{idx}.{s}" for s in ("out", "err")]
    files = cl.backend.read_files(paths)
    out, err = (files.get(p, b"").decode(errors="replace") for p in paths)
    return out, err
