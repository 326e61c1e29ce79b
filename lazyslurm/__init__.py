"""lazyslurm: lazy task graphs, submitted to Slurm as whole DAGs of array jobs.

Names are imported on first use (PEP 562), so ``python -m lazyslurm.runner`` on a compute
node loads only the runner, the store and the errors.
"""

from __future__ import annotations

import sys

if sys.dont_write_bytecode:  # PYTHONDONTWRITEBYTECODE: keep ours compiled elsewhere
    from lazyslurm.bytecode import install

    install(__name__)

import importlib
from typing import TYPE_CHECKING, Any

from lazyslurm import registry
from lazyslurm.version import __version__

_EXPORTS = {
    "Cluster": "lazyslurm.cluster",
    "ClusterOptions": "lazyslurm.options",
    "Job": "lazyslurm.graph.core",
    "JobArray": "lazyslurm.graph.core",
    "JobContext": "lazyslurm.context",
    "JobView": "lazyslurm.graph.core",
    "Plan": "lazyslurm.planning.planner",
    "Run": "lazyslurm.execute",
    "RunStatus": "lazyslurm.execute",
    "Task": "lazyslurm.graph.core",
    "TaskOptions": "lazyslurm.graph.resources",
    "cache": "lazyslurm.cache",
    "compute": "lazyslurm.execute",
    "current_cluster": "lazyslurm.cluster",
    "errors": "lazyslurm.errors",
    "on_checkpoint": "lazyslurm.runner.checkpoint",
    "plan": "lazyslurm.execute",
    "Preview": "lazyslurm.preview",
    "preview": "lazyslurm.preview",
    "runs": "lazyslurm.execute",
    "submit": "lazyslurm.execute",
    "task": "lazyslurm.graph.core",
    "to_networkx": "lazyslurm.graph.traverse",
    "visualize": "lazyslurm.draw",
    "workflow": "lazyslurm.workflows",
    "WorkflowContext": "lazyslurm.workflows",
    "WorkflowTask": "lazyslurm.graph.core",
}

_MODULES = frozenset({"cache", "errors"})
# spelt out (not computed) so that type checkers see the exports
__all__ = [
    "Cluster",
    "ClusterOptions",
    "Job",
    "JobArray",
    "JobContext",
    "JobView",
    "Plan",
    "Preview",
    "Run",
    "RunStatus",
    "Task",
    "TaskOptions",
    "WorkflowContext",
    "WorkflowTask",
    "cache",
    "compute",
    "current_cluster",
    "errors",
    "on_checkpoint",
    "plan",
    "preview",
    "runs",
    "submit",
    "task",
    "to_networkx",
    "visualize",
    "workflow",
]


def _load_executor() -> Any:
    return importlib.import_module("lazyslurm.handles")  # compute, wait, get_result, ...


registry.register(_load_executor)  # how job.compute() reaches the executor (see registry)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module 'lazyslurm' has no attribute {name!r}"
        raise AttributeError(msg)
    mod = importlib.import_module(module)
    value = mod if name in _MODULES else getattr(mod, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from lazyslurm import cache, errors
    from lazyslurm.cluster import Cluster, current_cluster
    from lazyslurm.context import JobContext
    from lazyslurm.draw import visualize
    from lazyslurm.execute import Run, RunStatus, compute, plan, runs, submit
    from lazyslurm.graph.core import Job, JobArray, JobView, Task, WorkflowTask, task
    from lazyslurm.graph.resources import TaskOptions
    from lazyslurm.graph.traverse import to_networkx
    from lazyslurm.options import ClusterOptions
    from lazyslurm.planning.planner import Plan
    from lazyslurm.preview import Preview, preview
    from lazyslurm.runner.checkpoint import on_checkpoint
    from lazyslurm.workflows import WorkflowContext, workflow
