"""How a task's code and environment reach the cluster: ``packaging=`` modes.

``auto`` (default): ``inherit`` for Slurm on this host, ``by-value`` over SSH.
``inherit``: the given interpreter and environment as they are. ``by-value``: the
cluster needs only a Python; lazyslurm's runner and cloudpickle are staged into
``WORKDIR/code/HASH`` once per content hash, user modules travel inside the pickles.
``wheel``: the project's wheel in a venv on the cluster, once per content hash.
``container``: an image built, tagged by content hash, pushed, and run by podman,
Pyxis or Apptainer. See ``docs/packaging.md``.

The Slurm backend asks a :class:`Packager` three things: a shell snippet for its one
probe (:meth:`Packager.probe_script`, read back by :meth:`Packager.read_probe`), which
modules to pickle by value (:meth:`Packager.by_value_modules`), and, per run,
:meth:`Packager.prepare`: the files to stage, a shell snippet to run before submitting,
and how each array job starts its runner (:class:`Launch`).
"""

from __future__ import annotations

import re
import secrets
import shlex
import sys
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

import attrs

from lazyslurm.backends.option import resolve
from lazyslurm.backends.packaging import byvalue
from lazyslurm.errors import ClusterConfigError, OptionTypeError, UntrustedStoreError
from lazyslurm.graph.options import Opt
from lazyslurm.graph.resources import PackagingMode, Resources
from lazyslurm.store import untrusted_why

__all__ = [
    "Launch",
    "Packager",
    "PackagingOptions",
    "Prepared",
    "atomic_move",
    "check_staged",
    "code_listing",
    "read_code_listing",
    "settings",
    "untrusted_code_error",
]

Runtime = Literal["podman", "pyxis", "apptainer"]
Builder = Literal["podman", "docker"]
RUNTIMES: tuple[str, ...] = typing.get_args(Runtime)
BUILDERS: tuple[str, ...] = typing.get_args(Builder)


def _tls(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    msg = f"{name} must be a bool (or 'true'/'false'), got {value!r}"
    raise OptionTypeError(msg)


def _one_line(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        msg = f"{name} must be a non-empty one-line string, got {value!r}"
        raise OptionTypeError(msg)
    return value


class PackagingOptions(TypedDict, total=False):
    """How code and environment get to the cluster (``slurm`` and ``ssh`` backends)."""

    packaging: Annotated[
        PackagingMode, Opt("mode: auto, inherit, by-value, wheel or container", default="auto")
    ]
    packaging_registry: Annotated[
        str, Opt("container: image repository (registry:5000/name)", parse=_one_line)
    ]
    packaging_platform: Annotated[
        str, Opt("container: build platform, e.g. linux/amd64", parse=_one_line)
    ]
    packaging_tls_verify: Annotated[
        bool | str, Opt("container: verify TLS to the registry", default=True, parse=_tls)
    ]
    packaging_runtime: Annotated[
        Runtime, Opt("container: podman, pyxis or apptainer", default="podman")
    ]
    packaging_base_image: Annotated[
        str, Opt("container: base of the generated Dockerfile", parse=_one_line)
    ]
    packaging_dockerfile: Annotated[
        str, Opt("container: the project's Dockerfile instead", parse=_one_line)
    ]
    packaging_builder: Annotated[Builder, Opt("container: podman or docker", default="podman")]
    packaging_project: Annotated[
        str, Opt("wheel/container: project dir (default: nearest)", parse=_one_line)
    ]
    packaging_build_args: Annotated[
        Sequence[str], Opt("container: extra arguments to the build", default=())
    ]
    packaging_run_args: Annotated[
        Sequence[str], Opt("container: extra arguments to `podman run`", default=())
    ]


def settings(given: Mapping[str, Any]) -> types.SimpleNamespace:
    """The packaging options of a Cluster, checked and with their defaults, as attributes
    named without the ``packaging_`` prefix (``mode`` for ``packaging`` itself).

    >>> settings({"packaging": "container", "packaging_tls_verify": "false"}).tls_verify
    False
    """
    values = resolve(PackagingOptions, given, check=True)
    out = {"mode": values.pop("packaging")}
    out.update((k.removeprefix("packaging_"), v) for k, v in values.items())
    out["build_args"], out["run_args"] = tuple(out["build_args"]), tuple(out["run_args"])
    return types.SimpleNamespace(**out)


@attrs.frozen
class Launch:
    """How one array job starts its runner: ``setup`` lines, then
    ``exec LAUNCHER... PYTHON -m lazyslurm.runner RUN_DIR ARRAY_JOB``."""

    python: str
    setup: tuple[str, ...] = ()
    launcher: tuple[str, ...] = ()
    runner: str | None = None  # lazyslurm/runner/__main__.py there, started by path, if known


@attrs.frozen
class Prepared:
    """What one run needs staged and run before its submission."""

    files: Mapping[str, bytes]  # relative to the workdir
    before: str  # shell run (same round trip) before the submission script
    launches: Mapping[str, Launch]  # array job id -> Launch
    on_success: tuple[Callable[[], None], ...] = ()


_PROBE_PY = (
    "import sys, importlib.util as u\n"
    "print('LZ-PYVER=%d.%d.%d' % sys.version_info[:3])\n"
    "have = []\n"
    "for n in sys.argv[1:]:\n"
    "    try:\n"
    "        if u.find_spec(n) is not None: have.append(n)\n"
    "    except Exception: pass\n"
    "print('LZ-HAVE=' + ','.join(have))\n"
    # where an installed lazyslurm's runner is: job scripts then start it by path
    "try:\n"
    "    import os\n"
    "    s = u.find_spec('lazyslurm')\n"
    "    p = os.path.join(list(s.submodule_search_locations)[0], 'runner', '__main__.py')\n"
    "    if os.path.isfile(p): print('LZ-RUNNER=' + p)\n"
    "except Exception: pass\n"
)


class Packager:
    """The packaging side of one Slurm backend session (see the module docstring).

    ``local``: Slurm on this host (``auto`` means ``inherit``; the client's own lazyslurm
    is reachable on the shared file system).
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        local: bool,
        python: str,
        setup: Sequence[str] = (),
    ) -> None:
        self.options = settings(options)
        self.local = local
        self.python = python
        self.setup = tuple(setup)
        self.cluster_python: tuple[int, ...] | None = None
        self.importable: set[str] = set()  # top-level names the cluster's python imports
        self.installed_runner: str | None = None  # the cluster's lazyslurm runner (probed)
        self.checked: set[str] = set()  # names asked about so far
        self.code_present: set[str] = set()  # WORKDIR/code/* seen on the cluster, private
        # entries of WORKDIR/code ("." itself, NAME, NAME/...) that are not private: why
        self.code_untrusted: dict[str, str] = {}
        self.probe_output = ""
        self._builders: dict[str, Any] = {}
        self._own_modules: tuple[int, list[str]] | None = None

    # -- modes
    def mode_of(self, resources: Resources | None) -> str:
        """The effective mode of a task (its own ``packaging=``, else the cluster's)."""
        mode = (resources.packaging if resources is not None else None) or self.options.mode
        if mode == "auto":
            return "inherit" if self.local else "by-value"
        return mode

    def _knows_python(self) -> bool:
        """On this host with the client's own interpreter nothing needs asking."""
        return self.local and self.python == sys.executable

    # -- the probe (in the backend's one probe round trip)
    def probe_script(self, workdir: str | None) -> str:
        from lazyslurm.backends.shell import shell_path

        q = shlex.quote
        lines = []
        if self.mode_of(None) == "container":  # the image brings its own Python
            lines.append(self._builder("container").probe_line())
        elif not self._knows_python():
            names = sorted({"lazyslurm", "cloudpickle", *byvalue.third_party_modules()})
            self.checked.update(names)
            call = f"{q(self.python)} -c {q(_PROBE_PY)} {' '.join(q(n) for n in names)}"
            setup = self._inherit_setup() if self.mode_of(None) == "inherit" else self.setup
            lines.append("( " + "; ".join([*setup, call]) + " ) 2>&1 | sed 's/^/LZ-P /'")
        lines.append(code_listing(shell_path(workdir or "~/.lazyslurm") + "/code"))
        return "\n".join(lines)

    def read_probe(self, stdout: str) -> None:
        self.code_present, self.code_untrusted = read_code_listing(stdout)
        if self.mode_of(None) == "container":
            self._builder("container").read_probe(stdout)
            return
        if self._knows_python():
            self.cluster_python = tuple(sys.version_info[:3])
            self.importable = {"lazyslurm", "cloudpickle", *byvalue.third_party_modules()}
            return
        self.probe_output = "\n".join(
            ln[5:] for ln in stdout.splitlines() if ln.startswith("LZ-P ")
        )
        m = re.search(r"^LZ-PYVER=(\d+)\.(\d+)\.(\d+)$", self.probe_output, re.MULTILINE)
        if m is None:
            msg = (
                f"python {self.python!r} does not run on the cluster (after the setup lines): "
                f"pass python=... naming an interpreter there. Output: "
                f"{self.probe_output.strip()[-800:]}"
            )
            raise ClusterConfigError(msg)
        self.cluster_python = tuple(int(g) for g in m.groups())
        have = re.search(r"^LZ-HAVE=(.*)$", self.probe_output, re.MULTILINE)
        self.importable = set(have.group(1).split(",")) - {""} if have else set()
        runner = re.search(r"^LZ-RUNNER=(/.*)$", self.probe_output, re.MULTILINE)
        self.installed_runner = runner.group(1) if runner else None
        byvalue.check_python(self.cluster_python, python=self.python, code_by_value=False)
        if self.mode_of(None) == "inherit":
            self.check_inherit()

    def _inherit_setup(self) -> tuple[str, ...]:
        """``inherit`` on this host: the very lazyslurm this client runs, on the shared
        file system, comes first on the path."""
        if not self.local:
            return self.setup
        here = str(Path(byvalue.__file__).resolve().parents[3])
        line = f"export PYTHONPATH={shlex.quote(here)}${{PYTHONPATH:+:$PYTHONPATH}}"
        return (line, *self.setup)

    def check_inherit(self) -> None:
        """``inherit``: the cluster's python must import lazyslurm and cloudpickle."""
        if {"lazyslurm", "cloudpickle"} <= self.importable:
            return
        msg = (
            f"python {self.python!r} on the cluster cannot import lazyslurm and cloudpickle, "
            f"which packaging='inherit' expects installed there: use packaging='by-value' "
            f"(the default over SSH: nothing to install), install them there (`pip install "
            f"lazyslurm cloudpickle`), or pass python=... / setup=[...] to the Cluster"
        )
        raise ClusterConfigError(msg)

    def _ask_importable(self, shell: Any, names: set[str]) -> None:
        """One more round trip, for module names the probe did not ask about."""
        q = shlex.quote
        call = f"{q(self.python)} -c {q(_PROBE_PY)} {' '.join(q(n) for n in sorted(names))}"
        res = shell.run("( " + "; ".join([*self.setup, call]) + " ) 2>&1")
        self.checked.update(names)
        m = re.search(r"^LZ-PYVER=(\d+)\.(\d+)\.(\d+)$", res.stdout, re.MULTILINE)
        if m is not None and self.cluster_python is None:
            self.cluster_python = tuple(int(g) for g in m.groups())
            byvalue.check_python(self.cluster_python, python=self.python, code_by_value=False)
        have = re.search(r"^LZ-HAVE=(.*)$", res.stdout, re.MULTILINE)
        if have:
            self.importable.update(set(have.group(1).split(",")) - {""})

    # -- pickling
    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        """Modules to register with cloudpickle by value while pickling ``func``."""
        mode = self.mode_of(resources)
        if mode == "inherit":
            return _own_module(func)
        if mode == "wheel":
            builder = self._builder("wheel")
            return [sys.modules[n] for n in builder.by_value_modules() if n in sys.modules]
        if self._own_modules is None or self._own_modules[0] != len(sys.modules):
            # scanned again only when modules were imported since (once per run, not per job)
            self._own_modules = (len(sys.modules), byvalue.project_modules())
        return [sys.modules[n] for n in self._own_modules[1] if n in sys.modules]

    # -- one run
    def prepare(
        self,
        shell: Any,
        workdir: str,
        array_jobs: Sequence[Any],
        files: Mapping[str, bytes],
    ) -> Prepared:
        """Check and build what the run's array jobs need (nothing is submitted yet)."""
        modes = {aj.id: self.mode_of(aj.resources) for aj in array_jobs}
        specs = {aj.id: files.get(f"specs/{aj.id}.spec", b"") for aj in array_jobs}
        staged: dict[str, bytes] = {}
        before: list[str] = []
        done: list[Callable[[], None]] = []
        launches: dict[str, Launch] = {}
        per_mode: dict[str, Launch] = {}
        for aj in array_jobs:
            mode = modes[aj.id]
            if mode not in per_mode:
                blobs = [specs[a.id] for a in array_jobs if modes[a.id] == mode]
                per_mode[mode] = self._prepare_mode(
                    mode, shell, workdir, blobs, staged, before, done
                )
            launches[aj.id] = per_mode[mode]
        return Prepared(staged, "".join(before), launches, tuple(done))

    def _prepare_mode(
        self,
        mode: str,
        shell: Any,
        workdir: str,
        blobs: list[bytes],
        staged: dict[str, bytes],
        before: list[str],
        done: list[Callable[[], None]],
    ) -> Launch:
        if mode in ("container", "wheel"):
            return self._builder(mode).prepare(self, shell, workdir, blobs, staged, before, done)
        if self.cluster_python is None:  # the probe skipped it (a container cluster)
            self._ask_importable(shell, set())
        if self.cluster_python is None:
            msg = f"python {self.python!r} does not run on the cluster: pass python=..."
            raise ClusterConfigError(msg)
        byvalue.check_python(
            self.cluster_python,
            python=self.python,
            code_by_value=byvalue.has_code_by_value(blobs),
        )
        if mode == "inherit":
            self.check_inherit()
            runner = self.installed_runner  # the cluster's lazyslurm (probed), if any
            if self.local:  # this very lazyslurm, on the shared file system
                runner = str(Path(byvalue.__file__).resolve().parents[2] / "runner/__main__.py")
            return Launch(self.python, self._inherit_setup(), runner=runner)
        missing = self.require_importable(shell, blobs, mode)
        dirs = [self.stage_runtime(workdir, staged, before, done)]
        if missing:
            dirs.append(self.stage_installed(missing, workdir, staged, before, done, mode))
        path = ":".join(shlex.quote(d) for d in dirs)
        line = f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}"
        runner = f"{dirs[0]}/lazyslurm/runner/__main__.py"  # the staged runtime's runner
        return Launch(self.python, (*self.setup, line), runner=runner)

    def reuse_code(self, workdir: str, name: str, *also: str) -> bool:
        """Whether ``WORKDIR/code/NAME`` is there to reuse (else it is staged). Refuses
        (:class:`~lazyslurm.errors.UntrustedStoreError`, nothing submitted) when
        ``WORKDIR/code``, that entry, the entries ``also`` the run uses with it, or
        anything under them the probe saw, is not private: a symbolic link, another
        user's, or writable by others. Such an entry is never used."""
        names = (name, *also)
        used = [
            path
            for path in self.code_untrusted
            if path == "." or any(path == n or path.startswith(f"{n}/") for n in names)
        ]
        if used:
            raise untrusted_code_error(workdir, used, self.code_untrusted)
        return name in self.code_present

    def stage_installed(
        self,
        names: set[str],
        workdir: str,
        staged: dict[str, bytes],
        before: list[str],
        done: list[Callable[[], None]],
        mode: str,
    ) -> str:
        """Stage the pure-Python installed packages ``names`` (and what they require) as
        ``WORKDIR/code/deps-HASH``; a compiled one the cluster lacks is refused."""
        files, compiled = byvalue.installed_files(names)
        lacking = {n for n in compiled if n not in self.importable} & (
            set(byvalue.third_party_modules()) | names
        )
        lacking |= {n for n in names if not any(k.split("/")[0].removesuffix(".py") == n
                                                 for k in files)}  # fmt: skip
        if lacking:
            raise byvalue.unshippable_error(lacking, python=self.python, mode=mode)
        digest = "deps-" + byvalue.content_hash(files)
        present = self.reuse_code(workdir, digest)
        if not present and not any(f".stage-{digest}-" in k for k in staged):
            stage = f".stage-{digest}-{secrets.token_hex(4)}"
            for rel, data in files.items():
                staged[f"code/{stage}/{rel}"] = data
            before.append(atomic_move(f"{workdir}/code", stage, digest))
            done.append(lambda: self.code_present.add(digest))
        return f"{workdir}/code/{digest}"

    def require_importable(self, shell: Any, blobs: list[bytes], mode: str) -> set[str]:
        """Installed modules the run's pickles name that the cluster's python cannot
        import (asking about names the probe did not cover, in one round trip)."""
        needed = byvalue.referenced_modules(blobs, byvalue.third_party_modules())
        unknown = needed - self.checked
        if unknown and not self._knows_python():
            self._ask_importable(shell, unknown)
        return needed - self.importable if not self._knows_python() else set()

    def stage_runtime(
        self,
        workdir: str,
        staged: dict[str, bytes],
        before: list[str],
        done: list[Callable[[], None]],
    ) -> str:
        """Stage lazyslurm's runner and cloudpickle as ``WORKDIR/code/HASH`` unless there;
        returns that directory."""
        digest = byvalue.runtime_hash()
        code_dir = f"{workdir}/code/{digest}"
        if self.reuse_code(workdir, digest) or any(f".stage-{digest}-" in k for k in staged):
            return code_dir
        stage = f".stage-{digest}-{secrets.token_hex(4)}"
        for rel, data in byvalue.runtime_files().items():
            staged[f"code/{stage}/{rel}"] = data
        before.append(atomic_move(f"{workdir}/code", stage, digest))
        done.append(lambda: self.code_present.add(digest))
        return code_dir

    def _builder(self, mode: str) -> Any:
        if mode not in self._builders:
            if mode == "container":
                from lazyslurm.backends.packaging.container import ContainerBuilder

                self._builders[mode] = ContainerBuilder(self.options)
            else:
                from lazyslurm.backends.packaging.wheel import WheelBuilder

                self._builders[mode] = WheelBuilder(self.options)
        return self._builders[mode]


_CODE_BEGIN, _CODE_END = "LZ-CODE-BEGIN", "LZ-CODE-END"


def code_listing(code: str) -> str:
    r"""Probe lines that list ``code`` (``WORKDIR/code``, quoted for the shell) with what
    trust needs: the probing user's uid, then for the directory itself, each entry, the
    entries inside those and each venv's ``bin/python``: find's type, owner uid, mode and
    path, NUL-terminated (a name cannot forge a record). Never follows a link.

    >>> "-printf" in code_listing("/w/code")
    True
    """
    records = "'%y %U %m %P\\0'"
    return (
        f"echo {_CODE_BEGIN} $(id -u)\n"
        f"( c={code}; find \"$c\" -maxdepth 0 -printf '%y %U %m .\\0' 2>/dev/null\n"
        '  [ -d "$c" ] && [ ! -L "$c" ] && cd -- "$c" && find . -mindepth 1 -maxdepth 3 '
        "\\( -path './*/*/*' ! -path './venv-*/bin/python' \\) -o "
        f"-printf {records} 2>/dev/null )\n"
        f"echo; echo {_CODE_END}"
    )


def read_code_listing(stdout: str) -> tuple[set[str], dict[str, str]]:
    r"""From :func:`code_listing`'s output: the names of ``WORKDIR/code`` entries that are
    private (with everything listed under them), and why each other listed path is not.

    A link is refused in ``code/`` and as ``code/`` itself, as a venv's ``.ready`` marker
    or ``bin``; deeper, a link of your own is allowed (a venv's ``bin/python``, ``lib64``).

    >>> ok, bad = read_code_listing("LZ-CODE-BEGIN 7\nd 7 700 .\0d 7 700 ab\0d 7 700 ab/x\0"
    ...     "d 9 755 cd\0d 7 700 ef\0f 7 666 ef/y\0\nLZ-CODE-END")
    >>> ok
    {'ab'}
    >>> bad
    {'cd': 'is owned by uid 9, not by you (uid 7)', 'ef/y': 'is writable by others (mode 666)'}
    """
    begin = stdout.find(_CODE_BEGIN + " ")
    end = stdout.rfind("\n" + _CODE_END)  # the last one: a name cannot end the block early
    if begin < 0 or end < begin:
        return set(), {}
    head, _, body = stdout[begin:end].partition("\n")
    me = int(head.split()[1])
    names: set[str] = set()
    bad: dict[str, str] = {}
    for record in body.split("\0"):
        kind, _, rest = record.partition(" ")
        uid, _, rest = rest.partition(" ")
        mode, _, path = rest.partition(" ")
        if not (kind and uid.isdigit() and mode.isdigit() and path):
            continue
        parts = path.split("/")
        if len(parts) == 1 and path != ".":
            names.add(path)
        link_ok = len(parts) > 1 and parts[-1] != ".ready" and parts[1:] != ["bin"]
        why = untrusted_why(kind, int(uid), int(mode, 8), me=me, link_ok=link_ok)
        if why:
            bad[path] = why
    if "." in bad:
        return set(), bad
    tainted = {path.split("/")[0] for path in bad}
    return {n for n in names if n not in tainted and re.fullmatch(r"[\w.-]+", n)}, bad


def untrusted_code_error(
    workdir: str, used: Sequence[str], untrusted: Mapping[str, str]
) -> UntrustedStoreError:
    """The refusal of a run that would use entries of ``WORKDIR/code`` that are not
    private: names each (absolute path and why), and every other such entry there."""
    code = f"{workdir}/code"

    def where(path: str) -> str:
        return code if path == "." else f"{code}/{path}"

    shown = [*used, *(p for p in untrusted if p not in used)][:12]
    listed = "; ".join(f"{where(p)} {untrusted[p]}" for p in shown)
    more = f" (and {len(untrusted) - len(shown)} more)" if len(untrusted) > len(shown) else ""
    remove = " ".join(shlex.quote(where(p)) for p in dict.fromkeys(p.split("/")[0] for p in shown))
    msg = (
        f"the code your jobs would run is not private: {listed}{more}. Another user could "
        f"have planted code there that would run as you, so nothing was submitted: remove "
        f"what you do not own and what others could write (`rm -rf {remove}`; what is not "
        f"yours, its owner or an administrator can remove), then run again (lazyslurm "
        f"stages its code anew), or use a private work directory (workdir=...)"
    )
    return UntrustedStoreError(msg, path=where(used[0]))


UNTRUSTED_CODE_MARK = "LZ-UNTRUSTED-CODE"


def atomic_move(parent: str, stage: str, name: str) -> str:
    r"""Shell that renames ``parent/stage`` to ``parent/name`` unless another client won
    the race (then the stage is dropped): readers never see a half-written directory.
    Then ``parent/name`` must be private (the probe checked what it listed; this also
    covers what it could not), else the script stops before anything is submitted,
    printing ``LZ-UNTRUSTED-CODE PATH`` on stderr.

    >>> print(atomic_move("/w/code", ".stage-ab-1", "ab"), end="")  # doctest: +ELLIPSIS
    ( cd /w/code && { [ -d ab ] || mv -T .stage-ab-1 ab 2>/dev/null; rm -rf .stage-ab-1; } )
    lz_s=$(find /w/code/ab -maxdepth 0 ... || { echo LZ-UNTRUSTED-CODE ... /w/code/ab >&2; exit 1; }
    """
    q = shlex.quote
    path = q(f"{parent}/{name}")
    return (
        f"( cd {q(parent)} && {{ [ -d {q(name)} ] || mv -T {q(stage)} {q(name)} 2>/dev/null; "
        f"rm -rf {q(stage)}; }} )\n"
        f'lz_s=$(find {path} -maxdepth 0 \\( -type l -o ! -user "$(id -u)" -o -perm /022 \\) '
        f"-printf '%y %U %m' 2>/dev/null); [ -z \"$lz_s\" ] || "
        f'{{ echo {UNTRUSTED_CODE_MARK} "$(id -u) $lz_s" {path} >&2; exit 1; }}\n'
    )


def check_staged(workdir: str, stderr: str) -> None:
    """Refuse the run (:class:`~lazyslurm.errors.UntrustedStoreError`) when
    :func:`atomic_move` found the entry it staged not private."""
    m = re.search(rf"^{UNTRUSTED_CODE_MARK} (\d+ \w \d+ \d+) (.*)$", stderr, re.MULTILINE)
    if m is None:
        return
    me, kind, uid, mode = m.group(1).split()
    rel = m.group(2).removeprefix(f"{workdir}/code/")
    why = untrusted_why(kind, int(uid), int(mode, 8), me=int(me)) or "is not private"
    raise untrusted_code_error(workdir, [rel], {rel: why})


def _own_module(func: Any) -> list[types.ModuleType]:
    """``inherit``: only the function's own module, when it is not installed."""
    name = getattr(func, "__module__", None) or ""
    if name in byvalue.project_modules({name: sys.modules[name]} if name in sys.modules else {}):
        return [sys.modules[name]]
    return []
