"""A shell on a remote host over SSH (paramiko): one connection, one exec per round trip,
files up as one SFTP transfer and back as one streamed tar. paramiko is imported when a
connection is first made, never at import."""

from __future__ import annotations

import base64
import copy
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
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lazyslurm.backends.shell.login import LOGINS, Prompter, SecondFactorRefused
from lazyslurm.backends.shell.login import login as second_factor_login
from lazyslurm.backends.shell.remote import STAGE_PREFIX, RemoteShell, after_mark
from lazyslurm.backends.shell.ssh_config import DEFAULT_SSH_CONFIG, Endpoint, Route, proxy_socket
from lazyslurm.backends.shell.ssh_config import resolve as resolve_route
from lazyslurm.errors import (
    BackendError,
    SSHAuthenticationError,
    SSHConnectionError,
    SSHHostKeyError,
)

if TYPE_CHECKING:
    import paramiko

__all__ = ["SSHShell"]

log = logging.getLogger("lazyslurm.backends.shell")

_SFTP_IDLE_TIMEOUT_S = 120.0  # longest wait for one SFTP reply before giving up
_DEFAULT_CONNECT_TIMEOUT_S = 10.0  # without connect_timeout_s or ConnectTimeout


class SSHShell(RemoteShell):
    """Runs scripts and moves files on a remote host over one paramiko connection.

    - **ssh config**: ``hostname`` may be a ``Host`` alias of the OpenSSH client config
      ``ssh_config`` (default ``~/.ssh/config``; ``None``/``False``: none). ``HostName``,
      ``User``, ``Port``, ``IdentityFile``, ``IdentitiesOnly``, ``ProxyJump`` (a chain
      too; each jump host's own block applies), ``ProxyCommand``, ``UserKnownHostsFile``,
      ``GlobalKnownHostsFile``, ``HostKeyAlias``, ``ConnectTimeout`` and ``Include`` are
      honoured, other keywords ignored (see :mod:`lazyslurm.backends.shell.ssh_config`).
      Explicit arguments win over the file. Through a jump host the connection is one SSH
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
      file is given. A server that then asks for more (``AuthenticationMethods
      publickey,keyboard-interactive``), or that takes keyboard-interactive only, gets its
      prompts answered by ``otp``, ``otp_command``, ``$LAZYSLURM_OTP_COMMAND`` or the person
      at the terminal or notebook, once per process: see
      :mod:`lazyslurm.backends.shell.login`. ``prompts`` counts the questions this shell's
      logins asked. No GSSAPI/Kerberos (paramiko >= 4 has none): use an OpenSSH master.
    - **Errors**: a connection that cannot be made raises
      :class:`~lazyslurm.errors.SSHConnectionError` (a ``ConnectionError``; subclasses
      ``SSHAuthenticationError``, ``SSHHostKeyError``) naming the profile, the host as
      written and as resolved, the jump hosts and the cause, in one line. paramiko's own
      exception is chained only when the ``lazyslurm`` logger is at DEBUG.
    - **Connection**: opened on first use (within ``connect_timeout_s``, else the config's
      ``ConnectTimeout``, else 10 s, for the TCP connection, the SSH banner and the key
      exchange each), kept alive every ``keepalive_s`` seconds, and re-opened
      transparently if it dropped between actions (or if opening a channel fails once). A
      command that was running when the connection died is never retried: that raises
      :class:`~lazyslurm.errors.BackendError`. A connection whose login needed a second
      factor is shared by every SSHShell of the process taking the same route (users,
      hosts, ports), and ``close()`` leaves it open (see
      :mod:`~lazyslurm.backends.shell.login`).
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

    def __init__(
        self,
        hostname: str,
        port: int | None = None,
        username: str | None = None,
        key_filename: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        known_hosts: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
        allow_unknown_hosts: bool = False,
        connect_timeout_s: float | None = None,
        keepalive_s: float = 30,
        env: Mapping[str, str] | None = None,
        *,
        ssh_config: str | os.PathLike[str] | bool | None = DEFAULT_SSH_CONFIG,
        allow_agent: bool = True,
        profile: str | None = None,
        otp: Callable[..., str] | None = None,
        otp_command: str | None = None,
    ) -> None:
        if not hostname:
            msg = "hostname must be a non-empty string"
            raise ValueError(msg)
        if otp is not None and not callable(otp):
            msg = f"otp must be a function returning the code, got {type(otp).__name__}"
            raise TypeError(msg)
        super().__init__(env)
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
        # explicit (None: the config's ConnectTimeout, else 10 s: see timeout_for)
        self.connect_timeout_s = None if connect_timeout_s is None else float(connect_timeout_s)
        self.keepalive_s = float(keepalive_s)
        self._otp = otp  # never shown: not in repr, messages or logs
        self._otp_command = otp_command or None
        self.connects = 0
        self.prompts = 0  # second-factor questions asked by this shell's logins
        self._lock = threading.RLock()
        self._client: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._sftp_home: str | None = None
        self._jumps: list[paramiko.SSHClient] = []  # clients of the jump hosts, in order
        self._pinned: dict[str, paramiko.PKey] = {}  # known_hosts name -> key first seen
        self._shared: _Shared | None = None  # the process's second-factor login, if in use
        self._refused: SSHAuthenticationError | None = None  # a refused second factor

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

    def timeout_for(self, hop: Endpoint) -> float:
        """The connect timeout at ``hop``: ``connect_timeout_s``, else its ConnectTimeout,
        else 10 s."""
        if self.connect_timeout_s is not None:
            return self.connect_timeout_s
        return hop.connect_timeout or _DEFAULT_CONNECT_TIMEOUT_S

    @property
    def _timeout(self) -> float:
        route = self._route
        if route is None:
            return self.connect_timeout_s or _DEFAULT_CONNECT_TIMEOUT_S
        return self.timeout_for(route.target)

    def close(self) -> None:
        """Close this shell's channels and connection (a connection shared by the
        process's second-factor login stays open: see :mod:`~.login`)."""
        with self._lock:
            self._drop_connection()
            self._refused = None

    # -- connection
    def _drop_connection(self, broken: bool = False) -> None:
        """Let go of the connection; a shared one is closed only if it is dead or
        ``broken`` (it failed to open a channel)."""
        sftp, client, jumps, shared = self._sftp, self._client, self._jumps, self._shared
        self._sftp = self._client = None
        self._jumps = []
        self._shared = None
        things: list[Any] = [sftp]
        if shared is not None:
            if broken or not shared.alive():
                if LOGINS.discard(shared.key, shared):
                    things.append(shared)
        else:
            things += [client, *reversed(jumps)]  # the login node, then the jumps
        for thing in things:
            if thing is not None:
                try:
                    thing.close()
                except Exception:  # closing a dead connection: nothing left to release
                    log.debug("error closing %r", thing, exc_info=True)

    def _transport(self) -> paramiko.Transport:
        """The live transport, connecting (again) if there is none."""
        with self._lock:
            if self._refused is not None:  # never asked again before close(): no loops
                raise copy.copy(self._refused).with_traceback(None)
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
        """The process's live second-factor login to that route if there is one (and its
        host keys are trusted here), else a new connection (see :meth:`_open`)."""
        route = self.resolve()
        key = _login_key(route)
        with LOGINS.lock(key):
            shared = LOGINS.get(key)
            if shared is not None and not shared.alive():
                if LOGINS.discard(key, shared):
                    shared.close()
                shared = None
            if shared is not None and self._trusts(route, shared):
                log.debug("reusing this process's login to %s", route.describe())
                self._shared = shared
                return shared.client, shared.jumps
            prompters = [
                Prompter(
                    h.describe(),
                    f"{h.username}@{h.address}",
                    otp=self._otp,
                    otp_command=self._otp_command,
                )
                for h in route.hops
            ]
            try:
                client, jumps = self._open(route, prompters)
            finally:
                asked = sum(p.asked for p in prompters)
                self.prompts += asked
            if asked:  # a second factor was given: keep the login for the process
                self._shared = _Shared(key, client, jumps)
                LOGINS.put(key, self._shared)
            return client, jumps

    def _trusts(self, route: Route, shared: _Shared) -> bool:
        """Whether each host key of ``shared`` is one this shell trusts (its known_hosts,
        or pinned): another shell's ``allow_unknown_hosts`` does not carry over."""
        import paramiko

        for client, hop in zip([*shared.jumps, shared.client], route.hops, strict=True):
            transport = client.get_transport()
            if transport is None:
                return False
            key = transport.get_remote_server_key()
            if self._pinned.get(hop.key_name) == key:
                continue
            known = paramiko.HostKeys()
            for path in hop.known_hosts:
                try:
                    known.load(path)
                except (OSError, paramiko.SSHException):
                    continue
            if known.check(hop.key_name, key):
                continue
            return False
        return True

    def _open(
        self, route: Route, prompters: Sequence[Prompter]
    ) -> tuple[paramiko.SSHClient, list[paramiko.SSHClient]]:
        """Connect through the jump hosts (if any) to the login node: each jump host's
        connection carries the next one in a ``direct-tcpip`` channel. Returns the login
        node's client and the jump hosts' clients."""
        import paramiko

        t0 = time.perf_counter()
        hops = route.hops
        clients: list[paramiko.SSHClient] = []
        sock: Any = None
        proxy = None
        hop = hops[0]
        try:
            if route.proxy_command:
                sock = proxy = proxy_socket(route.proxy_command)
                sock.settimeout(self.timeout_for(hop))
            else:
                sock = socket.create_connection(
                    (hop.hostname, hop.port), timeout=self.timeout_for(hop)
                )
                # without this, Nagle's algorithm and delayed ACKs add ~40 ms to every exec
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i, hop in enumerate(hops):
                client = self._login(hop, sock, prompters[i])
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
                            "direct-tcpip",
                            (nxt.hostname, nxt.port),
                            ("127.0.0.1", 0),
                            timeout=self.timeout_for(nxt),
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
            if isinstance(exc, SecondFactorRefused) and isinstance(error, SSHAuthenticationError):
                self._refused = error  # never asked again before close(): no prompt loops
            if log.isEnabledFor(logging.DEBUG) and not isinstance(exc, SecondFactorRefused):
                raise error from exc  # paramiko's exception, for debugging
            raise error.with_traceback(None) from None
        for client, h in zip(clients, hops, strict=True):
            transport = client.get_transport()
            assert transport is not None
            self._pinned.setdefault(h.key_name, transport.get_remote_server_key())
        self.connects += 1
        log.debug("connected to %s in %.3f s", route.describe(), time.perf_counter() - t0)
        return clients[-1], clients[:-1]

    def _login(self, hop: Endpoint, sock: Any, prompter: Prompter) -> paramiko.SSHClient:
        """A client logged in to ``hop`` over ``sock`` (a socket, channel or ProxyCommand),
        its host key checked against ``hop.known_hosts`` (and the key pinned earlier).
        Keyboard-interactive (or password) prompts are answered by ``prompter``."""
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
        t = self.timeout_for(hop)
        # the name paramiko looks the host key up by: the socket is given, so hostname and
        # port serve only that (HostKeyAlias: the alias alone, as ssh does)
        name, port = (hop.host_key_alias, 22) if hop.host_key_alias else (hop.hostname, hop.port)

        def transport_factory(*args: Any, **kwargs: Any) -> paramiko.Transport:
            transport = _quiet_transport()(*args, **kwargs)
            transport.prompter = prompter  # type: ignore[attr-defined]
            return transport

        try:
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
                    transport_factory=transport_factory,
                )
            except paramiko.SSHException as exc:
                # no key accepted, or none to offer: a server that takes keyboard-interactive
                # alone (a password and a code) gets its prompts answered
                transport = client.get_transport()
                if not _interactive_only(transport, hop.username, exc):
                    raise
                assert transport is not None
                second_factor_login(transport, hop.username, prompter)
        except paramiko.SSHException:
            transport = client.get_transport()
            stalled = transport is not None and transport.is_active()
            stalled = stalled and not transport.initial_kex_done
            client.close()
            if stalled:
                # paramiko stops waiting for the banner or the key exchange silently,
                # then fails with "No existing session": say what happened
                assert transport is not None
                raise _NoKex(t, banner=bool(getattr(transport, "remote_version", ""))) from None
            raise
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
                return transport.open_session(timeout=self._timeout)
            except (paramiko.SSHException, EOFError, OSError) as exc:
                if attempt == 2:
                    msg = f"cannot open an SSH channel to {self._where}: {_why(exc)}"
                    raise BackendError(msg) from _cause(exc)
                log.debug("channel open failed (%s); reconnecting", exc)
                with self._lock:
                    self._drop_connection(broken=True)
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
        return code, after_mark(bytes(out), m), after_mark(bytes(err), m)

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
                    self._drop_connection(broken=True)
                    transport = self._transport()
            sftp.get_channel().settimeout(_SFTP_IDLE_TIMEOUT_S)
            self._sftp = sftp
            return sftp

    def _stage(self, blob: bytes) -> str:
        return self._upload(blob)

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
                stage = posixpath.join(self._sftp_home, STAGE_PREFIX + secrets.token_hex(8))
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
                    self._drop_connection(broken=True)
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
    refused ``direct-tcpip`` channel (paramiko only logs it), and answers a second factor
    asked for after the key with the shell's :class:`~.login.Prompter`.
    """
    import paramiko

    class _Transport(paramiko.Transport):
        open_failure = ""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.set_log_channel(_PARAMIKO_LOG)  # channels and SFTP log below it
            self.prompter: Prompter | None = None  # answers a second factor

        def auth_interactive_dumb(
            self, username: str, handler: Any = None, submethods: str = ""
        ) -> list[str]:
            # what SSHClient calls after a key was accepted and the server asks for more
            # (paramiko's own would print the prompts and read stdin)
            if self.prompter is None:
                raise paramiko.AuthenticationException(
                    "the server asks for a second factor after the key (keyboard-interactive)"
                )
            second_factor_login(self, username, self.prompter)
            return []

        def _log(self, level: int, msg: Any, *args: Any) -> None:
            if isinstance(msg, str) and "open FAILED: " in msg:
                self.open_failure = msg.split("open FAILED: ", 1)[1]
            if isinstance(msg, list):  # paramiko's traceback lines
                msg = "\n".join(str(m) for m in msg)
            self.logger.log(min(level, logging.DEBUG), msg, *args)

    return _Transport


class _Shared:
    """A login that needed a second factor, kept for the process in :data:`~.login.LOGINS`
    and shared by every SSHShell to the same route."""

    def __init__(
        self, key: str, client: paramiko.SSHClient, jumps: list[paramiko.SSHClient]
    ) -> None:
        self.key = key
        self.client = client
        self.jumps = jumps
        self.pid = os.getpid()

    def alive(self) -> bool:
        transport = self.client.get_transport()
        return self.pid == os.getpid() and transport is not None and transport.is_active()

    def close(self) -> None:
        for client in (self.client, *reversed(self.jumps)):
            try:
                client.close()
            except Exception:  # a dead connection: nothing left to release
                log.debug("error closing %r", client, exc_info=True)

    def __repr__(self) -> str:
        return f"_Shared({self.key})"


def _login_key(route: Route) -> str:
    """Which logins are the same: the users, hosts and ports on the way, and the proxy."""
    hops = " -> ".join(f"{h.username}@{h.address}" for h in route.hops)
    return f"{hops} | {route.proxy_command}" if route.proxy_command else hops


def _interactive_only(transport: Any, username: str, exc: BaseException) -> bool:
    """After ``exc`` ended paramiko's tries (no key accepted, or none to offer): whether the
    server would take keyboard-interactive (or password) answers instead."""
    import paramiko

    if transport is None or not transport.is_active() or transport.is_authenticated():
        return False
    if not transport.initial_kex_done:
        return False
    allowed = getattr(exc, "allowed_types", None)
    if not isinstance(exc, paramiko.BadAuthenticationType):
        if not isinstance(exc, paramiko.AuthenticationException) and "No authentication" not in str(
            exc
        ):
            return False
        try:
            transport.auth_none(username)
            return transport.is_authenticated()  # a server that asks nothing
        except paramiko.BadAuthenticationType as bad:
            allowed = bad.allowed_types
        except paramiko.SSHException:
            return False
    return bool({"keyboard-interactive", "password"} & set(allowed or ()))


class _NoKex(Exception):
    """The server's banner, or the key exchange after it, did not come in time."""

    def __init__(self, timeout_s: float, *, banner: bool) -> None:
        super().__init__(timeout_s)
        self.timeout_s = timeout_s
        self.banner = banner  # the banner came (the key exchange did not)


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
    if isinstance(exc, SecondFactorRefused):
        return f"second factor: {exc.reason}", SSHAuthenticationError
    if isinstance(exc, _NoKex) and not exc.banner:
        return _no_banner(shell, hop, route), SSHConnectionError
    if isinstance(exc, _NoKex):
        return (
            f"the SSH server at {hop.address} sent its banner but did not finish the key "
            f"exchange within {exc.timeout_s:g} s (connect_timeout_s, or ConnectTimeout in "
            "the ssh config): an overloaded or stalled sshd, or a middlebox",
            SSHConnectionError,
        )
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
        proxied = route.proxy_command and hop is route.hops[0]
        what = "through the ProxyCommand" if proxied else f"at {hop.address}"
        timed_out = isinstance(exc.__context__, (TimeoutError, socket.timeout))
        if "banner" in text.lower() and timed_out:
            text = _no_banner(shell, hop, route)
        elif "banner" in text.lower() or "closed" in text.lower():
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
            f"no answer from {hop.address} within {shell.timeout_for(hop):g} s "
            "(connect_timeout_s, or ConnectTimeout in the ssh config): host down, "
            "firewalled, or reachable only through a jump host (ProxyJump)?",
            SSHConnectionError,
        )
    if isinstance(exc, (OSError, EOFError)):
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if isinstance(exc, EOFError):
            why = "the server closed the connection during login"
        return f"{why} ({hop.address})", SSHConnectionError
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}", SSHConnectionError


def _no_banner(shell: SSHShell, hop: Endpoint, route: Route) -> str:
    proxied = route.proxy_command and hop is route.hops[0]
    what = "through the ProxyCommand" if proxied else f"at {hop.address}"
    return (
        f"no SSH banner within {shell.timeout_for(hop):g} s {what} (connect_timeout_s, or "
        "ConnectTimeout in the ssh config): the port accepts connections but no SSH server "
        "answers (an overloaded login node, a firewall or proxy holding the connection, or "
        "not an SSH port)"
    )


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
    kerberos = (
        "; GSSAPIAuthentication is set for this host in the ssh config, but paramiko has no "
        "GSSAPI (Kerberos): log in once with an OpenSSH master (`ssh -fNM HOST` with "
        "ControlMaster/ControlPath in the config) and lazyslurm uses it (docs/two-factor.md)"
        if hop.gssapi
        else ""
    )
    return (
        f"SSH authentication failed as {hop.username} on {hop.address} (tried "
        f"{' then '.join(tried)}); check username= and key_filename= (or User and "
        "IdentityFile in the ssh config), and that the public key is in the remote "
        f"~/.ssh/authorized_keys{kerberos}"
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
