"""Shells: run a bash script and move files, on this host or over SSH. One module per
transport (:mod:`~lazyslurm.backends.shell.local`, :mod:`~lazyslurm.backends.shell.ssh`
(paramiko), :mod:`~lazyslurm.backends.shell.openssh` (the user's OpenSSH master)) behind
one protocol (:mod:`~lazyslurm.backends.shell.base`); second-factor logins in
:mod:`~lazyslurm.backends.shell.login`."""

from lazyslurm.backends.shell.base import CommandResult, Shell, shell_path
from lazyslurm.backends.shell.local import LocalShell
from lazyslurm.backends.shell.openssh import OpenSSHShell, make_ssh_shell
from lazyslurm.backends.shell.ssh import SSHShell

__all__ = [
    "CommandResult",
    "LocalShell",
    "OpenSSHShell",
    "SSHShell",
    "Shell",
    "make_ssh_shell",
    "shell_path",
]
