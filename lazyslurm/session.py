"""What one cluster session remembers: the one owner of that state (redun's habit).

A :class:`Session` belongs to a ``Cluster`` (``cluster.session``). It holds, for this
process:

- the **results computed** in this session (and found in the store): node key ->
  *location* (``RUN``, or ``RUN:AJ_J`` for a result in a pack file);
- the **values fetched** to this process;
- the **runs submitted** (or re-attached), by id, and **where each node ran**: node key
  -> ``(run id, array job, index)``, whatever the outcome, with each packed array job's
  pack size;
- the **jobs built** inside the cluster's ``with`` block and not submitted yet (submitted
  together by the first ``wait()``: see :mod:`lazyslurm.handles`).

Everything else reads and changes it through these methods; nothing else keeps a copy.

>>> s = Session()
>>> s.record_results("r1", ["a", ("b", "r1:aj0_0")])
>>> s.location("b"), s.is_computed("a"), s.is_computed("c")
('r1:aj0_0', True, False)
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from lazyslurm.planning.planner import ArrayJob
from lazyslurm.store import ElementKeys

__all__ = ["Session", "Where"]

Where = tuple[str, str, int]  # (run id, array job id, element index)


class Run(Protocol):
    """What the session needs of a run (:class:`lazyslurm.execute.Run`, above this module)."""

    @property
    def id(self) -> str: ...
    @property
    def finished(self) -> bool: ...


class Session:
    """The memory of one cluster session (see the module docstring)."""

    def __init__(self) -> None:
        # the graph appends every job built inside the cluster's ``with`` block here
        # (lazyslurm.graph.core.BUILD_SINK); read with pending()/take_pending()
        self.sink: list[Any] = []
        self._runs: dict[str, Run] = {}
        self._computed: dict[str, str] = {}
        self._ran: dict[str, Where] = {}
        self._packs: dict[tuple[str, str], int] = {}
        self._values: dict[str, Any] = {}
        # array jobs of compact maps (keys derived, not listed): placed, and finished
        # whole; their keys are indexed on the first lookup that needs them
        self._compact_ran: list[tuple[str, ArrayJob]] = []
        self._compact_done: list[tuple[str, ArrayJob]] = []
        self._compact_index: dict[str, tuple[str, ArrayJob, int]] | None = None

    def __repr__(self) -> str:
        return (
            f"Session({len(self._runs)} runs, {len(self._computed)} results, "
            f"{len(self.sink)} jobs not submitted)"
        )

    # -- results computed (in this session, or found in the store)
    def computed(self) -> Mapping[str, str]:
        """Node key -> location of its result (read-only view)."""
        return types.MappingProxyType(self._computed)

    def is_computed(self, key: str) -> bool:
        return key in self._computed

    def location(self, key: str) -> str | None:
        """Where ``key``'s result is (``RUN`` or ``RUN:AJ_J``), if computed."""
        found = self._computed.get(key)
        if found is None and self._compact_done:
            hit = self._compact().get(key)
            if hit is not None and any(r == hit[0] and a is hit[1] for r, a in self._compact_done):
                return hit[1].location(hit[2], hit[0])
        return found

    def _compact(self) -> dict[str, tuple[str, ArrayJob, int]]:
        """Key -> (run, array job, index) of the compact maps' elements (built once)."""
        if self._compact_index is None:
            index: dict[str, tuple[str, ArrayJob, int]] = {}
            for run_id, aj in self._compact_ran:
                for i, key in enumerate(aj.keys):
                    index[key] = (run_id, aj, i)
            self._compact_index = index
        return self._compact_index

    def record_compact(self, run_id: str, array_job: ArrayJob) -> None:
        """Every element of ``array_job`` (a compact map's) finished with a result."""
        self._compact_done.append((run_id, array_job))

    def record_results(self, run_id: str, keys: Iterable[str | tuple[str, str]]) -> None:
        """Results of run ``run_id``: keys, or ``(key, location)`` pairs for results kept
        elsewhere in it (pack files: ``RUN:AJ_J``, :meth:`ArrayJob.location`)."""
        for item in keys:
            if isinstance(item, tuple):
                self._computed[item[0]] = item[1]
            else:
                self._computed[item] = run_id

    def learn(self, locations: Mapping[str, str]) -> None:
        """Results found elsewhere (the cache, a re-attached run's inputs, a subgraph):
        kept unless this session already knows a location for the key."""
        for key, location in locations.items():
            self._computed.setdefault(key, location)

    def forget_runs(self, run_ids: Iterable[str]) -> None:
        """Forget the results (and fetched values) of runs that were deleted."""
        gone = set(run_ids)
        for key, location in list(self._computed.items()):
            if location.partition(":")[0] in gone:
                del self._computed[key]
                self._values.pop(key, None)
        if self._compact_ran:
            self._compact_ran = [(r, aj) for r, aj in self._compact_ran if r not in gone]
            self._compact_done = [(r, aj) for r, aj in self._compact_done if r not in gone]
            self._compact_index = None

    # -- values fetched to this process
    def has_value(self, key: str) -> bool:
        return key in self._values

    def value(self, key: str) -> Any:
        return self._values[key]

    def keep_value(self, key: str, value: Any) -> None:
        self._values[key] = value

    # -- runs, and where each node ran
    def add_run(self, run: Run, *, replace: bool = True) -> None:
        """Remember a run submitted (or attached) in this session."""
        if replace or run.id not in self._runs:
            self._runs[run.id] = run

    def run(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def runs(self) -> list[Run]:
        return list(self._runs.values())

    def unfinished_runs(self) -> list[Run]:
        return [r for r in self._runs.values() if not r.finished]

    def record_placement(self, run_id: str, array_jobs: Sequence[ArrayJob]) -> None:
        """Where each node of ``array_jobs`` runs in run ``run_id`` (and pack sizes)."""
        for aj in array_jobs:
            if aj.pack > 1:
                self._packs[(run_id, aj.id)] = aj.pack
            if type(aj.keys) is ElementKeys:  # indexed when a lookup needs it
                self._compact_ran.append((run_id, aj))
                self._compact_index = None
                continue
            for idx, key in enumerate(aj.keys):
                self._ran[key] = (run_id, aj.id, idx)

    def where(self, key: str) -> Where | None:
        """``(run id, array job, index)`` where ``key`` last ran in this session."""
        found = self._ran.get(key)
        if found is None and self._compact_ran:
            hit = self._compact().get(key)
            if hit is not None:
                return (hit[0], hit[1].id, hit[2])
        return found

    def pack_of(self, run_id: str, array_job: str) -> int:
        """Elements per Slurm element of that array job (1 when not packed)."""
        return self._packs.get((run_id, array_job), 1)

    def knows(self, key: str) -> bool:
        """Whether this session ran or computed ``key`` (submitted, or found)."""
        return self.where(key) is not None or self.location(key) is not None

    # -- jobs built in the ``with`` block, not submitted yet
    def pending(self) -> list[Any]:
        return list(self.sink)

    def take_pending(self) -> list[Any]:
        """The jobs built and not submitted yet, now handed over (the list empties)."""
        items = list(self.sink)
        self.sink.clear()
        return items

    def keep_pending(self, items: Iterable[Any]) -> None:
        """Replace what is pending (a handle dropped some of it)."""
        self.sink[:] = list(items)
