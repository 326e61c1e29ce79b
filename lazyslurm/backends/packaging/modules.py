"""Which modules travel and how, for every packaging mode: the runner's own files (staged
by ``by-value`` and ``wheel``, baked into images by ``container``), the user's modules
(pickled by value), the installed modules a run's pickles name, and the Python version
rule. Pure (reads only this process).

The runner side of lazyslurm (the runner, the store, the errors) and cloudpickle are pure
Python and are staged into the cluster's workdir once per content hash; the user's own
modules (those that are not installed packages) travel inside the pickles
(``cloudpickle.register_pickle_by_value``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import re
import site
import sys
import sysconfig
import types
from collections.abc import Iterable, Mapping
from pathlib import Path

from lazyslurm.errors import PythonVersionError, UnshippableModuleError, missing_module_fixes

__all__ = [
    "MIN_PYTHON",
    "RUNNER_FILES",
    "check_python",
    "has_code_by_value",
    "installed_files",
    "project_modules",
    "referenced_modules",
    "runtime_files",
    "runtime_hash",
    "third_party_modules",
    "unshippable_error",
]

MIN_PYTHON = (3, 11)  # what the runner (and this package) needs
# the runner's imports, within lazyslurm (tests/test_packaging_byvalue.py runs a staged copy)
RUNNER_FILES = (
    "__init__.py",
    "registry.py",  # the package's __init__ registers the executor there
    "errors.py",
    "store.py",
    "context.py",  # JobContext, for tasks that ask for one
    "runner/__init__.py",
    "runner/__main__.py",
)
# what the staged code directory holds: all of lazyslurm (the runner imports only
# RUNNER_FILES; a task that returns lazy values, or a @workflow, plans and submits from
# the compute node with the rest) and the pure-Python packages that needs
STAGED_PACKAGES = ("lazyslurm", "cloudpickle", "attr", "attrs")


@functools.cache
def runtime_files() -> dict[str, bytes]:
    """The files of the staged code directory: lazyslurm's Python source, cloudpickle and
    attrs (about 170 KB compressed, uploaded once per content hash).

    >>> sorted(runtime_files())[:1]
    ['attr/__init__.py']
    """
    files: dict[str, bytes] = {}
    for name in STAGED_PACKAGES:
        top = Path(importlib.import_module(name).__file__ or "").resolve().parent
        for path in sorted(top.rglob("*.py")):
            if "__pycache__" not in path.parts:
                files[f"{name}/{path.relative_to(top).as_posix()}"] = path.read_bytes()
    return files


def content_hash(files: Mapping[str, bytes]) -> str:
    """A short hash of file names and contents (16 hex digits).

    >>> content_hash({"a": b"1"}) == content_hash({"a": b"1"}) != content_hash({"a": b"2"})
    True
    """
    h = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:16]


def runtime_hash() -> str:
    """The content hash naming the staged code directory (``WORKDIR/code/HASH``)."""
    return content_hash(runtime_files())


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    """Directories of the standard library and of installed packages."""
    paths = sysconfig.get_paths()
    roots = {paths["purelib"], paths["platlib"], *_stdlib_roots()}
    try:
        roots.update(site.getsitepackages())
    except AttributeError:  # pragma: no cover - some virtualenvs lack it
        pass
    roots.add(site.getusersitepackages())
    return tuple(str(Path(r).resolve()).rstrip("/") + "/" for r in roots if r)


@functools.cache
def _stdlib_roots() -> tuple[str, ...]:
    """The standard library of the base interpreter (a venv's lib/ holds site-packages)."""
    paths = sysconfig.get_paths(vars={"base": sys.base_prefix, "platbase": sys.base_exec_prefix})
    return tuple(
        str(Path(p).resolve()).rstrip("/") + "/" for p in {paths["stdlib"], paths["platstdlib"]}
    )


def _file_of(mod: types.ModuleType) -> str:
    path = getattr(mod, "__file__", None)
    return _resolved(path) if isinstance(path, str) and path else ""


@functools.lru_cache(maxsize=8192)
def _resolved(path: str) -> str:
    """A module file's real path (cached: sys.modules is scanned once per array job)."""
    try:
        return str(Path(path).resolve())
    except OSError:  # pragma: no cover
        return ""


def _is_top_staged(name: str) -> bool:
    return name.split(".")[0] in STAGED_PACKAGES


def project_modules(modules: Mapping[str, types.ModuleType] | None = None) -> list[str]:
    """Names of the user's own modules: loaded from Python source outside the standard
    library and installed packages (scripts, notebooks' helpers, a checkout on
    ``sys.path``); lazyslurm and cloudpickle excluded. ``__main__`` always travels by value.
    """
    mods = sys.modules if modules is None else modules
    roots = _installed_roots()
    out = []
    for name, mod in list(mods.items()):
        if name == "__main__" or _is_top_staged(name) or not isinstance(mod, types.ModuleType):
            continue
        path = _file_of(mod)
        if not path.endswith(".py") or path.startswith(roots):
            continue
        out.append(name)
    return sorted(out)


def third_party_modules(modules: Mapping[str, types.ModuleType] | None = None) -> list[str]:
    """Top-level names of loaded modules that are neither stdlib, nor staged, nor the
    user's own Python source: installed packages and compiled extensions. The cluster
    must be able to import those the run's pickles name."""
    mods = sys.modules if modules is None else modules
    stdlib = _stdlib_roots()
    roots = _installed_roots()
    out = set()
    for name, mod in list(mods.items()):
        top = name.split(".")[0]
        if top in out or _is_top_staged(top) or top == "__main__":
            continue
        if top in sys.builtin_module_names or top in sys.stdlib_module_names:
            continue
        path = _file_of(mod)
        if not path or (path.startswith(stdlib) and "-packages/" not in path):
            continue
        if path.endswith(".py") and not path.startswith(roots):
            continue  # the user's own source: travels by value
        out.add(top)
    return sorted(out)


def is_extension(name: str) -> bool:
    """Whether the loaded top-level module ``name`` is or contains compiled code."""
    mod = sys.modules.get(name)
    path = _file_of(mod) if mod is not None else ""
    if not path:
        return False
    if not path.endswith(".py"):
        return True
    if Path(path).name == "__init__.py":
        base = Path(path).parent
        return any(base.rglob("*.so")) or any(base.rglob("*.pyd"))
    return False


def referenced_modules(blobs: Iterable[bytes], names: Iterable[str]) -> set[str]:
    """Which of the top-level module ``names`` the spec files ``blobs`` name. A module name
    is a short length-prefixed string: in a pickle SHORT_BINUNICODE (``\\x8c``), in marshal
    data (a function shipped as plain data, :func:`lazyslurm.store.function_data`) a short
    ASCII string (``z``/``Z``, with or without marshal's reference flag).

    >>> import marshal, pickle, fractions
    >>> sorted(referenced_modules([pickle.dumps(fractions.Fraction(1, 3))],
    ...                           ["fractions", "json"]))
    ['fractions']
    >>> sorted(referenced_modules([marshal.dumps({"refs": ("module", "json.decoder")})],
    ...                           ["fractions", "json"]))
    ['json']
    """
    names = sorted(set(names), key=len, reverse=True)
    if not names:
        return set()
    alt = b"|".join(re.escape(n.encode()) for n in names)
    start = re.compile(rb"[\x8czZ\xfa\xda](.)(?=" + alt + rb")", re.DOTALL)
    whole = re.compile(rb"(?:" + alt + rb")(?:\.[A-Za-z0-9_]+)*")
    found: set[str] = set()
    for blob in blobs:
        for m in start.finditer(blob):
            text = blob[m.end() : m.end() + m.group(1)[0]]  # exactly the string's length
            if whole.fullmatch(text):
                found.add(text.split(b".")[0].decode())
    return found


def has_code_by_value(blobs: Iterable[bytes]) -> bool:
    """Whether pickles carry code by value (functions, classes or lambdas rebuilt by
    cloudpickle), which only the same Python minor version can load."""
    # "func_lite": a function's code object as marshal data (store.function_data)
    return any(b"cloudpickle" in blob or b"func_lite" in blob for blob in blobs)


def check_python(
    cluster: tuple[int, ...],
    *,
    python: str,
    code_by_value: bool,
    client: tuple[int, ...] | None = None,
    where: str = "on the cluster",
) -> None:
    """Refuse a cluster Python that cannot run the runner, or that cannot load code this
    client pickled by value (another minor version: bytecode differs). A mismatch of
    micro version, or of minor version when nothing travels by value, is harmless.

    >>> check_python((3, 11, 2), python="python3", code_by_value=True, client=(3, 11, 7))
    >>> check_python((3, 12, 1), python="python3", code_by_value=False, client=(3, 11, 7))
    """
    client = client or tuple(sys.version_info[:3])
    have = ".".join(map(str, cluster))
    mine = ".".join(map(str, client))
    if tuple(cluster[:2]) < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        msg = (
            f"python {python!r} {where} is Python {have}; lazyslurm's runner needs "
            f"Python >= {need}: pass python=... naming a newer interpreter there (for example "
            f"after `module load python`), or use packaging='container'"
        )
        raise PythonVersionError(msg)
    if code_by_value and tuple(cluster[:2]) != tuple(client[:2]):
        minor = ".".join(map(str, client[:2]))
        msg = (
            f"python {python!r} {where} is Python {have} but this client runs Python "
            f"{mine}: code pickled by value (functions of scripts and of your own modules) "
            f"loads only under the same minor version. Fix: pass python=... naming a Python "
            f"{minor} there, run the client with Python {'.'.join(map(str, cluster[:2]))}, "
            f"or use packaging='container' with an image of Python {minor}; nothing was "
            f"submitted"
        )
        raise PythonVersionError(msg)


def _dist_key(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_files(names: Iterable[str]) -> tuple[dict[str, bytes], set[str]]:
    """The files of the installed distributions that provide the top-level modules
    ``names``, with the distributions they require (those installed here), when they are
    pure Python: ``(files relative to site-packages, top-level names of compiled ones)``.

    >>> files, compiled = installed_files(["cloudpickle"])
    >>> "cloudpickle/cloudpickle.py" in files, compiled
    (True, set())
    """
    from importlib import metadata

    providers = metadata.packages_distributions()
    todo = [d for n in names for d in providers.get(n, [])]
    seen: set[str] = set()
    files: dict[str, bytes] = {}
    compiled: set[str] = set()
    while todo:
        name = todo.pop()
        if _dist_key(name) in seen:
            continue
        seen.add(_dist_key(name))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here: a requirement for another platform or Python
        paths = [
            f
            for f in dist.files or ()
            if not str(f).startswith("..")
            and ".dist-info/" not in str(f)
            and "__pycache__" not in f.parts
            and not str(f).endswith(".pyc")
        ]
        if any(str(f).endswith((".so", ".pyd")) for f in paths):
            compiled.update(str(f).split("/")[0].removesuffix(".py") for f in paths)
            continue
        for f in paths:
            located = Path(str(f.locate()))
            if located.is_file():
                files[str(f)] = located.read_bytes()
        for req in dist.requires or ():
            if "extra ==" in req.replace('"', "").replace("'", "") and ";" in req:
                continue  # an optional extra
            m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req)
            if m:
                todo.append(m.group(1))
    return files, compiled


def unshippable_error(missing: Iterable[str], *, python: str, mode: str) -> UnshippableModuleError:
    """The error for modules the task code needs, that the cluster's Python cannot import
    and ``mode`` cannot ship."""
    parts = []
    for name in sorted(missing):
        parts.append(f"{name} ({'a compiled extension' if is_extension(name) else 'installed'})")
    msg = (
        f"task code needs module(s) {', '.join(parts)} that python {python!r} on the cluster "
        f"cannot import, and packaging={mode!r} ships only pure Python (lazyslurm's runner, "
        f"cloudpickle, your own modules and pure-Python installed packages). Modes that "
        f"work: {missing_module_fixes('them')}; nothing was submitted"
    )
    return UnshippableModuleError(msg)
