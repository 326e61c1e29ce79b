"""Submit caps (issue 22 §2.4, lazyslurm/backends/slurm/feed.py): a run that needs more
queued Slurm jobs than the user may queue is fed in on the cluster by feeder jobs, with
the client gone; a full cap at submission means waiting, not failing.

The tranche split and the rendering are checked here without Slurm; the rest on the
many-node test site (QOS ``capped``: MaxSubmitJobsPerUser=20, MaxJobsPerUser=10)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from lazyslurm import Run, submit, task
from lazyslurm.backends.packaging.base import Launch
from lazyslurm.backends.slurm.feed import (
    FEEDER,
    check_feedable,
    fed_submission,
    over_cap,
    read_progress,
    split,
    unsubmitted_states,
)
from lazyslurm.errors import ResourceLimitError
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.store import INSIDE, RunLayout

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------- no Slurm


def _chain(sizes: list[int]) -> list[ArrayJob]:
    return [
        ArrayJob(
            f"aj{n}",
            "t",
            tuple(f"k{n}_{i}" for i in range(size)),
            dependencies=(("afterok", f"aj{n - 1}"),) if n else (),
        )
        for n, size in enumerate(sizes)
    ]


def test_the_tranche_is_the_longest_prefix_that_fits():
    """A tranche is a prefix in submission (topological) order: an array job that does not
    fit stops it, even when a later, smaller one would fit (its upstreams come first)."""
    assert split([5, 5, 5, 5], 19) == 3
    assert split([5, 5, 5, 5], 20) == 4
    assert split([5, 15, 1], 19) == 1  # the 1 waits for the 15 before it
    assert split([5], 4) == 0
    assert split([5, 5], -3) == 0  # the user's other jobs fill the cap
    assert split([], 10) == 0


def test_a_run_over_the_cap_is_rendered_as_a_first_tranche_and_a_feeder(tmp_path):
    """fed_submission: every job script, a submission script with the first tranche (what
    fits the cap less the user's queued jobs less the feeder) and the feeder, which waits
    (afterany) for the first array job; the rest in feed.json, in order, with flags and
    dependencies by array job id."""
    ajs = _chain([5, 5, 5, 5, 5])
    layout = RunLayout.of("r1", tmp_path)
    start = Launch("/p/python", ("module load x",), (), "/c/lazyslurm/runner/__main__.py")
    todo = fed_submission(
        ajs, run_id="r1", layout=layout, defaults=None,
        launches=dict.fromkeys((aj.id for aj in ajs), start),
        budget=20, queued=3, timeout_s=60,
    )  # fmt: skip
    script = todo.files[INSIDE.submit_script].decode()
    # 20 - 3 queued - 1 feeder = 16: three array jobs of 5
    assert [f"jobs/aj{n}.sh" in script for n in range(5)] == [True, True, True, False, False]
    assert f'"$run_dir/jobs/{FEEDER}.sh"' in script and "--dependency=afterany:${aj0}" in script
    assert "--job-name=lz-r1-feed" in script and "--requeue" in script
    plan = json.loads(todo.files[INSIDE.feed_plan])
    assert plan["cap"] == 20 and [j["id"] for j in plan["jobs"]] == [aj.id for aj in ajs]
    assert plan["jobs"][4]["deps"] == [["afterok", "aj3"]] and plan["jobs"][4]["size"] == 5
    assert all(INSIDE.job_script(aj.id) in todo.files for aj in ajs)
    feeder = todo.files[INSIDE.job_script(FEEDER)].decode()
    assert "module load x" in feeder and "export PYTHONPATH=/c" in feeder
    assert "from lazyslurm.backends.slurm.feed import main" in feeder
    # the user's jobs fill the cap: the feeder alone, at once
    none = fed_submission(
        ajs, run_id="r1", layout=layout, defaults=None,
        launches=dict.fromkeys((aj.id for aj in ajs), start),
        budget=20, queued=19, timeout_s=60,
    )  # fmt: skip
    text = none.files[INSIDE.submit_script].decode()
    assert "jobs/aj0.sh" not in text and "--dependency" not in text and "jobs/feed.sh" in text


def test_an_array_job_larger_than_the_cap_is_refused_with_the_fixes():
    with pytest.raises(ResourceLimitError) as err:
        check_feedable(_chain([5, 19]), 20, "MaxSubmitJobs=20")
    msg = str(err.value)
    assert "array job aj1" in msg and "MaxSubmitJobs=20" in msg
    assert "max_array_size=18" in msg and "nothing was submitted" in msg
    check_feedable(_chain([18, 18, 18]), 20, "MaxSubmitJobs=20")  # each fits: fed in


def test_a_run_over_the_cap_that_retries_on_the_cluster_is_refused_clearly():
    """Feeders submit array jobs, not the guard jobs of on-cluster retries: such a run
    over the cap is refused before anything is submitted, saying what to change."""
    import attrs

    from lazyslurm.graph.resources import Resources

    jobs = _chain([5, 5])
    jobs[1] = attrs.evolve(jobs[1], resources=Resources(retries=2, requeue=True))
    assert jobs[1].resources.guarded
    with pytest.raises(ResourceLimitError, match="cannot retry on the cluster yet") as err:
        check_feedable(jobs, 8, "MaxSubmitJobs=8")
    assert "array job aj1" in str(err.value) and "nothing was submitted" in str(err.value)


def test_cap_refusals_mean_later_and_progress_is_read_as_it_grows():
    assert over_cap("sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job")
    assert over_cap("sbatch: error: AssocMaxSubmitJobLimit")
    assert not over_cap("sbatch: error: invalid partition specified: nope")
    layout = RunLayout.of("r1")
    ids, error = read_progress({layout.jobids: b"aj0=5 feed=6 aj1=9\n"}, layout)
    assert ids == {"aj0": "5", "aj1": "9"} and error == ""
    ajs = _chain([2, 3, 1])
    assert unsubmitted_states(ajs, ids) == {"aj2": ["PENDING"]}
    _, error = read_progress({layout.feed_error: b"Slurm refused aj2\n"}, layout)
    assert error == "Slurm refused aj2"


# --------------------------------------------------------------------------- the site


@task(time=2)
def square(x: int) -> int:
    return x * x


@task(time=2)
def total(xs: list[int]) -> int:
    return sum(xs)


@task(time=2)
def plus_one(x: int) -> int:
    return x + 1


class Sampler:
    """``squeue -u USER -h -r`` every second while a test runs: the most jobs of the user
    queued at once (all, and those of QOS ``capped``, which the cap counts)."""

    def __init__(self, site) -> None:
        self.site = site
        self.most = self.most_capped = self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        user = (
            os.environ.get("USER")
            or subprocess.run(
                ["id", "-un"], capture_output=True, text=True, check=False
            ).stdout.strip()
        )
        while not self._stop.is_set():
            out = self.site.slurm("squeue", "-u", user, "-h", "-r", "-o", "%q", check=False)
            if out.returncode == 0:
                qos = out.stdout.split()
                self.most = max(self.most, len(qos))
                self.most_capped = max(self.most_capped, qos.count("capped"))
                self.samples += 1
            self._stop.wait(1.0)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def _submit_and_vanish(site, workdir: Path, expr: str, **options) -> str:
    """Submit ``expr`` (of this module) from a child process that is SIGKILLed right after
    submit(): the run goes on with no client. Its run id."""
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO / "tests")!r})
        from lazyslurm import Cluster, submit
        from test_caps import square, total, plus_one
        c = Cluster("slurm", workdir={str(workdir)!r}, env={site.env()!r}, **{options!r})
        run = submit({expr}, cluster=c)
        print(run.id, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert run_id, "the client printed no run id"
    return run_id


def _wait_gone(site, run_id: str, timeout: float) -> None:
    """Wait until Slurm holds no job of the run (feeders included)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = [r for r in site.run_jobs(run_id) if r[1] in ("PENDING", "RUNNING", "COMPLETING")]
        if not live:
            return
        time.sleep(2)
    raise AssertionError(f"run {run_id} still has jobs after {timeout} s: {live[:5]}")


def _feeder_logs(workdir: Path, run_id: str) -> list[str]:
    logs = RunLayout.of(run_id, workdir).subdir("logs")
    return sorted(
        Path(logs, n).read_text()
        for n in os.listdir(logs)
        if n.startswith(f"{FEEDER}_") and n.endswith(".out")
    )


@pytest.mark.slurm
@pytest.mark.site
def test_200_elements_under_a_cap_of_20_are_fed_in_with_the_client_gone(site, tmp_path):
    """200 elements with pack=1 (arrays of 5: max_array_size=5) and their sum: 41 array
    jobs, 201 Slurm jobs, under MaxSubmitJobsPerUser=20. The client is killed right after
    submit(); feeder jobs submit the rest as slots free. Every result is right, and a
    sampler (squeue -u USER -h -r, every second) never sees more than the cap."""
    workdir = tmp_path / "work"
    with Sampler(site) as sampler:
        run_id = _submit_and_vanish(
            site, workdir, "total(square.map(range(200)))", max_array_size=5, poll_max_s=1.0
        )
        _wait_gone(site, run_id, timeout=900)
    with site.cluster(workdir) as c:
        run = Run.attach(run_id, c)
        (out,) = run.result()
        snap = run.poll()
    assert out == sum(x * x for x in range(200))
    assert all(s == "DONE" for states in snap.states.values() for s in states)
    assert len(run.handle.array_jobs) == 41
    steps = _feeder_logs(workdir, run_id)
    assert len(steps) >= 2, steps  # fed in by several feeders
    assert not Path(RunLayout.of(run_id, workdir).feed_error).exists()
    print(
        f"\nqueued at most {sampler.most} ({sampler.most_capped} under the cap) in "
        f"{sampler.samples} samples; {len(steps)} feeders"
    )
    assert sampler.samples >= 5
    assert sampler.most_capped <= site.max_submit, sampler.most_capped


@pytest.mark.slurm
@pytest.mark.site
def test_a_chain_longer_than_the_cap_gets_the_ids_of_earlier_tranches(site, tmp_path):
    """A chain of 30 tasks (each afterok the one before) under a cap of 20: the later links
    are submitted by feeders with their upstream's Slurm id substituted; the value comes
    out right with the client gone."""
    workdir = tmp_path / "work"
    expr = "plus_one(" * 30 + "0" + ")" * 30
    run_id = _submit_and_vanish(site, workdir, expr, poll_max_s=1.0)
    _wait_gone(site, run_id, timeout=600)
    with site.cluster(workdir) as c:
        (out,) = Run.attach(run_id, c).result()
    assert out == 30
    assert len(_feeder_logs(workdir, run_id)) >= 1


@pytest.mark.slurm
@pytest.mark.site
def test_a_full_cap_at_submission_means_waiting_not_failing(site, tmp_path, caplog):
    """The user's other jobs fill the cap (20 held elements): the run's first submission is
    refused with QOSMaxSubmitJobPerUserLimit; the client waits and tries again, and once
    the other jobs are gone the run completes."""
    filler = site.slurm(
        "sbatch", "--parsable", "--hold", f"--array=0-{site.max_submit - 1}",
        "--output=/dev/null", "--job-name=lz-site-filler", "--wrap=true",
    ).stdout.strip()  # fmt: skip
    timer = threading.Timer(8, lambda: site.slurm("scancel", filler, check=False))
    caplog.set_level("WARNING", logger="lazyslurm")
    try:
        timer.start()
        with site.cluster(tmp_path / "work"):
            out = square.map(range(4)).compute()
    finally:
        timer.cancel()
        site.slurm("scancel", filler, check=False)
    assert out == [0, 1, 4, 9]
    assert any("submit cap is full" in r.getMessage() for r in caplog.records)


@task(time=2)
def nap(x: int) -> int:
    time.sleep(1)
    return x


@pytest.mark.slurm
@pytest.mark.site
def test_cancelling_a_fed_run_stops_its_feeders(site, tmp_path):
    """run.cancel() on a run being fed in: the feeders are stopped under the run's lock
    (feed.stop) before the jobs are cancelled, so nothing of the run is queued afterwards
    and no array job is submitted any more."""

    workdir = tmp_path / "work"
    with site.cluster(workdir, max_array_size=5) as c:
        run = submit(nap.map(range(100)), cluster=c)
        deadline = time.monotonic() + 120
        while not _feeder_logs(workdir, run.id) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _feeder_logs(workdir, run.id), "no feeder ran"
        run.cancel()
    layout = RunLayout.of(run.id, workdir)
    assert Path(layout.feed_stop).exists()
    submitted = Path(layout.jobids).read_text()
    time.sleep(15)  # a feeder that was queued would have run by now
    live = [r for r in site.run_jobs(run.id) if r[1] in ("PENDING", "RUNNING", "COMPLETING")]
    assert live == []
    assert Path(layout.jobids).read_text() == submitted
    assert submitted.count("=") < 21  # 20 array jobs and the feeder: not all were submitted


@pytest.mark.slurm
@pytest.mark.site
@pytest.mark.ssh
def test_a_run_over_the_cap_is_fed_in_over_ssh_with_nothing_installed(site, cluster_env):
    """Over SSH (paramiko, as lsuser, packaging by value: lazyslurm staged under the work
    directory, the runner started by path), the feeders find lazyslurm where the runner is:
    60 elements in arrays of 5 under lsuser's cap of 20."""
    from lazyslurm import Cluster

    e = cluster_env
    c = Cluster(
        "ssh", hostname=e["LAZYSLURM_TEST_SSH_HOST"], port=int(e["LAZYSLURM_TEST_SSH_PORT"]),
        username=e["LAZYSLURM_TEST_SSH_USER"], key_filename=e["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=e["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"], env=site.env(), max_array_size=5,
        poll_max_s=0.5,
    )  # fmt: skip
    with c:
        assert c.backend.facts.job_limits["MaxSubmitJobs"] == site.max_submit
        run = submit(total(square.map(range(60))), cluster=c)
        assert FEEDER in run.handle.job_ids
        (out,) = run.result()
        calls = run.controller_calls
    assert out == sum(x * x for x in range(60))
    assert calls is not None and calls["sbatch"] > 13  # 13 array jobs and the feeders


@pytest.mark.slurm
@pytest.mark.site
def test_a_cap_the_probe_cannot_see_is_learned_from_sbatchs_refusal(site, tmp_path, caplog):
    """Where sacctmgr does not tell the user's limits (here a sacctmgr that fails, first on
    the PATH), the run is submitted whole and sbatch refuses it over the cap: the client
    learns a bound from what went in before the refusal and feeds the run in under it."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "sacctmgr").write_text("#!/bin/sh\necho 'sacctmgr: access denied' >&2\nexit 1\n")
    (fake / "sacctmgr").chmod(0o755)
    caplog.set_level("WARNING", logger="lazyslurm")
    path = f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    with site.cluster(tmp_path / "work", max_array_size=5, env={"PATH": path}) as c:
        assert "MaxSubmitJobs" not in c.backend.facts.job_limits
        run = submit(total(square.map(range(60))), cluster=c)
        (out,) = run.result()
    assert out == sum(x * x for x in range(60))
    said = [r.getMessage() for r in caplog.records]
    assert any("refused run" in m and "fed in" in m for m in said), said
    assert FEEDER in run.handle.job_ids and len(_feeder_logs(tmp_path / "work", run.id)) >= 1


@pytest.mark.slurm
@pytest.mark.site
def test_status_of_a_fed_run_finds_the_jobs_the_feeders_submit(site, tmp_path, monkeypatch, capsys):
    """Another process attached to a run being fed in: array jobs not submitted yet are
    PENDING (not failed, no Slurm id), the jobs the feeders submit are found as the run's
    jobids file grows, and `lazyslurm status` reads the run to the end."""
    from lazyslurm.cli import main

    workdir = tmp_path / "work"
    with site.cluster(workdir, max_array_size=5) as c:
        run = submit(nap.map(range(60)), cluster=c)
    with site.cluster(workdir) as c2:
        attached = Run.attach(run.id, c2)
        snap = attached.poll()
        unsent = [aj.id for aj in attached.handle.array_jobs
                  if aj.id not in attached.handle.job_ids]  # fmt: skip
        assert unsent, "everything was submitted at once: not fed"
        assert all(s == "PENDING" for aj in unsent for s in snap.states[aj])
        assert not any(s == "FAILED" for states in snap.states.values() for s in states)
        (out,) = attached.result()
        assert out == list(range(60))
        assert all(aj.id in attached.handle.job_ids for aj in attached.handle.array_jobs)
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.lazyslurm.profiles.site]\nbackend = "slurm"\nworkdir = "{workdir}"\n'
        f'env = {{ SLURM_CONF = "{site.conf}" }}\n'
    )
    monkeypatch.chdir(tmp_path)
    assert main(["status", run.id, "--cluster", "site"]) == 0
    text = capsys.readouterr().out
    assert "DONE, 60/60 done" in text, text


@pytest.mark.slurm
@pytest.mark.site
def test_a_cap_lowered_mid_run_makes_feeders_wait_not_fail(site, tmp_path):
    """The run is fed under account ``capped`` (an association limit, MaxSubmitJobs=20),
    and the site lowers that limit to 12 once the run is going: feeders, counting on 20,
    are refused with AssocMaxSubmitJobLimit, leave the rest to their successors, and the
    run still completes right. (Only root's association under account ``capped`` is
    changed, and restored after.)"""
    workdir = tmp_path / "work"
    where = ["where", "user=root", "account=capped"]
    try:
        with site.cluster(workdir, max_array_size=5, account="capped", qos="normal") as c:
            run = submit(total(nap.map(range(80))), cluster=c)
            site.slurm("sacctmgr", "-i", "modify", "user", *where, "set", "MaxSubmitJobs=12")
            (out,) = run.result()
    finally:
        site.slurm("sacctmgr", "-i", "modify", "user", *where, "set", "MaxSubmitJobs=20",
                   check=False)  # fmt: skip
    assert out == sum(range(80))
    logs = _feeder_logs(workdir, run.id)
    assert any("AssocMaxSubmitJobLimit" in text for text in logs), logs
    assert not Path(RunLayout.of(run.id, workdir).feed_error).exists()
