"""Cluster options: the ones every backend takes, and the record of one option.

Each backend declares its own options once, beside its code, as a ``TypedDict`` of
``Annotated[TYPE, Opt(...)]`` keys (see :mod:`lazyslurm.graph.options`):
:class:`CommonOptions` here for every backend, ``LocalOptions``, ``SlurmOptions``,
``SSHOptions`` and ``PackagingOptions`` beside theirs, and the task defaults a Slurm
cluster takes (:class:`~lazyslurm.graph.resources.TaskDefaults`).
:mod:`lazyslurm.options` gathers them for ``Cluster``, profiles and the docs.

>>> port = Option.of("port", int, 22, "SSH port", ("ssh",), positive=True)
>>> port.problem(22), port.problem("22"), port.problem(0)
(None, "must be an integer, got a string ('22')", 'must be greater than zero, got 0')
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, TypedDict

import attrs

from lazyslurm.graph.options import Declared, Opt, declared, kind_of

__all__ = ["CommonOptions", "Option", "kind_of", "options_of", "resolve"]


class CommonOptions(TypedDict, total=False):
    """Options of every backend."""

    workdir: Annotated[
        str | os.PathLike[str],
        Opt(
            "run directories ($LAZYSLURM_WORKDIR; a path on the cluster for ssh)",
            default="~/.lazyslurm",
        ),
    ]
    max_array_size: Annotated[int, Opt("largest array job (default: Slurm's)", positive=True)]
    poll_min_s: Annotated[float, Opt("shortest wait between polls", default=0.2, positive=True)]
    poll_max_s: Annotated[float, Opt("longest wait between polls", default=5.0, positive=True)]
    cache: Annotated[bool, Opt("reuse results already in the store, across runs", default=False)]
    max_core_hours: Annotated[
        float,
        Opt("budget: refuse a graph whose worst case may exceed it (see preview)", positive=True),
    ]
    dynamic_max_depth: Annotated[
        int,
        Opt(
            "deepest nesting of tasks that return lazy values (docs/dynamic.md)",
            default=4,
            positive=True,
        ),
    ]
    dynamic_max_tasks: Annotated[
        int,
        Opt("most tasks all dynamic expansions may add to one run", default=10_000, positive=True),
    ]
    callbacks: Annotated[
        Sequence[Any], Opt("objects called on run events (every run)", default=(), profile=False)
    ]


@attrs.frozen
class Option:
    """A ``Cluster`` option (and profile key): its declaration and the backends taking it."""

    declared: Declared
    backends: tuple[str, ...]
    task_default: bool = False  # a task option the cluster defaults for its tasks

    @classmethod
    def of(
        cls,
        name: str,
        annotation: Any,
        default: Any,
        help: str,
        backends: tuple[str, ...],
        **opt: Any,
    ) -> Option:
        """An option declared in code (tests, small examples)."""
        return cls(Declared(name, annotation, Opt(help, default=default, **opt)), backends)

    @property
    def name(self) -> str:
        return self.declared.name

    @property
    def default(self) -> Any:
        return self.declared.default

    @property
    def help(self) -> str:
        return self.declared.help

    @property
    def choices(self) -> tuple[Any, ...]:
        return self.declared.choices

    @property
    def profile(self) -> bool:
        """Whether a profile file may set it (not for Python objects, such as callbacks)."""
        return self.declared.opt.profile

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` ("must be ..."), or None."""
        return self.declared.problem(value)

    def applies_to(self, backend: str) -> str | None:
        """Why this option does not apply to ``backend`` (None when it does)."""
        if backend in self.backends:
            return None
        names = " or ".join(f'"{b}"' for b in self.backends)
        return f"only applies to backend {names}"


def options_of(*typed_dicts: type) -> dict[str, Declared]:
    """The options the ``TypedDict`` declarations hold, by name."""
    out: dict[str, Declared] = {}
    for td in typed_dicts:
        out.update(declared(td))
    return out


def resolve(typed_dict: type, given: Mapping[str, Any], *, check: bool = False) -> dict[str, Any]:
    """Every option ``typed_dict`` declares: the value given (parsed by its Opt, if it has
    a parser), else its declared default. Others in ``given`` are ignored. ``check``: a
    value not of the declared type raises :class:`~lazyslurm.errors.OptionTypeError`
    (``Cluster`` checks before; direct callers of a backend may not have).

    >>> resolve(CommonOptions, {"cache": True})["poll_min_s"], resolve(CommonOptions, {})["cache"]
    (0.2, False)
    """
    out = {}
    for name, d in declared(typed_dict).items():
        value = given.get(name)
        if value is None:
            out[name] = d.default
            continue
        wrong = d.problem(value) if check else None
        if wrong is not None:
            from lazyslurm.errors import OptionTypeError

            msg = f"{name} {wrong}"
            raise OptionTypeError(msg)
        out[name] = d.opt.parse(name, value) if d.opt.parse is not None else value
    return out
