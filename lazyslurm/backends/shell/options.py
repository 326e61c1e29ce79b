"""The options of the ``ssh`` backend: how to reach the login node (keyword arguments of
:class:`~lazyslurm.backends.shell.ssh.SSHShell` and
:class:`~lazyslurm.backends.shell.openssh.OpenSSHShell`), declared once."""

from __future__ import annotations

import os
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Literal, TypedDict

from lazyslurm.backends.shell.ssh_config import DEFAULT_SSH_CONFIG
from lazyslurm.graph.options import Opt

__all__ = ["TRANSPORTS", "SSHOptions", "Transport"]

_Path = str | os.PathLike[str]
Transport = Literal["auto", "paramiko", "openssh"]
TRANSPORTS: tuple[str, ...] = typing.get_args(Transport)


class SSHOptions(TypedDict, total=False):
    """Options of the ``ssh`` backend."""

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
    connect_timeout_s: Annotated[
        float,
        Opt("connection timeout (default: ssh_config's ConnectTimeout, else 10)", positive=True),
    ]
    keepalive_s: Annotated[float, Opt("keepalive interval (0: off)", default=30)]
    transport: Annotated[
        Transport,
        Opt(
            "paramiko, openssh (the user's OpenSSH master), or auto: openssh if one is live",
            default="auto",
        ),
    ]
    control_path: Annotated[
        _Path, Opt("ControlPath of an OpenSSH master to reuse (default: ssh_config's)")
    ]
    otp: Annotated[
        Callable[..., str],
        Opt("function answering a second-factor prompt (a TOTP code...)", profile=False),
    ]
    otp_command: Annotated[
        str,
        Opt("command printing the answer to a second-factor prompt (else $LAZYSLURM_OTP_COMMAND)"),
    ]
