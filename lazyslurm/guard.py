"""Catching a silent wrong run before anything is submitted: a forgotten ``with cluster:``.

Without a cluster given or active (and without ``$LAZYSLURM_PROFILE``), graphs run on the
embedded local cluster. That is the point for a laptop session, but a program that
built ``Cluster("slurm", ...)`` and forgot ``with cluster:`` would run everything locally
without a word. So a submission on that implicit default emits an
:class:`ImplicitLocalWarning` naming the ways out when

- a ``Cluster("slurm"|"ssh", ...)`` made in this context is alive but was never entered
  with ``with`` nor passed as ``cluster=`` (it names where it was made), or
- its tasks ask for resources that mean nothing locally (a partition, GPUs...).

>>> from lazyslurm.graph.resources import Resources
>>> slurm_only(Resources.from_options(partition="debug", gpus=1, time=5))
{'partition': 'debug', 'gpus': '1'}
"""

from __future__ import annotations

import contextvars
import os
import sys
import warnings
import weakref
from collections.abc import Iterable
from typing import Any

from lazyslurm.errors import ImplicitLocalWarning
from lazyslurm.graph.resources import Resources

__all__ = ["SLURM_ONLY", "note_created", "note_used", "slurm_only", "warn_implicit_local"]

# Slurm/SSH clusters made in this context and not used yet: (weak reference, where made).
# A context variable like the active cluster: each thread and asyncio task has its own.
_UNUSED: contextvars.ContextVar[tuple[tuple[weakref.ref[Any], str], ...]] = contextvars.ContextVar(
    "lazyslurm_unused_clusters", default=()
)


def _caller_outside_lazyslurm() -> str:
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__", "").startswith("lazyslurm."):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def note_created(cluster: Any) -> None:
    """Remember a Slurm/SSH cluster just made (weakly: a dropped one is forgotten)."""
    alive = tuple(e for e in _UNUSED.get() if e[0]() is not None)
    _UNUSED.set((*alive, (weakref.ref(cluster), _caller_outside_lazyslurm())))


def note_used(cluster: Any) -> None:
    """The cluster was entered or passed explicitly: not a forgotten one."""
    entries = _UNUSED.get()
    if entries:
        _UNUSED.set(tuple(e for e in entries if e[0]() not in (None, cluster)))


def _forgotten() -> list[tuple[Any, str]]:
    return [(c, where) for ref, where in _UNUSED.get() if (c := ref()) is not None]


# resources that only a Slurm cluster honours (time, mem and cpus are plain sizing that the
# seed puts on every task, local runs included, so they do not count)
SLURM_ONLY = (
    "partition",
    "account",
    "qos",
    "gpus",
    "gres",
    "constraint",
    "nodes",
    "ntasks",
    "extra_sbatch",
)


def slurm_only(resources: Resources) -> dict[str, Any]:
    """The Slurm-only resources a task asks for."""
    out = {}
    for name in SLURM_ONLY:
        value = getattr(resources, name)
        if value not in (None, ()):
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def warn_implicit_local(
    implicit: bool,
    embedded: bool,
    backend_name: str,
    tasks: Iterable[tuple[str, Resources]],
    stacklevel: int,
) -> None:
    """Warn when ``tasks`` (name, resources) asking for Slurm resources run on the implicit
    local default (``implicit``: no cluster given, none active, no profile variable;
    ``embedded``: the cluster runs elements here, without a scheduler)."""
    if not implicit or not embedded or os.environ.get("LAZYSLURM_PROFILE"):
        return
    forgotten = _forgotten()
    if forgotten:
        cluster, where = forgotten[-1]
        msg = (
            f"{cluster!r}, made at {where}, is not active, so this runs on the embedded "
            f"{backend_name} cluster: did you forget `with cluster:`? Use "
            f"`with cluster:` or compute(..., cluster=cluster); to run locally on purpose, "
            f"pass cluster=Cluster('local')"
        )
        warnings.warn(msg, ImplicitLocalWarning, stacklevel=stacklevel + 1)
        return
    asking = {}
    for name, resources in tasks:
        wanted = slurm_only(resources)
        if wanted and name not in asking:
            asking[name] = wanted
    if not asking:
        return
    first, wanted = next(iter(asking.items()))
    opts = ", ".join(f"{k}={v!r}" for k, v in wanted.items())
    who = (
        f"task {first!r} asks"
        if len(asking) == 1
        else f"tasks {first!r} and {len(asking) - 1} more ask"
    )
    msg = (
        f"{who} for Slurm resources ({opts}) but will run on the embedded {backend_name} "
        f"cluster, because no cluster is active: did you forget `with cluster:`? To run on "
        f"Slurm use `with Cluster('slurm', ...):`, compute(..., cluster=...) or "
        f"LAZYSLURM_PROFILE=NAME; to run locally on purpose, pass cluster=Cluster('local')"
    )
    warnings.warn(msg, ImplicitLocalWarning, stacklevel=stacklevel + 1)
