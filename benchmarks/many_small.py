#!/usr/bin/env python
"""Many small elements: 1,000 / 10,000 / 100,000 no-op elements and a fan-in, side by side.

    LAZYSLURM_TEST_CLUSTER_MAX_ARRAY=1001 LAZYSLURM_TEST_CLUSTER_MAX_JOBS=10000 \\
    LAZYSLURM_TEST_CLUSTER_MIN_JOB_AGE=300 LAZYSLURM_TEST_CLUSTER_TASK=none \\
    LAZYSLURM_TEST_CLUSTER_DIR=/tmp/lz-limits LAZYSLURM_TEST_CLUSTER_PORT_BASE=47900 \\
    LAZYSLURM_TEST_CLUSTER_SSH_PORT=2239 bash tests/cluster/start.sh
    . /tmp/lz-limits/env.sh
    python benchmarks/many_small.py [--sizes 1000,10000,100000] [--rows packed,unpacked,raw]

On a cluster with Slurm's default limits (MaxArraySize=1001, MaxJobCount=10000), each
size runs, where the limits allow:

- ``lazyslurm unpacked``: ``noop.map(range(n))`` + ``total(...)`` fan-in, one Slurm
  element per element (chunked into arrays of 1001; not run when over MaxJobCount, which
  Slurm would refuse);
- ``lazyslurm pack="auto"``: the same with ``pack="auto"`` (fits one array job);
- ``raw floor``: ``sbatch --array=0-(n-1) --wrap 'python -c pass'`` (arrays of 1001),
  timed until squeue shows none of them;
- ``dask-jobqueue`` (``--rows dask``, if installed): ``SLURMCluster`` with two one-core
  workers, scheduler on loopback, ``client.map`` + ``sum``.

Reported: makespan (compute() call to result), client time (build + plan + submit, and
the client's CPU time over the whole run), client peak RSS, Slurm jobs (array elements),
sbatch calls and status polls.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import seed_patterns as sp

from benchmarks import noop_tasks
from lazyslurm import Cluster, submit, task

PY = sys.executable
noop = task(time="00:01:00", mem="50M", cpus_per_task=1)(noop_tasks.noop)


@task(time="00:05:00", mem="500M")
def total(xs: list[Any]) -> int:
    return len(xs)


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def lazyslurm_row(n: int, packed: bool, tag: str) -> dict[str, Any]:
    cluster = Cluster(
        "slurm", workdir=sp.OUT / "many_small" / tag, python=PY, env={"SLURM_CONF": sp.conf(False)}
    )
    c0, t0 = cpu_s(), time.perf_counter()
    with cluster:
        items = noop.map(range(n), pack="auto" if packed else None)
        run = submit(total(items))
        submitted = time.perf_counter() - t0
        (count,) = run.result()
        makespan = time.perf_counter() - t0
        b = cluster.backend
    assert count == n, count
    jobs = sum(aj.slurm_size for aj in run.array_jobs)
    return {
        "makespan": makespan,
        "client_submit": submitted,
        "client_cpu": cpu_s() - c0,
        "rss": rss_mb(),
        "jobs": jobs,
        "sbatch": b.stats["sbatch"],
        "polls": b.stats["polls"],
    }


def raw_row(n: int) -> dict[str, Any]:
    env = sp.slurm_env(False)
    t0 = time.perf_counter()
    ids = []
    for start in range(0, n, 1001):
        size = min(1001, n - start)
        out = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "-p",
                "debug",
                "-o",
                "/dev/null",
                "-e",
                "/dev/null",
                f"--array=0-{size - 1}",
                "--mem=50M",
                "--wrap",
                f"{PY} -c pass",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ids.append(out.strip().split(";")[0])
    joined = ",".join(ids)
    while subprocess.run(
        ["squeue", "-h", "-t", "PD,R,CG,CF,S", "-j", joined, "-o", "%i"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip():
        time.sleep(0.1)
    return {"makespan": time.perf_counter() - t0, "jobs": n, "sbatch": len(ids)}


def dask_row(n: int) -> dict[str, Any]:
    from dask.distributed import Client
    from dask_jobqueue import SLURMCluster

    os.environ["SLURM_CONF"] = sp.conf(False)  # dask-jobqueue calls sbatch itself
    t0 = time.perf_counter()
    cluster = SLURMCluster(
        cores=1,
        processes=1,
        memory="500MB",
        walltime="00:10:00",
        queue="debug",
        scheduler_options={"host": "127.0.0.1"},
        python=PY,
        # the workers' slurm-*.out files, not in the checkout
        log_directory=tempfile.mkdtemp(prefix="lz-dask-logs-"),
    )
    cluster.scale(2)
    with Client(cluster) as client:
        futures = client.map(noop_tasks.noop, range(n), pure=False)
        result = client.submit(lambda xs: len(xs), futures).result()
    cluster.close()
    assert result == n
    return {"makespan": time.perf_counter() - t0, "jobs": 2, "sbatch": 2}


def fmt(r: dict[str, Any] | None, k: str, f: str = ".2f") -> str:
    if r is None:
        return "> MaxJobCount"
    v = r.get(k)
    return "-" if v is None else format(v, f) if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--rows", default="packed,unpacked,raw")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = args.rows.split(",")
    sp.ENV.update(sp.cluster_env())
    conf = Path(sp.conf(False)).read_text()
    limits = {
        k: v
        for line in conf.splitlines()
        if "=" in line
        for k, v in [line.split("=", 1)]
        if k in ("MaxArraySize", "MaxJobCount", "TaskPlugin")
    }
    print(
        f"# many_small.py {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} cores; "
        f"{limits}; load average {os.getloadavg()}",
        flush=True,
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = []
    for n in sizes:
        for row in rows:
            label = {
                "packed": 'lazyslurm pack="auto"',
                "unpacked": "lazyslurm unpacked",
                "raw": "raw floor (sbatch --array, python -c pass)",
                "dask": "dask-jobqueue SLURMCluster (2 x 1 core)",
            }[row]
            max_jobs = int(limits.get("MaxJobCount", 10**9))
            if row in ("unpacked", "raw") and n + 1 > max_jobs:
                out.append((n, label, None))
                continue
            sp.wait_quiet(max_s=20)
            if row in ("packed", "unpacked"):
                r = lazyslurm_row(n, row == "packed", f"{stamp}-{row}-{n}")
            elif row == "raw":
                r = raw_row(n)
            else:
                r = dask_row(n)
            print(f"#   n={n} {label}: {r}", file=sys.stderr, flush=True)
            out.append((n, label, r))
    floor = {n: r["makespan"] for n, label, r in out if r and label.startswith("raw")}
    table = []
    for n, label, r in out:
        ratio = f"{r['makespan'] / floor[n]:.2f}" if r and n in floor else "-"
        table.append(
            [
                n,
                label,
                fmt(r, "makespan"),
                ratio,
                fmt(r, "client_submit"),
                fmt(r, "client_cpu"),
                fmt(r, "rss", ".0f"),
                fmt(r, "jobs"),
                fmt(r, "sbatch"),
                fmt(r, "polls"),
            ]
        )
    print(
        sp.table(
            [
                "n",
                "what",
                "makespan s",
                "x raw floor",
                "client to submitted s",
                "client CPU s",
                "client peak RSS MB",
                "Slurm jobs",
                "sbatch",
                "polls",
            ],
            table,
        )
    )
    print(f"# load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
