"""A complete lazyslurm backend in one file: every element runs as a process of its own on
this machine, started as soon as its dependencies allow, as a scheduler would start it.

It is what docs/backends.md walks through. Register it, then name it like a built-in one::

    import lazyslurm.examples.custom_backend  # registers "processes"
    with Cluster("processes", slots=2):       # (or Cluster(SPEC, ...)); slots: its own option
        compute(...)

Run this file to see the seed's three patterns run on it::

    python -m lazyslurm.examples.custom_backend
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypedDict

import lazyslurm
from lazyslurm.backends import BackendBase, BackendSpec, register
from lazyslurm.backends.base import (
    DONE,
    FAILED,
    RUNNING,
    ArrayJob,
    ElementFailure,
    RunHandle,
    Snapshot,
    outcome_keys,
    snapshot_from_files,
)
from lazyslurm.backends.local import RunState, write_run_files
from lazyslurm.backends.shell import LocalShell
from lazyslurm.graph.options import Opt
from lazyslurm.store import RunLayout, default_workdir

# the same machine: the elements import what this process imports (tasks by reference)
_PATH = os.pathsep.join(p or os.getcwd() for p in sys.path)
# the runner's entry point: `python RUNNER RUN_DIR ARRAY_JOB` runs element
# $SLURM_ARRAY_TASK_ID of that array job and leaves its result or error file in the run
RUNNER = Path(lazyslurm.__file__).resolve().parent / "runner" / "__main__.py"


class ProcessOptions(TypedDict, total=False):
    """The options this backend declares (``Cluster("processes", slots=...)``)."""

    slots: Annotated[int, Opt("elements running at once", default=4, positive=True)]


class ProcessBackend(BackendBase):
    """One process per element, at most ``slots`` at once, dependencies respected."""

    name = "processes"
    node = "lazyslurm.backends.local.node"  # a task's returned subgraph runs inline there

    def __init__(self, workdir: str | os.PathLike[str], slots: int = 4) -> None:
        self.workdir = Path(workdir)
        self.shell = LocalShell()  # where the store lives: listing runs, the cache, clean
        self.slots = slots
        # run id -> (its dependency bookkeeping, running processes by (array job, index))
        self._runs: dict[str, tuple[RunState, dict[tuple[int, int], subprocess.Popen[bytes]]]] = {}

    def max_array_size(self) -> int:
        return 10_000

    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJob], files: Mapping[str, bytes]
    ) -> RunHandle:
        layout = write_run_files(self.workdir, run_id, files)  # private, all or nothing
        state = RunState(run_id, layout, array_jobs)
        self._runs[run_id] = (state, {})
        self._launch(run_id, state.everything())
        return RunHandle(run_id=run_id, array_jobs=tuple(array_jobs))

    def _launch(self, run_id: str, candidates: list[Any]) -> None:
        """Start what may start now (``RunState.runnable``: dependencies and throttles)."""
        state, procs = self._runs[run_id]
        for n, i in state.runnable(candidates):
            aj = state.ajs[n]
            logs = [open(state.layout.log(aj.id, i, s), "wb") for s in ("out", "err")]
            with logs[0], logs[1]:
                state.states[n][i] = RUNNING
                procs[(n, i)] = subprocess.Popen(
                    [sys.executable, str(RUNNER), state.layout.root, aj.id],
                    env={**os.environ, "SLURM_ARRAY_TASK_ID": str(i), "PYTHONPATH": _PATH},
                    stdout=logs[0],
                    stderr=logs[1],
                    start_new_session=True,
                )

    def poll(self, handle: RunHandle) -> Snapshot:
        if handle.run_id not in self._runs:  # a run of another process: what it left
            results, errors = outcome_keys(RunLayout.of(handle.run_id, self.workdir).root)
            return snapshot_from_files(handle, results, errors)
        state, procs = self._runs[handle.run_id]
        again: list[Any] = []
        for (n, i), proc in list(procs.items()):
            code = proc.poll()
            if code is None:
                continue
            del procs[(n, i)]
            failure = None if code == 0 else ElementFailure(state=FAILED, exit_code=str(code))
            again += state.finish(n, i, DONE if code == 0 else FAILED, failure)
        while len(procs) < self.slots and again:
            self._launch(handle.run_id, [again.pop()])
        if len(procs) < self.slots:
            self._launch(handle.run_id, state.everything())  # throttled leftovers
        return state.snapshot()

    def wait_for_change(self, handle: RunHandle, timeout_s: float) -> None:
        time.sleep(min(timeout_s, 0.05))

    def cancel(self, handle: RunHandle) -> None:
        if handle.run_id not in self._runs:
            return  # another process's run: this one cannot reach its processes
        state, procs = self._runs[handle.run_id]
        state.cancel_all()  # every unfinished element ends CANCELLED
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
        procs.clear()

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        return self.shell.read_files(str(self.workdir), paths)

    def close(self) -> None:
        for run_id in list(self._runs):
            state = self._runs[run_id][0]
            self.cancel(RunHandle(run_id, tuple(state.ajs)))


def _make(*, workdir: Any = None, max_array_size: int | None = None, profile: str | None = None,
          slots: int = 4) -> ProcessBackend:  # fmt: skip
    """What ``Cluster("processes", ...)`` calls: the common options, then its own."""
    return ProcessBackend(workdir or default_workdir(), slots=slots)


SPEC = register(
    BackendSpec("processes", _make, (ProcessOptions,), "a process per element", embedded=True),
    replace=True,
)


if __name__ == "__main__":
    from lazyslurm.examples import parallelization_patterns as patterns

    with lazyslurm.Cluster(SPEC, slots=2) as cluster:
        print(patterns.fan_out_fan_in(cluster))
        print(patterns.pipeline(cluster))
        print(patterns.parameter_sweep(cluster))
