"""A public fake backend for tests: runs in-process and ends chosen nodes in any Slurm state.

>>> from lazyslurm import Cluster, task
>>> from lazyslurm.errors import ElementTimeoutError
>>> @task
... def slow(x): return x
>>> fake = FakeBackend(getfixture("tmp_path"), states={slow(2).key: "TIMEOUT"})
>>> with Cluster(fake):
...     slow.map([1, 2]).compute()
Traceback (most recent call last):
...
lazyslurm.errors.ElementTimeoutError: task 'slow' (key slow-...) ended TIMEOUT ...
>>> [r for r, _ in fake.started]
['...']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from lazyslurm.backends.base import (
    CANCELLED,
    FAILED,
    ArrayJob,
    BackendBase,
    ElementFailure,
    RunHandle,
    Snapshot,
)
from lazyslurm.backends.local import (
    RunState,
    SyncBackend,
    run_element_here,
    run_in_process,
    write_run_files,
)
from lazyslurm.planning.planner import DEFAULT_MAX_ARRAY_SIZE

__all__ = ["FakeBackend"]


class FakeBackend(BackendBase):
    """In-process backend that records what it is asked, and ends the nodes named in
    ``states`` (node key -> Slurm state such as ``"TIMEOUT"``, ``"OUT_OF_MEMORY"``,
    ``"NODE_FAIL"``, ``"CANCELLED"``) in that state without running them; their
    dependents are cancelled as Slurm's ``--kill-on-invalid-dep`` would.

    ``started`` lists ``(run_id, array_jobs)`` per submission; ``polls`` counts polls;
    ``cancelled`` lists the runs asked to cancel. Built only on the public backend
    protocol and the local backend's public pieces.
    """

    name = "fake"
    node = "lazyslurm.backends.local.node"  # a subgraph runs inline, as on sync

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        states: Mapping[str, str] | None = None,
        max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
    ) -> None:
        self._store = SyncBackend(workdir, max_array_size=max_array_size)  # reads, listing
        self.workdir = Path(workdir)
        self.shell = self._store.shell
        self.states = dict(states or {})
        self.started: list[tuple[str, tuple[ArrayJob, ...]]] = []
        self.polls = 0
        self.cancelled: list[str] = []
        self._runs: dict[str, RunState] = {}

    def max_array_size(self) -> int:
        return self._store.max_array_size()

    def _run_one(self, run: RunState, n: int, i: int) -> None:
        state = self.states.get(run.ajs[n].keys[i])
        if state is None:
            run_element_here(run, n, i)
            return
        kind = CANCELLED if state == "CANCELLED" else FAILED
        failure = ElementFailure(state=state, exit_code="0:15", job_id=f"fake{n}")
        run.finish(n, i, kind, failure)

    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJob], files: Mapping[str, bytes]
    ) -> RunHandle:
        self.started.append((run_id, tuple(array_jobs)))
        layout = write_run_files(self.workdir, run_id, files)
        run = self._runs[run_id] = RunState(run_id, layout, array_jobs)
        run_in_process(run, self._run_one)
        return RunHandle(run_id=run_id, array_jobs=tuple(array_jobs))

    def poll(self, handle: RunHandle) -> Snapshot:
        self.polls += 1
        run = self._runs.get(handle.run_id)
        return self._store.poll(handle) if run is None else run.snapshot()

    def wait_for_change(self, handle: RunHandle, timeout_s: float) -> None:
        return None

    def cancel(self, handle: RunHandle) -> None:
        self.cancelled.append(handle.run_id)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        return self._store.read_files(paths)

    def close(self) -> None:
        return None
