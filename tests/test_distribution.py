"""The distribution: its metadata (pyproject.toml), the README's first example, the wheel."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DIST_NAME = "lazyslurm-dag"


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def readme_first_python_block() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", text, re.DOTALL)
    assert match, "README.md has no python block"
    return match.group(1)


def test_metadata_names_license_classifiers_and_urls() -> None:
    """The distribution has its own name, an MIT LICENSE file, classifiers and URLs."""
    project = pyproject()["project"]
    assert project["name"] == DIST_NAME
    assert project["license"] == "MIT"
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert "Typing :: Typed" in project["classifiers"]
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    assert (REPO / "lazyslurm" / "py.typed").is_file()


def test_no_extra_duplicates_a_required_dependency() -> None:
    """No optional extra (such as the old `progress`) repeats a required dependency."""
    project = pyproject()["project"]
    required = {re.split(r"[<>=!~ ;\[]", d)[0] for d in project["dependencies"]}
    assert "progress" not in project["optional-dependencies"]
    for extra, deps in project["optional-dependencies"].items():
        names = {re.split(r"[<>=!~ ;\[]", d)[0] for d in deps}
        assert not names & required, (extra, names & required)


def test_install_advice_uses_the_distribution_name() -> None:
    """Docs and error messages say `pip install lazyslurm-dag`, never the taken name."""
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md"), *(REPO / "lazyslurm").rglob("*.py")]
    for path in files:
        text = path.read_text()
        assert not re.search(r"pip install lazyslurm(?![-_\w])", text), path
        assert "lazyslurm-*.whl" not in text, path
    assert f"pip install {DIST_NAME}" in (REPO / "README.md").read_text()


def test_readme_first_example_runs_on_the_local_backend(tmp_path, monkeypatch) -> None:
    """The README's first python block runs as copied (its Slurm part on the local backend)."""
    code = readme_first_python_block()
    assert "..." not in code.replace('"..."', ""), "the example must have no placeholder body"
    slurm = 'Cluster("slurm", partition="debug")'
    assert slurm in code
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "readme_example.py"
    script.write_text(code.replace(slurm, f'Cluster("local", workdir={str(tmp_path)!r})'))
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], lines  # the local run, then the "Slurm" one
    assert "'lr': 0.01, 'seed': 0" in lines[0]  # the best of the four configurations


@pytest.mark.slurm
def test_readme_first_example_runs_as_written_on_slurm(cluster_env, tmp_path) -> None:
    """The README's first python block, unchanged, runs on the real test Slurm."""
    script = tmp_path / "readme_example.py"
    script.write_text(readme_first_python_block())
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "SLURM_CONF": cluster_env["LAZYSLURM_TEST_SLURM_CONF"],
        "HOME": str(tmp_path),  # the default ~/.lazyslurm store: this test's own
    }
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1], lines


@pytest.mark.install
def test_wheel_installs_and_runs_the_example_outside_the_checkout(tmp_path) -> None:
    """A plain pip install of the built wheel runs lazyslurm.examples outside the checkout."""
    py, env, run_dir = _installed_wheel(tmp_path)
    out = subprocess.run(
        [
            str(py),
            "-m",
            "lazyslurm.examples.parallelization_patterns",
            "--backend",
            "sync",
            "--pattern",
            "pipeline",
        ],
        capture_output=True,
        text=True,
        cwd=run_dir,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "final_transform_2(preprocessed_data_3)" in out.stdout
    where = subprocess.run(
        [str(py), "-c", "import lazyslurm, lazyslurm.examples as e; print(e.__file__)"],
        capture_output=True,
        text=True,
        cwd=run_dir,
        env=env,
    )
    assert str(py.parent.parent) in where.stdout, where.stdout  # the installed copy
    assert (Path(where.stdout.strip()).parent.parent / "py.typed").is_file()
    static = Path(where.stdout.strip()).parent.parent / "dashboard" / "static"
    assert {p.name for p in static.iterdir()} >= {"index.html", "app.js", "app.css"}


# each shipped example, run from the wheel with arguments that keep it short, and what its
# output must contain
EXAMPLE_RUNS = {
    "hello_world": (["--backend", "sync"], "Hello, world!"),
    "map_reduce": (["--backend", "sync"], "the"),
    "train_eval": (["--backend", "sync"], "keep model-"),
    "parallelization_patterns": (["--backend", "sync", "--pattern", "pipeline"], "final_"),
    "workflows": (["--backend", "sync"], "fan-out/fan-in total: 124750"),
    "distributed_sum": (["--backend", "sync"], "ok"),
    "custom_backend": ([], "total_sum"),
}


@pytest.mark.install
def test_every_shipped_example_runs_from_the_wheel(tmp_path) -> None:
    """Every example in the wheel runs as `python -m lazyslurm.examples.NAME` in a fresh
    venv outside the checkout, and its --help shows commands that work there (they named
    `examples.NAME`, which exists only in a checkout: 4 of 6 crashed on import)."""
    py, env, run_dir = _installed_wheel(tmp_path)
    listed = subprocess.run(
        [str(py), "-c", "import lazyslurm.examples as e, pkgutil; "
         "print(' '.join(sorted(m.name for m in pkgutil.iter_modules(e.__path__))))"],
        capture_output=True, text=True, cwd=run_dir, env=env,
    )  # fmt: skip
    assert set(listed.stdout.split()) == set(EXAMPLE_RUNS), listed
    for name, (args, expected) in EXAMPLE_RUNS.items():
        module = f"lazyslurm.examples.{name}"
        out = subprocess.run(
            [str(py), "-m", module, *args], capture_output=True, text=True, cwd=run_dir,
            env=env, timeout=300,
        )  # fmt: skip
        assert out.returncode == 0, (name, out.stderr[-3000:])
        assert expected in out.stdout, (name, out.stdout[-2000:])
        if name == "custom_backend":
            continue  # no command line: its docstring says how to use it
        helped = subprocess.run(
            [str(py), "-m", module, "--help"], capture_output=True, text=True, cwd=run_dir,
            env=env, timeout=120,
        )  # fmt: skip
        assert helped.returncode == 0, (name, helped.stderr)
        commands = set(re.findall(r"python -m ([\w.]+)", helped.stdout))
        assert commands == {module}, (name, commands)  # never the checkout's examples.NAME


def _installed_wheel(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    """The built wheel installed in a fresh venv: its python, an environment without the
    checkout on the path, and a directory outside the checkout to run in."""
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("lazyslurm_dag-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    inst = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    if inst.returncode != 0 and "No matching distribution" in inst.stderr:
        pytest.skip(f"the package index cannot provide the dependencies: {inst.stderr[-300:]}")
    assert inst.returncode == 0, inst.stderr
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["LAZYSLURM_WORKDIR"] = str(tmp_path / "work")
    return py, env, run_dir
