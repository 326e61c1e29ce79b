"""What ``clean`` spares and what ``runs`` lists, on real stores.

``lazyslurm.cache.clear`` (``lazyslurm clean``) never deletes a run that may still run: one
whose Slurm jobs are queued or running (one ``squeue`` by job names), or a local run whose
client is alive; when ``squeue`` fails it keeps Slurm runs rather than guess. A run's age
is its newest activity. ``--force`` overrides. ``lazyslurm.runs`` lists thousands of runs
in one command and shows damaged runs as CORRUPT.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lazyslurm import Cluster, runs, submit, task
from lazyslurm.backends.base import RUNNING
from lazyslurm.backends.shell import LocalShell, shell_path
from lazyslurm.cache import clear, list_runs
from lazyslurm.cli import main
from lazyslurm.store import INSIDE, RunLayout, encode_outcome, encode_pack


@task(time=10)
def sleeper(seconds):
    import time

    time.sleep(seconds)
    return seconds


@task(time=1)
def echo(x):
    return x


def age_run(cluster: Cluster, run_id: str, days: float) -> None:
    """Set back the modification time of a run directory and everything in it, on the
    cluster's side (also over SSH)."""
    root = shell_path(RunLayout.of(run_id, cluster.backend.workdir).root)
    when = time.time() - days * 86400
    res = cluster.backend.shell.run(f"find {root} -exec touch -h -d @{when:.0f} {{}} +")
    assert res.returncode == 0, res.stderr


def exists(cluster: Cluster, run_id: str) -> bool:
    root = shell_path(RunLayout.of(run_id, cluster.backend.workdir).root)
    return cluster.backend.shell.run(f"test -d {root}").returncode == 0


def wait_running(run, timeout_s: float = 120) -> None:
    """Until the run's first array job runs (its dependent then waits, PENDING) and has
    written what it writes at its start (its logs): nothing in the run changes after."""
    deadline = time.monotonic() + timeout_s
    while run.status().array_jobs[run.array_jobs[0].id][1].get(RUNNING, 0) == 0:
        assert time.monotonic() < deadline, run.status()
        time.sleep(0.5)
    layout = RunLayout.of(run.id, run.cluster.backend.workdir)
    log = shell_path(layout.log(run.array_jobs[0].id, 0, "err"))
    while run.cluster.backend.shell.run(f"test -e {log}").returncode != 0:
        assert time.monotonic() < deadline, "the running element wrote no log"
        time.sleep(0.5)
    newest = f"find {shell_path(layout.root)} -printf '%T@\\n' | sort -n | tail -n1"
    last = None
    while True:  # the newest modification in the run, until it stays the same for 2 s
        now = run.cluster.backend.shell.run(newest).stdout.strip()
        if now == last:
            return
        assert time.monotonic() < deadline, "the run directory keeps changing"
        last = now
        time.sleep(2)


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --------------------------------------------------------------------------- local runs


def test_clean_keeps_an_old_local_run_whose_client_is_alive(tmp_path):
    """A local run idle for 8 days whose client (this process) still runs it is kept by
    clean --older-than 7d; force=True removes it."""
    c = Cluster("local", workdir=tmp_path / "work", max_workers=1)
    with c:
        run = submit(echo(sleeper(60)), cluster=c, progress=False)
        try:
            wait_running(run)
            age_run(c, run.id, 8)
            kept = clear(c, older_than="7d")
            assert kept == [] and exists(c, run.id)
            assert kept.kept == {run.id: f"its client (pid {os.getpid()}) still runs it"}
            assert clear(c, older_than="7d", dry_run=True, force=True) == [run.id]
            assert clear(c, older_than="7d", force=True) == [run.id]
            assert not exists(c, run.id)
        finally:
            run.cancel()


def test_clean_removes_an_old_local_run_whose_client_is_gone(tmp_path):
    """A local run whose client died (its client.pid names a dead process on this host)
    is removed when old; one whose client runs on another host cannot be checked: kept."""
    work = tmp_path / "work"
    with Cluster("local", workdir=work, max_workers=1) as c:
        dead, elsewhere = (submit(echo(i), cluster=c, progress=False) for i in range(2))
        dead.wait()
        elsewhere.wait()
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    records = {dead.id: f"{socket.gethostname()} {gone.stdout.strip()}", elsewhere.id: "node7 42"}
    for run_id, text in records.items():  # as a client killed before the run ended leaves it
        (work / RunLayout.of(run_id).client_pid).write_text(text)
    with Cluster("local", workdir=work, max_workers=1) as c:
        for run_id in records:
            age_run(c, run_id, 8)
        got = clear(c, older_than="7d")
        assert got == [dead.id]
        assert got.kept == {
            elsewhere.id: "its client (pid 42 on host node7) cannot be checked from this host"
        }
        assert clear(c, older_than="7d", force=True) == [elsewhere.id]


# --------------------------------------------------------------------------- Slurm runs


def slurm_cluster(env, tmp_path, conf: str | None = None) -> Cluster:
    conf = conf or env["LAZYSLURM_TEST_SLURM_CONF"]
    return Cluster("slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5)


def ssh_cluster(env, workdir: str) -> Cluster:
    return Cluster(
        "ssh",
        hostname=env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(env["LAZYSLURM_TEST_SSH_PORT"]),
        username=env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
        workdir=workdir,
        poll_max_s=0.5,
    )


@pytest.mark.slurm
@pytest.mark.parametrize("via", ["slurm", "ssh"])
def test_clean_keeps_an_old_slurm_run_with_jobs_queued_or_running(cluster_env, tmp_path, via):
    """A run idle for 8 days whose job is RUNNING and whose dependent is PENDING is kept
    by clean --older-than 7d (its directory's age alone made it old: the issue's lost
    run); a finished run as old is removed in the same call; force=True removes both."""
    import uuid

    if via == "ssh":
        c = ssh_cluster(cluster_env, f"~/lazyslurm-tests/{uuid.uuid4().hex}")
    else:
        c = slurm_cluster(cluster_env, tmp_path)
    with c:
        finished = submit(echo("done"), cluster=c, progress=False)
        assert finished.result() == ("done",)
        live = submit(echo(sleeper(300)), cluster=c, progress=False)
        try:
            wait_running(live)
            for run in (finished, live):
                age_run(c, run.id, 8)
            got = clear(c, older_than="7d")
            assert got == [finished.id] and not got.unchecked
            assert got.kept == {live.id: "jobs still queued or running"}
            assert exists(c, live.id) and not exists(c, finished.id)
            assert clear(c, older_than="7d", force=True) == [live.id]
            assert not exists(c, live.id)
        finally:
            live.cancel()


@pytest.mark.slurm
def test_lazyslurm_clean_keeps_a_slurm_run_still_running(
    cluster_env, tmp_path, monkeypatch, capsys
):
    """`lazyslurm clean --older-than 7d` keeps an old run still queued and says so;
    --force removes it."""
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    (tmp_path / "lazyslurm.toml").write_text(
        f'[profiles.hpc]\nbackend = "slurm"\nworkdir = "work"\nenv = {{ SLURM_CONF = "{conf}" }}\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    with Cluster.from_profile("hpc") as c:
        live = submit(echo(sleeper(300)), cluster=c, progress=False)
        try:
            wait_running(live)
            age_run(c, live.id, 8)
            code, out, err = run_cli(capsys, "clean", "--older-than", "7d", "--cluster", "hpc")
            assert (code, err) == (0, "")
            assert out.splitlines() == [
                "kept 1 run(s) older than 7d that may still be running:",
                f"  {live.id}  jobs still queued or running",
                "  (`lazyslurm cancel RUN` stops one; --force removes them without cancelling "
                "their jobs)",
            ]
            assert exists(c, live.id)
            code, out, err = run_cli(
                capsys, "clean", "--older-than", "7d", "--force", "--cluster", "hpc"
            )
            assert code == 0 and "removed 1 run(s) older than 7d" in out and live.id in out
            assert not exists(c, live.id)
        finally:
            live.cancel()


@pytest.mark.slurm
def test_clean_keeps_slurm_runs_when_squeue_fails(cluster_env, tmp_path, monkeypatch, capsys):
    """When the controller stops answering (squeue fails), clean keeps every old Slurm
    run, finished or not, rather than guess, and says why; `lazyslurm clean` exits 2
    (here from a local profile on the same store, where squeue has no configuration);
    force=True removes them."""
    real = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    down = tmp_path / "down" / "slurm.conf"  # the same cluster, its controller unreachable
    down.parent.mkdir()
    down.write_text(
        "\n".join(
            "SlurmctldPort=1" if line.startswith("SlurmctldPort=") else line
            for line in Path(real).read_text().splitlines()
        )
    )
    with slurm_cluster(cluster_env, tmp_path) as c:
        finished = submit(echo("done"), cluster=c, progress=False)
        assert finished.result() == ("done",)
        age_run(c, finished.id, 8)
        c.backend.shell.env["SLURM_CONF"] = str(down)  # from here on, Slurm does not answer
        got = clear(c, older_than="7d")
        assert got == [] and exists(c, finished.id)
        assert "could not be asked" in got.unchecked and "Unable to contact" in got.unchecked
        assert got.kept == {
            finished.id: "the scheduler could not be asked: cannot tell whether its jobs still run"
        }
        (tmp_path / "lazyslurm.toml").write_text(
            f'[profiles.here]\nworkdir = "{c.backend.workdir}"\n'
        )
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("HOME", str(tmp_path))
        monkeypatch.delenv("SLURM_CONF", raising=False)
        code, out, err = run_cli(capsys, "clean", "--older-than", "7d", "--cluster", "here")
        assert code == 2 and f"  {finished.id}  the scheduler could not be asked" in out
        # a local profile asks no scheduler: it keeps them, and says why
        assert err.count("\n") == 1 and "cannot ask the scheduler" in err and "--force" in err
        assert clear(c, older_than="7d", force=True) == [finished.id]
        assert not exists(c, finished.id)


# --------------------------------------------------------------------------- runs


def make_runs(workdir: Path, n: int) -> dict[str, tuple[str, int, int, int]]:
    """``n`` finished-looking runs as the store writes them (summary, manifest, result,
    error and pack files); returns run id -> (state, tasks, done, failed) expected."""
    runs_dir = workdir / RunLayout.RUNS
    runs_dir.mkdir(parents=True, mode=0o700)
    expected = {}
    start = time.time() - n
    for i in range(n):
        run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(start + i)) + f"-{i:06x}"
        layout = RunLayout.of(run_id, workdir)
        layout.make_dirs()
        tasks = 4
        summary = {
            "run_id": run_id,
            "created": start + i,
            "label": f"l{i}",
            "backend": "slurm",
            "tasks": tasks,
            "array_jobs": 2,
        }
        Path(layout.summary).write_text(json.dumps(summary, sort_keys=True))
        manifest = {**summary, "version": 2, "outputs": [], "external": {}, "array_jobs": []}
        Path(layout.manifest).write_text(json.dumps(manifest, sort_keys=True))
        done = i % 3  # loose results
        for k in range(done):
            key = f"f-{i}-{k}"
            Path(layout.result(key)).write_bytes(encode_outcome(b"x", key=key, writer="w"))
        Path(layout.results_dir, f".f-{i}.pkl.tmp").write_bytes(b"")  # a write under way
        if i % 5 == 0:  # a pack of two elements
            records = [encode_outcome(b"y", key=f"g-{i}-{k}", writer="w") for k in range(2)]
            Path(layout.pack("aj1", 0)).write_bytes(encode_pack(records))
            done += 2
        failed = int(i % 7 == 0)
        if failed:
            Path(layout.error(f"h-{i}")).write_bytes(encode_outcome(b"e", key="h", writer="w"))
        state = "FAILED" if failed else "DONE" if done >= tasks else "INCOMPLETE"
        expected[run_id] = (state, tasks, done, failed)
    return expected


class CountingShell(LocalShell):
    """This host's shell, counting the commands bash runs for each script (a DEBUG trap)."""

    def run(self, script, **kw):
        res = super().run(
            f"lz_n=0; trap 'lz_n=$((lz_n + 1))' DEBUG\n{script}\ntrap - DEBUG; "
            'echo "LZ-COMMANDS $lz_n"',
            **kw,
        )
        self.commands = int(res.stdout.rsplit("LZ-COMMANDS ", 1)[1])
        return res


def test_runs_lists_2000_runs_in_one_command(tmp_path):
    """2,000 runs: every one listed, newest first, with its counts and state, from one
    shell command that runs a fixed number of commands (not a loop of five per run).

    Measured with benchmarks/runs_listing.py (2,000 runs, a 2-core host at load ~9):
    24.6 s before (a shell loop running ls|grep, head|awk, ls|grep and tr for each run;
    the issue saw 14.7 s), 0.40 s after; over SSH (loopback) 21.2 s -> 0.22 s. CPU time
    of the shell commands: 22.7 s -> 0.29 s. Timing is never asserted: the number of
    commands bash runs is (13 now, 20,009 before).
    """
    workdir = tmp_path / "work"
    expected = make_runs(workdir, 2000)
    with Cluster("local", workdir=workdir) as c:
        before = c.backend.shell.round_trips
        listed = runs(c)
        assert c.backend.shell.round_trips - before == 1
    assert [r.id for r in listed] == sorted(expected, reverse=True)
    got = {r.id: (r.state, r.tasks, r.done, r.failed) for r in listed}
    assert got == expected
    assert {r.state for r in listed} == {"DONE", "FAILED", "INCOMPLETE"}
    shell = CountingShell()
    assert len(list_runs(shell, str(workdir))) == 2000
    assert shell.commands < 40  # the same whatever the number of runs (was 5 per run)


def test_runs_shows_damaged_runs_as_corrupt(tmp_path):
    """A run whose summary or manifest is truncated, empty or missing is CORRUPT, with
    what is wrong, instead of vanishing from the listing."""
    workdir = tmp_path / "work"
    expected = make_runs(workdir, 6)
    ids = sorted(expected)
    runs_dir = workdir / RunLayout.RUNS
    half, empty = (lambda b: b[: len(b) // 2]), (lambda b: b"")
    damage = {
        ids[0]: (INSIDE.summary, half, "summary.json is truncated or not JSON"),
        ids[1]: (INSIDE.summary, empty, "summary.json is empty"),
        ids[2]: (INSIDE.manifest, half, "manifest.json is truncated"),
        ids[3]: (INSIDE.manifest, empty, "manifest.json is empty"),
        ids[4]: (INSIDE.manifest, None, "manifest.json is missing"),
    }
    for run_id, (name, cut, _) in damage.items():
        path = runs_dir / run_id / name
        if cut is None:
            path.unlink()
        else:
            path.write_bytes(cut(path.read_bytes()))
    (runs_dir / "notes").mkdir()  # neither file: not a run
    with Cluster("local", workdir=workdir) as c:
        listed = {r.id: r for r in runs(c)}
    assert sorted(listed) == ids
    for run_id, (_, _, problem) in damage.items():
        assert (listed[run_id].state, listed[run_id].problem) == ("CORRUPT", problem)
    assert listed[ids[5]].state == expected[ids[5]][0] and listed[ids[5]].problem == ""


@pytest.mark.slurm
def test_runs_over_ssh_in_one_round_trip(cluster_env):
    """The same listing over SSH: one exec, counts as the store has them."""
    import uuid

    from lazyslurm.backends.shell import SSHShell

    local = Path(f"/tmp/lz-runs-{uuid.uuid4().hex}")
    expected = make_runs(local, 50)
    files = {str(p.relative_to(local)): p.read_bytes() for p in local.rglob("*") if p.is_file()}
    store = f"lazyslurm-tests/{uuid.uuid4().hex}"
    with ssh_cluster(cluster_env, f"~/{store}") as c:
        shell = c.backend.shell
        assert isinstance(shell, SSHShell)
        shell.put_files(f"~/{store}", files)
        workdir = c.backend.workdir  # the probe: absolute
        before = shell.round_trips
        listed = runs(c)
        assert shell.round_trips - before == 1
        assert [r.id for r in list_runs(shell, workdir)] == [r.id for r in listed]
        shell.run(f"rm -rf -- ~/{shlex.quote(store)}")
    assert {r.id: (r.state, r.tasks, r.done, r.failed) for r in listed} == expected
    subprocess.run(["rm", "-rf", "--", str(local)], check=True)
