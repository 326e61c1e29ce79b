"""The ``lazyslurm`` command line, on runs made by the local backend.

Runs are made first with ``lazyslurm.submit`` on a local cluster; the command line then
finds them through a cluster profile (in a project's pyproject.toml) pointing at that work
directory, as a user's later shell session would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lazyslurm
from lazyslurm import Cluster, Run, submit, task
from lazyslurm.cli import main

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot not installed")
ROOT = Path(lazyslurm.__file__).resolve().parents[1]


@task
def inc(x):
    return x + 1


@task
def total(xs):
    return sum(xs)


@task
def noisy(n):
    for i in range(n):
        print(f"out line {i}")
        print(f"err line {i}", file=sys.stderr)
    msg = f"noisy failed after {n} lines"
    raise ValueError(msg)


@task
def sleepy(seconds):
    time.sleep(seconds)
    return seconds


# --------------------------------------------------------------------------- fixtures


class Store:
    """A work directory holding one finished and one failed run."""

    def __init__(self, workdir: Path, done: str, failed: str) -> None:
        self.workdir = workdir
        self.done = done
        self.failed = failed


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    workdir = tmp_path_factory.mktemp("store") / "work"
    with Cluster("local", workdir=workdir, max_workers=2) as cl:
        done = submit(total(inc.map(range(3))), cluster=cl, label="sweep", progress=False)
        done.wait()
        failed = submit(noisy(5), cluster=cl, progress=False)
        failed.wait()
    return Store(workdir, done.id, failed.id)


@pytest.fixture(autouse=True)
def isolated(private_home) -> Path:
    """Every test here runs with a private home and no profile selected."""
    return private_home


@pytest.fixture
def project(tmp_path, monkeypatch, store) -> Path:
    """A project directory (the current directory) whose profile ``work`` reads the store."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [project]
        name = "demo"

        [tool.lazyslurm.profiles.work]
        backend = "local"
        workdir = "{store.workdir}"

        [tool.lazyslurm.profiles.scratch]
        workdir = "scratch"

        [tool.lazyslurm.profiles.broken]
        backend = "local"
        max_workers = "four"
    """)
    )
    monkeypatch.chdir(root)
    return root


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- runs


def test_runs_lists_the_store_newest_first(project, store, capsys):
    code, out, err = run_cli(capsys, "runs", "--cluster", "work")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["RUN", "STARTED", "STATE", "TASKS", "DONE", "FAILED", "LABEL"]
    assert [line.split()[0] for line in lines[1:]] == [store.failed, store.done]
    assert lines[1].split()[3:6] == ["FAILED", "1", "0"]
    assert lines[2].split()[3:] == ["DONE", "4", "4", "0", "sweep"]
    # aligned: the STATE column starts at the same offset on every line
    starts = [lines[0].index("STATE")] + [
        line.index(w) for line, w in zip(lines[1:], ("FAILED", "DONE"), strict=True)
    ]
    assert len(set(starts)) == 1


def test_runs_of_an_empty_store(project, capsys):
    code, out, _ = run_cli(capsys, "runs", "--cluster", "scratch")
    assert code == 0
    assert out.strip() == f"no runs in {project / 'scratch'}"


def test_python_m_lazyslurm_runs(project, store, isolated):
    """The entry point works as a program, from the project directory."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    res = subprocess.run(
        [sys.executable, "-m", "lazyslurm", "runs", "--cluster", "work"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert store.done in res.stdout and store.failed in res.stdout
    assert "sweep" in res.stdout


# --------------------------------------------------------------------------- status


def test_status_of_a_finished_run(project, store, capsys):
    code, out, err = run_cli(capsys, "status", store.done, "--cluster", "work")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == f"run {store.done}: DONE, 4/4 done"
    assert lines[1].split() == [
        "ARRAY",
        "JOB",
        "TASK",
        "ELEMENTS",
        "DONE",
        "RUNNING",
        "PENDING",
        "FAILED",
        "CANCELLED",
    ]
    assert lines[2].split() == ["aj0", "inc", "3", "3", "0", "0", "0", "0"]
    assert lines[3].split() == ["aj1", "total", "1", "1", "0", "0", "0", "0"]
    assert "failed" not in out


def test_status_of_a_failed_run_exits_1_and_shows_the_error(project, store, capsys):
    code, out, _ = run_cli(capsys, "status", store.failed, "--cluster", "work")
    assert code == 1
    assert out.startswith(f"run {store.failed}: FAILED, 0/1 done")
    assert "failed (1):" in out
    assert "aj0:0" in out and "ValueError: noisy failed after 5 lines" in out
    assert f"lazyslurm logs {store.failed} noisy-" in out


def test_an_unknown_run_is_one_line_without_a_traceback(project, capsys):
    code, out, err = run_cli(capsys, "status", "20990101-000000-abcdef", "--cluster", "work")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("lazyslurm status: error: no run '20990101-000000-abcdef'")


@pytest.mark.parametrize("how", ["truncated", "empty"])
def test_a_damaged_manifest_is_one_line_exit_2_and_a_corrupt_run(project, capsys, how):
    """`status` of a run whose manifest.json was cut short: one line naming the file and
    what to do, exit 2 (no traceback); `runs` and `runs --json` show it as CORRUPT."""
    import json

    workdir = project / "scratch"
    with Cluster("local", workdir=workdir, max_workers=1) as cl:
        bad = submit(inc(1), cluster=cl, progress=False)
        good = submit(inc(2), cluster=cl, progress=False)
        bad.wait()
        good.wait()
    path = workdir / "runs" / bad.id / "manifest.json"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncated" else b"")
    code, out, err = run_cli(capsys, "status", bad.id, "--cluster", "scratch")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"lazyslurm status: error: the manifest of run {bad.id} ({path}, ")
    assert f"rm -r {path.parent}" in err
    code, out, _ = run_cli(capsys, "runs", "--cluster", "scratch")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:3]}
    assert rows[bad.id][3:6] == ["CORRUPT", "1", "1"] and rows[good.id][3] == "DONE"
    assert f"  {bad.id}: manifest.json is {how}" in out.splitlines()
    code, out, _ = run_cli(capsys, "runs", "--json", "--cluster", "scratch")
    listed = {r["id"]: r for r in json.loads(out)}
    assert listed[bad.id]["state"] == "CORRUPT"
    assert listed[bad.id]["problem"] == f"manifest.json is {how}"
    assert listed[good.id]["problem"] is None


def test_a_damaged_outputs_file_is_one_line_exit_2(project, capsys):
    """`status` of a run whose outputs.pkl was cut short: one line naming the file."""
    workdir = project / "scratch"
    with Cluster("local", workdir=workdir, max_workers=1) as cl:
        run = submit(inc(1), cluster=cl, progress=False)
        run.wait()
    path = workdir / "runs" / run.id / "outputs.pkl"
    path.write_bytes(path.read_bytes()[:10])
    code, out, err = run_cli(capsys, "status", run.id, "--cluster", "scratch")
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and f"the outputs file of run {run.id} ({path}" in err


# --------------------------------------------------------------------------- logs


def test_logs_by_prefix_array_index_and_key(project, store, capsys):
    code, out, err = run_cli(capsys, "logs", store.failed, "noisy", "--cluster", "work")
    assert code == 0, err
    assert out == "".join(f"out line {i}\n" for i in range(5))
    key = Run.attach(store.failed, Cluster.from_profile("work")).array_jobs[0].keys[0]
    for node in ("aj0:0", key, key[:8]):
        assert run_cli(capsys, "logs", store.failed, node, "--cluster", "work")[1] == out


def test_logs_stderr_and_tail(project, store, capsys):
    code, err_log, _ = run_cli(
        capsys, "logs", store.failed, "aj0:0", "--stderr", "--cluster", "work"
    )
    assert code == 0
    assert "err line 0" in err_log and "ValueError: noisy failed after 5 lines" in err_log
    assert "out line" not in err_log
    code, out, _ = run_cli(
        capsys, "logs", store.failed, "aj0:0", "--tail", "2", "--cluster", "work"
    )
    assert out == "out line 3\nout line 4\n"
    code, out, _ = run_cli(
        capsys, "logs", store.failed, "aj0:0", "--stderr", "--tail", "1", "--cluster", "work"
    )
    assert out == err_log.splitlines(keepends=True)[-1]
    code, out, err = run_cli(
        capsys, "logs", store.failed, "aj0:0", "--tail", "0", "--cluster", "work"
    )
    assert (code, out) == (0, "")
    assert "no stdout output" in err


def test_logs_json_has_both_streams(project, store, capsys):
    """`logs --json`: the run, the node's key and both streams (cut by --tail)."""
    code, out, err = run_cli(
        capsys, "logs", store.failed, "aj0:0", "--json", "--tail", "2", "--cluster", "work"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["run"] == store.failed and data["node"].startswith("noisy-")
    assert data["stdout"] == "out line 3\nout line 4\n"
    assert data["stderr"].count("\n") == 2


def test_logs_of_an_element_without_output(project, store, capsys):
    code, out, err = run_cli(capsys, "logs", store.done, "aj1:0", "--cluster", "work")
    assert (code, out) == (0, "")
    assert "total-" in err and "no stdout output" in err


@pytest.mark.parametrize(
    ("node", "words"),
    [
        ("inc", "'inc' matches 3 nodes"),  # ambiguous prefix
        ("nothing", "no node 'nothing'"),
        ("aj0:7", "array job aj0 (inc) of run"),
        ("aj0:x", "has elements 0-2, not 'x'"),
    ],
)
def test_logs_of_a_node_that_is_not_one(project, store, capsys, node, words):
    code, out, err = run_cli(capsys, "logs", store.done, node, "--cluster", "work")
    assert code == 2 and out == ""
    assert words in err and err.count("\n") == 1


# --------------------------------------------------------------------------- cancel


def test_cancel_stops_a_running_run(tmp_path, capsys):
    """Without a profile the command line uses the default cluster (here: the one this
    process submitted to, so its local workers can be stopped)."""
    run = submit(total(sleepy.map([30, 31])), progress=False)
    deadline = time.monotonic() + 30
    while run.status().counts.get("RUNNING", 0) == 0:
        assert time.monotonic() < deadline, "the run never started"
        time.sleep(0.05)
    code, out, err = run_cli(capsys, "cancel", run.id)
    assert code == 0, err
    assert out.strip() == f"cancelled run {run.id}: 3 of 3 elements had not finished"
    t0 = time.monotonic()
    snap = run.wait(timeout=20)
    assert time.monotonic() - t0 < 10
    assert snap is not None and snap.counts_total() == {"CANCELLED": 3}
    code, out, _ = run_cli(capsys, "status", run.id)
    assert code == 1 and f"run {run.id}: CANCELLED" in out
    code, out, _ = run_cli(capsys, "cancel", run.id)
    assert code == 0 and "already ended (CANCELLED): nothing to cancel" in out


def test_watch_shows_bars_until_the_run_ends(capsys):
    """`lazyslurm watch RUN` draws the attached run's bars until it ends, then its state."""
    run = submit(total(sleepy.map([0.4, 0.5])), progress=False)
    code, out, err = run_cli(capsys, "watch", run.id)
    assert code == 0, err
    assert out.strip().endswith(f"run {run.id}: DONE")
    assert "aj0 sleepy" in err and "2/2" in err and "aj1 total" in err
    assert run.result() == (0.9,)


def test_watch_of_a_failed_run_exits_1(project, store, capsys):
    """Watching a run that already failed prints its bars once and exits 1."""
    code, out, err = run_cli(capsys, "watch", store.failed, "--cluster", "work")
    assert code == 1 and f"run {store.failed}: FAILED" in out
    assert "aj0 noisy" in err and "1 failed" in err


@pytest.mark.slurm
def test_ctrl_c_in_watch_stops_watching_not_the_run(cluster_env, tmp_path):
    """On the real Slurm: Ctrl-C ends `lazyslurm watch` (exit 0); the run keeps running."""
    import signal

    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    work = tmp_path / "work"
    (tmp_path / "lazyslurm.toml").write_text(
        f'[profiles.t]\nbackend = "slurm"\nworkdir = "{work}"\nenv = {{ SLURM_CONF = "{conf}" }}\n'
    )
    cluster = Cluster("slurm", workdir=work, env={"SLURM_CONF": conf})
    run = submit(sleepy.map([60, 61]), cluster=cluster, progress=False)
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "lazyslurm", "--cluster", "t", "watch", run.id],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(3)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert f"stopped watching run {run.id}; it goes on" in out
        assert "Traceback" not in err
        counts = run.status().counts
        assert counts.get("RUNNING", 0) + counts.get("PENDING", 0) == 2, counts
    finally:
        run.cancel()


def test_cancel_of_a_finished_run(project, store, capsys):
    code, out, _ = run_cli(capsys, "cancel", store.done, "--cluster", "work")
    assert code == 0
    assert out.strip() == f"run {store.done} has already ended (DONE): nothing to cancel"
    assert run_cli(capsys, "status", store.done, "--cluster", "work")[0] == 0


# --------------------------------------------------------------------------- viz


@needs_dot
def test_viz_draws_the_run_to_svg(project, store, tmp_path, capsys):
    path = tmp_path / "run.svg"
    code, out, err = run_cli(capsys, "viz", store.done, "-o", str(path), "--cluster", "work")
    assert code == 0, err
    assert out.strip() == f"wrote {path}"
    svg = path.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "inc [0&#45;2]" in svg or "inc [0-2]" in svg
    assert "total" in svg and "3 done" in svg

    jobs = tmp_path / "jobs"  # no suffix: svg
    code, out, _ = run_cli(
        capsys, "viz", store.failed, "-o", str(jobs), "--level", "jobs", "--cluster", "work"
    )
    assert code == 0 and out.strip() == f"wrote {jobs}.svg"
    svg = Path(f"{jobs}.svg").read_text()
    assert "noisy" in svg and "aj0 · 1 element" in svg and "failed" in svg


def test_viz_errors(project, store, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "viz", store.done, "-o", str(tmp_path / "x.nope"), "--cluster", "work"
    )
    assert code == 2 and "cannot tell the picture format" in err
    code, _, err = run_cli(
        capsys, "viz", store.done, "-o", str(tmp_path / "no" / "x.dot"), "--cluster", "work"
    )
    assert code == 2 and "No such file or directory" in err and "Traceback" not in err
    assert run_cli(capsys, "viz", store.done, "--cluster", "work")[0] == 2  # -o is required


def test_an_attached_run_is_drawn_from_its_array_jobs(tmp_path):
    """visualize(run=Run.attach(...)): no plan in this process; chunks of one array are one
    node at level tasks and keep their element ranges at level jobs."""
    workdir = tmp_path / "work"
    with Cluster("local", workdir=workdir, max_workers=2, max_array_size=2) as cl:
        run = submit(total(inc.map(range(5))), cluster=cl, progress=False)
        run.wait()
    attached = Run.attach(run.id, Cluster("local", workdir=workdir))
    assert attached.plan is None
    pending = lazyslurm.visualize(run=attached).source  # never polled
    assert "inc [0-4]\\n5 pending" in pending
    attached.poll()
    tasks = lazyslurm.visualize(attached).source  # a Run among the arguments
    assert "inc [0-4]\\n5 done" in tasks and "total\\ndone" in tasks
    assert tasks.count("->") == 1
    jobs = attached.visualize(level="jobs").source
    for label in (
        "inc [0-1]\\naj0 · 2 elements",
        "inc [2-3]\\naj1",
        "inc [4]\\naj2 · 1 element",
        "total\\naj3 · 1 element",
    ):
        assert label in jobs
    assert jobs.count("[label=afterok]") == 3 and "stage 1" in jobs
    coloured = lazyslurm.visualize(run=attached, states={attached.array_jobs[3].keys[0]: "failed"})
    assert "total\\nfailed" in coloured.source


# --------------------------------------------------------------------------- clean


def age_run(root: Path, days: float) -> None:
    """Set back the modification time of a run directory and everything in it."""
    when = time.time() - days * 86400
    for path in [root, *root.rglob("*")]:
        os.utime(path, (when, when), follow_symlinks=False)


def test_clean_removes_only_runs_older_than_the_age(project, capsys):
    """A run's age is its newest activity: a run directory last modified ten days ago
    whose log was written since is not old."""
    workdir = project / "scratch"
    with Cluster("local", workdir=workdir, max_workers=1) as cl:
        old = submit(inc(1), cluster=cl, progress=False)
        new = submit(inc(2), cluster=cl, progress=False)
        old.wait()
        new.wait()
    age_run(workdir / "runs" / old.id, 10)
    ten_days_ago = time.time() - 10 * 86400
    os.utime(workdir / "runs" / new.id, (ten_days_ago, ten_days_ago))  # its files are new

    code, out, err = run_cli(capsys, "clean", "--older-than", "7d", "--cluster", "scratch")
    assert code == 0, err
    assert out.splitlines() == [f"removed 1 run(s) older than 7d from {workdir}:", f"  {old.id}"]
    assert sorted(p.name for p in (workdir / "runs").iterdir()) == [new.id]
    code, out, _ = run_cli(capsys, "clean", "--older-than", "7d", "--cluster", "scratch")
    assert (code, out.strip()) == (0, f"no runs older than 7d in {workdir}")
    code, out, _ = run_cli(capsys, "runs", "--cluster", "scratch")
    assert new.id in out and old.id not in out


@pytest.mark.parametrize(
    ("age", "words"),
    [("soon", "invalid age 'soon'"), ("30s", "ages under a minute are not supported")],
)
def test_clean_rejects_bad_ages_before_touching_anything(project, capsys, age, words):
    code, out, err = run_cli(capsys, "clean", "--older-than", age, "--cluster", "scratch")
    assert code == 2 and out == "" and words in err
    assert run_cli(capsys, "clean", "--cluster", "scratch")[0] == 2  # the age is required


# --------------------------------------------------------------------------- profiles


def test_lazyslurm_profile_selects_the_cluster(project, store, monkeypatch, capsys):
    monkeypatch.setenv("LAZYSLURM_PROFILE", "work")
    code, out, _ = run_cli(capsys, "runs")
    assert code == 0 and store.done in out
    assert run_cli(capsys, "status", store.failed)[0] == 1
    code, out, _ = run_cli(capsys, "runs", "--cluster", "scratch")  # --cluster wins
    assert code == 0 and out.startswith("no runs in")


def test_a_bad_profile_is_reported_with_its_file_and_key(project, capsys):
    code, out, err = run_cli(capsys, "runs", "--cluster", "broken")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert str(project / "pyproject.toml") in err
    assert "'broken'" in err and "key 'max_workers' must be an integer" in err


def test_an_unknown_profile_lists_the_others(project, capsys):
    code, _, err = run_cli(capsys, "status", "x", "--cluster", "gpu")
    assert code == 2
    assert "unknown cluster profile 'gpu'" in err
    assert "available profiles: broken, scratch, work" in err
    assert str(project / "pyproject.toml") in err


# --------------------------------------------------------------------------- preview

GRAPH_SCRIPT = """
from lazyslurm import task

@task(time="01:00:00", cpus_per_task=4)
def work(i):
    return i

@task(time=10)
def total(xs):
    return sum(xs)

def make():
    return total(work.map(range(20)))

graph = make()
if __name__ == "__main__":
    raise SystemExit("the script's main block must not run")
"""


@pytest.fixture
def graph_script(tmp_path, monkeypatch) -> Path:
    path = tmp_path / "proj" / "sweep.py"
    path.parent.mkdir()
    path.write_text(GRAPH_SCRIPT)
    monkeypatch.chdir(tmp_path)
    return path


@pytest.mark.parametrize("name", ["graph", "make"])
def test_preview_of_a_script_prints_the_table(graph_script, capsys, name):
    """`preview SCRIPT.py:NAME` (a lazy value, or a function returning one) prints the
    jobs and the worst case; the script's main block does not run; nothing is submitted."""
    code, out, err = run_cli(capsys, "preview", f"proj/sweep.py:{name}", "--no-start")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == (
        "2 array job(s) (sbatch calls), 21 element(s) in 2 stage(s), at most 21 at once"
    )
    assert lines[1].startswith("worst case: 80.2 core-hours, 0 GPU-hours")
    header = next(line for line in lines if line.startswith("ARRAY JOB"))
    assert header.split()[-1] == "GB-H"
    row = next(line for line in lines if line.startswith("aj0"))
    assert row.split()[:9] == ["aj0", "work", "0", "20", "-", "4", "?", "0", "01:00:00"]


def test_preview_json(graph_script, capsys):
    """`preview --json`: every array job's request and worst case, and the totals."""
    code, out, err = run_cli(capsys, "preview", "proj/sweep.py:graph", "--no-start", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert [(j["id"], j["name"], j["elements"]) for j in data["jobs"]] == [
        ("aj0", "work", 20), ("aj1", "total", 1),
    ]  # fmt: skip
    assert data["jobs"][0]["cpus"] == 4 and data["jobs"][0]["time_min"] == 60
    assert data["total"]["elements"] == 21 and round(data["total"]["core_hours"], 1) == 80.2
    assert data["backend"] == "local" and isinstance(data["assumed"], list)


def test_preview_of_a_module(graph_script, capsys, monkeypatch):
    """`preview package.module:NAME` imports the module."""
    monkeypatch.syspath_prepend(str(graph_script.parent))
    code, out, err = run_cli(capsys, "preview", "sweep:graph", "--no-start")
    assert code == 0, err
    assert "worst case: 80.2 core-hours" in out


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("proj/sweep.py:nope", "defines no 'nope' (it has: graph, make, task, total, work)"),
        ("proj/sweep.py", "give SCRIPT.py:NAME or package.module:NAME"),
        ("proj/missing.py:graph", "no script proj/missing.py"),
        ("proj/sweep.py:work", "is a task, not a graph"),
    ],
)
def test_preview_errors_are_one_line(graph_script, capsys, target, words):
    code, out, err = run_cli(capsys, "preview", target)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and words in err


def test_usage_on_a_backend_without_accounting_exits_0(project, store, capsys):
    """`usage` of a local run shows the runner's figures and says that there is no
    accounting (exit 0); --json gives the same as data."""
    code, out, err = run_cli(capsys, "usage", store.done, "--cluster", "work")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"run {store.done}: ") and "figures from runner" in lines[0]
    assert lines[1] == (
        "note: backend 'local' has no accounting (no sacct); the figures are the runner's own"
    )
    assert lines[2].split()[:4] == ["TASK", "MEASURED", "MEM", "ASKED"]
    code, out, err = run_cli(capsys, "usage", store.done, "--json", "--cluster", "work")
    data = json.loads(out)
    assert code == 0 and data["run"] == store.done and data["sources"] == ["runner"]


def test_cluster_after_the_command_wins_over_before(project, store, capsys):
    """Given on both sides, the subcommand's --cluster is the one used."""
    code, out, _ = run_cli(capsys, "--cluster", "work", "runs", "--cluster", "scratch")
    assert code == 0 and out.startswith("no runs in")


def test_runs_json(project, store, capsys):
    """`runs --json` prints a JSON list with id, started, state and counts of every run."""
    import json

    code, out, _ = run_cli(capsys, "runs", "--json", "--cluster", "work")
    data = json.loads(out)
    assert code == 0 and {r["id"] for r in data} >= {store.done, store.failed}
    done = next(r for r in data if r["id"] == store.done)
    assert done["state"] == "DONE" and done["tasks"] == 4 and done["label"] == "sweep"


def test_status_json_of_a_failed_run(project, store, capsys):
    """`status --json` has the counts per array job and the failures; exit 1 as without."""
    import json

    code, out, _ = run_cli(capsys, "--cluster", "work", "status", store.failed, "--json")
    data = json.loads(out)
    assert code == 1 and data["run"] == store.failed and data["state"] == "FAILED"
    assert data["counts"] == {"FAILED": 1} and data["failed"] == 1
    assert data["array_jobs"][0]["task"] == "noisy"
    assert data["failures"][0]["error"] == "ValueError: noisy failed after 5 lines"


def test_profiles_lists_names_backends_and_files(project, capsys, monkeypatch):
    """`lazyslurm profiles` lists each profile, its backend and file; marks the default."""
    monkeypatch.setenv("LAZYSLURM_PROFILE", "work")
    code, out, _ = run_cli(capsys, "profiles")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["PROFILE", "BACKEND", "FILE", "ERROR"]
    path = str(project / "pyproject.toml")
    assert any(line.split()[:3] == ["work*", "local", path] for line in lines)
    assert any(line.split()[:3] == ["scratch", "local", path] for line in lines)
    broken = next(line for line in lines if line.startswith("broken"))
    assert "max_workers" in broken and "Traceback" not in out
    assert lines[-1] == "* $LAZYSLURM_PROFILE=work"


def test_profiles_json_and_none_defined(tmp_path, monkeypatch, capsys):
    """`profiles --json` is a list; with no profile file, a hint says where to define one."""
    import json

    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "profiles")
    assert code == 0 and "no cluster profiles" in out
    assert json.loads(run_cli(capsys, "profiles", "--json")[1]) == []


# --------------------------------------------------------------------------- usage


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2  # no command: help on stderr
    assert "COMMAND" in capsys.readouterr().err
    assert main(["nope"]) == 2
    assert main(["logs", "only-a-run"]) == 2
    assert main(["logs", "r", "n", "--tail", "-1"]) == 2
    assert main(["viz", "r", "-o", "x.svg", "--level", "stages"]) == 2
    assert "invalid choice" in capsys.readouterr().err
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"lazyslurm {lazyslurm.__version__}"
    assert main(["status", "--help"]) == 0
    assert "--cluster PROFILE" in capsys.readouterr().out


def test_the_cli_module_imports_only_the_standard_library():
    """``lazyslurm --help`` must be quick: the heavy modules load inside the commands."""
    code = (
        "import sys, lazyslurm.cli as c; c.build_parser(); "
        "heavy = {'cloudpickle', 'networkx', 'graphviz', 'paramiko', 'rich', 'attrs', "
        "'lazyslurm.execute', 'lazyslurm.cluster'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert res.stdout.strip() == "[]"
