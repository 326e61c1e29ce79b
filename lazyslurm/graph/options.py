"""How options are declared: once, as typed keywords that also carry their rules.

Every option of ``@task(...)``, ``task.options(...)`` and ``Cluster(...)`` is one key of a
``TypedDict`` whose annotation is ``Annotated[TYPE, Opt(...)]``: ``TYPE`` is what type
checkers see (through ``Unpack``), :class:`Opt` what the runtime needs (help, default,
parser, the ``Resources`` field it fills). :func:`declared` reads such a ``TypedDict``
into :class:`Declared` records, which check values against the same ``TYPE``: the typed
signature and the runtime checks cannot drift apart. Task options are declared in
:mod:`lazyslurm.graph.resources`, cluster options beside each backend.

Also "did you mean" for misspelt options (including the names submitit users bring).

>>> from typing import Annotated, Literal, TypedDict
>>> class Demo(TypedDict, total=False):
...     port: Annotated[int, Opt("SSH port", default=22, positive=True)]
...     status: Annotated[Literal["auto", "sacct"], Opt("status source", default="auto")]
>>> port, status = declared(Demo).values()
>>> port.problem(22), port.problem("22"), port.problem(0)
(None, "must be an integer, got a string ('22')", 'must be greater than zero, got 0')
>>> status.problem("squeue"), status.choices
("must be one of auto, sacct, got 'squeue'", ('auto', 'sacct'))
>>> suggest("timeout_min", ["time", "mem"], 30)
"did you mean time=30 (submitit's timeout_min; an int is minutes)?"
>>> suggest("partiton", ["partition", "account"])
"did you mean 'partition'?"
"""

from __future__ import annotations

import collections.abc
import datetime
import difflib
import os
import types
import typing
from collections.abc import Callable, Iterable
from typing import Annotated, Any, Literal, TypedDict  # noqa: F401 - for declarations read here

import attrs

__all__ = ["ALIASES", "Declared", "Opt", "declared", "kind_of", "suggest"]


@attrs.frozen
class Opt:
    """The runtime half of an option's declaration (the type is the annotation's)."""

    help: str
    default: Any = None
    # normalise a value already of the declared type: (option name, value) -> value; for a
    # task option, the value of its Resources field
    parse: Callable[[str, Any], Any] | None = None
    field: str | None = None  # task options: the Resources field it fills (None: its name)
    positive: bool = False
    profile: bool = True  # may be written in a profile file (False: Python objects only)
    scheduler: bool = False  # task options: a scheduler option with no field of its own
    # task options with a field: the scheduler receives it as an option of the same name
    # (Slurm: ``--cpus-per-task=4``; a field in ``*_mb`` is megabytes: ``--mem=4096M``)
    flag: bool = False


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
    return f"a {type(value).__name__}"  # dates and times, objects


# --------------------------------------------------------------------------- type checks


def _args(tp: Any) -> tuple[Any, ...]:
    return typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _members(tp: Any) -> tuple[Any, ...]:
    return _args(tp) if _is_union(tp) else (tp,)


def _words(tp: Any) -> list[str]:
    """What a value of type ``tp`` is, in words (one phrase per alternative)."""
    members = _members(tp)
    if str in members and any(typing.get_origin(m) is os.PathLike or m is os.PathLike
                              for m in members):  # fmt: skip
        members = tuple(m for m in members if m is not str)  # str | PathLike: "a string"
    out: list[str] = []
    for m in members:
        origin = typing.get_origin(m)
        if m is str or m is os.PathLike or origin is os.PathLike:
            out.append("a string")
        elif m is bool:
            out.append("a boolean (true or false)")
        elif m is int:
            out.append("an integer")
        elif m is float:
            out.append("a number")
        elif m is datetime.timedelta:
            out.append("a timedelta")
        elif m is Any or m is object:
            out.append("anything")
        elif origin is typing.Literal:
            values = _args(m)
            if all(isinstance(v, str) for v in values):
                out.append("a string")
            else:
                out.extend(repr(v).lower() for v in values)
        elif origin in (collections.abc.Sequence, list, tuple):
            inner = _words(_args(m)[0]) if _args(m) else ["anything"]
            plural = {"a string": "strings", "an integer": "integers"}.get(inner[0], "values")
            out.append(f"an array of {plural}")
        elif origin in (collections.abc.Mapping, dict):
            out.append('a table of strings (NAME = "value")')
        elif origin in (collections.abc.Callable,):
            out.append("a function")
        else:
            out.append(f"a {getattr(m, '__name__', m)}")
    return list(dict.fromkeys(out))


def _fits(tp: Any, value: Any) -> bool:
    """Whether ``value`` is of the declared type ``tp`` (what the annotation promises)."""
    for m in _members(tp):
        origin = typing.get_origin(m)
        if m is Any or m is object:
            return True
        if m is bool:
            if isinstance(value, bool):
                return True
        elif m is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif m is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif origin is typing.Literal:
            if any(value is v or (type(value) is type(v) and value == v) for v in _args(m)):
                return True
            if all(isinstance(v, str) for v in _args(m)) and isinstance(value, str):
                return True  # the choices are checked on their own (a clearer message)
        elif origin in (collections.abc.Sequence, list, tuple):
            inner = _args(m)[0] if _args(m) else Any
            if isinstance(value, (list, tuple)) and all(_fits(inner, v) for v in value):
                return True
        elif origin in (collections.abc.Mapping, dict):
            if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                return True
        elif origin is os.PathLike or m is os.PathLike:
            if isinstance(value, os.PathLike):
                return True
        elif origin is collections.abc.Callable:
            if callable(value):
                return True
        elif isinstance(m, type) and isinstance(value, m):
            return True
    return False


def _choices(tp: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal`` of strings (alone in the annotation), else ()."""
    members = _members(tp)
    if len(members) == 1 and typing.get_origin(members[0]) is typing.Literal:
        values = _args(members[0])
        if all(isinstance(v, str) for v in values):
            return values
    return ()


@attrs.frozen
class Declared:
    """One declared option: its name, declared type and :class:`Opt`."""

    name: str
    annotation: Any
    opt: Opt
    owner: str = ""  # the TypedDict that declares it

    @property
    def help(self) -> str:
        return self.opt.help

    @property
    def default(self) -> Any:
        return self.opt.default

    @property
    def choices(self) -> tuple[Any, ...]:
        return _choices(self.annotation)

    @property
    def expected(self) -> str:
        """The declared type in words: ``"a string or an integer"``."""
        words = _words(self.annotation)
        return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` ("must be ..."), or None."""
        if not _fits(self.annotation, value):
            shown = f" ({value!r})" if isinstance(value, (str, int, float)) else ""
            return f"must be {self.expected}, got {kind_of(value)}{shown}"
        choices = self.choices
        if choices and value not in choices:
            return f"must be one of {', '.join(choices)}, got {value!r}"
        if self.opt.positive and not isinstance(value, bool) and value <= 0:
            return f"must be greater than zero, got {value!r}"
        if self.opt.parse is not None:
            try:
                self.opt.parse(self.name, value)
            except (TypeError, ValueError) as exc:  # the option errors subclass these
                return f"is invalid: {exc}"
        return None

    def type_text(self) -> str:
        """The annotation as written for the docs (``str | int``)."""
        return _type_text(self.annotation)


def _type_text(tp: Any) -> str:
    if _is_union(tp):
        return " | ".join(_type_text(m) for m in _args(tp))
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return " | ".join(repr(v) for v in _args(tp))
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_text(a) for a in _args(tp))}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def declared(typed_dict: type) -> dict[str, Declared]:
    """The options a ``TypedDict`` of ``Annotated[TYPE, Opt(...)]`` keys declares, in
    declaration order (those of its bases first)."""
    hints = typing.get_type_hints(typed_dict, include_extras=True)
    out: dict[str, Declared] = {}
    owners = {
        name: base.__name__
        for base in reversed(typed_dict.__mro__)
        for name in getattr(base, "__annotations__", {})
    }
    for name, hint in hints.items():
        if typing.get_origin(hint) is not typing.Annotated:
            msg = f"{typed_dict.__name__}.{name} is not Annotated[TYPE, Opt(...)]"
            raise TypeError(msg)
        base, *meta = typing.get_args(hint)
        opts = [m for m in meta if isinstance(m, Opt)]
        if len(opts) != 1:
            msg = f"{typed_dict.__name__}.{name} needs exactly one Opt(...)"
            raise TypeError(msg)
        out[name] = Declared(name, base, opts[0], owners.get(name, typed_dict.__name__))
    return out


# --------------------------------------------------------------------------- did you mean


def _gb(value: Any) -> str:
    return f"mem={f'{value}G'!r}" if isinstance(value, (int, float)) else "mem"


# names from submitit (AutoExecutor and SlurmExecutor), sbatch's long options and other
# schedulers' libraries -> (our name, how to write it with the given value, a note)
_Alias = tuple[str, Callable[[Any], str] | None, str]
ALIASES: dict[str, _Alias] = {
    "timeout_min": ("time", None, "submitit's timeout_min; an int is minutes"),
    "slurm_time": ("time", None, "submitit's slurm_time"),
    "timeout": ("time", None, "an int is minutes"),
    "time_limit": ("time", None, "an int is minutes"),
    "walltime": ("time", None, "an int is minutes"),
    "mem_gb": ("mem", _gb, "submitit's mem_gb; mem takes units"),
    "slurm_mem": ("mem", None, "submitit's slurm_mem"),
    "memory": ("mem", None, 'mem takes units, e.g. "4G"'),
    "slurm_partition": ("partition", None, "submitit's slurm_partition"),
    "slurm_account": ("account", None, "submitit's slurm_account"),
    "slurm_qos": ("qos", None, "submitit's slurm_qos"),
    "slurm_constraint": ("constraint", None, "submitit's slurm_constraint"),
    "slurm_gres": ("gres", None, "submitit's slurm_gres"),
    "slurm_job_name": ("job_name", None, "submitit's slurm_job_name"),
    "name": ("job_name", None, "submitit's name"),
    "gpus_per_node": ("gpus", None, "submitit's gpus_per_node"),
    "slurm_gpus_per_node": ("gpus", None, "submitit's slurm_gpus_per_node"),
    "gpus_per_task": ("gpus", None, "lazyslurm's gpus is per array element"),
    "num_gpus": ("gpus", None, ""),
    "gpu": ("gpus", None, ""),
    "cpus": ("cpus_per_task", None, ""),
    "slurm_cpus_per_task": ("cpus_per_task", None, "submitit's slurm_cpus_per_task"),
    "tasks_per_node": ("ntasks", None, "submitit's tasks_per_node; ntasks is the total"),
    "slurm_ntasks_per_node": ("ntasks", None, "ntasks is the total"),
    "slurm_nodes": ("nodes", None, "submitit's slurm_nodes"),
    "slurm_array_parallelism": ("max_concurrent", None, "submitit's array parallelism"),
    "array_parallelism": ("max_concurrent", None, "submitit's array_parallelism"),
    "slurm_additional_parameters": ("extra_sbatch", None, 'a list, e.g. ["--exclusive"]'),
    "additional_parameters": ("extra_sbatch", None, 'a list, e.g. ["--exclusive"]'),
    "max_retries": ("retries", None, ""),
    "slurm_setup": ("setup", None, "submitit's slurm_setup"),
    "host": ("hostname", None, ""),
    "user": ("username", None, ""),
    "identity_file": ("key_filename", None, ""),
}


def suggest(name: str, known: Iterable[str], value: Any = None) -> str:
    """A "did you mean ..." hint for the unknown option ``name`` (``""`` if none).

    Aliases (submitit's names, sbatch's ``--long-options``) come first, then close
    spellings of the ``known`` names.
    """
    known = list(known)
    key = name.strip().lstrip("-").replace("-", "_").lower()
    if key in known and key != name:
        return f"did you mean {key!r}?"
    alias = ALIASES.get(key)
    if alias is not None and alias[0] in known:
        target, spell, note = alias
        if spell is not None:
            written = spell(value)
        elif value is not None and not isinstance(value, (dict, list, tuple, set)):
            written = f"{target}={value!r}"
        else:
            written = repr(target)
        return f"did you mean {written}{f' ({note})' if note else ''}?"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""
