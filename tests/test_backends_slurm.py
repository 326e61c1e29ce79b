"""The Slurm backend: status parsing, and everything end to end on the real test cluster.

Real-cluster tests (marker ``slurm``) run on ``tests/cluster/start.sh``'s clusters: one with
slurmdbd accounting (``sacct``), one without (``squeue``), through the ``slurm`` backend
(subprocess) and the ``ssh`` backend (paramiko to a non-root user on loopback).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from examples import parallelization_patterns as pp
from lazyslurm import Cluster, compute, plan, submit, task
from lazyslurm.backends.base import CANCELLED, DONE, FAILED, PENDING, RUNNING
from lazyslurm.backends.slurm.status import parse_array_ids, parse_status
from lazyslurm.errors import (
    BackendError,
    ClusterConfigError,
    ElementCancelledError,
    ElementNeverStartsError,
    ElementOutOfMemoryError,
    ElementTimeoutError,
    ResourceLimitError,
    RunDirectoryGoneError,
    SSHHostKeyError,
    SubmissionError,
    TaskError,
)

REPO = Path(__file__).resolve().parent.parent
EXPECTED_PIPELINE = [f"final_transform_{i}(preprocessed_data_{i + 1})" for i in range(3)]


# --------------------------------------------------------------------------- parsing


def test_parse_array_ids_ranges_and_throttles():
    """Array ids expand ranges, lists and throttle suffixes."""
    assert parse_array_ids("7_[1-3,9%2]") == ("7", [1, 2, 3, 9])
    assert parse_array_ids("7_4") == ("7", [4])
    assert parse_array_ids("7") == ("7", None)


def test_parse_status_sacct_and_squeue():
    """sacct rows carry exit codes and pending reasons, squeue rows reasons; CANCELLED by 0."""
    rows = parse_status("5_0|CANCELLED by 0|0:15\n5_1|TIMEOUT|0:0\n5_2.batch|FAILED|1:0\n", False)
    assert rows[("5", 0)].state == "CANCELLED" and rows[("5", 1)].exit_code == "0:0"
    assert ("5", 2) not in rows
    rows = parse_status("6_[0-1]|PENDING|DependencyNeverSatisfied\n", True)
    assert rows[("6", 1)].reason == "DependencyNeverSatisfied"
    rows = parse_status("7_0|PENDING|0:0|BadConstraints\n7_1|FAILED|1:0|JobHeldUser\n", False)
    assert rows[("7", 0)].reason == "BadConstraints" and rows[("7", 1)].reason == ""


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def env(cluster_env):
    return cluster_env


def slurm_cluster(env, tmp_path, accounting=True, **kw) -> Cluster:
    conf = env["LAZYSLURM_TEST_SLURM_CONF" if accounting else "LAZYSLURM_TEST_SLURM_CONF_NOACCT"]
    return Cluster(
        "slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5, **kw
    )


@pytest.fixture(scope="module")
def remote_site(env):
    """lazyslurm + cloudpickle + attrs copied for the SSH user (as a user would install them):
    only for tests of ``packaging="inherit"``; the others need nothing on the cluster."""
    import attr
    import attrs
    import cloudpickle

    from lazyslurm.backends.shell import SSHShell

    files: dict[str, bytes] = {}
    for pkg in (
        REPO / "lazyslurm",
        Path(cloudpickle.__file__).parent,
        Path(attr.__file__).parent,
        Path(attrs.__file__).parent,
    ):
        for path in pkg.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"{pkg.name}/{path.relative_to(pkg)}"] = path.read_bytes()
    shell = SSHShell(
        env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(env["LAZYSLURM_TEST_SSH_PORT"]),
        username=env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
    )
    # one site per test session: concurrent sessions (other checkouts) must not overwrite
    # each other's copy of lazyslurm while their jobs import it
    site = f"lazyslurm-test-site-{os.getpid()}-{random.randrange(16**8):08x}"
    with shell:
        shell.put_files(f"~/{site}", files)
        home = shell.home()
    yield f"{home}/{site}"
    with shell:
        shell.run(f"rm -rf -- ~/{shlex.quote(site)}")


def ssh_options(env) -> dict:
    return dict(
        hostname=env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(env["LAZYSLURM_TEST_SSH_PORT"]),
        username=env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
    )


def ssh_cluster(env, **kw) -> Cluster:
    """Over SSH with the default packaging (by value): nothing installed on the cluster."""
    return Cluster("ssh", poll_max_s=0.5, **ssh_options(env), **kw)


def inherit_cluster(env, remote_site, **kw) -> Cluster:
    """Over SSH with ``packaging="inherit"``: the hand-installed site on the cluster."""
    return Cluster(
        "ssh",
        packaging="inherit",
        python="/usr/bin/python3",
        setup=[f"export PYTHONPATH={shlex.quote(remote_site)}"],
        poll_max_s=0.5,
        **ssh_options(env),
        **kw,
    )


@pytest.fixture(params=["slurm", "slurm-noacct", "ssh"])
def any_cluster(request, env, tmp_path):
    """The same tests through each way of reaching Slurm."""
    if request.param == "ssh":
        c = ssh_cluster(env)
    else:
        c = slurm_cluster(env, tmp_path, accounting=request.param == "slurm")
    yield c
    c.close()


def conf_of(cluster: Cluster, env) -> str:
    """The slurm.conf a test cluster talks to (the SSH user's is the accounting one)."""
    return cluster.backend_options.get("env", {}).get(
        "SLURM_CONF", env["LAZYSLURM_TEST_SLURM_CONF"]
    )


def squeue(conf: str, *args: str) -> str:
    return subprocess.run(
        ["squeue", "-h", *args],
        env={**os.environ, "SLURM_CONF": conf},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def live_jobs_of_run(conf: str, run_id: str, settle_s: float = 30.0) -> list[str]:
    """Jobs of a run still pending or running (by the run id in their names), once those
    merely COMPLETING (cancelled, their processes being reaped) had up to ``settle_s``."""
    deadline = time.monotonic() + settle_s
    while True:
        out = squeue(conf, "-t", "PENDING,RUNNING,CONFIGURING,COMPLETING", "-o", "%i|%j|%T|%r")
        live = [line for line in out.splitlines() if run_id in line]
        if not any("|COMPLETING|" in line for line in live) or time.monotonic() > deadline:
            return live
        time.sleep(0.5)


def best_of_sweep(configs: list[dict] | None = None) -> dict:
    results = []
    for c in configs or pp.sweep_configs():
        random.seed(c["seed"])
        results.append({**c, "accuracy": 0.5 + (c["lr"] * 10) * random.random()})
    return max(results, key=lambda r: r["accuracy"])


# --------------------------------------------------------------------------- slow job first


@task(time=1)
def sleeper(seconds):
    import time

    time.sleep(seconds)
    return seconds


@pytest.fixture(scope="module")
def timeout_run(env, tmp_path_factory):
    """Submitted when the module starts (Slurm enforces limits in whole minutes, checked
    every 30 s): the TIMEOUT test at the end of the module collects it."""
    c = slurm_cluster(env, tmp_path_factory.mktemp("timeout"))
    run = submit(sleeper(600), cluster=c)
    yield run
    run.cancel()


@pytest.mark.slurm
def test_starts_timeout_job_early(timeout_run):
    """(Submits the TIMEOUT job now; test_timeout collects it at the end.)"""
    assert timeout_run.id


# --------------------------------------------------------------------------- seed patterns


@pytest.mark.slurm
def test_seed_fan_out_fan_in(any_cluster):
    """Pattern 1 as the seed writes it: 500 items summed to 124750."""
    final = pp.fan_out_fan_in(any_cluster)
    assert (final["total_chunks"], final["total_items"], final["total_sum"]) == (5, 500, 124750)


@pytest.mark.slurm
def test_seed_pipeline(any_cluster):
    """Pattern 2 as the seed writes it, Job objects inside map items."""
    assert pp.pipeline(any_cluster) == EXPECTED_PIPELINE


@pytest.mark.slurm
def test_seed_parameter_sweep(any_cluster):
    """Pattern 3 as the seed writes it: the best config equals the max computed directly."""
    assert pp.parameter_sweep(any_cluster) == best_of_sweep()


@pytest.mark.slurm
def test_lazy_patterns_in_one_compute(any_cluster):
    """All three patterns fully lazy, in one compute: one submission, one sbatch per array."""
    exprs = (pp.fan_out_fan_in_graph(), pp.pipeline_graph(), pp.parameter_sweep_graph())
    with any_cluster:
        p = plan(*exprs)
        fan, pipe, best = compute(*exprs)
        stats = any_cluster.backend.stats
    assert fan["total_sum"] == 124750 and pipe == EXPECTED_PIPELINE and best == best_of_sweep()
    assert stats["submits"] == 1 and stats["sbatch"] == len(p.array_jobs) == 8


@pytest.mark.slurm
def test_lazy_pipeline_is_one_submission_round(env, tmp_path):
    """The 4-stage pipeline is submitted at once, element-wise: every job is in the queue
    before the first one ends, and results come back in one transfer."""

    @task
    def step(x):
        return x + 1

    arr = step.map(range(5))
    for _ in range(3):
        arr = step.map(arr)
    c = slurm_cluster(env, tmp_path)
    with c:
        p = plan(arr)
        assert [k for aj in p.array_jobs for k, _ in aj.dependencies] == ["aftercorr"] * 3
        trips = c.backend.shell.round_trips
        run = submit(arr)
        assert c.backend.shell.round_trips - trips <= 2  # staging + the submission script
        (values,) = run.result()
        assert c.backend.stats["sbatch"] == 4
    assert values == [4, 5, 6, 7, 8]
    ids = ",".join(run.handle.job_ids.values())
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", ids, "-o", "JobID,Submit,Start,End"],
        env={**os.environ, "SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows = [line.split("|") for line in out.splitlines() if line]
    assert max(r[1] for r in rows) <= min(r[3] for r in rows)


NASTY = "we ird $(touch PWNED) `touch PWNED2`; 'q' \"dq\" &|<>*?{a,b}"


@pytest.mark.slurm
def test_shell_metacharacters_reach_slurm_verbatim(env, tmp_path, monkeypatch):
    """A work dir, arguments and a job name full of shell metacharacters run as given and
    execute nothing."""
    monkeypatch.chdir(tmp_path)
    tagged = pp.stage2_transform.options(job_name="x.y+z-1")
    c = Cluster(
        "slurm",
        workdir=tmp_path / NASTY,
        env={"SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]},
        poll_max_s=0.5,
    )
    with c:
        out = tagged.map([{"data": NASTY, "transform_type": NASTY}]).compute()
        job = tagged.map([{"data": NASTY, "transform_type": NASTY}])[0]
        assert job.logs() == ("", "")
    assert out == [f"{NASTY}({NASTY})"]
    assert not list(tmp_path.rglob("PWNED*")) and not Path("PWNED").exists()
    assert (tmp_path / NASTY / "runs").is_dir()


# --------------------------------------------------------------------------- failures


@task
def maybe_fail(i):
    if i == 1:
        msg = f"element {i} is bad"
        raise KeyError(msg)
    return i


@pytest.mark.slurm
def test_task_error_cancels_dependents_and_leaves_nothing(any_cluster, env):
    """A raising task re-raises with its type; its dependents are cancelled by Slurm."""
    a = maybe_fail.map(range(3))
    b = pp.stage3_finalize.map(a)
    with any_cluster:
        run = submit(pp.merge_results(b))
        with pytest.raises(KeyError, match="element 1 is bad") as info:
            run.result()
    assert isinstance(info.value, TaskError) and "dependent task" in str(info.value)
    snap = run.last_snapshot
    assert snap.states["aj1"][1] == CANCELLED and snap.states["aj2"] == [CANCELLED]
    assert live_jobs_of_run(conf_of(any_cluster, env), run.id) == []


@task
def fail_one_sleep_the_rest(i):
    if i == 1:
        msg = "element 1 fails"
        raise ValueError(msg)
    time.sleep(60)
    return i


@pytest.mark.slurm
def test_a_failure_raises_at_once_and_cancels_the_rest(env, tmp_path):
    """The first failure raises without waiting for siblings; the rest is cancelled."""
    c = slurm_cluster(env, tmp_path, accounting=False)
    with c:
        run = submit(fail_one_sleep_the_rest.map(range(3)))
        with pytest.raises(ValueError, match="element 1 fails") as info:
            run.result()
    assert run.last_snapshot.states["aj0"] == [CANCELLED, FAILED, CANCELLED]
    assert len(info.value.cancelled) == 2
    # siblings stopped by fail-fast are no dependents of the failure (issue 20)
    assert "dependent task" not in str(info.value), info.value
    assert "2 other unfinished task(s) of the run cancelled" in str(info.value)
    assert live_jobs_of_run(conf_of(c, env), run.id) == []


@task(mem="50M")
def hog():
    data = bytearray(400 * 1024 * 1024)
    for i in range(0, len(data), 4096):
        data[i] = 1
    return len(data)


@pytest.mark.slurm
def test_out_of_memory(env, tmp_path):
    """Going over mem= ends OUT_OF_MEMORY: a MemoryError with the Slurm details."""
    with slurm_cluster(env, tmp_path), pytest.raises(ElementOutOfMemoryError) as info:
        hog().compute()
    err = info.value
    assert isinstance(err, MemoryError)
    assert err.state == "OUT_OF_MEMORY" and err.array_index == 0 and err.job_id


@pytest.mark.slurm
def test_scancel_of_a_running_element(env, tmp_path):
    """scancel of one running element: ElementCancelledError naming the element."""
    c = slurm_cluster(env, tmp_path)
    with c:
        run = submit(sleeper.map([0, 60]))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            snap = run.poll()
            if snap.states["aj0"][1] == RUNNING:
                break
            time.sleep(0.2)
        job_id = run.handle.job_ids["aj0"]
        subprocess.run(
            ["scancel", f"{job_id}_1"],
            check=True,
            env={**os.environ, "SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]},
        )
        with pytest.raises(ElementCancelledError) as info:
            run.result()
    assert info.value.array_index == 1 and info.value.state == "CANCELLED"
    assert run.last_snapshot.states["aj0"] == [DONE, CANCELLED]


@pytest.mark.slurm
@pytest.mark.parametrize("accounting", [True, False], ids=["sacct", "squeue"])
def test_scancel_of_a_pending_dependent_blames_no_healthy_upstream(env, tmp_path, accounting):
    """a -> b; b's Slurm job is cancelled from outside while it waits for a, which runs
    fine: the error is b's own cancellation (ElementCancelledError), never a failure of
    a, which fail-fast stopped afterwards (issue 20: the scancel was blamed on a)."""
    c = slurm_cluster(env, tmp_path, accounting=accounting)
    conf = conf_of(c, env)
    a = sleeper(30)
    b = nap_then(a, 0)
    with c:
        run = submit(b)
        wait_until_running(run)
        assert run.poll().states["aj1"] == [PENDING]
        subprocess.run(
            ["scancel", run.handle.job_ids["aj1"]],
            check=True,
            env={**os.environ, "SLURM_CONF": conf},
        )
        with pytest.raises(ElementCancelledError) as info:
            run.result()
    err = info.value
    assert err.key == b.key and err.state == "CANCELLED", err
    assert "cancelled from outside" in str(err) and "dependent task" not in str(err)
    assert [x.key for x in err.cancelled] == [a.key]  # stopped by fail-fast, not a cause
    assert live_jobs_of_run(conf, run.id) == []


@pytest.mark.slurm
def test_bad_partition_is_refused_and_leaves_nothing(env, tmp_path):
    """A bad partition fails submission with Slurm's message and nothing left queued."""
    bad = pp.stage3_finalize.options(partition="nosuchpart")
    good = pp.stage1_preprocess.map(["x", "y"])
    c = slurm_cluster(env, tmp_path)
    with c, pytest.raises(SubmissionError, match=r"(?s)Invalid partition.*--partition=nosuchpart"):
        compute(bad.map(good))
    runs = list((tmp_path / "work" / "runs").iterdir())
    assert len(runs) == 1
    assert live_jobs_of_run(conf_of(c, env), runs[0].name) == []


@pytest.mark.slurm
def test_refused_at_release_names_the_array_job_its_options_and_slurms_words(env, tmp_path):
    """A job Slurm refuses only at release is named, with Slurm's words and its options."""
    good = pp.stage1_preprocess.map(["x", "y"])
    bad = pp.stage3_finalize.options(extra_sbatch=["--cpus-per-task=1000"]).map(good)
    after = pp.stage3_finalize.map(bad)  # bad is held (only the last array job is not)
    c = slurm_cluster(env, tmp_path, accounting=False)
    with c, pytest.raises(SubmissionError) as info:
        compute(after)
    msg = str(info.value)
    assert "array job aj1 (stage3_finalize)" in msg, msg
    assert "partition configuration not available" in msg
    assert "--cpus-per-task=1000" in msg
    runs = list((tmp_path / "work" / "runs").iterdir())
    assert live_jobs_of_run(conf_of(c, env), runs[0].name) == []


@pytest.mark.slurm
def test_a_per_user_submit_limit_is_probed_from_accounting(env, tmp_path):
    """MaxSubmitJobsPerUser of a QOS (sacctmgr, asked in the background of the probe)
    bounds what one run may queue: a run over it is refused before submission."""
    conf = env["LAZYSLURM_TEST_SLURM_CONF"]
    run_env = {**os.environ, "SLURM_CONF": conf}
    qos = f"lzprobe{os.getpid()}"
    add = ["sacctmgr", "-i", "add", "qos", qos, "MaxSubmitJobsPerUser=7"]
    subprocess.run(add, env=run_env, check=True, capture_output=True)
    try:
        c = slurm_cluster(env, tmp_path)
        with c:
            assert c.backend.pack_limits().max_jobs == 7
            assert c.backend.facts.job_limits["MaxSubmitJobs"] == 7
            with pytest.raises(ResourceLimitError, match="MaxSubmitJobs"):
                pp.stage1_preprocess.map([str(i) for i in range(8)]).compute()
        assert not (tmp_path / "work" / "runs").exists()
    finally:
        subprocess.run(["sacctmgr", "-i", "delete", "qos", qos], env=run_env, capture_output=True)


@pytest.mark.slurm
def test_over_a_partition_time_limit_is_refused_before_submission(env, tmp_path):
    """time= over the partition's MaxTime would pend forever: refused, nothing submitted."""
    too_long = pp.stage1_preprocess.options(partition="short", time="00:10:00")
    c = slurm_cluster(env, tmp_path)
    with c, pytest.raises(SubmissionError, match="allows at most 5 min"):
        too_long.map(["a"]).compute()
    assert not (tmp_path / "work" / "runs").exists()
    with c:  # within the limit it runs
        assert pp.stage1_preprocess.options(partition="short", time=5).map(["a"]).compute() == [
            "preprocessed_a"
        ]


@pytest.mark.slurm
@pytest.mark.parametrize(
    ("option", "value", "limit", "most"),
    [
        ("mem", "10T", "21694M", "21694M of memory"),
        ("cpus_per_task", 1000, "64 CPUs", "64 CPUs"),
    ],
)
def test_more_than_the_largest_node_is_refused_before_submission(
    env, tmp_path, option, value, limit, most
):
    """mem/cpus over the partition's largest node: refused naming option, value, limit,
    and the most one may ask for ("64 CPUs", not "64 CPUs of CPUs")."""
    too_big = pp.stage1_preprocess.options(**{option: value})
    c = slurm_cluster(env, tmp_path, accounting=False)
    with c, pytest.raises(ResourceLimitError) as info:
        too_big.map(["a"]).compute()
    msg = str(info.value)
    assert f"{option}=" in msg and limit in msg and "'debug'" in msg and "nothing was" in msg
    assert f"ask for at most {most} or choose" in msg and info.value.limit == limit
    assert isinstance(info.value, SubmissionError) and isinstance(info.value, ValueError)
    assert not (tmp_path / "work" / "runs").exists()


@pytest.mark.slurm
@pytest.mark.parametrize("accounting", [False, True], ids=["squeue", "sacct"])
@pytest.mark.parametrize(
    ("flag", "reason"),
    [("--mem=10T", "BadConstraints"), ("--nodes=5", "PartitionNodeLimit")],
)
def test_a_pending_reason_that_never_clears_is_a_failure(env, tmp_path, accounting, flag, reason):
    """A job pending for a reason that never clears fails with the reason and a fix."""
    stuck = pp.stage1_preprocess.options(extra_sbatch=[flag]).map(["a", "b"])
    after = pp.stage3_finalize.map(stuck)
    c = slurm_cluster(env, tmp_path, accounting=accounting)
    with c:
        run = submit(after)
        with pytest.raises(ElementNeverStartsError) as info:
            run.result()
    msg = str(info.value)
    assert reason in msg and "never" in msg and info.value.state == "PENDING", msg
    assert live_jobs_of_run(conf_of(c, env), run.id) == []


@pytest.mark.slurm
def test_array_larger_than_max_array_size_is_chunked(env, tmp_path):
    """MaxArraySize is read from the cluster (100 here): 150 elements go in 2 chunks."""
    c = slurm_cluster(env, tmp_path, accounting=False)
    with c:
        arr = pp.stage1_preprocess.map([f"d{i}" for i in range(150)])
        p = plan(arr)
        assert c.max_array_size() == 100
        assert [aj.size for aj in p.array_jobs] == [100, 50]
        assert arr.compute() == [f"preprocessed_d{i}" for i in range(150)]


@pytest.mark.slurm
def test_ctrl_c_cancels_the_run(env, tmp_path):
    """KeyboardInterrupt during compute cancels the run's jobs with one scancel."""

    class Interrupt:
        def on_submit(self, run):
            self.run = run

        def on_state(self, node, old, new):
            if new == RUNNING:
                raise KeyboardInterrupt

    cb = Interrupt()
    c = slurm_cluster(env, tmp_path)
    with c, pytest.raises(KeyboardInterrupt):
        compute(sleeper.map([30, 30]), callbacks=[cb])
    time.sleep(1.0)
    assert live_jobs_of_run(conf_of(c, env), cb.run.id) == []


@task
def long_naps(n):
    """Returns a lazy list: its elements (that sleep long) are submitted from the node."""
    return [sleeper(300) for _ in range(n)]


@task
def how_many(xs):
    return len(xs)


@pytest.mark.slurm
@pytest.mark.parametrize("via", ["slurm", pytest.param("ssh", marks=pytest.mark.ssh)])
def test_cancel_reaches_subgraphs_no_poll_has_read(env, tmp_path, via):
    """Run.cancel() right after a task submitted a subgraph from its compute node, before
    the client polled (so the handle lacks those jobs): nothing of the run stays queued
    (issue 20: 4 subgraph jobs stayed RUNNING). The cancel goes by the run's job names."""
    c = slurm_cluster(env, tmp_path) if via == "slurm" else ssh_cluster(env)
    conf = conf_of(c, env)
    with c:
        run = submit(how_many(long_naps(3)))
        deadline = time.monotonic() + 120
        while not any("-aj0_0_aj0-" in ln for ln in live_jobs_of_run(conf, run.id, 0)):
            assert time.monotonic() < deadline, "the subgraph was never submitted"
            time.sleep(0.3)
        assert [aj.id for aj in run.array_jobs] == ["aj0", "aj1"]  # not read by the client
        run.cancel()
    assert live_jobs_of_run(conf, run.id) == []


@pytest.mark.slurm
def test_logs_of_an_element(any_cluster):
    """job.logs() returns one element's stdout and stderr from the cluster."""

    @task
    def chatty(x):
        import sys

        print(f"out {x}")
        print(f"err {x}", file=sys.stderr)
        return x

    job = chatty.map([1, 2])[1]
    with any_cluster:
        assert job.compute() == 2
        out, err = job.logs()
    assert "out 2" in out and "err 2" in err


@pytest.mark.slurm
def test_visualize_a_finished_and_a_failed_run(any_cluster):
    """After a real run, its picture colours nodes by state (done, failed, cancelled)."""
    a = maybe_fail.map(range(3))
    with any_cluster:
        run = submit(pp.stage3_finalize.map(a))
        with pytest.raises(KeyError):
            run.result()
        svg = run.visualize(level="jobs").pipe(format="svg").decode()
    assert "maybe_fail" in svg and "stage3_finalize" in svg and "aftercorr" in svg
    for colour in ("#b2f2bb", "#ffa8a8", "#ffd8a8"):  # done, failed, cancelled
        assert colour in svg


# --------------------------------------------------------------------------- SSH specifics


@pytest.mark.slurm
def test_ssh_unknown_host_key_is_rejected(env, tmp_path):
    """An unknown host key is refused before anything runs, saying how to trust it."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    opts = {**ssh_options(env), "known_hosts": str(empty)}
    with Cluster("ssh", **opts), pytest.raises(SSHHostKeyError, match="known_hosts"):
        pp.stage1_preprocess("x").compute()


@pytest.mark.slurm
def test_ssh_inherit_without_lazyslurm_is_a_clear_error(env):
    """packaging='inherit': the cluster's python must import lazyslurm and cloudpickle; the
    fix names the distribution to install (`lazyslurm` on the package index is another)."""
    match = r"cannot import lazyslurm and cloudpickle.*`pip install lazyslurm-dag cloudpickle`"
    with (
        Cluster("ssh", packaging="inherit", python="/usr/bin/python3", **ssh_options(env)),
        pytest.raises(ClusterConfigError, match=match),
    ):
        pp.stage1_preprocess("x").compute()


@pytest.mark.slurm
def test_ssh_inherit_runs_with_the_installed_site(env, remote_site):
    """packaging='inherit' uses what is installed on the cluster, stages no code, and
    starts that installation's runner by path (found by the probe)."""
    c = inherit_cluster(env, remote_site)
    with c:
        run = submit(pp.pipeline_graph())
        assert run.result() == (EXPECTED_PIPELINE,)
        assert c.backend.packager.mode_of(None) == "inherit"
        runner = f"{remote_site}/lazyslurm/runner/__main__.py"
        assert c.backend.packager.target.interpreter.runner == runner
        script = c.backend.read_files([f"runs/{run.id}/jobs/aj0.sh"])
        assert runner in next(iter(script.values())).decode()


@pytest.mark.slurm
def test_ssh_round_trips_per_action(env):
    """Over SSH: submission is 2 round trips (upload + submit), a poll 1, results 1."""
    c = ssh_cluster(env)
    with c:
        c.max_array_size()  # the session's one probe
        shell = c.backend.shell
        before = shell.round_trips
        run = submit(pp.pipeline_graph())
        assert shell.round_trips - before == 2
        run.wait()
        polls = c.backend.stats["polls"]
        before = shell.round_trips
        assert run.result() == (EXPECTED_PIPELINE,)
        assert shell.round_trips - before == 1 + (c.backend.stats["polls"] - polls)


# --------------------------------------------------------------------------- detached runs

SSH_CHILD = """
import json, os, signal, sys
sys.path.insert(0, {repo!r})
from lazyslurm import Cluster, submit, task
from examples import parallelization_patterns as pp
opts = json.loads({opts!r})
cluster = Cluster("ssh", **opts)
run = submit(pp.pipeline_graph(), pp.parameter_sweep_graph(), cluster=cluster, label="killed")
print(run.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.slurm
def test_ssh_attach_after_the_submitter_was_killed(env):
    """A process submits over SSH and is SIGKILLed at once; another process attaches and
    collects every result (Slurm ran the DAG without any client)."""
    import json
    import sys

    from lazyslurm import Run, runs

    opts = ssh_options(env)
    code = SSH_CHILD.format(repo=str(REPO), opts=json.dumps(opts))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == -9, proc.stderr
    run_id = proc.stdout.split()[0]
    c = ssh_cluster(env)
    with c:
        run = Run.attach(run_id, c)
        assert set(run.handle.job_ids) == {aj.id for aj in run.array_jobs}
        assert run.result() == (EXPECTED_PIPELINE, best_of_sweep())
        assert run.status().state == "DONE"
        listed = {r.id: r for r in runs(c)}
    assert listed[run_id].label == "killed" and listed[run_id].state == "DONE"


@pytest.mark.slurm
def test_ssh_cache_across_sessions(env):
    """cache=True over SSH: a new session resubmits only the changed element."""
    import uuid

    configs = pp.sweep_configs()
    store = f"~/lazyslurm-tests/{uuid.uuid4().hex}"  # a store of this test's own
    with ssh_cluster(env, workdir=store):
        compute(pp.select_best_model(pp.train_model.map(configs)))
    configs[0] = {**configs[0], "seed": 99}
    c = ssh_cluster(env, cache=True, workdir=store)
    with c:
        p = plan(pp.select_best_model(pp.train_model.map(configs)))
        assert [(aj.name, aj.size) for aj in p.array_jobs] == [
            ("train_model", 1),
            ("select_best_model", 1),
        ]
        (best,) = compute(pp.select_best_model(pp.train_model.map(configs)))
        assert c.backend.stats["sbatch"] == 2
    assert best == best_of_sweep(configs)


@pytest.mark.slurm
def test_example_command_line_on_slurm(env, monkeypatch, capsys, tmp_path):
    """The example's command line runs the seed's pipeline on Slurm (--backend slurm)."""
    monkeypatch.setenv("SLURM_CONF", env["LAZYSLURM_TEST_SLURM_CONF"])
    argv = [
        "--backend",
        "slurm",
        "--pattern",
        "pipeline",
        "--partition",
        "debug",
        "--workdir",
        str(tmp_path),
    ]
    assert pp.main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("final_transform_2(preprocessed_data_3)") == 2
    assert "aftercorr aj0" in out


@pytest.mark.slurm
def test_command_line_over_ssh(env, tmp_path, monkeypatch, capsys, private_home):
    """The lazyslurm command, through an ssh profile: runs, status, logs, viz of a real run."""
    from lazyslurm.cli import main

    store = f"~/lazyslurm-tests/cli-{tmp_path.name}"
    opts = ssh_options(env)
    (tmp_path / "lazyslurm.toml").write_text(
        "[profiles.lab]\n"
        'backend = "ssh"\n'
        f'hostname = "{opts["hostname"]}"\nport = {opts["port"]}\n'
        f'username = "{opts["username"]}"\nkey_filename = "{opts["key_filename"]}"\n'
        f'known_hosts = "{opts["known_hosts"]}"\nworkdir = "{store}"\n'
    )
    monkeypatch.chdir(tmp_path)
    with Cluster.from_profile("lab") as c:
        run = submit(maybe_fail.map(range(3)), progress=False)
        with pytest.raises(KeyError):
            run.result()
        c.close()
    capsys.readouterr()
    assert main(["runs", "--cluster", "lab"]) == 0
    assert run.id in capsys.readouterr().out
    # result() cancelled the unfinished rest: Slurm's records of that lag a few seconds
    deadline = time.monotonic() + 30
    while main(["status", run.id, "--cluster", "lab"]) != 1 and time.monotonic() < deadline:
        time.sleep(1)
    assert main(["status", run.id, "--cluster", "lab"]) == 1
    assert "FAILED" in capsys.readouterr().out
    bad = run.array_jobs[0].keys[1]
    assert main(["logs", run.id, bad, "--stderr", "--cluster", "lab"]) == 0
    assert "element 1 is bad" in capsys.readouterr().out
    assert main(["viz", run.id, "-o", str(tmp_path / "run.svg"), "--cluster", "lab"]) == 0
    assert "maybe_fail" in (tmp_path / "run.svg").read_text()


# --------------------------------------------------------------------------- outages


@pytest.mark.slurm
def test_a_run_directory_deleted_mid_run_is_named(env, tmp_path):
    """Deleting the run directory mid-run: 'run directory ... is gone', the jobs cancelled."""
    c = slurm_cluster(env, tmp_path, accounting=False)
    with c:
        run = submit(nap_then.map([(i, 30) for i in range(2)]))
        wait_until_running(run)
        run_dir = tmp_path / "work" / "runs" / run.id
        shutil.rmtree(run_dir)
        with pytest.raises(RunDirectoryGoneError, match=f"run directory {run_dir} is gone"):
            run.result()
    assert live_jobs_of_run(conf_of(c, env), run.id) == []


@task
def nap_then(x, seconds):
    time.sleep(seconds)
    return x


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="stopping and restarting the test cluster's daemons needs root"
)


def restart_test_cluster() -> None:
    """Re-run the idempotent start.sh: it restarts whichever daemon died (as root)."""
    subprocess.run(
        ["bash", str(REPO / "tests" / "cluster" / "start.sh")],
        check=True,
        capture_output=True,
        timeout=300,
    )


def stop_by_pid_file(pid_file: Path) -> None:
    """SIGTERM the daemon named by ``pid_file`` and wait until it is gone."""
    pid = int(pid_file.read_text().split()[0])
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_until_running(run, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if RUNNING in run.poll().states["aj0"]:
            return
        time.sleep(0.2)


@pytest.mark.slurm
@pytest.mark.parametrize("accounting", [True, False], ids=["sacct", "squeue"])
def test_polls_of_a_local_run_ask_slurm_at_most_every_two_seconds(env, tmp_path, accounting):
    """On this host a poll within 2 s of the last status query reads only the store (the
    files are the first truth; sacct costs CPU the jobs need): the result files that
    land meanwhile are seen, Slurm is asked again after 2 s."""
    c = slurm_cluster(env, tmp_path, accounting=accounting)
    with c:
        run = submit(nap_then.map([(0, 0), (1, 4)]))
        run.poll()
        asked = c.backend.stats["polls"]
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            snap = run.poll()
            time.sleep(0.1)
        assert c.backend.stats["polls"] == asked
        while DONE not in snap.states["aj0"] and time.monotonic() < deadline + 60:
            time.sleep(0.1)
            snap = run.poll()
        assert snap.states["aj0"][0] == DONE
        time.sleep(2.1)
        run.poll()
        assert c.backend.stats["polls"] > asked
        assert run.result() == ([0, 1],)


@pytest.mark.slurm
@needs_root
def test_a_slurmctld_outage_mid_run_is_survived(env, tmp_path, caplog):
    """slurmctld stopped mid-run (squeue fails): polls keep the last states, the run ends right."""
    conf = Path(env["LAZYSLURM_TEST_SLURM_CONF_NOACCT"])
    xs = nap_then.map([(i, 8) for i in range(2)])
    c = slurm_cluster(env, tmp_path, accounting=False, unreachable_timeout_s=300)
    with c:
        run = submit(pp.stage3_finalize.map(xs))
        wait_until_running(run)
        try:
            # other test sessions' start.sh may restart the controller at any moment: stop
            # it again until one poll has seen the outage (a poll within 2 s of the last
            # status query reads only the store: Slurm is asked by a later one)
            pid_file = conf.parents[1] / "run" / "slurmctld.pid"
            for _ in range(20):
                if pid_file.exists():
                    stop_by_pid_file(pid_file)
                snap = run.poll()  # squeue fails after ~9 s ("Unable to contact ...")
                if snap.unreachable_since is not None:
                    break
                time.sleep(0.5)
            assert snap.unreachable_since is not None
            assert "slurm" in snap.unreachable_reason.lower(), snap.unreachable_reason
        finally:
            restart_test_cluster()
        assert run.result() == (["final_0", "final_1"],)
    assert "unreachable since" in caplog.text


def sshd_pids_of(shell) -> list[int]:
    """The sshd processes serving ``shell``'s connection (its socket, from ``ss -tnp``)."""
    port = shell._client.get_transport().sock.getsockname()[1]
    out = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, check=True).stdout
    pids: set[int] = set()
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[4].endswith(f":{port}") and "sshd" in line:
            pids.update(int(p) for p in re.findall(r"pid=(\d+)", line))
    return sorted(pids)


@pytest.mark.slurm
@pytest.mark.ssh
@needs_root
def test_an_ssh_drop_during_a_poll_is_survived(env, caplog):
    """sshd killed during a poll and restarted: polls retry, the log says why, the run ends."""
    c = ssh_cluster(env, unreachable_timeout_s=300)
    listener = Path(env["LAZYSLURM_TEST_SSH_KEY"]).parent / "sshd.pid"

    def outage(victims: list[int]) -> None:
        time.sleep(1.0)  # result() is polling by now: over SSH a poll is nearly always running
        try:
            stop_by_pid_file(listener)
            for pid in victims:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(3.0)
        finally:
            restart_test_cluster()

    with c:
        run = submit(nap_then.map([(i, 8) for i in range(2)]))
        wait_until_running(run)
        victims = sshd_pids_of(c.backend.shell)
        assert victims
        killer = threading.Thread(target=outage, args=(victims,))
        killer.start()
        try:
            assert run.result() == ([0, 1],)
        finally:
            killer.join()
    lines = [r.getMessage() for r in caplog.records if "unreachable since" in r.getMessage()]
    assert lines, caplog.text
    reason = lines[0].split(": ", 1)[1]
    assert not reason.startswith(";") and "cannot start a command on" not in reason[-3:], reason


@pytest.mark.slurm
@pytest.mark.ssh
def test_unreachable_for_longer_than_the_timeout_is_a_clear_error(env):
    """A cluster unreachable past unreachable_timeout_s: BackendError saying since when."""
    c = ssh_cluster(env, unreachable_timeout_s=2)
    with c:
        run = submit(nap_then.map([(i, 30) for i in range(2)]))
        shell = c.backend.shell
        shell.close()
        real_port, shell.port = shell.port, 9  # discard: nothing listens, connect refused
        try:
            with pytest.raises(BackendError, match=r"unreachable since .*unreachable_timeout_s=2"):
                run.result()
        finally:
            shell.port = real_port
            run.cancel()


def requeue_now(element: str, slurm_env: dict) -> None:
    """``scontrol requeue`` a running element, then start it again at once (Slurm would hold
    a requeued job back ~2 min with a BeginTime)."""
    subprocess.run(["scontrol", "requeue", element], check=True, env=slurm_env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "-h", "-j", element, "-o", "%T|%r"],
            capture_output=True,
            text=True,
            env=slurm_env,
            check=False,
        ).stdout
        if "PENDING|BeginTime" in out:
            # let the killed attempt finish its cleanup (KillWait=2 s): a requeued job
            # started during it fails at launch
            time.sleep(4)
            subprocess.run(
                ["scontrol", "update", f"JobId={element}", "StartTime=now"],
                check=True,
                env=slurm_env,
            )
            return
        time.sleep(0.3)
    raise AssertionError(f"{element} was not requeued: {out!r}")


@task(requeue=True)
def count_attempts(x, seconds):
    import os
    import time

    time.sleep(seconds)
    return x, int(os.environ.get("SLURM_RESTART_COUNT", "0"))


@pytest.mark.slurm
def test_scontrol_requeue_of_a_running_element_ends_in_the_right_result(env, tmp_path):
    """requeue=True: an element requeued while running runs again; its latest outcome counts."""
    c = slurm_cluster(env, tmp_path)
    slurm_env = {**os.environ, "SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]}
    with c:
        run = submit(count_attempts.map([(i, 6) for i in range(2)]))
        assert "--requeue" in (tmp_path / "work" / "runs" / run.id / "submit.sh").read_text()
        wait_until_running(run)
        element = f"{run.handle.job_ids['aj0']}_1"
        requeue_now(element, slurm_env)
        ((first, second),) = run.result()
    assert first == (0, 0) and second == (1, 1)


@task(requeue=True)
def resumable(state_file, seconds):
    """Counts seconds of work; saves the count when Slurm stops it, resumes from it."""
    import json
    import os
    import time

    from lazyslurm import on_checkpoint

    done = {"steps": 0, "attempts": 0}
    if os.path.exists(state_file):
        with open(state_file) as fh:
            done = json.load(fh)
    done["attempts"] += 1

    def save():
        with open(state_file, "w") as fh:
            json.dump(done, fh)

    on_checkpoint(save)
    while done["steps"] < seconds:
        time.sleep(1)
        done["steps"] += 1
    return done


@pytest.mark.slurm
def test_a_checkpoint_hook_saves_state_on_requeue_and_the_next_attempt_resumes(env, tmp_path):
    """scontrol requeue: the hook saves the state (SIGTERM), the second attempt resumes it."""
    c = slurm_cluster(env, tmp_path)
    slurm_env = {**os.environ, "SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]}
    state = tmp_path / "state.json"
    with c:
        run = submit(resumable(str(state), 8))
        submit_sh = tmp_path / "work" / "runs" / run.id / "submit.sh"
        assert "--signal=B:USR1@60" in submit_sh.read_text()
        wait_until_running(run)
        time.sleep(3)  # some work done
        element = f"{run.handle.job_ids['aj0']}_0"
        requeue_now(element, slurm_env)
        saved = json.loads(state.read_text())  # written by the hook before the job ended
        assert saved["attempts"] == 1 and saved["steps"] >= 1
        (result,) = run.result()
    assert result == {"steps": 8, "attempts": 2}


@pytest.mark.slurm
@pytest.mark.ssh
def test_status_of_an_unreachable_cluster_is_an_error_not_stale_counts(env):
    """run.status() (and `lazyslurm status`) raise when the cluster cannot be reached."""
    c = ssh_cluster(env)
    with c:
        run = submit(nap_then.map([(i, 30) for i in range(2)]))
        shell = c.backend.shell
        shell.close()
        real_port, shell.port = shell.port, 9
        try:
            with pytest.raises(BackendError, match=r"cannot read the state of run .*refused"):
                run.status()
        finally:
            shell.port = real_port
            run.cancel()


@pytest.mark.slurm
def test_a_status_command_that_can_never_work_fails_at_once(env, tmp_path):
    """status='sacct' without accounting is no outage: BackendError at the first poll."""
    c = slurm_cluster(env, tmp_path, accounting=False, status="sacct")
    with c:
        run = submit(nap_then.map([(i, 30) for i in range(2)]))
        try:
            with pytest.raises(BackendError, match=r"accounting storage is disabled.*not an"):
                run.result()
        finally:
            run.cancel()


# --------------------------------------------------------------------------- slow job last


@pytest.mark.slurm
def test_timeout(timeout_run):
    """A task over its time limit ends TIMEOUT: a TimeoutError with the Slurm details."""
    with pytest.raises(ElementTimeoutError) as info:
        timeout_run.result()
    err = info.value
    assert isinstance(err, TimeoutError)
    assert err.state == "TIMEOUT" and err.array_index == 0
    assert timeout_run.last_snapshot.states["aj0"] == [FAILED]
    assert PENDING not in timeout_run.last_snapshot.states["aj0"]


def test_an_element_slurm_never_heard_of_ends_after_a_grace(monkeypatch):
    """An element neither Slurm (both sources) nor the store knows is not waited on forever."""
    from lazyslurm.backends.base import ArrayJob, RunHandle
    from lazyslurm.backends.slurm import backend as slurm
    from lazyslurm.backends.slurm import status as slurm_status

    handle = RunHandle("r", (ArrayJob("aj0", "f", ("k0",)),), {"aj0": "77"})
    backend = slurm.SlurmBackend.__new__(slurm.SlurmBackend)
    backend.site_requeues = False  # a site with JobRequeue=0 (no probe here)
    watch = slurm_status.Watch()
    clock = iter([0.0, 61.0, 62.0])
    monkeypatch.setattr(slurm.time, "monotonic", lambda: next(clock))
    assert backend._snapshot(handle, {}, set(), set(), watch).states["aj0"] == [PENDING]
    assert backend._snapshot(handle, {}, set(), set(), watch).states["aj0"] == [PENDING]
    assert watch.suspects == {"77_0"}  # the next poll asks the other source
    late = backend._snapshot(handle, {}, set(), set(), watch, asked={"77_0"})
    assert late.states["aj0"] == [FAILED] and late.failures[("aj0", 0)].state == "UNKNOWN"


STATUS_SOURCES = pytest.mark.parametrize(
    ("status", "accounting"),
    [("sacct", True), ("squeue", True), ("squeue", False)],
    ids=["sacct", "squeue-acct", "squeue-noacct"],
)


@pytest.mark.slurm
@STATUS_SOURCES
def test_elements_pending_longer_than_the_grace_end_right(
    env, tmp_path, monkeypatch, status, accounting
):
    """A throttled array (one element at a time) keeps its last elements PENDING for many
    times the unlisted grace, and sacct lists each started element only seconds after its
    array's pending row dropped it (issue 20: 3 of 4 runs of a 2,000-element sweep failed
    UNKNOWN after 62 s). The grace is cut from 60 s to 2 s here so that a short run spans
    many graces; every element must still end with its result, on each status source."""
    from lazyslurm.backends.slurm import status as slurm_status

    monkeypatch.setattr(slurm_status, "UNLISTED_GRACE_S", 2.0)
    c = slurm_cluster(env, tmp_path, accounting=accounting, status=status)
    with c:
        assert c.backend.status_source == status
        xs = nap_then.map([(i, 1.5) for i in range(6)], max_concurrent=1)
        assert compute(xs) == ([0, 1, 2, 3, 4, 5],)


@pytest.mark.slurm
@STATUS_SOURCES
def test_the_other_source_lists_a_pending_element_by_its_array(env, tmp_path, status, accounting):
    """The cross-check the poll sends for elements unlisted past the grace, run on real
    Slurm: the other source (squeue under sacct; sacct, or squeue again without
    accounting, under squeue) lists a pending element of a throttled array, and a job
    Slurm never had is answered for (no record: UNKNOWN may follow) without a failure."""
    from lazyslurm.backends.slurm import backend as slurm
    from lazyslurm.backends.slurm import status as slurm_status

    c = slurm_cluster(env, tmp_path, accounting=accounting, status=status)
    with c:
        backend = c.backend
        run = submit(nap_then.map([(i, 30) for i in range(3)], max_concurrent=1))
        try:
            job = run.handle.job_ids["aj0"]
            wait_until_running(run)
            deadline = time.monotonic() + 30
            while True:  # sacct records a new array within a second or so
                res = backend.shell.run(backend._cross_check({f"{job}_2"}).lstrip("\n"))
                text = res.stdout.partition(slurm._CROSS_MARK)[2]
                other = backend._other_source()
                rows, asked = slurm_status.cross_checked({}, text, {f"{job}_2"}, other)
                if (job, 2) in rows or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert asked == {f"{job}_2"}
            assert rows[(job, 2)].state == "PENDING", res.stdout
            gone = "999999999"  # an id far beyond any the test clusters reach
            res = backend.shell.run(backend._cross_check({f"{gone}_0"}).lstrip("\n"))
            text = res.stdout.partition(slurm._CROSS_MARK)[2]
            other = backend._other_source()
            rows, asked = slurm_status.cross_checked({}, text, {f"{gone}_0"}, other)
            assert rows == {} and asked == {f"{gone}_0"}, res.stdout
        finally:
            run.cancel()


# --------------------------------------------------------------------------- many ranks


@task(ntasks=2, mem="200M", time="00:03:00", gather="all")
def ranks_over_ssh(x, *, job):
    return x, job.rank, job.world_size, job.job_id is not None, os.path.isdir(job.shared_dir)


@pytest.mark.slurm
def test_ssh_runs_a_multi_rank_task_on_every_rank(env):
    """Over SSH too, ntasks=2 runs the function on both ranks, each with its JobContext."""
    with ssh_cluster(env):
        assert ranks_over_ssh(1).compute() == [(1, 0, 2, True, True), (1, 1, 2, True, True)]


@task
def double(x):
    return 2 * x


@pytest.mark.slurm
@pytest.mark.parametrize("accounting", [True, False], ids=["sacct", "squeue"])
def test_debug_logs_each_slurm_command_with_its_duration(env, tmp_path, caplog, accounting):
    """At DEBUG, every sbatch and status command is logged with its duration and run id."""
    import logging

    c = slurm_cluster(env, tmp_path, accounting=accounting)
    with caplog.at_level(logging.DEBUG, logger="lazyslurm"), c:
        run = submit(double.map(range(3)), progress=False)
        assert run.result() == ([0, 2, 4],)
    records = [r for r in caplog.records if r.name == "lazyslurm.slurm"]
    assert records and all(r.run_id == run.id for r in records)
    sbatch = [r for r in records if r.getMessage().startswith("sbatch ")]
    assert len(sbatch) == 1 and sbatch[0].array_job == "aj0"
    assert "--array=0-2" in sbatch[0].getMessage() and sbatch[0].duration_s > 0
    tool = "sacct" if accounting else "squeue"
    polls = [r for r in records if r.getMessage().startswith(tool)]
    assert polls and all(r.duration_s >= 0 for r in polls)
    assert re.search(r"\(\d+\.\d{3} s", polls[0].getMessage())


def test_preempted_or_node_fail_with_requeue_waits_for_the_next_attempt(monkeypatch):
    """requeue=True: PREEMPTED/NODE_FAIL are waited on (bounded); without it they fail."""
    from lazyslurm.backends.base import ArrayJob, RunHandle
    from lazyslurm.backends.slurm import backend as slurm
    from lazyslurm.backends.slurm import status as slurm_status
    from lazyslurm.graph.resources import Resources

    requeue = ArrayJob("aj0", "f", ("k0",), Resources(requeue=True))
    plain = ArrayJob("aj1", "g", ("k1",))
    handle = RunHandle("r", (requeue, plain), {"aj0": "77", "aj1": "78"})
    backend = slurm.SlurmBackend.__new__(slurm.SlurmBackend)
    backend.site_requeues = False  # a site with JobRequeue=0 (no probe here)
    watch = slurm_status.Watch()
    clock = iter([0.0, 10.0, 20.0, 400.0])
    monkeypatch.setattr(slurm.time, "monotonic", lambda: next(clock))
    rows = {("77", 0): slurm_status.Row("PREEMPTED"), ("78", 0): slurm_status.Row("NODE_FAIL")}
    first = backend._snapshot(handle, rows, set(), set(), watch)
    assert first.states == {"aj0": [PENDING], "aj1": [FAILED]}
    running = {("77", 0): slurm_status.Row("RUNNING")}
    assert backend._snapshot(handle, running, set(), set(), watch).states["aj0"] == [RUNNING]
    stuck = {("77", 0): slurm_status.Row("NODE_FAIL")}
    assert backend._snapshot(handle, stuck, set(), set(), watch).states["aj0"] == [PENDING]
    late = backend._snapshot(handle, stuck, set(), set(), watch)  # never requeued again
    assert late.states["aj0"] == [FAILED]
    assert "attempt 3" in late.failures[("aj0", 0)].reason


def test_a_site_that_requeues_by_default_is_followed_without_requeue_true(monkeypatch):
    """JobRequeue=1 (Slurm's default) requeues a job lost with its node even when the task
    did not ask requeue=True: such a NODE_FAIL row is waited on (the element is PENDING);
    a task that asked no_requeue, or a site with JobRequeue=0, fails at once."""
    from lazyslurm.backends.base import ArrayJob, RunHandle
    from lazyslurm.backends.slurm import backend as slurm
    from lazyslurm.backends.slurm import status as slurm_status
    from lazyslurm.graph.resources import Resources

    plain = ArrayJob("aj0", "f", ("k0",))
    never = ArrayJob("aj1", "g", ("k1",), Resources.from_options(no_requeue=True))
    handle = RunHandle("r", (plain, never), {"aj0": "77", "aj1": "78"})
    backend = slurm.SlurmBackend.__new__(slurm.SlurmBackend)
    backend.site_requeues = True  # JobRequeue=1, no SBATCH_NO_REQUEUE
    clock = iter([0.0, 10.0])
    monkeypatch.setattr(slurm.time, "monotonic", lambda: next(clock))
    rows = {("77", 0): slurm_status.Row("NODE_FAIL"), ("78", 0): slurm_status.Row("NODE_FAIL")}
    snap = backend._snapshot(handle, rows, set(), set(), slurm_status.Watch())
    assert snap.states == {"aj0": [PENDING], "aj1": [FAILED]}
    backend.site_requeues = False
    snap = backend._snapshot(handle, rows, set(), set(), slurm_status.Watch())
    assert snap.states == {"aj0": [FAILED], "aj1": [FAILED]}


def test_the_probe_reads_jobrequeue():
    """JobRequeue = 0 in scontrol show config: the site does not requeue; absent (an older
    cached probe) or 1: it does, as Slurm's default."""
    from lazyslurm.backends.slurm.facts import read_probe

    base = "MaxArraySize = 1001\nMaxJobCount = 10000\nAccountingStorageType = x/none\n"
    assert read_probe(base).job_requeue
    assert read_probe(base + "JobRequeue = 1\n").job_requeue
    assert not read_probe(base + "JobRequeue = 0\n").job_requeue


@task(time=2)
def nap_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@pytest.mark.slurm
@pytest.mark.parametrize("kind", ["slurm", "ssh"])
def test_max_rpc_per_min_holds_status_queries_and_the_run_ends_right(env, tmp_path, kind):
    """``max_rpc_per_min=4, rpc_burst=2``: a bucket of 2 tokens, one back every 15 s; the
    submission (one sbatch: a one-array run is not held) takes one. Polls every 0.5 s go
    on reading the run's files, but Slurm's status is asked at most as the bucket allows:
    a 12-s task costs at most ``4 x duration / 60`` queries (uncapped: one every 2 s on
    this host, one per poll over SSH), and its result is still seen when it lands."""
    opts = {"max_rpc_per_min": 4, "rpc_burst": 2}
    c = slurm_cluster(env, tmp_path, **opts) if kind == "slurm" else ssh_cluster(env, **opts)
    t0 = time.monotonic()
    with c:
        run = submit(nap_for(12), cluster=c)
        assert run.result() == (12,)
        took = time.monotonic() - t0
        calls = run.controller_calls
    # one array job: submitted unheld, so no release (scontrol) is needed
    assert calls is not None and calls["sbatch"] == 1 and calls.get("scontrol", 0) == 0
    queries = calls.get("sacct", 0) + calls.get("squeue", 0)
    assert queries <= 4 * took / 60 + 1, (queries, took, calls)
