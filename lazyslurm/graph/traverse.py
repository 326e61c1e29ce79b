"""Pure traversals over the job graph (iterative: deep pipelines do not hit recursion limits)."""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from lazyslurm.graph.core import Job, _lift

__all__ = ["collect", "lift_outputs"]


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
    return templates, list(dict.fromkeys(roots))
