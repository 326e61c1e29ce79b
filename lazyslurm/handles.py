"""The job handle: slurm-sdk's vocabulary (``wait``, ``get_result``, ``get_status``,
``cancel``, ``id``, ``get_stdout``, ``tail``, ...) on lazy ``Job`` and ``JobArray`` values.

The methods of :class:`~lazyslurm.graph.core.Job` and ``JobArray`` are one-line calls of
the functions here. A handle finds its submission in the session of the cluster that ran
it (:class:`~lazyslurm.session.Session`: where each node ran, its run, its results).

**Flush on wait.** Inside ``with cluster:``, every job built in the block is collected
(the session's pending jobs). The first ``wait()``, ``get_result()`` or ``get_results()``
submits all of them that are not submitted yet, in one submission, then waits only for
the one asked. Jobs built outside any block stay lazy until waited on or computed; jobs
never waited on are not submitted when the block ends.

>>> from lazyslurm import Cluster, task
>>> @task
... def inc(x): return x + 1
>>> with Cluster("sync", workdir=getfixture("tmp_path")) as cluster:
...     a = inc(1)
...     b = inc(10)
...     print(a.id is None, a.wait(), b.get_status(), b.get_result())
True True COMPLETED 11
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from lazyslurm import draw, execute
from lazyslurm.backends.base import CANCELLED, DONE, FAILED, PENDING, RUNNING, TERMINAL, Snapshot
from lazyslurm.cluster import (
    Cluster,
    current_cluster,
    default_cluster,
    live_clusters,
    resolve_cluster,
)
from lazyslurm.errors import JobFailedError, NotSubmittedError, WaitTimeoutError
from lazyslurm.execute import Run, fetch_outputs, read_logs, submit
from lazyslurm.graph.core import Job, JobArray, JobView, Task
from lazyslurm.graph.traverse import collect, lift_outputs
from lazyslurm.store import RunLayout

__all__ = [
    "Submitter",
    "cancel",
    "get_output",
    "get_result",
    "get_script",
    "get_status",
    "is_completed",
    "job_id",
    "tail",
    "wait",
]

NOT_SUBMITTED = "NOT_SUBMITTED"
COMPLETED = "COMPLETED"
_ACTIVE = (PENDING, RUNNING)


# --------------------------------------------------------------------------- finding things


def _jobs(obj: Any) -> list[Job]:
    """The Slurm-level jobs a handle stands for."""
    if isinstance(obj, Job):
        return [obj]
    if isinstance(obj, JobArray):
        return list(obj.jobs)
    if isinstance(obj, JobView):
        return [obj.base]
    msg = f"expected a Job, JobArray or JobView, got {type(obj).__name__}"
    raise TypeError(msg)


def _session(obj: Any, cluster: Cluster | None) -> Cluster:
    """The cluster a handle talks to: the one given, else the active one, else the
    session that submitted it, else the default."""
    if cluster is not None:
        return resolve_cluster(cluster)  # a backend name too: compute(cluster="sync")
    active = current_cluster()
    if active is not None:
        return active
    key = _jobs(obj)[0].key if _jobs(obj) else None
    if key is not None:
        for cl in live_clusters():
            if cl.session.knows(key):
                return cl
    return default_cluster()


def _states(cl: Cluster, jobs: list[Job], *, poll: bool = True) -> dict[str, str]:
    """Backend state of each job (DONE, FAILED, ...), or NOT_SUBMITTED; polls each
    unfinished run involved once."""
    out: dict[str, str] = {}
    snaps: dict[str, Snapshot | None] = {}
    session = cl.session
    for job in jobs:
        where = session.where(job.key)
        if where is None:
            out[job.key] = DONE if session.is_computed(job.key) else NOT_SUBMITTED
            continue
        run_id, aj, idx = where
        if run_id not in snaps:
            snaps[run_id] = _snapshot(cl, run_id, poll)
        snap = snaps[run_id]
        if snap is None:  # a run of an earlier session, found by the cache
            out[job.key] = DONE if session.is_computed(job.key) else PENDING
        else:
            out[job.key] = snap.states[aj][idx]
    return out


def _snapshot(cl: Cluster, run_id: str, poll: bool) -> Snapshot | None:
    run = cl.session.run(run_id)
    if run is None:
        return None
    last = run.last_snapshot
    if run.finished or not poll:
        return last if last is not None else (run.poll() if poll else None)
    snap = run.poll()
    assert snap is not None
    run.observe(snap)
    return snap


# --------------------------------------------------------------------------- submitting


def _unsubmitted(cl: Cluster, items: Iterable[Any]) -> list[Job]:
    out: dict[str, Job] = {}
    for item in items:
        for job in _jobs(item):
            if not cl.session.knows(job.key):
                out.setdefault(job.key, job)
    return list(out.values())


def flush(cl: Cluster, obj: Any = None) -> Run | None:
    """Submit, in one submission, every job built in the cluster's block and not
    submitted yet, plus ``obj``'s jobs (and what they need). Returns the run, if any."""
    items = cl.session.take_pending() if current_cluster() is cl else []
    if obj is not None:
        items.append(obj)
    jobs = _unsubmitted(cl, items)
    if not jobs:
        return None
    run = submit(jobs, cluster=cl, progress=False)
    return run if run.handle is not None else None


class Submitter:
    """``cluster.submit(task)``: calling (or mapping) it builds and submits at once."""

    def __init__(self, cluster: Cluster, task: Task[Any]) -> None:
        if not isinstance(task, Task):
            msg = f"cluster.submit() takes a @task, got {type(task).__name__}"
            raise TypeError(msg)
        self._cluster = cluster
        self._task = task

    def __call__(self, *args: Any, **kwargs: Any) -> Job:
        job = self._task(*args, **kwargs)
        flush_only(self._cluster, job)
        return job

    def map(self, items: Any, **options: Any) -> JobArray:
        arr = self._task.map(items, **options)
        flush_only(self._cluster, arr)
        return arr


def flush_only(cl: Cluster, obj: Any) -> None:
    """Submit ``obj`` (and what it needs) now, leaving the block's other jobs pending."""
    jobs = _unsubmitted(cl, [obj])
    if jobs:
        submit(jobs, cluster=cl, progress=False)


# --------------------------------------------------------------------------- waiting


def wait(
    obj: Any,
    timeout: float | None = None,
    poll_interval: float | None = None,
    *,
    cluster: Cluster | None = None,
) -> bool:
    """Submit what is not submitted yet (flush), then wait until ``obj``'s jobs end.

    True if they all succeeded; False if any failed or was cancelled. A timeout raises
    :class:`WaitTimeoutError` (a ``TimeoutError``) and leaves the jobs running.
    """
    if timeout is not None and timeout < 0:
        msg = f"timeout must be >= 0 seconds or None, got {timeout!r}"
        raise ValueError(msg)
    if poll_interval is not None and poll_interval <= 0:
        msg = f"poll_interval must be > 0 seconds, got {poll_interval!r}"
        raise ValueError(msg)
    cl = _session(obj, cluster)
    jobs = _jobs(obj)
    flush(cl, obj)
    states = _await(cl, jobs, timeout, poll_interval)
    return all(s == DONE for s in states.values())


def _await(
    cl: Cluster, jobs: list[Job], timeout: float | None, poll_interval: float | None
) -> dict[str, str]:
    """Poll the runs holding ``jobs`` until each of them is in an end state."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = poll_interval or cl.poll_min_s
    last: dict[str, str] | None = None
    while True:
        states = _states(cl, jobs)
        waiting = [k for k, s in states.items() if s not in TERMINAL]
        if not waiting:
            return states
        if deadline is not None and time.monotonic() >= deadline:
            n = len(waiting)
            msg = (
                f"{n} job(s) not finished after {timeout} s (e.g. {waiting[0]}); they keep "
                f"running: wait again, or cancel() them"
            )
            raise WaitTimeoutError(msg)
        if poll_interval is None:
            delay = cl.poll_min_s if states != last else min(delay * 1.5, cl.poll_max_s)
        last = states
        wait_s = delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic()))
        run = _run_of(cl, waiting[0])
        assert run.handle is not None
        cl.backend.wait_for_change(run.handle, wait_s)


def get_result(obj: Any, timeout: float | None = None, *, cluster: Cluster | None = None) -> Any:
    """``obj``'s value once its jobs succeeded; the first failure raises with its original
    exception type (as ``compute`` does)."""
    cl = _session(obj, cluster)
    if not wait(obj, timeout, cluster=cl):
        _raise_failure(cl, obj)
    templates, _ = lift_outputs([obj])
    return fetch_outputs(cl, templates)[0]


def _raise_failure(cl: Cluster, obj: Any) -> None:
    """Raise the first failure among the nodes ``obj`` needs, as ``compute`` would."""
    session = cl.session
    missing = {j.key for j in collect(_jobs(obj), session.computed())}
    by_run: dict[str, set[str]] = {}
    for key in missing:
        where = session.where(key)
        if where is not None:
            by_run.setdefault(where[0], set()).add(key)
    for run_id, keys in by_run.items():
        run = session.run(run_id)
        last = run.last_snapshot if run is not None else None
        if run is None or last is None:
            continue
        states = {
            aj.id: [
                s if key in keys else DONE
                for key, s in zip(aj.keys, last.states[aj.id], strict=True)
            ]
            for aj in run.array_jobs
        }
        run.raise_failures(Snapshot(states=states, failures=last.failures))
    key = next(iter(missing), _jobs(obj)[0].key)
    msg = f"{obj!r} did not complete (node {key})"
    raise JobFailedError(msg, key=key)


# --------------------------------------------------------------------------- state


def _slurm_word(cl: Cluster, job: Job, state: str) -> str:
    """The backend state in Slurm's words (DONE -> COMPLETED, a failure's own state)."""
    if state == DONE:
        return COMPLETED
    if state == FAILED:
        where = cl.session.where(job.key)
        run = cl.session.run(where[0]) if where else None
        last = run.last_snapshot if run is not None else None
        if where is not None and last is not None:
            failure = last.failures.get((where[1], where[2]))
            if failure is not None and failure.state:
                return failure.state.split()[0]
        return FAILED
    return state


def get_status(obj: Any, *, cluster: Cluster | None = None) -> str:
    """One word: NOT_SUBMITTED, PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, or the
    failure's own Slurm state (TIMEOUT, OUT_OF_MEMORY, ...). For a JobArray: RUNNING
    while any element runs, else PENDING while any waits, else the first failure's
    word, else CANCELLED if any was, else COMPLETED."""
    cl = _session(obj, cluster)
    jobs = _jobs(obj)
    states = _states(cl, jobs)
    words = [_slurm_word(cl, j, states[j.key]) for j in jobs]
    if not words:
        return COMPLETED
    if len(words) == 1:
        return words[0]
    if all(w == NOT_SUBMITTED for w in words):
        return NOT_SUBMITTED
    if RUNNING in words:
        return RUNNING
    if PENDING in words or NOT_SUBMITTED in words:
        return PENDING
    bad = [w for w in words if w not in (COMPLETED, CANCELLED)]
    if bad:
        return bad[0]
    return CANCELLED if CANCELLED in words else COMPLETED


def is_completed(obj: Any, *, cluster: Cluster | None = None) -> bool:
    return get_status(obj, cluster=cluster) not in (NOT_SUBMITTED, PENDING, RUNNING)


def job_id(obj: Any) -> str | None:
    """Slurm's id once submitted: ``"123_4"`` for element 4 of array job 123, ``"123"``
    for a JobArray that is one array job (ids joined by commas otherwise). Local
    backends have no Slurm: ``RUN_ID:AJ_INDEX`` (``RUN_ID:AJ`` for an array)."""
    jobs = _jobs(obj)
    if not jobs:
        return None
    cl = _session(obj, None)
    ids: list[str] = []
    for job in jobs:
        where = cl.session.where(job.key)
        if where is None:
            return None
        run_id, aj, idx = where
        run = cl.session.run(run_id)
        slurm = run.handle.job_ids.get(aj) if run is not None and run.handle else None
        base = slurm if slurm else f"{run_id}:{aj}"
        ids.append(f"{base}_{idx}" if isinstance(obj, (Job, JobView)) else base)
    return ",".join(dict.fromkeys(ids))


def cancel(obj: Any, *, cluster: Cluster | None = None) -> bool:
    """Cancel ``obj``'s unfinished elements (their dependents are cancelled too, as
    Slurm does); drop those never submitted from the block's flush."""
    cl = _session(obj, cluster)
    jobs = _jobs(obj)
    keys = {j.key for j in jobs}
    dropped = False
    kept = []
    for item in cl.session.pending():
        if any(j.key in keys for j in _jobs(item)):
            dropped = True
            rest = [j for j in _jobs(item) if j.key not in keys]
            kept.extend(rest)
        else:
            kept.append(item)
    cl.session.keep_pending(kept)
    states = _states(cl, jobs)
    targets: dict[str, list[tuple[str, int]]] = {}
    for job in jobs:
        where = cl.session.where(job.key)
        if states[job.key] in _ACTIVE and where is not None:
            run_id, aj, idx = where
            targets.setdefault(run_id, []).append((aj, idx))
    for run_id, elements in targets.items():
        run = cl.session.run(run_id)
        assert run is not None and run.handle is not None
        cl.backend.cancel_elements(run.handle, elements)
    return dropped or bool(targets)


# --------------------------------------------------------------------------- output


def _run_of(cl: Cluster, key: str) -> Run:
    """The run of this session that holds node ``key``."""
    where = cl.session.where(key)
    run = cl.session.run(where[0]) if where is not None else None
    assert run is not None, key
    return run


def _where(cl: Cluster, job: Job) -> tuple[str, str, int]:
    where = cl.session.where(job.key)
    if where is None:
        msg = (
            f"{job!r} has not been submitted in this session: call job.wait() (inside "
            f"`with cluster:`), or submit it at once with cluster.submit(task)(...)"
        )
        raise NotSubmittedError(msg)
    return where


def get_output(obj: Any, stream: str, *, cluster: Cluster | None = None) -> Any:
    """A Job's stdout (``stream="out"``) or stderr so far; a JobArray's, per element."""
    cl = _session(obj, cluster)
    texts = []
    for job in _jobs(obj):
        out, err = read_logs(cl, *_where(cl, job))
        texts.append(out if stream == "out" else err)
    return texts if isinstance(obj, JobArray) else texts[0]


def get_script(obj: Any, *, cluster: Cluster | None = None) -> str:
    """The batch script of the (first) array job that runs ``obj``."""
    cl = _session(obj, cluster)
    run_id, aj, idx = _where(cl, _jobs(obj)[0])
    path = RunLayout.of(run_id).job_script(aj)
    data = cl.backend.read_files([path]).get(path)
    if data is not None:
        return data.decode(errors="replace")
    workdir = cl.backend.workdir
    return (
        f"# the {cl.backend_name} backend has no batch script; each element runs as\n"
        f"SLURM_ARRAY_TASK_ID={idx} python -m lazyslurm.runner {workdir}/runs/{run_id} {aj}\n"
    )


def tail(
    job: Any,
    n: int = 10,
    follow: bool = False,
    poll_interval: float | None = None,
    stream: str = "out",
    *,
    cluster: Cluster | None = None,
) -> Iterable[str]:
    """The last ``n`` lines of the job's output; ``follow=True``: an iterator of them,
    then of each new line as it is written, ending when the job ends."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        msg = f"n must be a non-negative int, got {n!r}"
        raise ValueError(msg)
    if stream not in ("out", "err"):
        msg = f"stream must be 'out' or 'err', got {stream!r}"
        raise ValueError(msg)
    if not isinstance(job, Job):
        msg = f"tail() follows one Job, got {type(job).__name__}; tail its elements"
        raise TypeError(msg)
    cl = _session(job, cluster)
    where = _where(cl, job)
    if not follow:
        lines = read_logs(cl, *where)[stream == "err"].splitlines()
        return lines[-n:] if n else []
    return _follow(cl, job, where, n, poll_interval or max(cl.poll_min_s, 0.5), stream)


def _follow(
    cl: Cluster, job: Job, where: tuple[str, str, int], n: int, every: float, stream: str
) -> Iterator[str]:
    sent = 0  # complete lines already yielded (or skipped by n)
    first = True
    while True:
        ended = _states(cl, [job])[job.key] in TERMINAL
        text = read_logs(cl, *where)[stream == "err"]
        lines = text.split("\n")
        complete, partial = lines[:-1], lines[-1]
        if ended and partial:
            complete.append(partial)
        if first:
            sent = max(0, len(complete) - n)
            first = False
        yield from complete[sent:]
        sent = max(sent, len(complete))
        if ended:
            return
        run = _run_of(cl, job.key)
        assert run.handle is not None
        cl.backend.wait_for_change(run.handle, every)


# --------------------------------------------------------------------------- the executor
# This module is what lazy values reach through lazyslurm.registry (the package registers
# it): the handle methods above, and these.


compute = execute.compute
visualize = draw.visualize


def job_logs(job: Any, cluster: Any = None) -> tuple[str, str]:
    return execute.job_logs(job, cluster=cluster)


def lazy_html(value: Any) -> str:
    """The notebook display of a lazy value (``_repr_html_``)."""
    from lazyslurm.notebook import lazy_html as _html

    return _html(value)


def plan_html(plan: Any) -> str:
    """The notebook display of a plan (``Plan._repr_html_``)."""
    from lazyslurm.notebook import plan_html as _html

    return _html(plan)


def run_html(run: Run) -> str:
    """The notebook display of a run (``Run._repr_html_``): its status and picture."""
    from lazyslurm.notebook import run_html as _html

    return _html(run)


def status_html(status: Any) -> str:
    """The notebook display of a run's status (``RunStatus._repr_html_``)."""
    from lazyslurm.notebook import status_html as _html

    return _html(status)


def usage_html(usage: Any) -> str:
    """The notebook display of what a run used (``Usage._repr_html_``)."""
    from lazyslurm.notebook import usage_html as _html

    return _html(usage)


def dashboard(run: Run, *, port: int = 0, open_browser: bool = False) -> Any:
    """The live web dashboard of ``run`` (``Run.dashboard``: docs/dashboard.md)."""
    from lazyslurm.dashboard import for_run

    return for_run(run, port=port, open_browser=open_browser)
