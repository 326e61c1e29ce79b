"""The options of ``@task(...)``, ``task.options(...)`` and ``Cluster(...)`` as typed
keywords, and "did you mean" for misspelt ones (including the names submitit users bring).

The ``TypedDict`` classes are what editors complete and type checkers check (through
``Unpack``); the values are validated at run time by :mod:`lazyslurm.graph.resources`.

>>> suggest("timeout_min", ["time", "mem"], 30)
"did you mean time=30 (submitit's timeout_min; an int is minutes)?"
>>> suggest("partiton", ["partition", "account"])
"did you mean 'partition'?"
>>> suggest("colour", ["time"])
''
"""

from __future__ import annotations

import datetime
import difflib
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypedDict

__all__ = ["ALIASES", "ClusterOptions", "TaskOptions", "suggest"]

_Path = str | os.PathLike[str]


class TaskOptions(TypedDict, total=False):
    """Options of ``@task(...)`` and ``task.options(...)`` (all optional)."""

    time: str | int | datetime.timedelta
    mem: str | int
    cpus_per_task: int
    gpus: int | str
    gres: str
    partition: str
    account: str
    qos: str
    nodes: int
    ntasks: int
    constraint: str
    job_name: str
    max_concurrent: int
    extra_sbatch: Sequence[str]
    retries: int
    pure: bool
    name: str
    packaging: Literal["auto", "inherit", "by-value", "wheel", "container"]
    gather: Literal["rank0", "all"]
    ntasks_per_node: int
    gpus_per_node: int | str
    gpus_per_task: int | str
    # a few of sbatch's other long options (all are accepted: see SBATCH_OPTIONS)
    mem_per_cpu: str | int
    exclusive: bool | str
    mail_type: str | Sequence[str]
    mail_user: str
    requeue: bool
    pack: int | Literal["auto"]
    signal: str
    time_min: str | int
    nodelist: str
    exclude: str


class ClusterOptions(TypedDict, total=False):
    """The backend options of ``Cluster("slurm"|"ssh", ...)``: how to reach the cluster,
    and task defaults for every task run there (all optional)."""

    # both Slurm backends
    python: str
    setup: Sequence[str]
    env: Mapping[str, str]
    status: Literal["auto", "sacct", "squeue"]
    # backend="ssh"
    hostname: str
    port: int
    username: str
    key_filename: _Path | Sequence[_Path]
    known_hosts: _Path | Sequence[_Path]
    ssh_config: _Path | Literal[False] | None
    allow_unknown_hosts: bool
    connect_timeout_s: float
    keepalive_s: float
    transport: Literal["auto", "paramiko", "openssh"]
    control_path: _Path
    otp: Callable[..., str]
    otp_command: str
    # task defaults
    partition: str
    account: str
    qos: str
    time: str | int | datetime.timedelta
    mem: str | int
    cpus_per_task: int
    constraint: str
    extra_sbatch: Sequence[str]


def _gb(value: Any) -> str:
    return f"mem={f'{value}G'!r}" if isinstance(value, (int, float)) else "mem"


# names from submitit (AutoExecutor and SlurmExecutor), sbatch's long options and other
# schedulers' libraries -> (our name, how to write it with the given value, a note)
_Alias = tuple[str, Callable[[Any], str] | None, str]
ALIASES: dict[str, _Alias] = {
    "timeout_min": ("time", None, "submitit's timeout_min; an int is minutes"),
    "slurm_time": ("time", None, "submitit's slurm_time"),
    "timeout": ("time", None, "an int is minutes"),
    "time_limit": ("time", None, "an int is minutes"),
    "walltime": ("time", None, "an int is minutes"),
    "mem_gb": ("mem", _gb, "submitit's mem_gb; mem takes units"),
    "slurm_mem": ("mem", None, "submitit's slurm_mem"),
    "memory": ("mem", None, 'mem takes units, e.g. "4G"'),
    "slurm_partition": ("partition", None, "submitit's slurm_partition"),
    "slurm_account": ("account", None, "submitit's slurm_account"),
    "slurm_qos": ("qos", None, "submitit's slurm_qos"),
    "slurm_constraint": ("constraint", None, "submitit's slurm_constraint"),
    "slurm_gres": ("gres", None, "submitit's slurm_gres"),
    "slurm_job_name": ("job_name", None, "submitit's slurm_job_name"),
    "name": ("job_name", None, "submitit's name"),
    "gpus_per_node": ("gpus", None, "submitit's gpus_per_node"),
    "slurm_gpus_per_node": ("gpus", None, "submitit's slurm_gpus_per_node"),
    "gpus_per_task": ("gpus", None, "lazyslurm's gpus is per array element"),
    "num_gpus": ("gpus", None, ""),
    "gpu": ("gpus", None, ""),
    "cpus": ("cpus_per_task", None, ""),
    "slurm_cpus_per_task": ("cpus_per_task", None, "submitit's slurm_cpus_per_task"),
    "tasks_per_node": ("ntasks", None, "submitit's tasks_per_node; ntasks is the total"),
    "slurm_ntasks_per_node": ("ntasks", None, "ntasks is the total"),
    "slurm_nodes": ("nodes", None, "submitit's slurm_nodes"),
    "slurm_array_parallelism": ("max_concurrent", None, "submitit's array parallelism"),
    "array_parallelism": ("max_concurrent", None, "submitit's array_parallelism"),
    "slurm_additional_parameters": ("extra_sbatch", None, 'a list, e.g. ["--exclusive"]'),
    "additional_parameters": ("extra_sbatch", None, 'a list, e.g. ["--exclusive"]'),
    "max_retries": ("retries", None, ""),
    "slurm_setup": ("setup", None, "submitit's slurm_setup"),
    "host": ("hostname", None, ""),
    "user": ("username", None, ""),
    "identity_file": ("key_filename", None, ""),
}


def suggest(name: str, known: Iterable[str], value: Any = None) -> str:
    """A "did you mean ..." hint for the unknown option ``name`` (``""`` if none).

    Aliases (submitit's names, sbatch's ``--long-options``) come first, then close
    spellings of the ``known`` names.
    """
    known = list(known)
    key = name.strip().lstrip("-").replace("-", "_").lower()
    if key in known and key != name:
        return f"did you mean {key!r}?"
    alias = ALIASES.get(key)
    if alias is not None and alias[0] in known:
        target, spell, note = alias
        if spell is not None:
            written = spell(value)
        elif value is not None and not isinstance(value, (dict, list, tuple, set)):
            written = f"{target}={value!r}"
        else:
            written = repr(target)
        return f"did you mean {written}{f' ({note})' if note else ''}?"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""
