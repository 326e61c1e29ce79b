"""``JobContext``: a task's own job, as the node sees it (ranks, hosts, paths).

A task that declares a parameter annotated ``JobContext``, or a parameter named ``job``
that the call leaves out, receives one when it runs. The value is read from the
environment on the node (``SLURM_*``), never hashed into a key and never shipped.

Imported by the runner on every compute node: standard library only.

>>> ctx = JobContext.from_env({"SLURM_JOB_ID": "41", "SLURM_JOB_NODELIST": "gpu[01-02]",
...     "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_NTASKS": "8",
...     "SLURM_TASKS_PER_NODE": "4(x2)", "SLURM_GPUS_ON_NODE": "4"},
...     run_dir="/w/runs/r1", array_job="aj0", index=0, key="f-1", ranks=True)
>>> ctx.rank, ctx.local_rank, ctx.node_rank, ctx.world_size, ctx.local_world_size
(5, 1, 1, 8, 4)
>>> ctx.hostnames, ctx.node_name, ctx.master_addr, ctx.master_port
(('gpu01', 'gpu02'), 'gpu02', 'gpu01', 29541)
>>> env = ctx.torch_distributed_env()
>>> env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"], env["MASTER_PORT"]
('5', '1', '8', 'gpu01', '29541')
"""

from __future__ import annotations

import re
import socket
import zlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "JobContext",
    "expand_hostlist",
    "master_port_for",
    "tasks_per_node",
]

PORT_BASE = 29500  # torchrun's default port; each job gets its own above it
PORT_SPAN = 20000


def expand_hostlist(text: str) -> tuple[str, ...]:
    """Expand a Slurm node list, as ``scontrol show hostnames`` does.

    >>> expand_hostlist("gpu[01-03,7],cpu1,r[1-2]n[1-2]")
    ('gpu01', 'gpu02', 'gpu03', 'gpu7', 'cpu1', 'r1n1', 'r1n2', 'r2n1', 'r2n2')
    """
    out: list[str] = []
    for item in _split_top(text.strip()):
        if item:
            out.extend(_expand_one(item))
    return tuple(out)


def _split_top(text: str) -> list[str]:
    """Split at commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return items


def _expand_one(item: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", item)
    if m is None:
        return [item]
    head, tail = item[: m.start()], item[m.end() :]
    names = []
    for part in m.group(1).split(","):
        lo, _, hi = part.partition("-")
        if hi:
            width = len(lo)
            names += [f"{head}{n:0{width}d}" for n in range(int(lo), int(hi) + 1)]
        else:
            names.append(f"{head}{lo}")
    return [n + rest for n in names for rest in _expand_one(tail)]


def _hosts(nodelist: str, parse: Callable[[str], tuple[str, ...]]) -> tuple[str, ...]:
    """The pure parser; ``scontrol show hostnames`` only for a list it cannot read."""
    try:
        return parse(nodelist)
    except ValueError:
        import subprocess

        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return (nodelist,)
        return tuple(out.split()) or (nodelist,)


def tasks_per_node(text: str) -> tuple[int, ...]:
    """Expand ``SLURM_TASKS_PER_NODE`` (``"4(x2),3"``) into one count per node.

    >>> tasks_per_node("4(x2),3")
    (4, 4, 3)
    """
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if m:
            out += [int(m.group(1))] * int(m.group(2) or 1)
    return tuple(out)


def master_port_for(job_id: str | None, key: str = "") -> int:
    """A rendezvous port derived from the job id (every rank computes the same one).

    >>> master_port_for("1000"), master_port_for("1000") == master_port_for("1000")
    (30500, True)
    """
    if job_id and job_id.isdigit():
        return PORT_BASE + int(job_id) % PORT_SPAN
    return PORT_BASE + zlib.crc32((job_id or key).encode()) % PORT_SPAN


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    return int(value) if value.strip().isdigit() else default


def _gpu_count(text: str) -> int:
    """``"4"``, ``"a100:4"`` or ``"gpu:a100:2,gpu:v100:1"`` -> total count."""
    return sum(int(m) for m in re.findall(r"(?:^|[:,])(\d+)(?=,|$)", text))


class JobContext:
    """One rank's view of its job. Built on the node; read-only.

    Attributes: ``job_id``, ``array_job_id``, ``array_task_id``, ``rank``, ``local_rank``,
    ``node_rank``, ``world_size``, ``local_world_size``, ``num_nodes``, ``hostnames``
    (Slurm's names of the job's nodes), ``node_name`` (this rank's node),
    ``master_addr``, ``master_port``, ``gpus_per_node``, ``key``, ``run_dir``,
    ``output_path`` (the result file), ``stdout_path``, ``stderr_path``, ``shared_dir``
    (a directory of the run every element and rank may write to; the runner creates it,
    mode 0700).
    """

    __slots__ = (
        "array_job_id",
        "array_task_id",
        "gpus_per_node",
        "hostnames",
        "job_id",
        "key",
        "local_rank",
        "local_world_size",
        "master_addr",
        "master_port",
        "node_name",
        "node_rank",
        "num_nodes",
        "output_path",
        "rank",
        "run_dir",
        "shared_dir",
        "stderr_path",
        "stdout_path",
        "world_size",
    )

    def __init__(self, **fields: Any) -> None:
        missing = set(self.__slots__) - set(fields)
        if missing:
            msg = f"JobContext needs {', '.join(sorted(missing))}"
            raise TypeError(msg)
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        msg = "JobContext is read-only"
        raise AttributeError(msg)

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self.job_id!r}, rank={self.rank}/{self.world_size}, "
            f"node={self.node_rank}/{self.num_nodes}, master={self.master_addr}:"
            f"{self.master_port})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, ({name: getattr(self, name) for name in self.__slots__},))

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def torch_distributed_env(self) -> dict[str, str]:
        """The variables ``torch.distributed`` (``init_method="env://"``) and torchrun read.

        ``os.environ.update(job.torch_distributed_env())`` before
        ``torch.distributed.init_process_group()``.
        """
        return {
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "RANK": str(self.rank),
            "LOCAL_RANK": str(self.local_rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "NODE_RANK": str(self.node_rank),
            "GROUP_RANK": str(self.node_rank),
        }

    @classmethod
    def from_env(
        cls,
        env: Mapping[str, str],
        *,
        run_dir: str,
        array_job: str,
        index: int,
        key: str,
        ranks: bool = False,
        gpus_per_node: int | None = None,
        hostnames: Callable[[str], tuple[str, ...]] = expand_hostlist,
    ) -> JobContext:
        """The context of element ``index`` from a Slurm environment.

        ``ranks`` says every rank runs the task (``srun``); otherwise the job script runs
        one process, which is then rank 0 of 1 whatever ``--ntasks`` says.
        """
        job_id = env.get("SLURM_JOB_ID") or None
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
        hosts = _hosts(nodelist, hostnames) if nodelist else ()
        if not hosts:
            hosts = (socket.gethostname(),)
        num_nodes = _int(env, "SLURM_JOB_NUM_NODES", _int(env, "SLURM_NNODES", len(hosts)))
        if ranks:
            rank = _int(env, "SLURM_PROCID", 0)
            local_rank = _int(env, "SLURM_LOCALID", 0)
            node_rank = _int(env, "SLURM_NODEID", 0)
            world_size = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
            per_node = tasks_per_node(
                env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE") or ""
            )
            local_world = per_node[node_rank] if node_rank < len(per_node) else 1
        else:
            rank = local_rank = node_rank = 0
            world_size = local_world = 1
        if gpus_per_node is None:
            gpus = env.get("SLURM_GPUS_ON_NODE") or env.get("SLURM_GPUS_PER_NODE") or ""
            gpus_per_node = _gpu_count(gpus) if gpus else 0
        port_env = env.get("MASTER_PORT", "")
        return cls._make(
            run_dir=run_dir,
            array_job=array_job,
            index=index,
            key=key,
            job_id=job_id,
            array_job_id=env.get("SLURM_ARRAY_JOB_ID") or None,
            rank=rank,
            local_rank=local_rank,
            node_rank=node_rank,
            world_size=world_size,
            local_world_size=local_world,
            num_nodes=num_nodes,
            hostnames=hosts,
            # Slurm's name of this rank's node (several nodes may share one host name)
            node_name=env.get("SLURMD_NODENAME")
            or (hosts[node_rank] if node_rank < len(hosts) else hosts[0]),
            master_addr=env.get("MASTER_ADDR") or hosts[0],
            master_port=int(port_env) if port_env.isdigit() else master_port_for(job_id, key),
            gpus_per_node=gpus_per_node,
        )

    @classmethod
    def local(cls, *, run_dir: str, array_job: str, index: int, key: str) -> JobContext:
        """What a one-process job has (``local`` and ``sync`` backends)."""
        return cls._make(
            run_dir=run_dir,
            array_job=array_job,
            index=index,
            key=key,
            job_id=None,
            array_job_id=None,
            rank=0,
            local_rank=0,
            node_rank=0,
            world_size=1,
            local_world_size=1,
            num_nodes=1,
            hostnames=(socket.gethostname(),),
            node_name=socket.gethostname(),
            master_addr="127.0.0.1",
            master_port=master_port_for(None, key),
            gpus_per_node=0,
        )

    @classmethod
    def _make(cls, *, run_dir: str, array_job: str, index: int, key: str, **f: Any) -> JobContext:
        from lazyslurm.store import RunLayout

        layout = RunLayout(run_dir.rstrip("/"))
        return cls(
            **f,
            array_task_id=index,
            key=key,
            run_dir=layout.root,
            output_path=layout.result(key),
            stdout_path=layout.log(array_job, index, "out"),
            stderr_path=layout.log(array_job, index, "err"),
            shared_dir=layout.shared_dir,
        )


def _rebuild(fields: dict[str, Any]) -> JobContext:
    return JobContext(**fields)
