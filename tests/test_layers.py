"""Import layering: errors <- graph <- planning <- backends <- compute; the runner apart.

Each check runs in a fresh interpreter and reads ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import lazyslurm
from lazyslurm.graph import task
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import make_plan
from lazyslurm.store import RunLayout, atomic_write, encode_outcome

PKG = Path(lazyslurm.__file__).resolve().parent
REPO = PKG.parent
HEAVY = ("paramiko", "networkx", "graphviz", "attrs")
UPPER = (
    "lazyslurm.planning",
    "lazyslurm.backends",
    "lazyslurm.execute",
    "lazyslurm.cluster",
    "lazyslurm.draw",
)


def loaded_after(code: str, **env: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=full_env, cwd=REPO
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def offenders(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


# --------------------------------------------------------------------------- runner


def test_importing_the_runner_stays_light() -> None:
    """`import lazyslurm.runner` loads no heavy dependency, graph or planning code."""
    mods = loaded_after("import lazyslurm.runner, lazyslurm.runner.__main__")
    assert offenders(mods, (*HEAVY, "lazyslurm.graph", *UPPER)) == []


@task
def add(x: int, y: int = 0) -> int:
    return x + y


@task
def boom(x: int) -> int:
    raise KeyError(x)


@pytest.mark.parametrize("fails", [False, True], ids=["ok", "failing"])
def test_running_an_element_stays_light(tmp_path: Path, fails: bool) -> None:
    """Running an element loads no heavy dependency, graph or planning code, and a task
    without a JobContext parameter does not load the context module either. Its
    function goes by value (this test module is not installed) and loads without
    cloudpickle (store's light loader)."""
    a = add.map([(1, 2)])
    job = (boom if fails else add).map(a)[0]
    plan = make_plan([job], done={a[0].key: None})
    paths = RunLayout.of("r1", tmp_path)
    paths.make_dirs()
    for rel, data in encode_run(plan, run_id="r1", outputs=[], by_value=True).items():
        atomic_write(f"{paths.root}/{rel}", data)
    record = encode_outcome(b"\x80\x05K\x03.", key=a[0].key, writer="r1/aj9/0")  # 3
    atomic_write(paths.result(a[0].key), record)
    code = (
        "import sys\n"
        "from lazyslurm.runner.__main__ import main\n"
        f"code = main([{str(paths.root)!r}, 'aj0'])\n"
        f"assert code == {int(fails)}, code\n"
    )
    mods = loaded_after(code, SLURM_ARRAY_TASK_ID="0")
    assert offenders(mods, (*HEAVY, "lazyslurm.graph", "lazyslurm.context", *UPPER)) == []
    assert offenders(mods, ("cloudpickle",)) == []
    assert os.path.exists(paths.error(job.key) if fails else paths.result(job.key))


@task
def builds_but_returns_a_value(x: int) -> int:
    from lazyslurm.graph import task as make_task

    make_task(lambda y: y)(x)  # the graph is loaded, the value returned is plain
    return x


def test_a_task_that_loads_the_graph_but_returns_a_value_plans_nothing(tmp_path: Path) -> None:
    """A task whose module uses the graph but returns a plain value loads no planning,
    backends or dynamic-expansion code (only a lazy value returned does)."""
    plan = make_plan([builds_but_returns_a_value(3)])
    paths = RunLayout.of("r1", tmp_path)
    paths.make_dirs()
    for rel, data in encode_run(plan, run_id="r1", outputs=[], by_value=True).items():
        atomic_write(f"{paths.root}/{rel}", data)
    code = (
        "from lazyslurm.runner.__main__ import main\n"
        f"assert main([{str(paths.root)!r}, 'aj0']) == 0\n"
    )
    mods = loaded_after(code, SLURM_ARRAY_TASK_ID="0")
    assert "lazyslurm.graph.core" in mods
    assert offenders(mods, ("paramiko", "networkx", "graphviz", "lazyslurm.dynamic", *UPPER)) == []


def _imports(path: Path, *, top_level: bool = False) -> set[str]:
    """Every module a source file imports, at any level (function bodies too), or only
    at module level."""
    names: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in tree.body if top_level else ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            names.add(node.module or "")
    return names


@pytest.mark.parametrize(
    "source",
    [
        "store.py",
        "errors.py",
        "context.py",
        "bytecode.py",
        "runner/__init__.py",
        "runner/__main__.py",
    ],
)
def test_runner_side_sources_import_only_stdlib_cloudpickle_store_errors(source: str) -> None:
    """Runner, store, errors and context import (even lazily) only stdlib, cloudpickle and
    each other."""
    allowed_pkg = {"lazyslurm.store", "lazyslurm.errors", "lazyslurm.runner", "lazyslurm.context"}
    allowed_pkg.add("lazyslurm.bytecode")  # the runner's own compiled code (issue 27)
    # the one exception: a task that returned a lazy value expands it (inside run_element)
    lazily = {"lazyslurm.dynamic"} if source == "runner/__init__.py" else set()
    assert not lazily & _imports(PKG / source, top_level=True)
    # a compact map over a NumPy array rebuilds its items with numpy (the task uses it)
    third = {"cloudpickle", "numpy"} if source == "store.py" else {"cloudpickle"}
    assert not (third - {"cloudpickle"}) & _imports(PKG / source, top_level=True)
    for name in _imports(PKG / source):
        top = name.split(".")[0]
        if top == "lazyslurm":
            assert name in allowed_pkg | lazily, f"{source} imports {name}"
        else:
            assert top in sys.stdlib_module_names or top in third, f"{source}: {name}"


# --------------------------------------------------------------------------- layers


# where Python writes no bytecode, the package keeps its own (lazyslurm/bytecode.py)
_BYTECODE = ["lazyslurm.bytecode"] if os.environ.get("PYTHONDONTWRITEBYTECODE") else []


def test_package_import_loads_no_submodule() -> None:
    """`import lazyslurm` alone loads none of its submodules (names resolve on first use)
    but the registry, which imports nothing (lazy values reach the executor through it)."""
    mods = loaded_after("import lazyslurm")
    expected = ["lazyslurm", *_BYTECODE, "lazyslurm.registry", "lazyslurm.version"]
    assert offenders(mods, ("lazyslurm",)) == expected


def test_errors_import_nothing_from_the_package() -> None:
    """`import lazyslurm.errors` loads only the package shell (and its import-free
    registry) and the errors module."""
    mods = loaded_after("import lazyslurm.errors")
    expected = [
        "lazyslurm",
        *_BYTECODE,
        "lazyslurm.errors",
        "lazyslurm.registry",
        "lazyslurm.version",
    ]
    assert offenders(mods, ("lazyslurm",)) == expected
    assert not any(n.split(".")[0] == "lazyslurm" for n in _imports(PKG / "errors.py"))


def test_graph_does_not_import_planning_backends_or_compute() -> None:
    """Importing lazyslurm.graph and building a graph loads no planning, backends or compute."""
    code = (
        "import lazyslurm.graph\n"
        "from lazyslurm.graph import task\n"
        "t = task(mem='1G')(lambda x: x)\n"
        "t.after(t(0)).map(t.map([1, 2]))\n"
    )
    mods = loaded_after(code)
    assert offenders(mods, (*UPPER, "paramiko", "networkx", "graphviz")) == []


def test_planning_does_not_import_backends_compute_or_paramiko() -> None:
    """Importing lazyslurm.planning loads no backends, compute, cluster, paramiko or graphviz."""
    code = "import lazyslurm.planning, lazyslurm.planning.encode\n"
    if (PKG / "planning" / "sbatch.py").exists():
        code += "import lazyslurm.backends.slurm.render\n"
    mods = loaded_after(code)
    prefixes = (
        "lazyslurm.backends",
        "lazyslurm.execute",
        "lazyslurm.cluster",
        "lazyslurm.draw",
        "paramiko",
        "graphviz",
    )
    assert offenders(mods, prefixes) == []


def test_store_is_runner_side() -> None:
    """`import lazyslurm.store` loads no graph, planning or heavy dependency."""
    mods = loaded_after("import lazyslurm.store")
    assert offenders(mods, (*HEAVY, "lazyslurm.graph", *UPPER)) == []


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _targets(path: Path) -> set[str]:
    """lazyslurm modules a source file imports, at any level (function bodies too):
    ``from pkg import mod`` counts as importing ``pkg.mod`` when that is a module."""
    modules = {_module_name(p) for p in PKG.rglob("*.py")}
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        out |= {n for n in names if n in modules}
    return out


def test_the_import_graph_has_no_cycles() -> None:
    """No cycle among lazyslurm's modules, counting imports made inside functions and
    every edge between a package and its modules (a package importing its children, a
    child importing its parent): the layers point one way (graph -> planning -> backends
    -> execute), and a package's children import a module of their own, never it."""
    import networkx as nx

    g = nx.DiGraph()
    for path in PKG.rglob("*.py"):
        me = _module_name(path)
        g.add_node(me)
        g.add_edges_from((me, t) for t in _targets(path) if t != me)
    assert sorted(nx.simple_cycles(g)) == []


def _import_graph() -> Any:
    import networkx as nx

    g = nx.DiGraph()
    for path in PKG.rglob("*.py"):
        me = _module_name(path)
        g.add_node(me)
        g.add_edges_from((me, t) for t in _targets(path) if t != me)
    return g


FLOORS = 14  # the longest import chain, in modules (19 before the rooms were set side by side)


def test_the_house_has_few_floors() -> None:
    """The longest chain of imports (every edge counted, as above) stays at most FLOORS
    modules: presentation (pictures, notebook, progress, dashboard) sits beside the model,
    options are declared in light modules, the registry apart from the protocol. The
    shipped examples are not floors of the house: they import the public API as a user's
    script does (one runs another's patterns on its own backend)."""
    import networkx as nx

    g: Any = _import_graph()
    house = g.subgraph(n for n in g.nodes if not n.startswith("lazyslurm.examples"))
    chain = nx.dag_longest_path(house)
    assert len(chain) <= FLOORS, " <- ".join(reversed(chain))


def test_nothing_below_the_backends_imports_one() -> None:
    """graph, planning, store and errors import no backend module: the Slurm text (flags,
    scripts, the checkpoint signal's lead time) lives in the Slurm folder, not below it."""
    g: Any = _import_graph()
    below = ("lazyslurm.graph", "lazyslurm.planning", "lazyslurm.store", "lazyslurm.errors")
    for node in g.nodes:
        if node.startswith(below):
            up = [t for t in g.successors(node) if t.startswith("lazyslurm.backends")]
            assert up == [], (node, up)


_SLURM_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "scancel", "sinfo", "sacctmgr")
# the runner's own side of Slurm's environment (docs/architecture.md): the checkpoint hook
# requeues its element, JobContext expands its node list; Pyxis is an srun plugin
_SLURM_ELSEWHERE = {
    "runner/checkpoint.py": {"scontrol"},
    "context.py": {"scontrol"},
    "backends/packaging/container.py": {"srun"},
}


def _commands_run(path: Path) -> set[str]:
    """Slurm commands a source runs: an argv list starting with one (``["scontrol", ...]``)
    or a shell line that does (``"sacct -X ..."``, also after ``;``, ``|``, ``&&``)."""
    import re

    found: set[str] = set()
    tree = ast.parse(path.read_text())
    docs = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and ast.get_docstring(node, clean=False) is not None
    }
    shell = re.compile(r"(?:^|[;|&\n]\s*|\$\()(" + "|".join(_SLURM_COMMANDS) + r"|srun) -")
    for node in ast.walk(tree):
        if isinstance(node, ast.List) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and first.value in (*_SLURM_COMMANDS, "srun"):
                found.add(first.value)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docs:
                found |= set(shell.findall(node.value))
    return found


def test_only_the_slurm_folder_runs_slurm() -> None:
    """No module outside backends/slurm/ runs a Slurm command (but the runner's own side of
    Slurm's environment, named above): Slurm is behind the backend door."""
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        if rel.startswith("backends/slurm/"):
            continue
        extra = _commands_run(path) - _SLURM_ELSEWHERE.get(rel, set())
        assert extra == set(), f"{rel} runs {sorted(extra)}"
    assert _commands_run(PKG / "backends" / "slurm" / "backend.py") >= {"sacct", "squeue"}


def test_graph_imports_nothing_above_it() -> None:
    """graph/ imports only errors, store and the registry of lazyslurm, even in functions."""
    allowed = {"lazyslurm.errors", "lazyslurm.store", "lazyslurm.registry"}
    for path in (PKG / "graph").rglob("*.py"):
        above = {t for t in _targets(path) if not t.startswith("lazyslurm.graph")} - allowed
        assert above == set(), path
