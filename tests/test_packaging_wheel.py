"""Wheel packaging (lazyslurm.backends.packaging.wheel): a small project that is not installed on
the cluster runs from a venv made there once, from a wheel and dependencies gathered on
the client; on the real test Slurm over SSH."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest

from lazyslurm import Cluster, compute, task
from lazyslurm.backends.packaging.wheel import find_project
from lazyslurm.errors import ClusterConfigError, PackagingError

PROJECT = Path(__file__).parent / "data" / "wheelproj"
sys.path.insert(0, str(PROJECT))  # the client imports it from its checkout, not installed
import lzdemo  # noqa: E402


@task
def loud(text: str) -> str:
    return lzdemo.shout(text)


def test_find_project_walks_up_to_pyproject(tmp_path):
    """The project is the nearest directory with a pyproject.toml, upwards."""
    assert find_project(PROJECT / "lzdemo") == PROJECT
    assert find_project(tmp_path) in (None, *tmp_path.parents)


@pytest.fixture(scope="module")
def env(cluster_env):
    return cluster_env


def ssh_options(env) -> dict:
    return dict(
        hostname=env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(env["LAZYSLURM_TEST_SSH_PORT"]),
        username=env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
    )


def wheel_cluster(env, workdir: str, **kw) -> Cluster:
    return Cluster(
        "ssh", workdir=workdir, poll_max_s=0.5, packaging="wheel",
        packaging_project=str(PROJECT), **ssh_options(env), **kw,
    )  # fmt: skip


@pytest.mark.slurm
def test_project_runs_from_a_venv_made_once_and_reused(env):
    """100 elements start at once: one makes the venv (flock), all use it; a second
    session reuses it (nothing uploaded). (Times: benchmarks/packaging_modes.py.)"""
    workdir = f"~/lazyslurm-tests/wheel-{uuid.uuid4().hex[:12]}"
    texts = [f"t{i}" for i in range(100)]
    c = wheel_cluster(env, workdir)
    with c:
        (out,) = compute(loud.map(texts))
        builder = c.backend.packager.builders["wheel"]
        assert builder.stats["uploads"] == 1
        run = max(r.id for r in c.session.runs())
        logs = c.backend.read_files([f"runs/{run}/logs/aj0_{i}.err" for i in range(100)])
    assert out == [f"T{i}!" for i in range(100)]
    made = [p for p, data in logs.items() if b"lazyslurm: created venv" in data]
    assert len(made) == 1, made
    c = wheel_cluster(env, workdir)
    with c:
        assert compute(loud.map(["x"])) == (["X!"],)
        assert c.backend.packager.builders["wheel"].stats["uploads"] == 0


def test_no_pyproject_is_a_clear_error(tmp_path):
    """packaging='wheel' without a pyproject.toml: a clear error naming the fix."""
    c = Cluster("slurm", workdir=tmp_path, packaging="wheel", packaging_project=str(tmp_path))
    builder = c.backend.packager.builder("wheel")
    with pytest.raises(ClusterConfigError, match=r"pyproject\.toml"):
        builder.distribution()


def test_a_failing_build_shows_the_tail_of_its_log(tmp_path):
    """A project whose build fails: the error shows the build's last lines."""
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n'
        '[project]\nname = "broken-demo"\nversion = "0.1.0"\ndescription = "x"\n'
    )  # no module named broken_demo: flit refuses
    c = Cluster("slurm", workdir=tmp_path / "w", packaging="wheel", packaging_project=str(tmp_path))
    builder = c.backend.packager.builder("wheel")
    with pytest.raises(PackagingError, match="last lines") as info:
        builder.distribution()
    assert "broken_demo" in str(info.value)
