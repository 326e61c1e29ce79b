"""A sweep to look at the terminal progress display (docs/runs.md, section 4).

    python docs/progress_demo.py              # embedded local backend, 4 workers

Two array jobs of a sweep (one failing element each) and a fan-in; each element sleeps a
little, so the bars move for about half a minute. Press Ctrl-C to see the one line that
cancelling prints. ``docs/make_progress_screenshot.py`` runs it in tmux for the pictures.
"""

from __future__ import annotations

import sys
import time

from lazyslurm import Cluster, compute, task


@task(time="00:05:00", mem="256M")
def train(lr: float, seed: int) -> float:
    time.sleep(0.4 + (seed % 3) * 0.3)
    if lr == 0.3 and seed == 7:
        raise ValueError("diverged")
    return 1 - abs(lr - 0.1) - seed / 1000


@task(time="00:05:00", mem="256M")
def evaluate(lr: float, seed: int) -> float:
    time.sleep(0.6)
    return lr * seed


@task
def best(scores: list[float]) -> float:
    return max(scores)


def main() -> int:
    configs = [(lr, seed) for lr in (0.01, 0.1, 0.3) for seed in range(16)]
    workdir = sys.argv[1] if len(sys.argv) > 1 else None
    with Cluster("local", max_workers=4, workdir=workdir):
        try:
            top, _ = compute(best(train.map(configs)), evaluate.map(configs))
        except ValueError as err:
            print(f"a task failed: {err}".splitlines()[0])
            return 1
    print(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
