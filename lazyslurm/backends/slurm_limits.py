"""What Slurm can never give: pending reasons that never clear, and the largest node.

Two ways a job can wait forever, both turned into errors that name the cause and the fix:

- before submission, :func:`check_resources` compares ``mem`` and ``cpus_per_task`` with
  the largest node of the partition (from the backend's one probe, ``scontrol show node
  -o``) and ``time`` with the partition's MaxTime;
- while watching, :func:`never_clears` recognises the pending reasons Slurm keeps for good
  (``BadConstraints``, ``PartitionConfig``, ``InvalidAccount``, ...), read from squeue's
  ``%r`` or sacct's ``Reason``.

>>> never_clears("BadConstraints") is not None, never_clears("Priority")
(True, None)
>>> never_clears("QOSMaxCpuPerJobLimit") is not None, never_clears("QOSGrpCpuLimit")
(True, None)
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from lazyslurm.errors import ResourceLimitError

__all__ = ["Node", "check_resources", "job_budget", "job_limits", "never_clears", "parse_nodes"]

# reason -> what to change. Only reasons that no amount of waiting clears: the job's own
# request is impossible where it was sent (aggregate limits such as AssocGrp* and QOSGrp*
# do clear when other jobs end, and PartitionDown/ReqNodeNotAvail when an admin acts).
_NEVER: dict[str, str] = {
    "BadConstraints": (
        "no node can ever satisfy the request (mem, cpus_per_task, constraint, gres or "
        "extra_sbatch): ask for less, or choose a partition with bigger nodes"
    ),
    "PartitionConfig": (
        "the request (cpus_per_task, nodes, mem, ...) is more than the partition's "
        "configuration allows: ask for less or choose another partition"
    ),
    "PartitionNodeLimit": (
        "the number of nodes is outside the partition's MinNodes/MaxNodes: change nodes= "
        "(or --nodes in extra_sbatch) or choose another partition"
    ),
    "PartitionTimeLimit": "time= is over the partition's MaxTime: ask for less time",
    "InvalidAccount": "the account does not exist or you are not in it: fix account=",
    "InvalidQOS": "the QOS does not exist or your account may not use it: fix qos=",
    "AccountNotAllowed": "the partition does not allow this account: fix account= or partition=",
    "QOSNotAllowed": "the partition does not allow this QOS: fix qos= or partition=",
    "InactiveLimit": "the job reached the system's InactiveLimit: submit it again",
    "JobHeldAdmin": "an administrator holds the job: ask them to release it",
    "FrontEndDown": "no front end node is available: ask the cluster's administrators",
}
# per-job maxima of an association or QOS (QOSMaxCpuPerJobLimit, AssocMaxWallDurationPer
# JobLimit, ...): the job alone is over the limit, so it never starts
_PER_JOB = re.compile(r"^(Assoc|QOS)Max\w*PerJob\w*$")


def never_clears(reason: str) -> str | None:
    """What to change when a pending job's ``reason`` can never clear, else None."""
    word = reason.split(",")[0].strip().strip("()")
    if word in _NEVER:
        return _NEVER[word]
    if _PER_JOB.match(word):
        return (
            f"the job alone is over a per-job limit of its {'QOS' if word[0] == 'Q' else 'account'}"
            " (see `sacctmgr show qos` / `sacctmgr show assoc`): ask for less"
        )
    return None


@attrs.frozen
class Node:
    """What we read of a Slurm node (``scontrol show node -o``)."""

    name: str
    cpus: int
    mem_mb: int
    partitions: tuple[str, ...]


def parse_nodes(text: str) -> list[Node]:
    r"""Nodes from ``LZ-NODE``-prefixed ``scontrol show node -o`` lines.

    >>> parse_nodes("LZ-NODE NodeName=vm CPUTot=64 RealMemory=2000 Partitions=a,b\n")
    [Node(name='vm', cpus=64, mem_mb=2000, partitions=('a', 'b'))]
    """
    out = []
    for line in text.splitlines():
        if not line.startswith("LZ-NODE "):
            continue
        fields = dict(f.split("=", 1) for f in line[8:].split() if "=" in f)
        try:
            cpus = int(fields.get("CPUEfctv") or fields["CPUTot"])
            mem = int(fields["RealMemory"])
        except (KeyError, ValueError):
            continue
        parts = tuple(p for p in fields.get("Partitions", "").split(",") if p)
        out.append(Node(fields.get("NodeName", "?"), cpus, mem, parts))
    return out


def check_resources(
    label: str,
    partition: str,
    nodes: list[Node],
    values: Mapping[str, int | None],
) -> None:
    """Raise :class:`ResourceLimitError` when ``values['mem_mb']`` or
    ``values['cpus_per_task']`` is more than the largest node of ``partition`` has."""
    members = [n for n in nodes if partition in n.partitions]
    if not members:
        return
    # option, field, the largest node's amount, how an amount reads, and what is
    # added to name it in the advice ("at most 2000M of memory", "at most 64 CPUs")
    checks = (
        ("mem", "mem_mb", max(n.mem_mb for n in members), "{}M", " of memory"),
        ("cpus_per_task", "cpus_per_task", max(n.cpus for n in members), "{} CPUs", ""),
    )
    for option, field, largest, form, of_what in checks:
        value = values.get(field)
        if value is None or value <= largest:
            continue
        shown = form.format(value) if option == "mem" else str(value)
        limit = form.format(largest)
        msg = (
            f"{label} asks for {option}={shown} but the largest node of partition "
            f"{partition!r} has {limit}: Slurm would keep it pending forever "
            f"(BadConstraints); ask for at most {limit}{of_what} or choose a "
            f"partition with bigger nodes; nothing was submitted"
        )
        raise ResourceLimitError(msg, option=option, value=shown, limit=limit)


def job_limits(config: Mapping[str, str], probe: str) -> dict[str, int]:
    """The cluster's limits on queued jobs, from the one probe: ``MaxJobCount`` (``scontrol
    show config``) and the smallest ``MaxSubmitJobs`` of this user's associations and of
    the QOSes (``sacctmgr``, where accounting keeps them; ``LZ-MAXSUBMIT=`` lines).

    >>> job_limits({"MaxJobCount": "10000"}, "LZ-MAXSUBMIT=\\nLZ-MAXSUBMIT=500\\n")
    {'MaxJobCount': 10000, 'MaxSubmitJobs': 500}
    """
    out: dict[str, int] = {}
    count = config.get("MaxJobCount", "")
    if count.isdigit() and int(count) > 0:
        out["MaxJobCount"] = int(count)
    submits = [int(v) for v in re.findall(r"^LZ-MAXSUBMIT=(\d+)\s*$", probe, re.MULTILINE)]
    submits = [v for v in submits if v > 0]
    if submits:
        out["MaxSubmitJobs"] = min(submits)
    return out


def job_budget(limits: Mapping[str, int], share: int = 2) -> int | None:
    """The most Slurm jobs (array elements) one run may queue: MaxSubmitJobs (this
    user's), and MaxJobCount divided by ``share`` (every user's jobs count against it:
    ``pack="auto"`` plans for half of it; the pre-submission check allows all of it).

    >>> job_budget({"MaxJobCount": 10000, "MaxSubmitJobs": 4000}), job_budget({})
    (4000, None)
    >>> job_budget({"MaxJobCount": 10000}), job_budget({"MaxJobCount": 10000}, share=1)
    (5000, 10000)
    """
    options = []
    if "MaxJobCount" in limits:
        options.append(limits["MaxJobCount"] // share)
    if "MaxSubmitJobs" in limits:
        options.append(limits["MaxSubmitJobs"])
    return min(options) if options else None
