"""Packaging modes (lazyslurm.backends.packaging): options, and runs on the real test Slurm/sshd
with nothing installed on the cluster."""

from __future__ import annotations

import math
import shlex
import sys
import uuid
from pathlib import Path

import attrs
import bcrypt
import graphviz
import pytest

from examples import parallelization_patterns as pp
from lazyslurm import Cluster, compute, task
from lazyslurm.backends.packaging import Packager, PackagingOptions, atomic_move, modules
from lazyslurm.backends.shell import SSHShell
from lazyslurm.errors import (
    ClusterConfigError,
    PythonVersionError,
    TaskError,
    UnshippableModuleError,
)
from lazyslurm.graph.resources import Resources

EXPECTED_PIPELINE = [f"final_transform_{i}(preprocessed_data_{i + 1})" for i in range(3)]
PY312 = "/root/.pyenv/versions/3.12.1/bin/python3"
PY310 = "/root/.pyenv/versions/3.10.13/bin/python3"


# --------------------------------------------------------------------------- options


def test_options_are_validated_when_the_cluster_is_made():
    """A bad mode, runtime or tls flag is refused at Cluster(...), naming the choices
    (checked against the options' one declaration, as every Cluster option)."""
    with pytest.raises(ClusterConfigError, match="by-value"):
        Cluster("ssh", hostname="h", packaging="by_value")
    with pytest.raises(ClusterConfigError, match="pyxis"):
        Cluster("slurm", packaging="container", packaging_runtime="docker")
    with pytest.raises(ClusterConfigError, match="tls_verify"):
        Cluster("slurm", packaging_tls_verify="maybe")


def test_auto_is_inherit_here_and_by_value_over_ssh():
    """auto: inherit for Slurm on this host, by-value over SSH; a task's own mode wins."""
    here = Packager(PackagingOptions(), local=True, python="python3")
    remote = Packager(PackagingOptions(), local=False, python="python3")
    assert here.mode_of(None) == "inherit" and remote.mode_of(None) == "by-value"
    own = Resources.from_options(packaging="container")
    assert remote.mode_of(own) == "container"


def test_a_task_option_splits_array_jobs():
    """Tasks differing only in packaging do not share an array job."""
    a = pp.stage1_preprocess.options(packaging="by-value")
    assert a.resources != pp.stage1_preprocess.resources
    assert a.resources.packaging == "by-value"


def test_atomic_move_keeps_an_existing_directory(tmp_path):
    """Staging is atomic: a directory already there wins, the stage is removed."""
    import subprocess

    (tmp_path / ".stage-h-1").mkdir()
    (tmp_path / ".stage-h-1" / "f").write_text("new")
    subprocess.run(["bash", "-c", atomic_move(str(tmp_path), ".stage-h-1", "h")], check=True)
    assert (tmp_path / "h" / "f").read_text() == "new"
    (tmp_path / ".stage-h-2").mkdir()
    (tmp_path / ".stage-h-2" / "f").write_text("other")
    subprocess.run(["bash", "-c", atomic_move(str(tmp_path), ".stage-h-2", "h")], check=True)
    assert (tmp_path / "h" / "f").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h"]


# --------------------------------------------------------------------------- real clusters


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


def ssh_run(env, script: str) -> str:
    opts = ssh_options(env)
    with SSHShell(opts.pop("hostname"), **opts) as shell:
        res = shell.run(script)
    return res.stdout + res.stderr


@pytest.mark.slurm
def test_seed_patterns_over_ssh_with_nothing_installed(env):
    """Default packaging over SSH: the seed's three patterns run on a cluster account with
    only Python (no lazyslurm, no cloudpickle, no PYTHONPATH); the runner's code is
    staged once (0700) and a later session reuses it."""
    out = ssh_run(env, "python3 -c 'import cloudpickle' 2>&1; python3 -c 'import lazyslurm' 2>&1")
    assert out.count("ModuleNotFoundError") == 2  # nothing installed for this user
    store = f"~/lazyslurm-tests/byvalue-{uuid.uuid4().hex[:12]}"
    digest = modules.runtime_hash()
    c = Cluster("ssh", workdir=store, poll_max_s=0.5, **ssh_options(env))
    assert pp.fan_out_fan_in(c)["total_sum"] == sum(range(500))
    assert c.backend.packager.mode_of(None) == "by-value"
    assert pp.pipeline(Cluster("ssh", workdir=store, poll_max_s=0.5, **ssh_options(env))) == (
        EXPECTED_PIPELINE
    )
    c = Cluster("ssh", workdir=store, poll_max_s=0.5, **ssh_options(env))
    with c:
        assert c.backend.packager.mode_of(None) == "by-value"
        c.max_array_size()  # the probe: the code is already there
        assert digest in c.backend.packager.target.code.present
        best = pp.parameter_sweep(c)
    assert best["lr"] == 0.1
    code = store.replace("~", "$HOME") + "/code"
    listing = ssh_run(env, f"cd {code} && ls -A && stat -c %a {digest}")
    # one copy, private, no stage left behind (.lock: submissions and removals take it)
    assert listing.split() == [".lock", digest, "700"]


@pytest.mark.slurm
def test_a_compiled_module_missing_on_the_cluster_is_refused(env):
    """Task code needing a compiled module the cluster lacks: a clear error naming it and
    the modes that work, before anything is submitted."""

    @task
    def hashes(x: bytes) -> bytes:
        return bcrypt.hashpw(x, bcrypt.gensalt())

    c = Cluster("ssh", poll_max_s=0.5, **ssh_options(env))
    with c, pytest.raises(UnshippableModuleError) as info:
        backend = c.backend
        compute(hashes(b"x"))
    assert "bcrypt (a compiled extension)" in str(info.value)
    assert "packaging='wheel'" in str(info.value) and "packaging='container'" in str(info.value)
    assert backend.stats["sbatch"] == 0


@attrs.frozen
class Pair:
    left: int
    right: int


@task
def as_dict(left: int, right: int) -> dict:
    return attrs.asdict(Pair(left, right))


@task
def dot_source(name: str) -> str:
    return graphviz.Digraph(name).source  # pure Python, installed here, not on the cluster


@pytest.mark.slurm
def test_pure_python_installed_packages_travel_too(env):
    """A pure-Python installed package the cluster lacks (graphviz's Python package; attrs
    travels with lazyslurm's own staged code) is staged once with the run
    (WORKDIR/code/deps-HASH), so tasks using it run with nothing installed."""
    out = ssh_run(env, "python3 -c 'import graphviz' 2>&1")
    assert "ModuleNotFoundError" in out
    store = f"~/lazyslurm-tests/deps-{uuid.uuid4().hex[:12]}"
    c = Cluster("ssh", workdir=store, poll_max_s=0.5, **ssh_options(env))
    with c:
        assert compute(as_dict(1, 2)) == ({"left": 1, "right": 2},)
        assert compute(dot_source("g"))[0].startswith("digraph g {")
        assert any(name.startswith("deps-") for name in c.backend.packager.target.code.present)
    code = store.replace("~", "$HOME") + "/code"
    assert "deps-" in ssh_run(env, f"ls {code}")


def slurm_cluster(env, tmp_path, **kw) -> Cluster:
    return Cluster(
        "slurm",
        workdir=tmp_path / "work",
        env={"SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]},
        poll_max_s=0.5,
        **kw,
    )


@pytest.mark.slurm
def test_a_minor_version_mismatch_is_refused_before_submission(env, tmp_path):
    """A cluster Python 3.12 cannot load code pickled by value under 3.11: refused, naming
    both versions; nothing submitted."""
    c = slurm_cluster(env, tmp_path, packaging="by-value", python=PY312)
    with c, pytest.raises(PythonVersionError) as info:
        backend = c.backend
        compute(pp.stage1_preprocess("x"))
    msg = str(info.value)
    assert "3.12.1" in msg and ".".join(map(str, sys.version_info[:3])) in msg
    assert backend.stats["sbatch"] == 0


@pytest.mark.slurm
def test_a_harmless_mismatch_runs(env, tmp_path):
    """Nothing by value (a function pickled by reference): another minor version runs it."""
    c = slurm_cluster(env, tmp_path, packaging="by-value", python=PY312)
    with c:
        assert compute(task(math.sqrt)(16.0)) == (4.0,)


@pytest.mark.slurm
def test_a_python_too_old_for_the_runner_is_refused(env, tmp_path):
    """A cluster Python 3.10 is refused (the runner needs 3.11), also in inherit mode."""
    c = slurm_cluster(env, tmp_path, packaging="inherit", python=PY310)
    with c, pytest.raises(PythonVersionError, match=r"3\.10\.13"):
        backend = c.backend
        compute(task(math.sqrt)(16.0))
    assert backend.stats["sbatch"] == 0


@pytest.mark.slurm
def test_by_value_on_slurm_here_stages_code_instead_of_the_client_path(env, tmp_path):
    """packaging='by-value' on this host: job scripts use the staged code, not the client's."""
    c = slurm_cluster(env, tmp_path, packaging="by-value")
    with c:
        assert compute(pp.pipeline_graph()) == (EXPECTED_PIPELINE,)
    digest = modules.runtime_hash()
    scripts = list((tmp_path / "work" / "runs").glob("*/jobs/aj0.sh"))
    text = scripts[0].read_text()
    repo = str(Path(modules.__file__).resolve().parents[3])
    assert f"/code/{digest}" in text and f"PYTHONPATH={shlex.quote(repo)}" not in text


# --------------------------------------------------------------------------- one dispatcher


def test_each_mode_is_one_builder_found_by_its_name():
    """Every declared mode but auto is the BUILDER of backends/packaging/<mode>.py, with
    the protocol's four methods; the Packager dispatches to them and names no mode itself
    (but the two that auto means)."""
    import inspect
    import typing

    from lazyslurm.graph.resources import PackagingMode

    packager = Packager(PackagingOptions(), local=False, python="python3")
    home = Path(modules.__file__).parent
    for mode in typing.get_args(PackagingMode):
        if mode == "auto":
            continue
        builder = packager.builder(mode)
        assert inspect.getsourcefile(type(builder)) == str(home / f"{mode.replace('-', '')}.py")
        for name in ("probe_line", "read_probe", "by_value_modules", "prepare"):
            assert callable(getattr(builder, name)), (mode, name)
        assert packager.builder(mode) is builder  # one per session
    source = inspect.getsource(Packager)
    assert not any(f'"{m}"' in source for m in ("wheel", "container"))
    with pytest.raises(ClusterConfigError, match="unknown packaging mode 'by_value'"):
        packager.builder("by_value")


@task
def plus_one(x: int) -> int:
    return x + 1


@pytest.mark.slurm
def test_modes_mix_in_one_run_on_a_container_cluster(env, tmp_path):
    """A cluster whose own mode is container probes only for the runtime; a run whose
    tasks ask for by-value and inherit asks the cluster's python then (one round trip),
    and each array job starts as its mode says: the staged runtime, or this lazyslurm."""
    exe = Path(sys.executable)
    # this venv's python under another name: not taken as the client's own, so probed
    python = next(str(p) for p in (exe.with_name("python3"), exe.with_name("python"))
                  if str(p) != sys.executable and p.exists())  # fmt: skip
    c = slurm_cluster(
        env, tmp_path, packaging="container", packaging_registry="127.0.0.1:1/none",
        packaging_base_image="none", python=python,
    )  # fmt: skip
    first = plus_one.options(packaging="by-value")(1)
    with c:
        assert compute(plus_one.options(packaging="inherit")(first)) == (3,)
        assert sorted(c.backend.packager.builders) == ["by-value", "container", "inherit"]
    scripts = {p.name: p.read_text() for p in (tmp_path / "work" / "runs").glob("*/jobs/aj*.sh")}
    repo = shlex.quote(str(Path(modules.__file__).resolve().parents[3]))
    assert f"/code/{modules.runtime_hash()}" in scripts["aj0.sh"]
    assert f"PYTHONPATH={repo}" in scripts["aj1.sh"]


@task
def unbox(box) -> int:
    return box.v


@pytest.mark.slurm
def test_an_argument_of_a_module_the_node_lacks_is_the_typed_error(env, tmp_path, monkeypatch):
    """An element's arguments name a module its Python cannot import (an image or an
    environment without it): the element records a ModuleNotFoundError, which the
    client raises as such (a TaskError naming the module and the fixes), not a crash of
    the element with a traceback tail."""
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "lzelsewhere.py").write_text(
        "class Box:\n    def __init__(self, v):\n        self.v = v\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))  # the client's, not the node's
    import lzelsewhere

    c = slurm_cluster(env, tmp_path, packaging="inherit")
    with c, pytest.raises(ModuleNotFoundError) as info:
        compute(unbox(lzelsewhere.Box(3)))
    assert isinstance(info.value, TaskError) and info.value.name == "lzelsewhere"
    assert "installed here, on the client" in str(info.value)
