"""Types that check: a typed user script under mypy --strict and pyright (tests/typing/).

Shipped types: ``lazyslurm/py.typed``, an explicit ``__all__``, ``Task[P, R]``, ``Job[R]``,
``JobArray[R]``, typed ``compute`` and typed option keywords. The script's ``assert_type``
lines must hold, and every line it marks ``# type: ignore[CODE]`` must be an error (both
checkers are told to report an ignore comment that silences nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "typing" / "user_script.py"
BIN = Path(sys.executable).parent


def mypy(path: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    cmd = [
        sys.executable,
        "-m",
        "mypy",
        "--strict",
        "--warn-unused-ignores",
        "--no-error-summary",
        "--cache-dir",
        str(cache),
        str(path),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=path.parent, timeout=600)


def pyright_command(tmp: Path) -> list[str]:
    """pyright from the test extra (its PyPI wrapper runs the npm package on node), else
    one installed with npm; skips with the reason when neither can run here."""
    reasons = []
    wrapper = BIN / "pyright"
    if wrapper.exists():
        probe = subprocess.run(
            [str(wrapper), "--version"], capture_output=True, text=True, timeout=600
        )
        if probe.returncode == 0:
            return [str(wrapper)]
        reasons.append(f"the pyright wrapper failed: {probe.stderr.strip()[-300:]}")
    else:
        reasons.append("pyright is not installed (it is in the test extra)")
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("; ".join([*reasons, "and npm is not available to install pyright"]))
    prefix = Path(os.environ.get("LAZYSLURM_NPM_PREFIX", tmp.parent / "npm-pyright"))
    local = prefix / "node_modules" / ".bin" / "pyright"
    if not local.exists():
        inst = subprocess.run(
            [npm, "install", "--prefix", str(prefix), "pyright"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if inst.returncode != 0:
            pytest.skip("; ".join([*reasons, f"npm install pyright failed: {inst.stderr[-300:]}"]))
    return [str(local)]


def pyright(path: Path, tmp: Path) -> subprocess.CompletedProcess[str]:
    config = tmp / "pyrightconfig.json"
    config.write_text(
        json.dumps(
            {
                "typeCheckingMode": "strict",
                "reportUnnecessaryTypeIgnoreComment": "error",
                "reportUnusedVariable": False,
            }
        )
    )
    cmd = [*pyright_command(tmp), "-p", str(config), "--pythonpath", sys.executable, str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=path.parent, timeout=600)


def test_mypy_strict_accepts_the_script_and_its_expected_errors(tmp_path: Path) -> None:
    """mypy --strict: every assert_type holds, every marked line fails with its code."""
    out = mypy(SCRIPT, tmp_path / "mypy-cache")
    assert out.returncode == 0, out.stdout + out.stderr


def test_pyright_strict_accepts_the_script_and_its_expected_errors(tmp_path: Path) -> None:
    """pyright (strict): every assert_type holds, every marked line is an error."""
    out = pyright(SCRIPT, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 errors" in out.stdout


def test_a_line_wrongly_marked_as_rejected_fails_both_checkers(tmp_path: Path) -> None:
    """The check has teeth: a correct call marked as an expected error fails both checkers."""
    text = SCRIPT.read_text()
    marked = 'train("fast")  # type: ignore[arg-type]'
    assert marked in text
    bad = tmp_path / "user_script.py"
    bad.write_text(text.replace(marked, "train(0.5)  # type: ignore[arg-type]"))
    out = mypy(bad, tmp_path / "mypy-cache")
    assert out.returncode != 0 and 'Unused "type: ignore" comment' in out.stdout, out.stdout
    out = pyright(bad, tmp_path)
    assert out.returncode != 0 and "Unnecessary" in out.stdout, out.stdout
