"""On the many-node test site (tests/cluster/site.sh, fixtures in tests/fixtures_site.py):
the site itself (nodes, preemption both ways, caps), tasks on several nodes for real, a node
failure's message, and a busy controller (submission, cancel and probe retried; calls
counted). Few and focused: each costs seconds of a shared machine (the node failure ~40 s).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lazyslurm import JobContext, submit, task
from lazyslurm.cli import main
from lazyslurm.errors import NodeFailError

pytestmark = [pytest.mark.slurm, pytest.mark.site]


# --------------------------------------------------------------------------- the site


def test_the_site_has_four_nodes_preemption_both_ways_and_caps(site):
    """What the brief asks of the site, checked with Slurm's own commands: >= 4 idle nodes;
    a ``high`` job preempts a ``low`` one (requeued: PENDING again) and a ``lowcancel`` one
    (PREEMPTED, for good); an array over the cap is refused with Slurm's reason, as a QOS
    limit by default and as an association limit under account ``capped``."""
    assert len(site.nodes) >= 4
    assert all(site.node_state(n) in ("idle", "mixed", "allocated") for n in site.nodes)
    node = site.nodes[-1]
    jobs = {}
    for part in ("low", "lowcancel"):
        out = site.slurm(
            "sbatch", "--parsable", f"--partition={part}", f"--nodelist={node}",
            "--exclusive", "--qos=normal", "--requeue", "--output=/dev/null", "--wrap=sleep 60",
        )  # fmt: skip
        jobs[part] = out.stdout.strip()
    try:
        deadline = time.monotonic() + 30
        while site.job_state(jobs["low"])[0] != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.3)  # one of the two runs (exclusive), the other waits
        first = "low" if site.job_state(jobs["low"])[0] == "RUNNING" else "lowcancel"
        for part in (first, "low" if first == "lowcancel" else "lowcancel"):
            while site.job_state(jobs[part])[0] != "RUNNING" and time.monotonic() < deadline:
                time.sleep(0.3)
            assert site.job_state(jobs[part])[0] == "RUNNING"
            site.preempt(node, seconds=1)
            want = "PENDING" if part == "low" else "PREEMPTED"  # REQUEUE / CANCEL
            while site.job_state(jobs[part])[0] != want and time.monotonic() < deadline:
                time.sleep(0.3)
            assert site.job_state(jobs[part])[0] == want, (part, site.job_state(jobs[part]))
    finally:
        site.slurm("scancel", *jobs.values(), check=False)
    over = f"--array=0-{site.max_submit}"  # one more than the cap
    qos = site.slurm("sbatch", over, "--hold", "--wrap=true", check=False)
    assert qos.returncode != 0 and "QOSMaxSubmitJobPerUserLimit" in qos.stderr
    assoc = site.slurm(
        "sbatch", over, "--hold", "--qos=normal", "--account=capped", "--wrap=true", check=False
    )
    assert assoc.returncode != 0 and "AssocMaxSubmitJobLimit" in assoc.stderr


# --------------------------------------------------------------------------- multi-node


@task(time=2, nodes=2, ntasks_per_node=2, gather="all")
def where_am_i(job: JobContext) -> dict:
    return {
        "rank": job.rank,
        "local_rank": job.local_rank,
        "node_rank": job.node_rank,
        "world_size": job.world_size,
        "node_name": job.node_name,
        "slurmd": os.environ.get("SLURMD_NODENAME"),
        "hostnames": job.hostnames,
        "torch": job.torch_distributed_env(),
    }


def test_two_nodes_times_two_ranks_run_on_two_real_nodes(
    site, tmp_path, monkeypatch, private_home, capsys
):
    """``nodes=2, ntasks_per_node=2``: four ranks, two on each of two different nodes;
    ``JobContext`` names Slurm's nodes (they share this host's hostname), ``gather="all"``
    collects from both, and torch's MASTER_ADDR is the first node. The run's controller
    calls count one ``srun`` per rank (written on the node); ``lazyslurm status`` shows
    them."""
    with site.cluster(tmp_path / "work") as c:
        run = submit(where_am_i(), cluster=c)
        (ranks,) = run.result()
        calls = run.controller_calls
    assert [r["rank"] for r in ranks] == [0, 1, 2, 3]
    assert all(r["world_size"] == 4 for r in ranks)
    first, second = ranks[0]["hostnames"]
    assert first != second and {first, second} <= set(site.nodes)
    assert [r["node_name"] for r in ranks] == [first, first, second, second]
    assert [r["slurmd"] for r in ranks] == [first, first, second, second]
    assert [(r["node_rank"], r["local_rank"]) for r in ranks] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    for r in ranks:
        env = r["torch"]
        assert env["MASTER_ADDR"] == first and env["WORLD_SIZE"] == "4"
        assert env["RANK"] == str(r["rank"]) and env["LOCAL_WORLD_SIZE"] == "2"
    assert len({r["torch"]["MASTER_PORT"] for r in ranks}) == 1
    assert calls is not None and calls.get("srun") == 4  # one per rank, counted on the node
    assert calls.get("sbatch") == 1 and calls.get("scontrol", 0) == 0  # one array: unheld
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.lazyslurm.profiles.site]\nbackend = "slurm"\nworkdir = "{tmp_path / "work"}"\n'
        f'env = {{ SLURM_CONF = "{site.conf}" }}\n'
    )
    monkeypatch.chdir(tmp_path)
    assert main(["status", run.id, "--cluster", "site"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if "controller calls" in ln)
    total = int(line.split(":")[1].split()[0])
    assert total >= sum(calls.values()) and "srun 4" in line and "sbatch 1" in line, line


# --------------------------------------------------------------------------- node failure


@task(time=5)
def hang_on(marker: str) -> str:
    Path(marker).write_text(os.environ.get("SLURMD_NODENAME", "?"))
    time.sleep(600)
    return "never"


def test_a_lost_node_without_retries_names_the_node_and_the_state(site, tmp_path):
    """An element whose node dies (slurmd and the job's processes killed) ends NODE_FAIL
    once Slurm notices (~30 s, SlurmdTimeout=10); with no retries and no requeue (as with
    JobRequeue=0) the error is a NodeFailError that names the state and the node."""
    marker = tmp_path / "started"
    with site.cluster(tmp_path / "work", requeue=False) as c:
        run = submit(hang_on(str(marker)), cluster=c)
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        node = marker.read_text()
        assert node in site.nodes
        site.kill_node(node)
        with pytest.raises(NodeFailError) as err:
            run.result()
    msg = str(err.value)
    assert "NODE_FAIL" in msg and f"on node {node}" in msg, msg
    assert err.value.state == "NODE_FAIL"


# --------------------------------------------------------------------------- a busy controller


@task(time=2)
def double_once(x: int, log: str) -> int:
    with open(log, "a") as f:  # one line per run of an element: twice would show
        f.write(f"{x}\n")
    return 2 * x


@task(time=2)
def total_of(xs: list[int]) -> int:
    return sum(xs)


def test_a_submission_the_stalled_controller_accepted_is_not_submitted_twice(
    site, tmp_path, caplog
):
    """slurmctld stalled (SIGSTOP) for 14 s while a run is submitted: the first sbatch fails
    "Socket timed out on send/recv operation" after 10 s, yet Slurm takes it once it
    resumes. The submission is tried again (backoff with jitter) after cancelling what is
    named after the run: every element runs once, the result is right, the one job of the
    failed try ends CANCELLED without running, and the retry shows in the calls counted.
    (Before: SubmissionError at the first timeout, the accepted job left held.)"""
    log = tmp_path / "ran"
    caplog.set_level("INFO", logger="lazyslurm")
    with site.cluster(tmp_path / "work", unreachable_timeout_s=120) as c:
        c.backend.facts  # noqa: B018 - the probe, while the controller answers
        site.controller_fault("stall", seconds=14)
        items = [(x, str(log)) for x in range(4)]
        run = submit(total_of(double_once.map(items)), cluster=c)
        (out,) = run.result()
        calls = run.controller_calls
    assert out == 2 * sum(range(4))
    assert sorted(log.read_text().split()) == ["0", "1", "2", "3"]  # each element once
    states = sorted({(job.split("_")[0], state) for job, state, _, _ in site.run_jobs(run.id)})
    assert {jid for jid, _ in states} >= set(run.handle.job_ids.values())
    leftovers = [(j, st) for j, st in states if j not in run.handle.job_ids.values()]
    assert leftovers and all(st == "CANCELLED" for _, st in leftovers), states
    assert calls is not None and calls["sbatch"] >= 3  # 1 that timed out, then 2
    assert calls["scancel"] >= 1 and calls["squeue"] >= 1  # the search by name, the cancel
    assert any("trying again in" in r.getMessage() for r in caplog.records)
    finished = [r.getMessage() for r in caplog.records if "finished" in r.getMessage()]
    assert finished and "controller calls: " in finished[-1]


@task(time=5)
def hang_here(marker: str) -> str:
    Path(marker).write_text("started")
    time.sleep(600)
    return "never"


def test_cancel_and_probe_wait_for_a_controller_that_went_away(site, tmp_path):
    """slurmctld gone (SIGTERM) for 15 s, longer than a Slurm client's own retries (~9 s):
    a cancel and a new session's probe meanwhile fail "Unable to contact slurm controller"
    and are tried again until it is back; the job ends CANCELLED. (Before: the cancel
    failed silently and the job ran on; the probe raised at once.)"""
    import threading

    marker = tmp_path / "started"
    with site.cluster(tmp_path / "work", unreachable_timeout_s=120) as c:
        run = submit(hang_here(str(marker)), cluster=c)
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists()
        job = f"{run.handle.job_ids['aj0']}_0"
        site.controller_fault("down", seconds=15)
        probed: dict[str, object] = {}

        def probe() -> None:
            with site.cluster(tmp_path / "other", unreachable_timeout_s=120) as other:
                try:
                    probed["facts"] = other.backend.facts
                except Exception as exc:  # reported below
                    probed["error"] = exc

        thread = threading.Thread(target=probe)
        thread.start()
        run.cancel()
        thread.join(timeout=180)
        calls = run.controller_calls
    assert "error" not in probed, probed.get("error")
    assert probed["facts"].max_array_size == 100  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while site.job_state(job)[0] not in ("CANCELLED", "") and time.monotonic() < deadline:
        time.sleep(0.3)
    assert site.job_state(job)[0] == "CANCELLED"
    assert calls is not None and calls["scancel"] >= 1 and calls["squeue"] >= 2  # tried again
