"""Second-factor logins: who answers a server's prompts ("Verification code:",
"Password:"), and the logins this process keeps so that it asks once.

**Who answers** (:class:`Prompter`), in this order of preference:

1. ``otp=``: a callable, called with the prompt text if it takes an argument
   (``otp=lambda: totp.now()``, ``otp=lambda prompt: ...``);
2. ``otp_command=``: a command run by ``/bin/sh``; the first line of its output is the
   answer (``"oathtool --totp -b - < ~/.config/otp-secret"``). It gets the prompt in
   ``$LAZYSLURM_SSH_PROMPT`` and ``user@host:port`` in ``$LAZYSLURM_SSH_HOST``;
3. the environment variable ``LAZYSLURM_OTP_COMMAND``: the same, for batch jobs and CI;
4. a person: in a terminal, a hidden prompt on the terminal (``getpass``, which reads
   ``/dev/tty`` even when stdin is redirected); in Jupyter, the notebook's password box.
   Without either (a cron job, a service, ``nohup``), the login fails at once with an
   :class:`~lazyslurm.errors.SSHAuthenticationError` naming the three ways above.

**Asked once per process** (:data:`LOGINS`): a connection whose login needed an answer is
kept, alive (keepalive), for the whole process and shared by every ``SSHShell`` taking the
same route (user@host, and the jump hosts): every ``Cluster``, run, poll and
``Run.attach`` of this process. A jump host asking for a code gets it the same way.
``SSHShell.close()`` leaves it open; it ends with the process or with
:meth:`Logins.forget`. Only if it dies (network change, laptop asleep, server restart) is
there a new login, and so a new question: to ``otp``/``otp_command`` (asked again: a TOTP
code is valid once), or to the person, once. An answer that the server refused is never
retried by a later login: that shell raises the same error, without asking again, until
it is closed. (Within one login, a code from ``otp``/``otp_command`` that the server
refused is followed by one more try with the next period's code, if it differs: another
process, or the user's own ssh, may have just used the first.)

**Nothing is written down**: answers live only in the memory of the login that asked for
them and are never logged, never put in an error message or a run file. The one thing
kept after a login is a salted hash of each code-like answer (6 to 8 digits) for 120 s:
most TOTP servers refuse a code used once (google-authenticator's ``DISALLOW_REUSE``), so
when ``otp``/``otp_command`` gives again a code this process has just used, it is asked
again, once a second, until the code changes (at most 35 s: one TOTP period).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
import queue
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paramiko

__all__ = ["LOGINS", "OTP_COMMAND_ENV", "Logins", "Prompter", "SecondFactorRefused", "login"]

log = logging.getLogger("lazyslurm.backends.shell")

OTP_COMMAND_ENV = "LAZYSLURM_OTP_COMMAND"
_COMMAND_TIMEOUT_S = 120.0  # an otp_command may wait for a phone, a token, a password manager
_AUTH_TIMEOUT_S = 600.0  # a person typing, a push waiting for a tap (sshd's LoginGraceTime rules)
_CODE = re.compile(r"\d{6,8}")  # what a TOTP/HOTP code looks like
_REUSE_WINDOW_S = 120.0  # a code used this long ago may still be refused as reused
_NEW_CODE_WAIT_S = 35.0  # one TOTP period, and a margin
_TOTP_PERIOD_S = 30.0  # RFC 6238's default, used by every authenticator app


class SecondFactorRefused(Exception):
    """The server refused the answers (or there was no one to ask): raised inside a login,
    turned into an :class:`~lazyslurm.errors.SSHAuthenticationError` by the shell."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Prompter:
    """Answers the prompts of one login to ``where`` (``user@host:port``)."""

    def __init__(
        self,
        where: str,
        key: str,
        *,
        otp: Callable[..., str] | None = None,
        otp_command: str | None = None,
    ) -> None:
        self.where = where
        self.key = key  # the login's key in LOGINS (for the reused-code check)
        self.otp = otp
        self.otp_command = otp_command or os.environ.get(OTP_COMMAND_ENV) or None
        self.asked = 0  # prompts answered (each is one question to a source)
        self.codes: list[str] = []  # the answers of this login, until it ends (then cleared)
        self._refused: tuple[str, set[bytes]] | None = None  # why, and what, was refused

    @property
    def source(self) -> str:
        """Who answers, in words (never the command itself: it may hold a secret)."""
        if self.otp is not None:
            return "otp="
        if self.otp_command is not None:
            given = os.environ.get(OTP_COMMAND_ENV) == self.otp_command
            return f"${OTP_COMMAND_ENV}" if given else "otp_command="
        return "a prompt"

    @property
    def human(self) -> bool:
        return self.otp is None and self.otp_command is None

    def answer(self, title: str, instructions: str, prompt: str, echo: bool) -> str:
        """The answer to one prompt (raises :class:`SecondFactorRefused` if none)."""
        self.asked += 1
        LOGINS.count()
        log.debug("answering %r for %s with %s", prompt.strip(), self.where, self.source)
        if self.human:
            text = _ask_person(self.where, title, instructions, prompt)
        else:
            text = self._from_source(prompt)
            if _CODE.fullmatch(text) and LOGINS.used(self.key, text):
                text = self._new_code(prompt, text)
            if self._refused is not None and _digest(text) in self._refused[1]:
                raise SecondFactorRefused(self._refused[0])  # the same answer: not sent again
        self.codes.append(text)
        return text

    def retry_after_refusal(self, reason: str) -> bool:
        """After the server refused this login's answers: whether to try once more, and
        if so wait for the next TOTP period (a source gives a new code then). Only for
        ``otp``/``otp_command`` whose answers looked like codes."""
        codes, self.codes = self.codes, []
        if self.human or not any(_CODE.fullmatch(c) for c in codes):
            return False
        self._refused = (reason, {_digest(c) for c in codes})
        time.sleep(_TOTP_PERIOD_S - time.time() % _TOTP_PERIOD_S + 1.0)
        return True

    def _from_source(self, prompt: str) -> str:
        if self.otp is not None:
            try:
                takes_prompt = _takes_an_argument(self.otp)
                value = self.otp(prompt) if takes_prompt else self.otp()
            except Exception as exc:
                raise SecondFactorRefused(
                    f"otp= raised {type(exc).__name__} when asked {prompt.strip()!r}"
                ) from None
            if not isinstance(value, str) or not value.strip():
                got = "an empty string" if isinstance(value, str) else type(value).__name__
                raise SecondFactorRefused(
                    f"otp= returned {got} when asked {prompt.strip()!r}: it must return "
                    "the answer as a non-empty str"
                )
            return value.strip()
        assert self.otp_command is not None
        env = {**os.environ, "LAZYSLURM_SSH_PROMPT": prompt, "LAZYSLURM_SSH_HOST": self.where}
        try:
            res = subprocess.run(
                ["/bin/sh", "-c", self.otp_command],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                env=env,
                timeout=_COMMAND_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise SecondFactorRefused(
                f"{self.source} did not finish within {_COMMAND_TIMEOUT_S:g} s"
            ) from None
        except OSError as exc:
            raise SecondFactorRefused(f"{self.source} could not run: {exc.strerror}") from None
        lines = res.stdout.decode(errors="replace").strip().splitlines()
        if res.returncode != 0 or not lines or not lines[0].strip():
            said = " ".join(res.stderr.decode(errors="replace").split())[-300:]
            what = f"exited with status {res.returncode}" if res.returncode else "printed nothing"
            raise SecondFactorRefused(
                f"{self.source} {what} when asked {prompt.strip()!r}"
                + (f": {said}" if said else "")
            )
        return lines[0].strip()

    def _new_code(self, prompt: str, code: str) -> str:
        """A code other than ``code`` (just used by this process) from the same source."""
        log.debug("%s gave a code this process just used; waiting for the next one", self.source)
        deadline = time.monotonic() + _NEW_CODE_WAIT_S
        while time.monotonic() < deadline:
            time.sleep(1.0)
            fresh = self._from_source(prompt)
            if fresh != code:
                return fresh
        return code  # not a changing code after all: the server decides


def _digest(answer: str) -> bytes:
    """What is kept of a refused answer during its login (never the answer itself)."""
    return hashlib.sha256(answer.encode()).digest()


def _takes_an_argument(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return False
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return any(p.kind in kinds or p.kind is inspect.Parameter.VAR_POSITIONAL for p in params)


# --------------------------------------------------------------------------- a person


def _in_kernel() -> bool:
    """Running in a Jupyter kernel (whose getpass asks the notebook)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if get is not None else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def _has_terminal() -> bool:
    """A terminal to ask on: /dev/tty (getpass's choice), else stdin."""
    if os.name != "nt":
        try:
            with open("/dev/tty", "rb"):
                return True
        except OSError:
            pass
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def no_person_message(where: str, prompt: str) -> str:
    return (
        f"{where} asks {prompt.strip()!r} (a second factor) and there is no terminal or "
        "notebook to ask in: pass otp=<a function returning the code>, "
        f'otp_command="<a command printing it>" or set {OTP_COMMAND_ENV}, or open an '
        "OpenSSH master connection once in a terminal (docs/two-factor.md)"
    )


def _ask_person(where: str, title: str, instructions: str, prompt: str) -> str:
    import getpass

    header = "\n".join(t.strip() for t in (title, instructions) if t and t.strip())
    text = f"{header}\n" if header else ""
    text += f"[lazyslurm] {where} {prompt.strip()} "
    if _in_kernel():
        try:
            return getpass.getpass(text)  # the kernel's: a password box in the notebook
        except Exception as exc:  # StdinNotImplementedError: a frontend without input
            raise SecondFactorRefused(
                no_person_message(where, prompt) + f" (the notebook said: {exc})"
            ) from None
    if not _has_terminal():
        raise SecondFactorRefused(no_person_message(where, prompt))
    try:
        return getpass.getpass(text)
    except EOFError:
        raise SecondFactorRefused(f"no answer to {prompt.strip()!r} (end of input)") from None


# --------------------------------------------------------------------------- the exchange


def login(transport: paramiko.Transport, username: str, prompter: Prompter) -> None:
    """Finish the login on ``transport`` with keyboard-interactive (or, if the server
    offers only that, password) answers from ``prompter``.

    If the server refuses a code that ``otp``/``otp_command`` gave (another process may
    have used it: most servers take each code once), the source is asked again once the
    next TOTP period has begun, and the answers are sent once more only if they changed:
    at most two tries, never a loop. A person's answer is tried once.
    Raises :class:`SecondFactorRefused` with the reason in words.
    """
    import paramiko

    saved_timeout = transport.auth_timeout
    transport.auth_timeout = _AUTH_TIMEOUT_S
    try:
        for attempt in (1, 2):
            outcome = _exchange(transport, username, prompter)
            error = outcome.get("error")
            if isinstance(error, paramiko.BadAuthenticationType) and "password" in (
                error.allowed_types or []
            ):
                _password(transport, username, prompter)
                return
            if error is None and transport.is_authenticated():
                return
            if error is None:
                left = ", ".join(outcome.get("left") or []) or "(none said)"
                raise SecondFactorRefused(
                    f"after the answers, the server still asks for other methods: {left}"
                )
            reason = _refusal(error, prompter)
            refused = isinstance(error, paramiko.AuthenticationException) and not isinstance(
                error, paramiko.BadAuthenticationType
            )
            if attempt == 2 or not refused or not transport.is_active():
                raise SecondFactorRefused(reason)
            if not prompter.retry_after_refusal(reason):
                raise SecondFactorRefused(reason)
            log.debug("%s refused a code from %s: trying the next", prompter.where, prompter.source)
    finally:
        transport.auth_timeout = saved_timeout
        if transport.is_authenticated():
            LOGINS.note_used(prompter.key, prompter.codes)
        prompter.codes.clear()


def _exchange(transport: paramiko.Transport, username: str, prompter: Prompter) -> dict[str, Any]:
    """One keyboard-interactive try: ``{"left": methods}`` or ``{"error": exception}``.

    paramiko calls the prompt handler on its transport thread; the questions are asked
    here, on the calling thread (a notebook can only ask from there), through a queue.
    """
    asked: queue.Queue[Any] = queue.Queue()
    outcome: dict[str, Any] = {}
    failure: list[SecondFactorRefused] = []

    def handler(title: str, instructions: str, prompts: Sequence[tuple[str, bool]]) -> list[str]:
        if not prompts:  # an information-only round
            return []
        reply: queue.Queue[list[str] | None] = queue.Queue(maxsize=1)
        asked.put((title, instructions, list(prompts), reply))
        answers = reply.get()
        if answers is None:  # no answer: the transport was closed (an answer would be a try)
            return [""] * len(prompts)
        return answers

    def method() -> None:
        try:
            outcome["left"] = transport.auth_interactive(username, handler)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            asked.put(None)

    worker = threading.Thread(target=method, daemon=True, name="lazyslurm-ssh-login")
    worker.start()
    while (item := asked.get()) is not None:
        title, instructions, prompts, reply = item
        if failure:
            reply.put(None)
            continue
        try:
            reply.put([prompter.answer(title, instructions, p, echo) for p, echo in prompts])
        except BaseException as exc:  # no answer (or Ctrl-C at the prompt): end the login
            transport.close()
            reply.put(None)
            if not isinstance(exc, SecondFactorRefused):
                worker.join(5)
                raise
            failure.append(exc)
    worker.join()
    if failure:
        raise failure[0]
    return outcome


def _password(transport: paramiko.Transport, username: str, prompter: Prompter) -> None:
    import paramiko

    answer = prompter.answer("", "", "Password: ", False)
    try:
        transport.auth_password(username, answer)
    except paramiko.SSHException as exc:
        raise SecondFactorRefused(_refusal(exc, prompter)) from None


def _refusal(exc: BaseException, prompter: Prompter) -> str:
    import paramiko

    if isinstance(exc, paramiko.BadAuthenticationType):
        allowed = ", ".join(exc.allowed_types or []) or "none"
        return f"the server does not take keyboard-interactive answers (it allows: {allowed})"
    if isinstance(exc, paramiko.AuthenticationException) and "timeout" in str(exc).lower():
        return f"no answer accepted within {_AUTH_TIMEOUT_S:g} s"
    if isinstance(exc, paramiko.AuthenticationException):
        reused = " or a code already used (most servers take each code once)"
        return (
            f"the server refused the answer given by {prompter.source}: a wrong or expired "
            f"code{reused if not prompter.human else ''}, or a wrong password (TOTP codes "
            "depend on the clock: check this computer's time); not asked again until the "
            "cluster is closed"
        )
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"the connection ended during the login ({text})"


# --------------------------------------------------------------------------- process state


class Logins:
    """This process's second-factor logins: live connections shared by every SSHShell to
    the same user@host, and salted hashes of codes just used. Process state, in memory
    only (never on disk); one instance, :data:`LOGINS`. Reset in a forked child (the
    parent's connections are not the child's to use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._live: dict[str, Any] = {}  # key -> what the shell keeps (clients, ...)
        self._used: dict[str, list[tuple[float, bytes]]] = {}  # key -> (time, hash)
        self._salt = secrets.token_bytes(16)
        self.prompts = 0  # questions put to a person or to otp/otp_command, this process

    def count(self) -> None:
        with self._lock:
            self.prompts += 1

    def lock(self, key: str) -> threading.Lock:
        """The lock held while logging in to ``key`` (so two threads ask once)."""
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def get(self, key: str) -> Any:
        with self._lock:
            return self._live.get(key)

    def put(self, key: str, connection: Any) -> None:
        with self._lock:
            self._live[key] = connection

    def discard(self, key: str, connection: Any) -> bool:
        """Forget ``connection`` (if it is still the one kept); True if it was."""
        with self._lock:
            if self._live.get(key) is connection:
                del self._live[key]
                return True
            return False

    def forget(self) -> None:
        """Close every kept connection (the next use of a shell logs in again; a code
        just used is still not given twice)."""
        with self._lock:
            live, self._live = self._live, {}
        for connection in live.values():
            closer = getattr(connection, "close", None)
            if closer is not None:
                try:
                    closer()
                except Exception:  # a dead connection: nothing left to release
                    log.debug("error closing %r", connection, exc_info=True)

    def _hash(self, key: str, code: str) -> bytes:
        return hashlib.sha256(self._salt + key.encode() + b"\0" + code.encode()).digest()

    def note_used(self, key: str, answers: Sequence[str]) -> None:
        now = time.monotonic()
        with self._lock:
            kept = [(t, h) for t, h in self._used.get(key, []) if now - t < _REUSE_WINDOW_S]
            kept += [(now, self._hash(key, a)) for a in answers if _CODE.fullmatch(a)]
            self._used[key] = kept

    def used(self, key: str, code: str) -> bool:
        """Whether this process logged in to ``key`` with ``code`` in the last 120 s."""
        now, h = time.monotonic(), self._hash(key, code)
        with self._lock:
            return any(now - t < _REUSE_WINDOW_S and u == h for t, u in self._used.get(key, []))

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._key_locks = {}
        self._live = {}  # the parent's sockets: dropped, never closed (that would end them)


LOGINS = Logins()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=LOGINS._after_fork)
