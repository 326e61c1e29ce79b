"""Which modules travel and how (lazyslurm.backends.packaging.modules), the pure parts of
by-value packaging."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import cloudpickle
import paramiko
import pytest

from examples import parallelization_patterns as pp
from lazyslurm.backends.packaging import modules
from lazyslurm.errors import PythonVersionError, UnshippableModuleError
from lazyslurm.graph import task
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import make_plan
from lazyslurm.store import RunLayout, atomic_write, read_pickle


def test_runtime_files_are_lazyslurm_cloudpickle_and_attrs():
    """The staged code is all of lazyslurm's source (the runner imports only its side;
    dynamic expansion and workflows plan and submit from the compute node), cloudpickle
    and attrs, named by content."""
    files = modules.runtime_files()
    assert {f"lazyslurm/{rel}" for rel in modules.RUNNER_FILES} <= set(files)
    for rel in ("dynamic.py", "workflows.py", "planning/planner.py", "backends/slurm/node.py"):
        assert f"lazyslurm/{rel}" in files
    assert {"cloudpickle/cloudpickle.py", "attr/__init__.py", "attrs/__init__.py"} <= set(files)
    assert not any("__pycache__" in name for name in files)
    assert modules.runtime_hash() == modules.content_hash(dict(files))


def test_staged_runtime_alone_can_plan_and_submit(tmp_path: Path):
    """A copy of the staged files alone (python -S: no site-packages) imports what a task
    that returns lazy values and a @workflow need on a cluster with nothing installed."""
    code = tmp_path / "code"
    for rel, data in modules.runtime_files().items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_bytes(data)
    mods = "lazyslurm.dynamic, lazyslurm.workflows, lazyslurm.execute, lazyslurm.backends.slurm"
    script = f"import sys, {mods}; print(lazyslurm.dynamic.__file__)"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(code)}
    proc = subprocess.run(
        [sys.executable, "-S", "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(code))


def test_staged_runtime_runs_an_element_with_only_the_stdlib(tmp_path: Path):
    """A copy of the staged files alone (python -S: no site-packages) runs a by-value element."""
    code = tmp_path / "code"
    for rel, data in modules.runtime_files().items():
        (code / rel).parent.mkdir(parents=True, exist_ok=True)
        (code / rel).write_bytes(data)
    plan = make_plan(list(pp.stage1_preprocess.map(["a", "b"])))
    paths = RunLayout.of("r1", tmp_path)
    paths.make_dirs()
    files = encode_run(
        plan,
        run_id="r1",
        outputs=[],
        by_value=True,
        modules_by_value=lambda res, func: [sys.modules["examples.parallelization_patterns"]],
    )
    for rel, data in files.items():
        atomic_write(f"{paths.root}/{rel}", data)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(code), "SLURM_ARRAY_TASK_ID": "1"}
    proc = subprocess.run(
        [sys.executable, "-S", "-m", "lazyslurm.runner", str(paths.root), "aj0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    key = plan.array_jobs[0].keys[1]
    assert read_pickle(paths.result(key)) == "preprocessed_b"


def test_project_modules_are_the_users_own_source():
    """The user's own modules (tests, examples) travel by value; installed ones do not."""
    mods = modules.project_modules()
    assert "examples.parallelization_patterns" in mods and __name__ in mods
    assert not any(m.split(".")[0] in ("lazyslurm", "cloudpickle", "paramiko") for m in mods)


def test_third_party_modules_are_installed_packages():
    """Installed packages are third party; stdlib, staged and own modules are not."""
    names = modules.third_party_modules()
    assert "paramiko" in names and "pytest" in names
    assert not {"json", "lazyslurm", "cloudpickle", "examples", "tests"} & set(names)


def test_referenced_modules_read_module_names_in_pickles():
    """Module names in a pickle are found; the same word in data is not a module name."""
    blob = cloudpickle.dumps([paramiko.SSHClient, "paramiko is a word"])
    assert modules.referenced_modules([blob], ["paramiko", "pytest"]) == {"paramiko"}
    assert modules.referenced_modules([pickle.dumps("paramiko.client x")], ["paramiko"]) == set()


def test_code_by_value_is_seen_in_pickles():
    """A function of a script pickles by value (cloudpickle); a builtin by reference."""
    assert modules.has_code_by_value([cloudpickle.dumps(lambda x: x)])
    assert not modules.has_code_by_value([cloudpickle.dumps({"func": math.sqrt})])


def test_minor_mismatch_with_code_by_value_is_refused():
    """Another minor version with code by value: refused, naming both versions and the fix."""
    with pytest.raises(PythonVersionError) as info:
        modules.check_python((3, 12, 1), python="py", code_by_value=True, client=(3, 11, 7))
    msg = str(info.value)
    assert "3.12.1" in msg and "3.11.7" in msg and "python=..." in msg


def test_harmless_mismatches_are_allowed():
    """A micro mismatch, or a minor one with nothing by value, is allowed."""
    modules.check_python((3, 11, 2), python="py", code_by_value=True, client=(3, 11, 7))
    modules.check_python((3, 13, 0), python="py", code_by_value=False, client=(3, 11, 7))


def test_a_python_older_than_the_runner_needs_is_refused():
    """Python 3.10 cannot run the runner, whatever travels."""
    with pytest.raises(PythonVersionError, match=r">= 3\.11"):
        modules.check_python((3, 10, 13), python="py", code_by_value=False, client=(3, 11, 7))


def test_unshippable_error_names_module_kind_and_modes():
    """The error names the module, says it is compiled, and the modes that work."""
    import nacl  # noqa: F401 - a compiled extension paramiko brings

    err = modules.unshippable_error({"nacl"}, python="python3", mode="by-value")
    assert isinstance(err, UnshippableModuleError)
    assert "nacl (a compiled extension)" in str(err)
    for mode in ("'wheel'", "'container'", "'inherit'"):
        assert mode in str(err)


@task
def _unused(x: int) -> int:
    return x


def test_installed_files_are_pure_python_closures():
    """A pure package ships with its files; one needing compiled code names it."""
    files, compiled = modules.installed_files(["attrs"])
    assert "attrs/__init__.py" in files and "attr/__init__.py" in files and not compiled
    files, compiled = modules.installed_files(["paramiko"])
    assert {"bcrypt", "nacl"} <= compiled and "paramiko/client.py" in files
