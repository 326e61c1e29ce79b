"""The backend protocol: what ``compute`` needs from a place that runs array jobs.

A backend is thin. ``compute`` owns the one loop (stage, submit, poll, gather); a backend
only starts a run from its files, reports element states, and reads files back.

Element states are Slurm-like strings: PENDING, RUNNING, DONE, FAILED, CANCELLED (defined
with the dependency rules in :mod:`lazyslurm.planning.rules`). A backend reports raw
states; :func:`lazyslurm.planning.rules.causes` explains which cancellations follow from
which failure.
"""

from __future__ import annotations

import datetime
import os
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

from lazyslurm.graph.resources import Resources
from lazyslurm.planning.cost import ClusterFacts
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.planning.rules import CANCELLED, DONE, FAILED, PENDING, RUNNING, TERMINAL
from lazyslurm.store import RunLayout

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell

__all__ = [
    "CANCELLED",
    "DONE",
    "FAILED",
    "PENDING",
    "RUNNING",
    "TERMINAL",
    "Accounted",
    "Accounting",
    "ArrayJob",
    "Backend",
    "BackendBase",
    "ElementFailure",
    "PackLimits",
    "RunHandle",
    "Snapshot",
    "Start",
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
    node: str = ""  # where it ran (Slurm's node list), when the scheduler says


@attrs.frozen
class Snapshot:
    """Element states of a run at one poll: ``states[array_job_id][index]``."""

    states: Mapping[str, Sequence[str]]
    failures: Mapping[tuple[str, int], ElementFailure] = attrs.field(factory=dict)
    # set while the scheduler cannot be asked (controller down, connection lost): states
    # are then the last known ones; wall-clock time (time.time()) the outage began, and why
    unreachable_since: float | None = None
    unreachable_reason: str = ""
    # what the run is doing besides its elements, when that takes a while: "creating the
    # environment (once): 7 wheels, 12 s" while its first job creates it
    note: str = ""

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


TimeCap = Callable[[Resources], int | None]  # a task's partition's MaxTime, in minutes


@attrs.frozen
class PackLimits:
    """What ``pack="auto"`` must fit on a backend that packs elements (Slurm).

    ``max_jobs``: the most Slurm elements one run may queue (None: no limit);
    ``time_cap(resources)``: the longest time limit the task's partition allows."""

    max_jobs: int | None = None
    time_cap: TimeCap | None = None


@attrs.frozen
class Start:
    """When the scheduler expects an array job to start (``sbatch --test-only``), or its
    words when it cannot say."""

    when: datetime.datetime | None  # None: the scheduler could not say (see ``text``)
    text: str  # the scheduler's own words

    def __str__(self) -> str:
        return self.when.strftime("%Y-%m-%d %H:%M:%S") if self.when else self.text


@attrs.frozen
class Accounted:
    """What the scheduler's accounting recorded of one attempt of one element (Slurm
    element ``index`` of ``array_job``; ``attempt`` 1 is the first: a requeued element
    has more rows), and the request it ran with."""

    array_job: str
    index: int
    state: str
    elapsed_s: int
    cpus: int  # allocated
    max_rss_mb: float | None = None  # peak memory of its largest step
    total_cpu_s: float | None = None  # CPU time used (user + system)
    node: str = ""
    start: str = ""  # ISO times as the scheduler wrote them
    end: str = ""
    attempt: int = 1
    req_mem_mb: float | None = None  # the memory it asked for (per node)
    time_limit_min: int | None = None  # its time limit
    exit_code: str = ""


@attrs.frozen
class Accounting:
    """A run's accounting: ``rows``, or ``note``, why there are none (no accounting)."""

    rows: tuple[Accounted, ...] = ()
    note: str = ""


@runtime_checkable
class Backend(Protocol):
    """A place to run array jobs. Built in: local, sync, slurm and ssh (over a shell),
    and the public fake; others register themselves (:mod:`lazyslurm.backends`).

    The first seven methods are what every backend does. The rest are capabilities with
    defaults in :class:`BackendBase`, which a backend subclasses: callers use them
    directly, never probing with ``getattr``.

    ``shell`` and ``workdir`` are where the store lives: listing runs, the cross-run cache
    and clearing old runs are shell commands there (one each, also over SSH).
    """

    name: str
    shell: Shell
    workdir: Any  # a local Path, or a path on the cluster (str)
    defaults: Resources  # task options the cluster sets for tasks that set none
    # the task's function travels by value (pickled whole), not by reference: the code
    # need not be importable where it runs
    ships_by_value: bool
    # the module (path) of this backend's compute-node side: what a task that returns
    # lazy values (docs/dynamic.md) and a @workflow's inner cluster use where they run;
    # None: such tasks fail with DynamicExpansionError on this backend
    node: str | None

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

    # -- capabilities (defaults in BackendBase)
    def pack_limits(self) -> PackLimits | None:
        """What packing must fit; None: this backend runs every element alone."""

    def cancel_elements(self, handle: RunHandle, elements: Sequence[tuple[str, int]]) -> None:
        """Cancel some elements ``(array job, index)`` (and their dependents)."""

    def dynamic_records(self, handle: RunHandle) -> int | None:
        """How many subgraph records the last poll counted (None: not counted by polls;
        the client then reads them when the run ends)."""

    def child_config(self) -> dict[str, Any]:
        """What a task needs to submit a subgraph from where it runs (docs/dynamic.md)."""

    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        """Modules pickled by value with a task's function."""

    def cluster_facts(self) -> ClusterFacts | None:
        """The partitions' defaults and limits, for worst cases (None: none known)."""

    def expected_starts(self, array_jobs: Sequence[ArrayJob]) -> dict[str, Start]:
        """When the scheduler expects each array job to start, were it submitted now."""

    def accounting(self, handle: RunHandle) -> Accounting:
        """What the scheduler's accounting recorded of the run's elements."""

    def live_runs_script(self) -> str:
        """A shell script, run in the work directory's shell, that prints the id of each
        run that still has jobs queued or running, one per line, and fails when the
        scheduler cannot be asked (``clean`` spares those runs); "": no scheduler."""

    def controller_calls(self, handle: RunHandle) -> dict[str, int] | None:
        """The scheduler commands made for the run so far, by kind (``sbatch``,
        ``squeue``, ...), by every process that made some; None: not counted."""


class BackendBase:
    """Defaults of the optional part of :class:`Backend`: subclass it to write a backend
    (docs/backends.md). A backend that runs every element alone, keeps no subgraph
    count, cancels elements by cancelling the run, and pickles functions by reference."""

    name = "backend"
    shell: Shell
    workdir: Any
    ships_by_value = False
    node: str | None = None
    defaults = Resources()  # (frozen: instances set their own)

    def pack_limits(self) -> PackLimits | None:
        return None

    def cancel(self, handle: RunHandle) -> None:  # pragma: no cover - each backend's own
        raise NotImplementedError

    def cancel_elements(self, handle: RunHandle, elements: Sequence[tuple[str, int]]) -> None:
        self.cancel(handle)

    def dynamic_records(self, handle: RunHandle) -> int | None:
        return None

    def child_config(self) -> dict[str, Any]:
        return {}

    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        return []

    def cluster_facts(self) -> ClusterFacts | None:
        return None

    def expected_starts(self, array_jobs: Sequence[ArrayJob]) -> dict[str, Start]:
        return {}

    def accounting(self, handle: RunHandle) -> Accounting:
        return Accounting(note=f"backend {self.name!r} has no accounting (no sacct)")

    def live_runs_script(self) -> str:
        return ""

    def controller_calls(self, handle: RunHandle) -> dict[str, int] | None:
        return None


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
