"""Where an SSH connection goes, as ``~/.ssh/config`` says: the login node and the jump
hosts on the way (``ProxyJump``), or a ``ProxyCommand``. Read with paramiko's
``SSHConfig`` (imported when a route is first resolved, never at import).

What is honoured, per host (the login node and each jump host, each with its own
``Host``/``Match`` blocks): ``HostName``, ``User``, ``Port``, ``IdentityFile`` (``~`` and
%-tokens as paramiko expands them; files that do not exist are skipped, as ssh does),
``IdentitiesOnly``, ``ProxyJump`` (one hop or a comma-separated chain of
``[user@]host[:port]``; the first hop's own ``ProxyJump``/``ProxyCommand`` apply, as with
``ssh -J``), ``ProxyCommand`` (run by ``/bin/sh`` like ssh does), ``UserKnownHostsFile``,
``GlobalKnownHostsFile``, ``HostKeyAlias``, ``ConnectTimeout`` (unless
``connect_timeout_s=`` is given) and ``Include`` (expanded here: paramiko does not).
``ControlPath`` (and ``ControlMaster``) choose the OpenSSH transport when a master
connection is live (:mod:`lazyslurm.backends.shell.openssh`); ``GSSAPIAuthentication``
is read only to explain a refused login (paramiko >= 4 has no GSSAPI: use an OpenSSH
master). ``StrictHostKeyChecking`` is read but never weakens checking: an unknown key is
refused unless ``allow_unknown_hosts=True`` (the error says so). Every other keyword is
ignored (``ForwardAgent``, ``ServerAliveInterval`` (see ``keepalive_s``), ciphers and
algorithms, ...).

Explicit options (``port=``, ``username=``, ``key_filename=``, ``known_hosts=``) win over
the file for the login node; ``known_hosts=`` also serves the jump hosts, and
``key_filename=`` is tried on a jump host after the jump host's own ``IdentityFile``.

>>> parse_jumps("alice@bastion:2200, ssh://gw, [::1]:22, none")
[('alice', 'bastion', 2200), (None, 'gw', None), (None, '::1', 22)]
"""

from __future__ import annotations

import getpass
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lazyslurm.errors import ClusterConfigError

if TYPE_CHECKING:
    import paramiko

__all__ = ["DEFAULT_SSH_CONFIG", "Endpoint", "Route", "load_config", "parse_jumps", "resolve"]

DEFAULT_SSH_CONFIG = "~/.ssh/config"
DEFAULT_KNOWN_HOSTS = ("~/.ssh/known_hosts", "/etc/ssh/ssh_known_hosts")
_MAX_DEPTH = 8  # nested Include files, and jump hosts behind jump hosts


@dataclass(frozen=True)
class Endpoint:
    """One SSH server to log in to: the login node or a jump host."""

    name: str  # as written (a Host alias, a ProxyJump entry, or a plain host name)
    hostname: str  # HostName, resolved
    port: int
    username: str
    key_filenames: tuple[str, ...] = ()
    identities_only: bool = False
    known_hosts: tuple[str, ...] = ()  # absolute paths
    default_known_hosts: bool = True  # known_hosts is lazyslurm's default (not chosen)
    host_key_alias: str | None = None
    strict_host_key_checking: str | None = None  # as written in the config (never obeyed)
    connect_timeout: float | None = None  # ConnectTimeout, s
    control_path: str | None = None  # ControlPath as written (tokens not expanded)
    gssapi: bool = False  # GSSAPIAuthentication yes

    @property
    def address(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname  # IPv6
        return f"{host}:{self.port}"

    @property
    def key_name(self) -> str:
        """The name of the host key in known_hosts (as ssh looks it up)."""
        if self.host_key_alias:
            return self.host_key_alias
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    def describe(self) -> str:
        """``name (user@HostName:port)``, or ``user@HostName:port`` when name is HostName."""
        where = f"{self.username}@{self.address}"
        return where if self.name == self.hostname else f"{self.name} ({where})"


@dataclass(frozen=True)
class Route:
    """The hosts to log in to, in order: jump hosts, then the login node (``target``)."""

    target: Endpoint
    jumps: tuple[Endpoint, ...] = ()
    proxy_command: str | None = None  # reaches the first host of ``hops`` (not TCP)
    config_path: str | None = None  # the ssh config file read (None: none)

    @property
    def hops(self) -> tuple[Endpoint, ...]:
        return (*self.jumps, self.target)

    def describe(self) -> str:
        text = self.target.describe()
        if self.jumps:
            text += " via jump host " + " -> ".join(j.describe() for j in self.jumps)
        if self.proxy_command:
            text += f" via ProxyCommand {self.proxy_command!r}"
        return text


# --------------------------------------------------------------------------- parsing


def parse_jumps(spec: str) -> list[tuple[str | None, str, int | None]]:
    """``(user, host, port)`` of each entry of a ``ProxyJump`` value (``none``: skipped)."""
    out: list[tuple[str | None, str, int | None]] = []
    for raw in spec.split(","):
        entry = raw.strip()
        if not entry or entry.lower() == "none":
            continue
        if entry.startswith("ssh://"):
            entry = entry[len("ssh://") :].rstrip("/")
        user, _, hostport = entry.rpartition("@")
        m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:\[\]]+)(?::(\d+))?", hostport)
        if not m or (user == "" and "@" in entry):
            msg = f"ProxyJump entry {raw.strip()!r} is not [user@]host[:port]"
            raise ClusterConfigError(msg)
        host = m.group(1) or m.group(3)
        port = m.group(2) or m.group(4)
        out.append((user or None, host, int(port) if port else None))
    return out


def _expand_includes(path: str, depth: int = 0) -> str:
    """The text of an ssh config file with its ``Include`` lines replaced by the files
    they name (paramiko ignores them). Relative names are under ``~/.ssh``, globs are
    expanded, missing files are skipped (as ssh does). After an ``Include`` inside a
    ``Host``/``Match`` block whose files start blocks of their own, the outer block's
    header is repeated, so that its remaining lines still apply to it only."""
    if depth > _MAX_DEPTH:
        msg = f"ssh config {path}: Include nested more than {_MAX_DEPTH} deep (a loop?)"
        raise ClusterConfigError(msg)
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    out: list[str] = []
    header: str | None = None  # the current Host/Match line
    for line in lines:
        m = re.match(r"\s*(\w+)(?:\s*=\s*|\s+)(.*)$", line)
        key = m.group(1).lower() if m else ""
        if key in ("host", "match"):
            header = line
        if key != "include":
            out.append(line)
            continue
        assert m is not None
        for pattern in m.group(2).split():
            pattern = os.path.expanduser(pattern.strip('"'))
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
            for name in sorted(glob.glob(pattern)):
                if os.path.isfile(name):
                    text = _expand_includes(name, depth + 1)
                    out.append(text)
                    opens = re.search(r"(?im)^\s*(host|match)\b", text)
                    if header is not None and opens:
                        out.append(header)
    return "\n".join(out) + "\n"


def load_config(path: str | os.PathLike[str] | bool | None) -> tuple[Any, str | None]:
    """Parse the ssh config file at ``path`` (``None``/``False``: read none; the default
    file may be missing). Returns ``(paramiko.SSHConfig or None, the path read)``."""
    if path is None or path is False:
        return None, None
    if path is True:
        path = DEFAULT_SSH_CONFIG
    full = os.path.expanduser(os.fspath(path))
    if not os.path.exists(full):
        if os.fspath(path) == DEFAULT_SSH_CONFIG:
            return None, None
        msg = (
            f"ssh config file {full} (ssh_config=) does not exist; "
            "pass ssh_config=None to read none"
        )
        raise ClusterConfigError(msg)
    import paramiko

    try:
        return paramiko.SSHConfig.from_text(_expand_includes(full)), full
    except ClusterConfigError:
        raise
    except (OSError, paramiko.SSHException, ValueError) as exc:
        msg = f"cannot read ssh config {full}: {type(exc).__name__}: {exc}"
        raise ClusterConfigError(msg) from None


def _lookup(config: Any, host: str, config_path: str | None) -> dict[str, Any]:
    if config is None:
        return {"hostname": host}
    try:
        return dict(config.lookup(host))
    except Exception as exc:  # Match exec without invoke, CanonicalizeHostname failures...
        msg = (
            f"ssh config {config_path}: cannot evaluate it for host {host!r}: "
            f"{type(exc).__name__}: {exc}"
        )
        raise ClusterConfigError(msg) from None


# --------------------------------------------------------------------------- resolving


def _paths(values: Any) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, (str, os.PathLike)):
        values = [values]
    return tuple(os.path.expanduser(os.fspath(v)) for v in values)


def _endpoint(
    name: str,
    cfg: dict[str, Any],
    config_path: str | None,
    *,
    user: str | None,
    port: int | None,
    key_filenames: Sequence[str],
    extra_keys: Sequence[str],
    known_hosts: Sequence[str] | None,
) -> Endpoint:
    """The endpoint ``name``: explicit ``user``/``port``/``key_filenames``/``known_hosts``
    win over the config; ``extra_keys`` are tried after the config's IdentityFile."""
    where = f"ssh config {config_path}, host {name!r}"
    if port is None and cfg.get("port") is not None:
        try:
            port = int(cfg["port"])
        except ValueError:
            msg = f"{where}: Port {cfg['port']!r} is not a number"
            raise ClusterConfigError(msg) from None
    identities_only = str(cfg.get("identitiesonly", "no")).lower() == "yes"
    connect_timeout = None
    if cfg.get("connecttimeout") not in (None, "", "none"):
        try:
            connect_timeout = float(cfg["connecttimeout"])
        except ValueError:
            msg = f"{where}: ConnectTimeout {cfg['connecttimeout']!r} is not a number of seconds"
            raise ClusterConfigError(msg) from None
        connect_timeout = connect_timeout if connect_timeout > 0 else None
    control_path = str(cfg.get("controlpath") or "") or None
    keys = tuple(key_filenames)
    if not keys:
        # as ssh does: IdentityFile entries that do not exist are skipped
        configured = [os.path.expanduser(k) for k in cfg.get("identityfile") or ()]
        keys = tuple(k for k in configured if os.path.isfile(k))
        keys += tuple(k for k in extra_keys if k not in keys)
    default_kh = known_hosts is None
    if known_hosts is None:
        user_files = str(cfg.get("userknownhostsfile") or "").split()
        global_files = str(cfg.get("globalknownhostsfile") or "").split()
        if user_files or global_files:
            default_kh = False
        known_hosts = [
            *(user_files or DEFAULT_KNOWN_HOSTS[:1]),
            *(global_files or DEFAULT_KNOWN_HOSTS[1:]),
        ]
    return Endpoint(
        name=name,
        hostname=str(cfg.get("hostname") or name),
        port=port or 22,
        username=user or cfg.get("user") or getpass.getuser(),
        key_filenames=keys,
        identities_only=identities_only,
        known_hosts=tuple(os.path.expanduser(p) for p in known_hosts),
        default_known_hosts=default_kh,
        host_key_alias=cfg.get("hostkeyalias") or None,
        strict_host_key_checking=cfg.get("stricthostkeychecking"),
        connect_timeout=connect_timeout,
        control_path=None if (control_path or "").lower() == "none" else control_path,
        gssapi=str(cfg.get("gssapiauthentication", "no")).lower() == "yes",
    )


def resolve(
    hostname: str,
    *,
    ssh_config: str | os.PathLike[str] | bool | None = DEFAULT_SSH_CONFIG,
    port: int | None = None,
    username: str | None = None,
    key_filename: Any = None,
    known_hosts: Any = None,
) -> Route:
    """The route to ``hostname`` (a Host alias or a host name): explicit options win over
    the ssh config for the login node."""
    config, path = load_config(ssh_config)
    keys = _paths(key_filename)
    kh = list(_paths(known_hosts)) if known_hosts is not None else None

    def route_to(
        name: str, user: str | None, port: int | None, depth: int, target: bool
    ) -> tuple[list[Endpoint], str | None]:
        if depth > _MAX_DEPTH:
            msg = (
                f"ssh config {path}: ProxyJump nested more than {_MAX_DEPTH} deep at "
                f"{name!r} (a loop?)"
            )
            raise ClusterConfigError(msg)
        cfg = _lookup(config, name, path)
        ep = _endpoint(
            name,
            cfg,
            path,
            user=user,
            port=port,
            key_filenames=keys if target else (),
            extra_keys=() if target else keys,
            known_hosts=kh,
        )
        jump = cfg.get("proxyjump")
        command = cfg.get("proxycommand")
        jumps = parse_jumps(jump) if jump else []
        if jumps and command:
            msg = (
                f"ssh config {path}: host {name!r} has both ProxyJump and ProxyCommand; "
                "keep one (ssh itself uses whichever comes first in the file)"
            )
            raise ClusterConfigError(msg)
        if jumps:
            (u0, h0, p0), rest = jumps[0], jumps[1:]
            chain, proxy = route_to(h0, u0, p0, depth + 1, False)
            for u, h, p in rest:  # like `ssh -J`: their own ProxyJump does not apply
                cfg_h = _lookup(config, h, path)
                chain.append(
                    _endpoint(
                        h,
                        cfg_h,
                        path,
                        user=u,
                        port=p,
                        key_filenames=(),
                        extra_keys=keys,
                        known_hosts=kh,
                    )
                )
            return [*chain, ep], proxy
        return [ep], command or None

    hops, proxy = route_to(hostname, username, port, 0, True)
    return Route(target=hops[-1], jumps=tuple(hops[:-1]), proxy_command=proxy, config_path=path)


def proxy_socket(command: str) -> paramiko.ProxyCommand:
    """A ``ProxyCommand`` run like ssh runs it: ``exec`` by ``/bin/sh -c`` (paramiko alone
    would split it with shlex and run it without a shell). Unlike paramiko's, its end of
    output is an EOF to the transport (not a busy loop), closing it reaps the process,
    and its stderr is kept (``stderr_tail()``) for error messages."""
    import select
    import subprocess
    import tempfile
    import time

    import paramiko

    class _Proxy(paramiko.ProxyCommand):
        def __init__(self, command: str) -> None:  # no super().__init__: it would start it
            self.cmd = ["/bin/sh", "-c", "exec " + command]
            self.stderr = tempfile.TemporaryFile()
            self.process = subprocess.Popen(
                self.cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                bufsize=0,
                start_new_session=True,  # a Ctrl-C meant for us is not its to get
            )
            self.timeout: float | None = None
            self.said = ""  # the end of its stderr, kept when it is closed

        def recv(self, size: int) -> bytes:
            assert self.process.stdout is not None
            start = time.monotonic()
            while True:
                wait = None
                if self.timeout is not None:
                    wait = self.timeout - (time.monotonic() - start)
                    if wait <= 0:
                        raise TimeoutError
                ready, _, _ = select.select([self.process.stdout], [], [], wait)
                if ready:
                    return os.read(self.process.stdout.fileno(), size)  # b"": EOF

        def close(self) -> None:
            # EOF on its stdin first: a proxy like `ssh -W` then exits by itself, having
            # said why on stderr if it failed; terminated if it does not
            if self.process.stdin is not None:
                self.process.stdin.close()
            try:
                self.process.wait(timeout=1)
            except subprocess.TimeoutExpired:
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            if self.process.stdout is not None:
                self.process.stdout.close()
            self.stderr_tail()
            self.stderr.close()

        def stderr_tail(self) -> str:
            """The last lines it wrote to stderr, on one line."""
            if not self.stderr.closed:
                self.stderr.seek(0, os.SEEK_END)
                self.stderr.seek(max(0, self.stderr.tell() - 300))
                self.said = " ".join(self.stderr.read().decode(errors="replace").split())
            return self.said

    return _Proxy(command)
