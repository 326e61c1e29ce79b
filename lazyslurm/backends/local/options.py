"""The options of the embedded backends (``local``, ``sync``), declared once."""

from __future__ import annotations

from typing import Annotated, TypedDict

from lazyslurm.graph.options import Opt

__all__ = ["LocalOptions"]


class LocalOptions(TypedDict, total=False):
    """Options of the embedded backends (sync runs one element at a time and ignores it)."""

    max_workers: Annotated[int, Opt("worker processes (default: one per CPU)", positive=True)]
