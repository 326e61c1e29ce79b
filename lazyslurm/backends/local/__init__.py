"""The embedded backends: no Slurm needed.

``LocalBackend`` runs elements on a pool of ``max_workers`` runner processes
(``python -m lazyslurm.runner --serve``), through the same runner and run-directory
layout as Slurm, with Slurm's semantics: ``afterok``/``aftercorr`` ordering, array
throttles, and ``--kill-on-invalid-dep=yes`` (dependents of a failure are cancelled).

``SyncBackend`` runs every element in the calling thread, in plan order: set a
``breakpoint()`` in a task and debug it with pdb.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from lazyslurm.backends.base import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    TERMINAL,
    ArrayJob,
    BackendBase,
    ElementFailure,
    RunHandle,
    Snapshot,
    outcome_keys,
    snapshot_from_files,
)
from lazyslurm.backends.local.options import LocalOptions
from lazyslurm.backends.registry import BackendSpec
from lazyslurm.backends.shell import LocalShell
from lazyslurm.errors import BackendError
from lazyslurm.planning import rules
from lazyslurm.planning.planner import DEFAULT_MAX_ARRAY_SIZE
from lazyslurm.store import INSIDE, RunLayout, atomic_write, default_workdir

__all__ = [
    "LocalBackend",
    "LocalOptions",
    "RunState",
    "SyncBackend",
    "run_element_here",
    "run_in_process",
    "write_run_files",
]


def write_run_files(workdir: Path, run_id: str, files: Mapping[str, bytes]) -> RunLayout:
    """Create the private run directory and write the staged files into it."""
    layout = RunLayout.of(run_id, workdir)
    layout.make_dirs()
    for rel, data in files.items():
        atomic_write(f"{layout.root}/{rel}", data)
    return layout


Candidate = tuple[int, int | None]  # (array job, element) or (array job, None): all of it


class RunState:
    """Slurm-like element state machine of one run, driven by the dependency rules
    (:mod:`lazyslurm.planning.rules`). Not thread-safe: its owner holds a lock."""

    def __init__(self, run_id: str, layout: RunLayout, array_jobs: Sequence[ArrayJob]) -> None:
        self.run_id = run_id
        self.layout = layout
        self.ajs = list(array_jobs)
        self.edges = rules.Edges(self.ajs)
        self.states = [[PENDING] * aj.size for aj in self.ajs]
        self.done = [0] * len(self.ajs)
        self.active = [0] * len(self.ajs)  # queued or running (for throttles)
        self.failures: dict[tuple[str, int], ElementFailure] = {}
        self.procs: dict[tuple[int, int], subprocess.Popen[str] | None] = {}
        # per array job: elements not yet queued, in order (a completion rechecks only
        # what it can unblock, never whole arrays: O(1) per completion, not O(size))
        self.waiting = [dict.fromkeys(range(aj.size)) for aj in self.ajs]

    def everything(self) -> list[Candidate]:
        return [(n, None) for n in range(len(self.ajs))]

    def runnable(self, candidates: list[Candidate]) -> list[tuple[int, int]]:
        """Elements that may start now, respecting dependencies and throttles.

        A candidate is ``(array job, index)``, or ``(array job, None)`` for all of it.
        """
        out = []
        for n, only in candidates:
            waiting = self.waiting[n]
            limit = self.ajs[n].throttle or self.ajs[n].size
            for i in list(waiting) if only is None else [only]:
                if self.active[n] >= limit:
                    break
                if i not in waiting:
                    continue
                if self.states[n][i] != PENDING:  # cancelled meanwhile
                    del waiting[i]
                elif rules.ready(self.edges, n, i, self.states, self.done):
                    del waiting[i]
                    self.procs[(n, i)] = None  # queued
                    self.active[n] += 1
                    out.append((n, i))
        return out

    def start(self, n: int, i: int) -> None:
        """Count an element started outside :meth:`runnable` (in-process backends)."""
        self.waiting[n].pop(i, None)
        self.active[n] += 1

    def finish(self, n: int, i: int, state: str, failure: ElementFailure | None) -> list[Candidate]:
        """Record an end state; cancel dependents of failures. Returns what to recheck."""
        self.procs.pop((n, i), None)
        self.active[n] -= 1
        again: list[Candidate] = [(n, None)] if self.ajs[n].throttle else []  # a freed slot
        if self.states[n][i] in TERMINAL:
            return again
        self.states[n][i] = state
        if state == DONE:
            self.done[n] += 1
            return again + rules.unblocked_by(self.edges, n, i, self.done)
        if failure is not None:
            self.failures[(self.ajs[n].id, i)] = failure
        self.cancel_dependents(n, i)
        return again

    def cancel_dependents(self, n: int, i: int) -> None:
        """Cancel what element ``i`` of ``n`` ending without a result makes impossible."""
        for d, j in rules.cancelled_by(self.edges, n, i, self.waiting.__getitem__):
            del self.waiting[d][j]
            if self.states[d][j] == PENDING:
                self.states[d][j] = CANCELLED
                self.failures[(self.ajs[d].id, j)] = ElementFailure(
                    state=CANCELLED, reason="DependencyNeverSatisfied"
                )

    def cancel_all(self) -> list[tuple[int, int]]:
        """End every unfinished element CANCELLED (a cancelled run); returns those that
        had started (queued or running: their processes are the caller's to stop)."""
        started = []
        for n, states in enumerate(self.states):
            for i, s in enumerate(states):
                if s in (PENDING, RUNNING):
                    states[i] = CANCELLED
                    self.failures[(self.ajs[n].id, i)] = ElementFailure(state=CANCELLED)
                    if (n, i) in self.procs:
                        started.append((n, i))
            self.waiting[n].clear()
        return started

    def snapshot(self) -> Snapshot:
        return Snapshot(
            states={aj.id: list(st) for aj, st in zip(self.ajs, self.states, strict=True)},
            failures=dict(self.failures),
        )


class _Worker:
    """One runner process in serve mode, fed one element at a time."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            # -P: the working directory does not shadow the standard library (token.py)
            [sys.executable, "-P", "-m", "lazyslurm.runner", "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(env),
            text=True,
            bufsize=1,
            # a session of its own: the terminal's Ctrl-C (sent to the foreground process
            # group) reaches the client, which cancels; idle workers never see it
            start_new_session=True,
        )

    def run(self, run_dir: str, array_job: str, index: int) -> int | None:
        """Exit code of the element, or None if the process died."""
        try:
            assert self.proc.stdin is not None and self.proc.stdout is not None
            self.proc.stdin.write(f"{run_dir}\t{array_job}\t{index}\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except (OSError, ValueError):  # broken pipe, or closed at interpreter exit
            return None
        return int(line) if line.strip() else None

    def stop(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # the serve loop ends at EOF
            self.proc.wait(timeout=2)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    path = [p or os.getcwd() for p in sys.path]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(path))
    return env


_NODE = "lazyslurm.backends.local.node"  # the embedded backends' compute-node side


class LocalBackend(BackendBase):
    """Runs plans on a local pool of runner processes, with Slurm's semantics."""

    name = "local"
    node = _NODE

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        max_workers: int | None = None,
        max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
    ) -> None:
        self.workdir = Path(workdir)
        self.max_workers = max_workers or os.cpu_count() or 1
        self._max_array_size = max_array_size
        self._cond = threading.Condition()
        self._version = 0
        self._runs: dict[str, RunState] = {}
        self._queue: queue.SimpleQueue[tuple[RunState, int, int] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._workers: list[_Worker | None] = []
        self._closed = False
        self.shell = LocalShell()  # for store queries (runs, cache) shared with Slurm
        self._finalizer = weakref.finalize(
            self, _shutdown, self._queue, self._workers, self._threads
        )

    def max_array_size(self) -> int:
        return self._max_array_size

    # -- worker pool (started on first use, kept for the session)
    def _ensure_pool(self) -> None:
        if self._threads:
            return
        env = _worker_env()
        for slot in range(self.max_workers):
            self._workers.append(None)
            t = threading.Thread(
                target=self._work, args=(slot, env), name=f"lazyslurm-local-{slot}", daemon=True
            )
            t.start()
            self._threads.append(t)

    def _work(self, slot: int, env: Mapping[str, str]) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            run, n, i = item
            with self._cond:
                if run.states[n][i] != PENDING:  # cancelled while queued
                    run.finish(n, i, CANCELLED, None)
                    _release_if_ended(run)
                    continue
                run.states[n][i] = RUNNING
                self._bump()
            worker = self._workers[slot]
            if worker is None or worker.proc.poll() is not None:
                if worker is not None:
                    worker.stop()
                worker = self._workers[slot] = _Worker(env)
            with self._cond:
                if run.states[n][i] != RUNNING:  # cancelled while its worker was starting
                    run.finish(n, i, CANCELLED, None)
                    _release_if_ended(run)
                    self._bump()
                    continue
                run.procs[(n, i)] = worker.proc
            code = worker.run(run.layout.root, run.ajs[n].id, i)
            failure = None
            if code is None:
                rc = worker.proc.wait()
                worker.stop()
                self._workers[slot] = None
                failure = ElementFailure(state=FAILED, exit_code=_exit_code(rc))
                state = FAILED
            elif code == 0:
                state = DONE
            else:
                state = FAILED
                failure = ElementFailure(state=FAILED, exit_code=f"{code}:0")
            with self._cond:
                recheck = run.finish(n, i, state, failure)
                self._dispatch(run, recheck)
                _release_if_ended(run)
                self._bump()

    def _bump(self) -> None:
        self._version += 1
        self._cond.notify_all()

    def _dispatch(self, run: RunState, candidates: list[Candidate] | None = None) -> None:
        for n, i in run.runnable(run.everything() if candidates is None else candidates):
            self._queue.put((run, n, i))

    # -- protocol
    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJob], files: Mapping[str, bytes]
    ) -> RunHandle:
        if self._closed:
            msg = "this local backend is closed"
            raise BackendError(msg)
        layout = write_run_files(self.workdir, run_id, {**files, INSIDE.client_pid: _client_id()})
        run = RunState(run_id, layout, array_jobs)
        self._ensure_pool()
        with self._cond:
            self._runs[run_id] = run
            self._dispatch(run)
        return RunHandle(run_id=run_id, array_jobs=tuple(array_jobs))

    def poll(self, handle: RunHandle) -> Snapshot:
        run = self._runs.get(handle.run_id)
        if run is None:  # attached from elsewhere: its store is all there is
            return _files_snapshot(self.workdir, handle)
        if os.path.exists(run.layout.cancel_request):  # asked by another process
            self.cancel(handle)
        with self._cond:
            return run.snapshot()

    def wait_for_change(self, handle: RunHandle, timeout_s: float) -> None:
        with self._cond:
            version = self._version
            self._cond.wait_for(lambda: self._version != version, timeout=timeout_s)

    def cancel(self, handle: RunHandle) -> None:
        run = self._runs.get(handle.run_id)
        if run is None:  # another process runs it: leave a request its next poll honours
            layout = RunLayout.of(handle.run_id, self.workdir)
            if _client_alive(layout):
                atomic_write(layout.cancel_request, b"")
            return
        with self._cond:  # pending, queued, starting or running: all end CANCELLED
            procs = [run.procs.get(where) for where in run.cancel_all()]
            running = [proc for proc in procs if proc is not None]
            _release_if_ended(run, scan=True)
            self._bump()
        for proc in running:  # its worker thread sees the end of the pipe and moves on
            proc.kill()

    def cancel_elements(self, handle: RunHandle, elements: Sequence[tuple[str, int]]) -> None:
        """Cancel some elements (``(array job, index)``) and, as Slurm would, their
        dependents; the rest of the run goes on."""
        run = self._runs.get(handle.run_id)
        if run is None:
            self.cancel(handle)
            return
        running = []
        with self._cond:
            for aj, i in elements:
                n = run.edges.index[aj]
                if run.states[n][i] in (PENDING, RUNNING):
                    run.states[n][i] = CANCELLED
                    run.failures[(aj, i)] = ElementFailure(state=CANCELLED)
                    run.waiting[n].pop(i, None)
                    proc = run.procs.get((n, i))
                    if proc is not None:
                        running.append(proc)
                    run.cancel_dependents(n, i)
            self._bump()
        for proc in running:
            proc.kill()

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        return self.shell.read_files(str(self.workdir), paths)

    def close(self) -> None:
        self._closed = True
        self._finalizer()


def _client_id() -> bytes:
    return f"{socket.gethostname()} {os.getpid()}".encode()


def _client_alive(layout: RunLayout) -> bool:
    """Whether the process that runs this local run is still alive (on this host)."""
    try:
        with open(layout.client_pid) as fh:
            host, pid = fh.read().split()
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return host == socket.gethostname()


def _release_if_ended(run: RunState, scan: bool = False) -> None:
    """Once every element of a run has ended, remove its ``client.pid``: this process will
    run nothing more of it, so another process that attaches reads elements without a
    result or error file (cancelled ones) as ended instead of waiting for them forever.

    Elements are scanned only when none is queued or running (or ``scan``): O(array jobs)
    per completion, not O(elements)."""
    if (scan or not any(run.active)) and all(s in TERMINAL for row in run.states for s in row):
        try:
            os.unlink(run.layout.client_pid)
        except FileNotFoundError:
            pass


def _files_snapshot(workdir: Path, handle: RunHandle) -> Snapshot:
    """A run of another process: from its store; unfinished elements are pending while
    that process lives (running once a worker opened their log files), and lost once it
    is gone."""
    layout = RunLayout.of(handle.run_id, workdir)
    alive = _client_alive(layout)
    snap = snapshot_from_files(
        handle, *outcome_keys(layout.root), unfinished=PENDING if alive else CANCELLED
    )
    if not alive:
        return snap
    try:
        started = set(os.listdir(layout.subdir("logs")))
    except FileNotFoundError:
        return snap
    for aj in handle.array_jobs:
        row = snap.states[aj.id]
        for i, state in enumerate(row):
            if state == PENDING and f"{aj.id}_{i}.out" in started:
                row[i] = RUNNING
    return snap


def _exit_code(returncode: int) -> str:
    """Slurm's ``exit:signal`` form of a process return code."""
    return f"0:{-returncode}" if returncode < 0 else f"{returncode}:0"


def _shutdown(
    q: queue.SimpleQueue, workers: list[_Worker | None], threads: list[threading.Thread]
) -> None:
    for _ in range(len(workers)):
        q.put(None)
    current = threading.current_thread()
    deadline = time.monotonic() + 2.0  # let them finish starting or running (briefly)
    for t in threads:
        if t is not current:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
    for w in workers:
        if w is not None:
            w.stop()


def run_in_process(run: RunState, run_one: Callable[[RunState, int, int], None]) -> None:
    """Run every element of ``run`` in this thread, in plan order (which is topological),
    skipping what a failure cancelled. ``run_one(run, n, i)`` runs one element and
    records its end with ``run.finish``."""
    old = os.environ.get("SLURM_ARRAY_TASK_ID")
    try:
        for n, aj in enumerate(run.ajs):
            for i in range(aj.size):
                if run.states[n][i] == PENDING:
                    run.start(n, i)
                    run_one(run, n, i)
    finally:
        if old is None:
            os.environ.pop("SLURM_ARRAY_TASK_ID", None)
        else:
            os.environ["SLURM_ARRAY_TASK_ID"] = old


def run_element_here(run: RunState, n: int, i: int) -> None:
    """Run element ``i`` of array job ``n`` in this process, through the runner."""
    from lazyslurm.runner import run_element

    os.environ["SLURM_ARRAY_TASK_ID"] = str(i)
    code = run_element(run.layout.root, run.ajs[n].id, i)
    failure = None if code == 0 else ElementFailure(FAILED, f"{code}:0")
    run.finish(n, i, DONE if code == 0 else FAILED, failure)


class SyncBackend(BackendBase):
    """Runs every element in the calling thread, in plan order (for pdb and tests)."""

    name = "sync"
    node = _NODE

    def __init__(
        self, workdir: str | os.PathLike[str], max_array_size: int = DEFAULT_MAX_ARRAY_SIZE
    ) -> None:
        self.workdir = Path(workdir)
        self._max_array_size = max_array_size
        self._runs: dict[str, RunState] = {}
        self.shell = LocalShell()

    def max_array_size(self) -> int:
        return self._max_array_size

    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJob], files: Mapping[str, bytes]
    ) -> RunHandle:
        layout = write_run_files(self.workdir, run_id, files)
        run = self._runs[run_id] = RunState(run_id, layout, array_jobs)
        run_in_process(run, run_element_here)
        return RunHandle(run_id=run_id, array_jobs=tuple(array_jobs))

    def poll(self, handle: RunHandle) -> Snapshot:
        run = self._runs.get(handle.run_id)
        return _files_snapshot(self.workdir, handle) if run is None else run.snapshot()

    def wait_for_change(self, handle: RunHandle, timeout_s: float) -> None:
        return None

    def cancel(self, handle: RunHandle) -> None:
        return None

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        return self.shell.read_files(str(self.workdir), paths)

    def close(self) -> None:
        return None


def _make_local(
    *,
    workdir: Path | None = None,
    max_array_size: int | None = None,
    profile: str | None = None,
    max_workers: int | None = None,
) -> LocalBackend:
    size = {} if max_array_size is None else {"max_array_size": max_array_size}
    return LocalBackend(workdir or default_workdir(), max_workers=max_workers, **size)


def _make_sync(
    *,
    workdir: Path | None = None,
    max_array_size: int | None = None,
    profile: str | None = None,
    max_workers: int | None = None,
) -> SyncBackend:
    size = {} if max_array_size is None else {"max_array_size": max_array_size}
    return SyncBackend(workdir or default_workdir(), **size)


SPECS = (
    BackendSpec(
        "local",
        _make_local,
        (LocalOptions,),
        "a pool of local processes (default)",
        embedded=True,
    ),
    BackendSpec(
        "sync", _make_sync, (LocalOptions,), "in the calling thread (for pdb)", embedded=True
    ),
)
