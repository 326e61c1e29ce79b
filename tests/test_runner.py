"""The runner: one launch per rank (srun) and the gather step, here and on the real Slurm."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lazyslurm import Cluster, submit, task
from lazyslurm.context import JobContext
from lazyslurm.errors import JobFailedError, TaskError
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import make_plan
from lazyslurm.runner import gather, run_element, run_rank
from lazyslurm.store import RunPaths, atomic_write, read_pickle


@task(ntasks=4)
def rank_info(x, job: JobContext):
    return x, job.rank, job.world_size


@task(ntasks=4, gather="all")
def every_rank(x, *, job):
    return x * 10 + job.rank


@task(ntasks=4)
def rank_two_fails(x, *, job):
    if job.rank == 2:
        raise ValueError(f"rank {job.rank} cannot do {x}")
    return x


def written(tmp_path: Path, job) -> RunPaths:
    """The run directory of a one-job plan, as the client writes it."""
    paths = RunPaths(tmp_path / "runs" / "r1")
    paths.make_dirs()
    for rel, data in encode_run(make_plan([job]), run_id="r1", outputs=[]).items():
        atomic_write(paths.root / rel, data)
    return paths


def rank_env(rank: int, world: int = 4) -> dict[str, str]:
    return {
        "SLURM_JOB_ID": "77", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0", "SLURM_NTASKS": str(world), "SLURM_TASKS_PER_NODE": str(world),
        "SLURM_JOB_NODELIST": "vm",
    }


def run_ranks(paths: RunPaths, world: int = 4, skip: tuple[int, ...] = ()) -> list[int]:
    return [run_rank(str(paths.root), "aj0", 0, rank_env(r, world)) for r in range(world)
            if r not in skip]


def test_rank_zero_value_is_the_result(tmp_path):
    """Every rank runs with its own context; rank 0's value becomes the element's result."""
    job = rank_info(5)
    paths = written(tmp_path, job)
    assert run_ranks(paths) == [0, 0, 0, 0]
    assert gather(str(paths.root), "aj0", 0, 4) == 0
    assert read_pickle(paths.result(job.key)) == (5, 0, 4)
    assert not (paths.root / "ranks" / job.key).exists()


def test_gather_all_lists_every_rank_in_rank_order(tmp_path):
    """gather="all" gives a list of every rank's value, rank 0 first."""
    job = every_rank(1)
    paths = written(tmp_path, job)
    run_ranks(paths)
    assert gather(str(paths.root), "aj0", 0, 4) == 0
    assert read_pickle(paths.result(job.key)) == [10, 11, 12, 13]


def test_a_failing_rank_fails_the_element_with_its_error_naming_the_rank(tmp_path):
    """One rank's exception becomes the element's error, its message naming the rank."""
    job = rank_two_fails(3)
    paths = written(tmp_path, job)
    assert run_ranks(paths) == [0, 0, 1, 0]
    assert gather(str(paths.root), "aj0", 0, 4) == 1
    record = read_pickle(paths.error(job.key))
    assert record["rank"] == 2 and record["type_name"] == "ValueError"
    assert record["message"] == "rank 2 cannot do 3 [on rank 2 of 4]"
    assert not paths.result(job.key).exists()


def test_a_rank_that_left_nothing_fails_the_element(tmp_path, capsys):
    """A rank killed before writing its outcome fails the element; stderr names it."""
    job = rank_info(1)
    paths = written(tmp_path, job)
    run_ranks(paths, skip=(3,))
    assert gather(str(paths.root), "aj0", 0, 4) == 1
    assert "rank(s) 3 of 4 ended without a result" in capsys.readouterr().err
    assert not paths.result(job.key).exists() and not paths.error(job.key).exists()


def test_one_process_backends_run_a_multi_rank_task_once(tmp_path):
    """Outside Slurm a multi-rank task is one process: rank 0 of 1; "all" is a list of one."""
    job = every_rank(2)
    paths = written(tmp_path, job)
    assert run_element(str(paths.root), "aj0", 0) == 0
    assert read_pickle(paths.result(job.key)) == [20]


# --------------------------------------------------------------------------- real Slurm


@pytest.fixture
def slurm(cluster_env, tmp_path):
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    with Cluster(
        "slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5
    ) as c:
        yield c


@task(ntasks=4, mem="200M", time="00:03:00")
def slurm_rank_info(x, job: JobContext):
    return x, job.rank, job.world_size, job.local_world_size, job.job_id, os.getpid()


@task(ntasks=4, mem="200M", time="00:03:00", gather="all")
def slurm_every_rank(x, *, job):
    return x, job.rank, job.local_rank, job.master_port, os.getpid()


@task(ntasks=4, mem="200M", time="00:03:00")
def slurm_rank_two_fails(x, *, job):
    if job.rank == 2:
        raise ValueError(f"rank {job.rank} gave up on {x}")
    time.sleep(30)  # the others wait at a "barrier": srun must end them
    return x


@pytest.mark.slurm
def test_four_ranks_on_slurm_return_rank_zeros_value(slurm):
    """ntasks=4 on the real Slurm: rank 0's value, from a job of world size 4, per element."""
    results = slurm_rank_info.map([1, 2]).compute(cluster=slurm)
    assert [r[:4] for r in results] == [(1, 0, 4, 4), (2, 0, 4, 4)]
    assert results[0][4] != results[1][4]  # each element is its own Slurm job


@pytest.mark.slurm
def test_four_ranks_on_slurm_gather_all(slurm):
    """gather="all" on the real Slurm: four values from four processes, one rendezvous port."""
    values = slurm_every_rank(7).compute(cluster=slurm)
    assert [v[:3] for v in values] == [(7, r, r) for r in range(4)]
    assert len({v[3] for v in values}) == 1 and len({v[4] for v in values}) == 4


@pytest.mark.slurm
def test_one_failing_rank_on_slurm_fails_the_element_naming_the_rank(slurm):
    """One failing rank of four: ValueError naming rank 2; srun ends the other ranks."""
    job = slurm_rank_two_fails(1)
    run = submit(job, cluster=slurm)
    with pytest.raises(ValueError, match=r"rank 2 gave up on 1 \[on rank 2 of 4\]") as info:
        run.result()
    assert isinstance(info.value, TaskError) and not isinstance(info.value, JobFailedError)
    _, err = run.logs(job)
    assert "task 2: Exited with exit code 1" in err and "Terminated" in err
