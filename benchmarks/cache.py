"""Re-running the seed's sweep with one changed config: what gets resubmitted.

    python benchmarks/cache.py                          # embedded local backend
    python benchmarks/cache.py --backend slurm          # Slurm on this host ($SLURM_CONF)

Compares, in one run, a re-run with ``cache=True`` against the same re-run without a
cache (what submitit or slurm-sdk do: every element again). Prints elements submitted,
array jobs (= sbatch calls on Slurm) and wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from examples import parallelization_patterns as pp
from lazyslurm import Cluster, plan, submit


def sweep(configs):
    return pp.select_best_model(pp.train_model.map(configs))


def measure(cluster: Cluster, expr) -> tuple[int, int, float]:
    """(elements submitted, array jobs, seconds) of computing expr in a fresh session."""
    with cluster:
        t0 = time.perf_counter()
        p = plan(expr)
        submit(expr).result()
        return p.nodes, len(p.array_jobs), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", choices=["local", "slurm"], default="local")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix="lazyslurm-cache-bench-")
    opts = {"poll_max_s": 0.5} if args.backend == "slurm" else {}
    if args.backend == "slurm" and "SLURM_CONF" in os.environ:
        opts["env"] = {"SLURM_CONF": os.environ["SLURM_CONF"]}

    def fresh(cache: bool) -> Cluster:
        return Cluster(args.backend, workdir=workdir, cache=cache, **opts)

    configs = pp.sweep_configs()
    changed = [*configs[:5], {**configs[5], "seed": 42}, *configs[6:]]
    rows = [
        ("first run (12 configs + select)", measure(fresh(False), sweep(configs))),
        ("re-run unchanged, cache=True", measure(fresh(True), sweep(configs))),
        ("re-run 1 config changed, cache=True", measure(fresh(True), sweep(changed))),
        ("re-run 1 config changed, no cache (peers)", measure(fresh(False), sweep(changed))),
    ]
    print(f"backend={args.backend}  store={workdir}")
    print(f"{'scenario':<44}{'elements':>9}{'arrays':>8}{'seconds':>9}")
    for name, (nodes, arrays, secs) in rows:
        print(f"{name:<44}{nodes:>9}{arrays:>8}{secs:>9.2f}")
    cached, peer = rows[2][1], rows[3][1]
    print(
        f"changed config: {cached[0]} of {peer[0]} elements resubmitted "
        f"({cached[0] - 1} training element + the selection); "
        f"time ratio cache/no-cache {cached[2] / peer[2]:.2f}"
    )


if __name__ == "__main__":
    main()
