"""Pure traversals over the job graph (iterative: deep pipelines do not hit recursion limits)."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from lazyslurm.graph.core import ArrayNode, Job, _lift
from lazyslurm.store import RefArray, RefList

__all__ = ["collect", "lift_outputs", "to_networkx"]


def collect(roots: Iterable[Job], done: Container[str] = frozenset()) -> list[Job]:
    """Every job ``roots`` need, each before its dependents, skipping ``done`` keys.

    Jobs that only ``done`` jobs need are not visited: their results already exist.

    >>> from lazyslurm.graph.core import task
    >>> f = task(lambda x: x)
    >>> a = f(1); b = f(a); c = f([a, b])
    >>> [j.key == k.key for j, k in zip(collect([c]), [a, b, c])]
    [True, True, True]
    >>> [j.key == c.key for j in collect([c], done={a.key, b.key})]
    [True]
    """
    order: list[Job] = []
    seen: set[str] = set()
    stack: list[tuple[Job, bool]] = [(r, False) for r in reversed(list(roots))]
    while stack:
        job, expanded = stack.pop()
        if expanded:
            order.append(job)
            continue
        key = job.key
        if key in seen or key in done:
            continue
        seen.add(key)
        stack.append((job, True))
        for dep in reversed(job.deps + job.order):
            if dep.key not in seen and dep.key not in done:
                stack.append((dep, False))
    return order


def lift_outputs(exprs: Iterable[Any]) -> tuple[list[Any], list[Job]]:
    """Templates of what ``compute`` returns (``Ref`` where jobs stand), and the root jobs.

    >>> from lazyslurm.graph.core import task
    >>> f = task(lambda x: x)
    >>> templates, roots = lift_outputs([f(1), {"k": f(2)}, 3])
    >>> templates[2], len(roots)
    (3, 2)
    """
    roots: list[Job] = []
    templates = [_lift(expr, roots, []) for expr in exprs]
    nodes = {r.key: r for r in roots if type(r) is ArrayNode}
    if nodes:  # a compact map asked for itself: the list of its elements' results
        templates = [_element_refs(t, nodes) for t in templates]
    return templates, list(dict.fromkeys(roots))


def _element_refs(template: Any, nodes: dict[str, ArrayNode]) -> Any:
    """``template`` with each compact map's placeholder (:class:`RefArray`) replaced by
    the placeholder of its elements' results (their keys derived when read)."""
    t = type(template)
    if t is RefArray:
        return RefList(nodes[template.key].keys())  # type: ignore[arg-type]
    if t is list or t is tuple:
        return t(_element_refs(x, nodes) for x in template)
    if t is dict:
        return {k: _element_refs(v, nodes) for k, v in template.items()}
    return template


def to_networkx(*exprs: Any) -> Any:
    """The graph behind ``exprs`` as a ``networkx.DiGraph`` (for embedding and analysis).

    One node per job, named by its key, with attributes ``task`` (name), ``resources``
    (the task's options), ``nout`` and ``job`` (the :class:`Job`); one edge per
    dependency, upstream to consumer, with ``kind`` ``"data"`` (its result is an
    argument) or ``"ordering"`` (``.after``). networkx is imported here, on first use.

    >>> from lazyslurm.graph.core import task
    >>> f = task(lambda x: x)
    >>> a = f(1)
    >>> g = to_networkx(f.after(a)([a, f(2)]))
    >>> g.number_of_nodes(), sorted(k for _, _, k in g.edges(data="kind"))
    (3, ['data', 'data'])
    """
    import networkx as nx

    _, roots = lift_outputs(exprs)
    g = nx.DiGraph()
    for job in collect(roots):
        t = job.task
        g.add_node(job.key, task=t.name, resources=t.resources.as_options(), nout=job.nout, job=job)
        for dep in job.order:
            g.add_edge(dep.key, job.key, kind="ordering")
        for dep in job.deps:  # data wins where a dependency is both
            g.add_edge(dep.key, job.key, kind="data")
    return g
