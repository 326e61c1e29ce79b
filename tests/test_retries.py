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
import tempfile
import time
from pathlib import Path

import pytest

from lazyslurm import Cluster, Run, submit, task
from lazyslurm.backends.packaging.base import Launch
from lazyslurm.backends.slurm.render import submission
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
    with pytest.raises(InvalidOptionError, match=r"on_oom=2\.0 needs retries"):
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
    starts = {"aj0": Launch("/p/python"), "aj1": Launch("/p/python")}
    todo = submission([a, b], run_id="r1", layout=lay, defaults=None, launches=starts)
    script = todo.files["submit.sh"].decode()
    assert '"--dependency=afterany:${aj0}" -- "$run_dir/jobs/aj0.guard.sh" "${aj0}" 1' in script
    assert '"--dependency=afterok:${aj0_g}"' in script and "aftercorr" not in script
    assert "aj0.guard=${aj0_g}" in script and "--partition=p" in script
    guard = todo.files["jobs/aj0.guard.sh"].decode()
    assert "-m lazyslurm.backends.slurm.retry /w/runs/r1 aj0" in guard


def test_the_client_follows_the_guards_records_to_each_elements_latest_attempt():
    """A poll's LZ-RETRY lines -> records; each Slurm element's latest job and guard, its
    attempt, and a guard that gave up on it; the status note names attempts and requests."""
    from lazyslurm.backends.base import FAILED, PENDING, RunHandle
    from lazyslurm.backends.slurm import backend as slurm
    from lazyslurm.backends.slurm import status as st

    first = {"array_job": "aj0", "attempt": 1, "watched": "10",
             "lost": {"1": {"state": "NODE_FAIL", "node": "n2"}},
             "retried": {"indices": [1], "job_id": "12", "guard": "13",
                         "request": {"exclude": ["n2"]}}}  # fmt: skip
    second = {"array_job": "aj0", "attempt": 2, "watched": "12",
              "lost": {"1": {"state": "NODE_FAIL", "node": "n3"}},
              "gave_up": "0 retries left"}  # fmt: skip
    text = "".join(f"{st.RETRY_MARK} {json.dumps(r)}\n" for r in (second, first)) + "junk\n"
    recs = st.parse_retry_records(text)
    assert [r["attempt"] for r in recs["aj0"]] == [1, 2]
    assert st.latest_attempt(recs["aj0"], 0, "10", "11") == ("10", "11", 1, None, False)
    job, guard, attempt, gave_up, alone = st.latest_attempt(recs["aj0"], 1, "10", "11")
    assert (job, guard, attempt, alone) == ("12", "13", 2, True)
    assert gave_up["gave_up"] == "0 retries left"
    note = st.retries_note({"aj0": recs["aj0"][:1]}, {"aj0": "f"})
    assert note == "retried on the cluster: f[1] attempt 2 (job 12; NODE_FAIL on n2; --exclude=n2)"
    # the snapshot: element 1 lost again, its guard gave up -> FAILED with the reason;
    # element 0 lost, its guard still pending -> PENDING (not a failure yet)
    aj = ArrayJob("aj0", "f", ("k0", "k1"), Resources(retries=1))
    handle = RunHandle("r", (aj,), {"aj0": "10", "aj0.guard": "11"})
    backend = slurm.SlurmBackend.__new__(slurm.SlurmBackend)
    backend.site_requeues = False  # a site with JobRequeue=0 (no probe here)
    watch = st.Watch()
    watch.retries = recs
    rows = {("10", 0): st.Row("NODE_FAIL", node="n1"), ("10", 1): st.Row("NODE_FAIL"),
            ("11", None): st.Row("PENDING"), ("12", 1): st.Row("NODE_FAIL", node="n3")}  # fmt: skip
    snap = backend._snapshot(handle, rows, set(), set(), watch)
    assert snap.states["aj0"] == [PENDING, FAILED]
    failure = snap.failures[("aj0", 1)]
    assert (failure.node, failure.job_id) == ("n3", "12")
    assert "attempt 2; the on-cluster retry gave up: 0 retries left" in failure.reason


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


# --------------------------------------------------------------------------- the site

CHILD = """
import json, os, signal, sys
sys.path.insert(0, {tests!r})
from lazyslurm import Cluster, submit
import test_retries as t
opts = json.loads({opts!r})
graph = getattr(t, opts.pop("graph"))(*opts.pop("args"))
run = submit(graph, cluster=Cluster("slurm", **opts))
print(run.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def submit_and_die(graph: str, args: list, **opts) -> str:
    """Submit ``graph(*args)`` (a function of this module) from a child process that is
    SIGKILLed right after: nothing polls the run. Its run id."""
    code = CHILD.format(tests=str(TESTS), opts=json.dumps({"graph": graph, "args": args, **opts}))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=TESTS.parent, timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    return proc.stdout.split()[0]


def wait_for(path: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.3)


@task(time=5, retries=2)
def lost_once(x: int, where: str) -> int:
    """Element 0 hangs on its first attempt (its node is killed under it)."""
    node = os.environ.get("SLURMD_NODENAME", "?")
    first = Path(where, f"{x}.first")
    if x == 0 and not first.exists():
        first.write_text(node)
        time.sleep(600)
    Path(where, f"{x}.ran").write_text(node)
    return 10 * x


def lost_node_graph(where: str):
    return total(lost_once.map([(x, where) for x in range(3)]))


@pytest.mark.slurm
@pytest.mark.site
def test_an_element_lost_with_its_node_runs_again_elsewhere_with_the_client_gone(site, tmp_path):
    """JobRequeue=0 (every job --no-requeue), the submitting process SIGKILLed: element 0's
    node dies under it (NODE_FAIL ~30 s later). The guard resubmits element 0 alone with
    --exclude=<that node>, its dependent waits for the retry, and the run's result is
    right; a client attaching afterwards sees DONE and the attempt."""
    where = tmp_path / "marks"
    where.mkdir()
    work = tmp_path / "work"
    opts = {"workdir": str(work), "env": site.env(requeue=False), "poll_max_s": 1.0}
    run_id = submit_and_die("lost_node_graph", [str(where)], **opts)
    wait_for(where / "0.first")
    node = (where / "0.first").read_text()
    assert node in site.nodes
    site.kill_node(node)
    layout = RunLayout.of(run_id, work)
    record_path = Path(layout.retry_record("aj0", 1))
    wait_for(record_path)
    site.restore_node(node)  # back in service: only --exclude keeps the retry off it
    record = json.loads(record_path.read_text())
    assert record["lost"]["0"]["state"] == "NODE_FAIL" and record["lost"]["0"]["node"] == node
    assert record["retried"]["indices"] == [0]
    assert f"--exclude={node}" in record["retried"]["flags"]
    assert "--array=0" in record["retried"]["flags"]
    with site.cluster(work, requeue=False) as c:
        run = Run.attach(run_id, c)
        (out,) = run.result()
        status = run.status()
    assert out == 0 + 10 + 20
    assert (where / "0.ran").read_text() != node
    assert sorted(p.name for p in where.glob("*.ran")) == ["0.ran", "1.ran", "2.ran"]
    assert status.state == "DONE"


# --------------------------------------------------------------------------- escalation


@task(mem="100M", retries=3, on_oom=2.0, time=3)
def needs_300mb(x: int) -> int:
    data = bytearray(300 * 1024 * 1024)
    for i in range(0, len(data), 4096):
        data[i] = 1
    return x + len(data) // (1024 * 1024)


def oom_graph():
    return total(needs_300mb.map([0, 1]))


@pytest.mark.slurm
def test_out_of_memory_retried_with_more_memory_succeeds_on_the_third_attempt(
    cluster_env, tmp_path
):
    """The acct cluster enforces memory (task/cgroup, ConstrainRAMSpace): a task that needs
    ~300 MB declares 100M with on_oom=2.0; the client is SIGKILLed after submitting. The
    guards resubmit at 200M, then 400M: the third attempt succeeds, the dependent runs,
    and the records and a client attaching later show the attempts and their requests."""
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    if "task/cgroup" not in Path(conf).read_text():
        pytest.skip("this test cluster does not enforce memory (task/none)")
    work = tmp_path / "work"
    opts = {"workdir": str(work), "env": {"SLURM_CONF": conf}, "poll_max_s": 0.5}
    run_id = submit_and_die("oom_graph", [], **opts)
    c = Cluster("slurm", workdir=work, env={"SLURM_CONF": conf}, poll_max_s=0.5)
    with c:
        run = Run.attach(run_id, c)
        (out,) = run.result()
        status = run.status()
        time.sleep(3)  # sacct records the last attempts' figures a little late
        usage = run.usage()
    assert out == 300 + 301
    elements = [e for e in usage.elements if e.array_job == "aj0"]
    for e in elements:  # every attempt and its request, in the usage report
        steps = [(a.number, a.request.mem_mb, a.state) for a in e.attempts]
        assert [m for _, m, _ in steps] == [100, 200, 400], steps
        assert [st for _, _, st in steps][:2] == ["OUT_OF_MEMORY"] * 2, steps
    assert "retried on the cluster: needs_300mb[0,1] attempt 2" in status.note, status.note
    layout = RunLayout.of(run_id, work)
    first = json.loads(Path(layout.retry_record("aj0", 1)).read_text())
    second = json.loads(Path(layout.retry_record("aj0", 2)).read_text())
    assert {v["state"] for v in first["lost"].values()} == {"OUT_OF_MEMORY"}
    assert first["retried"]["request"]["mem_mb"] == 200
    assert "--mem=200M" in first["retried"]["flags"]
    assert second["retried"]["request"]["mem_mb"] == 400
    assert not Path(layout.retry_record("aj0", 3)).exists()
    assert status.state == "DONE"


@pytest.mark.slurm
def test_a_client_that_stays_follows_the_attempts_instead_of_failing(cluster_env, tmp_path):
    """The same escalation with the client polling all along: an element that ended
    OUT_OF_MEMORY is not reported failed while its guard may retry it; the run ends DONE,
    and its status shows the attempts."""
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    if "task/cgroup" not in Path(conf).read_text():
        pytest.skip("this test cluster does not enforce memory (task/none)")
    c = Cluster("slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5)
    with c:
        run = submit(oom_graph(), cluster=c)
        (out,) = run.result()
        status = run.status()
    assert out == 300 + 301
    assert status.state == "DONE"


@task(mem="100M", retries=3, on_oom=2.0, max_mem="200M", time=3)
def needs_300mb_capped(x: int) -> int:
    return needs_300mb.unwrapped(x)


@pytest.mark.slurm
def test_escalation_stops_at_max_mem_and_the_error_says_so(cluster_env, tmp_path):
    """max_mem=200M: the second attempt (200M) runs out too, the guard gives up (its
    record says why), and the client raises the out-of-memory error naming the attempt
    and the reason; the dependent never runs."""
    from lazyslurm.errors import ElementOutOfMemoryError

    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    if "task/cgroup" not in Path(conf).read_text():
        pytest.skip("this test cluster does not enforce memory (task/none)")
    c = Cluster("slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5)
    with c, pytest.raises(ElementOutOfMemoryError) as info:
        submit(total(needs_300mb_capped.map([0])), cluster=c).result()
    msg = str(info.value)
    assert "attempt 2" in msg and "already max_mem" in msg, msg
    (run_dir,) = (tmp_path / "work" / "runs").iterdir()
    record = json.loads((run_dir / "retries" / "aj0.2.json").read_text())
    assert "already max_mem" in record["gave_up"]


@pytest.mark.slurm
@pytest.mark.site
def test_a_client_that_stays_sees_the_lost_node_retried_not_failed(site, tmp_path):
    """The node failure with the client polling all along: the element's NODE_FAIL is not
    reported as the run's failure (the guard may retry it); the run ends with the right
    result, and the status note names the attempt, the node and the exclusion."""
    where = tmp_path / "marks"
    where.mkdir()
    notes = []
    with site.cluster(tmp_path / "work", requeue=False) as c:
        run = submit(lost_node_graph(str(where)), cluster=c)
        wait_for(where / "0.first")
        node = (where / "0.first").read_text()
        site.kill_node(node)
        deadline = time.monotonic() + 300
        while (st := run.status()).state not in ("DONE", "FAILED", "CANCELLED"):
            assert time.monotonic() < deadline, st
            notes.append(st.note)
            time.sleep(1)
        notes.append(st.note)
        (out,) = run.result()
    assert out == 30
    assert (where / "0.ran").read_text() != node
    assert any(f"NODE_FAIL on {node}; --exclude={node}" in n for n in notes), notes[-3:]


@task(time=5, requeue=True, partition="lowcancel")
def preempted_once(x: int, where: str) -> int:
    node = os.environ.get("SLURMD_NODENAME", "?")
    first = Path(where, f"{x}.first")
    if x == 0 and not first.exists():  # element 0 waits on its first attempt: preempted
        first.write_text(node)
        time.sleep(600)
    Path(where, f"{x}.ran").write_text(node)
    return 10 * x


def preempted_graph(where: str):
    return total(preempted_once.map([(x, where) for x in range(2)]))


@pytest.mark.slurm
@pytest.mark.site
def test_preemption_that_cancels_is_resubmitted_on_the_cluster_with_requeue(site, tmp_path):
    """PreemptMode=CANCEL (partition lowcancel), requeue=True, the client SIGKILLed: a job
    of the high partition preempts an element (PREEMPTED). Its guard resubmits it (without
    counting against retries: requeue=True has none), the dependent waits for it, and the
    result is right."""
    where = tmp_path / "marks"
    where.mkdir()
    work = tmp_path / "work"
    opts = {"workdir": str(work), "env": site.env(), "poll_max_s": 1.0}
    run_id = submit_and_die("preempted_graph", [str(where)], **opts)
    wait_for(where / "0.first")
    node = (where / "0.first").read_text()
    site.preempt(node, seconds=3)
    layout = RunLayout.of(run_id, work)
    record_path = Path(layout.retry_record("aj0", 1))
    wait_for(record_path)
    record = json.loads(record_path.read_text())
    states = {v["state"] for v in record["lost"].values()}
    assert states == {"PREEMPTED"}, record
    with site.cluster(work) as c:
        run = Run.attach(run_id, c)
        (out,) = run.result()
    assert out == 10
    assert sorted(p.name for p in where.glob("*.ran")) == ["0.ran", "1.ran"]


@task(time=1, retries=1, on_timeout=2.0)
def ninety_seconds(x: int) -> int:
    time.sleep(90)
    return x


def timeout_graph():
    return total(ninety_seconds.map([7]))


# This scenario takes three minutes of Slurm's clock (a minute's limit, checked by
# slurmctld every 30 s, then 90 s more). Its run is submitted when the session's tests are
# collected (conftest.py), by a client that is SIGKILLed at once, as a user's would be; the
# test attaches to it when its turn comes, so the suite does not wait for it meanwhile.
EARLY: dict[str, tuple[str, Path]] = {}


def submit_timeout_run(conf: str) -> tuple[str, Path]:
    """Submit :func:`timeout_graph` with the client gone: its run id and work directory."""
    work = Path(tempfile.mkdtemp(prefix="lz-timeout-"))
    opts = {"workdir": str(work), "env": {"SLURM_CONF": conf}, "poll_max_s": 1.0}
    return submit_and_die("timeout_graph", [], **opts), work


@pytest.mark.slurm
def test_a_time_limit_hit_is_retried_with_more_time(cluster_env, tmp_path):
    """A task that runs 90 s with time=1 and on_timeout=2.0, the client SIGKILLed: the
    first attempt ends TIMEOUT after a minute, its guard resubmits it with --time=2, and
    the second attempt succeeds."""
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    early = EARLY.pop("timeout", None)
    run_id, work = early if early is not None else submit_timeout_run(conf)
    c = Cluster("slurm", workdir=work, env={"SLURM_CONF": conf}, poll_max_s=1.0)
    with c:
        (out,) = Run.attach(run_id, c).result()
    assert out == 7
    record = json.loads(Path(RunLayout.of(run_id, work).retry_record("aj0", 1)).read_text())
    assert record["lost"]["0"]["state"] == "TIMEOUT"
    assert record["retried"]["request"]["time_min"] == 2
    assert "--time=2" in record["retried"]["flags"]


def packed_lost_graph(where: str):
    return total(lost_once.map([(x, where) for x in range(4)], pack=2))


@pytest.mark.slurm
@pytest.mark.site
def test_a_packed_element_lost_with_its_node_is_resubmitted_whole(site, tmp_path):
    """pack=2 (four elements in two Slurm elements), JobRequeue=0, the client SIGKILLed:
    the node of the Slurm element running element 0 dies. The guard resubmits that Slurm
    element (index 0: elements 0 and 1) with --exclude; every result is right."""
    where = tmp_path / "marks"
    where.mkdir()
    work = tmp_path / "work"
    opts = {"workdir": str(work), "env": site.env(requeue=False), "poll_max_s": 1.0}
    run_id = submit_and_die("packed_lost_graph", [str(where)], **opts)
    wait_for(where / "0.first")
    node = (where / "0.first").read_text()
    site.kill_node(node)
    record_path = Path(RunLayout.of(run_id, work).retry_record("aj0", 1))
    wait_for(record_path)
    site.restore_node(node)
    record = json.loads(record_path.read_text())
    assert record["retried"]["indices"] == [0] and f"--exclude={node}" in record["retried"]["flags"]
    with site.cluster(work, requeue=False) as c:
        (out,) = Run.attach(run_id, c).result()
    assert out == 0 + 10 + 20 + 30
    assert (where / "0.ran").read_text() != node


@pytest.mark.slurm
@pytest.mark.site
def test_with_job_requeue_slurm_requeues_and_the_client_waits_instead_of_failing(site, tmp_path):
    """JobRequeue=1 (Slurm's default): Slurm requeues the lost element itself, while sacct
    still lists its first attempt's NODE_FAIL. With retries, the client waits (the guard
    has not run: the array job is not over), Slurm's second attempt finishes it, the
    guard finds nothing lost and writes no record. (Without retries this is the known
    limit of docs/reliability.md: the element is reported failed.)"""
    where = tmp_path / "marks"
    where.mkdir()
    with site.cluster(tmp_path / "work") as c:
        run = submit(lost_node_graph(str(where)), cluster=c)
        wait_for(where / "0.first")
        node = (where / "0.first").read_text()
        site.kill_node(node)
        (out,) = run.result()
    assert out == 30
    assert not Path(RunLayout.of(run.id, tmp_path / "work").retries_dir).exists()
