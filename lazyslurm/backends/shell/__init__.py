"""Shells: run a bash script and move files, on this host or over SSH. One module per
transport (:mod:`~lazyslurm.backends.shell.local`, :mod:`~lazyslurm.backends.shell.ssh`)
behind one protocol (:mod:`~lazyslurm.backends.shell.base`)."""

from lazyslurm.backends.shell.base import CommandResult, Shell, shell_path
from lazyslurm.backends.shell.local import LocalShell
from lazyslurm.backends.shell.ssh import SSHShell

__all__ = ["CommandResult", "LocalShell", "SSHShell", "Shell", "shell_path"]
