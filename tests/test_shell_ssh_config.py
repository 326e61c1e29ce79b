"""SSH as users configure it: ``~/.ssh/config`` (aliases, ProxyJump, ProxyCommand, known
hosts) and the errors of a connection that cannot be made.

Parsing is tested without sshd. The rest (marked ``ssh``) runs against two real sshd on
loopback, both started by tests/cluster/start.sh: the cluster's (``LAZYSLURM_TEST_SSH_*``)
and a bastion, a jump host with its own host key (``LAZYSLURM_TEST_BASTION_*``). The
bastion runs in its own mount namespace where ``$LAZYSLURM_TEST_BASTION_BEHIND`` names
127.0.0.1: a host name this process cannot resolve, so a login node called that is
reachable through the jump host only.
"""

from __future__ import annotations

import getpass
import os
import re
import shlex
import socket
import time
import traceback
from pathlib import Path

import pytest
from fixtures_cluster import start_cluster

from lazyslurm import Cluster, compute, task
from lazyslurm.backends.shell import SSHShell
from lazyslurm.backends.shell.ssh_config import parse_jumps, resolve
from lazyslurm.errors import (
    BackendError,
    ClusterConfigError,
    SSHAuthenticationError,
    SSHConnectionError,
    SSHHostKeyError,
)

# --------------------------------------------------------------------------- parsing (no sshd)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_an_alias_resolves_hostname_user_port_and_identity_file(tmp_path, monkeypatch):
    """HostName, User, Port and IdentityFile (with ~ and %-tokens) of a Host alias."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    for name in ("id_hpc", "id_login.hpc.example.org_alice", "id_missing_is_skipped"):
        (tmp_path / ".ssh" / name).write_text("not read here")
    (tmp_path / ".ssh" / "id_missing_is_skipped").unlink()
    cfg = write(
        tmp_path / "config",
        "Host hpc\n"
        "  HostName login.hpc.example.org\n"
        "  User alice\n"
        "  Port 2200\n"
        "  IdentityFile ~/.ssh/id_hpc\n"
        "  IdentityFile ~/.ssh/id_%h_%r\n"
        "  IdentityFile ~/.ssh/id_missing_is_skipped\n"
        "  UserKnownHostsFile ~/.ssh/known_hosts_hpc\n"
        "Host *\n"
        "  User nobody-else\n",
    )
    route = resolve("hpc", ssh_config=cfg)
    t = route.target
    assert (t.name, t.hostname, t.port, t.username) == (
        "hpc",
        "login.hpc.example.org",
        2200,
        "alice",
    )
    assert t.key_filenames == (
        str(tmp_path / ".ssh" / "id_hpc"),
        str(tmp_path / ".ssh" / "id_login.hpc.example.org_alice"),
    )
    assert t.known_hosts == (str(tmp_path / ".ssh" / "known_hosts_hpc"), "/etc/ssh/ssh_known_hosts")
    assert t.key_name == "[login.hpc.example.org]:2200"
    assert route.jumps == () and route.proxy_command is None
    assert route.describe() == "hpc (alice@login.hpc.example.org:2200)"
    # a name no block names: as written, defaults from Host *
    other = resolve("elsewhere.org", ssh_config=cfg).target
    assert (other.hostname, other.port, other.username) == ("elsewhere.org", 22, "nobody-else")


def test_explicit_options_win_over_the_config(tmp_path):
    """port=, username=, key_filename=, known_hosts= given to the shell beat the file."""
    cfg = write(
        tmp_path / "config",
        "Host hpc\n  HostName h.example.org\n  User alice\n  Port 2200\n"
        "  IdentityFile /nonexistent/id\n  UserKnownHostsFile /nonexistent/kh\n",
    )
    t = resolve(
        "hpc", ssh_config=cfg, port=22, username="bob", key_filename="~/k", known_hosts="/kh"
    ).target
    assert (t.hostname, t.port, t.username) == ("h.example.org", 22, "bob")
    assert t.key_filenames == (os.path.expanduser("~/k"),) and t.known_hosts == ("/kh",)


def test_no_config_is_read_when_told(tmp_path, monkeypatch):
    """~/.ssh/config is read by default; ssh_config=None or False reads nothing: the alias
    is a plain host name."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    write(tmp_path / ".ssh" / "config", "Host hpc\n  HostName h.example.org\n")
    assert resolve("hpc").target.hostname == "h.example.org"
    assert SSHShell("hpc").resolve().target.hostname == "h.example.org"
    for off in (None, False):
        t = resolve("hpc", ssh_config=off).target
        assert (t.hostname, t.port, t.username) == ("hpc", 22, getpass.getuser())


def test_a_missing_config_file_is_an_error_unless_it_is_the_default(tmp_path, monkeypatch):
    """The default ~/.ssh/config may be missing (as for ssh); a named file may not."""
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve("h").config_path is None
    with pytest.raises(ClusterConfigError, match="does not exist"):
        resolve("h", ssh_config=tmp_path / "nope")


def test_proxyjump_chains_and_each_jump_hosts_own_block(tmp_path):
    """A chain of user@host:port entries; each jump host's own block applies; the first
    hop's own ProxyJump too (as with ssh -J), the later hops' are overridden."""
    cfg = write(
        tmp_path / "config",
        "Host gw\n  HostName gw.example.org\n  User gwuser\n  ProxyJump outer\n"
        "Host inner\n  HostName 10.0.0.5\n  Port 2022\n  ProxyJump ignored-for-later-hops\n"
        "Host outer\n  HostName outer.example.org\n"
        "Host hpc\n  HostName login.internal\n  ProxyJump gw, carol@inner:2023\n",
    )
    route = resolve("hpc", ssh_config=cfg, username="alice")
    names = [(h.name, h.hostname, h.port, h.username) for h in route.hops]
    me = getpass.getuser()
    assert names == [
        ("outer", "outer.example.org", 22, me),
        ("gw", "gw.example.org", 22, "gwuser"),
        ("inner", "10.0.0.5", 2023, "carol"),  # the entry's port and user win
        ("hpc", "login.internal", 22, "alice"),
    ]
    assert "via jump host outer" in route.describe()


def test_parse_jumps_forms():
    """[user@]host[:port], ssh:// URIs, IPv6 in brackets; 'none' is no jump."""
    assert parse_jumps("a") == [(None, "a", None)]
    assert parse_jumps("u@a:2,ssh://v@b:3/") == [("u", "a", 2), ("v", "b", 3)]
    assert parse_jumps("[fe80::1]:2222") == [(None, "fe80::1", 2222)]
    assert parse_jumps("none") == []
    with pytest.raises(ClusterConfigError, match="not \\[user@\\]host"):
        parse_jumps("a:b:c")


def test_proxyjump_loops_and_conflicts_are_errors(tmp_path):
    """A ProxyJump loop, or ProxyJump with ProxyCommand, is a ClusterConfigError."""
    cfg = write(tmp_path / "loop", "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
    with pytest.raises(ClusterConfigError, match="a loop"):
        resolve("a", ssh_config=cfg)
    cfg = write(tmp_path / "both", "Host a\n  ProxyJump b\n  ProxyCommand nc %h %p\n")
    with pytest.raises(ClusterConfigError, match="both ProxyJump and ProxyCommand"):
        resolve("a", ssh_config=cfg)


def test_proxycommand_is_kept_with_tokens_expanded(tmp_path):
    """ProxyCommand is honoured (run by /bin/sh), with %h and %p expanded; 'none' is none."""
    cfg = write(
        tmp_path / "config",
        "Host hpc\n  HostName login.internal\n  Port 2200\n"
        "  ProxyCommand ssh -W %h:%p gw\nHost direct\n  ProxyCommand none\n",
    )
    assert resolve("hpc", ssh_config=cfg).proxy_command == "ssh -W login.internal:2200 gw"
    assert resolve("direct", ssh_config=cfg).proxy_command is None


def test_include_is_expanded(tmp_path, monkeypatch):
    """Include (which paramiko ignores) is read, relative to ~/.ssh, globs too; inside a
    Host block the block goes on after the included files."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh" / "config.d").mkdir(parents=True)
    write(tmp_path / ".ssh" / "config.d" / "a.conf", "Host from-a\n  HostName a.example.org\n")
    write(tmp_path / ".ssh" / "extra", "  Port 2201\n")
    cfg = write(
        tmp_path / "config",
        "Include config.d/*.conf\nHost hpc\n  Include extra\n  Include config.d/*.conf\n"
        "  User inside\n",
    )
    assert resolve("from-a", ssh_config=cfg).target.hostname == "a.example.org"
    t = resolve("hpc", ssh_config=cfg).target
    assert (t.port, t.username) == (2201, "inside")


def test_strict_host_key_checking_no_is_read_not_obeyed(tmp_path):
    """StrictHostKeyChecking is kept (to say it is not honoured), never weakening checks."""
    cfg = write(tmp_path / "config", "Host *\n  StrictHostKeyChecking no\n")
    assert resolve("x", ssh_config=cfg).target.strict_host_key_checking == "no"


def test_a_bad_config_is_a_cluster_config_error(tmp_path):
    """An unparsable line or a bad Port names the file."""
    with pytest.raises(ClusterConfigError, match="cannot read ssh config"):
        resolve("x", ssh_config=write(tmp_path / "c1", "Host x\n  =\n"))
    with pytest.raises(ClusterConfigError, match="Port 'abc'"):
        resolve("x", ssh_config=write(tmp_path / "c2", "Host x\n  Port abc\n"))


def test_connection_refused_error_names_profile_alias_and_address(tmp_path, monkeypatch):
    """Nothing listening: an SSHConnectionError (a ConnectionError, a BackendError) naming
    the profile, the alias, HostName:port and the cause; no paramiko text in it."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write(tmp_path / "config", f"Host hpc\n  HostName 127.0.0.1\n  Port {port}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "lazyslurm.toml",
        f'[profiles.lab]\nbackend = "ssh"\nhostname = "hpc"\nssh_config = "{cfg}"\n'
        "connect_timeout_s = 3\n",
    )
    cluster = Cluster.from_profile("lab")
    with pytest.raises(ConnectionError) as info:
        cluster.backend.shell.run("true")
    err = info.value
    assert isinstance(err, SSHConnectionError) and isinstance(err, BackendError)
    text = str(err)
    assert text.startswith("cluster profile 'lab': cannot connect to hpc (")
    assert f"127.0.0.1:{port}" in text and "connection refused" in text
    assert (err.profile, err.host, err.address) == ("lab", "hpc", f"127.0.0.1:{port}")
    assert "\n" not in text and "paramiko" not in text and "Errno" not in text
    assert_no_paramiko_traceback(err)


def test_an_unknown_host_name_is_a_clear_dns_error(tmp_path):
    """DNS failure: says the name was not found, and that it is no alias of the config."""
    cfg = write(tmp_path / "config", "Host other\n  HostName x\n")
    shell = SSHShell("no-such-host.invalid", ssh_config=cfg, connect_timeout_s=3)
    with pytest.raises(
        SSHConnectionError, match=r"host name 'no-such-host.invalid' not found"
    ) as info:
        shell.run("true")
    assert f"not a Host alias of {cfg}" in str(info.value)
    assert_no_paramiko_traceback(info.value)


def test_a_failing_proxycommand_says_what_it_printed(tmp_path):
    """A ProxyCommand that exits: an SSHConnectionError at once (EOF, not a timeout), with
    the end of what the command wrote to stderr."""
    cfg = write(
        tmp_path / "config",
        "Host hpc\n  HostName login.internal\n"
        "  ProxyCommand sh -c 'echo open failed: connect failed: %h >&2; exit 255'\n",
    )
    shell = SSHShell("hpc", ssh_config=cfg, connect_timeout_s=30, profile="lab")
    t0 = time.monotonic()
    with pytest.raises(SSHConnectionError) as info:
        shell.run("true")
    assert time.monotonic() - t0 < 10
    text = str(info.value)
    assert text.startswith("cluster profile 'lab': cannot connect to hpc (")
    assert "via ProxyCommand" in text
    assert text.endswith("the ProxyCommand said: open failed: connect failed: login.internal")
    assert_no_paramiko_traceback(info.value)


def test_cli_shows_one_line_and_no_traceback(tmp_path, monkeypatch, capfd):
    """`lazyslurm runs --cluster lab` on an unreachable cluster: one line on stderr naming
    the profile, nothing of paramiko."""
    from lazyslurm.cli import EXIT_ERROR, main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = write(tmp_path / "config", f"Host hpc\n  HostName 127.0.0.1\n  Port {port}\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    write(
        tmp_path / "lazyslurm.toml",
        f'[profiles.lab]\nbackend = "ssh"\nhostname = "hpc"\nssh_config = "{cfg}"\n',
    )
    assert main(["runs", "--cluster", "lab"]) == EXIT_ERROR
    out, err = capfd.readouterr()
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(
        "lazyslurm runs: error: cluster profile 'lab': cannot connect to hpc"
    )
    assert "refused" in lines[0] and "Traceback" not in err and "paramiko" not in err


def assert_no_paramiko_traceback(err: BaseException) -> None:
    """Neither the message nor the traceback Python would print mention paramiko (its
    exception is chained only at DEBUG)."""
    assert err.__cause__ is None and err.__suppress_context__
    assert "paramiko" not in "".join(traceback.format_exception(err))


# --------------------------------------------------------------------------- two real sshd


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    e = dict(start_cluster())
    if not e.get("LAZYSLURM_TEST_BASTION_PORT"):
        pytest.skip("the test cluster has no bastion sshd (LAZYSLURM_TEST_BASTION_PORT)")
    return e


def key_line(known_hosts: str, name: str) -> str:
    """The host key of a known_hosts file's first line, under another host name."""
    _, kind, key = Path(known_hosts).read_text().split()[:3]
    return f"{name} {kind} {key}\n"


def behind(env: dict[str, str]) -> str:
    name = env.get("LAZYSLURM_TEST_BASTION_BEHIND", "")
    if not name:
        pytest.skip("the bastion could not get its own /etc/hosts (unshare -m failed)")
    return name


def make_config(
    tmp_path: Path,
    env: dict[str, str],
    *,
    jump: str = "bastion",
    extra: str = "",
    bastion_in_known_hosts: bool = True,
) -> Path:
    """An ssh config (in tmp_path) with ``bastion`` and ``cluster``: the cluster's HostName
    resolves only on the bastion, ProxyJump ``jump``; one known_hosts for both hosts."""
    port = env["LAZYSLURM_TEST_SSH_PORT"]
    kh = tmp_path / "known_hosts"
    text = key_line(env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"], f"[{behind(env)}]:{port}")
    if bastion_in_known_hosts:
        text += Path(env["LAZYSLURM_TEST_BASTION_KNOWN_HOSTS"]).read_text()
    kh.write_text(text)
    return write(
        tmp_path / "ssh_config",
        f"Host bastion\n  HostName 127.0.0.1\n  Port {env['LAZYSLURM_TEST_BASTION_PORT']}\n"
        f"Host cluster\n  HostName {behind(env)}\n  Port {port}\n  ProxyJump {jump}\n{extra}"
        f"Host *\n  User {env['LAZYSLURM_TEST_SSH_USER']}\n"
        f"  IdentityFile {env['LAZYSLURM_TEST_SSH_KEY']}\n  IdentitiesOnly yes\n"
        f"  UserKnownHostsFile {kh}\n  BatchMode yes\n",
    )


def accepted(env: dict[str, str]) -> int:
    """Logins the bastion has accepted so far (its sshd log)."""
    log = Path(env["LAZYSLURM_TEST_BASTION_LOG"])
    return log.read_text(errors="replace").count("Accepted publickey") if log.exists() else 0


@task
def square(x):
    return x * x


@pytest.mark.slurm
@pytest.mark.ssh
def test_compute_through_a_jump_host(env, tmp_path):
    """A real compute on the Slurm cluster through the bastion, by alias only: the
    login node's name resolves on the bastion alone, and the bastion logs the login."""
    cfg = make_config(tmp_path, env)
    with pytest.raises(SSHConnectionError, match="not found"):  # not reachable directly
        SSHShell(behind(env), port=int(env["LAZYSLURM_TEST_SSH_PORT"]), ssh_config=None).run("")
    before = accepted(env)
    with Cluster("ssh", hostname="cluster", ssh_config=str(cfg), poll_max_s=0.5) as c:
        assert compute(square.map(range(4))) == ([0, 1, 4, 9],)
        shell = c.backend.shell
        assert shell.connects == 1 and len(shell._jumps) == 1
        assert shell._route.describe() == (
            f"cluster ({env['LAZYSLURM_TEST_SSH_USER']}@{behind(env)}:"
            f"{env['LAZYSLURM_TEST_SSH_PORT']}) via jump host bastion "
            f"({env['LAZYSLURM_TEST_SSH_USER']}@127.0.0.1:{env['LAZYSLURM_TEST_BASTION_PORT']})"
        )
    assert accepted(env) == before + 1


@pytest.mark.ssh
def test_one_round_trip_per_action_keepalive_and_reconnect_through_the_jump(
    env, tmp_path, monkeypatch
):
    """Through the jump: one exec per run(), keepalive on every hop, and a dropped jump
    connection (or login node connection) is re-made transparently, once."""
    import paramiko

    keepalives = []
    real = paramiko.Transport.set_keepalive

    def spy(transport, interval):
        keepalives.append((transport, interval))
        return real(transport, interval)

    monkeypatch.setattr(paramiko.Transport, "set_keepalive", spy)
    cfg = make_config(tmp_path, env)
    with SSHShell("cluster", ssh_config=cfg, allow_agent=False, keepalive_s=7) as shell:
        assert shell.run("echo one").stdout == "one\n"
        assert shell.round_trips == 1 and shell.connects == 1
        hops = [c.get_transport() for c in (*shell._jumps, shell._client)]
        assert keepalives == [(hops[0], 7), (hops[1], 7)]
        shell._jumps[0].get_transport().close()  # the bastion's connection drops
        assert shell.run("echo two").stdout == "two\n"
        assert shell.round_trips == 2 and shell.connects == 2
        shell._client.get_transport().close()  # the login node's connection drops
        assert shell.run("echo three").stdout == "three\n"
        assert shell.connects == 3
        assert set(shell._pinned) == {
            f"[127.0.0.1]:{env['LAZYSLURM_TEST_BASTION_PORT']}",
            f"[{behind(env)}]:{env['LAZYSLURM_TEST_SSH_PORT']}",
        }


@pytest.mark.ssh
def test_a_chain_of_two_jumps(env, tmp_path):
    """ProxyJump with two entries (the bastion twice, the second as user@host:port)."""
    jump = (
        f"bastion,{env['LAZYSLURM_TEST_SSH_USER']}@127.0.0.1:{env['LAZYSLURM_TEST_BASTION_PORT']}"
    )
    cfg = make_config(tmp_path, env, jump=jump)
    before = accepted(env)
    with SSHShell("cluster", ssh_config=cfg, allow_agent=False) as shell:
        assert shell.run("echo chained").stdout == "chained\n"
        assert len(shell._jumps) == 2
    assert accepted(env) == before + 2


@pytest.mark.ssh
def test_proxycommand_is_supported(env, tmp_path):
    """ProxyCommand (here OpenSSH's own `ssh -W` through the bastion) carries the session."""
    cfg = make_config(tmp_path, env, jump="none")
    text = cfg.read_text().replace(
        "  ProxyJump none\n", f"  ProxyCommand ssh -F {shlex.quote(str(cfg))} -W %h:%p bastion\n"
    )
    cfg.write_text(text)
    before = accepted(env)
    with SSHShell("cluster", ssh_config=cfg, allow_agent=False) as shell:
        assert shell.run("echo proxied").stdout == "proxied\n"
        assert shell._jumps == [] and shell._route.proxy_command.startswith("ssh -F")
    assert accepted(env) == before + 1


@pytest.mark.ssh
def test_an_unknown_jump_host_key_is_refused(env, tmp_path):
    """The bastion's key is checked too: unknown, it is refused with SSHHostKeyError
    naming the jump host, before anything reaches the login node."""
    cfg = make_config(tmp_path, env, bastion_in_known_hosts=False)
    before = accepted(env)
    shell = SSHShell("cluster", ssh_config=cfg, allow_agent=False)
    with pytest.raises(SSHHostKeyError) as info:
        shell.run("true")
    text = str(info.value)
    bastion = f"[127.0.0.1]:{env['LAZYSLURM_TEST_BASTION_PORT']}"
    assert f"jump host bastion: SSH host key of {bastion} is unknown" in text
    assert f"ssh-keyscan -p {env['LAZYSLURM_TEST_BASTION_PORT']} 127.0.0.1" in text
    assert isinstance(info.value, ConnectionError) and shell.connects == 0
    assert info.value.failed_at == f"127.0.0.1:{env['LAZYSLURM_TEST_BASTION_PORT']}"
    assert accepted(env) == before  # refused before logging in
    assert_no_paramiko_traceback(info.value)
    # StrictHostKeyChecking no in the config does not change that, and the error says so
    cfg.write_text(cfg.read_text() + "  StrictHostKeyChecking no\n")
    with pytest.raises(SSHHostKeyError, match="StrictHostKeyChecking no in the ssh config is not"):
        SSHShell("cluster", ssh_config=cfg, allow_agent=False).run("true")
    # allow_unknown_hosts=True trusts it for the session (pinned, never written)
    with SSHShell("cluster", ssh_config=cfg, allow_agent=False, allow_unknown_hosts=True) as s:
        assert s.run("echo ok").stdout == "ok\n"
    assert bastion not in (tmp_path / "known_hosts").read_text()


@pytest.mark.ssh
def test_an_unknown_login_node_key_behind_the_jump_is_refused(env, tmp_path):
    """The login node's key is checked through the jump; ssh-keyscan cannot reach it, so
    the advice is to log in once with ssh and this config."""
    cfg = make_config(tmp_path, env)
    kh = tmp_path / "known_hosts"
    kh.write_text(Path(env["LAZYSLURM_TEST_BASTION_KNOWN_HOSTS"]).read_text())
    with pytest.raises(SSHHostKeyError, match=r"is unknown") as info:
        SSHShell("cluster", ssh_config=cfg, allow_agent=False).run("true")
    text = str(info.value)
    assert f"[{behind(env)}]:{env['LAZYSLURM_TEST_SSH_PORT']}" in text
    assert f"`ssh -F {cfg} cluster`" in text and "ssh-keyscan" not in text
    assert "jump host bastion:" not in text  # it failed at the login node


@pytest.mark.ssh
def test_wrong_port_behind_the_jump_names_jump_and_target(env, tmp_path):
    """A login node port nothing listens on, through the jump: the bastion's refusal, with
    the profile-less route, the alias and the address it could not reach."""
    cfg = make_config(tmp_path, env)
    shell = SSHShell("cluster", ssh_config=cfg, allow_agent=False, port=9)  # explicit wins
    with pytest.raises(SSHConnectionError) as info:
        shell.run("true")
    text = str(info.value)
    assert (
        f"cannot connect to cluster ({env['LAZYSLURM_TEST_SSH_USER']}@{behind(env)}:9) via " in text
    )
    assert f"jump host bastion: it could not open a connection to {behind(env)}:9: " in text
    assert "Connection refused" in text
    assert info.value.failed_at == f"{behind(env)}:9"
    assert info.value.jumps == (f"127.0.0.1:{env['LAZYSLURM_TEST_BASTION_PORT']}",)
    assert_no_paramiko_traceback(info.value)


@pytest.mark.ssh
def test_bastion_refused_and_bad_key_are_connection_errors(env, tmp_path):
    """The bastion's port closed: refused at the jump host; a key the login node does not
    accept: SSHAuthenticationError naming the keys tried. Both name the profile."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    cfg = make_config(tmp_path, env)
    cfg.write_text(
        cfg.read_text().replace(f"Port {env['LAZYSLURM_TEST_BASTION_PORT']}", f"Port {free}")
    )
    shell = SSHShell("cluster", ssh_config=cfg, allow_agent=False, profile="lab")
    with pytest.raises(ConnectionError) as info:
        shell.run("true")
    text = str(info.value)
    assert text.startswith("cluster profile 'lab': cannot connect to cluster (")
    assert f"jump host bastion: connection refused by 127.0.0.1:{free}" in text
    assert_no_paramiko_traceback(info.value)

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    wrong = tmp_path / "wrong_key"
    wrong.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    wrong.chmod(0o600)
    cfg = make_config(tmp_path, env)
    shell = SSHShell(
        "cluster", ssh_config=cfg, allow_agent=False, key_filename=wrong, profile="lab"
    )
    with pytest.raises(SSHAuthenticationError) as info:
        shell.run("true")
    text = str(info.value)
    assert isinstance(info.value, ConnectionError)
    assert re.search(rf"authentication failed as \S+ on {re.escape(behind(env))}:", text)
    assert f"tried key file {wrong}" in text and "jump host bastion:" not in text
    assert_no_paramiko_traceback(info.value)
