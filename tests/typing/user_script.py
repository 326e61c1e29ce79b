"""A typed user script: checked by mypy --strict and pyright (tests/test_typing.py).

``assert_type`` lines say what must be inferred; each line ending in
``# type: ignore[CODE]`` must be rejected by mypy with that error code (mypy's
``warn_unused_ignores`` fails the check if it is not) and by pyright (its
``reportUnnecessaryTypeIgnoreComment`` fails the check if it is not). Never run.
"""

from __future__ import annotations

import datetime
from typing import Any, assert_type

from lazyslurm import (
    Cluster,
    ClusterOptions,
    Job,
    JobArray,
    JobView,
    Run,
    Task,
    TaskOptions,
    compute,
    submit,
    task,
)


@task(time="00:03:00", mem="256M")
def train(lr: float, seed: int = 0) -> dict[str, float]:
    return {"lr": lr, "seed": seed, "accuracy": 1 - lr}


@task
def best(results: list[dict[str, float]]) -> dict[str, float]:
    return max(results, key=lambda r: r["accuracy"])


@task
def train_lr(lr: float) -> float:
    return lr


@task(partition="debug", time=datetime.timedelta(minutes=5), gpus=1, extra_sbatch=["--x"])
def split(n: int) -> list[int]:
    return list(range(n))


# -- tasks keep the function's signature
train_task: Task[[float, int], dict[str, float]] = train
best_task: Task[[list[dict[str, float]]], dict[str, float]] = best
assert_type(train.unwrapped(0.1, 2), dict[str, float])

# -- calls build typed jobs; lazy values may stand for the values they compute to
job = train(0.1, seed=1)
assert_type(job, Job[dict[str, float]])
sweep = train.map([{"lr": lr} for lr in (0.01, 0.1)])
assert_type(sweep, JobArray[dict[str, float]])
choice = best(sweep)
assert_type(choice, Job[dict[str, float]])
assert_type(train(job["lr"]), Job[dict[str, float]])
assert_type(best([train(0.1), train(0.2)]), Job[dict[str, float]])
lr_job: Job[float] = train_lr(0.1)
assert_type(train(lr_job, seed=1), Job[dict[str, float]])  # a Job[float] for a float
assert_type(job["lr"], JobView)
assert_type(sweep[0], Job[dict[str, float]])
assert_type(sweep[1:], JobArray[dict[str, float]])
for element in sweep:
    assert_type(element, Job[dict[str, float]])
chunks = split(5).with_nout(5)
assert_type(chunks, Job[list[int]])
train_task = train.options(mem="1G", retries=2)
train_task = train.after(job, sweep)

# -- results are typed
assert_type(job.compute(), dict[str, float])
assert_type(job.get_result(), dict[str, float])
assert_type(sweep.compute(), list[dict[str, float]])
assert_type(sweep.get_results(), list[dict[str, float]])
assert_type(compute(job), tuple[dict[str, float]])
assert_type(compute(job, sweep), tuple[dict[str, float], list[dict[str, float]]])
assert_type(
    compute(job, sweep, choice, chunks, split(2), cache=True),
    tuple[dict[str, float], list[dict[str, float]], dict[str, float], list[int], list[int]],
)
assert_type(compute(job, 3), tuple[Any, ...])
assert_type(submit(choice), Run)
assert_type(job.result(), dict[str, float])  # submitit's spelling
assert_type(sweep.result(), list[dict[str, float]])
assert_type(compute(job, cluster="sync"), tuple[dict[str, float]])  # a backend name
value: dict[str, float] = choice.compute()

# -- typed options
opts: TaskOptions = {"time": 30, "mem": "4G", "partition": "gpu"}
gpu_train = train.options(**opts)
cluster_opts: ClusterOptions = {"partition": "debug", "env": {"SLURM_CONF": "/etc/x"}}
with Cluster("slurm", **cluster_opts) as cluster:
    assert_type(cluster, Cluster)
Cluster("ssh", hostname="login", port=22, username="me", known_hosts="~/.ssh/kh")
Cluster("ssh", hostname="hpc", transport="openssh", otp_command="pass otp hpc")
Cluster("ssh", hostname="hpc", otp=lambda: "123456", control_path="~/.ssh/cm-%C")

# -- what must be rejected
train("fast")  # type: ignore[arg-type]
train()  # type: ignore[call-arg]
train(0.1, sede=1)  # type: ignore[call-arg]
train(0.1, 1, 2)  # type: ignore[call-arg]
best([1, 2])  # type: ignore[list-item]
task(tme="1:00")  # type: ignore[call-overload]
task(mem=4.5)  # type: ignore[call-overload]
train.options(timeout_min=30)  # type: ignore[call-arg]
train.options(partition=3)  # type: ignore[arg-type]
Cluster("slurm", partiton="debug")  # type: ignore[call-arg]
Cluster("ssh", hostname="hpc", transport="mosh")  # type: ignore[arg-type]
Cluster("ssh", port="22")  # type: ignore[arg-type]
wrong: str = choice.compute()  # type: ignore[assignment]
also_wrong: int = sweep.get_results()  # type: ignore[assignment]
first: str = compute(job)[0]  # type: ignore[assignment]
split(5, nout=5)  # type: ignore[call-arg]
bad_job: Job[str] = train(0.1)  # type: ignore[assignment]
Cluster("slrum")  # type: ignore[arg-type]
compute(job, cluster="slrum")  # type: ignore[call-overload]
choice.with_nout("2")  # type: ignore[arg-type]
