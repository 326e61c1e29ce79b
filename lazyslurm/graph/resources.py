"""Task options: parsed and validated once, when the decorator runs.

Every value is normalised to one form with its unit in its name (``timeout_min``,
``mem_mb``), so two tasks asking for the same thing in different spellings compare equal
and can share an array job.

>>> r = Resources.from_options(time="00:03:00", mem="256M", cpus_per_task=1)
>>> (r.timeout_min, r.mem_mb, r.cpus_per_task)
(3, 256, 1)
>>> parse_time("1-00:00:00"), parse_mem("4G")
(1440, 4096)
"""

from __future__ import annotations

import datetime as _dt
import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

from lazyslurm.errors import InvalidOptionError, OptionTypeError

__all__ = [
    "OPTION_NAMES",
    "PACKAGING_MODES",
    "SBATCH_OPTIONS",
    "Resources",
    "parse_mem",
    "parse_time",
]

_TIME_FORMS = (
    '"MM:SS", "HH:MM:SS", "D-HH:MM:SS" (also "D-HH", "D-HH:MM"), '
    "an int of minutes or a datetime.timedelta"
)
_MEM_FORMS = '"256M", "4G", "1T", "512K" (binary units) or an int of megabytes'
_NAME_RE = re.compile(r"^[A-Za-z0-9_.+\-]+$")


def _bad(option: str, value: object, forms: str) -> InvalidOptionError:
    msg = f"invalid {option}={value!r}: accepted forms are {forms}"
    return InvalidOptionError(msg)


def _wrong_type(option: str, value: object, forms: str) -> OptionTypeError:
    msg = f"invalid type for {option}={value!r} ({type(value).__name__}): expected {forms}"
    return OptionTypeError(msg)


def parse_time(value: object, option: str = "time") -> int:
    """Parse a Slurm time limit into whole minutes (rounded up, at least 1).

    >>> [parse_time(v) for v in ("30:00", "01:30:00", "2-00:00:00", 5, "0:30")]
    [30, 90, 2880, 5, 1]
    """
    if isinstance(value, bool):
        raise _wrong_type(option, value, _TIME_FORMS)
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int):
        seconds = value * 60
    elif isinstance(value, str):
        seconds = _parse_time_str(value.strip(), option)
    else:
        raise _wrong_type(option, value, _TIME_FORMS)
    if seconds <= 0:
        raise _bad(option, value, _TIME_FORMS + " (greater than zero)")
    return max(1, math.ceil(seconds / 60))


def _parse_time_str(text: str, option: str) -> float:
    days = 0
    rest = text
    if "-" in text:
        day_part, rest = text.split("-", 1)
        if not day_part.isdigit():
            raise _bad(option, text, _TIME_FORMS)
        days = int(day_part)
    parts = rest.split(":")
    if not all(p.isdigit() for p in parts) or not 1 <= len(parts) <= 3:
        raise _bad(option, text, _TIME_FORMS)
    nums = [int(p) for p in parts]
    if "-" in text:  # D-HH, D-HH:MM, D-HH:MM:SS
        nums += [0] * (3 - len(nums))
        hours, minutes, seconds = nums
    elif len(nums) == 3:
        hours, minutes, seconds = nums
    elif len(nums) == 2:  # MM:SS
        hours, (minutes, seconds) = 0, nums
    else:  # bare minutes, as Slurm reads it
        hours, minutes, seconds = 0, nums[0], 0
    if (minutes >= 60 and (hours or days)) or seconds >= 60:
        raise _bad(option, text, _TIME_FORMS)
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


_MEM_UNITS = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def parse_mem(value: object, option: str = "mem") -> int:
    """Parse a memory size into whole megabytes (rounded up).

    >>> [parse_mem(v) for v in ("256M", "4G", "1.5G", 512, "100MB")]
    [256, 4096, 1536, 512, 100]
    """
    if isinstance(value, bool):
        raise _wrong_type(option, value, _MEM_FORMS)
    if isinstance(value, int):
        mb: float = value
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT])(?:i?B)?\s*", value, re.IGNORECASE)
        if not m:
            raise _bad(option, value, _MEM_FORMS)
        mb = float(m.group(1)) * _MEM_UNITS[m.group(2).upper()]
    else:
        raise _wrong_type(option, value, _MEM_FORMS)
    if mb <= 0:
        raise _bad(option, value, _MEM_FORMS + " (greater than zero)")
    return math.ceil(mb)


def _positive_int(option: str, value: object, *, zero_ok: bool = False) -> int:
    forms = "a non-negative int" if zero_ok else "a positive int"
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(option, value, forms)
    if value < 0 or (value == 0 and not zero_ok):
        raise _bad(option, value, forms)
    return value


def _bool(option: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _wrong_type(option, value, "True or False")
    return value


def _name(option: str, value: object) -> str:
    forms = "a non-empty string of letters, digits and _ . + -"
    if not isinstance(value, str):
        raise _wrong_type(option, value, forms)
    if not _NAME_RE.match(value):
        raise _bad(option, value, forms)
    return value


def _free_text(option: str, value: object) -> str:
    forms = "a non-empty string without newlines"
    if not isinstance(value, str):
        raise _wrong_type(option, value, forms)
    if not value.strip() or "\n" in value or "\r" in value or "\0" in value:
        raise _bad(option, value, forms)
    return value


def _gpus(value: object, option: str = "gpus") -> str:
    forms = 'an int count or "TYPE:COUNT" (for example "a100:2")'
    if isinstance(value, bool):
        raise _wrong_type(option, value, forms)
    if isinstance(value, int):
        if value < 0:
            raise _bad(option, value, forms)
        return str(value)
    if isinstance(value, str) and re.fullmatch(r"([A-Za-z0-9_\-.]+:)?\d+", value):
        return value
    if isinstance(value, str):
        raise _bad(option, value, forms)
    raise _wrong_type(option, value, forms)


def _gather(value: object) -> str | None:
    forms = '"rank0" (rank 0\'s return value, the default) or "all" (a list, one per rank)'
    if not isinstance(value, str):
        raise _wrong_type("gather", value, forms)
    if value not in ("rank0", "all"):
        raise _bad("gather", value, forms)
    return None if value == "rank0" else value


def _pack(value: object) -> int | str | None:
    """``pack=k`` (k >= 1 map elements per Slurm element) or ``pack="auto"``.

    >>> _pack(8), _pack("auto"), _pack(1)
    (8, 'auto', None)
    """
    forms = 'a positive int (elements per Slurm element) or "auto"'
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        raise _bad("pack", value, forms)
    k = _positive_int("pack", value)
    return None if k == 1 else k


PACKAGING_MODES = ("auto", "inherit", "by-value", "wheel", "container")


def _packaging(value: object) -> str:
    forms = " or ".join(repr(m) for m in PACKAGING_MODES)
    if not isinstance(value, str):
        raise _wrong_type("packaging", value, forms)
    if value not in PACKAGING_MODES:
        raise _bad("packaging", value, forms)
    return value


def _extra_sbatch(value: object) -> tuple[str, ...]:
    forms = 'a list of raw sbatch flags such as ["--exclusive", "--mail-type=END"]'
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _wrong_type("extra_sbatch", value, forms)
    for flag in value:
        if not isinstance(flag, str):
            raise _wrong_type("extra_sbatch", flag, forms)
        if not flag.startswith("-") or "\n" in flag or "\0" in flag:
            raise _bad("extra_sbatch", flag, forms)
    return tuple(value)


def _int_text(value: object) -> object:
    """An int written as text (as ``as_options`` gives long options back) is that int."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return value


def _count(option: str, value: object, zero_ok: bool = False) -> str:
    return str(_positive_int(option, _int_text(value), zero_ok=zero_ok))


def _int_any(option: str, value: object) -> int:
    value = _int_text(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _wrong_type(option, value, "an int")
    return value


def _flag(option: str, value: object) -> str:
    """A switch (``exclusive=True``) or a switch with a value (``exclusive="user"``)."""
    forms = "True, or a string value for the flag"
    if value is True:
        return ""
    if isinstance(value, str):
        return _free_text(option, value)
    raise _wrong_type(option, value, forms)


_MAIL_TYPES = frozenset(
    "NONE BEGIN END FAIL REQUEUE ALL INVALID_DEPEND STAGE_OUT TIME_LIMIT TIME_LIMIT_90 "
    "TIME_LIMIT_80 TIME_LIMIT_50 ARRAY_TASKS".split()
)


def _mail_type(option: str, value: object) -> str:
    forms = f"a comma-separated list of {', '.join(sorted(_MAIL_TYPES))}"
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    if not isinstance(value, str):
        raise _wrong_type(option, value, forms)
    parts = [p.strip().upper() for p in value.split(",")]
    if not all(p in _MAIL_TYPES for p in parts):
        raise _bad(option, value, forms)
    return ",".join(parts)


def _gpus_like(option: str, value: object) -> str:
    try:
        return _gpus(value)
    except (InvalidOptionError, OptionTypeError) as exc:
        raise type(exc)(str(exc).replace("gpus=", f"{option}=", 1)) from None


@attrs.frozen
class SbatchOption:
    """One sbatch long option: its flag and how its value is checked and written."""

    flag: str  # without the leading "--"
    parse: Any  # (option name, value) -> the flag's argument as text ("" for a switch)


# sbatch's long options a task accepts by their Python names (``ntasks_per_node=4`` is
# ``--ntasks-per-node=4``), beyond the ones with fields of their own in Resources. One
# table: the option registry of the cluster profiles reads it too. Flags lazyslurm sets
# itself (--array, --output, --error, --dependency, --job-name, --chdir) are not here.
SBATCH_OPTIONS: dict[str, SbatchOption] = {
    name: SbatchOption(name.replace("_", "-"), parse)
    for name, parse in {
        "ntasks_per_core": _count,
        "ntasks_per_socket": _count,
        "ntasks_per_gpu": _count,
        "cpus_per_gpu": _count,
        "gpus_per_socket": _gpus_like,
        "mem_per_cpu": lambda o, v: f"{parse_mem(v, o)}M",
        "mem_per_gpu": lambda o, v: f"{parse_mem(v, o)}M",
        "tmp": lambda o, v: f"{parse_mem(v, o)}M",
        "mincpus": _count,
        "sockets_per_node": _count,
        "cores_per_socket": _count,
        "threads_per_core": _count,
        "exclusive": _flag,
        "oversubscribe": _flag,
        "contiguous": _flag,
        "no_requeue": _flag,
        "overcommit": _flag,
        "mail_type": _mail_type,
        "mail_user": _free_text,
        "reservation": _name,
        "wckey": _name,
        "licenses": _free_text,
        "nodelist": _free_text,
        "exclude": _free_text,
        "begin": _free_text,
        "deadline": _free_text,
        "time_min": lambda o, v: str(parse_time(v, o)),
        "nice": lambda o, v: str(_int_any(o, v)),
        "priority": lambda o, v: _count(o, v, zero_ok=True),
        "comment": _free_text,
        "hint": _free_text,
        "distribution": _free_text,
        "signal": _free_text,
        "switches": _free_text,
        "gres_flags": _free_text,
        "core_spec": lambda o, v: _count(o, v, zero_ok=True),
        "thread_spec": lambda o, v: _count(o, v, zero_ok=True),
        "network": _free_text,
        "clusters": _free_text,
        "profile": _free_text,
    }.items()
}


@attrs.frozen
class Resources:
    """Normalised Slurm resources of a task. Two equal ``Resources`` share array jobs."""

    timeout_min: int | None = None
    mem_mb: int | None = None
    cpus_per_task: int | None = None
    gpus: str | None = None
    gres: str | None = None
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int | None = None
    ntasks: int | None = None
    ntasks_per_node: int | None = None
    gpus_per_node: str | None = None
    gpus_per_task: str | None = None
    gather: str | None = None  # None: rank 0's value; "all": every rank's value, in a list
    constraint: str | None = None
    job_name: str | None = None
    max_concurrent: int | None = None
    extra_sbatch: tuple[str, ...] = ()
    retries: int = 0
    packaging: str | None = None  # how the task's code reaches the cluster (PACKAGING_MODES)
    # other sbatch long options (SBATCH_OPTIONS), sorted: (python name, flag argument)
    sbatch: tuple[tuple[str, str], ...] = ()
    requeue: bool = False  # sbatch --requeue; preemption and node failure run it again
    pack: int | str | None = None  # map elements per Slurm element: k > 1, or "auto"

    @classmethod
    def from_options(cls, **options: Any) -> Resources:
        """Validate decorator options (``time="1:00:00"``, ``mem="4G"``, ...)."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            from lazyslurm.graph.options import suggest

            named = [
                f"{n} ({h})" if (h := suggest(n, OPTION_NAMES, options[n])) else n
                for n in unknown
            ]
            msg = f"unknown task option(s) {', '.join(named)}; known: {', '.join(OPTION_NAMES)}"
            raise OptionTypeError(msg)
        out: dict[str, Any] = {}
        long: dict[str, str] = {}
        for name, value in options.items():
            if value is None or name == "pure" or (value is False and name in SBATCH_OPTIONS):
                continue
            option = SBATCH_OPTIONS.get(name)
            if option is not None:
                long[name] = option.parse(name, value)
            else:
                out.update(_PARSERS[name](value))
        if long:
            out["sbatch"] = tuple(sorted(long.items()))
        res = cls(**out)
        if res.pack is not None and res.ranks > 1:
            msg = (
                f"pack={res.pack!r} cannot combine with {res.ranks} ranks (ntasks/nodes): "
                f"a packed Slurm element runs its elements in one process"
            )
            raise InvalidOptionError(msg)
        return res

    @property
    def ranks(self) -> int:
        """How many processes run the function: ``ntasks``, else ``nodes`` x
        ``ntasks_per_node``, else 1. More than one means one launch per rank (``srun``).

        >>> Resources(ntasks=4).ranks, Resources(nodes=2, ntasks_per_node=4).ranks
        (4, 8)
        >>> Resources(nodes=2).ranks  # no task layout asked: one process, as before
        1
        """
        if self.ntasks is not None:
            return self.ntasks
        if self.ntasks_per_node is not None:
            return (self.nodes or 1) * self.ntasks_per_node
        return 1
    def sbatch_flags(self, defaults: Resources | None = None) -> list[str]:
        """The sbatch flags of these resources (``defaults`` fill what they leave
        unset), without the per-run ones (--array, --output, --job-name, ...)."""
        d = defaults or Resources()
        flags = []
        for field, form in _FIELD_FLAGS:
            value = getattr(self, field)
            if value is None:
                value = getattr(d, field)
            if value is not None:
                flags.append(form.format(value))
        long = {**dict(d.sbatch), **dict(self.sbatch)}
        for name in sorted(long):
            flag, arg = SBATCH_OPTIONS[name].flag, long[name]
            flags.append(f"--{flag}={arg}" if arg else f"--{flag}")
        flags.extend(d.extra_sbatch)
        flags.extend(self.extra_sbatch)
        return flags

    def as_options(self) -> dict[str, Any]:
        """The options that rebuild these resources (for ``task.options``)."""
        out: dict[str, Any] = {}
        for name, arg in self.sbatch:
            out[name] = arg or True
        for field in attrs.fields(Resources):
            if field.name == "sbatch":
                continue
            value = getattr(self, field.name)
            if value is None or value == () or (field.name in ("retries", "requeue") and not value):
                continue
            name = _FIELD_TO_OPTION.get(field.name, field.name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def describe(self) -> Mapping[str, str]:
        """Short human labels (for pictures and tables)."""
        out = {}
        if self.timeout_min is not None:
            out["time"] = f"{self.timeout_min}min"
        if self.mem_mb is not None:
            out["mem"] = f"{self.mem_mb}M"
        for name in ("cpus_per_task", "gpus", "gres", "partition", "account", "qos"):
            value = getattr(self, name)
            if value is not None:
                out["cpus" if name == "cpus_per_task" else name] = str(value)
        if self.ranks > 1:
            out["ranks"] = str(self.ranks)
        if self.pack is not None:
            out["pack"] = str(self.pack)
        return out


_PARSERS: dict[str, Any] = {
    "time": lambda v: {"timeout_min": parse_time(v)},
    "mem": lambda v: {"mem_mb": parse_mem(v)},
    "cpus_per_task": lambda v: {"cpus_per_task": _positive_int("cpus_per_task", v)},
    "gpus": lambda v: {"gpus": _gpus(v)},
    "gres": lambda v: {"gres": _free_text("gres", v)},
    "partition": lambda v: {"partition": _name("partition", v)},
    "account": lambda v: {"account": _name("account", v)},
    "qos": lambda v: {"qos": _name("qos", v)},
    "nodes": lambda v: {"nodes": _positive_int("nodes", v)},
    "ntasks": lambda v: {"ntasks": _positive_int("ntasks", v)},
    "ntasks_per_node": lambda v: {"ntasks_per_node": _positive_int("ntasks_per_node", v)},
    "gpus_per_node": lambda v: {"gpus_per_node": _gpus(v, "gpus_per_node")},
    "gpus_per_task": lambda v: {"gpus_per_task": _gpus(v, "gpus_per_task")},
    "gather": lambda v: {"gather": _gather(v)},
    "constraint": lambda v: {"constraint": _free_text("constraint", v)},
    "job_name": lambda v: {"job_name": _name("job_name", v)},
    "max_concurrent": lambda v: {"max_concurrent": _positive_int("max_concurrent", v)},
    "extra_sbatch": lambda v: {"extra_sbatch": _extra_sbatch(v)},
    "retries": lambda v: {"retries": _positive_int("retries", v, zero_ok=True)},
    "packaging": lambda v: {"packaging": _packaging(v)},
    "requeue": lambda v: {"requeue": _bool("requeue", v)},
    "pack": lambda v: {"pack": _pack(v)},
    "pure": lambda v: {},
}
OPTION_NAMES: tuple[str, ...] = (*_PARSERS, *SBATCH_OPTIONS)
_FIELD_FLAGS = (  # Resources fields written as sbatch flags, in this order
    ("timeout_min", "--time={}"),
    ("mem_mb", "--mem={}M"),
    ("cpus_per_task", "--cpus-per-task={}"),
    ("gpus", "--gpus={}"),
    ("gres", "--gres={}"),
    ("partition", "--partition={}"),
    ("account", "--account={}"),
    ("qos", "--qos={}"),
    ("nodes", "--nodes={}"),
    ("ntasks", "--ntasks={}"),
    ("ntasks_per_node", "--ntasks-per-node={}"),
    ("gpus_per_node", "--gpus-per-node={}"),
    ("gpus_per_task", "--gpus-per-task={}"),
    ("constraint", "--constraint={}"),
)
_FIELD_TO_OPTION = {"timeout_min": "time", "mem_mb": "mem"}
