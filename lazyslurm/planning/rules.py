"""The dependency rules, in one place. Pure functions over array-job records and states.

- :func:`edge_kind`: which Slurm dependency the planner submits for an edge;
- :func:`ready`: which elements may start (the local backend's scheduler asks it);
- :func:`cancelled_by`: what a failure cancels (``--kill-on-invalid-dep=yes``);
- :func:`causes`: for each cancelled element, the failure that caused it (the Slurm
  backend reports raw states, ``Run`` explains them with this).

Element states are the words every backend reports: PENDING, RUNNING, DONE, FAILED,
CANCELLED.

>>> from lazyslurm.planning.planner import ArrayJob
>>> a = ArrayJob("aj0", "f", ("a0", "a1"))
>>> b = ArrayJob("aj1", "g", ("b0", "b1"), dependencies=((AFTERCORR, "aj0"),))
>>> c = ArrayJob("aj2", "h", ("c0",), dependencies=((AFTEROK, "aj1"),))
>>> edges = Edges([a, b, c])
>>> states = [[DONE, FAILED], [DONE, CANCELLED], [CANCELLED]]
>>> ready(edges, 1, 0, states), ready(edges, 2, 0, states)
(True, False)
>>> sorted(cancelled_by(edges, 0, 1, lambda n: range(edges.sizes[n])))
[(1, 1), (2, 0)]
>>> causes(edges, states)
{(1, 1): (0, 1), (2, 0): (0, 1)}
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Protocol

__all__ = [
    "AFTERCORR",
    "AFTEROK",
    "BAD",
    "CANCELLED",
    "DONE",
    "FAILED",
    "PENDING",
    "RUNNING",
    "TERMINAL",
    "Edges",
    "cancelled_by",
    "causes",
    "edge_kind",
    "ready",
]

AFTEROK = "afterok"  # every element of the upstream array job completed
AFTERCORR = "aftercorr"  # element i of the upstream array job completed

PENDING = "PENDING"
RUNNING = "RUNNING"
DONE = "DONE"
FAILED = "FAILED"
CANCELLED = "CANCELLED"
TERMINAL = frozenset({DONE, FAILED, CANCELLED})
BAD = frozenset({FAILED, CANCELLED})  # ended without a result

Element = tuple[int, int]  # (array job position in the run, index)


class _Record(Protocol):
    """What the rules read of an array job (see :class:`~lazyslurm.planning.planner.ArrayJob`)."""

    @property
    def id(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def dependencies(self) -> tuple[tuple[str, str], ...]: ...


def edge_kind(upstream_size: int, size: int, needs: dict[int, set[int]]) -> str:
    """The dependency of an array job of ``size`` elements on one of ``upstream_size``.

    ``needs[i]`` is the set of upstream indices element ``i`` needs. ``aftercorr`` when
    every element ``i`` needs exactly upstream element ``i`` of a same-sized array (more
    than one element: for single jobs both kinds mean the same and ``afterok`` reads
    plainer), else ``afterok``.

    >>> edge_kind(3, 3, {0: {0}, 1: {1}, 2: {2}}), edge_kind(3, 3, {0: {0, 1}})
    ('aftercorr', 'afterok')
    """
    elementwise = 1 < upstream_size == size == len(needs) and all(
        len(ixs) == 1 and i in ixs for i, ixs in needs.items()
    )
    return AFTERCORR if elementwise else AFTEROK


class Edges:
    """The dependency edges of one run's array jobs, by position (built once per run)."""

    __slots__ = ("down", "ids", "index", "sizes", "up")

    def __init__(self, array_jobs: Sequence[_Record]) -> None:
        self.ids = [aj.id for aj in array_jobs]
        self.index = {aj_id: n for n, aj_id in enumerate(self.ids)}
        self.sizes = [aj.size for aj in array_jobs]
        self.up: list[list[tuple[str, int]]] = [
            [(kind, self.index[u]) for kind, u in aj.dependencies] for aj in array_jobs
        ]
        self.down: list[list[tuple[str, int]]] = [[] for _ in array_jobs]
        for n, ups in enumerate(self.up):
            for kind, m in ups:
                self.down[m].append((kind, n))


def ready(
    edges: Edges, n: int, i: int, states: Sequence[Sequence[str]], done: Sequence[int] = ()
) -> bool:
    """Whether element ``i`` of array job ``n`` may start: each ``aftercorr`` upstream's
    element ``i`` is DONE and each ``afterok`` upstream is DONE throughout.

    ``done`` (DONE count per array job) saves counting when the caller keeps it.
    """
    for kind, m in edges.up[n]:
        if kind == AFTERCORR:
            if states[m][i] != DONE:
                return False
        elif (done[m] if done else sum(s == DONE for s in states[m])) != edges.sizes[m]:
            return False
    return True


def unblocked_by(edges: Edges, n: int, i: int, done: Sequence[int]) -> list[tuple[int, int | None]]:
    """What the completion of element ``i`` of ``n`` may make ready: ``(m, j)`` for one
    element, ``(m, None)`` for a whole array job (its ``afterok`` upstream just finished)."""
    out: list[tuple[int, int | None]] = []
    for kind, m in edges.down[n]:
        if kind == AFTERCORR:
            out.append((m, i))
        elif done[n] == edges.sizes[n]:
            out.append((m, None))
    return out


def cancelled_by(
    edges: Edges, n: int, i: int, pending: Callable[[int], Collection[int]]
) -> list[Element]:
    """Elements a failure of element ``i`` of ``n`` cancels, transitively, in order.

    ``pending(m)`` gives the indices of ``m`` that have not started (only those can be
    cancelled, and only through those does the cancellation travel on).
    """
    out: list[Element] = []
    seen: set[Element] = set()
    stack = [(n, i)]
    while stack:
        up, ui = stack.pop()
        for kind, d in edges.down[up]:
            waiting = pending(d)
            targets = ([ui] if ui in waiting else []) if kind == AFTERCORR else list(waiting)
            for j in targets:
                if (d, j) not in seen:
                    seen.add((d, j))
                    out.append((d, j))
                    stack.append((d, j))
    return out


def causes(
    edges: Edges, states: Sequence[Sequence[str]], stopped: Collection[Element] = ()
) -> dict[Element, Element]:
    """For every CANCELLED element whose upstream ended without a result, the element
    whose failure (or cancellation by a user) started the chain that cancelled it.

    Elements missing from the result are not consequences of another: they failed, or
    were cancelled directly. ``stopped`` are CANCELLED elements that the client cancelled
    because another element failed (fail-fast): one downstream of a failure is traced to
    it like any dependent, but one that is not (a sibling, or a healthy upstream of an
    element cancelled from outside) is never the cause of another. Array jobs must be in
    topological (submission) order.

    >>> from lazyslurm.planning.planner import ArrayJob
    >>> b = ArrayJob("b", "g", ("b0",), dependencies=((AFTEROK, "a"),))
    >>> e = Edges([ArrayJob("a", "f", ("a0",)), b])
    >>> causes(e, [[CANCELLED], [CANCELLED]]), causes(e, [[CANCELLED], [CANCELLED]], {(0, 0)})
    ({(1, 0): (0, 0)}, {})
    """
    root: dict[Element, Element] = {}
    first_bad: dict[int, int | None] = {}

    def bad(m: int, j: int) -> bool:  # ended without a result, and no mere stop
        return states[m][j] in BAD and ((m, j) not in stopped or (m, j) in root)

    def bad_in(m: int) -> int | None:
        if m not in first_bad:  # upstreams come first: their roots are all known here
            first_bad[m] = next((j for j in range(len(states[m])) if bad(m, j)), None)
        return first_bad[m]

    for n, row in enumerate(states):
        for i, state in enumerate(row):
            if state != CANCELLED:
                continue
            for kind, m in edges.up[n]:
                j = (i if bad(m, i) else None) if kind == AFTERCORR else bad_in(m)
                if j is not None:
                    root[(n, i)] = root.get((m, j), (m, j))
                    break
    return root
