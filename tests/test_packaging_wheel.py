"""Wheel packaging (lazyslurm.backends.packaging.wheel): a small project that is not installed on
the cluster runs from a venv made there once, from a wheel and dependencies gathered on
the client; on the real test Slurm over SSH."""

from __future__ import annotations

import pwd
import re
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from lazyslurm import Cluster, compute, submit, task
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
    kw.setdefault("packaging_project", str(PROJECT))
    return Cluster(
        "ssh", workdir=workdir, poll_max_s=0.5, packaging="wheel", **ssh_options(env), **kw
    )


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


# --------------------------------------------------------------------------- edits


def tiny_wheel(where: Path, name: str = "lzdep", version: str = "1.0") -> Path:
    """A pure-Python wheel made by hand: a dependency that needs no index."""
    whl = where / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{name}.py", "SUFFIX = '!'\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    return whl


def edit_project(root: Path, dep: Path, layout: str = "src") -> Path:
    """A project depending on ``dep`` (a wheel by direct reference), its package under
    ``src/`` (or at the top): ``edproj.value()`` returns what :func:`set_value` wrote."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n'
        '[project]\nname = "edproj"\nversion = "0.1.0"\ndescription = "x"\n'
        f'dependencies = ["lzdep @ {dep.as_uri()}"]\n'
    )
    pkg = root / ("src/edproj" if layout == "src" else "edproj")
    pkg.mkdir(parents=True)
    set_value(root, "v1")
    return root


def set_value(root: Path, value: str) -> None:
    pkg = next(p for p in (root / "src/edproj", root / "edproj") if p.is_dir())
    (pkg / "__init__.py").write_text(
        "import lzdep\n\n\ndef value(i):\n    # a comment\n"
        f"    return f'{value}-{{i}}' + lzdep.SUFFIX\n"
    )


@task
def edited(i: int) -> str:
    import edproj

    return edproj.value(i)


def code_entries(workdir: str, user: str) -> list[str]:
    """The names in WORKDIR/code of the SSH test user (read as root)."""
    home = Path(pwd.getpwnam(user).pw_dir)
    code = home / workdir.removeprefix("~/") / "code"
    return sorted(p.name for p in code.iterdir()) if code.is_dir() else []


@pytest.mark.parametrize("layout", ["src", "flat"])
def test_an_edit_is_read_from_the_source_tree_without_a_build(tmp_path, monkeypatch, layout):
    """The wheel's files are copies of source files (src/ layout or not): an edit is read
    from the tree, with no build and no new dependency set; adding a file builds again
    (same dependencies)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = edit_project(tmp_path / "proj", tiny_wheel(tmp_path), layout)
    c = Cluster("slurm", workdir=tmp_path / "w", packaging="wheel", packaging_project=str(root))
    builder = c.backend.packager.builder("wheel")
    first = builder.distribution(fresh=True)
    assert builder.stats["builds"] == 1 and first.deps == ("lzdep-1.0-py3-none-any.whl",)
    assert b"v1-" in first.overlay["edproj/__init__.py"]
    assert any(n.endswith(".dist-info/METADATA") for n in first.overlay)
    set_value(root, "v2")
    second = builder.distribution(fresh=True)
    assert builder.stats == {"builds": 1, "downloads": 1, "uploads": 0, "project_uploads": 0}
    assert b"v2-" in second.overlay["edproj/__init__.py"]
    assert second.overlay_hash != first.overlay_hash
    assert second.deps_digest == first.deps_digest
    (root / "results.csv").write_text("a,b\n")  # what a script writes beside the project
    (root / "outputs").mkdir()
    (root / "outputs" / "run1.txt").write_text("x")
    builder.distribution(fresh=True)
    assert builder.stats["builds"] == 1
    (root / ("src" if layout == "src" else "") / "edproj" / "extra.py").write_text("X = 1\n")
    third = builder.distribution(fresh=True)
    assert builder.stats["builds"] == 2 and builder.stats["downloads"] == 1
    assert "edproj/extra.py" in third.overlay and third.deps_digest == first.deps_digest
    cache = tmp_path / "cache" / "lazyslurm" / "wheels"
    assert len(list(cache.glob("deps-*"))) == 1 and len(list(cache.glob("project-*"))) == 1


@pytest.mark.slurm
def test_an_edit_makes_no_new_venv_and_the_first_run_says_it_creates_one(
    env, tmp_path, monkeypatch
):
    """Over SSH: the first run creates the environment (its first job says so in the
    run's ``environment`` file, which the polls read: the run's status and snapshot);
    after a one-line edit the next session builds nothing, uploads only the project's
    own files (code/proj-HASH) and uses the same venv; the client cache does not grow."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = edit_project(tmp_path / "proj", tiny_wheel(tmp_path))
    workdir = f"~/lazyslurm-tests/edit-{uuid.uuid4().hex[:12]}"
    user = env["LAZYSLURM_TEST_SSH_USER"]
    c = wheel_cluster(env, workdir, packaging_project=str(root))
    with c:
        run = submit(edited.map(range(3)), cluster=c)
        assert run.result() == (["v1-0!", "v1-1!", "v1-2!"],)
        note = run.status().note
        assert re.fullmatch(r"created the environment \(once\): 1 wheel in \d+ s", note), note
        # while a first job creates it, every poll says so (the run's environment file)
        home = Path(pwd.getpwnam(user).pw_dir) / workdir.removeprefix("~/")
        (home / "runs" / run.id / "environment").write_text(f"creating {int(time.time()) - 5} 7\n")
        note = run.status().note
        assert re.fullmatch(r"creating the environment \(once\): 7 wheels, \d+ s", note), note
    after_first = code_entries(workdir, user)
    venvs = [n for n in after_first if n.startswith("venv-") and not n.endswith(".lock")]
    assert len(venvs) == 1 and not [n for n in after_first if n.startswith("wheels-")]
    set_value(root, "v2")  # a one-line edit
    c = wheel_cluster(env, workdir, packaging_project=str(root))
    with c:
        run = submit(edited.map(range(3)), cluster=c)
        assert run.result() == (["v2-0!", "v2-1!", "v2-2!"],)
        assert run.status().note == ""  # nothing was created
        builder = c.backend.packager.builders["wheel"]
        assert builder.stats == {"builds": 0, "downloads": 0, "uploads": 0, "project_uploads": 1}
    after_edit = code_entries(workdir, user)
    assert [n for n in after_edit if n.startswith("venv-") and not n.endswith(".lock")] == venvs
    assert len([n for n in after_edit if n.startswith("proj-")]) == 2
    cache = tmp_path / "cache" / "lazyslurm" / "wheels"
    assert len(list(cache.glob("deps-*"))) == 1 and len(list(cache.glob("project-*"))) == 1


@task
def nap(seconds: float) -> float:
    import time

    time.sleep(seconds)
    return seconds


@pytest.mark.slurm
def test_polls_on_this_host_read_the_environment_note(env, tmp_path):
    """Slurm on this host (polls read the run directory here): the note as over SSH."""
    c = Cluster(
        "slurm", workdir=tmp_path / "w", env={"SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]},
        poll_max_s=0.5,
    )  # fmt: skip
    with c:
        run = submit(nap(60), cluster=c)
        try:
            path = tmp_path / "w" / "runs" / run.id / "environment"
            path.write_text(f"creating {int(time.time()) - 3} 2\n")
            assert run.status().note.startswith("creating the environment (once): 2 wheels, ")
            path.write_text("created 100 130 2\n")
            assert run.status().note == "created the environment (once): 2 wheels in 30 s"
        finally:
            run.cancel()
