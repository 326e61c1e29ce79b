"""On-cluster retries (docs/reliability.md#retries-on-the-cluster, docs/usage.md#escalation):
a guard job beside each array job whose task retries resubmits the elements lost for
infrastructure reasons (node failure, preemption that cancels, out of memory, time limit),
on the cluster, with the client gone. Real Slurm: the acct cluster (cgroup memory) and the
many-node site (tests/cluster/site.sh)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lazyslurm import Cluster, Run, submit, task
from lazyslurm.backends.slurm.render import submission
from lazyslurm.backends.packaging.base import Launch
from lazyslurm.errors import InvalidOptionError, OptionTypeError
from lazyslurm.graph.resources import Resources
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.store import RunLayout

TESTS = Path(__file__).resolve().parent


# --------------------------------------------------------------------------- options


def test_escalation_options_are_checked_when_the_task_is_decorated():
    """on_oom/on_timeout: numbers > 1, with retries; max_mem: a size, with on_oom, not
    below mem. Each mistake is a clear error before anything is submitted."""
    r = Resources.from_options(mem="100M", retries=2, on_oom=2, max_mem="1G", on_timeout=1.5)
    assert (r.on_oom, r.on_timeout, r.max_mem_mb, r.guarded) == (2.0, 1.5, 1024, True)
    with pytest.raises(InvalidOptionError, match="on_oom=2.0 needs retries"):
        task(on_oom=2.0)(print)
    with pytest.raises(InvalidOptionError, match="greater than 1"):
        task(retries=1, on_timeout=0.5)(print)
    with pytest.raises(OptionTypeError, match="on_oom"):
        task(retries=1, on_oom="2x")(print)
    with pytest.raises(InvalidOptionError, match="max_mem=1024M caps on_oom"):
        task(retries=1, max_mem="1G")(print)
    with pytest.raises(InvalidOptionError, match="below mem"):
        task(retries=1, on_oom=2.0, mem="2G", max_mem="1G")(print)
    assert not Resources.from_options(time=3).guarded


def test_a_guarded_array_job_is_submitted_with_its_guard_and_dependents_wait_for_it():
    """The submission script: the guard right after its array job (afterany), dependents
    afterok on the guard, both ids reported."""
    a = ArrayJob("aj0", "f", ("a", "b"), Resources(retries=2, partition="p"))
    b = ArrayJob("aj1", "g", ("c", "d"), Resources(), dependencies=(("aftercorr", "aj0"),))
    lay = RunLayout("/w/runs/r1")
    todo = submission([a, b], run_id="r1", layout=lay, defaults=None,
                      launches={"aj0": Launch("/p/python"), "aj1": Launch("/p/python")})  # fmt: skip
    script = todo.files["submit.sh"].decode()
    assert '"--dependency=afterany:${aj0}" -- "$run_dir/jobs/aj0.guard.sh" "${aj0}" 1' in script
    assert '"--dependency=afterok:${aj0_g}"' in script and "aftercorr" not in script
    assert "aj0.guard=${aj0_g}" in script and "--partition=p" in script
    guard = todo.files["jobs/aj0.guard.sh"].decode()
    assert "-m lazyslurm.backends.slurm.retry /w/runs/r1 aj0" in guard


# --------------------------------------------------------------------------- acct cluster


@task(time=2, retries=1)
def plus_one(x: int) -> int:
    return x + 1


@task(time=2)
def total(xs: list[int]) -> int:
    return sum(xs)


@pytest.mark.slurm
def test_nothing_lost_the_guard_lets_the_dependents_run(cluster_env, tmp_path):
    """Every element leaves its result: the guard exits 0 at once, writes no record, and
    the dependent runs."""
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    c = Cluster("slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5)
    with c:
        run = submit(total(plus_one.map(range(4))), cluster=c)
        (out,) = run.result()
        guard_id = run.handle.job_ids["aj0.guard"]
    assert out == sum(range(1, 5))
    layout = RunLayout.of(run.id, tmp_path / "work")
    assert not os.path.exists(layout.retries_dir)
    (log,) = Path(layout.root, "logs").glob("aj0.guard_*.out")
    assert "left its outcome" in log.read_text() and guard_id in log.name
