"""A shell on a remote host over SSH (paramiko): one connection, one exec per round trip,
files up as one SFTP transfer and back as one streamed tar. paramiko is imported when a
connection is first made, never at import."""

from __future__ import annotations

import base64
import functools
import getpass
import hashlib
import logging
import os
import posixpath
import secrets
import select
import shlex
import socket
import tarfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

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
from lazyslurm.backends.shell.ssh_config import DEFAULT_SSH_CONFIG, Endpoint, Route, proxy_socket
from lazyslurm.backends.shell.ssh_config import resolve as resolve_route
from lazyslurm.errors import (
    BackendError,
    SSHAuthenticationError,
    SSHConnectionError,
    SSHHostKeyError,
    UntrustedStoreError,
)
from lazyslurm.graph.options import Opt
from lazyslurm.store import untrusted_fix

if TYPE_CHECKING:
    import paramiko

__all__ = ["SSHOptions", "SSHShell"]

log = logging.getLogger("lazyslurm.backends.shell")

_STAGE_PREFIX = ".lazyslurm-stage-"
_SFTP_IDLE_TIMEOUT_S = 120.0  # longest wait for one SFTP reply before giving up

_Path = str | os.PathLike[str]


class SSHOptions(TypedDict, total=False):
    """Options of the ``ssh`` backend: keyword arguments of :class:`SSHShell`."""

    hostname: Annotated[str, Opt("login node, or a Host alias of ssh_config (required)")]
    port: Annotated[int, Opt("SSH port (default: ssh_config's, else 22)", positive=True)]
    username: Annotated[str, Opt("user on the cluster (default: ssh_config's, else you)")]
    key_filename: Annotated[
        _Path | Sequence[_Path], Opt("private key file(s), tried before the agent")
    ]
    known_hosts: Annotated[
        _Path | Sequence[_Path],
        Opt("known_hosts file(s) (default: ssh_config's, else ~/.ssh/known_hosts)"),
    ]
    ssh_config: Annotated[
        _Path | Literal[False] | None,
        Opt("OpenSSH client config read for hostname (false: none)", default=DEFAULT_SSH_CONFIG),
    ]
    allow_unknown_hosts: Annotated[
        bool, Opt("trust an unknown host key (this session)", default=False)
    ]
    connect_timeout_s: Annotated[float, Opt("connection timeout", default=10, positive=True)]
    keepalive_s: Annotated[float, Opt("keepalive interval (0: off)", default=30)]


class SSHShell:
    """Runs scripts and moves files on a remote host over one paramiko connection.

    - **ssh config**: ``hostname`` may be a ``Host`` alias of the OpenSSH client config
      ``ssh_config`` (default ``~/.ssh/config``; ``None``/``False``: none). ``HostName``,
      ``User``, ``Port``, ``IdentityFile``, ``IdentitiesOnly``, ``ProxyJump`` (a chain
      too; each jump host's own block applies), ``ProxyCommand``, ``UserKnownHostsFile``,
      ``GlobalKnownHostsFile``, ``HostKeyAlias`` and ``Include`` are honoured, other
      keywords ignored (see :mod:`lazyslurm.backends.shell.ssh_config`). Explicit
      arguments win over the file. Through a jump host the connection is one SSH
      connection per jump host, each carrying the next one in a ``direct-tcpip`` channel.
    - **Host keys** of the login node *and of every jump host* are checked against
      ``known_hosts`` (a path or a list of paths; by default the config's
      ``UserKnownHostsFile``, else ``~/.ssh/known_hosts``, and ``/etc/ssh/ssh_known_hosts``).
      An unknown host raises :class:`~lazyslurm.errors.SSHHostKeyError` saying how to
      trust it; a changed key always does. ``StrictHostKeyChecking no`` in the config never
      weakens this. ``allow_unknown_hosts=True`` trusts an unknown key for the life of
      this object only (it is never written to a file); after the first connection the
      keys are pinned, so a reconnect to a different key is refused.
    - **Authentication**: ``key_filename`` (a path or list of paths; default: the config's
      ``IdentityFile``) first, then the ssh-agent (``allow_agent``, off with
      ``IdentitiesOnly yes``); the default ``~/.ssh/id_*`` keys are tried only when no key
      file is given.
    - **Errors**: a connection that cannot be made raises
      :class:`~lazyslurm.errors.SSHConnectionError` (a ``ConnectionError``; subclasses
      ``SSHAuthenticationError``, ``SSHHostKeyError``) naming the profile, the host as
      written and as resolved, the jump hosts and the cause, in one line. paramiko's own
      exception is chained only when the ``lazyslurm`` logger is at DEBUG.
    - **Connection**: opened on first use, kept alive every ``keepalive_s`` seconds, and
      re-opened transparently if it dropped between actions (or if opening a channel
      fails once). A command that was running when the connection died is never retried:
      that raises :class:`~lazyslurm.errors.BackendError`.
    - **Scripts** are sent on the command's stdin (ahead of ``input``) and run by the
      remote ``bash`` whatever the login shell is, with ``env`` exported first; there is no
      command-line length limit. Output printed by the login shell's startup files is
      discarded. Commands run without a terminal, so when ``timeout_s`` passes the
      channel is closed but the remote process is not signalled: keep remote scripts
      bounded (or wrap them in ``timeout``). Several threads may run commands at once
      over the one connection.
    - **Latency**: the socket has ``TCP_NODELAY`` set. Without it, Nagle's algorithm and
      delayed ACKs cost ~40 ms per exec (measured on loopback: 50 ms -> 5 ms).
    - **Files** go up as one tar.gz over SFTP into a private (0700) staging directory in
      the remote home, unpacked by the exec that then runs ``then``; they come back as a
      tar streamed by one exec. ``round_trips`` counts each exec and each SFTP upload;
      ``connects`` counts connections opened.
    """

    local_files = False

    def __init__(
        self,
        hostname: str,
        port: int | None = None,
        username: str | None = None,
        key_filename: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        known_hosts: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        allow_unknown_hosts: bool = False,
        connect_timeout_s: float = 10,
        keepalive_s: float = 30,
        env: Mapping[str, str] | None = None,
        *,
        ssh_config: str | os.PathLike[str] | bool | None = DEFAULT_SSH_CONFIG,
        allow_agent: bool = True,
        profile: str | None = None,
    ) -> None:
        if not hostname:
            msg = "hostname must be a non-empty string"
            raise ValueError(msg)
        self.hostname = hostname  # as given: a host name or a Host alias of ssh_config
        self.port = None if port is None else int(port)  # explicit values (None: config's)
        self.username = username or None
        self.key_filenames = _paths(key_filename)
        self.known_hosts = None if known_hosts is None else _paths(known_hosts)
        self.ssh_config = ssh_config
        self.profile = profile or None  # the cluster profile this shell serves, for errors
        self._route: Route | None = None  # resolved at each connect (the config may change)
        self.allow_unknown_hosts = bool(allow_unknown_hosts)
        self.allow_agent = bool(allow_agent)
        self.connect_timeout_s = float(connect_timeout_s)
        self.keepalive_s = float(keepalive_s)
        self.env = check_env(env)
        self.round_trips = 0
        self.connects = 0
        self._exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env.items())
        self._mark = f"lazyslurm{secrets.token_hex(8)}mark"
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_home: str | None = None
        self._home: str | None = None
        self._jumps: list[paramiko.SSHClient] = []  # clients of the jump hosts, in order
        self._pinned: dict[str, paramiko.PKey] = {}  # known_hosts name -> key first seen

    # -- identity, context manager
    @property
    def _where(self) -> str:
        route = self._route
        if route is not None:
            return route.target.describe()
        user = self.username or getpass.getuser()
        return f"{user}@{self.hostname}:{self.port or 22}"

    def __repr__(self) -> str:
        return f"SSHShell({self._where})"

    def __enter__(self) -> SSHShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        stage = self._upload(tar_gz(items)) if items else None
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
        lines[-1] += " ) 2>&1 ); __lz_rc=$?"
        if stage is not None:
            lines.append(f"rm -rf -- {qstage}")
            # leftovers of uploads whose unpacking never ran (connection lost in between)
            base = shlex.quote(posixpath.dirname(stage))
            lines.append(
                f"find {base} -maxdepth 1 -name '{_STAGE_PREFIX}*' -mmin +1440 "
                "-exec rm -rf -- {} + 2>/dev/null"
            )
        lines += [
            'if [ "$__lz_rc" -ne 0 ]; then',
            f"""  printf '%s\\n%s\\n' {fail} "$__lz_err" >&2; exit 1""",
            "fi",
            "unset __lz_err __lz_rc __lz_me __lz_s",
            then or "",
        ]
        res = self.run("\n".join(lines))
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

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

    # -- connection
    def _drop_connection(self) -> None:
        sftp, client, jumps = self._sftp, self._client, self._jumps
        self._sftp = self._client = None
        self._jumps = []
        for thing in (sftp, client, *reversed(jumps)):  # the login node, then the jumps
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a dead connection: nothing left to release
                    log.debug("error closing %r", thing, exc_info=True)

    def _transport(self) -> paramiko.Transport:
        """The live transport, connecting (again) if there is none."""
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if transport is None or not transport.is_active():
                self._drop_connection()
                client, self._jumps = self._connect()
                self._client = client
                transport = client.get_transport()
                assert transport is not None
            return transport

    def resolve(self) -> Route:
        """Where a connection goes: the login node and the jump hosts, as ``ssh_config``
        and the explicit arguments say (read again at each connect)."""
        self._route = resolve_route(
            self.hostname,
            ssh_config=self.ssh_config,
            port=self.port,
            username=self.username,
            key_filename=self.key_filenames or None,
            known_hosts=self.known_hosts,
        )
        return self._route

    def _connect(self) -> tuple[paramiko.SSHClient, list[paramiko.SSHClient]]:
        """Connect through the jump hosts (if any) to the login node: each jump host's
        connection carries the next one in a ``direct-tcpip`` channel. Returns the login
        node's client and the jump hosts' clients."""
        import paramiko

        t0 = time.perf_counter()
        route = self.resolve()
        hops = route.hops
        t = self.connect_timeout_s
        clients: list[paramiko.SSHClient] = []
        sock: Any = None
        proxy = None
        hop = hops[0]
        try:
            if route.proxy_command:
                sock = proxy = proxy_socket(route.proxy_command)
                sock.settimeout(t)
            else:
                sock = socket.create_connection((hop.hostname, hop.port), timeout=t)
                # without this, Nagle's algorithm and delayed ACKs add ~40 ms to every exec
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i, hop in enumerate(hops):
                client = self._login(hop, sock)
                clients.append(client)
                sock = None  # owned by the client now
                transport = client.get_transport()
                assert transport is not None
                if self.keepalive_s > 0:
                    transport.set_keepalive(max(1, round(self.keepalive_s)))
                if i + 1 < len(hops):
                    nxt = hops[i + 1]
                    try:
                        sock = transport.open_channel(
                            "direct-tcpip", (nxt.hostname, nxt.port), ("127.0.0.1", 0), timeout=t
                        )
                    except paramiko.ChannelException as exc:
                        said = getattr(transport, "open_failure", "")  # the server's words
                        raise _JumpRefused(nxt, said or exc.text or f"code {exc.code}") from None
        except BaseException as exc:
            for thing in (sock, *reversed(clients)):
                if thing is not None:
                    try:
                        thing.close()
                    except Exception:  # half-open: nothing left to release
                        log.debug("error closing %r", thing, exc_info=True)
            if not isinstance(exc, Exception):
                raise
            said = proxy.stderr_tail() if proxy is not None and hop is hops[0] else ""
            error = self._connect_error(exc, route, hop, said)
            if log.isEnabledFor(logging.DEBUG):  # paramiko's exception, for debugging
                raise error from exc
            raise error.with_traceback(None) from None
        for client, h in zip(clients, hops, strict=True):
            transport = client.get_transport()
            assert transport is not None
            self._pinned.setdefault(h.key_name, transport.get_remote_server_key())
        self.connects += 1
        log.debug("connected to %s in %.3f s", route.describe(), time.perf_counter() - t0)
        return clients[-1], clients[:-1]

    def _login(self, hop: Endpoint, sock: Any) -> paramiko.SSHClient:
        """A client logged in to ``hop`` over ``sock`` (a socket, channel or ProxyCommand),
        its host key checked against ``hop.known_hosts`` (and the key pinned earlier)."""
        import paramiko

        client = paramiko.SSHClient()
        missing_files = []
        for path in hop.known_hosts:
            try:
                client.load_system_host_keys(path)  # read-only: never rewritten by paramiko
            except FileNotFoundError:
                missing_files.append(path)
            except (OSError, paramiko.SSHException) as exc:
                client.close()
                msg = f"cannot read known_hosts file {path}: {exc}"
                raise BackendError(msg) from None
        pinned = self._pinned.get(hop.key_name)
        if pinned is not None:  # the key seen on the first connection of this object
            client.get_host_keys().add(hop.key_name, pinned.get_name(), pinned)
        client.set_missing_host_key_policy(_missing_host_key_policy(self, hop, missing_files))
        t = self.connect_timeout_s
        # the name paramiko looks the host key up by: the socket is given, so hostname and
        # port serve only that (HostKeyAlias: the alias alone, as ssh does)
        name, port = (hop.host_key_alias, 22) if hop.host_key_alias else (hop.hostname, hop.port)
        try:
            client.connect(
                name,
                port=port,
                username=hop.username,
                key_filename=list(hop.key_filenames) or None,
                allow_agent=self.allow_agent and not hop.identities_only,
                look_for_keys=not hop.key_filenames,
                timeout=t,
                banner_timeout=t,
                auth_timeout=t,
                sock=sock,
                transport_factory=_quiet_transport(),
            )
        except BaseException:
            client.close()
            raise
        return client

    def _connect_error(
        self, exc: Exception, route: Route, hop: Endpoint, proxy_said: str = ""
    ) -> BackendError:
        """The error to raise for a failed connect at ``hop`` (never showing key material):
        an SSHConnectionError naming the profile, the route and the cause in one line."""
        import paramiko

        reason, cls = _reason(exc, hop, self, route)
        if proxy_said:
            reason += f"; the ProxyCommand said: {proxy_said}"
        if isinstance(exc, BackendError) and not isinstance(exc, SSHConnectionError):
            return exc  # an unreadable known_hosts file: a local problem, said as is
        at = "" if hop is route.target else f"jump host {hop.name}: "
        profile = f"cluster profile {self.profile!r}: " if self.profile else ""
        msg = f"{profile}cannot connect to {route.describe()}: {at}{reason}"
        if isinstance(exc, paramiko.SSHException) and not isinstance(
            exc, (paramiko.AuthenticationException, paramiko.BadHostKeyException)
        ):
            log.debug("SSH connection failed", exc_info=exc)
        return cls(
            msg,
            host=self.hostname,
            address=route.target.address,
            jumps=tuple(j.address for j in route.jumps),
            profile=self.profile or "",
            failed_at=(exc.hop if isinstance(exc, _JumpRefused) else hop).address,
            reason=reason,
        )

    def _open_channel(self) -> paramiko.Channel:
        """A new session channel; on failure, reconnect once and try again."""
        import paramiko

        for attempt in (1, 2):
            transport = self._transport()
            try:
                return transport.open_session(timeout=self.connect_timeout_s)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 2:
                    msg = f"cannot open an SSH channel to {self._where}: {_why(exc)}"
                    raise BackendError(msg) from _cause(exc)
                log.debug("channel open failed (%s); reconnecting", exc)
                with self._lock:
                    self._drop_connection()
        raise AssertionError("unreachable")

    # -- commands
    def _start(self, command: str) -> paramiko.Channel:
        """A channel on which the server started ``command``. A connection that ends
        before the server confirmed the start (closed by the server: ClientAliveInterval,
        a laptop's sleep) is reopened and the command started once more: it cannot have
        run, since its script travels on stdin, sent only after that confirmation."""
        for attempt in (1, 2):
            chan = self._open_channel()
            with self._lock:
                self.round_trips += 1
            try:
                chan.exec_command(command)
                return chan
            except Exception as exc:
                transport = chan.get_transport()
                lost = chan.closed or transport is None or not transport.is_active()
                chan.close()
                if attempt == 2 or not lost:
                    msg = f"cannot start a command on {self._where}: {_why(exc)}"
                    raise BackendError(msg) from _cause(exc)
                log.debug("connection lost before the command started (%s); reconnecting", exc)
                with self._lock:
                    self._drop_connection()
        raise AssertionError("unreachable")

    def _exec(
        self, script: str, input: bytes | None, timeout_s: float | None
    ) -> tuple[int, bytes, bytes]:
        """Run ``script`` with bash; return (exit status, stdout, stderr) as bytes.

        The command line is fixed and short (``bash -c '...'``, valid in any login shell);
        the script itself travels on stdin ahead of ``input``, read with ``head -c``.
        Both output streams start with a marker, and what comes before it (printed by the
        login shell's startup files) is dropped.
        """
        body = (self._exports + script).encode()
        m = self._mark
        inner = f'printf %s {m}; printf %s {m} >&2; eval "$(head -c {len(body)})"'
        command = "bash -c " + shlex.quote(inner)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        chan = self._start(command)
        try:
            writer = _Writer(chan, body + (input or b""))
            writer.start()
            out, err = bytearray(), bytearray()
            while True:
                got = False
                while chan.recv_ready():
                    out += chan.recv(1 << 16)
                    got = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(1 << 16)
                    got = True
                if got:
                    continue
                if chan.eof_received or chan.closed:
                    break
                select.select([chan], [], [], _remaining(deadline, timeout_s, self._where))
            while chan.recv_ready():  # arrived between the checks above and the EOF
                out += chan.recv(1 << 16)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
            if not chan.status_event.wait(_remaining(deadline, timeout_s, self._where)):
                _remaining(deadline, timeout_s, self._where, final=True)
            code = chan.recv_exit_status()
            transport = chan.get_transport()
            if code == -1 and (transport is None or not transport.is_active()):
                msg = (
                    f"the connection to {self._where} was lost while a command ran; "
                    "it may or may not have completed"
                )
                raise BackendError(msg)
            writer.join(1)
        finally:
            chan.close()
        return code, _after_mark(bytes(out), m), _after_mark(bytes(err), m)

    # -- files
    def _sftp_client(self) -> paramiko.SFTPClient:
        import paramiko

        with self._lock:
            transport = self._transport()
            sftp = self._sftp
            if sftp is not None and not sftp.get_channel().closed:
                return sftp
            for attempt in (1, 2):
                try:
                    sftp = paramiko.SFTPClient.from_transport(transport)
                    if sftp is None:
                        raise paramiko.SSHException("the server refused the SFTP subsystem")
                    break
                except (paramiko.SSHException, EOFError, OSError) as exc:
                    if attempt == 2:
                        msg = f"cannot open SFTP to {self._where}: {exc}"
                        raise BackendError(msg) from _cause(exc)
                    self._drop_connection()
                    transport = self._transport()
            sftp.get_channel().settimeout(_SFTP_IDLE_TIMEOUT_S)
            self._sftp = sftp
            return sftp

    def _upload(self, blob: bytes) -> str:
        """Upload ``blob`` into a new private staging directory; return its absolute path.

        One SFTP transfer (counted as one round trip). An upload is idempotent, so a
        connection lost during it is retried once on a new connection.
        """
        import paramiko

        for attempt in (1, 2):
            sftp = self._sftp_client()
            with self._lock:
                self.round_trips += 1
            stage = None
            try:
                if self._sftp_home is None:
                    self._sftp_home = sftp.normalize(".")
                stage = posixpath.join(self._sftp_home, _STAGE_PREFIX + secrets.token_hex(8))
                sftp.mkdir(stage, mode=0o700)
                with sftp.open(f"{stage}/files.tar.gz", "wb") as fh:
                    fh.set_pipelined(True)
                    fh.write(blob)
                return stage
            except (paramiko.SSHException, EOFError, OSError) as exc:
                self._remove_stage(sftp, stage)
                transport = sftp.get_channel().get_transport()
                lost = not transport.is_active() or sftp.get_channel().closed
                if attempt == 2 or not lost:
                    msg = f"uploading files to {self._where} over SFTP failed: {exc}"
                    raise BackendError(msg) from _cause(exc)
                log.debug("upload failed (%s); reconnecting", exc)
                with self._lock:
                    self._drop_connection()
        raise AssertionError("unreachable")

    @staticmethod
    def _remove_stage(sftp: paramiko.SFTPClient, stage: str | None) -> None:
        if stage is None:
            return
        for op, path in ((sftp.remove, f"{stage}/files.tar.gz"), (sftp.rmdir, stage)):
            try:
                op(path)
            except Exception:  # best effort: old stages are swept by the next put_files
                log.debug("could not remove %s", path, exc_info=True)


class _Writer(threading.Thread):
    """Feeds a channel's stdin, then sends EOF (in a thread, so output is read meanwhile)."""

    def __init__(self, chan: paramiko.Channel, data: bytes) -> None:
        super().__init__(daemon=True, name="lazyslurm-ssh-stdin")
        self.chan = chan
        self.data = data
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            if self.data:
                self.chan.sendall(self.data)
            self.chan.shutdown_write()
        except Exception as exc:  # the command exited without reading all of its input
            self.error = exc


def _remaining(
    deadline: float | None, timeout_s: float | None, where: str, final: bool = False
) -> float | None:
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0 or final:
        msg = f"remote command on {where} timed out after {timeout_s} s"
        raise BackendError(msg)
    return left


def _cause(exc: BaseException) -> BaseException | None:
    """paramiko's exception to chain to ours: only when the ``lazyslurm`` logger is at
    DEBUG (else users would see paramiko's traceback under our one-line message)."""
    return exc if log.isEnabledFor(logging.DEBUG) else None


def _why(exc: BaseException) -> str:
    """Why a channel operation failed, never empty (paramiko often raises bare errors).

    >>> _why(EOFError()), _why(OSError("Socket is closed"))
    ('EOFError: the server closed the connection (sshd stopped, restarted or killed?)', \
'OSError: Socket is closed')
    """
    text = str(exc).strip()
    if not text:
        text = "the server closed the connection (sshd stopped, restarted or killed?)"
    return f"{type(exc).__name__}: {text}"


def _after_mark(data: bytes, mark: str) -> bytes:
    i = data.find(mark.encode())
    return data if i < 0 else data[i + len(mark) :]


def _fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _paths(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        value = [value]
    return [os.path.expanduser(os.fspath(v)) for v in value]


_PARAMIKO_LOG = "lazyslurm.backends.shell.paramiko"


@functools.cache
def _quiet_transport() -> type[paramiko.Transport]:
    """paramiko's Transport, logging to ``lazyslurm.backends.shell.paramiko`` at DEBUG only.

    paramiko logs failures at ERROR, with tracebacks, which Python prints to stderr when
    logging is not configured: users see our one-line error instead, and paramiko's text
    only with the ``lazyslurm`` logger at DEBUG. Also keeps the server's reason for a
    refused ``direct-tcpip`` channel (paramiko only logs it).
    """
    import paramiko

    class _Transport(paramiko.Transport):
        open_failure = ""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.set_log_channel(_PARAMIKO_LOG)  # channels and SFTP log below it

        def _log(self, level: int, msg: Any, *args: Any) -> None:
            if isinstance(msg, str) and "open FAILED: " in msg:
                self.open_failure = msg.split("open FAILED: ", 1)[1]
            if isinstance(msg, list):  # paramiko's traceback lines
                msg = "\n".join(str(m) for m in msg)
            self.logger.log(min(level, logging.DEBUG), msg, *args)

    return _Transport


class _JumpRefused(Exception):
    """A jump host could not open the ``direct-tcpip`` channel to the next host."""

    def __init__(self, hop: Endpoint, text: str) -> None:
        super().__init__(text)
        self.hop = hop
        self.text = text


def _reason(
    exc: BaseException, hop: Endpoint, shell: SSHShell, route: Route
) -> tuple[str, type[SSHConnectionError]]:
    """Why connecting to ``hop`` failed, in one line, and the error class to raise."""
    import paramiko

    if isinstance(exc, SSHConnectionError):  # raised by our host key policy
        return str(exc), type(exc)
    if isinstance(exc, _JumpRefused):
        return (
            f"it could not open a connection to {exc.hop.address}: {exc.text} (wrong "
            "HostName or Port, host down, or forwarding not allowed there: AllowTcpForwarding)",
            SSHConnectionError,
        )
    if isinstance(exc, paramiko.BadHostKeyException):
        return _changed_key_message(hop, exc.key, exc.expected_key), SSHHostKeyError
    if isinstance(exc, paramiko.PasswordRequiredException):
        return (
            f"cannot log in as {hop.username}: the key file is encrypted with a passphrase; "
            "load it into ssh-agent (ssh-add) and leave key_filename unset",
            SSHAuthenticationError,
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return _auth_failed_message(hop, shell), SSHAuthenticationError
    if isinstance(exc, paramiko.ProxyCommandFailure):
        return f"ProxyCommand failed: {' '.join(str(exc).split())}", SSHConnectionError
    if isinstance(exc, paramiko.SSHException):
        text = " ".join(str(exc).split()) or type(exc).__name__
        if "banner" in text.lower() or "closed" in text.lower():
            proxied = route.proxy_command and hop is route.hops[0]
            what = "through the ProxyCommand" if proxied else f"at {hop.address}"
            text = (
                f"no SSH server answered {what} (not an SSH port, or the server or proxy "
                f"closed the connection): {text}"
            )
        return text, SSHConnectionError
    if isinstance(exc, FileNotFoundError) and exc.filename:  # a key file
        return f"key file not found: {exc.filename}", SSHConnectionError
    if isinstance(exc, socket.gaierror):
        hint = ""
        if hop.name == hop.hostname:
            hint = (
                f"; it is not a Host alias of {route.config_path} either"
                if route.config_path
                else "; no ssh config was read (ssh_config=)"
            )
        return (
            f"host name {hop.hostname!r} not found (DNS: {exc.strerror or exc}){hint}",
            SSHConnectionError,
        )
    if isinstance(exc, ConnectionRefusedError):
        return (
            f"connection refused by {hop.address} (no SSH server listens on port {hop.port}: "
            "wrong port, or sshd is down)",
            SSHConnectionError,
        )
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return (
            f"no answer from {hop.address} within {shell.connect_timeout_s:g} s "
            "(connect_timeout_s): host down, firewalled, or reachable only through a jump "
            "host (ProxyJump)?",
            SSHConnectionError,
        )
    if isinstance(exc, (OSError, EOFError)):
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if isinstance(exc, EOFError):
            why = "the server closed the connection during login"
        return f"{why} ({hop.address})", SSHConnectionError
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}", SSHConnectionError


def _ssh_command(shell: SSHShell, route: Route | None) -> str:
    """``ssh [-F CONFIG] HOST`` as the user would type it to log in once."""
    f = ""
    if route is not None and route.config_path is not None:
        if route.config_path != os.path.expanduser(DEFAULT_SSH_CONFIG):
            f = f"-F {shlex.quote(route.config_path)} "
    return f"ssh {f}{shlex.quote(shell.hostname)}"


def _unknown_host_message(
    shell: SSHShell, hop: Endpoint, key: paramiko.PKey, missing_files: Sequence[str]
) -> str:
    route = shell._route
    files = [f for f in hop.known_hosts if f not in missing_files]
    where = ", ".join(files) if files else "no known_hosts file (none of them exist)"
    target = "~/.ssh/known_hosts" if hop.default_known_hosts else shlex.quote(hop.known_hosts[0])
    direct = route is None or (hop is route.hops[0] and not route.proxy_command)
    if direct and not hop.host_key_alias:
        port = f"-p {hop.port} " if hop.port != 22 else ""
        host = shlex.quote(hop.hostname)
        how = (
            f"`ssh-keyscan {port}{host} >> {target}` (or log in once with "
            f"`{_ssh_command(shell, route)}`)"
        )
    else:  # behind a jump host or a ProxyCommand: ssh-keyscan cannot reach it
        how = f"{target} by logging in once with `{_ssh_command(shell, route)}`"
    strict = (hop.strict_host_key_checking or "").lower()
    ignored = (
        f" (StrictHostKeyChecking {strict} in the ssh config is not honoured: lazyslurm "
        "trusts an unknown key only when told so with allow_unknown_hosts=True)"
        if strict in ("no", "off", "accept-new")
        else ""
    )
    return (
        f"SSH host key of {hop.key_name} is unknown (checked {where}){ignored}; the server "
        f"offered a {key.get_name()} key with fingerprint {_fingerprint(key)}. To trust it, "
        f"first check that fingerprint with the cluster's admins, then add it to known_hosts, "
        f"e.g. {how}, or pass known_hosts=... naming a file that has it, or pass "
        "allow_unknown_hosts=True to trust whatever key the server presents (for this "
        "session only; not recommended)"
    )


def _changed_key_message(hop: Endpoint, got: paramiko.PKey, expected: paramiko.PKey) -> str:
    return (
        f"SSH host key of {hop.key_name} does NOT match the one in known_hosts "
        f"(expected {expected.get_name()} {_fingerprint(expected)}, got {got.get_name()} "
        f"{_fingerprint(got)}). Someone may be intercepting the connection, or the host "
        "was reinstalled. If the change is expected, remove the old entry with "
        f"`ssh-keygen -R {shlex.quote(hop.key_name)}` and add the new key"
    )


def _auth_failed_message(hop: Endpoint, shell: SSHShell) -> str:
    tried = []
    if hop.key_filenames:
        tried.append("key file " + ", ".join(hop.key_filenames))
    if shell.allow_agent and not hop.identities_only:
        tried.append("ssh-agent")
    if not hop.key_filenames:
        tried.append("default keys in ~/.ssh")
    return (
        f"SSH authentication failed as {hop.username} on {hop.address} (tried "
        f"{' then '.join(tried)}); check username= and key_filename= (or User and "
        "IdentityFile in the ssh config), and that the public key is in the remote "
        "~/.ssh/authorized_keys"
    )


def _missing_host_key_policy(shell: SSHShell, hop: Endpoint, missing_files: Sequence[str]) -> Any:
    """Reject unknown host keys with a helpful message, or accept them in memory if allowed."""
    import paramiko

    class _Policy(paramiko.MissingHostKeyPolicy):
        def missing_host_key(
            self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
        ) -> None:
            if shell.allow_unknown_hosts:
                log.warning(
                    "trusting unknown SSH host key %s %s of %s (allow_unknown_hosts=True)",
                    key.get_name(),
                    _fingerprint(key),
                    hostname,
                )
                client.get_host_keys().add(hostname, key.get_name(), key)
                return
            raise SSHHostKeyError(_unknown_host_message(shell, hop, key, missing_files))

    return _Policy()
