"""The dependency rules (lazyslurm/planning/rules.py): direct cases, and a property that
``ready``, ``unblocked_by``, ``cancelled_by`` and ``causes`` agree with a brute-force
reference over random DAGs of array jobs run through random schedules."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import array_job_dags

from lazyslurm.planning import rules
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.planning.rules import (
    AFTERCORR,
    AFTEROK,
    BAD,
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    Edges,
    cancelled_by,
    causes,
    edge_kind,
    ready,
    unblocked_by,
)

P, R, D, F, C = PENDING, RUNNING, DONE, FAILED, CANCELLED


def aj(n: int, size: int, *deps: tuple[str, int]) -> ArrayJob:
    keys = tuple(f"k{n}-{i}" for i in range(size))
    return ArrayJob(f"aj{n}", f"t{n}", keys, dependencies=tuple((k, f"aj{u}") for k, u in deps))


def everything_pending(edges: Edges):
    return lambda m: range(edges.sizes[m])


# --------------------------------------------------------------------------- edge_kind


def test_edge_kind_is_aftercorr_only_for_one_to_one_arrays():
    """aftercorr when element i needs exactly upstream element i of an equal-sized array."""
    assert edge_kind(3, 3, {0: {0}, 1: {1}, 2: {2}}) == AFTERCORR
    assert edge_kind(3, 3, {0: {0}, 1: {1}}) == AFTEROK  # one element needs nothing
    assert edge_kind(3, 3, {0: {1}, 1: {2}, 2: {0}}) == AFTEROK  # shifted
    assert edge_kind(3, 3, {0: {0, 1}, 1: {1}, 2: {2}}) == AFTEROK  # needs two
    assert edge_kind(4, 3, {0: {0}, 1: {1}, 2: {2}}) == AFTEROK  # sizes differ
    assert edge_kind(1, 1, {0: {0}}) == AFTEROK  # single jobs: the plainer word


def test_edges_index_both_directions():
    """Edges lists each array job's upstreams and downstreams by position, with kinds."""
    e = Edges([aj(0, 2), aj(1, 2, (AFTERCORR, 0)), aj(2, 1, (AFTEROK, 0), (AFTEROK, 1))])
    assert e.ids == ["aj0", "aj1", "aj2"] and e.sizes == [2, 2, 1]
    assert e.up == [[], [(AFTERCORR, 0)], [(AFTEROK, 0), (AFTEROK, 1)]]
    assert e.down == [[(AFTERCORR, 1), (AFTEROK, 2)], [(AFTEROK, 2)], []]


# --------------------------------------------------------------------------- ready


def test_ready_afterok_needs_every_upstream_element_done():
    """afterok: ready only once every element of the upstream is DONE."""
    e = Edges([aj(0, 2), aj(1, 1, (AFTEROK, 0))])
    assert not ready(e, 1, 0, [[D, R], [P]])
    assert ready(e, 1, 0, [[D, D], [P]])
    assert not ready(e, 1, 0, [[D, R], [P]], done=[1, 0])  # the caller's counts are used
    assert ready(e, 1, 0, [[D, R], [P]], done=[2, 0])


def test_ready_aftercorr_needs_only_its_own_index():
    """aftercorr: element i is ready when upstream element i is DONE, whatever the rest."""
    e = Edges([aj(0, 3), aj(1, 3, (AFTERCORR, 0))])
    states = [[D, F, R], [P, P, P]]
    assert [ready(e, 1, i, states) for i in range(3)] == [True, False, False]
    assert ready(e, 0, 2, states)  # no upstream: always ready


def test_unblocked_by_names_what_a_completion_may_free():
    """A completion frees the same index over aftercorr, and a whole afterok dependent only
    when its upstream is entirely DONE."""
    e = Edges([aj(0, 2), aj(1, 2, (AFTERCORR, 0)), aj(2, 1, (AFTEROK, 0))])
    assert unblocked_by(e, 0, 1, done=[1, 0, 0]) == [(1, 1)]
    assert unblocked_by(e, 0, 0, done=[2, 0, 0]) == [(1, 0), (2, None)]


# --------------------------------------------------------------------------- cancelled_by


def test_cancelled_by_travels_transitively_in_order():
    """A failure cancels its afterok dependents and theirs, each after its cause."""
    e = Edges([aj(0, 2), aj(1, 2, (AFTEROK, 0)), aj(2, 1, (AFTEROK, 1))])
    out = cancelled_by(e, 0, 1, everything_pending(e))
    assert sorted(out) == [(1, 0), (1, 1), (2, 0)]
    assert out.index((2, 0)) > min(out.index((1, 0)), out.index((1, 1)))


def test_cancelled_by_aftercorr_cancels_the_same_index_only():
    """Over aftercorr only element i of the dependent (and what needs it) is cancelled."""
    e = Edges([aj(0, 3), aj(1, 3, (AFTERCORR, 0)), aj(2, 3, (AFTERCORR, 1))])
    assert cancelled_by(e, 0, 1, everything_pending(e)) == [(1, 1), (2, 1)]


def test_cancelled_by_only_cancels_and_travels_through_pending_elements():
    """Elements that started are not cancelled, and the cancellation does not pass them."""
    e = Edges([aj(0, 2), aj(1, 2, (AFTERCORR, 0)), aj(2, 2, (AFTERCORR, 1))])
    pending = {0: [], 1: [0], 2: [0, 1]}  # element 1 of aj1 already runs
    assert cancelled_by(e, 0, 1, pending.__getitem__) == []
    assert cancelled_by(e, 0, 0, pending.__getitem__) == [(1, 0), (2, 0)]


def test_cancelled_by_reports_each_element_once():
    """A diamond reaches the join twice; it is cancelled once."""
    e = Edges(
        [
            aj(0, 1),
            aj(1, 1, (AFTEROK, 0)),
            aj(2, 1, (AFTEROK, 0)),
            aj(3, 1, (AFTEROK, 1), (AFTEROK, 2)),
        ]
    )
    out = cancelled_by(e, 0, 0, everything_pending(e))
    assert sorted(out) == [(1, 0), (2, 0), (3, 0)] and len(out) == 3


# --------------------------------------------------------------------------- causes


def test_causes_trace_a_chain_to_its_root():
    """Every cancelled element of a chain is traced to the failure that started it."""
    e = Edges([aj(0, 2), aj(1, 2, (AFTERCORR, 0)), aj(2, 1, (AFTEROK, 1))])
    states = [[D, F], [D, C], [C]]
    assert causes(e, states) == {(1, 1): (0, 1), (2, 0): (0, 1)}


def test_causes_leave_out_failures_and_direct_cancels():
    """Failures, and elements cancelled with no bad upstream (by a user), are roots."""
    e = Edges([aj(0, 2), aj(1, 2, (AFTERCORR, 0))])
    assert causes(e, [[C, D], [C, D]]) == {(1, 0): (0, 0)}  # a user cancelled (0, 0)
    assert causes(e, [[D, D], [C, F]]) == {}


def test_causes_of_an_afterok_dependent_is_the_first_bad_upstream_element():
    """An afterok dependent of an array with several failures names the first."""
    e = Edges([aj(0, 3), aj(1, 1, (AFTEROK, 0))])
    assert causes(e, [[D, F, F], [C]]) == {(1, 0): (0, 1)}


def test_causes_never_blame_what_fail_fast_stopped():
    """Elements the client cancelled after a failure (fail-fast) are traced to a failure
    upstream of them, but are never a cause: a -> b with b cancelled from outside and a,
    running fine, stopped afterwards is b's own cancellation (issue 20)."""
    e = Edges([aj(0, 1), aj(1, 1, (AFTEROK, 0))])
    assert causes(e, [[C], [C]]) == {(1, 0): (0, 0)}  # the reading without the knowledge
    assert causes(e, [[C], [C]], {(0, 0)}) == {}
    chain = Edges([aj(0, 2), aj(1, 1, (AFTEROK, 0)), aj(2, 1, (AFTEROK, 1))])
    stopped = {(0, 1), (1, 0), (2, 0)}  # pending when (0, 0) failed: each its dependent
    assert causes(chain, [[F, C], [C], [C]], stopped) == {(1, 0): (0, 0), (2, 0): (0, 0)}
    pairs = Edges([aj(0, 3), aj(1, 3, (AFTERCORR, 0))])
    siblings = {(0, 0), (0, 2), (1, 0), (1, 2)}
    assert causes(pairs, [[C, F, C], [C, C, C]], siblings) == {(1, 1): (0, 1)}


def test_bad_and_terminal_words():
    """FAILED and CANCELLED end without a result; DONE ends with one."""
    assert BAD == {F, C} and rules.TERMINAL == {D, F, C}


# --------------------------------------------------------------------------- property


def depends(edges: Edges, d: int, j: int, u: int, x: int) -> bool:
    """Whether element j of d needs element x of u directly (the reference reading)."""
    return any(m == u and (kind == AFTEROK or x == j) for kind, m in edges.up[d])


def brute_ready(edges: Edges, n: int, i: int, states: list[list[str]]) -> bool:
    return all(
        states[u][x] == DONE
        for u in range(len(states))
        for x in range(edges.sizes[u])
        if depends(edges, n, i, u, x)
    )


def brute_cancelled(edges: Edges, n: int, i: int, states: list[list[str]]) -> set:
    """Fixpoint: pending elements that need the failed one or one cancelled so."""
    out: set[tuple[int, int]] = set()
    reached = {(n, i)}
    changed = True
    while changed:
        changed = False
        for d in range(len(states)):
            for j in range(edges.sizes[d]):
                if (d, j) in out or states[d][j] != PENDING:
                    continue
                if any(depends(edges, d, j, u, x) for u, x in reached):
                    out.add((d, j))
                    reached.add((d, j))
                    changed = True
    return out


def reachable(edges: Edges, src: tuple[int, int], dst: tuple[int, int]) -> bool:
    """Whether dst needs src, directly or through other elements."""
    stack, seen = [src], {src}
    while stack:
        u, x = stack.pop()
        if (u, x) == dst:
            return True
        for d in range(len(edges.sizes)):
            for j in range(edges.sizes[d]):
                if (d, j) not in seen and depends(edges, d, j, u, x):
                    seen.add((d, j))
                    stack.append((d, j))
    return False


@settings(max_examples=300, deadline=None)
@given(array_job_dags(), st.randoms(use_true_random=False))
def test_rules_agree_with_a_brute_force_reference(ajs, rnd: random.Random):
    """Run random schedules (start, finish DONE/FAILED, cancel) of random array-job DAGs:
    at each step ready and unblocked_by match the reference readiness, each failure cancels
    what the reference closure says (each element once, after its cause), and at the end
    causes maps exactly the cancelled elements that need a bad one, each to a root (a
    failure or a direct cancel) it depends on."""
    edges = Edges(ajs)
    states = [[PENDING] * a.size for a in ajs]
    done = [0] * len(ajs)
    cascaded: set[tuple[int, int]] = set()
    roots: set[tuple[int, int]] = set()

    def pending(m: int) -> list[int]:
        return [j for j, s in enumerate(states[m]) if s == PENDING]

    def end_badly(n: int, i: int, state: str) -> None:
        states[n][i] = state
        roots.add((n, i))
        expected = brute_cancelled(edges, n, i, states)
        out = cancelled_by(edges, n, i, pending)
        assert len(out) == len(set(out)) and set(out) == expected
        for k, (d, j) in enumerate(out):  # each after something it depends on
            causes_before = [(n, i), *out[:k]]
            assert any(depends(edges, d, j, u, x) for u, x in causes_before)
        for d, j in out:
            states[d][j] = CANCELLED
        cascaded.update(out)

    for _ in range(40):
        cells = [(n, i) for n in range(len(ajs)) for i in range(ajs[n].size)]
        for n, i in cells:  # readiness, with and without the caller's DONE counts
            want = brute_ready(edges, n, i, states)
            assert ready(edges, n, i, states) == want == ready(edges, n, i, states, done)
        waiting = [(n, i) for n, i in cells if states[n][i] == PENDING]
        startable = [c for c in waiting if brute_ready(edges, *c, states)]
        running = [(n, i) for n, i in cells if states[n][i] == RUNNING]
        actions = [("start", c) for c in startable] + [("end", c) for c in running]
        actions += [("cancel", c) for c in waiting + running if rnd.random() < 0.1]
        if not actions:
            break
        what, (n, i) = rnd.choice(actions)
        if what == "start":
            states[n][i] = RUNNING
        elif what == "cancel":
            end_badly(n, i, CANCELLED)
        elif rnd.random() < 0.25:
            end_badly(n, i, FAILED)
        else:
            before = {
                c for c in cells if states[c[0]][c[1]] == PENDING and brute_ready(edges, *c, states)
            }
            states[n][i] = DONE
            done[n] += 1
            freed = unblocked_by(edges, n, i, done)
            now = {
                c for c in cells if states[c[0]][c[1]] == PENDING and brute_ready(edges, *c, states)
            }
            for m, j in now - before:
                assert (m, j) in freed or (m, None) in freed

    explained = causes(edges, states)
    # the reference: a CANCELLED element needing an element that ended without a result
    # (a cascade, or cancelled first by hand and its upstream failed later: the same states)
    bad = [(u, x) for u in range(len(ajs)) for x in range(ajs[u].size) if states[u][x] in BAD]
    consequences = {
        (d, j)
        for d in range(len(ajs))
        for j in range(ajs[d].size)
        if states[d][j] == CANCELLED and any(depends(edges, d, j, u, x) for u, x in bad)
    }
    assert set(explained) == consequences and cascaded <= consequences
    for element, root in explained.items():
        assert root in roots and root not in explained
        assert states[root[0]][root[1]] in BAD and reachable(edges, root, element)

    # fail-fast: what has not finished is cancelled by the client (stopped); those are
    # explained only through a chain from a real failure, and never cause anything
    stopped = {(n, i) for n, row in enumerate(states) for i, s in enumerate(row) if s in (P, R)}
    ended = [
        [C if (n, i) in stopped else s for i, s in enumerate(row)] for n, row in enumerate(states)
    ]
    reference: set[tuple[int, int]] = set()
    grown = True
    while grown:  # a fixpoint: cancelled, needing a bad element that is no mere stop
        grown = False
        for d in range(len(ajs)):
            for j in range(ajs[d].size):
                if ended[d][j] != C or (d, j) in reference:
                    continue
                if any(
                    ended[u][x] in BAD
                    and ((u, x) not in stopped or (u, x) in reference)
                    and depends(edges, d, j, u, x)
                    for u in range(len(ajs))
                    for x in range(ajs[u].size)
                ):
                    reference.add((d, j))
                    grown = True
    traced = causes(edges, ended, stopped)
    assert set(traced) == reference
    assert all(root in roots and root not in stopped for root in traced.values())
