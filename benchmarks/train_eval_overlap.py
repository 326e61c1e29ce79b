#!/usr/bin/env python
"""Seed-style train-then-evaluate on a real Slurm: flush on wait against submitit, one run.

    bash tests/cluster/start.sh && . /tmp/lazyslurm-test-cluster/env.sh
    python benchmarks/train_eval_overlap.py [--reps 5] [--epochs 8] [--eval-seconds 2]

The program is ``examples/train_eval.py``: start training (``epochs`` x 0.3 s), start
evaluating a baseline (``--eval-seconds``), then wait; evaluate the new model (as long)
and compare. Measured,
each ``--reps`` times (median, min-max), wall time from the first line of the program to
the decision in hand, on the ``slurm`` backend of the accounting test cluster:

1. lazyslurm, flush on wait (the example as written, inside ``with cluster:``): all four
   jobs go to Slurm in one submission, chained by dependencies;
2. lazyslurm without the flush: the same calls outside any ``with cluster:`` block, where
   each ``wait()`` submits only what it needs (how seed-style programs ran before the
   flush: the stages one after another);
3. submitit (the peer), idiomatic: ``submit`` training and the baseline evaluation at
   once, wait for the model, ``submit`` its evaluation, compare on the client.

The machine is shared: numbers move with other users' load; the ratios of one run are
what to read.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
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

from examples import train_eval as te  # noqa: E402
from lazyslurm import Cluster  # noqa: E402

STATE = Path(os.environ.get("LAZYSLURM_TEST_CLUSTER_DIR", "/tmp/lazyslurm-test-cluster"))


def slurm_conf() -> str:
    conf = os.environ.get("LAZYSLURM_TEST_SLURM_CONF")
    if conf is None:
        path = STATE / "env.json"
        if not path.exists():
            raise SystemExit("no test cluster: run `bash tests/cluster/start.sh` first")
        conf = json.loads(path.read_text())["LAZYSLURM_TEST_SLURM_CONF"]
    return conf


def make_cluster(workdir: str) -> Cluster:
    return Cluster("slurm", workdir=workdir, env={"SLURM_CONF": slurm_conf()}, poll_max_s=0.5)


def lazyslurm_flush(workdir: str, epochs: int, eval_s: float) -> str:
    with contextlib.redirect_stdout(io.StringIO()):
        return te.run(make_cluster(workdir), epochs=epochs, eval_seconds=eval_s)["decision"]


def lazyslurm_no_flush(workdir: str, epochs: int, eval_s: float) -> str:
    cluster = make_cluster(workdir)
    train_job = te.train_model(lr=0.2, epochs=epochs)
    baseline_job = te.evaluate(te.BASELINE, eval_s)
    new_eval_job = te.evaluate(train_job, eval_s)
    decision_job = te.compare(new_eval_job, baseline_job)
    assert train_job.wait(cluster=cluster)
    train_job.get_result(cluster=cluster)
    baseline_job.get_result(cluster=cluster)
    new_eval_job.get_result(cluster=cluster)
    decision = decision_job.get_result(cluster=cluster)
    cluster.close()
    return decision


def submitit_peer(workdir: str, epochs: int, eval_s: float) -> str:
    import submitit

    executor = submitit.AutoExecutor(folder=workdir)
    executor.update_parameters(timeout_min=5, mem_gb=0.25, cpus_per_task=1)
    train = executor.submit(te.train_model.unwrapped, lr=0.2, epochs=epochs)
    baseline = executor.submit(te.evaluate.unwrapped, te.BASELINE, eval_s)
    model = train.result()
    new_eval = executor.submit(te.evaluate.unwrapped, model, eval_s).result()
    return te.compare.unwrapped(new_eval, baseline.result())


def measure(fn: Any, reps: int, epochs: int, eval_s: float) -> tuple[float, float, float]:
    times = []
    for _ in range(reps):
        with tempfile.TemporaryDirectory(prefix="lz-bench-") as tmp:
            t0 = time.perf_counter()
            decision = fn(tmp, epochs, eval_s)
            times.append(time.perf_counter() - t0)
            assert decision.startswith("keep "), decision
            print(f"  {fn.__name__}: {times[-1]:.2f} s", file=sys.stderr)
    return statistics.median(times), min(times), max(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--eval-seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    os.environ["SLURM_CONF"] = slurm_conf()  # for submitit's sbatch/sacct
    rows = [
        ("lazyslurm, flush on wait (one submission)", lazyslurm_flush),
        ("lazyslurm, no flush (a submission per wait)", lazyslurm_no_flush),
        ("submitit 1.5, submit at once", submitit_peer),
    ]
    results = {}
    for label, fn in rows:
        results[label] = measure(fn, args.reps, args.epochs, args.eval_seconds)
    train_s = args.epochs * 0.3
    print(
        f"## train ({train_s:.1f} s of work) + baseline eval ({args.eval_seconds:.1f} s), "
        f"then eval ({args.eval_seconds:.1f} s) + compare "
        f"(slurm backend, median of {args.reps}, min-max)"
    )
    print("| program | makespan s | ratio to submitit |")
    print("| --- | --- | --- |")
    peer = results[rows[2][0]][0]
    for label, (med, lo, hi) in results.items():
        print(f"| {label} | {med:.2f} ({lo:.2f}-{hi:.2f}) | {med / peer:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
