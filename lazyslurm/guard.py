"""Catching a silent wrong run before anything is submitted: a forgotten ``with cluster:``.

Without a cluster given or active (and without ``$LAZYSLURM_PROFILE``), graphs run on the
embedded local cluster. That is the point for a laptop session, but a program that
built ``Cluster("slurm", ...)`` and forgot ``with cluster:`` would run everything locally
without a word. Resources such as a partition or GPUs mean nothing locally, so tasks
that ask for them and run on that implicit default raise an :class:`ImplicitLocalWarning`
(once per submission) naming the tasks and the ways out.

>>> from lazyslurm.graph.resources import Resources
>>> slurm_only(Resources.from_options(partition="debug", gpus=1, time=5))
{'partition': 'debug', 'gpus': '1'}
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from typing import Any

from lazyslurm.errors import ImplicitLocalWarning
from lazyslurm.graph.resources import Resources

__all__ = ["SLURM_ONLY", "slurm_only", "warn_implicit_local"]

# resources that only a Slurm cluster honours (time, mem and cpus are plain sizing that the
# seed puts on every task, local runs included, so they do not count)
SLURM_ONLY = ("partition", "account", "qos", "gpus", "gres", "constraint", "nodes", "ntasks",
              "extra_sbatch")


def slurm_only(resources: Resources) -> dict[str, Any]:
    """The Slurm-only resources a task asks for."""
    out = {}
    for name in SLURM_ONLY:
        value = getattr(resources, name)
        if value not in (None, ()):
            out[name] = list(value) if isinstance(value, tuple) else value
    return out


def warn_implicit_local(
    implicit: bool, backend_name: str, tasks: Iterable[tuple[str, Resources]], stacklevel: int
) -> None:
    """Warn when ``tasks`` (name, resources) asking for Slurm resources run on the implicit
    local default (``implicit``: no cluster given, none active, no profile variable)."""
    if not implicit or backend_name not in ("local", "sync") or os.environ.get(
        "LAZYSLURM_PROFILE"
    ):
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
