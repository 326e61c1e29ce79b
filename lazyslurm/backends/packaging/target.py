"""The cluster side every packaging mode shares, for one backend session: its Python as
the probe saw it (:class:`Interpreter`) and its code directory ``WORKDIR/code``
(:class:`CodeDir`: the trust listing read from the probe, reuse of what is there,
staging by atomic rename, and the check of what was staged).

Every builder imports this module; it imports only :mod:`.base` and :mod:`.modules` of
its package.
"""

from __future__ import annotations

import re
import secrets
import shlex
import sys
import types
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lazyslurm.backends.packaging.base import Prepared
from lazyslurm.backends.packaging.modules import (
    check_python,
    has_code_by_value,
    project_modules,
    referenced_modules,
    runtime_files,
    runtime_hash,
    third_party_modules,
)
from lazyslurm.errors import ClusterConfigError, UntrustedStoreError
from lazyslurm.store import untrusted_why

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell

__all__ = [
    "UNTRUSTED_CODE_MARK",
    "CodeDir",
    "Interpreter",
    "Target",
    "atomic_move",
    "check_staged",
    "code_listing",
    "read_code_listing",
    "untrusted_code_error",
]


class Target:
    """What the builders of one backend session share: the packaging settings
    (``settings()`` of the Cluster's options), whether Slurm runs on this host, the
    cluster's ``python`` and ``setup`` lines, its :class:`Interpreter` and :class:`CodeDir`.
    """

    def __init__(
        self, options: Any, *, local: bool, python: str, setup: Sequence[str] = ()
    ) -> None:
        self.options = options
        self.local = local
        self.python = python
        self.setup = tuple(setup)
        self.interpreter = Interpreter(python, local=local)
        self.code = CodeDir()
        self._own_modules: tuple[int, list[str]] | None = None

    def python_version(
        self, shell: Shell, blobs: Sequence[bytes], setup: Sequence[str] | None = None
    ) -> tuple[int, ...]:
        """The cluster's Python version (probed once, after ``setup``: the target's own
        lines by default), refused where it cannot run the spec files ``blobs`` (code by
        value needs this client's minor version)."""
        version = self.interpreter.require(shell, self.setup if setup is None else setup)
        check_python(version, python=self.python, code_by_value=has_code_by_value(blobs))
        return version

    def project_modules(self) -> list[types.ModuleType]:
        """The user's own loaded modules (pickled by value): scanned again only when
        modules were imported since (once per run, not per array job)."""
        if self._own_modules is None or self._own_modules[0] != len(sys.modules):
            self._own_modules = (len(sys.modules), project_modules())
        return [sys.modules[n] for n in self._own_modules[1] if n in sys.modules]


# -------------------------------------------------------------------- the cluster's python

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


class Interpreter:
    """The cluster's ``python``: its version, which top-level modules it imports and where
    an installed lazyslurm's runner is, asked in the session's one probe (or, when the
    probe was about a container, once when a mode first needs it)."""

    def __init__(self, python: str, *, local: bool) -> None:
        self.python = python
        self.local = local
        self.version: tuple[int, ...] | None = None
        self.importable: set[str] = set()  # top-level names it imports
        self.runner: str | None = None  # an installed lazyslurm's runner (probed)
        self.checked: set[str] = set()  # names asked about so far
        self.output = ""  # what the probe printed

    def is_ours(self) -> bool:
        """On this host with the client's own interpreter nothing needs asking."""
        return self.local and self.python == sys.executable

    def _call(self, names: set[str], setup: Sequence[str]) -> str:
        q = shlex.quote
        call = f"{q(self.python)} -c {q(_PROBE_PY)} {' '.join(q(n) for n in sorted(names))}"
        return "( " + "; ".join([*setup, call]) + " ) 2>&1"

    def probe_line(self, setup: Sequence[str]) -> str:
        """The probe's lines (after ``setup``): its version, whether it imports lazyslurm,
        cloudpickle and every installed module loaded here, where lazyslurm's runner is."""
        if self.is_ours():
            return ""
        names = {"lazyslurm", "cloudpickle", *third_party_modules()}
        self.checked.update(names)
        return self._call(names, setup) + " | sed 's/^/LZ-P /'"

    def read_probe(self, stdout: str) -> None:
        """Read :meth:`probe_line`'s output; refuses a python that does not run, or one
        older than the runner needs."""
        if self.is_ours():
            self.version = tuple(sys.version_info[:3])
            self.importable = {"lazyslurm", "cloudpickle", *third_party_modules()}
            return
        self.output = "\n".join(ln[5:] for ln in stdout.splitlines() if ln.startswith("LZ-P "))
        m = re.search(r"^LZ-PYVER=(\d+)\.(\d+)\.(\d+)$", self.output, re.MULTILINE)
        if m is None:
            msg = (
                f"python {self.python!r} does not run on the cluster (after the setup lines): "
                f"pass python=... naming an interpreter there. Output: "
                f"{self.output.strip()[-800:]}"
            )
            raise ClusterConfigError(msg)
        self.version = tuple(int(g) for g in m.groups())
        have = re.search(r"^LZ-HAVE=(.*)$", self.output, re.MULTILINE)
        self.importable = set(have.group(1).split(",")) - {""} if have else set()
        runner = re.search(r"^LZ-RUNNER=(/.*)$", self.output, re.MULTILINE)
        self.runner = runner.group(1) if runner else None
        check_python(self.version, python=self.python, code_by_value=False)

    def require(self, shell: Shell, setup: Sequence[str]) -> tuple[int, ...]:
        """Its version: probed now (one round trip) when the session's probe was about
        something else (a container)."""
        if self.version is None:
            line = self.probe_line(setup)  # empty for the client's own interpreter
            self.read_probe(shell.run(line).stdout if line else "")
        assert self.version is not None  # read_probe raised otherwise
        return self.version

    def missing(self, shell: Shell, blobs: list[bytes], setup: Sequence[str]) -> set[str]:
        """Installed modules the pickles ``blobs`` name that it cannot import (asking about
        names the probe did not cover, in one round trip)."""
        if self.is_ours():
            return set()
        needed = referenced_modules(blobs, third_party_modules())
        unknown = needed - self.checked
        if unknown:
            res = shell.run(self._call(unknown, setup))
            self.checked.update(unknown)
            have = re.search(r"^LZ-HAVE=(.*)$", res.stdout, re.MULTILINE)
            if have:
                self.importable.update(set(have.group(1).split(",")) - {""})
        return needed - self.importable


# -------------------------------------------------------------------- WORKDIR/code

_CODE_BEGIN, _CODE_END = "LZ-CODE-BEGIN", "LZ-CODE-END"
UNTRUSTED_CODE_MARK = "LZ-UNTRUSTED-CODE"


class CodeDir:
    """``WORKDIR/code`` as the session's probe listed it: the private entries there
    (reused, never staged again), the venvs it saw ready, and why each other entry is
    not to be trusted. Per run (:meth:`begin`), what the run uses and needs present."""

    def __init__(self) -> None:
        self.present: set[str] = set()  # WORKDIR/code/* seen on the cluster, private
        self.ready: set[str] = set()  # venv-KEY whose .ready marker the probe saw
        # entries of WORKDIR/code ("." itself, NAME, NAME/...) that are not private: why
        self.untrusted: dict[str, str] = {}
        self.used: dict[str, None] = {}  # this run's entries (in order)
        self.required: list[tuple[str, ...]] = []  # this run's: one of each must exist

    def probe_line(self, workdir: str | None) -> str:
        from lazyslurm.backends.shell.base import shell_path  # the shells: when probing

        return code_listing(shell_path(workdir or "~/.lazyslurm") + "/code")

    def read_probe(self, stdout: str) -> None:
        self.present, self.untrusted = read_code_listing(stdout)
        self.ready = {
            path.split("/")[0]
            for path in _listed_paths(stdout)
            if path.endswith("/.ready") and path.split("/")[0] in self.present
        }

    def begin(self) -> None:
        """A new run: nothing used or required yet."""
        self.used, self.required = {}, []

    def forget(self, names: Sequence[str]) -> None:
        """Entries found gone at submission (removed since the probe): staged again."""
        for name in names:
            top = name.split("/")[0]
            self.present.discard(top)
            self.ready.discard(top)

    def reuse(self, workdir: str, name: str, *also: str) -> bool:
        """Whether ``WORKDIR/code/NAME`` is there to reuse (else it is staged). Refuses
        (:class:`~lazyslurm.errors.UntrustedStoreError`, nothing submitted) when
        ``WORKDIR/code``, that entry, the entries ``also`` the run uses with it, or
        anything under them the probe saw, is not private: a symbolic link, another
        user's, or writable by others. Such an entry is never used. The run uses them all
        (recorded, touched at submission)."""
        names = (name, *also)
        used = [
            path
            for path in self.untrusted
            if path == "." or any(path == n or path.startswith(f"{n}/") for n in names)
        ]
        if used:
            raise untrusted_code_error(workdir, used, self.untrusted)
        self.used.update(dict.fromkeys(names))
        return name in self.present

    def need(
        self,
        workdir: str,
        name: str,
        files: Mapping[str, bytes] | Callable[[], Mapping[str, bytes]],
        *also: str,
        satisfied_by: str | None = None,
    ) -> dict[str, Mapping[str, bytes]]:
        """What a builder puts in :attr:`Prepared.code` so that ``WORKDIR/code/NAME``
        holds ``files`` (or what calling it returns, read only when staged): nothing when
        it is there to reuse (:meth:`reuse`), or when ``satisfied_by`` (a path in
        ``WORKDIR/code``, e.g. a venv made from it) was seen."""
        present = self.reuse(workdir, name, *also)
        alt = (name, satisfied_by) if satisfied_by else (name,)
        if present or (satisfied_by and satisfied_by.split("/")[0] in self.ready):
            self.required.append(alt if present else alt[::-1])
            return {}
        return {name: files() if callable(files) else files}

    def runtime(self, workdir: str) -> tuple[str, dict[str, Mapping[str, bytes]]]:
        """lazyslurm's runner and cloudpickle as ``WORKDIR/code/HASH``: that directory, and
        what to stage for it."""
        digest = runtime_hash()
        return f"{workdir}/code/{digest}", self.need(workdir, digest, runtime_files)

    def stage(
        self, workdir: str, prepared: Prepared, *, cap_kb: int = 0, live: str = ""
    ) -> Prepared:
        """``prepared`` with its code directories staged: each uploaded as
        ``WORKDIR/code/.stage-NAME-RANDOM`` with the run's files and renamed to ``NAME``
        before the submission (:func:`atomic_move`); known present once it went through.
        Every entry the run uses is touched (its last use) and those reused checked to
        be there still (:func:`~lazyslurm.backends.packaging.disk.use_lines`); when
        something was staged and ``cap_kb`` is set, the least recently used entries over
        it are removed after the submission (:func:`~lazyslurm.backends.packaging.disk.gc_script`,
        ``live``: the backend's script naming runs still queued or running)."""
        from lazyslurm.backends.packaging.disk import gc_script, use_lines

        files = dict(prepared.files)
        before = [prepared.before]
        done = list(prepared.on_success)
        for name, content in prepared.code.items():
            stage = f".stage-{name}-{secrets.token_hex(4)}"
            files.update((f"code/{stage}/{rel}", data) for rel, data in content.items())
            before.append(atomic_move(f"{workdir}/code", stage, name))
            done.append(_adder(self.present, name))
        uses = dict.fromkeys([*prepared.uses, *self.used, *prepared.code])
        before.append(use_lines(f"{workdir}/code", list(uses), self.required))
        after = prepared.after
        if prepared.code and cap_kb > 0:
            after += gc_script(workdir, live=live, cap_kb=cap_kb)
        return Prepared(
            files, "".join(before), prepared.launches, tuple(done), uses=tuple(uses), after=after
        )


def _adder(names: set[str], name: str) -> Callable[[], None]:
    return lambda: names.add(name)


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


def _listed_paths(stdout: str) -> list[str]:
    """The paths :func:`code_listing` printed (records not checked: see
    :func:`read_code_listing` for which are private)."""
    begin = stdout.find(_CODE_BEGIN + " ")
    end = stdout.rfind("\n" + _CODE_END)
    if begin < 0 or end < begin:
        return []
    body = stdout[begin:end].partition("\n")[2]
    return [r.split(" ", 3)[3] for r in body.split("\0") if r.count(" ") >= 3]


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
