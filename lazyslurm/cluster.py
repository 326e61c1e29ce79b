"""``Cluster``: where graphs run, and the session memory of what already ran there.

``with cluster:`` makes a cluster active for the current context (a ``contextvars``
variable, so threads and asyncio tasks that enter their own each see their own). A thread
started inside ``with cluster:`` (threads do not inherit context variables) uses the
cluster whose block was entered last and is still open, never silently the local default.
Without any, ``compute`` uses a process-wide embedded local cluster, created on first use.
"""

from __future__ import annotations

import contextvars
import functools
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Unpack

from lazyslurm.backends.base import Backend
from lazyslurm.errors import ClusterConfigError
from lazyslurm.graph.core import BUILD_SINK
from lazyslurm.graph.options import ClusterOptions
from lazyslurm.options import BACKENDS
from lazyslurm.options import check as check_options
from lazyslurm.registry import executor
from lazyslurm.store import default_workdir

__all__ = ["Cluster", "current_cluster"]

_ACTIVE: contextvars.ContextVar[Cluster | None] = contextvars.ContextVar(
    "lazyslurm_active_cluster", default=None
)
# clusters inside an open ``with`` block, in any thread: a thread started inside
# ``with cluster:`` (new threads do not inherit context variables) uses the latest
_OPEN: list[Cluster] = []
# every Cluster of this process, weakly: a job handle used after its ``with`` block
# finds the session that submitted it
_SESSIONS: weakref.WeakSet[Cluster] = weakref.WeakSet()


class Cluster:
    """A place to run graphs, plus what this session already computed there.

    ``backend`` is ``"local"`` (default: a pool of local processes), ``"sync"`` (in the
    calling thread), ``"slurm"`` (sbatch on this host), ``"ssh"`` (sbatch over SSH), or a
    :class:`~lazyslurm.backends.base.Backend` object (such as the public fake).

    Within one cluster session a node computed once is never run again: later graphs
    that need it read its stored result. With ``cache=True`` that holds across sessions
    too: results already in the cluster's store are not computed again.
    ``max_core_hours`` refuses, before submitting, any graph whose worst case may exceed it.
    """

    def __init__(
        self,
        backend: str | Backend = "local",
        *,
        workdir: str | os.PathLike[str] | None = None,
        max_workers: int | None = None,
        max_array_size: int | None = None,
        poll_min_s: float = 0.2,
        poll_max_s: float = 5.0,
        cache: bool = False,
        callbacks: Sequence[Any] = (),
        max_core_hours: float | None = None,
        dynamic_max_depth: int = 4,
        dynamic_max_tasks: int = 10_000,
        **backend_options: Unpack[ClusterOptions],
    ) -> None:
        if isinstance(backend, str):
            if backend not in BACKENDS:
                msg = f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}"
                raise ClusterConfigError(msg)
            given = {"workdir": workdir, "max_workers": max_workers,
                     "max_array_size": max_array_size, "poll_min_s": poll_min_s,
                     "poll_max_s": poll_max_s, "cache": cache,
                     "max_core_hours": max_core_hours,
                     "dynamic_max_depth": dynamic_max_depth,
                     "dynamic_max_tasks": dynamic_max_tasks}  # fmt: skip
            # every option is declared once, by its backend: typos show now, not at first use
            check_options(backend, {**{k: v for k, v in given.items() if v is not None},
                                    **backend_options})  # fmt: skip
        if not 0 < poll_min_s <= poll_max_s:
            msg = f"need 0 < poll_min_s <= poll_max_s, got {poll_min_s}, {poll_max_s}"
            raise ClusterConfigError(msg)
        self._spec = backend
        self._backend: Backend | None = None if isinstance(backend, str) else backend
        self.backend_name = backend if isinstance(backend, str) else backend.name
        # a local path, except for ssh, where it lives (and "~" means home) on the cluster
        self.workdir: Path | str | None = (
            None
            if workdir is None
            else str(workdir)
            if backend == "ssh"
            else Path(workdir).expanduser()
        )
        self.max_workers = max_workers
        self._max_array_size = max_array_size
        self.poll_min_s = poll_min_s
        self.poll_max_s = poll_max_s
        self.cache = cache
        self.callbacks: list[Any] = []  # called for every run of this cluster
        if callbacks:
            from lazyslurm.callbacks import adapt

            self.callbacks = adapt(callbacks)  # slurm-sdk callbacks: warns of unusable hooks
        self.max_core_hours = max_core_hours  # budget of every submit (see lazyslurm.preview)
        # bounds on tasks that return lazy values (docs/dynamic.md), written into each run
        self.dynamic_limits = {"max_depth": dynamic_max_depth, "max_tasks": dynamic_max_tasks}
        self.backend_options: dict[str, Any] = dict(backend_options)
        self.profile: str | None = None  # the profile it came from (from_profile), for errors
        self._tokens: list[contextvars.Token[Cluster | None]] = []
        self._sink_tokens: list[contextvars.Token[list[Any] | None]] = []
        # jobs built in this cluster's ``with`` block, not submitted yet (flush on wait)
        self.pending: list[Any] = []
        # session memory
        self.runs: dict[str, Any] = {}  # run id -> Run submitted in this session
        self.computed: dict[str, str] = {}  # node key -> run id holding its result
        # node key -> (run id, array job, index) where it last ran, whatever the outcome
        self.ran: dict[str, tuple[str, str, int]] = {}
        self.packs: dict[tuple[str, str], int] = {}  # (run, array job) -> pack, when > 1
        self.values: dict[str, Any] = {}  # results already fetched to this process
        _SESSIONS.add(self)
        if self.backend_name in ("slurm", "ssh"):
            from lazyslurm.guard import note_created

            note_created(self)  # so a forgotten `with cluster:` can be named

    @classmethod
    def from_profile(cls, name: str | None = None, **overrides: Any) -> Cluster:
        """The cluster of profile ``name`` (default: ``$LAZYSLURM_PROFILE``); ``overrides``
        win over the profile's keys.

        Profiles are ``[tool.lazyslurm.profiles.NAME]`` tables of the nearest
        ``pyproject.toml`` or ``[profiles.NAME]`` of ``lazyslurm.toml`` (then
        ``~/.config/lazyslurm/lazyslurm.toml``): see :mod:`lazyslurm.profiles`.
        """
        from lazyslurm.profiles import load_profile

        profile = load_profile(name)
        cluster = cls(**{**profile.options, **overrides})
        cluster.profile = profile.name
        return cluster

    def __repr__(self) -> str:
        return f"Cluster(backend={self.backend_name!r})"

    @property
    def backend(self) -> Backend:
        """The backend, created on first use."""
        if self._backend is None:
            self._backend = self._make_backend()
        return self._backend

    def _make_backend(self) -> Backend:
        from lazyslurm.backends.local import LocalBackend, SyncBackend

        workdir = self.workdir or default_workdir()
        size = {} if self._max_array_size is None else {"max_array_size": self._max_array_size}
        if self._spec == "local":
            return LocalBackend(workdir, max_workers=self.max_workers, **size)
        if self._spec == "sync":
            return SyncBackend(workdir, **size)
        from lazyslurm.backends.slurm import make_slurm_backend

        return make_slurm_backend(
            str(self._spec),
            workdir=self.workdir,
            max_array_size=self._max_array_size,
            profile=self.profile,
            **self.backend_options,
        )

    def max_array_size(self) -> int:
        """The array size limit (starts the backend: on Slurm, asks the cluster once)."""
        return self.backend.max_array_size()

    def pack_limits(self) -> tuple[bool, int | None, Any]:
        """What packing must fit: ``(packing, max_jobs, time_cap)``. Backends that run
        every element alone (local, sync) do not pack: ``(False, None, None)``."""
        limits = getattr(self.backend, "pack_limits", None)
        if limits is None:
            return False, None, None
        max_jobs, time_cap = limits()
        return True, max_jobs, time_cap

    def known_max_array_size(self) -> int | None:
        """The array size limit if known without starting anything, else None."""
        if self._backend is not None:
            return self._backend.max_array_size()
        return self._max_array_size

    def close(self) -> None:
        """Stop worker processes and connections (the session memory is kept)."""
        if self._backend is not None and isinstance(self._spec, str):
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Cluster:
        if self.backend_name in ("slurm", "ssh"):
            from lazyslurm.guard import note_used

            note_used(self)
        self._tokens.append(_ACTIVE.set(self))
        _OPEN.append(self)
        self._sink_tokens.append(BUILD_SINK.set(self.pending))
        return self

    def __exit__(self, *exc: object) -> None:
        BUILD_SINK.reset(self._sink_tokens.pop())
        _ACTIVE.reset(self._tokens.pop())
        for i in range(len(_OPEN) - 1, -1, -1):  # this block's entry (blocks may interleave)
            if _OPEN[i] is self:
                del _OPEN[i]
                break
        if not self._tokens:
            self.pending.clear()  # never waited on: never submitted (unlike slurm-sdk)
            if self.backend_name == "local" and self._backend is not None:
                # local jobs live in this process's pool, closed below: let submitted
                # ones finish (Slurm's keep running), or stop them on an error
                for run in list(self.runs.values()):
                    if not run._finished:
                        if exc[0] is not None:
                            run.cancel()
                        run.wait()  # records the end states for the job handles
            self.close()

    def submit(self, task: Any, **overrides: Any) -> Any:
        """``cluster.submit(task, **options)(*args)`` submits the call at once (with what
        it needs that is not submitted yet) and returns its Job handle;
        ``cluster.submit(task).map(items)`` does the same for a JobArray."""
        submitter = executor().Submitter  # the job-handle layer, above this module
        return submitter(self, task.options(**overrides) if overrides else task)

    def record(self, run_id: str, keys: Sequence[str | tuple[str, str]]) -> None:
        """Remember results of run ``run_id``: keys, or ``(key, location)`` pairs for
        results kept in pack files (``RUN:AJ_J``, :meth:`ArrayJob.location`)."""
        for item in keys:
            if isinstance(item, tuple):
                self.computed[item[0]] = item[1]
            else:
                self.computed[item] = run_id


def current_cluster() -> Cluster | None:
    """The cluster made active by ``with cluster:`` in this context; in a thread with none
    of its own, the one whose ``with`` block was entered last and is still open."""
    active = _ACTIVE.get()
    if active is None and _OPEN:
        return _OPEN[-1]
    return active


@functools.cache
def default_cluster() -> Cluster:
    """The cluster used when none is given or active: the profile named by
    ``$LAZYSLURM_PROFILE`` if set, else the embedded local cluster."""
    if os.environ.get("LAZYSLURM_PROFILE"):
        cluster = Cluster.from_profile()
        if cluster.backend_name in ("slurm", "ssh"):
            from lazyslurm.guard import note_used

            note_used(cluster)  # the default on purpose, not a forgotten one
        return cluster
    return Cluster("local")


def resolve_cluster(cluster: Cluster | None) -> Cluster:
    if cluster is not None:
        if cluster.backend_name in ("slurm", "ssh"):
            from lazyslurm.guard import note_used

            note_used(cluster)
        return cluster
    return current_cluster() or default_cluster()
