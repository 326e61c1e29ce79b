"""One declared option of a backend: name, type, default and one line of help.

Each backend declares its options once, as a tuple of :class:`Option` (``OPTIONS`` in
its module); :mod:`lazyslurm.options` gathers them for ``Cluster``, profiles and the docs.

>>> port = Option("port", "int", 22, "SSH port", ("ssh",), positive=True)
>>> port.problem(22), port.problem("22"), port.problem(0)
(None, "must be an integer, got a string ('22')", 'must be greater than zero, got 0')
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["BACKENDS", "COMMON", "KINDS", "Option", "kind_of"]

BACKENDS = ("local", "sync", "slurm", "ssh")


def kind_of(value: Any) -> str:
    """How TOML (and our messages) name the type of ``value``."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, (str, os.PathLike)):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"  # dates and times


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _str_list(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and all(isinstance(x, str) for x in v)


def _path(v: Any) -> bool:
    return isinstance(v, (str, os.PathLike))


# kind -> (expected, in words; test)
KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "str": ("a string", lambda v: isinstance(v, str)),
    "path": ("a string", _path),
    "int": ("an integer", _int),
    "number": ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
    "bool": ("a boolean (true or false)", lambda v: isinstance(v, bool)),
    "str_list": ("an array of strings", _str_list),
    "path_or_false": ("a string or false", lambda v: _path(v) or v is False),
    "paths": (
        "a string or an array of strings",
        lambda v: _path(v) or (isinstance(v, (list, tuple)) and all(_path(x) for x in v)),
    ),
    "str_or_int": ("a string or an integer", lambda v: isinstance(v, str) or _int(v)),
    "callable": ("a function", callable),
    "sbatch": (
        "a string, an integer, a boolean or an array of strings",
        lambda v: isinstance(v, (str, int, bool)) or _str_list(v),
    ),
    "bool_or_word": (
        'a boolean or "true"/"false"',
        lambda v: (
            isinstance(v, bool)
            or (isinstance(v, str) and v.lower() in ("true", "false", "yes", "no", "1", "0"))
        ),
    ),
    "env": (
        'a table of strings (NAME = "value")',
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
    ),
}


@attrs.frozen
class Option:
    """A ``Cluster`` option (and profile key) of one or more backends."""

    name: str
    kind: str  # a key of KINDS
    default: Any
    help: str
    backends: tuple[str, ...] = BACKENDS  # the backends that take it
    positive: bool = False
    choices: tuple[str, ...] = ()
    task_default: bool = False  # a task option the cluster can default (partition, ...)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` ("must be ..."), or None."""
        expected, ok = KINDS[self.kind]
        if not ok(value):
            shown = f" ({value!r})" if isinstance(value, (str, int, float)) else ""
            return f"must be {expected}, got {kind_of(value)}{shown}"
        if self.positive and value <= 0:
            return f"must be greater than zero, got {value!r}"
        if self.choices and value not in self.choices:
            return f"must be one of {', '.join(self.choices)}, got {value!r}"
        return None

    def applies_to(self, backend: str) -> str | None:
        """Why this option does not apply to ``backend`` (None when it does)."""
        if backend in self.backends:
            return None
        names = " or ".join(f'"{b}"' for b in self.backends)
        return f"only applies to backend {names}"


COMMON = (
    Option("backend", "str", "local", "where graphs run", choices=BACKENDS),
    Option(
        "workdir",
        "path",
        "~/.lazyslurm",
        "run directories ($LAZYSLURM_WORKDIR; a path on the cluster for ssh)",
    ),
    Option("max_array_size", "int", None, "largest array job (default: Slurm's)", positive=True),
    Option("poll_min_s", "number", 0.2, "shortest wait between polls", positive=True),
    Option("poll_max_s", "number", 5.0, "longest wait between polls", positive=True),
    Option("cache", "bool", False, "reuse results already in the store, across runs"),
    Option(
        "max_core_hours",
        "number",
        None,
        "budget: refuse a graph whose worst case may exceed it (see preview)",
        positive=True,
    ),
    Option(
        "dynamic_max_depth",
        "int",
        4,
        "deepest nesting of tasks that return lazy values (docs/dynamic.md)",
        positive=True,
    ),
    Option(
        "dynamic_max_tasks",
        "int",
        10000,
        "most tasks all dynamic expansions may add to one run",
        positive=True,
    ),
)
