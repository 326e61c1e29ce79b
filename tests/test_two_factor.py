"""Two-factor logins (docs/two-factor.md) against the test cluster's MFA sshd
(tests/cluster/mfa.sh): a key, then a TOTP code asked by PAM (Debian's
libpam-google-authenticator, which refuses a code used once); on a second port, the code
alone (keyboard-interactive only).

- keyboard-interactive through paramiko: answered by ``otp=``, ``otp_command=``,
  ``$LAZYSLURM_OTP_COMMAND``, a terminal (a pty) or a notebook (a real Jupyter kernel);
  once per process, counted by lazyslurm and in the sshd's log;
- the user's OpenSSH master: three processes (a compute, ``lazyslurm status`` and
  ``Run.attach``) through one master opened by the test, with no question asked;
- bad input: a wrong code, an expired code, no one to ask, a master that died;
- what a new user meets: a server that never sends its banner, ConnectTimeout.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import pty
import secrets
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fixtures_cluster import start_cluster, state_dir

from lazyslurm import Cluster
from lazyslurm.backends.shell import OpenSSHShell, SSHShell, make_ssh_shell
from lazyslurm.backends.shell.login import LOGINS, OTP_COMMAND_ENV
from lazyslurm.errors import BackendError, ClusterConfigError, SSHAuthenticationError

REPO = Path(__file__).resolve().parent.parent
PERIOD = 30

pytestmark = pytest.mark.ssh


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def mfa() -> dict[str, str]:
    """The test cluster's variables, with the MFA sshd's (skips if it is not up)."""
    env = dict(start_cluster())
    extra = state_dir() / "mfa" / "env"  # also when env.json was written by an older start.sh
    if extra.is_file():
        for line in extra.read_text().splitlines():
            name, _, value = line.partition("=")
            env.setdefault(name, value)
    if "LAZYSLURM_TEST_MFA_PORT" not in env:
        pytest.skip("the MFA sshd is not up (tests/cluster/mfa.sh failed: see start-mfa.out)")
    return env


@pytest.fixture(autouse=True)
def fresh_logins():
    """Each test starts with no login kept by this process."""
    LOGINS.forget()
    yield
    LOGINS.forget()


def totp(secret: str, at: float | None = None) -> str:
    """RFC 6238 (what oathtool --totp and google-authenticator compute)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8))
    counter = int((time.time() if at is None else at) // PERIOD)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{value % 10**6:06d}"


def used_slots(mfa: dict[str, str]) -> set[int]:
    """The 30 s periods whose code the server already took (DISALLOW_REUSE keeps them)."""
    ga = state_dir() / "mfa" / "ga" / mfa["LAZYSLURM_TEST_SSH_USER"]
    for line in ga.read_text().splitlines():
        if line.startswith('" DISALLOW_REUSE'):
            return {int(w) for w in line.split()[2:]}
    return set()


def fresh_slot(mfa: dict[str, str]) -> None:
    """Wait, if needed, for a 30 s period whose code was not used yet (by any process of
    this session: the server refuses a code twice), with 5 s of it left: for the tests
    that use the current code, as a user's otp_command does."""
    while True:
        now = time.time()
        slot, left = int(now // PERIOD), PERIOD - now % PERIOD
        if slot not in used_slots(mfa) and left > 5:
            return
        time.sleep(left + 0.2)


def unused_time(mfa: dict[str, str]) -> float:
    """A moment whose code the server takes and has not taken yet, in one of the 7
    periods before this one, else 2 to 7 after (its WINDOW_SIZE 17 reaches 8 either
    way): so that tests need not wait for a new period, and the current and next ones
    stay for the tests that use the current code."""
    while True:
        now = time.time()
        slot, used = int(now // PERIOD), used_slots(mfa)
        for shift in (-1, -2, -3, -4, -5, -6, -7, 2, 3, 4, 5, 6, 7):
            if slot + shift not in used:
                return (slot + shift) * PERIOD + PERIOD / 2
        time.sleep(PERIOD - now % PERIOD + 0.2)


def code_now(mfa: dict[str, str]) -> str:
    """A code the server takes (see :func:`unused_time`)."""
    return totp(mfa["LAZYSLURM_TEST_MFA_SECRET"], unused_time(mfa))


def code_command(mfa: dict[str, str]) -> str:
    """An otp_command giving a code the server takes (see :func:`unused_time`)."""
    return oathtool(mfa, "--now", f"@{unused_time(mfa):.0f}")


def accepted(mfa: dict[str, str], what: str = "Accepted keyboard-interactive/pam for") -> int:
    """Logins the MFA sshd accepted with a code (or other lines), so far (its log)."""
    log = Path(mfa["LAZYSLURM_TEST_MFA_LOG"]).read_text(errors="replace")
    return log.count(what)


def shell_options(mfa: dict[str, str], port: str = "LAZYSLURM_TEST_MFA_PORT") -> dict:
    return dict(
        hostname=mfa["LAZYSLURM_TEST_SSH_HOST"],
        port=int(mfa[port]),
        username=mfa["LAZYSLURM_TEST_SSH_USER"],
        key_filename=mfa["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=mfa["LAZYSLURM_TEST_MFA_KNOWN_HOSTS"],
        ssh_config=False,
    )


def make(mfa: dict[str, str], **kwargs) -> SSHShell:
    return SSHShell(**{**shell_options(mfa), "allow_agent": False, **kwargs})


def oathtool(mfa: dict[str, str], *more: str) -> str:
    """An otp_command: oathtool, as a user would write it (the current code)."""
    return shlex.join(["oathtool", "--totp", "-b", *more, mfa["LAZYSLURM_TEST_MFA_SECRET"]])


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child process: no terminal variables, no OTP command."""
    env = {k: v for k, v in os.environ.items() if k not in (OTP_COMMAND_ENV, "SSH_ASKPASS")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


# --------------------------------------------------------------------------- batch sources


def test_otp_command_answers_once_for_every_shell_of_the_process(mfa, caplog):
    """otp_command answers the code once; later shells (another Cluster, a re-attach) reuse
    the login; the code and the command (which holds the secret) are in no log."""
    fresh_slot(mfa)
    before = accepted(mfa)
    caplog.set_level(logging.DEBUG)
    first = make(mfa, otp_command=oathtool(mfa))
    assert first.run("echo one").stdout == "one\n"
    assert (first.prompts, first.connects) == (1, 1)
    first.close()  # a second-factor login outlives the shell that made it
    for _ in range(3):
        with make(mfa, otp_command=oathtool(mfa)) as again:
            assert again.run("echo again").stdout == "again\n"
            assert (again.prompts, again.connects) == (0, 0)
    assert LOGINS.prompts >= 1 and accepted(mfa) == before + 1
    code_used = max(used_slots(mfa))
    text = caplog.text
    assert totp(mfa["LAZYSLURM_TEST_MFA_SECRET"], code_used * PERIOD) not in text
    assert mfa["LAZYSLURM_TEST_MFA_SECRET"] not in text
    assert "answering 'Verification code:'" in text and "otp_command=" in text


def test_otp_callable_is_given_the_prompt(mfa):
    """otp= is called with the server's prompt (when it takes an argument)."""
    asked = []

    def code(prompt: str) -> str:
        asked.append(prompt)
        return code_now(mfa)

    with make(mfa, otp=code) as shell:
        assert shell.run("echo ok").stdout == "ok\n"
        shell.put_files("~/lazyslurm-mfa-tests/x", {"f": b"1"})
        assert shell.read_files("~/lazyslurm-mfa-tests/x", ["f"]) == {"f": b"1"}
        shell.run("rm -rf ~/lazyslurm-mfa-tests/x")
    assert asked == ["Verification code: "]


def test_the_environment_variable_answers_in_batch(mfa, monkeypatch):
    """$LAZYSLURM_OTP_COMMAND answers when no otp/otp_command is given (batch jobs, CI)."""
    monkeypatch.setenv(OTP_COMMAND_ENV, code_command(mfa))
    with make(mfa) as shell:
        assert shell.run("echo env").stdout == "env\n"
        assert shell.prompts == 1


def test_keyboard_interactive_alone(mfa):
    """A server that asks for keyboard-interactive only (no key first) gets its answers."""
    options = {**shell_options(mfa, "LAZYSLURM_TEST_MFA_KBD_PORT"), "key_filename": None}
    with SSHShell(**options, allow_agent=False, otp_command=code_command(mfa)) as shell:
        assert shell.run("whoami").stdout.strip() == mfa["LAZYSLURM_TEST_SSH_USER"]
        assert shell.prompts == 1


def test_the_password_method_after_the_key(mfa):
    """A server asking the "password" method after the key (its PAM takes the code as the
    password) is answered "Password:" by the same sources."""
    asked = []

    def code(prompt: str) -> str:
        asked.append(prompt)
        return code_now(mfa)

    with make(mfa, port=int(mfa["LAZYSLURM_TEST_MFA_PW_PORT"]), otp=code) as shell:
        assert shell.run("echo pw").stdout == "pw\n"
    assert asked == ["Password: "]


def test_a_jump_host_asking_for_a_code(mfa, tmp_path):
    """A bastion that wants a code (ProxyJump through the MFA sshd) gets it; the login
    node behind it takes the key."""
    config = tmp_path / "config"
    config.write_text(
        textwrap.dedent(
            f"""\
            Host gate
              HostName {mfa["LAZYSLURM_TEST_SSH_HOST"]}
              Port {mfa["LAZYSLURM_TEST_MFA_PORT"]}
              User {mfa["LAZYSLURM_TEST_SSH_USER"]}
            Host behind
              HostName {mfa["LAZYSLURM_TEST_SSH_HOST"]}
              Port {mfa["LAZYSLURM_TEST_SSH_PORT"]}
              ProxyJump gate
            """
        )
    )
    shell = SSHShell(
        "behind",
        username=mfa["LAZYSLURM_TEST_SSH_USER"],
        key_filename=mfa["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=[mfa["LAZYSLURM_TEST_MFA_KNOWN_HOSTS"], mfa["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"]],
        ssh_config=config,
        allow_agent=False,
        otp_command=code_command(mfa),
    )
    before = accepted(mfa)
    with shell:
        assert shell.run("echo behind").stdout == "behind\n"
        assert shell.prompts == 1 and len(shell._jumps) == 1
    assert accepted(mfa) == before + 1


def test_a_reconnect_asks_the_source_again_for_a_new_code(mfa):
    """When the kept connection dies, the next action logs in again: the source is asked
    once more and, as the code it gives is the one just used (refused twice by the
    server), asked until it gives the next one. Never a loop."""
    fresh_slot(mfa)
    calls = []

    def code() -> str:
        calls.append(time.time())
        return totp(mfa["LAZYSLURM_TEST_MFA_SECRET"])

    with make(mfa, otp=code) as shell:
        shell.run("true")
        shell._client.get_transport().close()  # the network dropped
        assert shell.run("echo back").stdout == "back\n"
        assert shell.prompts == 2 and shell.connects == 2
    assert len({int(t // PERIOD) for t in calls}) == 2  # a code of the next period
    assert len(calls) <= 40


# --------------------------------------------------------------------------- bad input


def test_a_wrong_code_fails_once_and_clearly(mfa):
    """A wrong code: one SSHAuthenticationError saying so. The source is asked once more
    when the next period begins (the code may have been used elsewhere), and, as its
    answer did not change, it is not sent again. The shell then does not ask again
    (polls retry, and must not prompt in a loop) until it is closed."""
    right = totp(mfa["LAZYSLURM_TEST_MFA_SECRET"])
    answers = [f"{(int(right) + 1) % 10**6:06d}"]
    calls = []
    shell = make(mfa, otp=lambda: calls.append(1) or answers[-1])
    with pytest.raises(SSHAuthenticationError) as info:
        shell.run("true")
    msg = str(info.value)
    assert "second factor: the server refused the answer given by otp=" in msg
    assert "wrong or expired code" in msg
    assert answers[-1] not in msg and "\n" not in msg
    assert len(calls) == 2 and shell.prompts == 2
    refused = accepted(mfa, "Failed keyboard-interactive/pam for")
    for _ in range(3):
        with pytest.raises(SSHAuthenticationError):
            shell.run("true")
    assert len(calls) == 2 and shell.prompts == 2
    shell.close()  # a new attempt asks again: a wrong password is tried once
    answers.append("not-a-code")
    with pytest.raises(SSHAuthenticationError, match="wrong password"):
        shell.run("true")
    assert len(calls) == 3
    assert accepted(mfa, "Failed keyboard-interactive/pam for") == refused + 1


def test_a_code_another_process_just_used_is_followed_by_the_next(mfa, tmp_path):
    """Another process (here the user's own ssh) logged in with the current code; this
    process's otp_command gives the same code, which the server refuses (used once): the
    next period's code is tried, once, and taken."""
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\n{oathtool(mfa)}\n")
    askpass.chmod(0o700)
    fresh_slot(mfa)
    ssh = [
        "ssh", "-F", os.devnull, "-p", mfa["LAZYSLURM_TEST_MFA_PORT"],
        "-l", mfa["LAZYSLURM_TEST_SSH_USER"], "-i", mfa["LAZYSLURM_TEST_SSH_KEY"],
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={mfa['LAZYSLURM_TEST_MFA_KNOWN_HOSTS']}",
        mfa["LAZYSLURM_TEST_SSH_HOST"], "true",
    ]  # fmt: skip
    env = {**child_env(), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    subprocess.run(ssh, env=env, stdin=subprocess.DEVNULL, start_new_session=True, check=True)
    before = accepted(mfa)
    with make(mfa, otp_command=oathtool(mfa)) as shell:
        assert shell.run("echo next").stdout == "next\n"
        assert shell.prompts == 2
    assert accepted(mfa) == before + 1


def test_an_expired_code_is_refused(mfa):
    """A code of ten minutes ago (oathtool --now) is refused with the same clear error."""
    command = oathtool(
        mfa, "--now", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() - 600))
    )
    with pytest.raises(SSHAuthenticationError, match="otp_command=: a wrong or expired code"):
        make(mfa, otp_command=command).run("true")


def test_a_failing_otp_command_names_it_without_showing_it(mfa):
    """A command that fails: its status and stderr, never its text (it may hold a secret)."""
    command = "echo no token here >&2; exit 3 # s3cr3t"
    with pytest.raises(SSHAuthenticationError) as info:
        make(mfa, otp_command=command).run("true")
    msg = str(info.value)
    assert "otp_command= exited with status 3" in msg and "no token here" in msg
    assert "s3cr3t" not in msg


def test_no_one_to_ask_fails_at_once_and_says_how(mfa):
    """No terminal, no notebook, no otp: the login fails at once, naming the three ways."""
    script = textwrap.dedent(
        f"""
        from lazyslurm.backends.shell import SSHShell
        try:
            SSHShell(**{shell_options(mfa)!r}, allow_agent=False).run("true")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # no controlling terminal: /dev/tty cannot be opened
        timeout=120,
    )
    out = res.stdout
    assert out.startswith("SSHAuthenticationError"), res.stderr
    assert "no terminal or notebook to ask in" in out
    for way in ("otp=", "otp_command=", OTP_COMMAND_ENV, "OpenSSH master"):
        assert way in out


# --------------------------------------------------------------------------- a person


def _run_in_pty(argv: list[str], env: dict[str, str], answer, timeout_s: float = 600):
    """Run ``argv`` on a new pseudo-terminal; ``answer(prompt_text)`` gives what to type at
    each "Verification code:". Returns (exit status, all output, prompts seen)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session whose controlling terminal is the pty
        os.chdir(REPO)
        os.execve(argv[0], argv, env)
    out = b""
    seen = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
            while out.count(b"Verification code:") > seen:
                seen += 1
                os.write(fd, answer().encode() + b"\n")
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace"), seen


def test_the_seeds_patterns_ask_once_at_the_terminal(mfa):
    """The seed's three patterns, seed-style and lazy (six Clusters, many runs and polls)
    over the MFA sshd, in a terminal: one prompt for the whole process, counted on the
    terminal and in the server's log; the code is not echoed."""
    before = accepted(mfa)
    typed = []

    def answer() -> str:
        typed.append(code_now(mfa))
        return typed[-1]

    argv = [
        sys.executable, "-m", "examples.parallelization_patterns", "--pattern", "all",
        "--backend", "ssh", "--hostname", mfa["LAZYSLURM_TEST_SSH_HOST"],
        "--port", mfa["LAZYSLURM_TEST_MFA_PORT"], "--username", mfa["LAZYSLURM_TEST_SSH_USER"],
        "--key-filename", mfa["LAZYSLURM_TEST_SSH_KEY"],
        "--known-hosts", mfa["LAZYSLURM_TEST_MFA_KNOWN_HOSTS"],
        "--workdir", f"~/lazyslurm-mfa-tests/seed-{secrets.token_hex(4)}",
    ]  # fmt: skip
    code, out, seen = _run_in_pty(argv, child_env(TERM="dumb"), answer)
    assert code == 0, out[-3000:]
    assert seen == 1 and len(typed) == 1
    assert accepted(mfa) == before + 1
    assert typed[0] not in out  # getpass: not echoed
    assert out.count("lazy,") == 3 and out.count("seed style,") == 3


def test_the_notebook_asks_in_a_password_box(mfa):
    """In Jupyter (a real kernel), the prompt is the notebook's password box, once for two
    shells; a frontend that cannot ask (nbconvert) gets the clear error instead."""
    jupyter_client = pytest.importorskip("jupyter_client")
    pytest.importorskip("ipykernel")
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(cwd=str(REPO), env=child_env())
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        options = {**shell_options(mfa), "allow_agent": False}
        code = textwrap.dedent(
            f"""
            from lazyslurm.backends.shell import SSHShell
            for word in ("one", "two"):
                with SSHShell(**{options!r}) as s:
                    print(s.run("echo " + word).stdout.strip(), s.prompts)
            """
        )
        requests, output = _execute(kc, code, lambda: code_now(mfa))
        assert output == "one 1\ntwo 0\n"
        assert len(requests) == 1
        assert requests[0]["password"] is True and "Verification code:" in requests[0]["prompt"]
        # a frontend without input (nbconvert, papermill): the error says what to do
        code = textwrap.dedent(
            f"""
            from lazyslurm.backends.shell import SSHShell
            from lazyslurm.backends.shell.login import LOGINS
            LOGINS.forget()
            try:
                SSHShell(**{options!r}).run("true")
            except Exception as exc:
                print(type(exc).__name__, exc)
            """
        )
        requests, output = _execute(kc, code, None)
        assert not requests
        assert output.startswith("SSHAuthenticationError") and "otp_command=" in output
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def _execute(kc, code: str, answer) -> tuple[list[dict], str]:
    """Run ``code`` in the kernel; answer its input requests with ``answer()`` (None:
    stdin not allowed). Returns the requests' contents and the printed output."""
    msg_id = kc.execute(code, allow_stdin=answer is not None)
    requests: list[dict] = []
    output = ""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if answer is not None:
            try:
                msg = kc.get_stdin_msg(timeout=0.2)
            except Exception:  # queue.Empty
                msg = None
            if msg is not None and msg["msg_type"] == "input_request":
                requests.append(msg["content"])
                kc.input(answer())
        try:
            msg = kc.get_iopub_msg(timeout=0.2)
        except Exception:  # queue.Empty
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            output += msg["content"]["text"]
        elif msg["msg_type"] == "error":
            output += "\n".join(msg["content"]["traceback"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return requests, output
    raise AssertionError(f"the kernel did not finish: {output}")


# --------------------------------------------------------------------------- OpenSSH master


def _ssh_config(mfa: dict[str, str], path: Path, control: Path) -> Path:
    """A ~/.ssh/config a user of such a cluster writes: a Host alias with a master."""
    path.write_text(
        textwrap.dedent(
            f"""\
            Host mfa-test
              HostName {mfa["LAZYSLURM_TEST_SSH_HOST"]}
              Port {mfa["LAZYSLURM_TEST_MFA_PORT"]}
              User {mfa["LAZYSLURM_TEST_SSH_USER"]}
              IdentityFile {mfa["LAZYSLURM_TEST_SSH_KEY"]}
              IdentitiesOnly yes
              UserKnownHostsFile {mfa["LAZYSLURM_TEST_MFA_KNOWN_HOSTS"]}
              ControlMaster auto
              ControlPath {control}/cm-%C
              ControlPersist 10m
            """
        )
    )
    return path


def _open_master(mfa: dict[str, str], config: Path, tmp_path: Path) -> Path:
    """``ssh -fN mfa-test``, the code typed by SSH_ASKPASS (a script printing the current
    oathtool code and counting its calls). Returns the askpass log."""
    askpass, asked = tmp_path / "askpass.sh", tmp_path / "askpass.log"
    askpass.write_text(f'#!/bin/sh\necho "$1" >> {shlex.quote(str(asked))}\n{code_command(mfa)}\n')
    askpass.chmod(0o700)
    env = {**child_env(), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force"}
    subprocess.run(
        ["ssh", "-F", str(config), "-fN", "mfa-test"],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        check=True,
        timeout=60,
    )
    return asked


@pytest.fixture
def master(mfa, tmp_path):
    """A user's ssh config with ControlMaster, and a master opened by "the user"."""
    if shutil.which("ssh") is None:
        pytest.skip("no ssh program")
    control = Path(f"/tmp/lz-cm-{secrets.token_hex(4)}")  # short: socket paths are <108 chars
    control.mkdir(mode=0o700)
    config = _ssh_config(mfa, tmp_path / "ssh_config", control)
    asked = _open_master(mfa, config, tmp_path)
    yield config, asked
    subprocess.run(["ssh", "-F", str(config), "-O", "exit", "mfa-test"], capture_output=True)
    shutil.rmtree(control, ignore_errors=True)


WORKFLOW = """
import json, sys
from lazyslurm import Cluster, compute, task

@task(time=2, mem="100M")
def square(x):
    return x * x

@task(time=2, mem="100M")
def total(xs):
    return sum(xs)

with Cluster("ssh", hostname="mfa-test", ssh_config=sys.argv[1], workdir=sys.argv[2],
             poll_max_s=0.5) as cluster:
    (result,) = compute(total(square.map(range(5))), progress=False)
    print(json.dumps({"result": result, "runs": [r.id for r in cluster.session.runs()],
                      "shell": type(cluster.backend.shell).__name__}))
"""

ATTACH = """
import json, sys
from lazyslurm import Cluster
from lazyslurm.execute import Run

with Cluster.from_profile("mfa") as cluster:
    run = Run.attach(sys.argv[1], cluster)
    print(json.dumps({"result": run.result(), "state": run.status().state,
                      "shell": type(cluster.backend.shell).__name__}))
"""


def test_three_processes_share_one_master_and_ask_nothing(mfa, master, tmp_path):
    """One login by the user (ssh -fN with ControlMaster auto, one code typed): then a
    compute, `lazyslurm status` and Run.attach, each its own process without a terminal
    or an otp, all go through that master: no question asked, no other login."""
    config, asked = master
    assert len(asked.read_text().splitlines()) == 1  # the user typed one code
    before = accepted(mfa)
    workdir = f"~/lazyslurm-mfa-tests/master-{secrets.token_hex(4)}"
    (tmp_path / "lazyslurm.toml").write_text(
        f'[profiles.mfa]\nbackend = "ssh"\nhostname = "mfa-test"\n'
        f'ssh_config = "{config}"\nworkdir = "{workdir}"\n'
    )

    def run(*argv: str) -> str:
        res = subprocess.run(
            [sys.executable, *argv],
            cwd=tmp_path,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # no terminal: a prompt would fail at once
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        return res.stdout

    computed = json.loads(run("-c", WORKFLOW, str(config), workdir).splitlines()[-1])
    assert computed["result"] == 30 and computed["shell"] == "OpenSSHShell"
    (run_id,) = computed["runs"]
    status = run("-m", "lazyslurm", "--cluster", "mfa", "status", run_id)
    assert run_id in status and "DONE" in status
    attached = json.loads(run("-c", ATTACH, run_id).splitlines()[-1])
    assert attached == {"result": [30], "state": "DONE", "shell": "OpenSSHShell"}
    assert len(asked.read_text().splitlines()) == 1  # still the user's one code
    assert accepted(mfa) == before  # no login but the master's
    with make_ssh_shell(hostname="mfa-test", ssh_config=config) as shell:
        shell.run(f"rm -rf -- {shlex.quote(workdir[2:])}")


def test_a_master_that_died_says_how_to_open_it_again(mfa, master):
    """A shell over a live master; the master ends (ControlPersist ran out): the next
    action fails at once, saying how to open it again; reopened, the same shell goes on."""
    config, _ = master
    shell = make_ssh_shell(hostname="mfa-test", ssh_config=config)
    assert isinstance(shell, OpenSSHShell)
    assert shell.run("echo via-master").stdout == "via-master\n"
    subprocess.run(
        ["ssh", "-F", str(config), "-O", "exit", "mfa-test"], check=True, capture_output=True
    )
    before = accepted(mfa)
    with pytest.raises(BackendError) as info:
        shell.run("true")
    msg = str(info.value)
    assert "no OpenSSH master connection at" in msg
    assert f"ssh -fNM -F {config} mfa-test" in msg
    assert isinstance(info.value, ConnectionError)
    assert accepted(mfa) == before  # it never logged in by itself
    # explicitly asked for, with no master: the same advice at the first action
    with pytest.raises(BackendError, match=r"ssh -fNM"):
        make_ssh_shell(hostname="mfa-test", ssh_config=config, transport="openssh").run("true")
    # auto, with no master: paramiko, which needs a code (and has no one to ask here)
    assert isinstance(make_ssh_shell(hostname="mfa-test", ssh_config=config), SSHShell)
    # the user opens it again: the same shell goes on
    _open_master(mfa, config, config.parent)
    assert shell.run("echo back").stdout == "back\n"


def test_transport_choices(mfa, tmp_path):
    """transport="openssh" without a ControlPath is a config error saying what to add;
    auto without one is paramiko; an unknown transport is refused by Cluster."""
    config = tmp_path / "ssh_config"
    config.write_text("Host plain\n  HostName 127.0.0.1\n")
    with pytest.raises(ClusterConfigError, match=r"ControlPath ~/\.ssh/cm-%C"):
        make_ssh_shell(hostname="plain", ssh_config=config, transport="openssh")
    assert isinstance(make_ssh_shell(hostname="plain", ssh_config=config), SSHShell)
    assert isinstance(
        make_ssh_shell(hostname="plain", ssh_config=config, transport="paramiko"), SSHShell
    )
    with pytest.raises(ClusterConfigError, match="transport"):
        Cluster("ssh", hostname="plain", transport="mosh")
    with pytest.raises(ClusterConfigError, match=r"otp.*must be a function"):
        Cluster("ssh", hostname="plain", otp="123456")


# --------------------------------------------------------------------------- a new user


@pytest.fixture
def silent_server():
    """A TCP port that accepts connections and never says anything (or only its banner)."""
    servers = []

    def start(banner: bytes = b"") -> int:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        held: list[socket.socket] = []

        def serve() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                held.append(conn)
                if banner:
                    conn.sendall(banner)

        threading.Thread(target=serve, daemon=True).start()
        servers.append((sock, held))
        return sock.getsockname()[1]

    yield start
    for sock, held in servers:
        sock.close()
        for conn in held:
            conn.close()


def test_no_banner_is_said_plainly(silent_server):
    """A port that accepts TCP but sends no SSH banner: "no SSH banner within N s"."""
    port = silent_server()
    shell = SSHShell("127.0.0.1", port=port, username="u", ssh_config=False, connect_timeout_s=1)
    with pytest.raises(BackendError, match=r"no SSH banner within 1 s at 127\.0\.0\.1"):
        shell.run("true")


def test_a_stalled_key_exchange_is_said_plainly(silent_server):
    """A server that sends its banner and then nothing (paramiko: "No existing session")."""
    port = silent_server(b"SSH-2.0-OpenSSH_9.2\r\n")
    shell = SSHShell("127.0.0.1", port=port, username="u", ssh_config=False, connect_timeout_s=1)
    with pytest.raises(BackendError, match=r"did not finish the key exchange within 1 s") as info:
        shell.run("true")
    assert "No existing session" not in str(info.value)


def test_connect_timeout_comes_from_the_ssh_config(silent_server, tmp_path):
    """ConnectTimeout in ~/.ssh/config is honoured (connect_timeout_s still wins)."""
    port = silent_server()
    config = tmp_path / "config"
    config.write_text(f"Host slow\n  HostName 127.0.0.1\n  Port {port}\n  ConnectTimeout 2\n")
    with pytest.raises(BackendError, match=r"no SSH banner within 2 s"):
        SSHShell("slow", username="u", ssh_config=config).run("true")
    with pytest.raises(BackendError, match=r"no SSH banner within 1 s"):
        SSHShell("slow", username="u", ssh_config=config, connect_timeout_s=1).run("true")


def test_kerberos_in_the_config_is_explained(mfa, tmp_path):
    """GSSAPIAuthentication in the config: paramiko cannot, and the refusal says to use an
    OpenSSH master (which does Kerberos itself)."""
    config = tmp_path / "config"
    config.write_text(
        f"Host krb\n  HostName 127.0.0.1\n  Port {mfa['LAZYSLURM_TEST_SSH_PORT']}\n"
        "  GSSAPIAuthentication yes\n"
    )
    wrong = tmp_path / "id_wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    shell = SSHShell(
        "krb",
        username=mfa["LAZYSLURM_TEST_SSH_USER"],
        key_filename=str(wrong),
        known_hosts=mfa["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
        ssh_config=config,
        allow_agent=False,
    )
    with pytest.raises(SSHAuthenticationError, match=r"GSSAPIAuthentication .* OpenSSH master"):
        shell.run("true")


def test_secrets_stay_out_of_run_files(mfa):
    """A run over a second-factor login: neither the code nor the secret (in otp_command)
    is in any file of the run directory, nor in the shell's repr."""
    from lazyslurm import compute, task

    @task(time=2, mem="100M")
    def double(x):
        return 2 * x

    workdir = f"lazyslurm-mfa-tests/run-{secrets.token_hex(4)}"
    codes = []

    def code() -> str:
        codes.append(code_now(mfa))
        return codes[-1]

    options = {**shell_options(mfa), "otp": code, "otp_command": oathtool(mfa)}
    with Cluster("ssh", workdir=f"~/{workdir}", poll_max_s=0.5, **options) as cluster:
        assert compute(double(21), progress=False) == (42,)
        shell = cluster.backend.shell
        assert "otp" not in repr(shell) and mfa["LAZYSLURM_TEST_MFA_SECRET"] not in repr(shell)
        found = shell.run(
            f"grep -rlF -e {codes[0]} -e {mfa['LAZYSLURM_TEST_MFA_SECRET']} {workdir}; "
            f"find {workdir} -type f | wc -l"
        )
        shell.run(f"rm -rf -- {workdir}")
    assert len(codes) == 1
    files = found.stdout.split()
    assert files == [files[-1]] and int(files[-1]) > 0, found  # only the count: no match
