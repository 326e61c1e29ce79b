"""The backend protocol: what ``compute`` needs from a place that runs array jobs.

A backend is thin. ``compute`` owns the one loop (stage, submit, poll, gather); a backend
only starts a run from its files, reports element states, and reads files back.

Element states are Slurm-like strings: PENDING, RUNNING, DONE, FAILED, CANCELLED (defined
with the dependency rules in :mod:`lazyslurm.planning.rules`). A backend reports raw
states; :func:`lazyslurm.planning.rules.causes` explains which cancellations follow from
which failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from lazyslurm.planning.planner import ArrayJob
from lazyslurm.planning.rules import CANCELLED, DONE, FAILED, PENDING, RUNNING, TERMINAL
from lazyslurm.store import RunLayout

if TYPE_CHECKING:
    from lazyslurm.backends.shell import Shell

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "PENDING",
    "RUNNING",
    "TERMINAL",
    "ArrayJob",
    "Backend",
    "ElementFailure",
    "RunHandle",
    "Snapshot",
    "outcome_keys",
    "sleep_until_change",
    "snapshot_from_files",
]


@attrs.frozen
class RunHandle:
    """A started run: enough to poll, cancel and read it back (also after re-attach)."""

    run_id: str
    array_jobs: tuple[ArrayJob, ...]
    job_ids: Mapping[str, str] = attrs.field(factory=dict)  # array job id -> Slurm job id


@attrs.frozen
class ElementFailure:
    """Why an element did not complete, as the scheduler saw it."""

    state: str  # Slurm's word: FAILED, TIMEOUT, OUT_OF_MEMORY, CANCELLED, NODE_FAIL, ...
    exit_code: str = ""
    job_id: str = ""
    reason: str = ""


@attrs.frozen
class Snapshot:
    """Element states of a run at one poll: ``states[array_job_id][index]``."""

    states: Mapping[str, Sequence[str]]
    failures: Mapping[tuple[str, int], ElementFailure] = attrs.field(factory=dict)
    # set while the scheduler cannot be asked (controller down, connection lost): states
    # are then the last known ones; wall-clock time (time.time()) the outage began, and why
    unreachable_since: float | None = None
    unreachable_reason: str = ""

    @property
    def finished(self) -> bool:
        return all(s in TERMINAL for states in self.states.values() for s in states)

    def counts_total(self) -> dict[str, int]:
        """State -> number of elements, over the whole run."""
        out: dict[str, int] = {}
        for states in self.states.values():
            for s in states:
                out[s] = out.get(s, 0) + 1
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """Per array job: state -> number of elements."""
        out: dict[str, dict[str, int]] = {}
        for aj, states in self.states.items():
            c: dict[str, int] = {}
            for s in states:
                c[s] = c.get(s, 0) + 1
            out[aj] = c
        return out


@runtime_checkable
class Backend(Protocol):
    """A place to run array jobs. Implementations: local, sync, slurm (subprocess/SSH), fake.

    ``shell`` and ``workdir`` are where the store lives: listing runs, the cross-run cache
    and clearing old runs are shell commands there (one each, also over SSH).
    """

    name: str
    shell: Shell
    workdir: Any  # a local Path, or a path on the cluster (str)

    def max_array_size(self) -> int:
        """Largest array (elements per array job) the scheduler accepts."""

    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJob], files: Mapping[str, bytes]
    ) -> RunHandle:
        """Stage ``files`` into the run directory and submit every array job, all or nothing."""

    def poll(self, handle: RunHandle) -> Snapshot:
        """Current element states of the run (one status query for the whole run)."""

    def wait_for_change(self, handle: RunHandle, timeout_s: float) -> None:
        """Block up to ``timeout_s`` or until something may have changed."""

    def cancel(self, handle: RunHandle) -> None:
        """Cancel every unfinished element of the run."""

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        """Read files under the work directory (relative paths) in one transfer; missing
        files are left out."""

    def close(self) -> None:
        """Release processes and connections."""


def sleep_until_change(timeout_s: float) -> None:
    """Default ``wait_for_change``: a plain sleep (Slurm tells us nothing sooner)."""
    time.sleep(timeout_s)


LOST = ElementFailure(state="CANCELLED", reason="lost: the process that ran this run is gone")


def snapshot_from_files(
    handle: RunHandle, results: set[str], errors: set[str], *, unfinished: str = CANCELLED
) -> Snapshot:
    """States of a run known only from its store: result files are DONE, error files
    FAILED, anything else ``unfinished`` (a local run whose client died is lost)."""
    states: dict[str, list[str]] = {}
    failures: dict[tuple[str, int], ElementFailure] = {}
    for aj in handle.array_jobs:
        row = []
        for i, key in enumerate(aj.keys):
            if key in results:
                row.append(DONE)
            elif key in errors:
                row.append(FAILED)
                failures[(aj.id, i)] = ElementFailure(state=FAILED)
            else:
                row.append(unfinished)
                if unfinished == CANCELLED:
                    failures[(aj.id, i)] = LOST
        states[aj.id] = row
    return Snapshot(states=states, failures=failures)


def outcome_keys(run_dir: str | os.PathLike[str]) -> tuple[set[str], set[str]]:
    """Keys with a result file and keys with an error file in a local run directory."""
    layout = RunLayout(run_dir)
    out: list[set[str]] = []
    for sub in layout.OUTCOME_DIRS:
        try:
            names = os.listdir(layout.subdir(sub))
        except FileNotFoundError:
            names = []
        out.append({k for k in map(layout.key_of, names) if k is not None})
    return out[0], out[1]
