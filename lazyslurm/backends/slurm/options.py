"""The options of the ``slurm`` and ``ssh`` backends, declared once (with the task
defaults of :class:`~lazyslurm.graph.resources.TaskDefaults` and the packaging options,
which they take too)."""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Literal, TypedDict

from lazyslurm.graph.options import Opt

__all__ = [
    "PROBE_CACHE_S",
    "STATUS_SOURCES",
    "UNREACHABLE_TIMEOUT_S",
    "SlurmOptions",
    "StatusSource",
]

UNREACHABLE_TIMEOUT_S = 600.0  # default of the unreachable_timeout_s option
PROBE_CACHE_S = 3600.0  # default of the probe_cache_s option
StatusSource = Literal["auto", "sacct", "squeue"]
STATUS_SOURCES: tuple[str, ...] = typing.get_args(StatusSource)


class SlurmOptions(TypedDict, total=False):
    """Options of the ``slurm`` and ``ssh`` backends (and the task defaults of
    :class:`~lazyslurm.graph.resources.TaskDefaults`, and ``PackagingOptions``)."""

    python: Annotated[str, Opt("interpreter on the cluster (slurm: this one)")]
    setup: Annotated[
        Sequence[str], Opt("shell lines run before each task (module load ...)", default=())
    ]
    env: Annotated[Mapping[str, str], Opt("environment variables for every Slurm command")]
    unreachable_timeout_s: Annotated[
        float,
        Opt(
            "how long polls, the probe, submission and cancels retry while slurmctld or "
            "the SSH connection is unreachable",
            default=UNREACHABLE_TIMEOUT_S,
            positive=True,
        ),
    ]
    max_rpc_per_min: Annotated[
        float,
        Opt(
            "most Slurm commands a minute on average (a token bucket): polls ask Slurm less "
            "often to stay under it; submit and cancel are never held back",
            positive=True,
        ),
    ]
    rpc_burst: Annotated[
        int,
        Opt(
            "most Slurm commands at once under max_rpc_per_min (default: a minute's worth)",
            positive=True,
        ),
    ]
    probe_cache_s: Annotated[
        float,
        Opt(
            "slurm on this host: reuse the last process's probe of Slurm for this long "
            "while slurm.conf is unchanged (0: probe in every session)",
            default=PROBE_CACHE_S,
        ),
    ]
    status: Annotated[
        StatusSource,
        Opt("status source: sacct, squeue, or auto (sacct if accounting)", default="auto"),
    ]
