#!/usr/bin/env python
"""The seed's pattern 1 (split of unknown length -> map -> merge) three ways on one Slurm.

    bash tests/cluster/start.sh && . /tmp/lazyslurm-test-cluster/env.sh
    python benchmarks/dynamic.py [--reps 5]

1. seed: the tutorial's client-side waits (``examples.parallelization_patterns.
   fan_out_fan_in``): the client submits a stage, waits, fetches, submits the next;
2. dynamic: one lazy graph without ``nout`` (``merge(process.map(split(...)))``); the map
   is expanded on the cluster by the runner, dependents are re-pointed with ``scontrol
   update``; the client only submits (then it could leave; here it stays to time the end);
3. workflow: the example ``@workflow`` ``examples.workflows.fan_out_fan_in``, which
   returns its graph lazily (its allocation ends at once, the runner submits the rest);
4. the alternative to re-pointing: a ``@workflow`` orchestrator that stays alive and
   waits (``compute`` inside it) while its children run.

Per way: makespan (start of the pattern's code to the result in hand), client wall time
(how long the client must stay: the whole makespan for the seed's waits; ``submit()`` for
the others), and the seconds of allocation spent orchestrating (``ElapsedRaw`` in sacct
of the element that expanded or orchestrated; 0 for the seed, whose orchestrator is the
laptop). Medians of ``--reps`` runs (min-max). The machine is shared: numbers are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)

from examples import parallelization_patterns as pp  # noqa: E402
from examples import workflows as wf  # noqa: E402
from lazyslurm import Cluster, WorkflowContext, compute, submit, workflow  # noqa: E402

TOTAL = sum(range(500))


@workflow(time="00:05:00", mem="256M")
def waiting_orchestrator(dataset: str, num_chunks: int, ctx: WorkflowContext) -> Any:
    """Pattern 1 by an orchestrator job that waits for each stage (slurm-sdk's way)."""
    chunks = compute(pp.split_dataset(dataset, num_chunks=num_chunks))[0]
    results = compute(pp.process_chunk.map(chunks))[0]
    return compute(pp.merge_results(results))[0]


def cluster(workdir: str) -> Cluster:
    conf = os.environ["LAZYSLURM_TEST_SLURM_CONF"]
    return Cluster("slurm", workdir=workdir, env={"SLURM_CONF": conf}, poll_max_s=0.5)


def orchestration_seconds(run: Any, names: tuple[str, ...]) -> float:
    """Allocation seconds of the elements that orchestrated (sacct ElapsedRaw)."""
    ids = [run.handle.job_ids[aj.id] for aj in run.array_jobs if aj.name in names]
    if not ids:
        return 0.0
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ",".join(ids), "-o", "ElapsedRaw"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": os.environ["LAZYSLURM_TEST_SLURM_CONF"]},
    ).stdout
    return float(sum(int(x) for x in out.split() if x.isdigit()))


def one(way: str) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as wd:
        t0 = time.perf_counter()
        with cluster(wd) as c:
            if way == "seed":
                final = pp.fan_out_fan_in(c)
                t = time.perf_counter() - t0
                assert final["total_sum"] == TOTAL
                return t, t, 0.0
            if way == "dynamic":
                expr, names = (
                    pp.merge_results(
                        pp.process_chunk.map(pp.split_dataset("large_dataset.csv", num_chunks=5))
                    ),
                    ("process_chunk_map",),
                )
            elif way == "workflow":
                expr, names = wf.fan_out_fan_in("large_dataset.csv", 5), ("fan_out_fan_in",)
            else:
                expr, names = (
                    waiting_orchestrator("large_dataset.csv", 5),
                    ("waiting_orchestrator",),
                )
            run = submit(expr, cluster=c)
            client = time.perf_counter() - t0
            (final,) = run.result()
            makespan = time.perf_counter() - t0
            assert final["total_sum"] == TOTAL
            time.sleep(1.0)  # let accounting record the elapsed time
            return makespan, client, orchestration_seconds(run, names)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    ways = ("seed", "dynamic", "workflow", "waiting-workflow")
    got: dict[str, list[tuple[float, float, float]]] = {w: [] for w in ways}
    for rep in range(args.reps):
        for w in ways:  # interleaved: the machine's load hits every way alike
            got[w].append(one(w))
            print(f"rep {rep} {w}: {got[w][-1]}", file=sys.stderr)

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):6.2f} ({min(xs):.2f}-{max(xs):.2f})"

    print(f"## pattern 1, split of unknown length, {args.reps} reps (medians, min-max)")
    print("| way | makespan s | client wall s | orchestrating allocation s |")
    print("|---|---|---|---|")
    for w in ways:
        ms, cl, al = zip(*got[w], strict=True)
        print(f"| {w} | {fmt(list(ms))} | {fmt(list(cl))} | {fmt(list(al))} |")
    seed_ms = statistics.median(x[0] for x in got["seed"])
    print("\nratios to the seed's client-side waits (medians):")
    for w in ways[1:]:
        ms = statistics.median(x[0] for x in got[w])
        cl = statistics.median(x[1] for x in got[w])
        print(f"  {w}: makespan x{ms / seed_ms:.2f}, client wall x{cl / seed_ms:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
