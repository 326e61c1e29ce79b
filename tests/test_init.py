"""The package's public names (lazyslurm/__init__.py)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import lazyslurm

REPO = Path(lazyslurm.__file__).resolve().parent.parent


def test_all_is_sorted_and_unique() -> None:
    """lazyslurm.__all__ is sorted, without duplicates."""
    assert lazyslurm.__all__ == sorted(set(lazyslurm.__all__))


def run_python(code: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr


def test_every_public_name_resolves() -> None:
    """Each name in __all__, looked up first, is its module's object and is in dir()."""
    run_python(
        "import importlib, sys\n"
        "names = __import__('lazyslurm').__all__\n"
        "for name in names:\n"
        "    for m in [m for m in sys.modules if m.split('.')[0] == 'lazyslurm']:\n"
        "        del sys.modules[m]\n"
        "    lazyslurm = importlib.import_module('lazyslurm')\n"
        "    value = getattr(lazyslurm, name)\n"
        "    mod = importlib.import_module(lazyslurm._EXPORTS[name])\n"
        "    assert value is (mod if name in lazyslurm._MODULES else getattr(mod, name)), name\n"
        "    assert name in dir(lazyslurm), name\n"
    )


@pytest.mark.parametrize(
    "code",
    [
        "from lazyslurm import plan, compute",
        "from lazyslurm import Run, submit, compute",
        "import lazyslurm.execute\nfrom lazyslurm import compute",
        "import lazyslurm.draw\nfrom lazyslurm import visualize",
    ],
)
def test_names_shadowed_by_submodules_still_resolve_to_functions(code: str) -> None:
    """compute and visualize are the functions whatever was imported before them."""
    name = code.rsplit(" ", 1)[-1]
    run_python(f"{code}\nassert callable({name}), type({name})\n")


def test_seed_imports_work() -> None:
    """The seed's import line, and the public API names of the issue, are importable."""
    from lazyslurm import Cluster, compute, plan, task  # noqa: F401


def test_star_import_in_a_fresh_interpreter() -> None:
    """`from lazyslurm import *` binds exactly __all__ in a fresh interpreter."""
    run_python(
        "before = set(globals())\n"
        "from lazyslurm import *\n"
        "import lazyslurm\n"
        "new = sorted(set(globals()) - before - {'before', 'lazyslurm'})\n"
        "assert new == lazyslurm.__all__, new\n"
    )


def test_unknown_attribute_raises_attribute_error() -> None:
    """A name that is not exported raises AttributeError (so hasattr works)."""
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = lazyslurm.nope
    assert not hasattr(lazyslurm, "nope")


def test_type_checking_imports_match_all() -> None:
    """The TYPE_CHECKING imports (for type checkers) name exactly __all__."""
    tree = ast.parse(Path(lazyslurm.__file__).read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom):
                    names |= {a.asname or a.name for a in stmt.names}
    assert sorted(names) == lazyslurm.__all__


def test_version_matches_pyproject() -> None:
    """lazyslurm.__version__ is the version in pyproject.toml."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert lazyslurm.__version__ == data["project"]["version"]


def test_all_is_a_literal_list_that_checkers_read() -> None:
    """__all__ is written out as a list literal (checkers ignore computed ones), = _EXPORTS."""
    tree = ast.parse(Path(lazyslurm.__file__).read_text())
    (value,) = [
        node.value
        for node in tree.body
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "__all__"
    ]
    assert isinstance(value, ast.List)
    assert [ast.literal_eval(e) for e in value.elts] == sorted(lazyslurm._EXPORTS)


def test_package_ships_the_typed_marker() -> None:
    """lazyslurm/py.typed exists (PEP 561), so checkers use the package's annotations."""
    assert (Path(lazyslurm.__file__).parent / "py.typed").is_file()
