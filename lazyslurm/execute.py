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
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, overload

import attrs
import cloudpickle

from lazyslurm.backends.base import (
    CANCELLED,
    DONE,
    FAILED,
    LOST,
    PENDING,
    RUNNING,
    ElementFailure,
    RunHandle,
    Snapshot,
)
from lazyslurm.cache import RunSummary, list_runs, plan_with_store, read_run
from lazyslurm.cluster import BackendName, Cluster, current_cluster, resolve_cluster
from lazyslurm.dynamic import extend_handle, fill_states, known_records, read_records
from lazyslurm.errors import (
    BackendError,
    CorruptRunError,
    DependencyNeverSatisfiedError,
    ElementCancelledError,
    ElementFailedError,
    ElementNeverStartsError,
    ElementOutOfMemoryError,
    ElementTimeoutError,
    LazySlurmError,
    NodeFailError,
    RunInterrupted,
    TaskCancelledError,
    remote_error,
)
from lazyslurm.graph.core import Job
from lazyslurm.graph.traverse import collect, lift_outputs
from lazyslurm.guard import warn_implicit_local
from lazyslurm.planning import rules
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import ArrayJob, Plan, compact_spans
from lazyslurm.registry import executor
from lazyslurm.runner import resolve
from lazyslurm.store import (
    ElementKeys,
    ErrorRecord,
    Redirect,
    Ref,
    RunLayout,
    decode_outcome,
    decode_result,
    decode_value,
    log_section,
    pack_log,
    run_of,
    template_keys,
)

__all__ = [
    "Callback",
    "Run",
    "RunStatus",
    "calls_summary",
    "compute",
    "job_logs",
    "plan",
    "runs",
    "submit",
]

log = logging.getLogger("lazyslurm")

if TYPE_CHECKING:
    from lazyslurm.graph.core import _Lazy

T1 = TypeVar("T1")
T2 = TypeVar("T2")
T3 = TypeVar("T3")
T4 = TypeVar("T4")
T5 = TypeVar("T5")


class Callback(Protocol):
    """Event hooks for embedding; implement any subset of these methods."""

    def on_submit(self, run: Run) -> None: ...
    def on_state(self, node: str, old: str, new: str) -> None: ...
    def on_done(self, run: Run) -> None: ...
    def on_poll(self, run: Run, snapshot: Snapshot) -> None: ...
    def on_interrupt(self, run: Run, line: str) -> None: ...


def _emit(callbacks: Sequence[Any], event: str, *args: Any) -> None:
    for cb in callbacks:
        fn = getattr(cb, event, None)
        if fn is not None:
            fn(*args)


def plan(
    *exprs: Any, cluster: Cluster | BackendName | None = None, cache: bool | None = None
) -> Plan:
    """The plan ``compute(*exprs)`` would submit now, as data (submits nothing).

    With caching on, ``plan.cached`` holds the keys found in the store (not run again).
    """
    cl = resolve_cluster(cluster)
    _, roots = lift_outputs(exprs)
    return plan_with_store(cl, roots, cache)[0]


_FAILURE_TYPES: dict[str, type[ElementFailedError]] = {
    "TIMEOUT": ElementTimeoutError,
    "DEADLINE": ElementTimeoutError,
    "OUT_OF_MEMORY": ElementOutOfMemoryError,
    "NODE_FAIL": NodeFailError,
    "BOOT_FAIL": NodeFailError,
    "PREEMPTED": NodeFailError,
    "CANCELLED": ElementCancelledError,
    "PENDING": ElementNeverStartsError,  # pending for a reason that never clears
}
# the reason given to elements that ``result()`` cancelled once another element failed
STOPPED = "cancelled by lazyslurm: another element of the run failed first"
# the reason given to an element whose node failed under it
_NODE_FAILED = (
    "the node it ran on failed (Slurm stopped hearing from it), not the task; submit "
    "again (cache=True keeps what finished), or set requeue=True to let Slurm run it again"
)
# the reason given to a cancelled element that no failure of the run explains
_CANCELLED_OUTSIDE = (
    "cancelled from outside lazyslurm (scancel by a user or an administrator?), not "
    "because another task of this run failed; submit again to run it"
)


@attrs.frozen
class RunStatus:
    """Element counts of a run: overall ``state``, ``counts`` per state, and per array job
    ``array_jobs[id] = (task name, counts)``."""

    run_id: str
    state: str
    counts: dict[str, int]
    array_jobs: dict[str, tuple[str, dict[str, int]]]
    # what the run does besides its elements ("creating the environment (once): ...")
    note: str = ""

    def _repr_html_(self) -> str:
        return executor().status_html(self)  # pictures sit beside this module

    def __str__(self) -> str:
        lines = [f"run {self.run_id}: {self.state} {_fmt_counts(self.counts)}"]
        if self.note:
            lines.append(f"  {self.note}")
        for aj, (name, counts) in self.array_jobs.items():
            lines.append(f"  {aj} {name}: {_fmt_counts(counts)}")
        return "\n".join(lines)


def _fmt_counts(counts: Mapping[str, int]) -> str:
    order = (DONE, RUNNING, PENDING, FAILED, CANCELLED)
    return " ".join(f"{s.lower()}={counts[s]}" for s in order if counts.get(s))


def calls_summary(calls: Mapping[str, int]) -> str:
    """``7 (sbatch 2, squeue 4, scontrol 1)``: a run's controller calls, in one line.

    >>> calls_summary({"squeue": 4, "sbatch": 2, "scontrol": 1, "scancel": 0})
    '7 (sbatch 2, squeue 4, scontrol 1)'
    """
    order = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "srun")
    kinds = [k for k in order if calls.get(k)] + sorted(k for k in calls if k not in order)
    each = ", ".join(f"{k} {calls[k]}" for k in kinds if calls[k])
    return f"{sum(calls.values())}" + (f" ({each})" if each else "")


def _fmt_calls(calls: Mapping[str, int] | None) -> str:
    return "" if calls is None else f"; controller calls: {calls_summary(calls)}"


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

    @property
    def controller_calls(self) -> dict[str, int] | None:
        """The scheduler commands made for this run so far, by kind, by every process
        (this client, others that watched or cancelled it, the compute nodes): on Slurm
        ``sbatch``, ``squeue``/``sacct`` (status queries), ``scontrol``, ``scancel`` and
        ``srun`` (one per rank), as of the last poll plus what this process made since
        (docs/reliability.md). None when the backend does not count them, or before this
        process submitted or polled the run."""
        if self.handle is None:
            return None
        return self.cluster.backend.controller_calls(self.handle)

    def _repr_html_(self) -> str:
        """Notebook display: the status (one poll) and the jobs coloured by state."""
        return executor().run_html(self)

    @classmethod
    def attach(
        cls,
        run_id: str,
        cluster: Cluster | BackendName | None = None,
        callbacks: Sequence[Any] = (),
    ) -> Run:
        """Re-attach to a run from its run directory (from any process)."""
        cl = resolve_cluster(cluster)
        manifest, handle, outputs = read_run(cl, run_id)
        handle = extend_handle(handle, read_records(cl.backend, run_id))
        cl.session.learn({k: r for k, r in manifest.get("external", {}).items() if r is not None})
        templates = (
            _read_outputs(outputs, run_id, cl)
            if outputs is not None
            else [Ref(k) for k in manifest.get("outputs", [])]
        )
        return cls(cl, handle, templates, [*cl.callbacks, *_adapt(callbacks)])

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
            for idx, (key, b, a) in enumerate(zip(aj.keys, before, after, strict=True)):
                if a != b:
                    log.debug(
                        "%s: %s -> %s",
                        key,
                        b,
                        a,
                        extra={"run_id": self.id, "array_job": aj.id, "element": idx},
                    )
                    _emit(self._callbacks, "on_state", key, b, a)

    def expand(self) -> bool:
        """Add the subgraphs that tasks of this run submitted (tasks that returned lazy
        values: docs/dynamic.md) to the array jobs watched. True if there were new ones."""
        if self.handle is None:
            return False
        if self.cluster.backend.dynamic_records(self.handle) == known_records(self.handle):
            return False  # the last poll counted no new record: nothing to read
        new = extend_handle(self.handle, read_records(self.cluster.backend, self.id))
        if new is self.handle:
            return False
        self.handle = new
        return True

    def _new_records(self) -> bool:
        """Whether the last poll counted subgraph records this run lacks (backends that
        count them in their poll: Slurm; the others are checked when the run ends)."""
        if self.handle is None:
            return False
        count = self.cluster.backend.dynamic_records(self.handle)
        return count is not None and count > known_records(self.handle)

    def status(self) -> RunStatus:
        """Counts per state, overall and per array job (polls once; subgraphs that tasks
        submitted are included, each right after the array job that made it).

        Raises :class:`~lazyslurm.errors.BackendError` when the cluster cannot be reached
        (a one-off query has no last known states worth showing as current)."""
        snap = self.poll()
        if snap is not None and snap.unreachable_since is not None:
            msg = f"cannot read the state of run {self.id}: {snap.unreachable_reason}"
            raise BackendError(msg)
        if self.expand():  # subgraphs this run did not know of yet: their states too
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
        return RunStatus(self.id, _overall(total), total, per, snap.note if snap else "")

    def wait(self, timeout: float | None = None, *, fail_fast: bool = False) -> Snapshot | None:
        """Poll until every element is in an end state (adaptive delay); Ctrl-C cancels.

        With ``fail_fast`` (what :meth:`result` and ``compute`` use), stop at the first poll
        that shows an element FAILED or CANCELLED: cancel everything of the run that has not
        finished, and return a snapshot where those elements are CANCELLED (reason
        :data:`STOPPED`). Without it, wait for every element (siblings of a failure run on).
        """
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
                if fail_fast and _any_failed(snap):
                    snap = self._stop_the_rest(snap)
                    break
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
            log.info(
                "interrupted: cancelling run %s",
                self.id,
                extra={"run_id": self.id, "array_job": None},
            )
            backend.cancel(self.handle)
            raise self._interrupted() from None
        self.finish(snap)
        return snap

    def _interrupted(self) -> RunInterrupted:
        """The one-line error for a Ctrl-C that cancelled this run (displays cleared)."""
        from lazyslurm.progress import install_interrupt_hook, interrupted_line

        total = sum(aj.size for aj in self.array_jobs)
        if self._last is None:
            counts: dict[str, int] = {PENDING: total}
        else:
            counts = self._last.counts_total()
        unfinished = sum(n for s, n in counts.items() if s not in (DONE, FAILED, CANCELLED))
        line = interrupted_line(self.id, counts, unfinished)
        _emit(self._callbacks, "on_interrupt", self, line)
        install_interrupt_hook()
        return RunInterrupted(line, run_id=self.id, cancelled=unfinished)

    def _stop_the_rest(self, snap: Snapshot) -> Snapshot:
        """Cancel what has not finished (one cancel for the whole run) after a failure."""
        assert self.handle is not None
        log.info("run %s: an element failed; cancelling the unfinished rest", self.id)
        self.cluster.backend.cancel(self.handle)
        states: dict[str, list[str]] = {}
        failures = dict(snap.failures)
        for aj in self.array_jobs:
            row = list(snap.states[aj.id])
            for i, s in enumerate(row):
                if s in (PENDING, RUNNING):
                    row[i] = CANCELLED
                    failures[(aj.id, i)] = ElementFailure(state=CANCELLED, reason=STOPPED)
            states[aj.id] = row
        stopped = Snapshot(states=states, failures=failures)
        self._notify(stopped)
        self._last = stopped
        return stopped

    @property
    def finished(self) -> bool:
        """Whether the run has ended (every element in an end state, recorded)."""
        return self._finished

    def observe(self, snap: Snapshot) -> None:
        """What a poll taught the session: finished nodes are computed; a finished run
        is finished (:meth:`finish`)."""
        if snap.finished:
            self.finish(snap)
            return
        self.cluster.session.record_results(self.id, self._done(snap))

    def _done(self, snap: Snapshot, *, final: bool = False) -> list[tuple[str, str]]:
        done = []
        whole: set[str] = set()  # array jobs of compact maps that finished whole
        for aj in self.array_jobs:
            states = snap.states[aj.id]
            if type(aj.keys) is ElementKeys:  # a compact map: its keys are not listed
                if states.count(DONE) == len(states):
                    whole.add(aj.id)
                    if final:
                        self.cluster.session.record_compact(self.id, aj)
                    continue
                if not final:
                    continue  # elements of a compact map are recorded when the run ends
            done.extend(
                (key, aj.location(i, self.id))
                for i, (key, s) in enumerate(zip(aj.keys, states, strict=True))
                if s == DONE
            )
        if final and self.plan is not None:  # a compact map whose chunks all finished
            for node, ids in compact_spans(self.plan).items():
                if whole.issuperset(ids):
                    done.append((node, f"{self.id}:span={','.join(ids)}"))
        return done

    def finish(self, snap: Snapshot) -> None:
        """Record the end of the run in its cluster's session (once)."""
        if self._finished:
            return
        self._finished = True
        session = self.cluster.session
        session.record_results(self.id, self._done(snap, final=True))
        session.add_run(self, replace=False)  # an attached run: for job handles
        session.record_placement(self.id, self.array_jobs)
        log.info(
            "run %s finished: %s%s",
            self.id,
            _fmt_counts(snap.counts_total()),
            _fmt_calls(self.controller_calls),
            extra={"run_id": self.id, "array_job": None},
        )
        _emit(self._callbacks, "on_done", self)

    def usage(self) -> Any:
        """What this run used, per task and element: requested against used memory, CPU
        and time, core-hours wasted, warnings (:class:`lazyslurm.usage.Usage`; the
        runner's records, and sacct's where the cluster keeps accounting)."""
        from lazyslurm.usage import usage

        return usage(self)

    def visualize(self, **kwargs: Any) -> Any:
        """Draw this run's plan, coloured by the states of the last poll."""
        return executor().visualize(run=self, **kwargs)

    def dashboard(self, *, port: int = 0, open_browser: bool = False) -> Any:
        """Serve the live web dashboard of this run on 127.0.0.1 (docs/dashboard.md);
        returns it: ``.url`` (with its token), ``.stop()``."""
        return executor().dashboard(self, port=port, open_browser=open_browser)

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
        self.cluster.session.record_placement(self.id, [aj])
        return read_logs(self.cluster, self.id, aj.id, idx)

    # -- outcome
    def raise_failures(self, snap: Snapshot) -> None:
        """Raise the first failure that is not a consequence of another one."""
        roots: list[tuple[ArrayJob, int, ElementFailure | None]] = []
        ajs = self.array_jobs
        position = {aj.id: n for n, aj in enumerate(ajs)}
        # cancelled by fail-fast: never the cause of another cancellation (a healthy
        # upstream stopped after its dependent was cancelled from outside is no culprit)
        stopped = {
            (position[aj_id], idx)
            for (aj_id, idx), f in snap.failures.items()
            if f.reason == STOPPED and aj_id in position
        }
        caused = rules.causes(rules.Edges(ajs), [snap.states[aj.id] for aj in ajs], stopped)
        dependents: dict[tuple[int, int], list[str]] = {}  # per root element
        siblings: list[str] = []
        for n, aj in enumerate(ajs):
            for idx, s in enumerate(snap.states[aj.id]):
                if s == DONE:
                    continue
                if (n, idx) in caused:
                    dependents.setdefault(caused[(n, idx)], []).append(aj.keys[idx])
                elif (n, idx) in stopped:
                    siblings.append(aj.keys[idx])
                else:
                    roots.append((aj, idx, snap.failures.get((aj.id, idx))))
        # dependents of a failure, then what fail-fast stopped
        cancelled = [k for keys in dependents.values() for k in keys] + siblings
        if not roots and not cancelled:
            return
        # an element lost with the process that ran it (a sibling still running when a
        # failure stopped the run) is no cause: a re-attached run raises the same failure
        roots.sort(key=lambda r: r[2] is not None and r[2].reason == LOST.reason)
        if not roots:
            job_key = cancelled[0]
            msg = (
                f"{len(cancelled)} task(s) were cancelled by Slurm because a dependency "
                f"failed (first: {job_key})"
            )
            err = DependencyNeverSatisfiedError(msg, key=job_key, state="CANCELLED")
            raise _with_cancelled(err, cancelled[1:], job_key, 1)
        # and a task's own failure before other cancellations: they have no error record
        roots.sort(key=lambda root: snap.states[root[0].id][root[1]] != FAILED)
        aj, idx, failure = roots[0]
        key = aj.keys[idx]
        layout = RunLayout.of(self.id)
        paths = [layout.error(key), layout.log(aj.id, aj.slurm_index(idx), "err")]
        files = self.cluster.backend.read_files(paths)
        note = ""
        mine = dependents.get((position[aj.id], idx), [])
        if mine:
            note = (
                f"\n({len(mine)} dependent task(s) cancelled because of this failure, "
                f"e.g. {mine[0]})"
            )
        if siblings:
            note += (
                f"\n({len(siblings)} other unfinished task(s) of the run cancelled when "
                f"it failed, e.g. {siblings[0]})"
            )
        if len(roots) > 1:
            note += f"\n({len(roots) - 1} other task(s) failed too)"
        record = files.get(paths[0])
        if record is not None:
            _, payload = decode_outcome(record, key=key, path=paths[0], run=self.id)
            rec = ErrorRecord.decode(payload)
            original = None
            if rec.exception is not None:
                try:
                    original = cloudpickle.loads(rec.exception)
                except Exception:
                    original = None
            err: LazySlurmError = remote_error(
                original,
                type_name=rec.type_name,
                message=rec.message + note,
                task=aj.name,
                key=key,
                remote_traceback=rec.traceback,
            )
            raise _with_cancelled(err, cancelled, key, len(roots))
        stderr = files.get(paths[1], b"").decode(errors="replace")
        if aj.pack > 1:  # its part of the pack's log, then the pack's own (a full disk)
            stderr = pack_log(stderr, aj.id, idx)
        tail = "\n".join(stderr.splitlines()[-20:])
        state = failure.state if failure else "UNKNOWN"
        cls = _FAILURE_TYPES.get(state.split()[0], ElementFailedError)
        job_id = f"{failure.job_id}_{idx}" if failure and failure.job_id else ""
        reason = failure.reason if failure else ""
        if state == CANCELLED and not reason:  # no failure of the run explains it
            reason = _CANCELLED_OUTSIDE
        if state in ("NODE_FAIL", "BOOT_FAIL") and not reason:
            reason = _NODE_FAILED
        msg = (
            f"task {aj.name!r} (key {key}, array job {aj.id} index {idx}"
            f"{', Slurm job ' + job_id if job_id else ''}) "
            f"{'stays PENDING' if state == 'PENDING' else 'ended ' + state}"
            f"{' on node ' + failure.node if failure and failure.node else ''}"
            f"{' exit code ' + failure.exit_code if failure and failure.exit_code else ''}"
            f"{': ' + reason if reason else ''}{note}"
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
        """Wait, raise the first failure, then return the outputs (fetched in one read).

        The first failure raises as soon as a poll sees it: what of the run has not
        finished then is cancelled (see :meth:`wait`, ``fail_fast``)."""
        snap = self.wait(fail_fast=True)
        if snap is not None:
            self.raise_failures(snap)
        if not fetch:
            return None
        return fetch_outputs(self.cluster, self._templates)


def _any_failed(snap: Snapshot) -> bool:
    return any(s in (FAILED, CANCELLED) for states in snap.states.values() for s in states)


def _with_cancelled(
    err: LazySlurmError, cancelled: list[str], cause: str, failures: int
) -> LazySlurmError:
    """Fill ``err.cancelled`` (a declared field of every lazyslurm error): a
    :class:`TaskCancelledError` per task of the run that never ran because of it."""
    why = cause if failures == 1 else f"{cause} (or one of {failures - 1} other failed tasks)"
    err.cancelled = tuple(
        TaskCancelledError(f"task {k} was cancelled because {why} failed", key=k, cause_key=cause)
        for k in cancelled
    )
    return err


def fetch_outputs(cluster: Cluster, templates: list[Any]) -> tuple[Any, ...]:
    """Resolve output templates, reading every missing result in one transfer."""
    session = cluster.session
    needed = [key for key in template_keys(templates) if not session.has_value(key)]
    if needed:
        # a location is a run (results/KEY.pkl) or RUN:AJ_J (a pack file, which holds
        # the results of many keys: each file is read once)
        paths = {}
        for k in needed:
            at = session.location(k)
            if at is None:
                msg = f"node {k} has no result in this session (not computed, or cleaned)"
                raise ElementFailedError(msg, key=k)
            paths[k] = RunLayout.of(run_of(at)).result(k, run=at)
        files = cluster.backend.read_files(sorted(set(paths.values())))
        missing = [k for k, p in paths.items() if p not in files]
        if missing:
            msg = f"results missing from the store for {len(missing)} node(s), e.g. {missing[0]}"
            raise ElementFailedError(msg, key=missing[0])
        redirects = {}
        indexes: dict[str, dict[str, tuple[int, int]]] = {}  # pack files, indexed once
        for k, p in paths.items():
            run = run_of(session.location(k) or "")
            _, payload = decode_result(files[p], key=k, path=p, run=run, indexes=indexes)
            value = decode_value(payload)
            if type(value) is Redirect:  # a task that returned a lazy value
                redirects[k] = value
            else:
                session.keep_value(k, value)
        for k, red in redirects.items():  # one more transfer per level of nesting
            session.learn(red.runs)
            session.keep_value(k, fetch_outputs(cluster, [red.template])[0])
    return tuple(resolve(t, session.value) for t in templates)


def submit(
    *exprs: Any,
    cluster: Cluster | BackendName | None = None,
    callbacks: Sequence[Any] = (),
    label: str = "",
    cache: bool | None = None,
    progress: bool | None = None,
    max_core_hours: float | None = None,
) -> Run:
    """Plan ``exprs`` and submit the whole DAG at once; return a :class:`Run` at once.

    With ``cache=True`` (or ``Cluster(cache=True)``), nodes whose results are already in
    the cluster's store (from any earlier run) are not submitted again.
    ``max_core_hours`` (default: the cluster's) refuses, before anything is submitted, a
    graph whose worst case may exceed it (:class:`~lazyslurm.errors.BudgetExceededError`).
    """
    cl = resolve_cluster(cluster)
    templates, roots = lift_outputs(exprs)
    callbacks = [*cl.callbacks, *_adapt(callbacks), *_progress_callbacks(progress)]
    _settle_in_flight(cl, roots)  # nodes still running in this session: wait, never resubmit
    p, found = plan_with_store(cl, roots, cache)
    budget = max_core_hours if max_core_hours is not None else cl.max_core_hours
    committed = 0.0  # the plan's worst case: expansions count theirs on top (dynamic.md)
    if budget is not None and p.array_jobs:
        from lazyslurm.preview import check_budget

        committed = check_budget(cl, p, budget, cached=len(found))
    cl.session.learn(found)
    if not p.array_jobs:
        return Run(cl, None, templates, callbacks, plan=p)
    warn_implicit_local(
        cluster is None and current_cluster() is None,
        cl.embedded,
        cl.backend_name,
        ((aj.name, aj.resources) for aj in p.array_jobs),
        stacklevel=_user_stacklevel(),
    )
    run_id = RunLayout.new_run_id()
    backend = cl.backend
    by_value = backend.ships_by_value
    dynamic = {
        "limits": cl.dynamic_limits,
        "by_value": by_value,
        "node": backend.node,  # what submits a returned subgraph where a task runs
        **backend.child_config(),
    }
    if budget is not None:  # enforced where a task returns a subgraph
        dynamic["budget"] = {"max_core_hours": budget, "committed": committed}
    files = encode_run(
        p,
        run_id=run_id,
        outputs=template_keys(templates),
        meta={
            "created": time.time(),
            "label": label,
            "user": os.environ.get("USER", ""),
            "backend": cl.backend_name,
            "dynamic": dynamic,  # what tasks returning lazy values need (docs/dynamic.md)
        },
        by_value=by_value,
        templates=templates,
        modules_by_value=backend.by_value_modules,
    )
    if log.isEnabledFor(logging.DEBUG):
        _log_plan(p, found, run_id)
    handle = backend.start(run_id, p.array_jobs, files)
    run = Run(cl, handle, templates, callbacks, plan=p)
    # job handles find their run, Slurm ids and logs from here on: a light twin of the
    # run (its handle only, not the plan and the graph it holds) is kept in the session
    cl.session.add_run(Run(cl, handle, []))
    cl.session.record_placement(run_id, p.array_jobs)
    log.info(
        "submitted run %s: %d array jobs, %d tasks",
        run_id,
        len(p.array_jobs),
        p.nodes,
        extra={"run_id": run_id, "array_job": None},
    )
    _emit(run._callbacks, "on_submit", run)
    return run


def _adapt(callbacks: Sequence[Any]) -> list[Any]:
    """slurm-sdk style callbacks wrapped onto these events (see :mod:`lazyslurm.callbacks`)."""
    if not callbacks:
        return []
    from lazyslurm.callbacks import adapt

    return adapt(callbacks)


def _settle_in_flight(cl: Cluster, roots: list[Job]) -> None:
    """Wait for the runs of this session, still going, that hold nodes ``roots`` need: a
    new run cannot depend on another run's Slurm jobs, and must not submit them again."""
    session = cl.session
    if not session.unfinished_runs():
        return
    busy: dict[str, Run] = {}
    for job in collect(roots, session.computed()):
        where = session.where(job.key)
        if where is not None:
            run = session.run(where[0])
            if run is not None and not run.finished:
                busy[run.id] = run
    for run in busy.values():
        run.wait()


def _log_plan(p: Plan, found: Mapping[str, str], run_id: str) -> None:
    """DEBUG: the plan summary, one line per array job, and the cache hits."""
    extra: dict[str, Any] = {"run_id": run_id, "array_job": None}
    log.debug(
        "plan of run %s: %d array jobs, %d tasks, %d cache hits",
        run_id,
        len(p.array_jobs),
        p.nodes,
        len(found),
        extra=extra,
    )
    for aj in p.array_jobs:
        deps = ", ".join(f"{kind} {up}" for kind, up in aj.dependencies) or "none"
        log.debug(
            "plan %s: %s x%d (dependencies: %s)",
            aj.id,
            aj.name,
            aj.size,
            deps,
            extra={**extra, "array_job": aj.id},
        )
    for key, source in found.items():
        log.debug("cache hit: %s (result of run %s)", key, source, extra=extra)


def _user_stacklevel() -> int:
    """How many frames up (from the caller of this function) the user's code is."""
    frame = sys._getframe(1)
    level = 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith(
        ("lazyslurm.execute", "lazyslurm.graph")
    ):
        frame = frame.f_back
        level += 1
    return level


def _progress_callbacks(progress: bool | None) -> list[Any]:
    """The live progress display, when wanted and possible (a terminal, rich installed)."""
    if progress is False:
        return []
    from lazyslurm.progress import make_progress

    display = make_progress(force=bool(progress))
    return [display] if display is not None else []


# Typed forms: a Job[R] gives an R, a JobArray[R] a list[R]; up to five lazy values keep
# their types in the tuple, anything else (plain values, containers) is typed Any.
@overload
def compute(
    a: _Lazy[T1],
    /,
    *,
    cluster: Cluster | BackendName | None = ...,
    callbacks: Sequence[Any] = ...,
    fetch: bool = ...,
    cache: bool | None = ...,
    progress: bool | None = ...,
) -> tuple[T1]: ...
@overload
def compute(
    a: _Lazy[T1],
    b: _Lazy[T2],
    /,
    *,
    cluster: Cluster | BackendName | None = ...,
    callbacks: Sequence[Any] = ...,
    fetch: bool = ...,
    cache: bool | None = ...,
    progress: bool | None = ...,
) -> tuple[T1, T2]: ...
@overload
def compute(
    a: _Lazy[T1],
    b: _Lazy[T2],
    c: _Lazy[T3],
    /,
    *,
    cluster: Cluster | BackendName | None = ...,
    callbacks: Sequence[Any] = ...,
    fetch: bool = ...,
    cache: bool | None = ...,
    progress: bool | None = ...,
) -> tuple[T1, T2, T3]: ...
@overload
def compute(
    a: _Lazy[T1],
    b: _Lazy[T2],
    c: _Lazy[T3],
    d: _Lazy[T4],
    /,
    *,
    cluster: Cluster | BackendName | None = ...,
    callbacks: Sequence[Any] = ...,
    fetch: bool = ...,
    cache: bool | None = ...,
    progress: bool | None = ...,
) -> tuple[T1, T2, T3, T4]: ...
@overload
def compute(
    a: _Lazy[T1],
    b: _Lazy[T2],
    c: _Lazy[T3],
    d: _Lazy[T4],
    e: _Lazy[T5],
    /,
    *,
    cluster: Cluster | BackendName | None = ...,
    callbacks: Sequence[Any] = ...,
    fetch: bool = ...,
    cache: bool | None = ...,
    progress: bool | None = ...,
) -> tuple[T1, T2, T3, T4, T5]: ...
@overload
def compute(
    *exprs: Any,
    cluster: Cluster | BackendName | None = ...,
    callbacks: Sequence[Any] = ...,
    fetch: bool = ...,
    cache: bool | None = ...,
    progress: bool | None = ...,
) -> tuple[Any, ...]: ...
def compute(
    *exprs: Any,
    cluster: Cluster | BackendName | None = None,
    callbacks: Sequence[Any] = (),
    fetch: bool = True,
    cache: bool | None = None,
    progress: bool | None = None,
    max_core_hours: float | None = None,
    label: str = "",
    scheduler: str | None = None,
    **kwargs: Any,
) -> tuple[Any, ...]:
    """Run everything ``exprs`` need and return their results, as a tuple.

    A ``Job`` gives its result, a ``JobArray`` the list of its results, containers are
    rebuilt with results in place; anything else is returned as is. A failed task
    re-raises with its original exception type. ``max_core_hours``, ``label``: see
    :func:`submit`. For type checkers, ``compute(a, b)`` of a ``Job[X]`` and a
    ``JobArray[Y]`` is a ``tuple[X, list[Y]]`` (up to five values).

    As ``dask.compute``: ``scheduler=`` names where to run when no cluster is given
    (dask's ``"sync"``/``"single-threaded"`` is the ``sync`` backend, ``"threads"``/
    ``"processes"`` the ``local`` pool, or a backend name), and other keywords (dask's
    ``optimize_graph``, ``num_workers``, ...) are accepted and have no effect here; one
    that looks like a misspelt keyword of this function raises ``TypeError``.
    """
    _check_forwarded(kwargs)
    if scheduler is not None and cluster is None:
        cluster = _DASK_SCHEDULERS.get(scheduler, scheduler)  # type: ignore[assignment]
    run = submit(
        *exprs,
        cluster=cluster,
        callbacks=callbacks,
        label=label,
        cache=cache,
        progress=progress,
        max_core_hours=max_core_hours,
    )
    out = run.result(fetch=fetch)
    return out if out is not None else ()


# dask.compute(scheduler=...) names, as lazyslurm backends
_DASK_SCHEDULERS = {
    "sync": "sync",
    "synchronous": "sync",
    "single-threaded": "sync",
    "threads": "local",
    "threading": "local",
    "processes": "local",
    "multiprocessing": "local",
}
_COMPUTE_KEYWORDS = (
    "cluster",
    "callbacks",
    "fetch",
    "cache",
    "progress",
    "max_core_hours",
    "label",
    "scheduler",
)


def _check_forwarded(kwargs: Mapping[str, Any]) -> None:
    """Keywords ``compute`` has no use for pass (as dask forwards them to a scheduler that
    may ignore them), unless one is a misspelling of its own: that raises."""
    import difflib

    for name in kwargs:
        close = difflib.get_close_matches(name, _COMPUTE_KEYWORDS, n=1, cutoff=0.75)
        if close:
            msg = (
                f"compute() got an unexpected keyword argument {name!r}; did you mean {close[0]!r}?"
            )
            raise TypeError(msg)
    if kwargs:
        log.debug("compute: keywords %s have no effect here", sorted(kwargs))


def job_logs(job: Job, cluster: Cluster | BackendName | None = None) -> tuple[str, str]:
    """``(stdout, stderr)`` of the element that ran ``job`` (in this session, or found in
    the store with ``cache``)."""
    cl = resolve_cluster(cluster)
    where = cl.session.where(job.key)
    if where is not None:
        return read_logs(cl, *where)
    run_id = cl.session.location(job.key)  # a cache hit from a run of another session
    if run_id is None:
        msg = f"{job!r} has not run in this cluster session"
        raise KeyError(msg)
    return Run.attach(run_of(run_id), cl).logs(job)


def read_logs(cluster: Cluster, run_id: str, array_job: str, index: int) -> tuple[str, str]:
    """``(stdout, stderr)`` of one element, in one transfer (its own section of the logs
    of the Slurm element that ran it, when packed)."""
    layout = RunLayout.of(run_id)
    pack = cluster.session.pack_of(run_id, array_job)
    paths = [layout.log(array_job, index // pack, s) for s in ("out", "err")]
    files = cluster.backend.read_files(paths)
    out, err = (files.get(p, b"").decode(errors="replace") for p in paths)
    if pack > 1:
        out, err = (log_section(t, array_job, index) for t in (out, err))
    return out, err


def _read_outputs(data: bytes, run_id: str, cl: Cluster) -> Any:
    """What compute() returned, with placeholders, from a run's ``outputs.pkl``;
    :class:`CorruptRunError` naming the file when it is truncated or damaged."""
    try:
        return cloudpickle.loads(data)
    except Exception as exc:
        path = f"{cl.backend.workdir}/{RunLayout.of(run_id).outputs}"
        msg = (
            f"the outputs file of run {run_id} ({path}, {len(data)} bytes) is damaged "
            f"({type(exc).__name__}: {exc}): the run cannot be re-attached; delete that "
            f"file to attach it with its outputs as node keys"
        )
        raise CorruptRunError(msg, run=run_id, path=path) from exc


def runs(cluster: Cluster | BackendName | None = None) -> list[RunSummary]:
    """Runs in the cluster's store, newest first (one command, also over SSH)."""
    cl = resolve_cluster(cluster)
    return list_runs(cl.backend.shell, str(cl.backend.workdir))
