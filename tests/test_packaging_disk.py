"""Disk given back (lazyslurm.backends.packaging.disk): ``WORKDIR/code`` entries unused for
an age are removed by ``clean --code``, the least recently used over ``code_cache_gb`` at
submission, never one that a queued or running run uses; ``usage --disk`` says what the
work directory holds; an entry removed after the probe saw it is staged again.

Over SSH on the real test cluster, as the SSH test user; ages are set by the test (as
root) with ``os.utime`` on the entries, the way time passing would."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import time
import uuid
from pathlib import Path

import pytest

from lazyslurm import Cluster, compute, submit, task
from lazyslurm.backends.packaging.disk import (
    gc_script,
    read_gc,
    read_usage,
    unit_of,
    usage_script,
    use_lines,
)
from lazyslurm.backends.shell import LocalShell
from lazyslurm.cache import clear_code, disk_usage
from lazyslurm.cli import main

DAY = 86400


@task
def plus(x: int) -> int:
    return x + 1


@task
def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


# --------------------------------------------------------------------------- local


def make_code(workdir: Path, names: dict[str, int]) -> Path:
    """WORKDIR/code with entries of the given age (days), each holding a file."""
    code = workdir / "code"
    code.mkdir(parents=True, mode=0o700)
    now = time.time()
    for name, days in names.items():
        if name.endswith(".lock"):
            (code / name).write_text("")
            path = code / name
        else:
            (code / name).mkdir(mode=0o700)
            (code / name / "f").write_bytes(b"x" * 5000)
            path = code / name
        os.utime(path, (now - days * DAY, now - days * DAY))
    return code


def run_gc(workdir: Path, live: str = "true", **kw) -> object:
    res = LocalShell().run(gc_script(str(workdir), live=live, **kw))
    assert res.returncode == 0, res.stderr
    return read_gc(res.stdout)


def test_units_group_an_environment(tmp_path):
    """venv-K, wheels-K and venv-K.lock are one unit; its last use is the newest."""
    assert {unit_of(n) for n in ("venv-ab", "wheels-ab", "venv-ab.lock")} == {"env-ab"}
    make_code(tmp_path, {"venv-ab": 5, "venv-ab.lock": 5, "wheels-ab": 1, "proj-cd": 3})
    res = LocalShell().run(usage_script(str(tmp_path)))
    report = read_usage(str(tmp_path), res.stdout)
    units = {u.name: u for u in report.units}
    assert set(units) == {"env-ab", "proj-cd"}
    assert set(units["env-ab"].members) == {"venv-ab", "wheels-ab", "venv-ab.lock"}
    assert abs(units["env-ab"].last_used - (time.time() - DAY)) < 60
    assert "environment (venv + wheels)" in str(report) and "project code" in str(report)


def test_age_removes_old_units_and_keeps_those_live_runs_use(tmp_path):
    """Units older than the cutoff go, but one a live run recorded stays (and says why);
    a younger one stays without a word."""
    code = make_code(tmp_path, {"venv-ab": 5, "venv-ab.lock": 5, "proj-cd": 3, "proj-ef": 0})
    run = tmp_path / "runs" / "20261206-120000-abcdef"
    run.mkdir(parents=True)
    (run / "code-uses").write_text("proj-cd\n")
    done = run_gc(tmp_path, live="echo 20261206-120000-abcdef", cutoff=time.time() - DAY)
    assert [u.name for u in done.removed] == ["env-ab"]
    assert "used by run 20261206-120000-abcdef" in done.kept["proj-cd"]
    assert sorted(p.name for p in code.iterdir()) == [".lock", "proj-cd", "proj-ef"]


def test_a_live_run_that_recorded_nothing_keeps_everything(tmp_path):
    """A live run submitted by an older lazyslurm (no code-uses): nothing is removed; the
    same when the scheduler cannot be asked."""
    make_code(tmp_path, {"proj-cd": 3})
    (tmp_path / "runs" / "20261206-120000-abcdef").mkdir(parents=True)
    done = run_gc(tmp_path, live="echo 20261206-120000-abcdef", cutoff=time.time() - DAY)
    assert not done.removed and "older lazyslurm" in done.kept["proj-cd"]
    done = run_gc(tmp_path, live="echo squeue: down >&2; exit 1", cutoff=time.time() - DAY)
    assert not done.removed and "squeue: down" in done.unchecked
    assert (tmp_path / "code" / "proj-cd").is_dir()


def test_the_cap_removes_least_recently_used_first_and_spares_the_young(tmp_path):
    """Over the cap, the oldest units go first until under it; one younger than the
    grace stays even over it."""
    make_code(tmp_path, {"proj-a": 9, "proj-b": 5, "proj-c": 2, "proj-d": 0})
    done = run_gc(tmp_path, cap_kb=12)  # each entry is about 8 KB on disk
    gone = [u.name for u in done.removed]
    assert gone[:2] == ["proj-a", "proj-b"] and "proj-d" not in gone
    assert (tmp_path / "code" / "proj-d").is_dir()


def test_a_unit_used_while_being_removed_is_kept(tmp_path):
    """The re-check under the lock: a unit touched after the cutoff (a submission used it
    meanwhile) is not removed."""
    make_code(tmp_path, {"proj-a": 5})
    script = gc_script(str(tmp_path), live="true", cutoff=time.time() - DAY)
    # the submission's touch, between the listing and the removal
    script = script.replace("  lz_mv=$(", f"  touch {tmp_path}/code/proj-a\n  lz_mv=$(", 1)
    res = LocalShell().run(script)
    done = read_gc(res.stdout)
    assert not done.removed and "used again" in done.kept["proj-a"]


def test_a_submission_finds_a_removed_entry_missing(tmp_path):
    """The submission's check: an entry gone since the probe is named, nothing after it
    runs; an environment counts as there when its venv is ready (its wheels are gone)."""
    make_code(tmp_path, {"venv-k": 1, "proj-a": 1})
    (tmp_path / "code" / "venv-k" / ".ready").write_text("")
    code = str(tmp_path / "code")
    ok = use_lines(code, ["proj-a", "venv-k"], [("wheels-k", "venv-k/.ready"), ("proj-a",)])
    res = LocalShell().run(ok + "echo submitted")
    assert res.stdout.strip() == "submitted"
    gone = use_lines(code, ["proj-b"], [("proj-b",)])
    res = LocalShell().run(gone + "echo submitted")
    assert res.returncode == 1 and "LZ-CODE-MISSING proj-b" in res.stderr
    assert "submitted" not in res.stdout
    shutil.rmtree(tmp_path / "code")  # code/ itself removed
    res = LocalShell().run(use_lines(code, ["proj-a"], [("proj-a",)]) + "echo submitted")
    assert res.returncode == 1 and "LZ-CODE-MISSING proj-a" in res.stderr


def test_cli_usage_disk_and_clean_code(tmp_path, capsys, monkeypatch):
    """`lazyslurm usage --disk` and `lazyslurm clean --code` on a work directory."""
    monkeypatch.setenv("LAZYSLURM_WORKDIR", str(tmp_path))
    monkeypatch.delenv("LAZYSLURM_PROFILE", raising=False)
    make_code(tmp_path, {"proj-old": 10, "proj-new": 0})
    assert main(["usage", "--disk"]) == 0
    out = capsys.readouterr().out
    assert "proj-old" in out and "project code" in out and "runs/" in out
    assert main(["clean", "--code", "--older-than", "7d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would remove 1 entr(ies)" in out and "proj-old" in out
    assert (tmp_path / "code" / "proj-old").is_dir()
    assert main(["clean", "--code", "--older-than", "7d"]) == 0
    assert "removed 1" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "code").iterdir()) == [".lock", "proj-new"]
    assert main(["clean", "--code", "--force", "--older-than", "7d"]) == 2


# --------------------------------------------------------------------------- over SSH


@pytest.fixture(scope="module")
def env(cluster_env):
    return cluster_env


def ssh_cluster(env, workdir: str, **kw) -> Cluster:
    return Cluster(
        "ssh",
        workdir=workdir,
        poll_max_s=0.5,
        hostname=env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(env["LAZYSLURM_TEST_SSH_PORT"]),
        username=env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
        **kw,
    )


@pytest.fixture
def remote(env):
    """A fresh work directory of the SSH test user: (its "~/..." name, its path here)."""
    rel = f"lazyslurm-tests/disk-{uuid.uuid4().hex[:12]}"
    path = Path(pwd.getpwnam(env["LAZYSLURM_TEST_SSH_USER"]).pw_dir) / rel
    yield f"~/{rel}", path
    shutil.rmtree(path, ignore_errors=True)


def plant(path: Path, user: str) -> None:
    """An entry of the SSH test user's own (made here, as root)."""
    path.mkdir(mode=0o700)
    who = pwd.getpwnam(user)
    os.chown(path, who.pw_uid, who.pw_gid)


def age_all(code: Path, days: float) -> None:
    """Make every entry of ``code`` look unused for ``days`` (as time passing would)."""
    then = time.time() - days * DAY
    for p in code.iterdir():
        os.utime(p, (then, then), follow_symlinks=False)


@pytest.mark.slurm
def test_clean_code_never_removes_what_a_queued_run_uses(env, remote):
    """Everything looks unused for two days, but one run still has jobs: the code it uses
    (recorded at its submission) is kept, the rest removed; once it ended, all goes. A run
    after that stages the code again and works."""
    workdir, path = remote
    c = ssh_cluster(env, workdir)
    with c:
        assert compute(plus(1)) == (2,)
        plant(path / "code" / "deps-0123456789abcdef", env["LAZYSLURM_TEST_SSH_USER"])
        age_all(path / "code", 2)
        held = submit(nap(120), cluster=c)
        uses = (path / "runs" / held.id / "code-uses").read_text().split()
        age_all(path / "code", 2)  # even its entries look old
        done = clear_code(c, older_than="1d")
        assert [u.name for u in done.removed] == ["deps-0123456789abcdef"]
        assert set(done.kept) == set(uses) and all(held.id in w for w in done.kept.values())
        assert all((path / "code" / n).exists() for n in uses)
        held.cancel()
        deadline = time.time() + 60
        while (
            time.time() < deadline
            and c.backend.shell.run(c.backend.live_runs_script()).stdout.strip()
        ):
            time.sleep(1)
        done = clear_code(c, older_than="1d")
        assert {u.name for u in done.removed} == set(uses) and not done.kept
        assert compute(plus(2)) == (3,)  # staged again (the session's probe saw it there)
        assert set((path / "runs").glob("*/code-uses"))


@pytest.mark.slurm
def test_the_cap_removes_the_least_recently_used_at_submission(env, remote, caplog):
    """code_cache_gb: a submission that stages something new removes, in the same round
    trip, the least recently used entries over the cap, never those the run uses; each
    removal is a warning naming it."""
    workdir, path = remote
    c = ssh_cluster(env, workdir, code_cache_gb=0.0001)  # about 100 KB: the runtime is over
    with c:
        assert compute(plus(1)) == (2,)
    old = sorted(p.name for p in (path / "code").iterdir() if p.name != ".lock")
    plant(path / "code" / "proj-0123456789abcdef", env["LAZYSLURM_TEST_SSH_USER"])
    age_all(path / "code", 3)
    c = ssh_cluster(env, workdir, code_cache_gb=0.0001)
    with c, caplog.at_level(logging.WARNING, logger="lazyslurm.backends.packaging"):
        c.backend.max_array_size()  # the probe
        c.backend.packager.target.code.present.discard(old[0])  # as if an upgrade: staged
        assert compute(plus(2)) == (3,)
    left = sorted(p.name for p in (path / "code").iterdir() if p.name != ".lock")
    assert "proj-0123456789abcdef" not in left and old[0] in left
    assert any("proj-0123456789abcdef" in r.getMessage() for r in caplog.records)


@pytest.mark.slurm
def test_an_entry_removed_after_the_probe_is_staged_again(env, remote):
    """The probe saw the runtime; it is removed before the next submission (clean --code
    in another terminal): the submission finds it gone before sbatch and stages it again,
    once; the run works."""
    workdir, path = remote
    c = ssh_cluster(env, workdir)
    with c:
        assert compute(plus(1)) == (2,)
        for p in (path / "code").iterdir():
            if p.is_dir():
                shutil.rmtree(p)
        assert compute(plus(5)) == (6,)
        assert c.backend.stats["submits"] == 2


@pytest.mark.slurm
def test_usage_disk_over_ssh(env, remote):
    """One command says what the work directory holds: runs and code with sizes."""
    workdir, _ = remote
    c = ssh_cluster(env, workdir)
    with c:
        assert compute(plus(1)) == (2,)
        report = disk_usage(c)
    assert report.runs == 1 and report.runs_kb > 0 and report.cap_gb == 20
    assert [u.kind for u in report.units] == ["lazyslurm runtime"]
    assert report.units[0].kb > 100
