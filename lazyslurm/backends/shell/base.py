"""The shell protocol and what both transports share (quoting, file checks, tar).

The Slurm backend talks to a cluster only through this small protocol, so the same code
drives ``sbatch`` on a login node (:class:`LocalShell`) and from a laptop
(:class:`SSHShell` over paramiko, or :class:`OpenSSHShell` through the user's OpenSSH
master connection). Every call is one *round trip*, counted in ``round_trips``:

==============  =======================  ===========================  =======================
call            :class:`LocalShell`      :class:`SSHShell`            :class:`OpenSSHShell`
==============  =======================  ===========================  =======================
``run``         1 (one ``bash -c``)      1 (one exec)                 1 (one ``ssh``)
``put_files``   1, +1 with ``then``      2: one SFTP upload + one     1: the tar on the stdin
                                         exec that unpacks and runs   of the ``ssh`` that
                                         ``then``                     unpacks and runs ``then``
``read_files``  1 (direct reads)         1 (one exec streaming a tar) 1 (the same)
``home``        0                        1 the first time, then       1 the first time, then
                                         cached                       cached
==============  =======================  ===========================  =======================

Conventions shared by both shells:

- Scripts run with ``bash``; their stdin is ``input`` (or empty), never a terminal.
  The SSH shells start in the remote home directory, ``LocalShell`` in the current one.
- ``root`` arguments may start with ``~`` or ``~/`` (the home directory on that side).
  Inside a script, quote paths with :func:`shell_path` (which keeps ``~`` working) or
  :func:`shlex.quote`: everything that reaches a shell must be quoted.
- File paths given to ``put_files``/``read_files`` are relative to ``root`` and may not be
  absolute or contain ``..``. Directories are created mode 0700, files mode 0600.
- A non-zero exit status is a result, not an error. :class:`~lazyslurm.errors.BackendError`
  means the transport failed (cannot connect, connection lost, timeout, cannot write);
  :class:`~lazyslurm.errors.SSHHostKeyError` means the server's host key is unknown or
  changed. No password or key material ever goes into a script or an error message.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import shlex
import tarfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import attrs

from lazyslurm.errors import BackendError
from lazyslurm.store import untrusted_why

__all__ = [
    "CommandResult",
    "Shell",
    "check_env",
    "check_root",
    "decode",
    "make_private_dirs",
    "relative",
    "shell_path",
    "staged_dirs",
    "tar_gz",
    "untar",
    "untrusted_facts",
    "validated_files",
]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_GZIP_LEVEL = 1  # fast: staged specs are small, and pickled arrays barely compress


@attrs.frozen
class CommandResult:
    """Exit status and decoded output of one script (undecodable bytes become U+FFFD)."""

    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def check(self, what: str = "command") -> CommandResult:
        """Return ``self`` if it succeeded, else raise :class:`BackendError` with its stderr.

        >>> CommandResult(0, "1234\\n", "").check("sbatch").stdout
        '1234\\n'
        """
        if self.returncode != 0:
            detail = (self.stderr.strip() or self.stdout.strip())[-2000:] or "(no output)"
            msg = f"{what} failed with exit status {self.returncode}: {detail}"
            raise BackendError(msg)
        return self


@runtime_checkable
class Shell(Protocol):
    """Somewhere to run bash scripts and keep files: this host, or a cluster over SSH."""

    round_trips: int
    local_files: bool  # paths are on this host: the caller may also read them directly

    def run(
        self, script: str, *, input: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        """Run a bash script (one round trip).

        Never raises on a non-zero exit; raises :class:`BackendError` if the transport
        fails or ``timeout_s`` passes.
        """

    def put_files(
        self, root: str, files: Mapping[str, bytes], *, then: str | None = None
    ) -> CommandResult | None:
        """Create ``root`` (0700, with parents) and write ``files`` into it in one transfer.

        Sub-directories are created 0700 and files 0600. If ``then`` is given, run that
        script afterwards (in the same round trip as the unpacking where possible) and
        return its result; otherwise return ``None``.
        """

    def read_files(self, root: str, paths: Sequence[str]) -> dict[str, bytes]:
        """Read the files (relative to ``root``) that exist, in one round trip.

        Missing (or unreadable, or non-regular) files are left out.
        """

    def home(self) -> str:
        """The absolute home directory on that side (cached)."""

    def close(self) -> None:
        """Release processes and connections (the shell reconnects if used again)."""


# --------------------------------------------------------------------------- helpers


def shell_path(path: str) -> str:
    """Quote ``path`` for bash, keeping a leading ``~`` or ``~/`` meaning the home directory.

    >>> shell_path("~/runs/a b")
    '"$HOME"/\\'runs/a b\\''
    >>> shell_path("/tmp/$(x)")
    "'/tmp/$(x)'"
    """
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        rest = path[2:]
        return '"$HOME"/' + (shlex.quote(rest) if rest else "")
    return shlex.quote(path)


def check_root(root: str) -> str:
    root = os.fspath(root)
    if not root or "\0" in root:
        msg = f"root must be a non-empty path without NUL bytes, got {root!r}"
        raise ValueError(msg)
    return root


def relative(path: str) -> str:
    """Validate a path relative to a root and return it normalized (``a/./b`` -> ``a/b``)."""
    if not isinstance(path, str):
        msg = f"file paths must be str, got {type(path).__name__}"
        raise TypeError(msg)
    norm = posixpath.normpath(path) if path else ""
    if (
        not path
        or "\0" in path
        or path.startswith("/")
        or norm in (".", "")
        or ".." in norm.split("/")
    ):
        msg = f"file paths must be relative to the root, without '..': got {path!r}"
        raise ValueError(msg)
    return norm


def validated_files(files: Mapping[str, bytes]) -> list[tuple[str, bytes]]:
    out: dict[str, bytes] = {}
    for path, data in files.items():
        rel = relative(path)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            msg = f"file contents must be bytes, got {type(data).__name__} for {path!r}"
            raise TypeError(msg)
        if rel in out:
            msg = f"two file paths name the same file: {path!r}"
            raise ValueError(msg)
        out[rel] = bytes(data)
    for rel in out:
        parent = posixpath.dirname(rel)
        while parent:
            if parent in out:
                msg = f"{parent!r} is both a file and a directory"
                raise ValueError(msg)
            parent = posixpath.dirname(parent)
    return list(out.items())


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(env or {})
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            msg = f"environment variable names must be shell identifiers, got {name!r}"
            raise ValueError(msg)
        if not isinstance(value, str) or "\0" in value:
            msg = f"environment variable {name} must be a str without NUL bytes"
            raise ValueError(msg)
    return env


def decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def tar_gz(files: Sequence[tuple[str, bytes]]) -> bytes:
    """An in-memory tar.gz of ``files``: directories 0700, files 0600."""
    now = int(time.time())
    dirs: set[str] = set()
    for rel, _ in files:
        parent = posixpath.dirname(rel)
        while parent:
            dirs.add(parent)
            parent = posixpath.dirname(parent)
    buf = io.BytesIO()
    with tarfile.open(
        fileobj=buf, mode="w:gz", compresslevel=_GZIP_LEVEL, format=tarfile.PAX_FORMAT
    ) as tf:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o700
            info.mtime = now
            tf.addfile(info)
        for rel, data in files:
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o600
            info.mtime = now
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def untar(blob: bytes, wanted: Mapping[str, Sequence[str]]) -> dict[str, bytes]:
    """Members of the tar ``blob`` that are regular files, under the names asked for."""
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tf:
        for member in tf:
            names = wanted.get(posixpath.normpath(member.name))
            if not names or not member.isfile():
                continue
            fh = tf.extractfile(member)
            assert fh is not None
            data = fh.read()
            for name in names:
                out[name] = data
    return out


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` with mode 0700 for every directory created (existing ones are kept)."""
    missing = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
        except FileExistsError:
            if not d.is_dir():
                raise


def untrusted_facts(facts: str) -> str:
    """Why an entry is not private, from ``MY_UID TYPE UID MODE`` as a script printed
    them on the cluster (``id -u``, then find's ``%y %U %m``).

    >>> untrusted_facts("1001 d 65534 755")
    'is owned by uid 65534, not by you (uid 1001)'
    """
    me, kind, uid, mode = facts.split()
    return untrusted_why(kind, int(uid), int(mode, 8), me=int(me)) or "is not private"


def staged_dirs(files: Sequence[tuple[str, bytes]]) -> list[str]:
    """The directories (relative to the root) that ``files`` go into, parents first:
    each must be private if it already exists (nothing is written where others can)."""
    out: dict[str, None] = {}
    for rel, _ in files:
        parts = rel.split("/")[:-1]
        for n in range(1, len(parts) + 1):
            out["/".join(parts[:n])] = None
    return list(out)
