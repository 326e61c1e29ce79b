"""Traversals over the job graph (lazyslurm.graph.traverse)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from strategies import Dag, dags

from lazyslurm.graph import task
from lazyslurm.graph.traverse import collect, lift_outputs
from lazyslurm.store import Ref, RefList


@task
def f(*args: Any, **kwargs: Any) -> Any:
    return args


def keys(jobs: list[Any]) -> list[str]:
    return [j.key for j in jobs]


def test_collect_orders_dependencies_first() -> None:
    """collect lists every needed job once, each after its data and ordering deps."""
    a = f(1)
    b = f(a)
    c = f.after(b)(2)
    d = f([a, c])
    assert keys(collect([d])) == keys([a, b, c, d])
    assert keys(collect([d, a, d])) == keys([a, b, c, d])


def test_collect_skips_done_jobs_and_what_only_they_need() -> None:
    """Done jobs are not collected, nor jobs only done jobs need."""
    a = f(1)
    b = f(a)
    c = f(b, f(2))
    assert keys(collect([c], done={b.key})) == keys([f(2), c])
    assert collect([c], done={c.key}) == []
    assert keys(collect([c, a], done={b.key})) == keys([f(2), c, a])


def test_collect_handles_deep_pipelines_without_recursion() -> None:
    """A 20,000-deep chain is collected iteratively (no RecursionError)."""
    j = f(0)
    chain = [j]
    for _ in range(20_000):
        j = f(j)
        chain.append(j)
    assert keys(collect([j])) == keys(chain)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_collect_is_a_topological_order_of_exactly_the_needed_jobs(dag: Dag) -> None:
    """On random graphs, collect returns each needed job once, dependencies first."""
    order = keys(collect(dag.roots, dag.done))
    assert len(order) == len(set(order))
    pos = {k: i for i, k in enumerate(order)}
    for c, p in dag.data | dag.order:
        if c in pos and p not in dag.done:
            assert pos[p] < pos[c]
    assert not set(order) & dag.done
    assert {j.key for j in dag.roots if j.key not in dag.done} <= set(order)


def test_lift_outputs_templates_and_roots() -> None:
    """lift_outputs turns lazy values into Ref/RefList templates and lists root jobs once."""
    a, b = f(1), f(2)
    arr = f.map([3, 4])
    templates, roots = lift_outputs([a, {"k": b[0]}, arr, 5, [a]])
    assert templates == [
        Ref(a.key),
        {"k": Ref(b.key, (("item", 0),))},
        RefList(arr.keys),
        5,
        [Ref(a.key)],
    ]
    assert roots == [a, b, *arr.jobs]


def test_to_networkx_exports_jobs_and_dependency_kinds() -> None:
    """The lazy graph exports to networkx with task, resources and edge kinds."""
    from lazyslurm.graph import task as mk
    from lazyslurm.graph.traverse import to_networkx

    inc = mk(mem="1G")(lambda x: x + 1)
    a = inc.map([1, 2])
    b = inc.after(a[0])(a[1])
    g = to_networkx(b)
    assert set(g.nodes) == {a[0].key, a[1].key, b.key}
    assert g.nodes[b.key]["resources"] == {"mem": 1024} and g.nodes[b.key]["job"] == b
    assert g.edges[a[1].key, b.key]["kind"] == "data"
    assert g.edges[a[0].key, b.key]["kind"] == "ordering"
