"""What both SSH transports share: how a script travels to the remote ``bash``, and the
scripts behind ``put_files``, ``read_files`` and ``home``. A transport supplies one exec
(:meth:`RemoteShell._exec`) and, optionally, an upload (:meth:`RemoteShell._stage`):
:class:`~lazyslurm.backends.shell.ssh.SSHShell` (paramiko) and
:class:`~lazyslurm.backends.shell.openssh.OpenSSHShell` (the ``ssh`` binary over the user's
OpenSSH master connection).

A script travels on the command's stdin, ahead of its ``input``: the command line is fixed
and short (``bash -c '...'``, valid in any login shell) and reads the script with
``head -c``; there is no command-line length limit. Both output streams start with a
marker, and what comes before it (printed by the login shell's startup files) is dropped.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
import tarfile
from collections.abc import Mapping, Sequence

from lazyslurm.backends.shell.base import (
    CommandResult,
    check_env,
    check_root,
    decode,
    relative,
    shell_path,
    staged_dirs,
    tar_gz,
    untar,
    untrusted_facts,
    validated_files,
)
from lazyslurm.errors import BackendError, UntrustedStoreError
from lazyslurm.store import untrusted_fix

__all__ = ["STAGE_PREFIX", "RemoteShell"]

STAGE_PREFIX = ".lazyslurm-stage-"  # staging directories of uploads, in the remote home


class RemoteShell:
    """The shell protocol over a remote exec: subclasses implement :meth:`_exec` (one round
    trip) and may implement :meth:`_stage` (put a blob in a remote file first)."""

    local_files = False

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = check_env(env)
        self.round_trips = 0
        self._exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())
        self._mark = f"lazyslurm{secrets.token_hex(8)}mark"
        self._home: str | None = None

    # -- what a transport provides
    @property
    def _where(self) -> str:
        raise NotImplementedError

    def _exec(
        self, script: str, input: bytes | None, timeout_s: float | None
    ) -> tuple[int, bytes, bytes]:
        """Run ``script`` with bash (see :meth:`_framed`); return (exit status, stdout,
        stderr) as bytes, the login shell's noise dropped (see :func:`after_mark`)."""
        raise NotImplementedError

    def _stage(self, blob: bytes) -> str | None:
        """Put ``blob`` in ``files.tar.gz`` of a new private staging directory on the remote
        side and return its absolute path, or return None to send it on the stdin of the
        exec that unpacks it (one round trip less)."""
        return None

    def _framed(self, script: str) -> tuple[str, bytes]:
        """The command line to exec, and the bytes to send ahead of ``input`` on its stdin."""
        body = (self._exports + script).encode()
        m = self._mark
        inner = f'printf %s {m}; printf %s {m} >&2; eval "$(head -c {len(body)})"'
        return "bash -c " + shlex.quote(inner), body

    # -- the protocol
    def run(
        self, script: str, *, input: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        code, out, err = self._exec(script, input, timeout_s)
        return CommandResult(code, decode(out), decode(err))

    def put_files(
        self, root: str, files: Mapping[str, bytes], *, then: str | None = None
    ) -> CommandResult | None:
        items = validated_files(files)
        qroot = shell_path(check_root(root))
        blob = tar_gz(items) if items else None
        stage = self._stage(blob) if blob is not None else None
        fail = f"{self._mark}unpack"
        untrusted = f"{self._mark}untrusted"
        lines = [
            # never unpack into a directory another user could write to (the root, and
            # the directories the files go into): name the first one, with its facts
            "__lz_me=$(id -u)",
            f"cd -- {qroot} 2>/dev/null && for __lz_d in . "
            + " ".join(shlex.quote(d) for d in staged_dirs(items))
            + "; do",
            '  __lz_s=$(find "$__lz_d" -maxdepth 0 \\( -type l -o ! -user "$__lz_me" -o '
            "-perm /022 \\) -printf '%y %U %m' 2>/dev/null)",
            '  if [ -n "$__lz_s" ]; then',
            f"    printf '%s\\n%s %s\\n%s\\n' {untrusted} "
            '"$__lz_me" "$__lz_s" "$PWD/$__lz_d" >&2; exit 1',
            "  fi",
            "done",
            "cd",
            "__lz_err=$( ( umask 077 && mkdir -p -- " + qroot,
        ]
        if stage is not None:
            qstage = shlex.quote(stage)
            lines[-1] += f" && tar --no-same-owner -xzf {qstage}/files.tar.gz -C {qroot}"
        elif blob is not None:  # the tar follows the script on stdin
            lines[-1] += f" && tar --no-same-owner -xzf - -C {qroot}"
        lines[-1] += " ) 2>&1 ); __lz_rc=$?"
        if stage is not None:
            lines.append(f"rm -rf -- {qstage}")
            # leftovers of uploads whose unpacking never ran (connection lost in between)
            base = shlex.quote(posixpath.dirname(stage))
            lines.append(
                f"find {base} -maxdepth 1 -name '{STAGE_PREFIX}*' -mmin +1440 "
                "-exec rm -rf -- {} + 2>/dev/null"
            )
        lines += [
            'if [ "$__lz_rc" -ne 0 ]; then',
            f"""  printf '%s\\n%s\\n' {fail} "$__lz_err" >&2; exit 1""",
            "fi",
            "unset __lz_err __lz_rc __lz_me __lz_s",
            then or "",
        ]
        res = self.run("\n".join(lines), input=blob if stage is None else None)
        if res.returncode == 1 and res.stderr.startswith(untrusted):
            facts, _, path = res.stderr[len(untrusted) :].strip().partition("\n")
            path = path.removesuffix("/.")
            why = untrusted_facts(facts)
            msg = (
                f"store directory {path} on {self._where} {why}: another user could plant "
                f"files there. Fix: {untrusted_fix(path, why)}"
            )
            raise UntrustedStoreError(msg, path=path)
        if res.returncode == 1 and res.stderr.startswith(fail):
            detail = res.stderr[len(fail) :].strip() or "(no message)"
            msg = f"could not create {root} or unpack files into it on {self._where}: {detail}"
            raise BackendError(msg)
        if then is None:
            if res.returncode != 0:
                msg = f"unpacking files into {root} on {self._where} failed: {res.stderr.strip()}"
                raise BackendError(msg)
            return None
        return res

    def read_files(self, root: str, paths: Sequence[str]) -> dict[str, bytes]:
        wanted: dict[str, list[str]] = {}
        for p in paths:
            wanted.setdefault(relative(p), []).append(p)
        qroot = shell_path(check_root(root))
        if not wanted:
            return {}
        script = (
            f"cd -- {qroot} 2>/dev/null || exit 0\n"
            "while IFS= read -r -d '' f; do\n"
            # ours, regular and not a symlink (checked here, on the cluster), else named
            """  if [ -L "$f" ] || { [ -e "$f" ] && ! [ -O "$f" ]; }; then"""
            """ printf 'LZ-UNTRUSTED %s\\n' "$f" >&2;\n"""
            """  elif [ -f "$f" ] && [ -r "$f" ]; then printf './%s\\0' "$f"; fi\n"""
            "done |\n"
            "  tar -cf - --ignore-failed-read --null --no-unquote -T - 2>/dev/null\n"
            "exit 0\n"
        )
        listing = b"".join(rel.encode() + b"\0" for rel in wanted)
        _, out, err = self._exec(script, listing, None)
        refused = [ln[13:] for ln in decode(err).splitlines() if ln.startswith("LZ-UNTRUSTED ")]
        if refused:
            msg = (
                f"store file {refused[0]} under {root} on {self._where} is a symbolic link or "
                f"not yours: refused (use a private workdir)"
            )
            raise UntrustedStoreError(msg, path=refused[0])
        if not out:
            return {}
        try:
            return untar(out, wanted)
        except tarfile.TarError as exc:
            msg = f"could not read files from {root} on {self._where}: {exc}; {decode(err)[-500:]}"
            raise BackendError(msg) from exc

    def home(self) -> str:
        if self._home is None:
            res = self.run('printf "%s" "$HOME"')
            home = res.stdout.strip()
            if res.returncode != 0 or not home.startswith("/"):
                msg = f"cannot find the home directory on {self._where}: {res.stderr.strip()}"
                raise BackendError(msg)
            self._home = home
        return self._home


def after_mark(data: bytes, mark: str) -> bytes:
    """``data`` after the first ``mark`` (all of it if the mark is missing)."""
    i = data.find(mark.encode())
    return data if i < 0 else data[i + len(mark) :]
