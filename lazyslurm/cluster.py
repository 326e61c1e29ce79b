"""``Cluster``: where graphs run, and the session memory of what already ran there.

``with cluster:`` makes a cluster active for the current context (a ``contextvars``
variable, so threads and asyncio tasks that enter their own each see their own). A thread
started inside ``with cluster:`` (threads do not inherit context variables) uses the
cluster whose block was entered last and is still open, never silently the local default.
Without any, ``compute`` uses a process-wide embedded local cluster, created on first use.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import os
import weakref
from pathlib import Path
from typing import Any, Literal, Unpack

import lazyslurm.backends.registry as backends
import lazyslurm.sdk_cluster as sdk
from lazyslurm.backends.base import Backend, PackLimits
from lazyslurm.backends.option import CommonOptions, resolve
from lazyslurm.backends.registry import BackendSpec
from lazyslurm.errors import ClusterConfigError, InvalidOptionError
from lazyslurm.graph.core import BUILD_SINK
from lazyslurm.graph.options import declared
from lazyslurm.graph.resources import Resources
from lazyslurm.options import ClusterOptions
from lazyslurm.options import check as check_options
from lazyslurm.registry import executor
from lazyslurm.sdk_cluster import SdkClusterOptions
from lazyslurm.session import Session

__all__ = ["BackendName", "Cluster", "ClusterKeywords", "current_cluster", "live_clusters"]

_ACTIVE: contextvars.ContextVar[Cluster | None] = contextvars.ContextVar(
    "lazyslurm_active_cluster", default=None
)
# clusters inside an open ``with`` block, in any thread: a thread started inside
# ``with cluster:`` (new threads do not inherit context variables) uses the latest
_OPEN: list[Cluster] = []
# every Cluster of this process, weakly: a job handle used after its ``with`` block
# finds the session that submitted it
_SESSIONS: weakref.WeakSet[Cluster] = weakref.WeakSet()


BackendName = Literal["local", "sync", "slurm", "ssh"]


class ClusterKeywords(ClusterOptions, SdkClusterOptions, total=False):
    """The keywords of ``Cluster(...)``: lazyslurm's options, and slurm-sdk's spellings
    of some (``default_partition``, ``default_packaging_registry``, ...), translated by
    :mod:`lazyslurm.sdk_cluster`."""


class Cluster:
    """A place to run graphs: its configuration, a factory of its backend, and the
    :class:`~lazyslurm.session.Session` of what this process already ran there.

    ``backend`` is ``"local"`` (the default: a pool of local processes; ``"ssh"`` when
    only a ``hostname`` is given, as in slurm-sdk), ``"sync"`` (in the
    calling thread), ``"slurm"`` (sbatch on this host), ``"ssh"`` (sbatch over SSH), the
    name of a registered backend (:mod:`lazyslurm.backends`), its
    :class:`~lazyslurm.backends.BackendSpec`, or a backend object (such as the public
    fake). Options (:class:`~lazyslurm.options.ClusterOptions`) are checked here, before
    anything starts: an unknown backend or option is refused at once.

    Within one cluster session a node computed once is never run again: later graphs
    that need it read its stored result. With ``cache=True`` that holds across sessions
    too: results already in the cluster's store are not computed again.
    ``max_core_hours`` refuses, before submitting, any graph whose worst case may exceed it.
    ``backend_type=`` is slurm-sdk's name of ``backend`` (``Cluster(backend_type="ssh",
    hostname=...)``; its ``"local"`` is sbatch on this host, lazyslurm's ``"slurm"``), and
    slurm-sdk's keywords (``default_partition``, ``default_packaging_registry``,
    ``job_base_dir``, ...) are translated (:mod:`lazyslurm.sdk_cluster`), or refused
    when lazyslurm has no such behaviour. So are its ways of building one:
    :meth:`add_argparse_args` with :meth:`from_args`, and :meth:`from_file`.
    """

    def __init__(
        self,
        backend: BackendName | BackendSpec | Backend | None = None,
        *,
        backend_type: BackendName | None = None,
        **options: Unpack[ClusterKeywords],
    ) -> None:
        if backend_type is not None:
            # slurm-sdk's names: "local" there is sbatch on this host (lazyslurm's "slurm")
            from_type = sdk.backend_of_type(backend_type)
            if backend is not None and backend != from_type:
                msg = (
                    f"Cluster({backend!r}, backend_type={backend_type!r}): backend_type is "
                    f"slurm-sdk's name of backend; give one of them"
                )
                raise ClusterConfigError(msg)
            backend = from_type  # type: ignore[assignment]
        if any(sdk.is_sdk_keyword(k) for k in options):
            options = sdk.translate(options)  # type: ignore[assignment]
        if backend is None:
            # a hostname names a login node: SSH, as in slurm-sdk (whose default is ssh)
            backend = "ssh" if options.get("hostname") is not None else "local"
        given: dict[str, Any] = {k: v for k, v in options.items() if v is not None}
        if isinstance(backend, str):
            spec: BackendSpec | None = backends.get(backend)
        elif isinstance(backend, BackendSpec):
            spec = backend
        else:
            spec = None
        if spec is not None:
            # every option is declared once, by its backend: typos show now, not at first use
            check_options(spec.name, given)
            try:  # and the task defaults together ("auto" requests are per task)
                Resources.defaults_from(given)
            except InvalidOptionError as exc:
                raise ClusterConfigError(str(exc)) from None
            self.backend_name = spec.name
            self._backend: Backend | None = None
        else:
            own = set(given) - set(declared(CommonOptions))
            if own:
                msg = (
                    f"options {sorted(own)} are for a backend made from its name; a backend "
                    f"object ({type(backend).__name__}) is configured where it is made"
                )
                raise ClusterConfigError(msg)
            check_options("sync", given)  # the common options only
            self.backend_name = backend.name  # type: ignore[union-attr]
            self._backend = backend  # type: ignore[assignment]
        self.spec = spec
        common = resolve(CommonOptions, given)
        if not 0 < common["poll_min_s"] <= common["poll_max_s"]:
            msg = (
                f"need 0 < poll_min_s <= poll_max_s, got {common['poll_min_s']}, "
                f"{common['poll_max_s']}"
            )
            raise ClusterConfigError(msg)
        self._given = given  # for repr
        workdir = given.get("workdir")
        # a local path, except for remote backends (ssh), where it lives (and "~" means
        # home) on the cluster
        self.workdir: Path | str | None = (
            None
            if workdir is None
            else str(workdir)
            if spec is not None and spec.remote
            else Path(workdir).expanduser()
        )
        self._max_array_size: int | None = common["max_array_size"]
        self.poll_min_s: float = common["poll_min_s"]
        self.poll_max_s: float = common["poll_max_s"]
        self.cache: bool = common["cache"]
        self.callbacks: list[Any] = []  # called for every run of this cluster
        if common["callbacks"]:
            from lazyslurm.callbacks import adapt

            # slurm-sdk callbacks too: warns of hooks it cannot call
            self.callbacks = adapt(common["callbacks"])
        self.max_core_hours: float | None = common["max_core_hours"]
        # bounds on tasks that return lazy values (docs/dynamic.md), written into each run
        self.dynamic_limits = {
            "max_depth": common["dynamic_max_depth"],
            "max_tasks": common["dynamic_max_tasks"],
        }
        common_names = set(declared(CommonOptions))
        self.backend_options: dict[str, Any] = {
            k: v for k, v in given.items() if k not in common_names
        }
        self.profile: str | None = None  # the profile it came from (from_profile), for errors
        self._tokens: list[contextvars.Token[Cluster | None]] = []
        self._sink_tokens: list[contextvars.Token[list[Any] | None]] = []
        self.session = Session()
        _SESSIONS.add(self)
        if not self.embedded:
            from lazyslurm.guard import note_created

            note_created(self)  # so a forgotten `with cluster:` can be named

    @property
    def embedded(self) -> bool:
        """Whether its backend runs on this machine without a scheduler (local, sync)."""
        return self.spec is not None and self.spec.embedded

    @property
    def task_defaults(self) -> Resources:
        """The task options this cluster sets for tasks that set none (``partition``,
        ``time``, ...), known without starting the backend."""
        return Resources.defaults_from(self.backend_options)

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

    @staticmethod
    def add_argparse_args(parser: argparse.ArgumentParser, *, backend_flag: bool = True) -> None:
        """Add slurm-sdk's cluster flags to ``parser`` (``--hostname``, ``--port``,
        ``--username``, ``--backend``, ``--partition``, ``--packaging*``, ...) and
        lazyslurm's ``--key-filename`` and ``--known-hosts``; build the cluster with
        :meth:`from_args`. ``backend_flag=False`` leaves ``--backend`` to the caller."""
        sdk.add_argparse_args(parser, backend_flag=backend_flag)

    @classmethod
    def from_args(cls, args: argparse.Namespace, **overrides: Any) -> Cluster:
        """The cluster of parsed :meth:`add_argparse_args` flags, ``overrides`` (slurm-sdk's
        keywords or lazyslurm's options, e.g. ``callbacks=[...]``) winning over them.

        ``--hostname`` gives the ``ssh`` backend; ``--backend local`` (slurm-sdk's name)
        Slurm on this host; with neither, Slurm on this host if ``sbatch`` is on the PATH,
        else :class:`~lazyslurm.errors.ClusterConfigError` says what to give. Nothing
        connects until the cluster is used."""
        backend, options = sdk.options_from_args(args, overrides)
        return cls(backend, **options)  # type: ignore[arg-type]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **overrides: Any) -> Cluster:
        """The cluster of slurm-sdk's flat TOML file (``backend``, ``hostname``,
        ``username``, ``ssh_key_path``, ``job_base_dir``, ``default_packaging``,
        ``default_account``, ``default_partition``; lazyslurm's options too), ``overrides``
        winning. For named sets of options in ``pyproject.toml``, see :meth:`from_profile`."""
        backend, options = sdk.file_options(path, overrides)
        return cls(backend, **options)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, *args: Any, **kwargs: Any) -> Cluster:
        """slurm-sdk's Slurmfile environments are not read: raises ClusterConfigError
        saying what to use instead (:meth:`from_profile`, :meth:`from_file`)."""
        msg = (
            "Cluster.from_env (slurm-sdk's Slurmfile environments) is not supported: put "
            "the environment's settings in a profile, [tool.lazyslurm.profiles.NAME] of "
            'pyproject.toml (backend = "ssh", hostname, partition = the [submit] '
            'partition, packaging, ...), and use Cluster.from_profile("NAME") or '
            "LAZYSLURM_PROFILE=NAME; or a flat TOML file with Cluster.from_file(PATH). "
            "See docs/coming-from.md"
        )
        raise ClusterConfigError(msg)

    def __repr__(self) -> str:
        opts = "".join(
            f", {k}={'<callbacks>' if k == 'callbacks' else repr(v)}"
            for k, v in self._given.items()
        )
        profile = f", profile={self.profile!r}" if self.profile else ""
        return f"Cluster({self.backend_name!r}{opts}{profile})"

    @property
    def backend(self) -> Backend:
        """The backend, created on first use."""
        if self._backend is None:
            assert self.spec is not None
            self._backend = self.spec.make(
                workdir=self.workdir,
                max_array_size=self._max_array_size,
                profile=self.profile,
                **self.backend_options,
            )
        return self._backend

    def max_array_size(self) -> int:
        """The array size limit (starts the backend: on Slurm, asks the cluster once)."""
        return self.backend.max_array_size()

    def pack_limits(self) -> PackLimits | None:
        """What packing must fit (None: the backend runs every element alone)."""
        return self.backend.pack_limits()

    def known_max_array_size(self) -> int | None:
        """The array size limit if known without starting anything, else None."""
        if self._backend is not None:
            return self._backend.max_array_size()
        return self._max_array_size

    def close(self) -> None:
        """Stop worker processes and connections (the session memory is kept)."""
        if self._backend is not None and self.spec is not None:
            self._backend.close()
            self._backend = None

    def __enter__(self) -> Cluster:
        if not self.embedded:
            from lazyslurm.guard import note_used

            note_used(self)
        self._tokens.append(_ACTIVE.set(self))
        _OPEN.append(self)
        self._sink_tokens.append(BUILD_SINK.set(self.session.sink))
        return self

    def __exit__(self, *exc: object) -> None:
        BUILD_SINK.reset(self._sink_tokens.pop())
        _ACTIVE.reset(self._tokens.pop())
        for i in range(len(_OPEN) - 1, -1, -1):  # this block's entry (blocks may interleave)
            if _OPEN[i] is self:
                del _OPEN[i]
                break
        if not self._tokens:
            self.session.take_pending()  # never waited on: never submitted (unlike slurm-sdk)
            if self.embedded and self._backend is not None:
                # embedded jobs live in this process's pool, closed below: let submitted
                # ones finish (Slurm's keep running), or stop them on an error
                for run in self.session.unfinished_runs():
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


def live_clusters() -> list[Cluster]:
    """Every Cluster of this process still alive (a job handle used after its ``with``
    block finds the session that submitted it)."""
    return list(_SESSIONS)


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
        if not cluster.embedded:
            from lazyslurm.guard import note_used

            note_used(cluster)  # the default on purpose, not a forgotten one
        return cluster
    return Cluster("local")


@functools.cache
def named_cluster(name: str) -> Cluster:
    """The cluster of ``compute(..., cluster=NAME)``: ``Cluster(NAME)``, made once per
    process (so its session remembers what ran there, as the default cluster's does; for
    ``"local"`` without a profile, the default cluster itself: one pool of workers)."""
    if name == "local" and not os.environ.get("LAZYSLURM_PROFILE"):
        return default_cluster()
    return Cluster(name)  # type: ignore[arg-type]  # checked there: did you mean ...?


def resolve_cluster(cluster: Cluster | str | None) -> Cluster:
    """The cluster to use: the one given (or ``Cluster(NAME)`` for a backend name), else
    the active one, else the default."""
    if isinstance(cluster, str):
        cluster = named_cluster(cluster)
    elif cluster is not None and not isinstance(cluster, Cluster):
        names = ", ".join(map(repr, backends.names()))
        msg = (
            f"cluster= takes a Cluster or a backend name ({names}), got "
            f"{type(cluster).__name__} {cluster!r}"
        )
        raise TypeError(msg)
    if cluster is not None:
        if not cluster.embedded:
            from lazyslurm.guard import note_used

            note_used(cluster)
        return cluster
    return current_cluster() or default_cluster()
