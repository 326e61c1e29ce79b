"""A shell on this host: bash through subprocess, files read and written directly."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from lazyslurm.backends.shell.base import (
    CommandResult,
    check_env,
    check_root,
    decode,
    make_private_dirs,
    relative,
    staged_dirs,
    validated_files,
)
from lazyslurm.errors import BackendError, UntrustedStoreError
from lazyslurm.store import atomic_write, check_private_dir, read_private

__all__ = ["LocalShell"]

_MAX_ARG_BYTES = 64 * 1024  # longer local scripts go on stdin (see LocalShell.run)


class LocalShell:
    """Runs scripts with ``bash`` on this host and reads/writes files directly.

    ``env`` is merged over ``os.environ`` for every script (e.g. ``SLURM_CONF``). A
    script runs as ``bash -c SCRIPT``; one over 64 KiB is read from stdin ahead of
    ``input`` instead (Linux limits one argument to 128 KiB).
    ``round_trips`` counts every call (``run``, ``put_files``, ``read_files``), and a
    ``put_files`` with ``then`` counts 2, as over SSH.
    """

    local_files = True

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = check_env(env)
        self.round_trips = 0

    def __repr__(self) -> str:
        return f"LocalShell(env={sorted(self.env)})"

    def __enter__(self) -> LocalShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(
        self, script: str, *, input: bytes | None = None, timeout_s: float | None = None
    ) -> CommandResult:
        self.round_trips += 1
        env = {**os.environ, **self.env}
        body = script.encode()
        if len(body) > _MAX_ARG_BYTES:  # one argv string is limited to 128 KiB on Linux
            argv = ["bash", "-c", f'eval "$(head -c {len(body)})"']
            input = body + (input or b"")
        else:
            argv = ["bash", "-c", script]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if input else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # so a timeout can kill the whole process group
            )
        except OSError as exc:
            msg = f"cannot start bash: {exc}"
            raise BackendError(msg) from exc
        try:
            out, err = proc.communicate(input or None, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            msg = f"local command timed out after {timeout_s} s"
            raise BackendError(msg) from exc
        except BaseException:  # KeyboardInterrupt: do what the terminal would have done
            _kill_group(proc)
            raise
        return CommandResult(proc.returncode, decode(out), decode(err))

    def put_files(
        self, root: str, files: Mapping[str, bytes], *, then: str | None = None
    ) -> CommandResult | None:
        items = validated_files(files)
        base = Path(os.path.expanduser(check_root(root)))
        self.round_trips += 1
        for d in (base, *(base / sub for sub in staged_dirs(items))):
            if os.path.lexists(d):  # never write into a directory others can write to
                check_private_dir(d)
        try:
            make_private_dirs(base)
            for rel, data in items:
                target = base / rel
                make_private_dirs(target.parent)
                atomic_write(target, data)  # temp file (0600) + rename
        except OSError as exc:
            msg = f"cannot write files into {root}: {exc}"
            raise BackendError(msg) from exc
        return None if then is None else self.run(then)

    def read_files(self, root: str, paths: Sequence[str]) -> dict[str, bytes]:
        wanted = [(p, relative(p)) for p in paths]
        base = Path(os.path.expanduser(check_root(root)))
        self.round_trips += 1
        out = {}
        for name, rel in wanted:
            try:
                out[name] = read_private(base / rel)  # ours, regular, not through a symlink
            except UntrustedStoreError:
                raise
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
                pass
            except OSError as exc:
                msg = f"cannot read {base / rel}: {exc}"
                raise BackendError(msg) from exc
        return out

    def home(self) -> str:
        return os.path.expanduser("~")

    def close(self) -> None:
        pass


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:  # a grandchild escaped the group and holds a pipe
        for fh in (proc.stdout, proc.stderr):
            if fh is not None:
                fh.close()
        proc.wait()
