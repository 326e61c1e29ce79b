"""A public fake backend for tests: runs in-process and ends chosen nodes in any Slurm state.

>>> from lazyslurm import Cluster, task
>>> from lazyslurm.errors import JobTimeoutError
>>> @task
... def slow(x): return x
>>> fake = FakeBackend(getfixture("tmp_path"), states={slow(2).key: "TIMEOUT"})
>>> with Cluster(fake):
...     slow.map([1, 2]).compute()
Traceback (most recent call last):
...
lazyslurm.errors.JobTimeoutError: task 'slow' (key slow-...) ended TIMEOUT ...
>>> [r for r, _ in fake.started]
['...']
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from lazyslurm.backends.base import (
    CANCELLED,
    FAILED,
    ArrayJobInfo,
    ElementFailure,
    RunHandle,
    Snapshot,
)
from lazyslurm.backends.local import SyncBackend, _RunState

__all__ = ["FakeBackend"]


class FakeBackend(SyncBackend):
    """In-process backend that records what it is asked, and ends the nodes named in
    ``states`` (node key -> Slurm state such as ``"TIMEOUT"``, ``"OUT_OF_MEMORY"``,
    ``"NODE_FAIL"``, ``"CANCELLED"``) in that state without running them; their
    dependents are cancelled as Slurm's ``--kill-on-invalid-dep`` would.

    ``started`` lists ``(run_id, array_jobs)`` per submission; ``polls`` counts polls.
    """

    name = "fake"

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        states: Mapping[str, str] | None = None,
        max_array_size: int = 1001,
    ) -> None:
        super().__init__(workdir, max_array_size=max_array_size)
        self.states = dict(states or {})
        self.started: list[tuple[str, tuple[ArrayJobInfo, ...]]] = []
        self.polls = 0
        self.cancelled: list[str] = []

    def _run_one(self, run: _RunState, n: int, i: int) -> None:
        key = run.ajs[n].keys[i]
        state = self.states.get(key)
        if state is None:
            super()._run_one(run, n, i)
            return
        kind = CANCELLED if state == "CANCELLED" else FAILED
        run.active[n] += 1
        failure = ElementFailure(state=state, exit_code="0:15", job_id=f"fake{n}")
        run.finish(n, i, kind, failure)

    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJobInfo], files: Mapping[str, bytes]
    ) -> RunHandle:
        self.started.append((run_id, tuple(array_jobs)))
        return super().start(run_id, array_jobs, files)

    def poll(self, handle: RunHandle) -> Snapshot:
        self.polls += 1
        return super().poll(handle)

    def cancel(self, handle: RunHandle) -> None:
        self.cancelled.append(handle.run_id)
