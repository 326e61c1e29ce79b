"""``packaging="wheel"``: the user's project as a wheel, over an environment keyed by its
dependencies.

On the client: the project's wheel is built (``uv build --wheel`` when uv is on PATH,
else ``pip wheel --no-deps``) and its dependencies (the wheel's ``Requires-Dist``) are
downloaded (``pip download``, on the client: compute nodes often have no internet). The
two are kept apart, in ``~/.cache/lazyslurm/wheels``:

- ``deps-REQ/``: the dependency wheels, once per requirement set (and client Python and
  platform); at most :data:`_KEEP_DEP_SETS` sets are kept, the least recently used go.
- ``project-PATH/``: the project's last build, with a map from each file of the wheel
  to the source file it was copied from. An edit of those files is then read from the
  source tree without a build; only a change of the project's configuration
  (``pyproject.toml``, ``setup.py``, ``setup.cfg``, ``MANIFEST.in``) or of its file
  list (a file added or removed) builds the wheel again. A wheel with a file that is not
  a copy of a source file (generated, compiled) is built again on any change.

On the cluster, in ``WORKDIR/code``:

- ``wheels-KEY`` and ``venv-KEY``, the environment: ``KEY`` hashes the dependency wheels
  and the cluster's Python minor version, never the project's own files. The wheels are
  uploaded with the submission when the probe saw neither; the first job element to
  start creates the venv from them (``--no-index``), under a lock (``flock`` on
  ``venv-KEY.lock``, opened without following links or truncating), so a hundred
  elements starting at once build it once, then removes the wheels. While it does, it
  writes ``creating ...`` into the run's ``environment`` file, which every poll reads:
  progress bars, ``lazyslurm status`` and the notebook say "creating the environment
  (once): N wheels".
- ``proj-HASH``: the project's own files (the wheel's content, with its ``.dist-info``),
  first on ``PYTHONPATH`` over the venv. An edit costs a new ``proj-HASH`` of the
  project's size, uploaded with the submission: no new venv.

The runner and cloudpickle come from the staged code directory, as with ``by-value``;
the user's modules outside the wheel's packages travel by value.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from lazyslurm.backends.packaging.base import Launch, Prepared, pickles
from lazyslurm.backends.packaging.modules import (
    content_hash,
    project_modules,
)
from lazyslurm.backends.packaging.target import Target
from lazyslurm.errors import ClusterConfigError, PackagingError

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.planner import ArrayJob

__all__ = ["BUILDER", "Distribution", "WheelBuilder", "find_project", "venv_lines"]

_SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", "build", "dist",
              ".mypy_cache", ".ruff_cache", ".pytest_cache", ".tox", ".nox"}  # fmt: skip
_CONFIG_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "MANIFEST.in")
_TAIL_LINES = 25
_LOCK_WAIT_S = 900
_KEEP_DEP_SETS = 3  # dependency sets kept in the client cache (least recently used go)
_STATE_VERSION = 2


def find_project(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest directory holding a ``pyproject.toml``, from ``start`` (default: the
    current directory) upwards."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file():
            return d
    return None


# The venv's lock, taken with the cluster's python (the venv's does not exist yet): opened
# without following a link and without truncating (a planted link to a file of yours must
# not empty it), checked to be a regular file of yours, flocked, then the build command
# runs with the lock held (the descriptor stays open across exec).
_LOCK_PY = """\
import fcntl, os, stat, sys, time
path, wait = sys.argv[1], float(sys.argv[2])
try:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
except OSError as exc:
    sys.exit(f"lazyslurm: refused the venv lock {path}: {exc.strerror} (a symbolic link?):"
             " remove what you do not own")
st = os.fstat(fd)
if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
    sys.exit(f"lazyslurm: refused the venv lock {path}: not a regular file of yours (owner"
             f" uid {st.st_uid}): remove what you do not own")
end = time.monotonic() + wait
while True:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
    except BlockingIOError:
        if time.monotonic() > end:
            sys.exit(f"lazyslurm: venv lock timeout ({path})")
        time.sleep(0.2)
os.set_inheritable(fd, True)
os.execvp(sys.argv[3], sys.argv[3:])
"""


def venv_lines(
    python: str, venv: str, wheels: str, *, note: str | None = None, count: int = 0
) -> list[str]:
    """Job setup lines: create ``venv`` from the wheels in ``wheels`` once (under a lock,
    offline; the wheels are removed once it is ready), then use it. A venv is used only
    once its ``.ready`` marker exists, and only when the venv, its marker, ``bin`` and
    ``bin/python`` are yours, not writable by others and (but ``bin/python``) not symbolic
    links: checked right before the job runs it. ``note`` (the run's ``environment``
    file) says meanwhile that the environment of ``count`` wheels is being created.

    >>> venv_lines("python3", "/w/code/venv-ab", "/w/code/wheels-ab")[0]
    'if [ ! -e /w/code/venv-ab/.ready ]; then'
    """
    q = shlex.quote
    v, w = q(venv), q(wheels)
    gone = q(
        f"lazyslurm: the environment {venv} is gone and so are its wheels {wheels} (removed "
        f"by `lazyslurm clean --code` or the code_cache_gb cap after this run was "
        f"submitted?): run again, which stages them anew"
    )
    build = "\n".join(
        [
            "umask 077",
            f"if [ ! -e {v}/.ready ]; then",
            f"  if [ ! -d {w} ]; then echo {gone} >&2; exit 1; fi",
            f"  rm -rf {v}",
            f'  set -- {w}/*.whl; [ -e "$1" ] || set --',
            "  if command -v uv >/dev/null 2>&1; then",
            f"    uv venv -q -p {q(python)} {v} && {{ [ $# -eq 0 ] || "
            f'uv pip install -q -p {v}/bin/python --no-index --find-links {w} "$@"; }}',
            "  else",
            f"    {q(python)} -m venv {v} && {{ [ $# -eq 0 ] || "
            f'{v}/bin/python -m pip install -q --no-index --find-links {w} "$@"; }}',
            f"  fi && touch {v}/.ready && echo {q('lazyslurm: created venv ' + venv)} >&2 \\",
            f"    || {{ rm -rf {v}; exit 1; }}",
            f"  rm -rf {w}",  # the venv holds them now
            "fi",
        ]
    )
    lock = f"{q(python)} -c {q(_LOCK_PY)} {q(venv + '.lock')} {_LOCK_WAIT_S} /bin/sh -c {q(build)}"
    if note is None:
        made = [f"  {lock} || exit 1"]
    else:
        n = q(note)
        made = [
            f"  [ -e {n} ] || printf 'creating %s %s\\n' \"$(date +%s)\" {count} > {n}",
            f"  if {lock}; then lz_e=created; else lz_e=failed; fi",
            f"  read -r lz_w lz_t0 _ < {n}",
            f'  [ "$lz_w" != creating ] || '
            f'printf \'%s %s %s %s\\n\' "$lz_e" "$lz_t0" "$(date +%s)" {count} > {n}',
            '  [ "$lz_e" = created ] || exit 1',
        ]
    parts = (v, f"{v}/.ready", f"{v}/bin", f"{v}/bin/python")
    refused = q(f"lazyslurm: refused to run the venv {venv}: remove what you do not own:")
    return [
        f"if [ ! -e {v}/.ready ]; then",
        *made,
        "fi",
        f'lz_bad=$(find {" ".join(parts)} -maxdepth 0 \\( ! -user "$UID" -o -type l ! -name '
        "python -o ! -type l -perm /022 \\) -printf '%p: type %y, owner uid %U, mode %m; ' 2>&1)",
        f'if [ -n "$lz_bad" ]; then echo {refused} "$lz_bad" >&2; exit 1; fi',
    ]


@attrs.frozen
class Distribution:
    """The project as the cluster gets it: its own files (``overlay``, staged as
    ``WORKDIR/code/proj-HASH``) and its dependency wheels (``deps``, files of
    ``deps_dir`` on the client; ``deps_digest`` hashes their contents)."""

    project: Path
    tops: tuple[str, ...]  # the top-level packages and modules of the project's wheel
    overlay: Mapping[str, bytes]
    deps_dir: Path
    deps: tuple[str, ...]
    deps_digest: str

    @property
    def overlay_hash(self) -> str:
        return content_hash(self.overlay)

    def dep_files(self) -> dict[str, bytes]:
        """The dependency wheels' contents (read when they are uploaded)."""
        return {name: (self.deps_dir / name).read_bytes() for name in self.deps}


class WheelBuilder:
    """``wheel`` for one backend session: builds the project's wheel when its files or
    configuration change, and gathers its dependencies once per requirement set (see the
    module docstring)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.options = target.options
        self.stats = {"builds": 0, "downloads": 0, "uploads": 0, "project_uploads": 0}
        self.timings: dict[str, float] = {}
        self._dist: Distribution | None = None

    def project(self) -> Path:
        given = self.options.project
        project = Path(given).resolve() if given else find_project()
        if project is None or not (project / "pyproject.toml").is_file():
            where = given or os.getcwd()
            msg = (
                f"packaging='wheel' needs a pyproject.toml (looked in {where} and above): "
                f"pass packaging_project=DIR naming your project, or use packaging='by-value'"
            )
            raise ClusterConfigError(msg)
        return project

    def distribution(self, *, fresh: bool = False) -> Distribution:
        """The project's files and dependencies as they are now (read once per run:
        ``fresh``; else the session's last answer)."""
        if self._dist is not None and not fresh:
            return self._dist
        t0 = time.perf_counter()
        project = self.project()
        cache = _cache_dir()
        _drop_old_layout(cache)
        state_dir = cache / f"project-{hashlib.sha256(str(project).encode()).hexdigest()[:16]}"
        state = _read_state(state_dir)
        if state is None or not _still_valid(project, state):
            state = self._build(project, state_dir)
        overlay = _overlay(project, state_dir / state["wheel"], state.get("mirror"))
        deps_dir, deps, digest = self._deps(cache, list(state["requires"]))
        self._dist = Distribution(
            project, tuple(state["tops"]), overlay, deps_dir, tuple(deps), digest
        )
        self.timings["project_s"] = time.perf_counter() - t0
        return self._dist

    def _build(self, project: Path, state_dir: Path) -> dict[str, Any]:
        """Build the project's wheel into ``state_dir`` (replacing the last build): the
        wheel, and ``build.json`` (its requirements, top-level names, the source map)."""
        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=state_dir.parent))
        try:
            t0 = time.perf_counter()
            self.stats["builds"] += 1
            source = _source_hash(project)  # before the build: an edit meanwhile rebuilds
            if shutil.which("uv"):
                argv = ["uv", "build", "--wheel", "--out-dir", str(tmp), str(project)]
            else:
                argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp),
                        str(project)]  # fmt: skip
            _run(argv, "wheel build")
            (wheel,) = [p for p in tmp.glob("*.whl")]
            self.timings["build_s"] = time.perf_counter() - t0
            with zipfile.ZipFile(wheel) as zf:
                members = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
            meta = next((v for k, v in members.items() if k.endswith(".dist-info/METADATA")), b"")
            requires = sorted(
                ln.split(":", 1)[1].strip()
                for ln in meta.decode("utf-8", "replace").splitlines()
                if ln.startswith("Requires-Dist:")
            )
            tops = sorted(
                {
                    n.split("/")[0].removesuffix(".py")
                    for n in _own_members(members)
                    if not n.split("/")[0].endswith(".dist-info")
                }
            )
            mirror = _source_map(project, members)
            state: dict[str, Any] = {
                "version": _STATE_VERSION,
                "wheel": wheel.name,
                "requires": requires,
                "tops": tops,
                "mirror": mirror,
                "structure": _structure(project, mirror) if mirror is not None else None,
                "source": source,
            }
            (tmp / "build.json").write_text(json.dumps(state, indent=1))
            old = state_dir.with_name(f"{state_dir.name}.old-{os.getpid()}")
            try:
                if state_dir.exists():
                    state_dir.rename(old)
                tmp.rename(state_dir)
            except OSError:  # another client built the same project at the same time
                pass
            shutil.rmtree(old, ignore_errors=True)
            found = _read_state(state_dir)
            if found is None:
                msg = f"the build of {project} could not be kept in {state_dir}: run again"
                raise PackagingError(msg)
            return found
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _deps(self, cache: Path, requires: list[str]) -> tuple[Path, list[str], str]:
        """The dependency wheels of ``requires``: ``(their directory in the client cache,
        their names, a digest of their contents)``, downloaded once per requirement set."""
        key = content_hash(
            {
                "requires": "\n".join(requires).encode(),
                "python": repr(tuple(sys.version_info[:2])).encode(),
                "platform": f"{sysconfig.get_platform()} {sys.implementation.name}".encode(),
            }
        )
        where = cache / f"deps-{key}"
        done = where / "done.json"
        if not done.is_file():
            tmp = Path(tempfile.mkdtemp(prefix="deps-", dir=cache))
            try:
                if requires:
                    t0 = time.perf_counter()
                    self.stats["downloads"] += 1
                    _run(
                        [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                         "-d", str(tmp), *requires],
                        "download of the dependencies",
                    )  # fmt: skip
                    self.timings["download_s"] = time.perf_counter() - t0
                names = sorted(p.name for p in tmp.glob("*.whl"))
                digests = {n: hashlib.sha256((tmp / n).read_bytes()).digest() for n in names}
                record = {"wheels": names, "digest": content_hash(digests)}
                (tmp / "done.json").write_text(json.dumps(record))
                if where.exists() and not done.is_file():  # a download that never finished
                    shutil.rmtree(where, ignore_errors=True)
                try:
                    tmp.rename(where)
                except OSError:  # another client downloaded the same set meanwhile
                    pass
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        record = json.loads(done.read_text())
        os.utime(done)  # its last use: the least recently used sets go first
        _prune_deps(cache, keep=where)
        return where, list(record["wheels"]), str(record["digest"])

    def venv_digest(self, cluster_python: tuple[int, ...]) -> str:
        """The key naming ``code/wheels-KEY`` and ``code/venv-KEY``: the dependency
        wheels' contents and the cluster's Python minor version (not the project's own
        files: an edit does not make a new environment)."""
        dist = self.distribution()
        return content_hash(
            {"deps": dist.deps_digest.encode(), "python": repr(cluster_python[:2]).encode()}
        )

    def probe_line(self, workdir: str | None) -> str:
        return self.target.interpreter.probe_line(self.target.setup)

    def read_probe(self, stdout: str) -> None:
        self.target.interpreter.read_probe(stdout)

    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        """The user's modules that travel by value: all but the wheel's own packages."""
        tops = self.distribution().tops
        own = [m for m in project_modules() if m.split(".")[0] not in tops]
        return [sys.modules[n] for n in own if n in sys.modules]

    def prepare(
        self,
        shell: Shell,
        workdir: str,
        array_jobs: Sequence[ArrayJob],
        files: Mapping[str, bytes],
        run_dir: str = "",
    ) -> Prepared:
        t = self.target
        version = t.python_version(shell, pickles(array_jobs, files))
        dist = self.distribution(fresh=True)  # an edit since the last run is seen
        key = self.venv_digest(version)
        wheels = f"{workdir}/code/wheels-{key}"
        venv = f"{workdir}/code/venv-{key}"
        # the venv, its lock and marker are checked too (the probe saw them, if there);
        # its wheels are not uploaded again once the venv is ready (they were removed)
        env = t.code.need(
            workdir, f"wheels-{key}", dist.dep_files, f"venv-{key}", f"venv-{key}.lock",
            satisfied_by=f"venv-{key}/.ready",
        )  # fmt: skip
        if env:
            self.stats["uploads"] += 1
        name = f"proj-{dist.overlay_hash}"
        own = t.code.need(workdir, name, dist.overlay)
        if own:
            self.stats["project_uploads"] += 1
        runtime, staged = t.code.runtime(workdir)
        note = f"{run_dir}/environment" if run_dir else None
        path = ":".join(shlex.quote(p) for p in (f"{workdir}/code/{name}", runtime))
        setup = (
            *t.setup,
            *venv_lines(t.python, venv, wheels, note=note, count=len(dist.deps)),
            f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}",
        )
        launch = Launch(f"{venv}/bin/python", setup)
        return Prepared.of(array_jobs, launch, {**env, **own, **staged})


# -------------------------------------------------------------------- the client's cache


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = Path(base) / "lazyslurm" / "wheels"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def _drop_old_layout(cache: Path) -> None:
    """Builds of lazyslurm before environments were keyed by dependencies: one directory
    per source hash holding every wheel (never used again)."""
    for d in cache.iterdir():
        if re.fullmatch(r"[0-9a-f]{16}", d.name) and (d / "own").is_file():
            shutil.rmtree(d, ignore_errors=True)


def _prune_deps(cache: Path, keep: Path) -> None:
    """Keep the :data:`_KEEP_DEP_SETS` dependency sets used last (and ``keep``)."""
    sets = [d for d in cache.glob("deps-*") if (d / "done.json").is_file()]
    sets.sort(key=lambda d: (d / "done.json").stat().st_mtime, reverse=True)
    for d in sets[_KEEP_DEP_SETS:]:
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)


def _read_state(state_dir: Path) -> dict[str, Any] | None:
    try:
        state = json.loads((state_dir / "build.json").read_text())
    except (OSError, ValueError):
        return None
    if state.get("version") != _STATE_VERSION or not (state_dir / state["wheel"]).is_file():
        return None
    return state


def _still_valid(project: Path, state: Mapping[str, Any]) -> bool:
    """Whether the last build still stands for the project: its source map holds (same
    configuration and file list; edited files are read from the source), or, without a
    map, no file of the project changed."""
    if state.get("mirror") is not None:
        return _structure(project, state["mirror"]) == state["structure"]
    return _source_hash(project) == state["source"]


def _skipped(rel: Path) -> bool:
    return bool(_SKIP_DIRS & set(rel.parts)) or any(
        p.endswith(".egg-info") or p == ".git" for p in rel.parts
    )


def _source_hash(project: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project)
        if _skipped(rel):
            continue
        if path.is_file():
            h.update(f"{rel}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _own_members(members: Mapping[str, bytes]) -> dict[str, bytes]:
    """The files a wheel installs into site-packages, by path there: its own files and
    ``.data/purelib`` or ``platlib`` (scripts, headers and data files are left out)."""
    out: dict[str, bytes] = {}
    for name, data in members.items():
        top, _, rest = name.partition("/")
        if top.endswith(".data"):
            kind, _, inner = rest.partition("/")
            if kind in ("purelib", "platlib") and inner:
                out[inner] = data
            continue
        out[name] = data
    return out


def _source_map(project: Path, members: Mapping[str, bytes]) -> dict[str, str] | None:
    """Each file of the wheel (but its ``.dist-info``) -> the project file it is a copy of
    (same bytes, path ending in the wheel's path: ``src/pkg/m.py`` for ``pkg/m.py``); None
    when one is no copy (generated, compiled) or comes from ``.data``."""
    if any(n.split("/")[0].endswith(".data") for n in members):
        return None
    index: dict[str, list[str]] = {}
    for path in project.rglob("*"):
        rel = path.relative_to(project)
        if not _skipped(rel) and path.is_file():
            index.setdefault(path.name, []).append(rel.as_posix())
    mirror: dict[str, str] = {}
    for name, data in members.items():
        if name.split("/")[0].endswith(".dist-info"):
            continue
        found = sorted(
            (
                src
                for src in index.get(name.rsplit("/", 1)[-1], ())
                if (src == name or src.endswith("/" + name))
                and (project / src).read_bytes() == data
            ),
            key=len,
        )
        if not found:
            return None
        mirror[name] = found[0]
    return mirror


def _structure(project: Path, mirror: Mapping[str, str]) -> str:
    """A hash of what decides a build's file list: the configuration files, the files
    under each package the source map names, and the modules and packages at the top of
    each source root (a new top-level module)."""
    parts: dict[str, bytes] = {}
    for name in _CONFIG_FILES:
        if (project / name).is_file():
            parts[f"config/{name}"] = (project / name).read_bytes()
    roots: set[str] = set()
    packages: set[str] = set()
    for name, src in mirror.items():
        prefix = src[: len(src) - len(name)]
        roots.add(prefix)
        top = name.split("/")[0]
        if "/" in name:
            packages.add(prefix + top)
    for root in sorted(roots):
        base = project / root if root else project
        # what could be a new top-level module: a .py file, a directory holding one (not
        # the outputs a script writes next to it)
        listed = sorted(
            p.name
            for p in base.iterdir()
            if not _skipped(Path(p.name))
            and (p.suffix == ".py" or (p.is_dir() and any(p.glob("*.py"))))
        )
        parts[f"root/{root}"] = "\0".join(listed).encode()
    for pkg in sorted(packages):
        files = sorted(
            p.relative_to(project).as_posix()
            for p in (project / pkg).rglob("*")
            if p.is_file() and not _skipped(p.relative_to(project)) and p.suffix != ".pyc"
        )
        parts[f"package/{pkg}"] = "\0".join(files).encode()
    return content_hash(parts)


def _overlay(project: Path, wheel: Path, mirror: Mapping[str, str] | None) -> dict[str, bytes]:
    """The project's files as the cluster gets them (``proj-HASH``): the wheel's, with
    the mapped ones read from the source tree as they are now."""
    with zipfile.ZipFile(wheel) as zf:
        members = {n: zf.read(n) for n in zf.namelist() if not n.endswith("/")}
    if mirror is None:
        return _own_members(members)
    out = {n: d for n, d in members.items() if n.split("/")[0].endswith(".dist-info")}
    for name, src in mirror.items():
        out[name] = (project / src).read_bytes()
    return out


def _run(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError as exc:
        msg = f"{what} could not start: {exc}"
        raise PackagingError(msg) from exc
    if proc.returncode != 0:
        cmd = " ".join(shlex.quote(a) for a in argv)
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-_TAIL_LINES:])
        msg = f"{what} failed (exit {proc.returncode}): {cmd}\n--- last lines ---\n{tail}\n"
        msg += "nothing was submitted"
        raise PackagingError(msg)
    return proc.stdout


BUILDER = WheelBuilder
