"""Planner: graph -> stages -> array jobs -> dependency kinds (lazyslurm.planning.planner)."""

from __future__ import annotations

import graphlib
import math
from collections import defaultdict
from typing import Any

import pytest
from examples.parallelization_patterns import (  # the seed's tasks, one definition
    merge_results,
    process_chunk,
    select_best_model,
    split_dataset,
    stage1_preprocess,
    stage2_transform,
    stage3_finalize,
    train_model,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import Dag, dags

from lazyslurm.graph import task
from lazyslurm.planning.planner import (
    AFTERCORR,
    AFTEROK,
    DEFAULT_MAX_ARRAY_SIZE,
    ArrayJob,
    Plan,
    make_plan,
)

PROPS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --------------------------------------------------------------------------- helpers


def plan_of(dag: Dag) -> Plan:
    return make_plan(
        dag.roots, done=dict.fromkeys(dag.done, "r0"), max_array_size=dag.max_array_size
    )


def needed(dag: Dag) -> set[str]:
    """Keys the roots need, not crossing ``done`` nodes (computed from the recipe)."""
    ups = _ups(dag)
    seen: set[str] = set()
    stack = [j.key for j in dag.roots if j.key not in dag.done]
    while stack:
        key = stack.pop()
        if key in seen:
            continue
        seen.add(key)
        stack.extend(p for p in ups[key] if p not in dag.done and p not in seen)
    return seen


def _ups(dag: Dag) -> dict[str, set[str]]:
    ups: dict[str, set[str]] = defaultdict(set)
    for c, p in dag.data | dag.order:
        ups[c].add(p)
    return ups


def stages(dag: Dag, keys: set[str]) -> dict[str, int]:
    """Longest path from a source, over the recipe's edges between planned nodes."""
    ups = _ups(dag)
    graph = {k: {p for p in ups[k] if p in keys} for k in keys}
    stage: dict[str, int] = {}
    for k in graphlib.TopologicalSorter(graph).static_order():
        stage[k] = 1 + max((stage[p] for p in graph[k]), default=-1)
    return stage


def index_deps(aj: ArrayJob, up: ArrayJob, dag: Dag) -> dict[int, set[int]]:
    """For each element of ``aj``: the indices of ``up`` it runs after."""
    ups = _ups(dag)
    pos = {k: i for i, k in enumerate(up.keys)}
    return {i: {pos[p] for p in ups[key] if p in pos} for i, key in enumerate(aj.keys)}


def kinds(plan: Plan) -> list[tuple[str, int, list[tuple[str, str]]]]:
    return [(aj.name, aj.size, list(aj.dependencies)) for aj in plan.array_jobs]


def upstreams(plan: Plan, aj: ArrayJob) -> list[tuple[str, ArrayJob]]:
    by_id = {a.id: a for a in plan.array_jobs}
    return [(kind, by_id[up]) for kind, up in aj.dependencies]


# --------------------------------------------------------------------------- properties


@PROPS
@given(dags())
def test_every_needed_node_is_planned_exactly_once(dag: Dag) -> None:
    """Each node the roots need (and no other) sits in exactly one array job."""
    plan = plan_of(dag)
    planned = [j.key for aj in plan.array_jobs for j in plan.elements(aj)]
    assert len(planned) == len(set(planned))
    assert set(planned) == needed(dag) == set(plan.location)
    for key, (aj, i) in plan.location.items():
        assert plan.elements(aj)[i].key == key == aj.keys[i]


@PROPS
@given(dags())
def test_every_data_and_ordering_edge_is_respected(dag: Dag) -> None:
    """Upstreams run in earlier array jobs their consumers depend on, unless done."""
    plan = plan_of(dag)
    pos = {aj.id: n for n, aj in enumerate(plan.array_jobs)}
    for c, p in dag.data | dag.order:
        if c not in plan.location:
            continue
        aj_c, i_c = plan.location[c]
        if p in dag.done:
            assert p not in plan.location
            continue
        aj_p, i_p = plan.location[p]
        assert pos[aj_p.id] < pos[aj_c.id]
        edge_kinds = {k for k, up in aj_c.dependencies if up == aj_p.id}
        assert len(edge_kinds) == 1
        if edge_kinds == {AFTERCORR}:
            assert i_p == i_c


@PROPS
@given(dags())
def test_done_dependencies_are_dropped_and_external(dag: Dag) -> None:
    """Dependencies on done keys appear in plan.external (with their run) and nowhere else."""
    plan = plan_of(dag)
    keys = needed(dag)
    expected = {p for c, p in dag.data | dag.order if c in keys and p in dag.done}
    assert dict(plan.external) == dict.fromkeys(expected, "r0")
    assert not expected & set(plan.location)


@PROPS
@given(dags())
def test_no_array_job_mixes_tasks_resources_or_stages(dag: Dag) -> None:
    """All elements of an array job share one function, one Resources and one stage."""
    plan = plan_of(dag)
    stage = stages(dag, needed(dag))
    for aj in plan.array_jobs:
        assert aj.size >= 1
        for job in plan.elements(aj):
            assert job.task.unwrapped is plan.task(aj).unwrapped
            assert job.task.resources == aj.resources
            assert stage[job.key] == aj.stage
        assert aj.name == plan.task(aj).name


@PROPS
@given(dags())
def test_aftercorr_only_when_truly_element_wise(dag: Dag) -> None:
    """aftercorr exactly when element i needs only element i of an equal-size (>1) array."""
    plan = plan_of(dag)
    for aj in plan.array_jobs:
        for kind, up in upstreams(plan, aj):
            assert kind in (AFTEROK, AFTERCORR)
            by_elem = index_deps(aj, up, dag)
            elementwise = 1 < up.size == aj.size and all(ixs == {i} for i, ixs in by_elem.items())
            assert (kind == AFTERCORR) == elementwise


@PROPS
@given(dags())
def test_dependencies_are_real_earlier_and_after_is_ordering_only(dag: Dag) -> None:
    """Dependencies come from edges, point back, and `after` lists ordering-only ones."""
    plan = plan_of(dag)
    order_of = {aj.id: n for n, aj in enumerate(plan.array_jobs)}
    data_ups = defaultdict(set)
    for c, p in dag.data:
        data_ups[c].add(p)
    for aj in plan.array_jobs:
        ups = [up for _, up in upstreams(plan, aj)]
        assert len({u.id for u in ups}) == len(ups)
        data_only = set()
        for up in ups:
            assert order_of[up.id] < order_of[aj.id]
            assert up.stage < aj.stage
            assert any(index_deps(aj, up, dag).values())
            up_keys = set(up.keys)
            if any(data_ups[k] & up_keys for k in aj.keys):
                data_only.add(up.id)
        assert set(aj.after) == {u.id for u in ups} - data_only


@PROPS
@given(dags())
def test_number_of_array_jobs_is_minimal_for_the_stages(dag: Dag) -> None:
    """#array jobs = sum over (stage, task, resources) groups of ceil(n / max_array_size)."""
    plan = plan_of(dag)
    keys = needed(dag)
    stage = stages(dag, keys)
    groups: dict[tuple[Any, ...], int] = defaultdict(int)
    for key in keys:
        job = dag.jobs[key]
        groups[stage[key], job.task.unwrapped, job.task.resources] += 1
    expected = sum(math.ceil(n / dag.max_array_size) for n in groups.values())
    assert len(plan.array_jobs) == expected


@PROPS
@given(dags())
def test_array_sizes_never_exceed_max_and_chunks_are_full(dag: Dag) -> None:
    """No array job is larger than max_array_size; only a group's last chunk is partial."""
    plan = plan_of(dag)
    assert plan.max_array_size == dag.max_array_size
    assert len({aj.id for aj in plan.array_jobs}) == len(plan.array_jobs)
    for aj in plan.array_jobs:
        assert 1 <= aj.size <= dag.max_array_size
        assert 0 <= aj.chunk < aj.nchunks
        if aj.chunk < aj.nchunks - 1:
            assert aj.size == dag.max_array_size


@PROPS
@given(dags())
def test_plan_is_deterministic(dag: Dag) -> None:
    """Planning the same graph twice gives the same array jobs, in the same order."""
    a, b = plan_of(dag), plan_of(dag)
    assert kinds(a) == kinds(b)
    assert [list(aj.keys) for aj in a.array_jobs] == [list(aj.keys) for aj in b.array_jobs]


@PROPS
@given(dags())
def test_stages_group_array_jobs_by_stage(dag: Dag) -> None:
    """plan.stages lists every array job once, grouped by increasing stage."""
    plan = plan_of(dag)
    flat = [aj for stage in plan.stages for aj in stage]
    assert sorted(aj.id for aj in flat) == sorted(aj.id for aj in plan.array_jobs)
    for stage in plan.stages:
        assert len({aj.stage for aj in stage}) == 1
    assert [s[0].stage for s in plan.stages] == sorted({aj.stage for aj in plan.array_jobs})
    assert plan.nodes == len(plan.location)


# --------------------------------------------------------------------------- concrete cases


@task
def inc(x: int) -> int:
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


def test_sibling_calls_in_a_loop_merge_into_one_array() -> None:
    """[f(c) for c in configs] plans as one array job, exactly like f.map(configs)."""
    loop = make_plan([inc(c) for c in range(5)])
    mapped = make_plan(list(inc.map(range(5))))
    assert kinds(loop) == kinds(mapped) == [("inc", 5, [])]


def test_siblings_with_other_resources_get_their_own_array() -> None:
    """Equal resources share an array; different resources (or tasks) never do."""
    big = inc.options(mem="4G")
    same = inc.options(mem=4096)
    plan = make_plan([inc(1), big(2), same(3), total([1])])
    assert sorted((aj.name, aj.size) for aj in plan.array_jobs) == [
        ("inc", 1),
        ("inc", 2),
        ("total", 1),
    ]


def test_closures_from_one_factory_do_not_share_an_array() -> None:
    """Tasks made by one factory with other captured values are other tasks: own arrays."""

    def make(k: int) -> Any:
        return task(lambda x: x + k)

    plan = make_plan([make(1)(5), make(2)(6), make(1)(7)])
    assert sorted(aj.size for aj in plan.array_jobs) == [1, 2]
    for aj in plan.array_jobs:
        assert all(j.task.unwrapped(0) == plan.task(aj).unwrapped(0) for j in plan.elements(aj))


def test_siblings_in_different_stages_do_not_merge() -> None:
    """A call that depends on a sibling is in a later stage and a separate array job."""
    a = inc(1)
    plan = make_plan([a, inc(a), inc(2)])
    assert kinds(plan) == [("inc", 2, []), ("inc", 1, [("afterok", "aj0")])]


def test_chunking_keeps_aftercorr_between_aligned_chunks() -> None:
    """Arrays over max_array_size split into chunks; element-wise chunks stay aftercorr."""
    a = inc.map(range(7))
    b = inc.options(mem="1G").map(a)
    plan = make_plan(list(b), max_array_size=3)
    assert kinds(plan) == [
        ("inc", 3, []),
        ("inc", 3, []),
        ("inc", 1, []),
        ("inc", 3, [("aftercorr", "aj0")]),
        ("inc", 3, [("aftercorr", "aj1")]),
        ("inc", 1, [("afterok", "aj2")]),  # single jobs: afterok, same meaning
    ]
    assert [(aj.chunk, aj.nchunks) for aj in plan.array_jobs[:3]] == [(0, 3), (1, 3), (2, 3)]


def test_fan_in_over_chunks_is_afterok_on_every_chunk() -> None:
    """A fan-in over a chunked array depends (afterok) on each chunk."""
    plan = make_plan([total(inc.map(range(5)))], max_array_size=2)
    deps = [("afterok", "aj0"), ("afterok", "aj1"), ("afterok", "aj2")]
    assert kinds(plan)[-1] == ("total", 1, deps)


def test_misaligned_element_wise_is_afterok() -> None:
    """Mapping over a reversed or shifted array (planned in its own order) is afterok."""
    a = inc.map(range(4))
    rev = make_plan([*a, *total.map(a[::-1])])
    tail = make_plan([*a, *total.map(a[1:])])
    assert kinds(rev)[-1] == ("total", 4, [("afterok", "aj0")])
    assert kinds(tail)[-1] == ("total", 3, [("afterok", "aj0")])


def test_after_adds_ordering_dependency_listed_in_after() -> None:
    """.after(x) makes an afterok dependency that ArrayJob.after marks as ordering only."""
    a = inc(1)
    b = total.after(a)([1, 2])
    plan = make_plan([b])
    aj = plan.location[b.key][0]
    assert [(k, u.name) for k, u in upstreams(plan, aj)] == [("afterok", "inc")]
    assert [plan.location[a.key][0].id] == list(aj.after)


def test_done_upstream_is_not_planned() -> None:
    """A done dependency is dropped: only the consumer is planned; external names its run."""
    a = inc(1)
    b = inc(a)
    plan = make_plan([b], done={a.key: "run-1"})
    assert kinds(plan) == [("inc", 1, [])]
    assert dict(plan.external) == {a.key: "run-1"}
    assert make_plan([b], done={b.key: "run-1"}).array_jobs == ()


def test_views_are_never_array_jobs() -> None:
    """job[i], job['k'] and job.attr resolve in the consumer: only base and consumer plan."""
    a = inc(1, nout=3)
    plan = make_plan([total([a[0], a["k"], a.attr, a[1][2]])])
    assert kinds(plan) == [("inc", 1, []), ("total", 1, [("afterok", "aj0")])]


def test_upstream_elements_are_planned_in_the_order_consumers_need_them() -> None:
    """Only through a reversed view, the upstream is laid out reversed: still aftercorr."""
    a = inc.map(range(4))
    plan = make_plan(list(total.map(a[::-1])))
    assert kinds(plan)[-1] == ("total", 4, [("aftercorr", "aj0")])
    assert list(plan.array_jobs[0].keys) == list(a.keys[::-1])


def test_element_wise_over_merged_siblings_is_afterok() -> None:
    """Element-wise over an array merged with extra siblings has unequal sizes: afterok."""
    a = inc.map(range(3))
    plan = make_plan([*total.map(a), inc(99)])
    assert kinds(plan) == [("inc", 4, []), ("total", 3, [("afterok", "aj0")])]


def test_default_and_invalid_max_array_size() -> None:
    """The default max array size is Slurm's 1001; values below 1 are rejected."""
    plan = make_plan(list(inc.map(range(1002))))
    assert [aj.size for aj in plan.array_jobs] == [DEFAULT_MAX_ARRAY_SIZE, 1]
    with pytest.raises(ValueError, match="max_array_size"):
        make_plan([inc(1)], max_array_size=0)


def test_empty_graph_plans_nothing() -> None:
    """No roots, no array jobs."""
    plan = make_plan([])
    assert plan.array_jobs == () and plan.stages == () and plan.nodes == 0


def test_describe_has_one_line_per_array_job() -> None:
    """Plan.describe() gives one readable line per array job, naming chunks and deps."""
    plan = make_plan(list(inc.options(mem="1G").map(inc.map(range(3)))), max_array_size=2)
    lines = plan.describe()
    assert len(lines) == len(plan.array_jobs) == 4
    assert "chunk 1/2" in lines[0] and "after: aftercorr aj0" in lines[2]


# --------------------------------------------------------------------------- seed patterns


def test_seed_fan_out_fan_in_as_written() -> None:
    """Seed pattern 1 stage by stage: split x1, process x5 after split, merge x1 after all."""
    split_job = split_dataset("large_dataset.csv", num_chunks=5)
    chunks = split_dataset.unwrapped("large_dataset.csv", num_chunks=5)
    process_jobs = process_chunk.after(split_job).map(chunks)
    assert kinds(make_plan(list(process_jobs))) == [
        ("split_dataset", 1, []),
        ("process_chunk", 5, [("afterok", "aj0")]),
    ]
    done = dict.fromkeys([split_job.key, *process_jobs.keys], "r1")
    chunk_results = [{"items_processed": 100}] * 5
    merge_job = merge_results.after(process_jobs)(chunk_results)
    plan = make_plan([merge_job], done=done)
    assert kinds(plan) == [("merge_results", 1, [])]
    assert set(plan.external) == set(process_jobs.keys)


def test_seed_fan_out_fan_in_lazy() -> None:
    """Lazy pattern 1: split(nout=5) -> process.map(split) -> merge(array): all afterok."""
    split_job = split_dataset("large_dataset.csv", num_chunks=5, nout=5)
    merge_job = merge_results(process_chunk.map(split_job))
    assert kinds(make_plan([merge_job])) == [
        ("split_dataset", 1, []),
        ("process_chunk", 5, [("afterok", "aj0")]),
        ("merge_results", 1, [("afterok", "aj1")]),
    ]


def test_seed_pipeline() -> None:
    """Seed pattern 2: the three stages chain element-wise, so both edges are aftercorr."""
    stage1_jobs = stage1_preprocess.map(["data_1", "data_2", "data_3"])
    configs = [
        {"data": job, "transform_type": f"transform_{i}"} for i, job in enumerate(stage1_jobs)
    ]
    stage3_jobs = stage3_finalize.map(stage2_transform.map(configs))
    plan = make_plan(list(stage3_jobs))
    assert kinds(plan) == [
        ("stage1_preprocess", 3, []),
        ("stage2_transform", 3, [("aftercorr", "aj0")]),
        ("stage3_finalize", 3, [("aftercorr", "aj1")]),
    ]
    assert plan.array_jobs[0].resources == plan.array_jobs[2].resources
    assert plan.array_jobs[0].resources.timeout_min == 3


def test_seed_parameter_sweep() -> None:
    """Seed pattern 3: 12 trainings in one array; select_best after all of them (afterok)."""
    configs = [
        {"lr": lr, "batch_size": bs, "epochs": 10, "seed": seed}
        for lr in [0.001, 0.01, 0.1]
        for bs in [32, 64]
        for seed in [0, 1]
    ]
    train_jobs = train_model.map(configs)
    lazy = make_plan([select_best_model(train_jobs)])
    seed_style = make_plan([select_best_model.after(train_jobs)([{"accuracy": 1.0}])])
    expected = [("train_model", 12, []), ("select_best_model", 1, [("afterok", "aj0")])]
    assert kinds(lazy) == kinds(seed_style) == expected
    assert seed_style.array_jobs[1].after == (seed_style.array_jobs[0].id,)
    assert lazy.array_jobs[1].after == ()


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 40), st.integers(1, 12))
def test_chunked_pipeline_is_aftercorr_chunk_to_chunk(n: int, max_size: int) -> None:
    """For any length and max size, element-wise stages pair chunk c with chunk c."""
    a = inc.map(range(n))
    b = total.map(a)
    plan = make_plan(list(b), max_array_size=max_size)
    nchunks = math.ceil(n / max_size)
    assert len(plan.array_jobs) == 2 * nchunks
    for aj in plan.array_jobs[nchunks:]:
        [(kind, up)] = upstreams(plan, aj)
        assert up.chunk == aj.chunk and up.size == aj.size
        assert kind == (AFTERCORR if aj.size > 1 else AFTEROK)


def test_plan_to_networkx_has_array_jobs_and_dependency_kinds() -> None:
    """plan.to_networkx(): one node per array job (size, stage, resources), edges by kind."""
    import networkx as nx

    a = inc.map(range(3))
    plan = make_plan([total(inc.map(a))])
    g = plan.to_networkx()
    assert list(nx.topological_sort(g)) == [aj.id for aj in plan.array_jobs]
    assert [g.nodes[n]["size"] for n in g] == [3, 3, 1]
    assert [g.edges[e]["kind"] for e in g.edges] == ["aftercorr", "afterok"]


def test_array_job_records_round_trip_through_the_manifest() -> None:
    """An array job written to the manifest reads back equal, stage and after included."""
    from lazyslurm.planning import ArrayJob

    a = inc(1)
    plan = make_plan(
        list(total.after(a).map(inc.options(mem="2G").map(range(250)))), max_array_size=100
    )
    for aj in plan.array_jobs:
        assert ArrayJob.from_manifest(aj.to_manifest()) == aj
    assert any(aj.after for aj in plan.array_jobs) and any(aj.nchunks > 1 for aj in plan.array_jobs)
