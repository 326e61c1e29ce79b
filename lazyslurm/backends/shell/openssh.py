"""A shell over the user's OpenSSH master connection (``ControlMaster``/``ControlPath``),
and the choice between it and paramiko.

On clusters that want a second factor at every login, or that allow only connections
multiplexed through a master the user opened by hand, the user logs in once in a
terminal::

    ssh -fNM hpc          # or any ssh with ControlMaster auto + ControlPersist in the config

and every lazyslurm process (scripts, the CLI, ``Run.attach``, notebooks) runs its
commands through that master, for as long as it lives, without asking anything.

:class:`OpenSSHShell` implements the shell protocol with the system ``ssh`` binary:
``ssh -S CONTROLPATH -o ControlMaster=no -o BatchMode=yes HOST bash -c ...`` per round
trip, the script on stdin as :class:`~lazyslurm.backends.shell.ssh.SSHShell` sends it;
``put_files`` sends the tar on the same exec's stdin (one round trip, with ``then``),
``read_files`` streams a tar back (one round trip). It never opens a connection of its
own: if the master is gone, the error says how to open it again (and polls retry until
``unreachable_timeout_s``, so reopening it lets a run's polling go on).

:func:`make_ssh_shell` picks the transport for ``Cluster("ssh", transport=...)``:
``"paramiko"``, ``"openssh"`` (a master must be configured), or ``"auto"`` (default):
OpenSSH when the ssh config (or ``control_path=``) names a ControlPath for that host and
``ssh -O check`` finds a live master there, else paramiko.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lazyslurm.backends.shell.base import Shell
from lazyslurm.backends.shell.remote import RemoteShell, after_mark
from lazyslurm.backends.shell.ssh import SSHShell
from lazyslurm.backends.shell.ssh_config import DEFAULT_SSH_CONFIG
from lazyslurm.backends.shell.ssh_config import resolve as resolve_route
from lazyslurm.errors import BackendError, ClusterConfigError, SSHConnectionError

__all__ = ["Master", "OpenSSHShell", "find_master", "make_ssh_shell"]

log = logging.getLogger("lazyslurm.backends.shell")

TRANSPORTS = ("auto", "paramiko", "openssh")
_SSH_G_TIMEOUT_S = 30.0  # `ssh -G` and `ssh -O check` are local, but Match exec may run things
# every ssh exec: through the master only (no connection of its own, no questions, no
# forwardings or local commands from the config; stdin is data, never an escape)
_EXEC_OPTIONS = (
    "-T",
    "-e",
    "none",
    "-o",
    "ControlMaster=no",
    "-o",
    "BatchMode=yes",
    # were the master gone, ssh would connect on its own: through `false`, which fails
    # at once (the first value given wins over the config's ProxyCommand/ProxyJump)
    "-o",
    "ProxyCommand=false",
    "-o",
    "ClearAllForwardings=yes",
    "-o",
    "PermitLocalCommand=no",
    "-o",
    "RemoteCommand=none",
    "-o",
    "ForwardX11=no",
    "-o",
    "LogLevel=ERROR",
)


@dataclass(frozen=True)
class Master:
    """An OpenSSH master connection as ``ssh -G`` describes it (it may not be running)."""

    name: str  # the host as given (a Host alias, or a name)
    hostname: str  # HostName
    port: int
    user: str
    control_path: str  # expanded
    args: tuple[str, ...]  # -F/-p/-l/-o ControlPath=... as given to ssh -G
    ssh: str = "ssh"

    @property
    def where(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        where = f"{self.user}@{host}:{self.port}"
        return where if self.name == self.hostname else f"{self.name} ({where})"

    def command(self, *more: str) -> list[str]:
        """``ssh ARGS -S CONTROLPATH MORE... -- NAME`` (add the remote command after)."""
        return [self.ssh, *self.args, "-S", self.control_path, *more, "--", self.name]

    def alive(self) -> bool:
        """Whether a master answers on the control socket (``ssh -O check``, local)."""
        if not os.path.exists(self.control_path):
            return False
        try:
            res = subprocess.run(
                self.command("-O", "check"),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_SSH_G_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
        return res.returncode == 0

    def open_command(self) -> str:
        """How the user opens it again, in a terminal (the ControlPath is the config's,
        or in ``args`` when given as control_path=)."""
        return shlex.join([self.ssh, "-fNM", *self.args, self.name])


def _config_args(
    ssh_config: str | os.PathLike[str] | bool | None, port: int | None, username: str | None
) -> list[str]:
    args: list[str] = []
    if ssh_config is None or ssh_config is False:
        args += ["-F", os.devnull]
    elif ssh_config is not True and os.fspath(ssh_config) != DEFAULT_SSH_CONFIG:
        args += ["-F", os.path.expanduser(os.fspath(ssh_config))]
    if port is not None:
        args += ["-p", str(int(port))]
    if username:
        args += ["-l", username]
    return args


def find_master(
    hostname: str,
    *,
    port: int | None = None,
    username: str | None = None,
    ssh_config: str | os.PathLike[str] | bool | None = DEFAULT_SSH_CONFIG,
    control_path: str | os.PathLike[str] | None = None,
    ssh: str = "ssh",
) -> Master | None:
    """The master connection the ssh config (or ``control_path``) names for ``hostname``,
    running or not; None if there is no ControlPath for it. Asks ``ssh -G``, which
    expands ``%C``, ``%h``, ``~`` ... exactly as the ssh that opened the master did."""
    args = _config_args(ssh_config, port, username)
    if control_path is not None:
        args += ["-o", f"ControlPath={os.fspath(control_path)}"]
    try:
        res = subprocess.run(
            [ssh, "-G", *args, "--", hostname],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_SSH_G_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        msg = f"cannot use an OpenSSH master: no {ssh!r} program on PATH (transport='openssh')"
        raise ClusterConfigError(msg) from None
    except (OSError, subprocess.TimeoutExpired) as exc:
        msg = f"`ssh -G {hostname}` failed: {exc}"
        raise ClusterConfigError(msg) from None
    if res.returncode != 0:
        said = " ".join(res.stderr.decode(errors="replace").split())[-500:]
        msg = f"`ssh -G {hostname}` (reading the ssh config) failed: {said or 'no message'}"
        raise ClusterConfigError(msg)
    cfg: dict[str, str] = {}
    for line in res.stdout.decode(errors="replace").splitlines():
        key, _, value = line.partition(" ")
        cfg.setdefault(key.lower(), value.strip())
    path = cfg.get("controlpath", "")
    if not path or path.lower() == "none":
        return None
    return Master(
        name=hostname,
        hostname=cfg.get("hostname") or hostname,
        port=int(cfg.get("port") or 22),
        user=cfg.get("user") or "",
        control_path=os.path.expanduser(path),
        args=tuple(args),
        ssh=ssh,
    )


class OpenSSHShell(RemoteShell):
    """Runs scripts and moves files through the user's OpenSSH master connection (see the
    module's documentation). ``round_trips`` counts each ssh exec: ``run``,
    ``put_files`` (with or without ``then``) and ``read_files`` are one each; ``connects``
    and ``prompts`` stay 0 (the master logged in)."""

    def __init__(
        self, master: Master, env: Mapping[str, str] | None = None, *, profile: str | None = None
    ) -> None:
        super().__init__(env)
        self.master = master
        self.profile = profile or None
        self.connects = 0
        self.prompts = 0
        self._lock = threading.Lock()

    @property
    def _where(self) -> str:
        return self.master.where

    def __repr__(self) -> str:
        return f"OpenSSHShell({self._where} via {self.master.control_path})"

    def __enter__(self) -> OpenSSHShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release: the master is the user's, and stays open."""

    def _exec(
        self, script: str, input: bytes | None, timeout_s: float | None
    ) -> tuple[int, bytes, bytes]:
        command, body = self._framed(script)
        argv = [*self.master.command(*_EXEC_OPTIONS), command]
        with self._lock:
            self.round_trips += 1
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C is ours to handle, not ssh's
            )
        except OSError as exc:
            msg = f"cannot run {self.master.ssh!r} for {self._where}: {exc.strerror or exc}"
            raise BackendError(msg) from None
        try:
            out, err = proc.communicate(body + (input or b""), timeout=timeout_s)
        except BaseException as exc:
            _abandon(proc)
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            msg = f"remote command on {self._where} timed out after {timeout_s} s"
            raise BackendError(msg) from None
        code = proc.returncode
        mark = self._mark.encode()
        if code == 255 and mark not in out:  # ssh failed: the script never started
            raise self._failure(err)
        if code == 255 and not self.master.alive():
            msg = (
                f"the connection to {self._where} was lost while a command ran; it may or may "
                f"not have completed (the OpenSSH master at {self.master.control_path} is "
                f"gone: open it again with `{self.master.open_command()}`)"
            )
            raise BackendError(msg)
        return code, after_mark(out, self._mark), after_mark(err, self._mark)

    def _failure(self, stderr: bytes) -> SSHConnectionError:
        said = " ".join(stderr.decode(errors="replace").split())[-500:]
        profile = f"cluster profile {self.profile!r}: " if self.profile else ""
        if not self.master.alive():
            reason = (
                f"no OpenSSH master connection at {self.master.control_path} (it was never "
                "opened, or it ended: ControlPersist ran out, the network changed, or it was "
                "closed). Open it again in a terminal (you log in there, second factor "
                f"included): `{self.master.open_command()}`"
            )
        else:
            reason = f"ssh through the master at {self.master.control_path} failed: {said}"
        return SSHConnectionError(
            f"{profile}cannot run commands on {self._where}: {reason}",
            host=self.master.name,
            address=f"{self.master.hostname}:{self.master.port}",
            profile=self.profile or "",
            failed_at=f"{self.master.hostname}:{self.master.port}",
            reason=reason,
        )


def _abandon(proc: subprocess.Popen[bytes]) -> None:
    """Kill an ssh client and let go of its pipes without reading them to the end: the
    master holds copies of them (passed over the control socket) until the remote command
    ends, which it is not told to do (as with paramiko's channels)."""
    proc.kill()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:  # a broken pipe: nothing left to release
                pass
    proc.wait()


def make_ssh_shell(
    *,
    transport: str = "auto",
    control_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    profile: str | None = None,
    **options: Any,
) -> Shell:
    """The shell of ``Cluster("ssh", ...)``: ``options`` are :class:`SSHShell`'s; an
    :class:`OpenSSHShell` takes only the host, port, user and ssh config from them."""
    if transport not in TRANSPORTS:
        msg = f"transport must be one of {', '.join(TRANSPORTS)}, got {transport!r}"
        raise ClusterConfigError(msg)
    if transport == "paramiko":
        return SSHShell(env=env, profile=profile, **options)
    hostname = options.get("hostname")
    if not hostname:
        msg = "hostname must be a non-empty string"
        raise ValueError(msg)
    where = {k: options.get(k) for k in ("port", "username")}
    ssh_config = options.get("ssh_config", DEFAULT_SSH_CONFIG)
    if transport == "openssh":
        master = find_master(hostname, ssh_config=ssh_config, control_path=control_path, **where)
        if master is None:
            msg = (
                f"transport='openssh' needs an OpenSSH master connection for {hostname}, but "
                "neither the ssh config nor control_path= names a ControlPath for it: add "
                "`ControlMaster auto`, `ControlPath ~/.ssh/cm-%C` and `ControlPersist 8h` to its "
                "Host block (docs/two-factor.md), or pass control_path="
            )
            raise ClusterConfigError(msg)
        return OpenSSHShell(master, env, profile=profile)
    master = _live_master(hostname, ssh_config, control_path, where)
    if master is not None:
        log.debug("using the OpenSSH master at %s for %s", master.control_path, master.where)
        return OpenSSHShell(master, env, profile=profile)
    return SSHShell(env=env, profile=profile, **options)


def _live_master(
    hostname: str,
    ssh_config: Any,
    control_path: Any,
    where: Mapping[str, Any],
    which: Callable[[str], str | None] = shutil.which,
) -> Master | None:
    """transport="auto": the live master for ``hostname``, if there is one."""
    if os.name == "nt" or which("ssh") is None:
        return None
    if control_path is None:  # only ask ssh when the config names a ControlPath
        route = resolve_route(hostname, ssh_config=ssh_config, **where)
        if route.target.control_path is None:
            return None
    try:
        master = find_master(hostname, ssh_config=ssh_config, control_path=control_path, **where)
    except ClusterConfigError as exc:
        log.debug("no OpenSSH master for %s: %s", hostname, exc)
        return None
    if master is None or not master.alive():
        log.debug("no live OpenSSH master for %s; using paramiko", hostname)
        return None
    return master
