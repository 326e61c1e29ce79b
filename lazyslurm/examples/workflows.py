"""Workflows that run on the cluster, in the style of slurm-sdk's tutorials.

A ``@workflow`` is a function that orchestrates tasks from a job on the cluster: it gets
a ``WorkflowContext`` (``ctx.cluster``, ``ctx.shared_dir``, ``ctx.workflow_job_dir``).
It may wait for its children (``compute``/``wait``/``get_result`` submit from the compute
node), or return them lazily: then its own allocation ends at once and the runner submits
the children (dynamic expansion: nothing waits in a queue slot).

    python -m lazyslurm.examples.workflows                              # embedded default
    python -m lazyslurm.examples.workflows --backend slurm --partition debug
"""

from __future__ import annotations

import json
import sys
from typing import Any

try:
    from .parallelization_patterns import merge_results, parser, process_chunk, split_dataset
except ImportError:  # run as a file: its folder is on sys.path
    from parallelization_patterns import (  # type: ignore[no-redef]
        merge_results,
        parser,
        process_chunk,
        split_dataset,
    )
from lazyslurm import Cluster, WorkflowContext, compute, submit, task, workflow

# --------------------------------------------------------------------------- train + evaluate


@task(time="00:05:00", mem="256M")
def train_model(name: str, epochs: int, shared_dir: str) -> str:
    """Train one model and save its weights in the workflow's shared directory."""
    import time

    time.sleep(0.2 * epochs)  # stands for the training loop
    path = f"{shared_dir}/{name}.json"
    with open(path, "w") as fh:
        json.dump({"name": name, "weights": [epochs * 0.1] * 3}, fh)
    return path


@task(time="00:02:00", mem="256M")
def evaluate_model(checkpoint: str) -> dict[str, Any]:
    """Evaluate one saved model (runs as soon as its own training has ended)."""
    with open(checkpoint) as fh:
        model = json.load(fh)
    return {"name": model["name"], "score": round(sum(model["weights"]), 3)}


@workflow(time="00:10:00", mem="256M")
def train_and_evaluate(configs: dict[str, int], ctx: WorkflowContext) -> dict[str, Any]:
    """Train several models and evaluate each as soon as its training ends.

    Each ``evaluate_model`` depends only on its own ``train_model`` (Slurm ``aftercorr``
    when they are mapped), so a fast model is evaluated while slow ones still train. The
    workflow waits here for the scores (it holds its allocation while it waits).
    """
    names = list(configs)
    checkpoints = train_model.map([(n, configs[n], str(ctx.shared_dir)) for n in names])
    scores = compute(evaluate_model.map(checkpoints))[0]
    best = max(scores, key=lambda s: s["score"])
    return {"scores": scores, "best": best["name"], "shared_dir": str(ctx.shared_dir)}


# --------------------------------------------------------------------------- seed pattern 1


@workflow(time="00:05:00", mem="256M")
def fan_out_fan_in(dataset: str, num_chunks: int, ctx: WorkflowContext) -> Any:
    """The seed's fan-out/fan-in with a split of unknown length, as a workflow.

    The workflow returns the lazy graph instead of waiting: its allocation ends at once,
    the runner submits the graph from the compute node, and ``process_chunk`` is mapped
    over the split's chunks once they are known (no ``nout``).
    """
    chunks = split_dataset(dataset, num_chunks=num_chunks)
    return merge_results(process_chunk.map(chunks))


def main(argv: list[str] | None = None) -> int:
    p = parser("workflows", __doc__)
    p.add_argument("--backend", default="local")
    p.add_argument("--partition", default=None)
    args = p.parse_args(argv)
    opts = {"partition": args.partition} if args.partition else {}
    with Cluster(args.backend, **opts):
        run = submit(
            train_and_evaluate({"small": 1, "medium": 3, "large": 5}),
            fan_out_fan_in("large_dataset.csv", 5),
            label="examples.workflows",
        )
        models, merged = run.result()
    print(f"best model: {models['best']}  scores: {models['scores']}")
    print(f"fan-out/fan-in total: {merged['total_sum']} over {merged['total_chunks']} chunks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
