"""Backends: where array jobs run, behind one protocol (:class:`Backend`, defaults of its
optional part in :class:`BackendBase`), found by name in one registry
(:func:`register`, :func:`get`, entry points of the group ``lazyslurm.backends``).

Built in: ``local`` and ``sync`` (:mod:`lazyslurm.backends.local`), ``slurm`` and ``ssh``
(:mod:`lazyslurm.backends.slurm`, one folder for Slurm). docs/backends.md shows a complete
backend in one file.
"""

from lazyslurm.backends.base import Backend, BackendBase, PackLimits
from lazyslurm.backends.registry import (
    ENTRY_POINT_GROUP,
    BackendSpec,
    get,
    names,
    register,
    specs,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Backend",
    "BackendBase",
    "BackendSpec",
    "PackLimits",
    "get",
    "names",
    "register",
    "specs",
]
