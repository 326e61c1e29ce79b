"""The backends, by name: one registry instead of tests on backend names (the public
names are re-exported by :mod:`lazyslurm.backends`).

Built in: ``local`` and ``sync`` (:mod:`lazyslurm.backends.local`), ``slurm`` and ``ssh``
(:mod:`lazyslurm.backends.slurm`). Others come from a :func:`register` call or from an
entry point of the group ``lazyslurm.backends`` (a ``BackendSpec``, or a function taking
nothing that returns one), loaded when a name is not known yet. docs/backends.md shows a
complete backend in one file.

>>> spec = get("local")
>>> spec.name, "max_workers" in spec.option_names()
('local', True)
>>> get("slrum")
Traceback (most recent call last):
...
lazyslurm.errors.ClusterConfigError: unknown backend 'slrum'; did you mean 'slurm'? ...

Nothing here is imported at ``import lazyslurm``; a backend's module is imported when its
spec is first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import attrs

from lazyslurm.errors import ClusterConfigError

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "BackendSpec",
    "get",
    "names",
    "register",
    "specs",
]


@attrs.frozen
class BackendSpec:
    """A backend as the registry (:mod:`lazyslurm.backends`) knows it.

    ``factory(workdir=..., max_array_size=..., profile=..., **options)`` makes it:
    ``workdir`` is None for the default, ``options`` are the Cluster options this
    backend declares in ``options`` (``TypedDict`` s of ``Annotated[TYPE, Opt(...)]``
    keys, beyond the common ones every backend takes). A ``"module:name"`` string is
    imported on first use. ``remote``: its work directory is a path on another host
    (``~`` is the home there), not a local path. ``embedded``: it runs elements on this
    machine without a scheduler (its jobs end with the process; asking it for Slurm
    resources is a sign of a forgotten ``with cluster:``).
    """

    name: str
    factory: Callable[..., Any] | str  # returns a Backend (lazyslurm.backends.base)
    options: tuple[type, ...] = ()
    help: str = ""
    remote: bool = False
    embedded: bool = False

    def declared(self) -> dict[str, Any]:
        """Its own options (beyond the common ones): name -> Declared."""
        from lazyslurm.backends.option import options_of

        return options_of(*self.options)

    def option_names(self) -> tuple[str, ...]:
        return tuple(self.declared())

    def make(self, **options: Any) -> Any:
        """A new backend (a :class:`~lazyslurm.backends.base.Backend`) with ``options``."""
        factory = self.factory
        if isinstance(factory, str):
            import importlib

            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        backend = factory(**options)
        # looked up without calling properties (a Slurm backend's workdir asks the cluster)
        have = set(dir(type(backend))) | set(getattr(backend, "__dict__", {}))
        missing = [n for n in _REQUIRED if n not in have]
        if missing:
            from lazyslurm.errors import ClusterConfigError

            msg = (
                f"backend {self.name!r} ({type(backend).__name__}) lacks {', '.join(missing)} "
                f"of the Backend protocol: subclass lazyslurm.backends.BackendBase, which "
                f"has defaults for the optional part (docs/backends.md)"
            )
            raise ClusterConfigError(msg)
        return backend


_REQUIRED = (
    "name", "shell", "workdir", "defaults", "ships_by_value", "node", "max_array_size",
    "start", "poll", "wait_for_change", "cancel", "read_files", "close", "pack_limits",
    "cancel_elements", "dynamic_records", "child_config", "by_value_modules", "cluster_facts",
    "expected_starts", "accounting", "live_runs_script",
)  # fmt: skip


ENTRY_POINT_GROUP = "lazyslurm.backends"
# built-in backends: the module whose SPECS declares them (imported on first use)
_BUILTIN = {
    "local": "lazyslurm.backends.local",
    "sync": "lazyslurm.backends.local",
    "slurm": "lazyslurm.backends.slurm",
    "ssh": "lazyslurm.backends.slurm",
}
_specs: dict[str, BackendSpec] = {}  # the process's registry (registered and loaded)
_scanned: list[bool] = [False]  # entry points read once


def register(spec: BackendSpec, *, replace: bool = False) -> BackendSpec:
    """Make ``spec`` a backend ``Cluster(spec.name, ...)`` and profiles can name.

    A name already taken is refused unless ``replace`` (the built-in names too)."""
    if not isinstance(spec, BackendSpec):
        msg = f"register() takes a BackendSpec, got {type(spec).__name__}"
        raise TypeError(msg)
    if not replace and spec.name in _all_names() and _load(spec.name) != spec:
        msg = f"a backend named {spec.name!r} is already registered: pass replace=True"
        raise ClusterConfigError(msg)
    _specs[spec.name] = spec
    return spec


def _load(name: str) -> BackendSpec | None:
    spec = _specs.get(name)
    if spec is not None:
        return spec
    module = _BUILTIN.get(name)
    if module is not None:
        for s in importlib.import_module(module).SPECS:
            _specs.setdefault(s.name, s)
        return _specs.get(name)
    _scan_entry_points()
    return _specs.get(name)


def _scan_entry_points() -> None:
    if _scanned[0]:
        return
    _scanned[0] = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj: Any = ep.load()
            spec = obj() if callable(obj) and not isinstance(obj, BackendSpec) else obj
        except Exception as exc:
            msg = f"the backend entry point {ep.name!r} ({ep.value}) failed to load: {exc}"
            raise ClusterConfigError(msg) from exc
        if not isinstance(spec, BackendSpec):
            msg = f"the backend entry point {ep.name!r} ({ep.value}) gave no BackendSpec"
            raise ClusterConfigError(msg)
        _specs.setdefault(spec.name, spec)


def _all_names() -> list[str]:
    _scan_entry_points()
    return list(dict.fromkeys([*_BUILTIN, *_specs]))


BUILTIN: tuple[str, ...] = tuple(_BUILTIN)  # the backends lazyslurm ships


def names() -> tuple[str, ...]:
    """Every backend name: built in, registered, or from an entry point."""
    return tuple(_all_names())


def specs() -> tuple[BackendSpec, ...]:
    """Every backend's spec (imports the built-in backends' modules)."""
    return tuple(s for n in _all_names() if (s := _load(n)) is not None)


def get(name: str) -> BackendSpec:
    """The spec of backend ``name``; an unknown name is refused at once, with the closest
    known one (:class:`~lazyslurm.errors.ClusterConfigError`)."""
    if not isinstance(name, str):
        msg = f"a backend is named by a string, got {type(name).__name__}"
        raise ClusterConfigError(msg)
    spec = _load(name)
    if spec is None:
        from lazyslurm.graph.options import suggest

        known = _all_names()
        hint = suggest(name, known)
        msg = (
            f"unknown backend {name!r}{'; ' + hint if hint else ''} (known: "
            f"{', '.join(known)}; others are added with lazyslurm.backends.register or "
            f"an entry point of group {ENTRY_POINT_GROUP!r})"
        )
        raise ClusterConfigError(msg)
    return spec
