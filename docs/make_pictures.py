"""Draw the pictures in docs/img/ from the seed's parallelization patterns.

Every graph is built lazily: nothing is planned on a cluster or run. From the repository
root (or with lazyslurm installed, without ``PYTHONPATH``)::

    PYTHONPATH=. python docs/make_pictures.py            # writes docs/img/*.svg
    PYTHONPATH=. python docs/make_pictures.py --png DIR  # also PNGs in DIR, to look at
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from examples.parallelization_patterns import (  # the seed's tasks, one definition
    merge_results,
    process_chunk,
    select_best_model,
    split_dataset,
    stage1_preprocess,
    stage2_transform,
    stage3_finalize,
    train_model,
)
from lazyslurm import JobArray, visualize

IMG = Path(__file__).parent / "img"


# --------------------------------------------------------------------------- the seed's tasks


# --------------------------------------------------------------------------- the patterns


def fan_out_fan_in() -> Any:
    """split -> process each chunk -> merge, as one lazy graph."""
    split = split_dataset("large_dataset.csv", num_chunks=5, nout=5)
    processed = process_chunk.map(split)  # element-wise over the split's 5 outputs
    return merge_results(processed)


def pipeline() -> JobArray:
    stage1 = stage1_preprocess.map(["data_1", "data_2", "data_3"])
    stage2 = stage2_transform.map(
        [{"data": job, "transform_type": f"transform_{i}"} for i, job in enumerate(stage1)]
    )
    return stage3_finalize.map(stage2)


def sweep_configs(n_seeds: int = 2) -> list[dict[str, Any]]:
    return [
        {"lr": lr, "batch_size": bs, "epochs": 10, "seed": seed}
        for lr in (0.001, 0.01, 0.1)
        for bs in (32, 64)
        for seed in range(n_seeds)
    ]


def sweep(configs: list[dict[str, Any]] | None = None) -> Any:
    trained = train_model.map(configs or sweep_configs())
    return select_best_model(trained)


# --------------------------------------------------------------------------- pictures


def pictures() -> dict[str, tuple[tuple[Any, ...], dict[str, Any]]]:
    """name -> (exprs, visualize options)."""
    out: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
    patterns = {"fan-out-fan-in": fan_out_fan_in(), "pipeline": pipeline(), "sweep": sweep()}
    for name, expr in patterns.items():
        for level in ("tasks", "jobs"):
            out[f"{name}-{level}"] = ((expr,), {"level": level})

    # a 10,000-element sweep: one node at level tasks, chunks of Slurm's default
    # MaxArraySize (1001) at level jobs
    big = sweep(sweep_configs(n_seeds=10_000 // 6 + 1)[:10_000])
    out["sweep-10k-tasks"] = ((big,), {"level": "tasks"})
    out["sweep-10k-jobs"] = ((big,), {"level": "jobs", "rankdir": "LR"})

    # the sweep re-run with one config changed: 11 results cached, 1 element to run
    configs = sweep_configs()
    old = train_model.map(configs)
    configs[5] = {**configs[5], "lr": 0.2}
    rerun = sweep(configs)
    out["sweep-cached-tasks"] = ((rerun,), {"level": "tasks", "cached": old})
    out["sweep-cached-jobs"] = ((rerun,), {"level": "jobs", "cached": old})

    # the fan-out pattern as it could look mid-run (illustrative states, nothing ran)
    merged = fan_out_fan_in()
    split = merged.deps[0].deps[0]
    chunks = merged.deps
    states = {split: "DONE", merged: "PENDING"}
    states.update(zip(chunks, ["DONE", "DONE", "RUNNING", "FAILED", "PENDING"], strict=True))
    out["fan-out-fan-in-states-tasks"] = ((merged,), {"level": "tasks", "states": states})
    out["fan-out-fan-in-states-jobs"] = ((merged,), {"level": "jobs", "states": states})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--png", type=Path, help="also write PNGs to this directory")
    args = parser.parse_args()
    IMG.mkdir(exist_ok=True)
    for name, (exprs, options) in pictures().items():
        visualize(*exprs, filename=IMG / f"{name}.svg", **options)
        if args.png:
            args.png.mkdir(parents=True, exist_ok=True)
            visualize(*exprs, filename=args.png / f"{name}.png", **options)
        print(IMG / f"{name}.svg")


if __name__ == "__main__":
    main()
