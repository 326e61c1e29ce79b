"""What the cluster is: the one probe of a Slurm cluster, and what it can never give.

One probe per session (one round trip, :func:`probe_script`, read by :func:`read_probe`)
tells the backend, preview, packing and the limit checks everything they need: the
configuration (``MaxArraySize``, ``MaxJobCount``, ``DefMemPerCPU``, whether accounting
is kept), every partition (default, ``DefaultTime``, ``MaxTime``, ``DefMemPerCPU``:
:class:`~lazyslurm.planning.cost.ClusterFacts`), every node (CPUs, memory, partitions),
this user's ``MaxSubmitJobs`` and the home directory.

A job that can wait forever is refused before submission: :func:`check_resources`
compares ``mem`` and ``cpus_per_task`` with the largest node of the partition (from the
one probe, ``scontrol show node -o``) and ``time`` with the partition's MaxTime. (While
watching, :func:`lazyslurm.backends.slurm.status.never_clears` recognises the pending
reasons Slurm keeps for good.)
"""

from __future__ import annotations

import datetime
import re
import shlex
from collections.abc import Mapping, Sequence

import attrs

from lazyslurm.backends.base import Start
from lazyslurm.errors import NoSlurmError, ResourceLimitError
from lazyslurm.graph.resources import parse_time
from lazyslurm.planning.cost import ClusterFacts, PartitionFacts

__all__ = [
    "CONFIG_KEYS",
    "COST_PROBE",
    "Facts",
    "Node",
    "check_resources",
    "job_budget",
    "job_limits",
    "no_slurm",
    "parse_cluster_facts",
    "parse_nodes",
    "parse_test_only",
    "probe_script",
    "read_probe",
    "split_starts",
    "start_query_script",
]

_CONFIG_KEYS = (
    "MaxArraySize", "MaxJobCount", "AccountingStorageType", "DefMemPerCPU", "JobRequeue",
)  # fmt: skip
CONFIG_KEYS = (*_CONFIG_KEYS, "SLURM_CONF")  # the lines of `scontrol show config` probed
# the part of the probe the worst-case arithmetic needs (partitions and DefMemPerCPU): also
# run alone, where a task that returns a subgraph checks the run's budget
COST_PROBE = (
    "scontrol show partition -o 2>/dev/null | sed 's/^/LZ-PART /'\n"
    "scontrol show config 2>/dev/null | grep -E '^DefMemPerCPU ' | sed 's/^/LZ-CONF /'\n"
)


def probe_script(more: str = "") -> str:
    """The one probe: configuration, partitions, nodes, home, this user's job limits
    (``sacctmgr``, where accounting keeps them, in the background meanwhile), then
    ``more`` (the packaging's lines: interpreter, modules, staged code)."""
    return "\n".join(
        [
            # each sacctmgr asks slurmdbd (~0.2 s), so both run meanwhile, in the background
            "lz_acct=$(mktemp); { "
            "sacctmgr -n -P show assoc where user=$(id -un) format=MaxSubmit 2>/dev/null & "
            "sacctmgr -n -P show qos format=MaxSubmitPU 2>/dev/null; wait; "
            '} > "$lz_acct" 2>/dev/null & lz_acct_pid=$!',
            # no Slurm here: say which way (no scontrol, not configured, controller down)
            'if ! command -v scontrol >/dev/null 2>&1; then echo "LZ-NOSCONTROL=$PATH"; '
            'else lz_conf=$(scontrol show config 2>&1); if printf "%s\\n" "$lz_conf" | '
            "grep -E '^(" + "|".join(CONFIG_KEYS) + ") '; then lz_ok=1; else "
            'printf "%s\\n" "$lz_conf" | head -n 6 | sed "s/^/LZ-SCONTROL /"; fi; fi',
            # the controller answered: partitions and nodes (else each would wait as long)
            'if [ -n "${lz_ok:-}" ]; then',
            "scontrol show partition -o 2>/dev/null | sed 's/^/LZ-PART /'",
            "scontrol show node -o 2>/dev/null | sed 's/^/LZ-NODE /'",
            "fi",
            "echo LZ-HOME=$HOME",
            more,
            'wait "$lz_acct_pid" 2>/dev/null; sed \'s/^/LZ-MAXSUBMIT=/\' "$lz_acct" 2>/dev/null;'
            ' rm -f "$lz_acct"',
        ]
    )


@attrs.frozen
class Facts:
    """What one probe found (see the module docstring)."""

    max_array_size: int
    accounting: bool  # sacct works (AccountingStorageType is not none)
    cluster: ClusterFacts  # partitions and DefMemPerCPU
    nodes: tuple[Node, ...] = ()
    job_limits: Mapping[str, int] = attrs.field(factory=dict)  # MaxJobCount, MaxSubmitJobs
    home: str | None = None
    # JobRequeue=1 (Slurm's default): a batch job a node failure or a preemption stopped
    # is queued again by Slurm, unless it was submitted --no-requeue
    job_requeue: bool = True


def read_probe(stdout: str, stderr: str = "", *, where: str = "") -> Facts:
    """The facts in the probe's output; :class:`~lazyslurm.errors.NoSlurmError` when
    Slurm's configuration could not be read (``where``: the host, when reached over SSH)."""
    config = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", stdout, re.MULTILINE))
    if "MaxArraySize" not in config:
        raise no_slurm(stdout, stderr, where)
    home = re.search(r"^LZ-HOME=(/.*)$", stdout, re.MULTILINE)
    cluster = parse_cluster_facts(stdout)
    return Facts(
        max_array_size=int(config["MaxArraySize"]),
        accounting=not config.get("AccountingStorageType", "").endswith("/none"),
        cluster=attrs.evolve(cluster, def_mem_per_cpu_mb=_int_or_none(config.get("DefMemPerCPU")))
        if cluster.def_mem_per_cpu_mb is None
        else cluster,
        nodes=tuple(parse_nodes(stdout)),
        job_limits=job_limits(config, stdout),
        home=home.group(1) if home else None,
        job_requeue=config.get("JobRequeue", "1") != "0",
    )


def no_slurm(stdout: str, stderr: str = "", where: str = "") -> NoSlurmError:
    """Why the probe found no usable Slurm, and what to do, in one line: no ``scontrol``
    on the PATH, Slurm not configured, or its controller (slurmctld) out of reach.

    >>> print(no_slurm("LZ-NOSCONTROL=/usr/bin:/bin\\nLZ-HOME=/home/me\\n"))
    ... # doctest: +NORMALIZE_WHITESPACE
    no Slurm on this machine: `scontrol` is not on the PATH (/usr/bin:/bin). Run where
    Slurm's commands are (a login node), or submit to a login node over SSH:
    Cluster("ssh", hostname="LOGIN_NODE"), or run here without Slurm: Cluster("local")
    """
    host = f"on {where}" if where else "on this machine"
    elsewhere = (
        'or run on this machine without Slurm: Cluster("local")'
        if where
        else 'or submit to a login node over SSH: Cluster("ssh", hostname="LOGIN_NODE"), '
        'or run here without Slurm: Cluster("local")'
    )
    missing = re.search(r"^LZ-NOSCONTROL=(.*)$", stdout, re.MULTILINE)
    said = " / ".join(
        text
        for line in stdout.splitlines()
        if line.startswith("LZ-SCONTROL ")
        if (text := re.sub(r"^(scontrol: )+", "", line[len("LZ-SCONTROL ") :].strip()))
    )
    if missing:
        fix = (
            "if Slurm is there, put its bin directory on the PATH of a non-login shell "
            '(env={"PATH": ...}), or check `ssh HOST which sbatch`'
            if where
            else "Run where Slurm's commands are (a login node)"
        )
        msg = (
            f"no Slurm {host}: `scontrol` is not on the PATH ({missing.group(1)}). "
            f"{fix}, {elsewhere}"
        )
    elif re.search(
        r"contact slurm controller|Connection refused|connect failure|timed out",
        said,
        re.IGNORECASE,
    ):
        msg = (
            f"Slurm's controller (slurmctld) cannot be reached from {where or 'this machine'} "
            f"(scontrol: {said}): it may be down or restarting; check with `scontrol ping` "
            f"and try again (or ask the cluster's administrators), {elsewhere}"
        )
    elif said:
        msg = (
            f"Slurm is installed {host} but not configured (scontrol: {said}): point "
            f'SLURM_CONF at the cluster\'s slurm.conf (env={{"SLURM_CONF": ...}}) or run on a '
            f"host of the cluster, {elsewhere}"
        )
    else:
        detail = " ".join((stdout + " " + stderr).split())[:300]
        msg = (
            f"cannot read Slurm's configuration {host} (scontrol show config gave: "
            f"{detail or 'nothing'}): run where Slurm's commands are, {elsewhere}"
        )
    return NoSlurmError(msg)


def _minutes(text: str | None) -> int | None:
    if text is None or text.upper() in ("NONE", "UNLIMITED", "INFINITE", "N/A"):
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


def _int_or_none(text: str | None) -> int | None:
    return int(text) if text is not None and text.isdigit() else None


def parse_cluster_facts(text: str) -> ClusterFacts:
    r"""Partitions from ``LZ-PART``-prefixed ``scontrol show partition -o`` lines and
    ``DefMemPerCPU`` from an ``LZ-CONF``-prefixed ``scontrol show config`` line (the one
    parser of partition facts: the probe's and :data:`COST_PROBE`'s).

    >>> f = parse_cluster_facts("LZ-PART PartitionName=a Default=YES DefaultTime=00:10:00 "
    ...                         "MaxTime=UNLIMITED DefMemPerCPU=200\n"
    ...                         "LZ-PART PartitionName=b DefaultTime=NONE MaxTime=1-00:00:00\n"
    ...                         "LZ-CONF DefMemPerCPU            = 100\n")
    >>> f.partition(None).default_time_min, f.partitions["b"].max_time_min
    (10, 1440)
    >>> f.partitions["a"].def_mem_per_cpu_mb, f.def_mem_per_cpu_mb
    (200, 100)
    """
    parts: dict[str, PartitionFacts] = {}
    conf: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("LZ-PART "):
            fields = dict(f.split("=", 1) for f in line[8:].split() if "=" in f)
            name = fields.get("PartitionName")
            if name:
                parts[name] = PartitionFacts(
                    name=name,
                    default=fields.get("Default") == "YES",
                    default_time_min=_minutes(fields.get("DefaultTime")),
                    max_time_min=_minutes(fields.get("MaxTime")),
                    def_mem_per_cpu_mb=_int_or_none(fields.get("DefMemPerCPU")),
                )
        elif line.startswith("LZ-CONF "):
            m = re.match(r"(\w+)\s*=\s*(\S+)", line[8:])
            if m:
                conf[m.group(1)] = m.group(2)
    return ClusterFacts(parts, _int_or_none(conf.get("DefMemPerCPU")))


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


# --------------------------------------------------------------------------- expected start


_TEST_ONLY_RE = re.compile(r"Job \d+ to start at (\S+)")


def parse_test_only(text: str) -> Start:
    """Slurm's ``sbatch --test-only`` output -> :class:`Start`.

    >>> s = parse_test_only("sbatch: Job 12 to start at 2026-12-02T05:15:26 using 1 "
    ...                     "processors on nodes vm in partition debug")
    >>> s.when.isoformat(), s.text[:38]
    ('2026-12-02T05:15:26', 'Job 12 to start at 2026-12-02T05:15:26')
    >>> parse_test_only("sbatch: error: invalid partition specified: nope\\n"
    ...                 "allocation failure: Invalid partition name specified").when is None
    True
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    words = " / ".join(ln.removeprefix("sbatch: ") for ln in lines) or "no answer from sbatch"
    m = _TEST_ONLY_RE.search(text)
    if m is None:
        return Start(None, words)
    try:
        when = datetime.datetime.fromisoformat(m.group(1))
    except ValueError:
        return Start(None, words)
    return Start(when, words)


def start_query_script(flags: Mapping[str, Sequence[str]]) -> str:
    """One script: ``sbatch --test-only`` per array job (flags quoted; a trivial
    ``--wrap`` stands in for the job script), each answer marked.

    >>> print(start_query_script({"aj0": ["--time=3", "--job-name=a b"]}).splitlines()[-1])
    echo LZ-START aj0; sbatch --test-only --time=3 '--job-name=a b' --wrap=true 2>&1
    """
    q = shlex.quote
    lines = []
    for aj, fl in flags.items():
        args = " ".join(q(f) for f in fl)
        lines.append(f"echo LZ-START {q(aj)}; sbatch --test-only {args} --wrap=true 2>&1")
    return "\n".join(lines)


def split_starts(text: str) -> dict[str, Start]:
    out: dict[str, Start] = {}
    chunks = re.split(r"^LZ-START (\S+)\n", text, flags=re.MULTILINE)
    for aj, body in zip(chunks[1::2], chunks[2::2], strict=True):
        out[aj] = parse_test_only(body)
    return out
