"""Dynamic expansion: tasks that return lazy values, maps over values of unknown length
(lazyslurm.dynamic). Embedded backends here; the real Slurm (subprocess and SSH) below."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from examples.parallelization_patterns import merge_results, process_chunk, split_dataset
from test_backends_slurm import env, slurm_cluster, ssh_cluster, ssh_options  # noqa: F401

from lazyslurm import Cluster, compute, submit, task
from lazyslurm.backends.base import RunHandle
from lazyslurm.dynamic import SubgraphRecord, extend_handle, renamed
from lazyslurm.errors import (
    BudgetExceededError,
    DynamicBudgetError,
    DynamicExpansionError,
    DynamicLimitError,
    ElementCancelledError,
    TaskCancelledError,
)
from lazyslurm.execute import Run
from lazyslurm.planning.planner import ArrayJob, make_plan

REPO = Path(__file__).resolve().parents[1]
SEED_TOTAL = sum(range(500))  # 124750: the seed's 500 items in 5 chunks of 100


@task
def double(x: int) -> int:
    return 2 * x


@task
def fan(n: int) -> list:
    """Returns a lazy list: one job per item (known only here)."""
    return [double(i) for i in range(n)]


@task
def nested(n: int):
    """Two levels: returns a job whose own value is lazy."""
    return fan(n)


@task
def total(xs: list) -> int:
    return sum(xs)


@task
def bad(x: int) -> int:
    if x == 2:
        raise ValueError(f"bad item {x}")
    return x


@task
def fan_bad(n: int):
    return [bad(i) for i in range(n)]


@task
def nap(x: int) -> int:
    time.sleep(3)
    return x


@task
def slow_fan(n: int) -> list:
    return [nap(i) for i in range(n)]


@task
def forever(n: int):
    return forever(n + 1)


class Gate:
    """An argument that, once armed, waits while it is pickled until ``n`` of its kind are
    being pickled at once (files in ``where``; 60 s at most). A task arms the one it passes
    to the job it returns: the expansions of a map's elements then line up when they
    encode their subgraphs, right before they check and reserve the run's limits."""

    def __init__(self, where: str, n: int) -> None:
        self.where, self.n, self.armed = where, n, False

    def __getstate__(self) -> dict:
        if self.armed:
            Path(self.where, f"{os.getpid()}-{os.urandom(4).hex()}").touch()
            deadline = time.monotonic() + 60
            while len(os.listdir(self.where)) < self.n and time.monotonic() < deadline:
                time.sleep(0.01)
        return {**self.__dict__, "armed": False}


@task
def one_more(gate: Gate, i: int) -> int:
    return i


@task
def gated(i: int, where: str, n: int):
    """Returns a one-task subgraph, encoded at the same moment as its n - 1 siblings'."""
    gate = Gate(where, n)
    job = one_more(gate, i)  # its key pickles the gate unarmed
    gate.armed = True
    return job


@task(time="04:00:00")
def four_hours(i: int) -> int:
    return i


@task(time="00:01:00")
def one_minute(i: int) -> int:
    return i


@task(time="00:01:00")
def plans(task_name: str, lo: int, hi: int):
    """A one-minute task returning a map whose worst case is decided at run time."""
    chosen = {"four_hours": four_hours, "one_minute": one_minute}[task_name]
    return chosen.map(range(lo, hi))


@task(time="00:01:00")
def timed_total(xs: list) -> int:
    return sum(xs)


@task(time="00:01:00")
def untimed(n: int) -> list:
    return [double(i) for i in range(n)]  # double sets no time: its worst case is unbounded


@task(time="00:01:00")
def plans_after(_earlier: list, task_name: str, lo: int, hi: int):
    chosen = {"four_hours": four_hours, "one_minute": one_minute}[task_name]
    return chosen.map(range(lo, hi))


def pattern1():
    """The seed's pattern 1 fully lazy, without nout."""
    return merge_results(process_chunk.map(split_dataset("large_dataset.csv", num_chunks=5)))


@pytest.fixture(params=["local", "sync"])
def embedded(request, tmp_path):
    with Cluster(request.param, workdir=tmp_path, max_workers=2) as c:
        yield c


# --------------------------------------------------------------------------- pure parts


def test_renamed_prefixes_ids_and_edges():
    """Renaming a plan prefixes every array job id, its dependencies and ordering edges."""
    p = renamed(make_plan([total(double.map([1, 2]))]), "aj3_1_")
    assert [aj.id for aj in p.array_jobs] == ["aj3_1_aj0", "aj3_1_aj1"]
    assert p.array_jobs[1].dependencies == (("afterok", "aj3_1_aj0"),)
    assert set(p.members) == {"aj3_1_aj0", "aj3_1_aj1"}


def test_extend_handle_inserts_after_parent_and_adds_edges():
    """A record's array jobs follow the array job that made them; dependents gain afterok."""
    handle = RunHandle(
        "r",
        (
            ArrayJob("aj0", "f", ("a",)),
            ArrayJob("aj1", "g", ("b",), dependencies=(("afterok", "aj0"),)),
        ),
        {"aj0": "10", "aj1": "11"},
    )
    rec = SubgraphRecord(
        parent=("aj0", 0),
        key="a",
        task="f",
        depth=1,
        tasks=1,
        outputs=["c"],
        final=["aj0_0_aj0"],
        array_jobs=[ArrayJob("aj0_0_aj0", "d", ("c",)).to_manifest()],
        job_ids={"aj0_0_aj0": "12"},
        added={"aj1": ["aj0_0_aj0"]},
    )
    assert SubgraphRecord.from_json(rec.to_json()) == rec  # the file's form, typed back
    out = extend_handle(handle, [rec])
    assert [aj.id for aj in out.array_jobs] == ["aj0", "aj0_0_aj0", "aj1"]
    assert [aj.stage for aj in out.array_jobs] == [0, 1, 2]  # drawn below its maker
    assert out.array_jobs[2].dependencies[-1] == ("afterok", "aj0_0_aj0")
    assert out.job_ids["aj0_0_aj0"] == "12"
    assert extend_handle(out, [rec]) is out


# --------------------------------------------------------------------------- embedded


def test_task_returning_jobs_gives_their_values(embedded):
    """A task that returns a list of jobs has the list of their results as its value."""
    assert compute(total(fan(4)), fan(3)) == (12, [0, 2, 4])


def test_map_over_unknown_length_is_expanded(embedded):
    """process.map(split(...)) without nout maps once the split has run (the seed's total)."""
    (merged,) = compute(pattern1())
    assert merged["total_sum"] == SEED_TOTAL and merged["total_chunks"] == 5


def test_nested_two_levels(embedded):
    """A task returning a job whose value is itself lazy: both levels are followed."""
    assert compute(total(nested(5)), nested(2)) == (20, [0, 2])


def test_failing_subgraph_fails_the_node_with_the_original_error(embedded):
    """A failure inside the subgraph fails the dynamic node with the original exception;
    its dependents are cancelled."""
    node = fan_bad(4)
    with pytest.raises(ValueError, match="bad item 2") as info:
        compute(total(node))
    assert total(node).key in {c.key for c in info.value.cancelled}
    assert all(isinstance(c, TaskCancelledError) for c in info.value.cancelled)


def test_depth_limit_is_a_clear_error(tmp_path):
    """A runaway recursion stops at dynamic_max_depth with DynamicLimitError naming the fix."""
    with (
        Cluster("local", workdir=tmp_path, dynamic_max_depth=3),
        pytest.raises(DynamicLimitError, match="dynamic_max_depth"),
    ):
        compute(forever(0))


def test_size_limit_is_a_clear_error(tmp_path):
    """Expansions adding more tasks than dynamic_max_tasks fail with DynamicLimitError."""
    with (
        Cluster("sync", workdir=tmp_path, dynamic_max_tasks=3),
        pytest.raises(DynamicLimitError, match="dynamic_max_tasks"),
    ):
        compute(fan(5))


def _limit_race(c: Cluster, tmp_path: Path) -> Path:
    """12 elements of a map each return a one-task subgraph at the same moment under
    dynamic_max_tasks=10: exactly 10 expand, 2 fail with DynamicLimitError, no
    reservation is left. Returns the run's dynamic/ directory."""
    where = tmp_path / "gate"
    where.mkdir()
    run = submit(gated.map([(i, str(where), 12) for i in range(12)]), cluster=c)
    snap = run.wait()
    with pytest.raises(DynamicLimitError, match="dynamic_max_tasks"):
        run.raise_failures(snap)
    dyn = Path(c.workdir) / "runs" / run.id / "dynamic"
    assert len(list(dyn.glob("*.json"))) == 10
    assert list(dyn.glob("*.reserved")) == []
    states = [s for states in snap.states.values() for s in states]
    assert states.count("FAILED") == 2 and states.count("DONE") == 20  # 10 + their subgraphs
    return dyn


def test_the_task_limit_holds_under_concurrent_expansions(tmp_path):
    """dynamic_max_tasks is checked and reserved under the run's lock: expansions running
    at the same time (local pool workers) never add more than the limit (12 > 10 was)."""
    with Cluster("local", workdir=tmp_path / "work", max_workers=12, dynamic_max_tasks=10) as c:
        _limit_race(c, tmp_path)


def test_the_budget_is_enforced_on_the_node(tmp_path):
    """A run's max_core_hours bounds what its expansions add: a subgraph whose worst case
    (100 x 4 h x 1 cpu = 400 core-hours) exceeds a budget of 1 is refused where the task
    ran (DynamicBudgetError: a BudgetExceededError and a DynamicLimitError); nothing of
    it is written or run."""
    with Cluster("local", workdir=tmp_path / "work", max_core_hours=1) as c:
        run = submit(plans("four_hours", 0, 100), cluster=c)
        with pytest.raises(BudgetExceededError, match="max_core_hours=1") as info:
            run.result()
    err = info.value
    assert isinstance(err, DynamicBudgetError) and isinstance(err, DynamicLimitError)
    assert err.worst_core_hours == pytest.approx(400 + 1 / 60) and err.max_core_hours == 1
    assert "four_hours" in str(err) and "Nothing of it was submitted" in str(err)
    root = Path(c.workdir) / "runs" / run.id
    assert [p.name for p in (root / "dynamic").iterdir() if not p.name.startswith(".")] == []
    assert sorted(p.name for p in (root / "specs").iterdir()) == ["aj0.spec"]


def test_the_budget_counts_the_plan_and_earlier_expansions(tmp_path):
    """What the run committed (its plan, 2 one-minute tasks) and what earlier expansions
    added (30 one-minute tasks: 0.5 core-hour) count: a second expansion of 0.5 exceeds a
    budget of 1 and is refused; a subgraph without a time limit is unbounded: refused."""
    with Cluster("local", workdir=tmp_path / "work", max_core_hours=1) as c:
        first = plans("one_minute", 0, 30)
        with pytest.raises(DynamicBudgetError, match=r"already committed 0\.533") as info:
            compute(plans_after(first, "one_minute", 30, 60), cluster=c)
        assert info.value.worst_core_hours == pytest.approx(2 / 60 + 1.0)
        with pytest.raises(DynamicBudgetError, match=r"unbounded.*'double' has no time limit"):
            compute(untimed(2), cluster=c)


def test_status_and_attach_show_the_expanded_subgraph(tmp_path):
    """Run.status() lists the subgraph's array jobs after the one that made them, and a
    re-attached run returns the same value through the redirect."""
    with Cluster("local", workdir=tmp_path, max_workers=2) as c:
        run = submit(total(fan(3)))
        assert run.result() == (6,)
        status = run.status()
    assert list(status.array_jobs) == ["aj0", "aj0_0_aj0", "aj1"]
    assert status.array_jobs["aj0_0_aj0"] == ("double", {"DONE": 3})
    source = run.visualize(level="jobs").source
    assert "aj0_0_aj0" in source and "returned" in source
    assert "double" in run.visualize().source
    with Cluster("local", workdir=tmp_path) as c2:
        again = Run.attach(run.id, c2)
        assert [aj.id for aj in again.array_jobs] == ["aj0", "aj0_0_aj0", "aj1"]
        assert again.result() == (6,)
    assert c is not c2


def test_cli_status_lists_the_subgraph(tmp_path):
    """`lazyslurm status RUN` shows a subgraph's array jobs after the one that made them."""
    with Cluster("local", workdir=tmp_path, max_workers=2):
        run = submit(total(fan(3)))
        run.result()
    base = {k: v for k, v in os.environ.items() if k != "LAZYSLURM_PROFILE"}
    res = subprocess.run(
        [sys.executable, "-m", "lazyslurm", "status", run.id],
        env={**base, "LAZYSLURM_WORKDIR": str(tmp_path), "PYTHONPATH": str(REPO)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = [line.split()[:3] for line in res.stdout.splitlines()[2:]]
    assert rows == [["aj0", "fan", "1"], ["aj0_0_aj0", "double", "3"], ["aj1", "total", "1"]]


def test_cross_run_cache_follows_the_redirect(tmp_path):
    """With cache=True a later session reuses a dynamic node (its redirect points into the
    earlier run), both as an output and as a consumer's input."""
    with Cluster("local", workdir=tmp_path, cache=True):
        run1 = submit(fan(4))
        assert run1.result() == ([0, 2, 4, 6],)
    with Cluster("local", workdir=tmp_path, cache=True) as c:
        run2 = submit(fan(4), total(fan(4)))
        assert run2.result() == ([0, 2, 4, 6], 12)
        assert c.session.computed()[fan(4).key] == run1.id
        assert [aj.name for aj in run2.array_jobs] == ["total"]


# --------------------------------------------------------------------------- real Slurm


def _run_jobs(run_id: str, env: dict, accounting: bool = True) -> list[str]:  # noqa: F811
    """squeue lines (id|state|reason) of the run's jobs still in Slurm's queue."""
    suffix = "" if accounting else "_NOACCT"
    out = subprocess.run(
        ["squeue", "-h", "-o", "%i|%j|%T|%r"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": env[f"LAZYSLURM_TEST_SLURM_CONF{suffix}"]},
        check=True,
    ).stdout
    return [ln for ln in out.splitlines() if f"lz-{run_id}-" in ln]


@pytest.mark.slurm
@pytest.mark.parametrize("via", ["slurm", pytest.param("ssh", marks=pytest.mark.ssh)])
def test_pattern1_client_killed_then_attached(env, tmp_path, via):  # noqa: F811
    """Pattern 1 fully lazy without nout: the client is SIGKILLed right after submit();
    a new process attaches and gets 124750; no job waits on a dependency that can never
    be satisfied. On Slurm here, and over SSH with nothing installed on the cluster."""
    workdir = tmp_path / "work"
    if via == "ssh":
        options = {"poll_max_s": 0.5, **ssh_options(env)}
    else:
        options = {"workdir": str(workdir), "env": {"SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]}}
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO / "tests")!r})
        from lazyslurm import Cluster, submit
        from test_dynamic import pattern1
        c = Cluster({via!r}, **{options!r})
        run = submit(pattern1(), cluster=c)
        print(run.id, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert run_id
    c = slurm_cluster(env, tmp_path) if via == "slurm" else ssh_cluster(env)
    seen_never = []
    run = Run.attach(run_id, c)
    deadline = time.monotonic() + 240
    while not (snap := run.poll()).finished or run.expand():
        seen_never += [ln for ln in _run_jobs(run_id, env) if "NeverSatisfied" in ln]
        assert time.monotonic() < deadline
        time.sleep(0.3)
    (merged,) = Run.attach(run_id, c).result()
    assert merged["total_sum"] == SEED_TOTAL and merged["total_chunks"] == 5
    assert seen_never == [] and _run_jobs(run_id, env) == []
    ids = [aj.id for aj in Run.attach(run_id, c).array_jobs]
    assert ids == ["aj0", "aj1", "aj1_0_aj0", "aj2"], ids
    assert all(s == "DONE" for states in snap.states.values() for s in states)


@pytest.mark.slurm
@pytest.mark.parametrize("accounting", [True, False], ids=["sacct", "squeue"])
def test_nested_two_levels_on_slurm(env, tmp_path, accounting):  # noqa: F811
    """Two levels of dynamic tasks on Slurm: the outer consumer waits for the inner subgraph."""
    with slurm_cluster(env, tmp_path, accounting=accounting) as c:
        run = submit(total(nested(5)), cluster=c)
        assert run.result() == (20,)
    records = [
        json.loads(p.read_text())
        for p in (tmp_path / "work" / "runs" / run.id / "dynamic").glob("*.json")
    ]
    assert sorted(r["depth"] for r in records) == [1, 2]
    inner = next(r for r in records if r["depth"] == 2)
    assert inner["added"] == {"aj1": inner["final"]}  # the outer consumer waits for it
    ids = [aj.id for aj in run.array_jobs]
    assert ids == ["aj0", "aj0_0_aj0", "aj0_0_aj0_0_aj0", "aj1"], ids
    assert run.status().state == "DONE"


@pytest.mark.slurm
def test_status_shows_the_subgraph_while_it_runs_on_slurm(env, tmp_path):  # noqa: F811
    """Run.status() of a live Slurm run lists a subgraph as soon as its task submitted it,
    while it still runs, nested after the array job that made it."""
    with slurm_cluster(env, tmp_path) as c:
        run = submit(total(slow_fan(2)), cluster=c)
        deadline = time.monotonic() + 120
        while "aj0_0_aj0" not in (status := run.status()).array_jobs:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert status.state != "DONE"  # the children nap: seen as they appear
        assert list(status.array_jobs) == ["aj0", "aj0_0_aj0", "aj1"]
        assert run.result() == (1,)


@pytest.mark.slurm
@pytest.mark.parametrize("accounting", [True, False], ids=["sacct", "squeue"])
def test_failing_subgraph_on_slurm(env, tmp_path, accounting):  # noqa: F811
    """A failing subgraph on Slurm: the original error is raised, the dynamic node's
    dependents are cancelled by Slurm and nothing of the run is left in the queue."""
    with slurm_cluster(env, tmp_path, accounting=accounting) as c:
        node = fan_bad(4)
        run = submit(total(node), cluster=c)
        with pytest.raises(ValueError, match="bad item 2") as info:
            run.result()
    assert total(node).key in {x.key for x in info.value.cancelled}
    assert [ln for ln in _run_jobs(run.id, env, accounting) if "PENDING" in ln] == []


@pytest.mark.slurm
def test_the_task_limit_holds_under_concurrent_expansions_on_slurm(env, tmp_path):  # noqa: F811
    """On Slurm, 12 elements expanding at once under dynamic_max_tasks=10: 10 subgraphs
    are submitted, never 12; the other 2 elements fail with DynamicLimitError."""
    with slurm_cluster(env, tmp_path, dynamic_max_tasks=10) as c:
        dyn = _limit_race(c, tmp_path)
    assert len(list(dyn.glob("*_ids"))) == 10  # written by each subgraph's submission


@pytest.mark.slurm
def test_the_budget_is_enforced_on_the_node_on_slurm(env, tmp_path):  # noqa: F811
    """On Slurm, a subgraph of 400 core-hours under max_core_hours=1 is refused on the
    compute node: nothing of it is submitted, the dependent is cancelled."""
    with slurm_cluster(env, tmp_path, max_core_hours=1) as c:
        node = plans("four_hours", 0, 100)
        run = submit(timed_total(node), cluster=c)
        with pytest.raises(DynamicBudgetError, match="400 core-hours") as info:
            run.result()
    assert timed_total(node).key in {x.key for x in info.value.cancelled}
    dyn = tmp_path / "work" / "runs" / run.id / "dynamic"
    assert [p.name for p in dyn.iterdir() if not p.name.startswith(".")] == []  # none sent
    assert [ln for ln in _run_jobs(run.id, env) if "PENDING" in ln] == []


def _fake_squeue(tmp_path: Path, failures: int, hang: bool = False) -> str:
    """A directory holding an ``squeue`` that fails ``failures`` times (as an unreachable
    slurmctld does), then runs the real one (or, with ``hang``, never answers); the setup
    line putting it first on PATH."""
    fake = tmp_path / "fakebin"
    fake.mkdir()
    real = shutil.which("squeue")
    assert real is not None
    count = fake / "failures"
    (fake / "squeue").write_text(
        "#!/bin/sh\n"
        + ("exec sleep 600\n" if hang else "")
        + f"n=$(cat {shlex.quote(str(count))} 2>/dev/null || echo 0)\n"
        f'if [ "$n" -lt {failures} ]; then\n'
        f"  echo $((n + 1)) > {shlex.quote(str(count))}\n"
        "  echo 'squeue: error: Unable to contact slurm controller (connect failure)' >&2\n"
        "  exit 1\n"
        "fi\n"
        f'exec {shlex.quote(real)} "$@"\n'
    )
    (fake / "squeue").chmod(0o755)
    return f"export PATH={shlex.quote(str(fake))}:$PATH"


@pytest.mark.slurm
def test_a_failing_squeue_fails_the_expansion_and_cancels_the_subgraph(env, tmp_path):  # noqa: F811
    """When squeue keeps failing where the task runs, the dependents cannot be made to
    wait for the subgraph: the task fails with DynamicExpansionError naming squeue and
    Slurm's words (after retrying for unreachable_timeout_s, with backoff), the subgraph is
    cancelled before any of it runs, the dependent is cancelled (it used to start at once
    and fail, blamed for the missing results)."""
    setup = _fake_squeue(tmp_path, failures=1000)
    with slurm_cluster(env, tmp_path, setup=[setup], unreachable_timeout_s=6) as c:
        node = fan(3)
        run = submit(total(node), cluster=c)
        said = r"squeue.*failed \(exit 1: .*Unable to contact slurm controller"
        with pytest.raises(DynamicExpansionError, match=said) as info:
            run.result()
    assert info.value.key == node.key
    assert total(node).key in {x.key for x in info.value.cancelled}
    root = tmp_path / "work" / "runs" / run.id
    assert (root / "dynamic" / "aj0_0_ids").exists()  # it was submitted, then cancelled
    assert not list((root / "dynamic").glob("*.json"))
    assert not list((root / "dynamic").glob("*.reserved"))
    assert not any((root / "results").glob("double-*"))  # held, cancelled: never ran
    assert [ln for ln in _run_jobs(run.id, env) if "PENDING" in ln] == []


def _slurm_state(job_id: str, test_env: dict) -> str:
    """The state squeue shows for one job (GONE: no longer listed)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": test_env["LAZYSLURM_TEST_SLURM_CONF"]},
        check=False,
    ).stdout.split()
    return out[0] if out else "GONE"


@pytest.mark.slurm
def test_a_held_subgraph_is_cancelled_when_its_task_is_stopped(env, tmp_path):  # noqa: F811
    """The subgraph is submitted held and released once the dependents wait for it. If
    Slurm stops the task meanwhile (here scancel while squeue hangs), the subgraph is
    cancelled: held jobs nobody releases would stay queued forever."""
    setup = _fake_squeue(tmp_path, failures=0, hang=True)
    with slurm_cluster(env, tmp_path, setup=[setup]) as c:
        run = submit(total(fan(3)), cluster=c)
        root = tmp_path / "work" / "runs" / run.id
        ids = root / "dynamic" / "aj0_0_ids"
        deadline = time.monotonic() + 120
        while not ids.exists():
            assert time.monotonic() < deadline, "the subgraph was never submitted"
            time.sleep(0.2)
        held = ids.read_text().split("=", 1)[1].strip()
        assert _slurm_state(held, env) == "PENDING"
        fan_id = dict(p.split("=") for p in (root / "jobids").read_text().split())["aj0"]
        subprocess.run(
            ["scancel", fan_id],
            env={**os.environ, "SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]},
            check=True,
        )
        deadline = time.monotonic() + 60
        while _slurm_state(held, env) == "PENDING":
            assert time.monotonic() < deadline, "the held subgraph was left in the queue"
            time.sleep(0.5)
        with pytest.raises(ElementCancelledError, match="'fan'"):
            run.result()
    assert _slurm_state(held, env) in ("CANCELLED", "GONE")


@pytest.mark.slurm
def test_a_squeue_failing_once_is_retried(env, tmp_path):  # noqa: F811
    """An squeue that fails once (slurmctld busy) is tried again: the dependent is made
    to wait for the subgraph, and the run gives the right value."""
    setup = _fake_squeue(tmp_path, failures=1)
    with slurm_cluster(env, tmp_path, setup=[setup]) as c:
        run = submit(total(fan(3)), cluster=c)
        assert run.result() == (6,)
    assert (tmp_path / "fakebin" / "failures").read_text().strip() == "1"
    (record,) = (tmp_path / "work" / "runs" / run.id / "dynamic").glob("*.json")
    data = json.loads(record.read_text())
    assert data["added"] == {"aj1": data["final"]}


@pytest.mark.slurm
def test_cross_run_cache_on_slurm(env, tmp_path):  # noqa: F811
    """A later session with cache=True reuses an expanded node from an earlier Slurm run."""
    with slurm_cluster(env, tmp_path, cache=True) as c:
        assert compute(fan(3), cluster=c) == ([0, 2, 4],)
    with slurm_cluster(env, tmp_path, cache=True) as c:
        run = submit(total(fan(3)), cluster=c)
        assert run.result() == (6,)
        assert [aj.name for aj in run.array_jobs] == ["total"]


@pytest.mark.slurm
@pytest.mark.ssh
def test_pattern1_over_ssh(env):  # noqa: F811
    """Pattern 1 without nout over SSH, nothing installed on the cluster (by-value
    packaging): the cluster-side runner plans and submits the map with the staged code."""
    with ssh_cluster(env) as c:
        (merged,) = compute(pattern1(), cluster=c)
    assert merged["total_sum"] == SEED_TOTAL


@pytest.mark.parametrize(
    ("launcher", "ranks", "runner"),
    [
        ((), 1, None),
        (("podman", "run", "--rm", "img:1"), 1, None),
        ((), 2, None),
        ((), 1, "/w x/lazyslurm/runner/__main__.py"),
        ((), 2, "/w/lazyslurm/runner/__main__.py"),
    ],
)
def test_children_inherit_the_parents_interpreter_launcher_and_setup(
    tmp_path, launcher, ranks, runner
):
    """A subgraph's job scripts start the runner as the parent's did: same interpreter,
    same container launcher, same setup lines (also from a multi-rank parent's script),
    by path when the parent's was."""
    from lazyslurm.backends.slurm.render import job_script, read_job_script
    from lazyslurm.graph.resources import Resources
    from lazyslurm.store import RunLayout

    layout = RunLayout.of("r1", tmp_path)
    layout.make_dirs()
    res = Resources.from_options(ntasks=ranks) if ranks > 1 else Resources.from_options()
    aj = ArrayJob("aj0", "t", ("k",), res)
    text = job_script(
        aj, run_id="r1", layout=layout, python="/opt/py 3/python", launcher=launcher,
        setup=["export A='1 2'", "cd /x"], runner=runner,
    )  # fmt: skip
    Path(layout.job_script("aj0")).write_text(text)
    start = read_job_script(Path(layout.job_script("aj0")).read_text())
    assert start.runner == runner
    assert start.python == "/opt/py 3/python" and start.launcher == tuple(launcher)
    assert start.setup == ("export A='1 2'", "cd /x")
