"""What the dashboard shows, as JSON-able data: the runs, one run's plan and states, an
element, the timeline and the usage. One background poller per open run.

Everything here talks to the rest of lazyslurm through its public pieces only:
the runs listing (``lazyslurm.runs``), ``Run.attach`` (the ``Run`` class is handed in by
the caller: ``run.dashboard()`` or the command line, so that this module does not import
the layer that imports it), ``Run.poll``/``expand``/``logs``/``cancel``,
``ArrayJob`` records, ``preview.job_cost``/``total_cost``, ``store.RunLayout`` and
``backend.read_files``/``backend.shell`` (``sacct`` where the cluster keeps accounts).
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
    from lazyslurm.backends.base import Snapshot
    from lazyslurm.cluster import Cluster
    from lazyslurm.planning.planner import ArrayJob

_Run = Any  # lazyslurm.execute.Run, handed in (execute imports this package: no cycle)

__all__ = [
    "CODES",
    "Hub",
    "RunWatch",
    "encode_states",
    "parse_elapsed",
    "parse_mem_mb",
    "parse_sacct_times",
]

# one letter per element state in the states strings sent to the page
CODES = {"PENDING": "P", "RUNNING": "R", "DONE": "D", "FAILED": "F", "CANCELLED": "C"}
RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
RUNS_EVERY_S = 3.0  # the runs list is read at most this often (one command each time)
LIVE_MAX_DELAY_S = 1.0  # while a page shows a run, it is polled at least this often
IDLE_S = 30.0  # a run no page has shown for this long is no longer polled
FAILURES_SENT = 500  # failed elements listed in a states message (the rest: on request)
ACCT_TTL_S = 5.0  # sacct answers (timeline, usage) are reused this long
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


# --------------------------------------------------------------------------- sacct parsing


def parse_mem_mb(text: str) -> float | None:
    """sacct's MaxRSS (``1234K``, ``12M``, ``1.5G``, bytes without a unit) in MB.

    >>> parse_mem_mb("2048K"), parse_mem_mb("1.5G"), parse_mem_mb(""), parse_mem_mb("0")
    (2.0, 1536.0, None, 0.0)
    """
    m = re.fullmatch(r"([0-9.]+)([KMGTP]?)", text.strip())
    if m is None:
        return None
    scale = {"": 1 / 2**20, "K": 1 / 1024, "M": 1, "G": 1024, "T": 2**20, "P": 2**30}
    return float(m.group(1)) * scale[m.group(2)]


def parse_elapsed(text: str) -> float | None:
    """sacct's ``[D-]HH:MM:SS[.mmm]`` or ``MM:SS.mmm`` in seconds.

    >>> parse_elapsed("00:01:02"), parse_elapsed("1-00:00:01"), parse_elapsed("01:02.500")
    (62.0, 86401.0, 62.5)
    >>> parse_elapsed("") is None
    True
    """
    text = text.strip()
    if not text or text in ("INVALID", "Unknown"):
        return None
    days = 0
    if "-" in text:
        d, _, text = text.partition("-")
        if not d.isdigit():
            return None
        days = int(d)
    try:
        parts = [float(p) for p in text.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return days * 86400 + seconds


def _epoch(text: str) -> float | None:
    """sacct's ``2026-01-02T03:04:05`` (local time) as a Unix time; None for Unknown."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


def parse_sacct_times(text: str) -> dict[tuple[str, int], dict[str, Any]]:
    """``sacct -X -n -P -o JobID,Start,End,State,NodeList`` rows per (job id, index):
    start, end (Unix times or None), state, node. Ranges of elements that never started
    (``7_[0-9]``) and steps are left out.

    >>> rows = parse_sacct_times("7_1|2026-01-01T00:00:00|Unknown|RUNNING|n1\\n7_[2-5]|"
    ...                          "Unknown|Unknown|PENDING|None assigned\\n")
    >>> list(rows), rows[("7", 1)]["node"], rows[("7", 1)]["end"] is None
    ([('7', 1)], 'n1', True)
    """
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 5:
            continue
        m = re.fullmatch(r"(\d+)_(\d+)", parts[0])
        if m is None:
            continue
        out[(m.group(1), int(m.group(2)))] = {
            "start": _epoch(parts[1]),
            "end": _epoch(parts[2]),
            "state": parts[3].split()[0] if parts[3] else "",
            "node": parts[4] if parts[4] not in ("None assigned", "(null)") else "",
        }
    return out


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

    # -- accounting (sacct), shared by the timeline, the usage and the element panel
    def sacct(self, fields: str, *, steps: bool, ids: Sequence[str] | None = None) -> str | None:
        """sacct's rows for this run's Slurm jobs (cached :data:`ACCT_TTL_S`), or None
        where the cluster keeps no accounts."""
        if not self.hub.has_sacct():
            return None
        handle = self.run.handle
        if ids is None:
            ids = [j for j in (handle.job_ids.values() if handle else ()) if j]
        if not ids:
            return None
        cache_key = f"{fields}|{steps}|{','.join(ids)}"
        hit = self._acct.get(cache_key)
        if hit is not None and time.monotonic() - hit[0] < ACCT_TTL_S:
            return hit[1]
        q = shlex.quote
        flags = "-n -P" if steps else "-X -n -P"
        res = self.hub.cluster.backend.shell.run(
            f"sacct {flags} -j {q(','.join(ids))} -o {q(fields)} 2>&1"
        )
        text = res.stdout if res.returncode == 0 else None
        self._acct[cache_key] = (time.monotonic(), text)
        return text

    def timeline(self) -> dict[str, Any]:
        """Start and end of every element: sacct's where the cluster keeps accounts, else
        the run's own files (a log's creation, a result's or error's last write)."""
        run = self.run
        handle = run.handle
        rows: dict[str, dict[str, list[Any]]] = {}
        text = self.sacct("JobID,Start,End,State,NodeList", steps=False)
        if text is not None and handle is not None:
            times = parse_sacct_times(text)
            for aj in run.array_jobs:
                jid = handle.job_ids.get(aj.id, "")
                starts, ends = [], []
                for i in range(aj.size):
                    r = times.get((jid, aj.slurm_index(i)), {})
                    starts.append(r.get("start"))
                    ends.append(r.get("end"))
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
        """Requested resources per array job and, where sacct exists, what was used:
        the largest MaxRSS, the longest Elapsed and the TotalCPU added up. (A first cut:
        to be extended when the right-sizing issue lands.)"""
        run = self.run
        handle = run.handle
        cost = {c["id"]: c for c in self.structure()["cost"]["jobs"]}
        text = self.sacct("JobID,ElapsedRaw,TotalCPU,MaxRSS,AllocCPUS,State", steps=True)
        used: dict[str, dict[str, Any]] = {}
        if text is not None and handle is not None:
            by_job = {jid: aj.id for aj in run.array_jobs if (jid := handle.job_ids.get(aj.id))}
            for line in text.splitlines():
                parts = line.strip().split("|")
                if len(parts) < 6:
                    continue
                m = re.fullmatch(r"(\d+)_(\d+)(?:\.(\w+))?", parts[0])
                if m is None or m.group(1) not in by_job:
                    continue
                u = used.setdefault(
                    by_job[m.group(1)],
                    {
                        "elements": 0,
                        "max_rss_mb": None,
                        "max_elapsed_s": 0,
                        "cpu_s": 0.0,
                        "alloc_cpu_s": 0.0,
                    },
                )
                if m.group(3) is None:  # the allocation: elapsed, cpus
                    u["elements"] += 1
                    elapsed = int(parts[1]) if parts[1].isdigit() else 0
                    u["max_elapsed_s"] = max(u["max_elapsed_s"], elapsed)
                    cpus = int(parts[4]) if parts[4].isdigit() else 0
                    u["alloc_cpu_s"] += elapsed * cpus
                    u["cpu_s"] += parse_elapsed(parts[2]) or 0.0
                else:
                    rss = parse_mem_mb(parts[3])
                    if rss is not None and (u["max_rss_mb"] is None or rss > u["max_rss_mb"]):
                        u["max_rss_mb"] = rss
        jobs = []
        for aj in run.array_jobs:
            c = cost.get(aj.id, {})
            jobs.append(
                {
                    "id": aj.id,
                    "name": aj.name,
                    "elements": aj.size,
                    "requested": {
                        "cpus": c.get("cpus"),
                        "mem_mb": c.get("mem_mb"),
                        "gpus": c.get("gpus"),
                        "time_min": c.get("time_min"),
                    },
                    "used": used.get(aj.id),
                }
            )
        note = "" if text is not None else self.hub.no_sacct_reason()
        return {
            "id": self.id,
            "source": "sacct" if text is not None else "",
            "note": note,
            "array_jobs": jobs,
        }

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
            attempts = self._attempts(jid, slurm_index)  # requeues included
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

    def _attempts(self, jid: str, slurm_index: int) -> list[dict[str, Any]]:
        """Every attempt of one Slurm element, oldest first (``sacct -D``: requeues too)."""
        if not self.hub.has_sacct():
            return []
        q = shlex.quote
        res = self.hub.cluster.backend.shell.run(
            f"sacct -X -D -n -P -j {q(f'{jid}_{slurm_index}')} "
            "-o JobID,Start,End,State,NodeList,ExitCode 2>&1"
        )
        attempts = []
        for line in res.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 6 or not re.fullmatch(r"\d+_\d+", parts[0]):
                continue
            attempts.append(
                {
                    "start": _epoch(parts[1]),
                    "end": _epoch(parts[2]),
                    "state": parts[3],
                    "node": parts[4] if parts[4] != "None assigned" else "",
                    "exit_code": parts[5],
                }
            )
        return attempts

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
            "accounting": self.has_sacct(),
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

    def has_sacct(self) -> bool:
        return getattr(self.cluster.backend, "status_source", "") == "sacct"

    def no_sacct_reason(self) -> str:
        if getattr(self.cluster.backend, "status_source", None) is None:
            return (
                f"backend {self.cluster.backend_name!r} has no Slurm accounting: "
                "used resources are unknown"
            )
        return "this cluster keeps no accounts (no slurmdbd): sacct cannot say what was used"

    def wait(self, version: int, timeout_s: float, until: Callable[[], bool] | None = None) -> int:
        """Block until ``version`` moves on (or ``until()``, or ``timeout_s``)."""
        with self.changed:
            self.changed.wait_for(
                lambda: self.version != version or self.closed or bool(until and until()),
                timeout=timeout_s,
            )
            return self.version
