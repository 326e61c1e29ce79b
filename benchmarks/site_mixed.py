#!/usr/bin/env python
"""A mixed run on the test site with the client gone, one node killed and one
preemption mid-run (issue 22, "Measure"): every result must be right.

    source /tmp/lazyslurm-test-cluster/env.sh     # the site is started with the clusters
    python benchmarks/site_mixed.py [--sweep 1000]

One ``submit`` (a child process SIGKILLed right after it) holds the seed's three patterns
(fan-out/fan-in with a split of unknown length, the 3-stage pipeline, the 12-config
sweep), a 4 x 20 element-wise pipeline and a 1,000-element sweep with its fan-in
(``pack="auto"``). Every task runs on the preemptible ``low`` partition
(``PreemptMode=REQUEUE``) under Slurm's default ``JobRequeue=1`` (Slurm requeues what a
dead node or a preemption stopped; on-cluster retries are ``tests/test_retries.py``'s).
Once elements run, the node
of one of them is killed (``slurmd`` gone: ``NODE_FAIL`` after ~30 s) and a ``high`` job
preempts another node; the killed node comes back once the run is over. A new client then attaches to the run
and compares every value with the same graphs computed in-process.

It also counts the controller calls the run made (sbatch, squeue/sacct status queries,
scontrol, scancel: the run's ``calls`` file, written by the client and by the guard jobs
on the nodes), per 1,000 elements, and compares the status queries with what
snakemake's Slurm executor and Nextflow do on busy sites: one status query per run at
most every 20 s (snakemake's ``seconds_between_status_checks``; Nextflow's
``queueStatInterval`` is 1 min by default).

The site's QOS ``capped`` (root's default) caps queued jobs at 20 and running ones at 10:
this run needs more, so it is also fed in under the cap by feeder jobs
(docs/reliability.md, "Submit caps"), in arrays of at most 10 (``max_array_size=10``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from fixtures_site import Site  # noqa: E402

from lazyslurm import Cluster, Run, compute, task  # noqa: E402
from lazyslurm.examples import parallelization_patterns as pp  # noqa: E402

RETRY: dict = {}  # Slurm's JobRequeue=1 requeues what a dead node or a preemption stopped


@task(time=5, mem="100M", **RETRY)
def step(x: int, stage: int) -> int:
    time.sleep(1.5)
    return x * 10 + stage


@task(time=5, mem="100M", **RETRY)
def sample(x: int) -> int:
    time.sleep(0.05)
    return x * x


@task(time=5, mem="100M", **RETRY)
def total(xs: list) -> int:
    return sum(xs)


def graphs(n_sweep: int) -> tuple:
    """The run's outputs: the seed's three patterns, a 4 x 20 pipeline, a sweep."""
    o = RETRY
    split = pp.split_dataset.options(**o)("large_dataset.csv", 5)
    fan = pp.merge_results.options(**o)(pp.process_chunk.options(**o).map(split))
    s1 = pp.stage1_preprocess.options(**o).map(["data_1", "data_2", "data_3"])
    s2 = pp.stage2_transform.options(**o).map(
        [{"data": j, "transform_type": f"transform_{i}"} for i, j in enumerate(s1)]
    )
    pipe = pp.stage3_finalize.options(**o).map(s2)
    sweep = pp.select_best_model.options(**o)(pp.train_model.options(**o).map(pp.sweep_configs()))
    chain = step.map([(x, 1) for x in range(20)])
    for stage in (2, 3, 4):
        chain = step.map([(j, stage) for j in chain])
    big = total(sample.options(pack="auto").map(range(n_sweep)))
    return fan, pipe, sweep, chain, big


CHILD = """
import json, os, signal, sys
sys.path.insert(0, {here!r})
import site_mixed as m
from lazyslurm import Cluster, submit
opts = json.loads({opts!r})
run = submit(*m.graphs(opts.pop("n")), cluster=Cluster("slurm", **opts))
print(run.id, len([k for aj in run.array_jobs for k in aj.keys]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def comparable(value: object) -> object:
    """A merge result names the hosts its chunks ran on: those differ by where they ran."""
    if isinstance(value, dict):
        return {
            k: v for k, v in value.items() if k not in ("hosts_used", "merged_on", "trained_on")
        }
    return value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", type=int, default=1000)
    ap.add_argument("--kill-after", type=float, default=8.0, help="seconds after submission")
    args = ap.parse_args()
    env = {k: os.environ[k] for k in os.environ if k.startswith("LAZYSLURM_TEST_SITE_")}
    if "LAZYSLURM_TEST_SITE_CONF" not in env:
        print("no test site: source the test cluster's env.sh first", file=sys.stderr)
        return 2
    site = Site(env)
    print(f"# site_mixed.py {time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime())} UTC; "
          f"nodes {','.join(site.nodes)}; load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    seed = compute(
        pp.fan_out_fan_in_graph(), pp.pipeline_graph(), pp.parameter_sweep_graph(),
        cluster=Cluster("sync"),
    )  # fmt: skip
    chain = [(((x * 10 + 1) * 10 + 2) * 10 + 3) * 10 + 4 for x in range(20)]
    want = [comparable(v) for v in (*seed, chain, sum(x * x for x in range(args.sweep)))]
    work = Path(tempfile.mkdtemp(prefix="lz-site-mixed-"))
    try:
        opts = {"workdir": str(work), "env": site.env(), "poll_max_s": 1.0, "partition": "low",
                "probe_cache_s": 0, "max_array_size": 10, "n": args.sweep}  # fmt: skip
        code = CHILD.format(here=str(HERE), opts=json.dumps(opts))
        t0 = time.monotonic()
        child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               cwd=HERE.parent, timeout=300)  # fmt: skip
        if child.returncode != -signal.SIGKILL:
            print(child.stderr, file=sys.stderr)
            return 1
        run_id, elements = child.stdout.split()[:2]
        print(f"# submitted run {run_id} ({elements} elements) in {time.monotonic() - t0:.1f} s;"
              f" the client was SIGKILLed")  # fmt: skip
        time.sleep(args.kill_after)
        deadline = time.monotonic() + 60  # until the run's jobs run on two nodes at least
        while True:
            running = [row for row in site.run_jobs(run_id) if row[1] == "RUNNING" and row[3]]
            busy = sorted({row[3] for row in running})
            if len(busy) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        victim = busy[0] if busy else site.nodes[0]
        site.kill_node(victim)
        print(f"# {time.monotonic() - t0:.1f} s: killed node {victim} ({len(running)} running)")
        others = [n for n in busy[1:] if n != victim] or [n for n in site.nodes if n != victim]
        preemptor = site.preempt(others[0], seconds=10)
        print(f"# {time.monotonic() - t0:.1f} s: job {preemptor} on partition high preempts "
              f"{others[0]}")  # fmt: skip
        site.wait_node(victim, ("down",), timeout=120)  # NODE_FAIL for what ran there
        print(f"# {time.monotonic() - t0:.1f} s: {victim} is {site.node_state(victim)}")
        # the node comes back after the run (site.undo): a job that starts on a node at
        # the moment it returns to service may be killed "DUE TO JOB REQUEUE" and recorded
        # FAILED 0:15 before Slurm queues it again (seen here; docs/reliability.md)
        with site.cluster(work) as c:
            run = Run.attach(run_id, c)
            got = [comparable(v) for v in run.result()]
            status = run.status()
            calls = run.controller_calls or {}
        took = time.monotonic() - t0
    finally:
        site.undo()
    right = got == want
    n = int(elements)
    queries = calls.get("squeue", 0) + calls.get("sacct", 0)
    peer = took / 20
    print(f"# {took:.1f} s: run {status.state}; every result right: {right}")
    print(f"# status note: {status.note or '-'}")
    states = site.slurm("sacct", "-X", "-D", "-n", "-P", "-S", "now-1hours", "-o", "JobName,State",
                        check=False).stdout.splitlines()  # fmt: skip
    seen: dict[str, int] = {}
    for line in states:
        name, _, state = line.partition("|")
        if name.startswith(f"lz-{run_id}-"):
            seen[state.split()[0]] = seen.get(state.split()[0], 0) + 1
    print(f"# Slurm's records of the run's elements (sacct -D): {seen}")
    print()
    print("| what | lazyslurm | per 1,000 elements | snakemake / Nextflow practice |")
    print("|---|---|---|---|")
    print(f"| elements | {n} | | |")
    for kind in sorted(calls):
        print(f"| {kind} calls | {calls[kind]} | {1000 * calls[kind] / n:.1f} | |")
    print(f"| status queries (squeue + sacct) | {queries} | {1000 * queries / n:.1f} | "
          f"{peer:.0f} (one per 20 s of the run's {took:.0f} s) |")  # fmt: skip
    total_calls = sum(calls.values())
    print(f"| all controller calls | {total_calls} | {1000 * total_calls / n:.1f} | |")
    print(json.dumps({"right": right, "took_s": round(took, 1), "calls": calls}))
    return 0 if right else 1


if __name__ == "__main__":
    sys.exit(main())
