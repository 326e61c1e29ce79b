"""Train, then evaluate, in the seed's style, with the two stages overlapping.

The program reads like slurm-sdk's parallel train + eval workflow: it starts training,
starts evaluating the current baseline, and only then waits. Inside ``with cluster:``
the first ``wait()`` submits every job built so far in one submission, so training and
the baseline evaluation run at the same time; the new model's evaluation and the
comparison follow, chained by Slurm dependencies. No client needs to stay alive between
the stages; the waits only read results.

    python -m lazyslurm.examples.train_eval                        # embedded local backend
    python -m lazyslurm.examples.train_eval --backend slurm --partition debug
"""

from __future__ import annotations

import sys
from typing import Any, Dict  # noqa: UP035 - the seed's own spelling

try:
    from .parallelization_patterns import add_cluster_arguments, make_cluster, parser
except ImportError:  # run as a file: its folder is on sys.path
    from parallelization_patterns import (  # type: ignore[no-redef]
        add_cluster_arguments,
        make_cluster,
        parser,
    )
from lazyslurm import Cluster, task


@task(time="00:05:00", mem="256M", cpus_per_task=1)
def train_model(lr: float, epochs: int, seconds_per_epoch: float = 0.3) -> Dict[str, Any]:  # noqa: UP006
    """Train (simulated): one line of output per epoch, then the trained model."""
    import time

    start = time.time()
    loss = 1.0
    for epoch in range(epochs):
        time.sleep(seconds_per_epoch)
        loss *= 1 - lr
        print(f"epoch {epoch + 1}/{epochs} loss={loss:.4f}", flush=True)
    return {"name": f"model-lr{lr}", "loss": loss, "started": start, "ended": time.time()}


@task(time="00:05:00", mem="256M", cpus_per_task=1)
def evaluate(model: Dict[str, Any], seconds: float = 0.3) -> Dict[str, Any]:  # noqa: UP006
    """Evaluate a model (simulated): its accuracy on a held-out set."""
    import time

    start = time.time()
    time.sleep(seconds)
    accuracy = round(1 - model["loss"] / 2, 4)
    return {"model": model["name"], "accuracy": accuracy, "started": start, "ended": time.time()}


@task(time="00:01:00", mem="256M")
def compare(new: Dict[str, Any], old: Dict[str, Any]) -> str:  # noqa: UP006
    """Which model to keep."""
    best, other = (new, old) if new["accuracy"] >= old["accuracy"] else (old, new)
    return f"keep {best['model']} (accuracy {best['accuracy']} vs {other['accuracy']})"


BASELINE = {"name": "baseline", "loss": 0.5}


def run(
    cluster: Cluster, lr: float = 0.2, epochs: int = 4, eval_seconds: float = 0.3
) -> Dict[str, Any]:  # noqa: UP006
    """Start training and the baseline's evaluation, then wait: they overlap."""
    with cluster:
        train_job = train_model(lr=lr, epochs=epochs)
        baseline_job = evaluate(BASELINE, eval_seconds)  # independent of training
        new_eval_job = evaluate(train_job, eval_seconds)  # after training, by dependency
        decision_job = compare(new_eval_job, baseline_job)

        # the first wait submits all four jobs at once, then waits for training
        if not train_job.wait():
            print(f"training job {train_job.id} ended {train_job.get_status()}")
            print(train_job.get_stderr())
            raise SystemExit(1)
        model = train_job.get_result()
        print(f"trained {model['name']}: loss {model['loss']:.4f} (job {train_job.id})")

        baseline = baseline_job.get_result()
        new_eval = new_eval_job.get_result()
        decision = decision_job.get_result()
        overlap = baseline["started"] < model["ended"]
        print(f"baseline accuracy {baseline['accuracy']}, new {new_eval['accuracy']}: {decision}")
        print(f"baseline evaluated while training ran: {overlap}")
    return {
        "model": model,
        "baseline": baseline,
        "new": new_eval,
        "decision": decision,
        "overlap": overlap,
    }


def main(argv: list[str] | None = None) -> int:
    p = parser("train_eval", __doc__)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--epochs", type=int, default=4)
    add_cluster_arguments(p)
    args = p.parse_args(argv)
    run(make_cluster(args), args.lr, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
