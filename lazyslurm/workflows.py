"""``@workflow``: a function that orchestrates tasks, run as a job on the cluster.

As slurm-sdk spells it: ``@workflow(time=..., mem=...)`` makes a task whose function
receives a :class:`WorkflowContext` (the parameter annotated ``WorkflowContext``, or named
``ctx``). Inside it, ``ctx.cluster`` is active: tasks build lazy graphs as anywhere else,
and ``compute()``, ``job.wait()``, ``job.get_result()`` submit from the compute node to the
same Slurm (the ``slurm`` backend on that host), with the workflow's packaging (its
interpreter and setup lines). A workflow may also *return* lazy values instead of waiting:
the runner then submits them (dynamic expansion, docs/dynamic.md) and the workflow's
allocation ends at once.

>>> @workflow(time="00:10:00")
... def pipeline(n: int, ctx: WorkflowContext) -> int:
...     return n
>>> pipeline.name, pipeline.resources.timeout_min, isinstance(pipeline, WorkflowTask)
('pipeline', 10, True)
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from lazyslurm.cluster import Cluster
from lazyslurm.errors import InvalidArgumentError
from lazyslurm.graph.core import Task, WorkflowTask
from lazyslurm.graph.resources import Resources
from lazyslurm.runner import ELEMENT_ENV  # set by the runner around each element
from lazyslurm.store import RunLayout, read_private

__all__ = ["ELEMENT_ENV", "WorkflowContext", "WorkflowTask", "workflow"]


@attrs.frozen
class WorkflowContext:
    """What a workflow receives: ``cluster`` (the same cluster, reached from inside),
    ``workflow_job_dir`` (a directory of its own in the run directory), ``shared_dir``
    (``workflow_job_dir/shared``: artifacts shared by its tasks), ``workflow_job_id``
    (the Slurm job running it, ``""`` off Slurm), ``run_id`` and ``key`` (its node)."""

    cluster: Cluster
    workflow_job_dir: Path
    shared_dir: Path
    workflow_job_id: str
    run_id: str
    key: str


class WorkflowFunction:
    """The function of a ``@workflow`` task: injects the context, activates its cluster."""

    def __init__(self, func: Callable[..., Any]) -> None:
        self.func = func
        self.param = _context_parameter(func)
        self.__name__ = getattr(func, "__name__", "workflow")
        self.__qualname__ = getattr(func, "__qualname__", self.__name__)
        self.__module__ = getattr(func, "__module__", None)
        self.__doc__ = getattr(func, "__doc__", None)
        self.__wrapped__ = func

    @property
    def __signature__(self) -> inspect.Signature | None:
        """What a call gives (checked when a job is built): the function's parameters but
        the one the context is injected into."""
        return _without(self.func, self.param)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ctx = current_context()
        if self.param is not None:
            kwargs[self.param] = ctx
        with ctx.cluster:
            return self.func(*args, **kwargs)


def _context_parameter(func: Callable[..., Any]) -> str | None:
    """The parameter that receives the context: annotated WorkflowContext, or ``ctx``."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return None
    for name, p in params.items():
        ann = p.annotation
        if ann is WorkflowContext or (isinstance(ann, str) and ann.endswith("WorkflowContext")):
            return name
    return "ctx" if "ctx" in params else None


def _without(func: Callable[..., Any], param: str | None) -> inspect.Signature | None:
    """``func``'s signature without the parameter the context is injected into (None: it
    has no signature to read)."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    return sig.replace(parameters=[p for n, p in sig.parameters.items() if n != param])


def workflow(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a function into a workflow: a task that orchestrates other tasks on the
    cluster. Options are those of ``@task`` (``time``, ``mem``, ...); ``pure`` defaults to
    False (a workflow's side effects, in ``shared_dir``, are why it runs)."""
    pure = options.pop("pure", False)
    resources = Resources.from_options(**options)

    def make(f: Callable[..., Any]) -> Task[..., Any]:
        if not callable(f):
            msg = f"@workflow needs a function, got {f!r}"
            raise InvalidArgumentError(msg)
        return WorkflowTask(WorkflowFunction(f), resources, pure=pure)

    return make(func) if func is not None else make


def current_context() -> WorkflowContext:
    """The context of the workflow element running in this process (from the runner)."""
    where = os.environ.get(ELEMENT_ENV, "")
    try:
        run_dir, _array_job, _index, key = where.split("\t")
    except ValueError:
        msg = "a workflow runs as a job: call it inside a graph, e.g. compute(my_workflow(...))"
        raise InvalidArgumentError(msg) from None
    layout = RunLayout(run_dir)
    run_id = run_dir.rsplit("/", 1)[-1]
    job_dir = Path(run_dir) / "workflows" / key
    shared = job_dir / "shared"
    shared.mkdir(parents=True, exist_ok=True, mode=0o700)
    manifest = json.loads(read_private(layout.manifest))
    return WorkflowContext(
        cluster=_inner_cluster(layout, _array_job, manifest),
        workflow_job_dir=job_dir,
        shared_dir=shared,
        workflow_job_id=os.environ.get("SLURM_JOB_ID", ""),
        run_id=run_id,
        key=key,
    )


def _inner_cluster(layout: RunLayout, array_job: str, manifest: dict[str, Any]) -> Cluster:
    """The run's cluster, reached from where the workflow runs: the compute-node side of
    the run's backend says how (on Slurm: Slurm on this host, with the workflow job's
    interpreter and setup lines; embedded: the same kind here), on the run's work
    directory, with the run's dynamic limits."""
    workdir = layout.root.rsplit("/", 2)[0]
    config = manifest.get("dynamic") or {}
    opts = {f"dynamic_{k}": v for k, v in config.get("limits", {}).items()}
    name = config.get("node")
    if not name:
        msg = (
            f"backend {manifest.get('backend', '?')!r} has no compute-node side: a workflow "
            f"cannot reach its cluster from where it runs"
        )
        raise InvalidArgumentError(msg)
    backend, options = importlib.import_module(name).inner_cluster(layout, array_job, manifest)
    given = {k: v for k, v in {**options, **opts}.items() if v is not None}
    return Cluster(backend, workdir=workdir, **given)
