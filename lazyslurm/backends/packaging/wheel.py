"""``packaging="wheel"``: the user's project as a wheel, in a venv on the cluster.

On the client, once per project content: build the wheel (``uv build --wheel`` when uv
is on PATH, else ``pip wheel --no-deps``) and download its dependencies (``pip
download``, on the client: compute nodes often have no internet). The wheel and its
dependencies are uploaded to ``WORKDIR/code/wheels-HASH`` once per content hash (with
the submission, no extra round trip). The first job element to start creates
``WORKDIR/code/venv-HASH`` from them (``--no-index``), under a lock (``flock`` on
``venv-HASH.lock``, opened without following links or truncating), so a hundred elements
starting at once build it once; later runs reuse it, after checking it is private. The
runner and cloudpickle come from the staged code directory, as with ``by-value``; the
user's modules outside the wheel's packages travel by value.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import types
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lazyslurm.backends.packaging.base import Launch, Prepared, pickles
from lazyslurm.backends.packaging.modules import (
    check_python,
    content_hash,
    has_code_by_value,
    project_modules,
)
from lazyslurm.backends.packaging.target import Target
from lazyslurm.errors import ClusterConfigError, PackagingError

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.planner import ArrayJob

__all__ = ["BUILDER", "WheelBuilder", "find_project", "venv_lines"]

_SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", "build", "dist",
              ".mypy_cache", ".ruff_cache", ".pytest_cache"}  # fmt: skip
_TAIL_LINES = 25
_LOCK_WAIT_S = 900


def find_project(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest directory holding a ``pyproject.toml``, from ``start`` (default: the
    current directory) upwards."""
    here = Path(start or os.getcwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file():
            return d
    return None


def _source_hash(project: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project)
        if _SKIP_DIRS & set(rel.parts) or any(p.endswith(".egg-info") for p in rel.parts):
            continue
        if path.is_file():
            h.update(f"{rel}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


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


def venv_lines(python: str, venv: str, wheels: str) -> list[str]:
    """Job setup lines: create ``venv`` from the wheels in ``wheels`` once (under a lock,
    offline), then use it. A venv is used only once its ``.ready`` marker exists, and only
    when the venv, its marker, ``bin`` and ``bin/python`` are yours, not writable by others
    and (but ``bin/python``) not symbolic links: checked right before the job runs it.

    >>> venv_lines("python3", "/w/code/venv-ab", "/w/code/wheels-ab")[0]
    'if [ ! -e /w/code/venv-ab/.ready ]; then'
    """
    q = shlex.quote
    v, w = q(venv), q(wheels)
    build = "\n".join(
        [
            "umask 077",
            f"if [ ! -e {v}/.ready ]; then",
            f"  rm -rf {v}",
            "  if command -v uv >/dev/null 2>&1; then",
            f"    uv venv -q -p {q(python)} {v} && "
            f"uv pip install -q -p {v}/bin/python --no-index --find-links {w} {w}/*.whl",
            "  else",
            f"    {q(python)} -m venv {v} && "
            f"{v}/bin/python -m pip install -q --no-index --find-links {w} {w}/*.whl",
            f"  fi && touch {v}/.ready && echo {q('lazyslurm: created venv ' + venv)} >&2 \\",
            f"    || {{ rm -rf {v}; exit 1; }}",
            "fi",
        ]
    )
    parts = (v, f"{v}/.ready", f"{v}/bin", f"{v}/bin/python")
    refused = q(f"lazyslurm: refused to run the venv {venv}: remove what you do not own:")
    return [
        f"if [ ! -e {v}/.ready ]; then",
        f"  {q(python)} -c {q(_LOCK_PY)} {q(venv + '.lock')} {_LOCK_WAIT_S} "
        f"/bin/sh -c {q(build)} || exit 1",
        "fi",
        f'lz_bad=$(find {" ".join(parts)} -maxdepth 0 \\( ! -user "$UID" -o -type l ! -name '
        "python -o ! -type l -perm /022 \\) -printf '%p: type %y, owner uid %U, mode %m; ' 2>&1)",
        f'if [ -n "$lz_bad" ]; then echo {refused} "$lz_bad" >&2; exit 1; fi',
    ]


class WheelBuilder:
    """``wheel`` for one backend session: builds the project's wheel and gathers its
    dependencies, once per content (see the module docstring)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.options = target.options
        self.stats = {"builds": 0, "downloads": 0, "uploads": 0}
        self.timings: dict[str, float] = {}
        self._dist: tuple[str, dict[str, bytes], list[str]] | None = None

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

    def distribution(self) -> tuple[str, dict[str, bytes], list[str]]:
        """(content hash, wheel files by name, top-level packages of the project's wheel)."""
        if self._dist is not None:
            return self._dist
        project = self.project()
        cache = _cache_dir() / _source_hash(project)
        if not (cache / "done").is_file():
            self._build_into(project, cache)
        files = {p.name: p.read_bytes() for p in sorted(cache.glob("*.whl"))}
        own = (cache / "own").read_text().strip()
        with zipfile.ZipFile(cache / own) as zf:
            tops = sorted(
                {
                    n.split("/")[0].removesuffix(".py")
                    for n in zf.namelist()
                    if not n.split("/")[0].endswith((".dist-info", ".data"))
                }
            )
        digest = content_hash(files)
        self._dist = (digest, files, tops)
        return self._dist

    def _build_into(self, project: Path, cache: Path) -> None:
        tmp = Path(tempfile.mkdtemp(prefix="build-", dir=_cache_dir()))
        try:
            t0 = time.perf_counter()
            self.stats["builds"] += 1
            if shutil.which("uv"):
                argv = ["uv", "build", "--wheel", "--out-dir", str(tmp), str(project)]
            else:
                argv = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp),
                        str(project)]  # fmt: skip
            _run(argv, "wheel build")
            (own,) = [p.name for p in tmp.glob("*.whl")]
            self.timings["build_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            self.stats["downloads"] += 1
            _run(
                [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:",
                 "-d", str(tmp), str(tmp / own)],
                "download of the dependencies",
            )  # fmt: skip
            self.timings["download_s"] = time.perf_counter() - t0
            (tmp / "own").write_text(own)
            (tmp / "done").write_text("")
            if cache.exists():
                shutil.rmtree(cache)
            tmp.rename(cache)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def venv_digest(self, cluster_python: tuple[int, ...]) -> str:
        """The hash naming ``code/wheels-HASH`` and ``code/venv-HASH``: the wheels' content
        and the cluster's Python minor version."""
        digest, _, _ = self.distribution()
        return content_hash(
            {"wheels": digest.encode(), "python": repr(cluster_python[:2]).encode()}
        )

    def probe_line(self, workdir: str | None) -> str:
        return self.target.interpreter.probe_line(self.target.setup)

    def read_probe(self, stdout: str) -> None:
        self.target.interpreter.read_probe(stdout)

    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        """The user's modules that travel by value: all but the wheel's own packages."""
        _, _, tops = self.distribution()
        own = [m for m in project_modules() if m.split(".")[0] not in tops]
        return [sys.modules[n] for n in own if n in sys.modules]

    def prepare(
        self,
        shell: Shell,
        workdir: str,
        array_jobs: Sequence[ArrayJob],
        files: Mapping[str, bytes],
    ) -> Prepared:
        t = self.target
        version = t.interpreter.require(shell, t.setup)
        code_by_value = has_code_by_value(pickles(array_jobs, files))
        check_python(version, python=t.python, code_by_value=code_by_value)
        digest = self.venv_digest(version)
        _, wheel_files, _ = self.distribution()
        wheels = f"{workdir}/code/wheels-{digest}"
        venv = f"{workdir}/code/venv-{digest}"
        # the venv, its lock and marker are checked too (the probe saw them, if there)
        also = (f"venv-{digest}", f"venv-{digest}.lock")
        code = t.code.need(workdir, f"wheels-{digest}", wheel_files, *also)
        if code:
            self.stats["uploads"] += 1
        runtime, staged = t.code.runtime(workdir)
        setup = (
            *t.setup,
            *venv_lines(t.python, venv, wheels),
            f"export PYTHONPATH={shlex.quote(runtime)}${{PYTHONPATH:+:$PYTHONPATH}}",
        )
        return Prepared.of(array_jobs, Launch(f"{venv}/bin/python", setup), {**code, **staged})


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = Path(base) / "lazyslurm" / "wheels"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


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
