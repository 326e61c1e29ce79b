"""The embedded backends' compute-node side: a subgraph a task returns runs inline, in the
worker that ran the task (its dependents wait for that worker anyway), and a
``@workflow``'s cluster is the same kind of embedded cluster, here.
See :mod:`lazyslurm.backends.slurm.node` for what these functions are for.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from lazyslurm.dynamic import Subgraph, commit, locked
from lazyslurm.errors import DynamicExpansionError
from lazyslurm.planning import rules
from lazyslurm.planning.cost import ClusterFacts
from lazyslurm.store import RunLayout, decode_outcome, read_private

__all__ = ["cost_facts", "inner_cluster", "start_subgraph"]


def cost_facts() -> ClusterFacts | None:
    """No partitions here: a task's own time limit is its worst case."""
    return None


def inner_cluster(layout: RunLayout, array_job: str, manifest: Mapping[str, Any]) -> tuple[
    str, dict[str, Any]
]:  # fmt: skip
    """The same kind of embedded cluster (local or sync), on the run's work directory."""
    return ("sync" if manifest.get("backend") == "sync" else "local"), {}


def start_subgraph(sub: Subgraph) -> None:
    """Run the subgraph in this worker, in plan (topological) order; an element whose
    upstream failed is skipped, as ``--kill-on-invalid-dep`` would. Its first failure
    raises :class:`~lazyslurm.errors.DynamicExpansionError` with that element's record."""
    layout, record, plan = sub.layout, sub.record, sub.plan
    record.inline = True
    with locked(layout):
        commit(layout, record)  # before it runs: status shows it as it appears
    edges = rules.Edges(plan.array_jobs)
    states = [[rules.PENDING] * aj.size for aj in plan.array_jobs]
    failed: tuple[str, str] | None = None
    old = os.environ.get("SLURM_ARRAY_TASK_ID")
    try:
        for n, aj in enumerate(plan.array_jobs):
            for i in range(aj.size):
                if not rules.ready(edges, n, i, states):
                    states[n][i] = rules.CANCELLED
                    continue
                os.environ["SLURM_ARRAY_TASK_ID"] = str(i)
                ok = sub.run_one(layout.root, aj.id, i) == 0
                states[n][i] = rules.DONE if ok else rules.FAILED
                if not ok and failed is None:
                    failed = (aj.name, aj.keys[i])
    finally:
        if old is None:
            os.environ.pop("SLURM_ARRAY_TASK_ID", None)
        else:
            os.environ["SLURM_ARRAY_TASK_ID"] = old
    if failed is not None:
        name, key = failed
        path = layout.error(key)
        try:
            _, payload = decode_outcome(read_private(path), key=key, path=path, run=sub.run_id)
        except OSError:
            payload = None
        msg = f"the subgraph it returned failed: task {name!r} (key {key})"
        raise DynamicExpansionError(msg, error_record=payload)
