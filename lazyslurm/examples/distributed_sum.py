"""A two-rank, training-style task: every rank computes a partial sum, rank 0 the total.

Each configuration is one Slurm job of two processes (``ntasks=2``: the job script starts
the function on both ranks with ``srun``). Every rank sums its stride of the data and
writes its partial into the run's ``shared_dir``; rank 0 waits for all of them (a
barrier through the shared file system) and returns the total, which becomes the
element's result. The three configurations are one ``map``: one array job of three
elements.

    python -m lazyslurm.examples.distributed_sum                     # local: each job is one rank
    python -m lazyslurm.examples.distributed_sum --backend slurm     # two ranks per job (srun)

With torch, the same function would call
``os.environ.update(job.torch_distributed_env())`` and
``torch.distributed.init_process_group("gloo")`` instead of the files below.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from lazyslurm import Cluster, JobContext, task

try:
    from .parallelization_patterns import parser
except ImportError:  # run as a file: its folder is on sys.path
    from parallelization_patterns import parser  # type: ignore[no-redef]

CONFIGS = [
    {"n": 1_000, "scale": 1},
    {"n": 10_000, "scale": 2},
    {"n": 100_000, "scale": 3},
]


def expected_total(n: int, scale: int) -> int:
    """What every configuration must return, computed in one process."""
    return scale * sum(range(n))


def barrier_gather(job: JobContext, name: str, value: Any, timeout_s: float = 120) -> list[Any]:
    """Every rank's ``value``, in rank order, once all ranks have written theirs.

    Files in ``job.shared_dir`` (one directory per element) stand in for a collective:
    each rank writes its value atomically, then waits for the others' files.
    """
    where = os.path.join(job.shared_dir, job.key, name)
    os.makedirs(where, mode=0o700, exist_ok=True)
    mine = os.path.join(where, f"{job.rank}.json")
    with open(mine + ".tmp", "w") as fh:
        json.dump(value, fh)
    os.replace(mine + ".tmp", mine)  # the others never see a half-written file
    files = [os.path.join(where, f"{r}.json") for r in range(job.world_size)]
    deadline = time.monotonic() + timeout_s
    while not all(os.path.exists(f) for f in files):
        if time.monotonic() > deadline:
            missing = [r for r, f in enumerate(files) if not os.path.exists(f)]
            msg = f"rank {job.rank}: ranks {missing} never reached the barrier {name!r}"
            raise TimeoutError(msg)
        time.sleep(0.05)
    values = []
    for f in files:
        with open(f) as fh:
            values.append(json.load(fh))
    return values


@task(time="00:05:00", mem="256M", ntasks=2)
def distributed_sum(n: int, scale: int, job: JobContext) -> dict[str, Any]:
    """Sum ``scale * i`` for ``i < n``: rank r takes every world_size-th ``i`` from r."""
    partial = sum(scale * i for i in range(job.rank, n, job.world_size))
    partials = barrier_gather(job, "partials", partial)
    return {
        "n": n,
        "scale": scale,
        "total": sum(partials),
        "partials": partials,
        "world_size": job.world_size,
        "hosts": list(job.hostnames),
    }


def run(cluster: Cluster) -> list[dict[str, Any]]:
    """The three configurations, as one map, on ``cluster``."""
    with cluster:
        return distributed_sum.map(CONFIGS).compute()


def main(argv: list[str] | None = None) -> int:
    p = parser("distributed_sum", __doc__)
    p.add_argument("--backend", choices=["local", "sync", "slurm"], default="local")
    p.add_argument("--partition", default=None, help="Slurm partition (--backend slurm)")
    p.add_argument("--workdir", default=None, help="run directories (default ~/.lazyslurm)")
    args = p.parse_args(argv)
    options: dict[str, Any] = {"workdir": args.workdir}
    if args.partition:
        options["partition"] = args.partition
    for result in run(Cluster(args.backend, **options)):
        ok = result["total"] == expected_total(result["n"], result["scale"])
        print(
            f"n={result['n']:>7} scale={result['scale']} total={result['total']:>14} "
            f"from {result['world_size']} rank(s) {result['partials']} "
            f"{'ok' if ok else 'WRONG'}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
