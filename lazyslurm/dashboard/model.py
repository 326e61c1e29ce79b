"""What the dashboard shows, as JSON-able data: the runs, one run's plan and states, an
element, the timeline and the usage. One background poller per open run.

Everything here talks to the rest of lazyslurm through its public pieces only:
the runs listing (``lazyslurm.runs``), ``Run.attach`` (the ``Run`` class is handed in by
the caller: ``run.dashboard()`` or the command line, so that this module does not import
the layer that imports it), ``Run.poll``/``expand``/``logs``/``cancel``,
``ArrayJob`` records, ``preview.job_cost``/``total_cost``, ``store.RunLayout``,
``backend.read_files``/``backend.shell`` and ``backend.accounting`` (sacct, where the
cluster keeps accounts), and ``run.usage()`` (lazyslurm.usage) for requested vs used.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lazyslurm.store import INSIDE

if TYPE_CHECKING:
    from lazyslurm.backends.base import Accounting, Snapshot
    from lazyslurm.cluster import Cluster
    from lazyslurm.planning.planner import ArrayJob

_Run = Any  # lazyslurm.execute.Run, handed in (execute imports this package: no cycle)

__all__ = [
    "CODES",
    "Hub",
    "RunWatch",
    "encode_states",
]

# one letter per element state in the states strings sent to the page
CODES = {"PENDING": "P", "RUNNING": "R", "DONE": "D", "FAILED": "F", "CANCELLED": "C"}
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RUNS_EVERY_S = 3.0  # the runs list is read at most this often (one command each time)
LIVE_MAX_DELAY_S = 1.0  # while a page shows a run, it is polled at least this often
IDLE_S = 30.0  # a run no page has shown for this long is no longer polled
FAILURES_SENT = 500  # failed elements listed in a states message (the rest: on request)
ACCT_TTL_S = 5.0  # accounting answers (timeline, usage) are reused this long
DETAIL_MAX_AGE_S = 1.0  # the element panel's: sacct learns of an element a moment late
ERROR_BACKOFF_S = 5.0


def encode_states(states: Sequence[str]) -> str:
    """One letter per element (``?`` for a state the page does not know).

    >>> encode_states(["DONE", "RUNNING", "PENDING", "FAILED", "CANCELLED", "X"])
    'DRPFC?'
    """
    return "".join(CODES.get(s, "?") for s in states)


def overall(counts: Mapping[str, int]) -> str:
    """One word for a set of elements, the most pressing first.

    >>> overall({"DONE": 3, "RUNNING": 1}), overall({"DONE": 2, "FAILED": 1}), overall({})
    ('RUNNING', 'FAILED', 'DONE')
    """
    for state in ("RUNNING", "PENDING", "FAILED", "CANCELLED"):
        if counts.get(state):
            return state
    return "DONE"


# --------------------------------------------------------------------------- times


def _epoch(text: str) -> float | None:
    """The scheduler's ``2026-01-02T03:04:05`` (local time) as a Unix time; None for
    ``Unknown`` and the like.

    >>> _epoch("Unknown") is None
    True
    """
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


# --------------------------------------------------------------------------- one run


class RunWatch:
    """One open run: a quiet attached :class:`~lazyslurm.execute.Run` (no callbacks) and
    the thread that polls it while a page shows it (one status command per poll, at the
    cluster's pace, at least every :data:`LIVE_MAX_DELAY_S` while watched)."""

    def __init__(self, hub: Hub, run_id: str, run: _Run | None = None) -> None:
        self.hub = hub
        self.id = run_id
        self.run = run if run is not None else hub.attach(run_id)
        self.version = 0  # bumped when the states change
        self.structure_version = 0  # bumped when array jobs appear (dynamic subgraphs)
        self.snapshot: Snapshot | None = None
        self.polled_at: float | None = None
        self.error = ""
        self.finished = False
        self.watchers = 0  # pages streaming this run
        self.seen_at = time.monotonic()
        self._count = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._structure: dict[str, Any] | None = None
        self._acct: dict[str, tuple[float, Any]] = {}
        self._thread = threading.Thread(
            target=self._loop, name=f"lazyslurm-dashboard-{run_id}", daemon=True
        )
        self._thread.start()

    # -- polling
    def subscribe(self, delta: int) -> None:
        """A page starts (+1) or stops (-1) streaming this run."""
        with self._count:
            self.watchers += delta
        self.touch()

    def wanted(self) -> bool:
        return self.watchers > 0 or time.monotonic() - self.seen_at < IDLE_S

    def touch(self) -> None:
        """A page asked for this run: keep (or start again) polling it."""
        self.seen_at = time.monotonic()
        self._wake.set()

    def poll_now(self) -> None:
        """Poll at once (after an action), even a run that had ended."""
        self.finished = False
        self.touch()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wait_first(self, timeout_s: float) -> bool:
        """Wait until the first poll is done (or failed); True if there is a snapshot."""
        deadline = time.monotonic() + timeout_s
        while self.polled_at is None and not self.error and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.snapshot is not None

    def _loop(self) -> None:
        cluster = self.hub.cluster
        delay = cluster.poll_min_s
        while not self._stop.is_set():
            if self.finished or not self.wanted():
                self._wake.wait(timeout=IDLE_S)
                self._wake.clear()
                continue
            before = self.snapshot
            try:
                self._poll_once()
            except Exception as exc:  # shown on the page; the poller retries
                self.error = " ".join(str(exc).split()) or type(exc).__name__
                self.polled_at = time.time()
                self.hub.notify()
                self._wake.wait(timeout=ERROR_BACKOFF_S)
                self._wake.clear()
                continue
            snap = self.snapshot
            changed = before is None or snap is None or before.states != snap.states
            cap = min(cluster.poll_max_s, LIVE_MAX_DELAY_S) if self.watchers else cluster.poll_max_s
            delay = cluster.poll_min_s if changed else min(delay * 1.5, cap)
            handle = self.run.handle
            if self.finished or handle is None:
                continue
            # the backend's own wait: a result or error landing ends it early (over SSH it
            # is folded into the next poll's round trip, on the cluster)
            try:
                cluster.backend.wait_for_change(handle, delay)
            except Exception:  # the next poll reports what is wrong
                time.sleep(delay)

    def _poll_once(self) -> None:
        run = self.run
        snap = run.poll()
        grew = run.expand()  # subgraphs that tasks submitted (cheap when none is new)
        if grew:
            snap = run.poll()
            self._structure = None
            self.structure_version += 1
        if snap is None:  # nothing was submitted
            self.finished = True
            self.polled_at = time.time()
            self.hub.notify()
            return
        changed = self.snapshot is None or self.snapshot.states != snap.states
        old_unreachable = self.snapshot.unreachable_since if self.snapshot else None
        self.snapshot = snap
        self.polled_at = time.time()
        self.error = ""
        if snap.finished and not grew:
            self.finished = True
        if changed or grew or old_unreachable != snap.unreachable_since or self.finished:
            self.version += 1
        self.hub.notify()

    # -- what the page gets
    def structure(self) -> dict[str, Any]:
        """The run's array jobs (the DAG), their resources and the plan's worst case."""
        if self._structure is not None:
            return self._structure
        run = self.run
        handle = run.handle
        job_ids = dict(handle.job_ids) if handle is not None else {}
        ajs = [
            {
                "id": aj.id,
                "name": aj.name,
                "size": aj.size,
                "stage": aj.stage,
                "chunk": aj.chunk,
                "nchunks": aj.nchunks,
                "dependencies": [[kind, up] for kind, up in aj.dependencies],
                "after": list(aj.after),
                "pack": aj.pack,
                "parent": aj.parent,
                "depth": aj.depth,
                "slurm_id": job_ids.get(aj.id, ""),
                "resources": dict(aj.resources.describe()),
            }
            for aj in run.array_jobs
        ]
        meta = self.hub.meta(self.id)
        self._structure = {
            "id": self.id,
            "version": self.structure_version,
            "backend": self.hub.cluster.backend_name,
            "label": meta.get("label", ""),
            "created": meta.get("created"),
            "array_jobs": ajs,
            "cost": worst_case(run.array_jobs, self.hub.cluster),
        }
        return self._structure

    def states(self) -> dict[str, Any]:
        """The element states of the last poll, one letter per element."""
        snap = self.snapshot
        out: dict[str, Any] = {
            "id": self.id,
            "version": self.version,
            "structure_version": self.structure_version,
            "polled_at": self.polled_at,
            "finished": self.finished,
            "error": self.error,
            "watching": self.wanted(),
        }
        if snap is None:
            out.update(states={}, counts={}, state="PENDING", failures=[], nfailures=0)
            out["unreachable"] = ""
            return out
        failures: list[list[Any]] = []
        nfailures = 0
        for aj in self.run.array_jobs:
            row = snap.states.get(aj.id, ())
            for i, s in enumerate(row):
                if s in ("FAILED", "CANCELLED"):
                    nfailures += 1
                    if len(failures) < FAILURES_SENT:
                        f = snap.failures.get((aj.id, i))
                        failures.append(
                            [
                                aj.id,
                                i,
                                f.state if f else s,
                                f.exit_code if f else "",
                                f.reason if f else "",
                            ]
                        )
        counts = snap.counts_total()
        out.update(
            states={aj: encode_states(row) for aj, row in snap.states.items()},
            counts=counts,
            state=overall(counts),
            failures=failures,
            nfailures=nfailures,
            unreachable=snap.unreachable_reason if snap.unreachable_since else "",
        )
        return out

    def array_job(self, aj_id: str) -> ArrayJob:
        for aj in self.run.array_jobs:
            if aj.id == aj_id:
                return aj
        msg = f"run {self.id} has no array job {aj_id!r}"
        raise KeyError(msg)

    def element_state(self, aj: ArrayJob, index: int) -> tuple[str, Any]:
        snap = self.snapshot
        if snap is None:
            return "PENDING", None
        row = snap.states.get(aj.id, ())
        state = row[index] if index < len(row) else "PENDING"
        return state, snap.failures.get((aj.id, index))

    # -- accounting (backend.accounting: sacct on Slurm), shared by the timeline, the usage
    # and the element panel
    def accounting(self, max_age_s: float = ACCT_TTL_S) -> Accounting | None:
        """The scheduler's accounting of this run (every attempt of every element: one
        ``backend.accounting`` call, reused ``max_age_s``), or None where it keeps none."""
        handle = self.run.handle
        if handle is None or not handle.job_ids:
            return None
        hit = self._acct.get("accounting")
        if hit is not None and time.monotonic() - hit[0] < max_age_s:
            return hit[1]  # type: ignore[no-any-return]
        answer = self.hub.cluster.backend.accounting(handle)
        self.hub.accounting_note = answer.note
        got = None if answer.note else answer
        self._acct["accounting"] = (time.monotonic(), got)
        return got

    def timeline(self) -> dict[str, Any]:
        """Start and end of every element: the scheduler's accounting where the cluster
        keeps it (the last attempt of each), else the run's own files (a log's creation,
        a result's or error's last write)."""
        run = self.run
        rows: dict[str, dict[str, list[Any]]] = {}
        acct = self.accounting()
        if acct is not None:
            last: dict[tuple[str, int], Any] = {}
            for row in acct.rows:
                last[(row.array_job, row.index)] = row  # attempts come oldest first
            for aj in run.array_jobs:
                starts, ends = [], []
                for i in range(aj.size):
                    r = last.get((aj.id, aj.slurm_index(i)))
                    starts.append(_epoch(r.start) if r is not None else None)
                    ends.append(_epoch(r.end) if r is not None else None)
                rows[aj.id] = {"start": starts, "end": ends}
            source = "sacct"
        else:
            stamps = self._file_times()
            for aj in run.array_jobs:
                starts, ends = [], []
                for i, key in enumerate(aj.keys):
                    j = aj.slurm_index(i)
                    logs = (stamps.get(INSIDE.log(aj.id, j, s)) for s in ("out", "err"))
                    born = [b[0] for b in logs if b is not None and b[0] is not None]
                    starts.append(min(born) if born else None)
                    end = None
                    for path in (
                        INSIDE.result(key),
                        INSIDE.error(key),
                        INSIDE.pack(aj.id, j),
                    ):
                        if path in stamps:
                            end = stamps[path][1]
                            break
                    ends.append(end)
                rows[aj.id] = {"start": starts, "end": ends}
            source = "files"
        return {"id": self.id, "source": source, "now": time.time(), "array_jobs": rows}

    def _file_times(self, paths: Sequence[str] = ()) -> dict[str, tuple[float | None, float]]:
        """Relative path in the run directory -> (creation time or None, last write), of
        ``paths`` (default: every log, result and error file of the run)."""
        from lazyslurm.store import RunLayout

        backend = self.hub.cluster.backend
        root = RunLayout.of(self.id, str(backend.workdir)).root
        if paths:
            files = " ".join(shlex.quote(p) for p in paths)
            listing = f'stat -c "$f" -- {files} 2>/dev/null'
        else:
            listing = 'find logs results errors -maxdepth 1 -type f -exec stat -c "$f" {} +'
        script = (
            f"cd {shlex.quote(root)} 2>/dev/null || exit 0\n"
            # sub-second times where stat has them (coreutils >= 8.32), else whole seconds
            "f='%n|%.3W|%.3Y'; stat -c \"$f\" . >/dev/null 2>&1 || f='%n|%W|%Y'\n"
            f"{listing} 2>/dev/null; true"
        )
        res = backend.shell.run(script)
        out: dict[str, tuple[float | None, float]] = {}
        for line in res.stdout.splitlines():
            parts = line.rsplit("|", 2)
            try:
                born, mtime = float(parts[1]), float(parts[2])
            except (ValueError, IndexError):
                continue
            out[parts[0]] = (born if born > 0 else None, mtime)
        return out

    def usage(self) -> dict[str, Any]:
        """What the run used, per task: requested against used memory, CPU and time,
        core-hours, warnings (``run.usage()``: the runner's records, the scheduler's
        accounting where there is one), reused :data:`ACCT_TTL_S`."""
        hit = self._acct.get("usage")
        if hit is not None and time.monotonic() - hit[0] < ACCT_TTL_S:
            return hit[1]  # type: ignore[no-any-return]
        report = self.run.usage()
        out = report.to_json()
        out.update(id=self.id, source="+".join(report.sources), summary=report.summary())
        out.pop("elements", None)  # per element: the element panel asks for its own
        self._acct["usage"] = (time.monotonic(), out)
        return out

    def element(self, aj_id: str, index: int) -> dict[str, Any]:
        """One element: its key, state, failure, error record, Slurm id, node, times,
        attempts and the paths of its logs."""
        from lazyslurm.store import ErrorRecord, RunLayout, decode_outcome

        aj = self.array_job(aj_id)
        if not 0 <= index < aj.size:
            msg = f"array job {aj_id} of run {self.id} has elements 0-{aj.size - 1}"
            raise KeyError(msg)
        key = aj.keys[index]
        state, failure = self.element_state(aj, index)
        handle = self.run.handle
        jid = handle.job_ids.get(aj.id, "") if handle is not None else ""
        slurm_index = aj.slurm_index(index)
        layout = RunLayout.of(self.id)
        out: dict[str, Any] = {
            "run": self.id,
            "array_job": aj.id,
            "task": aj.name,
            "index": index,
            "key": key,
            "state": state,
            "failure": None,
            "slurm_id": f"{jid}_{slurm_index}" if jid else "",
            "packed": aj.pack > 1,
            "logs": [layout.log(aj.id, slurm_index, s) for s in ("out", "err")],
            "error": None,
            "attempts": [],
            "node": "",
            "start": None,
            "end": None,
        }
        if failure is not None:
            out["failure"] = {
                "state": failure.state,
                "exit_code": failure.exit_code,
                "reason": failure.reason,
                "job_id": failure.job_id,
            }
        if state in ("FAILED", "CANCELLED"):
            paths = [layout.error(key), layout.cancelled(key)]
            files = self.hub.cluster.backend.read_files(paths)
            record = files.get(paths[0])
            if record is not None:
                try:
                    _, payload = decode_outcome(record, key=key, path=paths[0], run=self.id)
                    rec = ErrorRecord.decode(payload)
                    out["error"] = {
                        "type": rec.type_name,
                        "module": rec.module,
                        "message": rec.message,
                        "traceback": rec.traceback,
                    }
                except Exception as exc:  # a damaged record: say so, never unpickle more
                    out["error"] = {
                        "type": type(exc).__name__,
                        "message": str(exc),
                        "module": "",
                        "traceback": "",
                    }
            elif paths[1] in files:
                out["error"] = {
                    "type": "cancelled",
                    "module": "",
                    "traceback": "",
                    "message": "not run: an input of this element failed",
                }
        if jid:
            attempts = self._attempts(aj.id, slurm_index)  # requeues included
            if attempts:
                last = attempts[-1]
                out.update(node=last["node"], start=last["start"], end=last["end"])
            out["attempts"] = attempts
        else:  # no Slurm: the run's own files tell the times
            if self.hub.cluster.embedded:
                out["node"] = f"this host ({self.hub.cluster.backend_name} backend)"
            logs = [INSIDE.log(aj.id, slurm_index, s) for s in ("out", "err")]
            ends = [
                INSIDE.error(key),
                INSIDE.result(key),
                INSIDE.pack(aj.id, slurm_index),
            ]
            stamps = self._file_times([*logs, *ends])
            born = [b for p in logs if (b := stamps.get(p, (None, 0.0))[0])]
            out["start"] = min(born) if born else None
            out["end"] = next((stamps[p][1] for p in ends if p in stamps), None)
        return out

    def _attempts(self, aj_id: str, slurm_index: int) -> list[dict[str, Any]]:
        """Every attempt of one Slurm element, oldest first (requeues too), and the
        request each ran with, from the scheduler's accounting."""
        acct = self.accounting(max_age_s=DETAIL_MAX_AGE_S)
        if acct is None:
            return []
        return [
            {
                "attempt": row.attempt,
                "start": _epoch(row.start),
                "end": _epoch(row.end),
                "state": row.state,
                "node": row.node,
                "exit_code": row.exit_code,
                "mem_mb": row.req_mem_mb,
                "time_min": row.time_limit_min,
                "max_rss_mb": row.max_rss_mb,
                "elapsed_s": row.elapsed_s,
            }
            for row in acct.rows
            if row.array_job == aj_id and row.index == slurm_index
        ]

    def logs(self, aj_id: str, index: int) -> tuple[str, str]:
        aj = self.array_job(aj_id)
        return self.run.logs(aj.keys[index])


def worst_case(array_jobs: Iterable[ArrayJob], cluster: Cluster) -> dict[str, Any]:
    """The plan's requested resources and worst case (``lazyslurm.preview``), as data."""
    from lazyslurm.planning.cost import job_cost, total_cost

    defaults = cluster.task_defaults
    costs = [
        job_cost(
            aj.id,
            aj.name,
            aj.size,
            aj.resources,
            stage=aj.stage,
            chunk=aj.chunk,
            nchunks=aj.nchunks,
            defaults=defaults,
        )
        for aj in array_jobs
    ]
    t = total_cost(costs)
    return {
        "jobs": [
            {
                "id": c.id,
                "name": c.name,
                "elements": c.elements,
                "stage": c.stage,
                "throttle": c.throttle,
                "cpus": c.cpus,
                "mem_mb": c.mem_mb,
                "gpus": c.gpus,
                "time_min": c.time_min,
                "partition": c.partition,
                "core_hours": c.core_hours,
                "gpu_hours": c.gpu_hours,
                "mem_gb_hours": c.mem_gb_hours,
                "assumptions": list(c.assumptions),
            }
            for c in costs
        ],
        "total": {
            "array_jobs": t.array_jobs,
            "elements": t.elements,
            "at_once": t.at_once,
            "stages": t.stages,
            "core_hours": t.core_hours,
            "gpu_hours": t.gpu_hours,
            "mem_gb_hours": t.mem_gb_hours,
        },
    }


# --------------------------------------------------------------------------- every run


class Hub:
    """The dashboard's model: one cluster (one connection), its runs list and the open
    runs. ``version`` counts changes; pages wait on ``changed``."""

    def __init__(self, cluster: Cluster, run_type: type[_Run]) -> None:
        self.cluster = cluster
        self.accounting_note: str | None = None  # the backend's last answer: "" it keeps one
        self.run_type = run_type  # lazyslurm.execute.Run
        self.changed = threading.Condition()
        self.version = 0
        self.closed = False
        self._lock = threading.Lock()
        self._watches: dict[str, RunWatch] = {}
        self._runs: list[Any] = []
        self._runs_at = 0.0
        self._runs_error = ""
        self._runs_version = 0
        self._runs_lock = threading.Lock()
        self._meta: dict[str, dict[str, Any]] = {}

    def notify(self) -> None:
        with self.changed:
            self.version += 1
            self.changed.notify_all()

    def close(self) -> None:
        self.closed = True
        with self._lock:
            watches = list(self._watches.values())
            self._watches.clear()
        for w in watches:
            w.stop()
        self.notify()

    # -- runs
    def attach(self, run_id: str) -> _Run:
        """A quiet copy of the run (no callbacks: the user's progress bars stay put)."""
        attached = self.run_type.attach(run_id, self.cluster)
        return self.run_type(self.cluster, attached.handle, [])

    def watch(self, run_id: str, run: _Run | None = None) -> RunWatch:
        """The open run ``run_id`` (attached on first use); KeyError if it is not a run."""
        if not RUN_ID.match(run_id):
            msg = f"{run_id!r} is not a run id"
            raise KeyError(msg)
        with self._lock:
            w = self._watches.get(run_id)
        if w is not None:
            w.touch()
            return w
        w = RunWatch(self, run_id, run)  # KeyError: no such run
        with self._lock:
            kept = self._watches.setdefault(run_id, w)
        if kept is not w:
            w.stop()
        return kept

    def reattach(self, run_id: str) -> RunWatch:
        """Drop the open run and attach it again (new subgraphs, ids, a fresh poller)."""
        with self._lock:
            old = self._watches.pop(run_id, None)
        if old is not None:
            old.stop()
        w = self.watch(run_id)
        self.notify()
        return w

    def open_watches(self) -> list[RunWatch]:
        with self._lock:
            return list(self._watches.values())

    def runs(self, *, refresh: bool = False, cached: bool = False) -> dict[str, Any]:
        """The runs in the store (``lazyslurm.runs``: one command, at most every
        :data:`RUNS_EVERY_S`), with the live state of the open ones. ``cached``: the list
        last read, if there is one, even older (a page's first paint does not wait)."""
        from lazyslurm.cache import list_runs

        with self._runs_lock:
            stale = time.monotonic() - self._runs_at >= RUNS_EVERY_S
            if refresh or (stale and not (cached and self._runs_at)):
                try:
                    backend = self.cluster.backend  # what lazyslurm.runs(cluster) does
                    found = list_runs(backend.shell, str(backend.workdir))
                    error = ""
                except Exception as exc:
                    found, error = self._runs, " ".join(str(exc).split())
                self._runs_at = time.monotonic()
                if found != self._runs or error != self._runs_error:
                    self._runs, self._runs_error = found, error
                    self._runs_version += 1
            items = list(self._runs)
            error = self._runs_error
        live = {w.id: w for w in self.open_watches()}
        out = []
        for r in items:
            self._meta.setdefault(r.id, {"label": r.label, "created": r.created})
            entry = {
                "id": r.id,
                "created": r.created,
                "state": r.state,
                "tasks": r.tasks,
                "done": r.done,
                "failed": r.failed,
                "label": r.label,
                "backend": r.backend,
            }
            w = live.get(r.id)
            if w is not None and w.snapshot is not None:
                counts = w.snapshot.counts_total()
                entry.update(
                    state=overall(counts),
                    done=counts.get("DONE", 0),
                    failed=counts.get("FAILED", 0),
                    tasks=sum(counts.values()),
                    counts=counts,
                )
            out.append(entry)
        return {
            "version": self._runs_version,
            "runs": out,
            "error": error,
            "cluster": self.describe(),
        }

    def runs_version(self) -> tuple[int, tuple[int, ...]]:
        """Changes to the runs list: its own version and the open runs' versions."""
        return self._runs_version, tuple(w.version for w in self.open_watches())

    def describe(self) -> dict[str, Any]:
        c = self.cluster
        return {
            "backend": c.backend_name,
            "profile": getattr(c, "profile", None),
            "workdir": str(c.backend.workdir),
            "accounting": self.has_accounting(),
        }

    def meta(self, run_id: str) -> dict[str, Any]:
        """Label and creation time of a run (from the runs list, else its summary file)."""
        if run_id in self._meta:
            return self._meta[run_id]
        from lazyslurm.store import RunLayout

        path = RunLayout.of(run_id).summary
        meta: dict[str, Any] = {}
        try:
            data = json.loads(self.cluster.backend.read_files([path]).get(path, b"{}"))
            if isinstance(data, dict):
                meta = {"label": str(data.get("label", "")), "created": data.get("created")}
        except (ValueError, OSError):
            pass
        self._meta[run_id] = meta
        return meta

    def has_accounting(self) -> bool | None:
        """Whether the backend keeps accounting (None: not asked yet)."""
        if self.accounting_note is None:
            return None
        return not self.accounting_note

    def wait(self, version: int, timeout_s: float, until: Callable[[], bool] | None = None) -> int:
        """Block until ``version`` moves on (or ``until()``, or ``timeout_s``)."""
        with self.changed:
            self.changed.wait_for(
                lambda: self.version != version or self.closed or bool(until and until()),
                timeout=timeout_s,
            )
            return self.version
