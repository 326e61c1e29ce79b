"""lazyslurm's own compiled code kept where Python writes none (issue 27): with
PYTHONDONTWRITEBYTECODE, the runner compiled store.py and runner/__init__.py in every
array element (25 ms of CPU against 12 ms for a whole ``python -c pass``)."""

from __future__ import annotations

import marshal
import os
import subprocess
import sys
from pathlib import Path

from lazyslurm import bytecode
from lazyslurm.store import FunctionRef, RunLayout, atomic_write, encode_spec, encode_value

REPO = Path(__file__).resolve().parent.parent
RUNNER = REPO / "lazyslurm" / "runner" / "__main__.py"


def _element(tmp_path: Path) -> RunLayout:
    paths = RunLayout.of("20260101-000000-cccccc", tmp_path / "work")
    paths.make_dirs()
    spec = encode_spec({"func": FunctionRef("builtins", "abs")}, [encode_value(("k-0", (-3,), {}))])
    atomic_write(paths.spec("aj0"), spec)
    return paths


def _run(paths: RunLayout, cache: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "SLURM_ARRAY_TASK_ID": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "XDG_CACHE_HOME": str(cache),
    }
    return subprocess.run(
        [sys.executable, str(RUNNER), paths.root, "aj0"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )


def _folder(cache: Path) -> Path:
    return cache / "lazyslurm" / "bytecode" / sys.implementation.cache_tag


def test_the_runner_keeps_its_compiled_code_and_reuses_it(tmp_path):
    paths, cache = _element(tmp_path), tmp_path / "cache"
    assert _run(paths, cache, tmp_path).returncode == 0
    kept = sorted(p.name.split(".")[0] for p in _folder(cache).iterdir())
    assert kept == ["__init__", "store"]  # runner/__init__.py and store.py
    assert oct(_folder(cache).stat().st_mode & 0o777) == "0o700"
    stamps = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _folder(cache).iterdir()}
    os.unlink(paths.result("k-0"))
    assert _run(paths, cache, tmp_path).returncode == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _folder(cache).iterdir()} == stamps
    assert Path(paths.result("k-0")).exists()


def _plant(target: Path, marker: Path) -> None:
    """Replace a kept file's code by code that leaves ``marker``, header kept."""
    data = target.read_bytes()
    evil = compile(f"open({str(marker)!r}, 'w').close()", "x", "exec")
    target.write_bytes(data[:32] + marshal.dumps(evil))


def test_a_kept_file_others_could_write_or_a_link_is_never_run(tmp_path):
    paths, cache = _element(tmp_path), tmp_path / "cache"
    assert _run(paths, cache, tmp_path).returncode == 0
    store = next(p for p in _folder(cache).iterdir() if p.name.startswith("store."))
    marker = tmp_path / "ran"
    _plant(store, marker)
    store.chmod(0o666)  # writable by others: not ours alone
    os.unlink(paths.result("k-0"))
    assert _run(paths, cache, tmp_path).returncode == 0
    assert not marker.exists() and Path(paths.result("k-0")).exists()
    assert oct(store.stat().st_mode & 0o777) == "0o600"  # compiled again, kept privately

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(store.read_bytes())
    _plant(elsewhere, marker)
    store.unlink()
    store.symlink_to(elsewhere)  # a link: not followed
    os.unlink(paths.result("k-0"))
    assert _run(paths, cache, tmp_path).returncode == 0
    assert not marker.exists()

    _folder(cache).chmod(0o777)  # a folder others could plant files in
    for p in _folder(cache).iterdir():
        if not p.is_symlink():
            _plant(p, marker)
    os.unlink(paths.result("k-0"))
    assert _run(paths, cache, tmp_path).returncode == 0
    assert not marker.exists()


def test_a_changed_source_is_compiled_again(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    src = tmp_path / "m.py"
    src.write_text("X = 1\n")
    ns: dict = {}
    exec(bytecode.code_of(str(src)), ns)
    assert ns["X"] == 1
    src.write_text("X = 22\n")
    exec(bytecode.code_of(str(src)), ns)
    assert ns["X"] == 22


def test_the_client_keeps_the_package_compiled_where_python_would_not(tmp_path):
    code = (
        "import lazyslurm.graph.core as c, sys\n"
        "print(type(c.__spec__.loader).__name__, sys.dont_write_bytecode)\n"
    )
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["Loader", "True"]
    assert any(p.name.startswith("core.py.") for p in _folder(tmp_path).iterdir())
    env.pop("PYTHONDONTWRITEBYTECODE")
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path / "pycache")  # not into the checkout
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["SourceFileLoader", "False"]  # Python's own __pycache__ then
