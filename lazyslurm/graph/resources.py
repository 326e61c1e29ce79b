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
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypedDict

import attrs

from lazyslurm.errors import InvalidOptionError, OptionTypeError
from lazyslurm.graph.options import Opt, declared, suggest

__all__ = [
    "DEFAULTABLE",
    "FLAGS",
    "OPTION_NAMES",
    "PACKAGING_MODES",
    "SCHEDULER_OPTIONS",
    "TASK_OPTIONS",
    "Auto",
    "Learned",
    "Resources",
    "TaskDefaults",
    "TaskOptions",
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


def _gather(option: str, value: object) -> str | None:
    forms = '"rank0" (rank 0\'s return value, the default) or "all" (a list, one per rank)'
    if not isinstance(value, str):
        raise _wrong_type("gather", value, forms)
    if value not in ("rank0", "all"):
        raise _bad("gather", value, forms)
    return None if value == "rank0" else value


def _pack(option: str, value: object) -> int | str | None:
    """``pack=k`` (k >= 1 map elements per Slurm element) or ``pack="auto"``.

    >>> _pack("pack", 8), _pack("pack", "auto"), _pack("pack", 1)
    (8, 'auto', None)
    """
    forms = 'a positive int (elements per Slurm element) or "auto"'
    if value == "auto":
        return "auto"
    if isinstance(value, str):
        raise _bad("pack", value, forms)
    k = _positive_int("pack", value)
    return None if k == 1 else k


PackagingMode = Literal["auto", "inherit", "by-value", "wheel", "container"]
PACKAGING_MODES: tuple[str, ...] = typing.get_args(PackagingMode)


def _packaging(option: str, value: object) -> str:
    forms = " or ".join(repr(m) for m in PACKAGING_MODES)
    if not isinstance(value, str):
        raise _wrong_type("packaging", value, forms)
    if value not in PACKAGING_MODES:
        raise _bad("packaging", value, forms)
    return value


def _extra_sbatch(option: str, value: object) -> tuple[str, ...]:
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


def _count_or_zero(option: str, value: object) -> str:
    return _count(option, value, zero_ok=True)


def _retries(option: str, value: object) -> int:
    return _positive_int(option, value, zero_ok=True)


def _factor(option: str, value: object) -> float:
    """A growth factor per attempt (``on_oom=2.0``): a number greater than 1."""
    forms = "a number greater than 1 (the request is multiplied by it at each attempt)"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _wrong_type(option, value, forms)
    if not math.isfinite(value) or value <= 1:
        raise _bad(option, value, forms)
    return float(value)


def _max_mem(option: str, value: object) -> int:
    return parse_mem(value, option)


def _time_text(option: str, value: object) -> str:
    return str(parse_time(value, option))


def _nice(option: str, value: object) -> str:
    return str(_int_any(option, value))


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
class Auto:
    """A request learned from the task's past runs (``mem="auto"``, ``time="auto:1:00:00"``,
    docs/usage.md): ``fallback`` (MB or minutes) is what a task with no history asks for
    (None: the cluster's default). The planner replaces it by a number
    (:meth:`Resources.resolve`); an array job never holds one.

    >>> str(Auto()), str(Auto(4096))
    ('auto', 'auto:4096')
    """

    fallback: int | None = None

    def __str__(self) -> str:
        return "auto" if self.fallback is None else f"auto:{self.fallback}"


@attrs.frozen
class Learned:
    """What past runs of a task say it needs (:mod:`lazyslurm.planning.learn`): the
    requests ``mem_mb`` and ``timeout_min`` (None: no figures: the fallback is used), from
    ``elements`` measured elements of ``runs`` runs; ``peak_mb``/``elapsed_s`` are the
    95th percentiles they come from; ``older_code``: how many of those runs ran other
    code of the task (its figures are used all the same). ``auto``: the options the task
    learns (``"mem"``, ``"time"``)."""

    mem_mb: int | None = None
    timeout_min: int | None = None
    runs: int = 0
    elements: int = 0
    peak_mb: float | None = None
    elapsed_s: float | None = None
    older_code: int = 0
    auto: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "auto": list(self.auto)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Learned:
        names = {f.name for f in attrs.fields(cls)}
        fields = {k: v for k, v in data.items() if k in names}
        fields["auto"] = tuple(fields.get("auto", ()))
        return cls(**fields)

    def describe(self, asked: Resources) -> str:
        """One line: what was asked (``asked``: the array job's resources, learned values
        in) and where it comes from, or that there is no history yet.

        >>> Learned(256, None, 3, 12, 210.0, 40.0, auto=("mem",)).describe(Resources(mem_mb=256))
        'mem 256M learned from 3 run(s) (12 elements, peak p95 210M x 1.2)'
        >>> Learned(auto=("mem", "time")).describe(Resources(mem_mb=1024))
        'no history yet: mem 1024M (its fallback), time the cluster default'
        """
        parts, first = [], []
        for word, field, unit in (("mem", "mem_mb", "M"), ("time", "timeout_min", "min")):
            if word not in self.auto:
                continue
            if getattr(self, field) is not None:
                parts.append(f"{word} {getattr(self, field)}{unit}")
            elif getattr(asked, field) is not None:
                first.append(f"{word} {getattr(asked, field)}{unit} (its fallback)")
            else:
                first.append(f"{word} the cluster default")
        if not parts:
            return "no history yet: " + ", ".join(first)
        basis = []
        if self.peak_mb is not None and "mem" in self.auto:
            basis.append(f"peak p95 {self.peak_mb:.0f}M x {MEM_MARGIN}")
        if self.elapsed_s is not None and "time" in self.auto:
            basis.append(f"elapsed p95 {self.elapsed_s:.0f}s x {TIME_MARGIN}")
        line = (
            f"{' and '.join(parts)} learned from {self.runs} run(s) ({self.elements} "
            f"elements, {', '.join(basis)})"
        )
        if first:
            line += "; no figures yet for " + ", ".join(first)
        if self.older_code:
            line += (
                f"; the task's code changed since {self.older_code} of those runs (their "
                "figures are used all the same: memory rarely jumps)"
            )
        return line


MEM_MARGIN = 1.2  # learned memory: p95 of the measured peaks times this
TIME_MARGIN = 1.5  # learned time: p95 of the elapsed times times this


@attrs.frozen
class Resources:
    """Normalised Slurm resources of a task. Two equal ``Resources`` share array jobs.

    ``timeout_min`` and ``mem_mb`` of a task may be :class:`Auto` (learned from its past
    runs); those of an array job are numbers (:meth:`resolve`)."""

    timeout_min: int | Auto | None = None
    mem_mb: int | Auto | None = None
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
    # the scheduler's other options (SCHEDULER_OPTIONS), sorted: (name, normalised text)
    scheduler: tuple[tuple[str, str], ...] = ()
    requeue: bool = False  # sbatch --requeue; preemption and node failure run it again
    pack: int | str | None = None  # map elements per Slurm element: k > 1, or "auto"
    # on-cluster retries with more (docs/usage.md#escalation): memory x on_oom per attempt
    # after OUT_OF_MEMORY, up to max_mem_mb; time x on_timeout after TIMEOUT
    on_oom: float | None = None
    on_timeout: float | None = None
    max_mem_mb: int | None = None

    @classmethod
    def from_options(cls, **options: Any) -> Resources:
        """Validate task options (``time="1:00:00"``, ``mem="4G"``, ...): see
        :class:`TaskOptions`, their one declaration."""
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            named = [
                f"{n} ({h})" if (h := suggest(n, OPTION_NAMES, options[n])) else n for n in unknown
            ]
            msg = f"unknown task option(s) {', '.join(named)}; known: {', '.join(OPTION_NAMES)}"
            raise OptionTypeError(msg)
        out: dict[str, Any] = {}
        scheduler: dict[str, str] = {}
        for name, value in options.items():
            opt = TASK_OPTIONS[name].opt
            if value is None or (value is False and opt.scheduler):
                continue
            assert opt.parse is not None, name
            if opt.field == "":  # a task option, not a resource (pure): checked only
                opt.parse(name, value)
            elif opt.scheduler:
                scheduler[name] = opt.parse(name, value)
            else:
                out[_FIELD_OF[name]] = opt.parse(name, value)
        if scheduler:
            out["scheduler"] = tuple(sorted(scheduler.items()))
        res = cls(**out)
        if res.pack is not None and res.ranks > 1:
            msg = (
                f"pack={res.pack!r} cannot combine with {res.ranks} ranks (ntasks/nodes): "
                f"a packed Slurm element runs its elements in one process"
            )
            raise InvalidOptionError(msg)
        res._check_escalation()
        return res

    def _check_escalation(self) -> None:
        """``on_oom``/``on_timeout``/``max_mem`` make sense only together with what they
        act on: a clear error at decoration time, never an option silently ignored."""
        for name in ("on_oom", "on_timeout"):
            if getattr(self, name) is not None and not self.retries:
                msg = (
                    f"{name}={getattr(self, name)!r} needs retries=N (N > 0): it says how "
                    f"the request grows at each of the N on-cluster attempts"
                )
                raise InvalidOptionError(msg)
        if self.max_mem_mb is not None:
            if self.on_oom is None:
                msg = (
                    f"max_mem={self.max_mem_mb}M caps on_oom's escalation; without on_oom "
                    f"it would do nothing: set on_oom (and retries), or drop max_mem"
                )
                raise InvalidOptionError(msg)
            if isinstance(self.mem_mb, int) and self.max_mem_mb < self.mem_mb:
                msg = f"max_mem={self.max_mem_mb}M is below mem={self.mem_mb}M"
                raise InvalidOptionError(msg)

    @property
    def guarded(self) -> bool:
        """Whether its array jobs get a guard job on the cluster that resubmits elements
        lost for infrastructure reasons (docs/reliability.md#retries-on-the-cluster)."""
        return bool(self.retries) or self.requeue

    @classmethod
    def defaults_from(cls, options: Mapping[str, Any]) -> Resources:
        """A cluster's task defaults, from its options (those of :class:`TaskDefaults`;
        others are ignored).

        >>> Resources.defaults_from({"partition": "debug", "poll_min_s": 1}).partition
        'debug'
        """
        res = cls.from_options(**{k: v for k, v in options.items() if k in DEFAULTABLE})
        if res.learns:
            which = "mem" if isinstance(res.mem_mb, Auto) else "time"
            msg = (
                f"{which}={options[which]!r} cannot be a cluster's default: requests are "
                f"learned per task; set it on the tasks (@task({which}=...) or "
                f"task.options({which}=...))"
            )
            raise InvalidOptionError(msg)
        return res

    @property
    def learns(self) -> bool:
        """Whether a request is learned from past runs (``"auto"``: :class:`Auto`)."""
        return isinstance(self.mem_mb, Auto) or isinstance(self.timeout_min, Auto)

    @property
    def learned_options(self) -> tuple[str, ...]:
        """The options learned from past runs: ``"mem"``, ``"time"``."""
        out = ("mem",) if isinstance(self.mem_mb, Auto) else ()
        return out + (("time",) if isinstance(self.timeout_min, Auto) else ())

    def resolve(self, learned: Learned | None) -> Resources:
        """These resources with every :class:`Auto` request replaced: by what ``learned``
        says, else by its fallback (None: the cluster's default).

        >>> r = Resources(mem_mb=Auto(1024), timeout_min=Auto())
        >>> r.resolve(None).mem_mb, r.resolve(Learned(mem_mb=256, timeout_min=3)).timeout_min
        (1024, 3)
        """
        if not self.learns:
            return self
        out = {}
        for field in ("mem_mb", "timeout_min"):
            value = getattr(self, field)
            if isinstance(value, Auto):
                known = getattr(learned, field) if learned is not None else None
                out[field] = known if known is not None else value.fallback
        return attrs.evolve(self, **out)

    def with_defaults(self, defaults: Resources | None) -> Resources:
        """These resources, with ``defaults`` (a cluster's) where they set nothing: the
        one place that says what a task asks for on a given cluster.

        >>> Resources(mem_mb=1).with_defaults(Resources(mem_mb=2, partition="p"))
        Resources(timeout_min=None, mem_mb=1, ...partition='p'...)
        """
        if defaults is None or defaults == _NONE:
            return self
        merged = {
            f.name: getattr(self, f.name)
            if getattr(self, f.name) is not None
            else getattr(defaults, f.name)
            for f in attrs.fields(Resources)
            if f.default is None
        }
        return attrs.evolve(
            self,
            **merged,
            extra_sbatch=(*defaults.extra_sbatch, *self.extra_sbatch),
            scheduler=tuple(sorted({**dict(defaults.scheduler), **dict(self.scheduler)}.items())),
            requeue=self.requeue or defaults.requeue,
        )

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

    def as_options(self) -> dict[str, Any]:
        """The options that rebuild these resources (for ``task.options``)."""
        out: dict[str, Any] = {}
        for name, arg in self.scheduler:
            out[name] = arg or True
        for field in attrs.fields(Resources):
            if field.name == "scheduler":
                continue
            value = getattr(self, field.name)
            if value is None or value == () or (field.name in ("retries", "requeue") and not value):
                continue
            name = _OPTION_OF[field.name]
            if isinstance(value, Auto):  # "auto" or "auto:MB" / "auto:MINUTES"
                value = str(value) + ("M" if value.fallback is not None and name == "mem" else "")
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def describe(self) -> Mapping[str, str]:
        """Short human labels (for pictures and tables)."""
        out = {}
        if isinstance(self.timeout_min, Auto):
            first = self.timeout_min.fallback
            out["time"] = "auto" + (f" ({first}min first)" if first is not None else "")
        elif self.timeout_min is not None:
            out["time"] = f"{self.timeout_min}min"
        if isinstance(self.mem_mb, Auto):
            first = self.mem_mb.fallback
            out["mem"] = "auto" + (f" ({first}M first)" if first is not None else "")
        elif self.mem_mb is not None:
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


def _auto(value: object, parse: Any, option: str) -> Auto | None:
    """``"auto"`` or ``"auto:FALLBACK"`` (FALLBACK in the option's own forms) as an
    :class:`Auto`; None for any other value."""
    if not isinstance(value, str):
        return None
    head, colon, rest = value.strip().partition(":")
    if head.lower() != "auto":
        return None
    if not colon:
        return Auto()
    try:
        return Auto(parse(rest, option))
    except InvalidOptionError as exc:
        msg = f"{exc} (after 'auto:', the request of a task with no history yet)"
        raise InvalidOptionError(msg) from None


_AUTO_FORMS = ', or "auto" / "auto:{}" (learned from past runs; {} with no history yet)'


def _or_auto(parse: Any, value: object, option: str, example: str) -> int | Auto:
    """``parse(value)``, or an :class:`Auto`; an invalid value's message names both."""
    auto = _auto(value, parse, option)
    if auto is not None:
        return auto
    try:
        return parse(value, option)  # type: ignore[no-any-return]
    except InvalidOptionError as exc:
        raise InvalidOptionError(str(exc) + _AUTO_FORMS.format(example, example)) from None


def _time(option: str, value: object) -> int | Auto:
    return _or_auto(parse_time, value, option, "1:00:00")


def _mem(option: str, value: object) -> int | Auto:
    return _or_auto(parse_mem, value, option, "4G")


def _mem_text(option: str, value: object) -> str:
    return f"{parse_mem(value, option)}M"


def _positive(option: str, value: object) -> int:
    return _positive_int(option, value)


def _gpu_count(option: str, value: object) -> str:
    return _gpus(value, option)


# What a task may ask for, declared once: the name and type users write (checked by type
# checkers through ``Unpack``), and the Opt that validates and normalises it into a
# ``Resources`` field. ``TaskDefaults`` are the options a cluster may also set for every
# task (``Cluster("slurm", partition=...)``); ``TaskOptions`` adds those only a task sets.
# ``scheduler=True`` options have no field of their own: they are kept by name, and the
# Slurm backend writes each as its --long-option (``mem_per_cpu`` -> ``--mem-per-cpu``).
class TaskDefaults(TypedDict, total=False):
    """Task options a cluster may also default for all its tasks (all optional)."""

    # a task's own may be "auto" / "auto:FALLBACK" (learned from its past runs: Auto), a
    # cluster's may not (Resources.defaults_from)
    time: Annotated[
        str | int | _dt.timedelta,
        Opt("time limit", parse=_time, field="timeout_min", flag=True),
    ]
    mem: Annotated[str | int, Opt("memory", parse=_mem, field="mem_mb", flag=True)]
    cpus_per_task: Annotated[int, Opt("CPUs per task", parse=_positive, flag=True)]
    gpus: Annotated[int | str, Opt('GPUs: a count or "TYPE:COUNT"', parse=_gpu_count, flag=True)]
    gres: Annotated[str, Opt("generic resources", parse=_free_text, flag=True)]
    partition: Annotated[str, Opt("partition", parse=_name, flag=True)]
    account: Annotated[str, Opt("account", parse=_name, flag=True)]
    qos: Annotated[str, Opt("QOS", parse=_name, flag=True)]
    nodes: Annotated[int, Opt("nodes", parse=_positive, flag=True)]
    ntasks: Annotated[int, Opt("tasks (ranks) in all", parse=_positive, flag=True)]
    ntasks_per_node: Annotated[int, Opt("tasks (ranks) per node", parse=_positive, flag=True)]
    gpus_per_node: Annotated[int | str, Opt("GPUs per node", parse=_gpu_count, flag=True)]
    gpus_per_task: Annotated[int | str, Opt("GPUs per task (rank)", parse=_gpu_count, flag=True)]
    constraint: Annotated[str, Opt("node constraint", parse=_free_text, flag=True)]
    extra_sbatch: Annotated[Sequence[str], Opt("raw sbatch flags", parse=_extra_sbatch)]
    ntasks_per_core: Annotated[int, Opt("tasks per core", parse=_count, scheduler=True)]
    ntasks_per_socket: Annotated[int, Opt("tasks per socket", parse=_count, scheduler=True)]
    ntasks_per_gpu: Annotated[int, Opt("tasks per GPU", parse=_count, scheduler=True)]
    cpus_per_gpu: Annotated[int, Opt("CPUs per GPU", parse=_count, scheduler=True)]
    gpus_per_socket: Annotated[int | str, Opt("GPUs per socket", parse=_gpus_like, scheduler=True)]
    mem_per_cpu: Annotated[str | int, Opt("memory per CPU", parse=_mem_text, scheduler=True)]
    mem_per_gpu: Annotated[str | int, Opt("memory per GPU", parse=_mem_text, scheduler=True)]
    tmp: Annotated[str | int, Opt("temporary disk space", parse=_mem_text, scheduler=True)]
    mincpus: Annotated[int, Opt("minimum CPUs per node", parse=_count, scheduler=True)]
    sockets_per_node: Annotated[int, Opt("sockets per node", parse=_count, scheduler=True)]
    cores_per_socket: Annotated[int, Opt("cores per socket", parse=_count, scheduler=True)]
    threads_per_core: Annotated[int, Opt("threads per core", parse=_count, scheduler=True)]
    exclusive: Annotated[bool | str, Opt("whole nodes (or a mode)", parse=_flag, scheduler=True)]
    oversubscribe: Annotated[bool | str, Opt("share nodes", parse=_flag, scheduler=True)]
    contiguous: Annotated[bool | str, Opt("contiguous nodes", parse=_flag, scheduler=True)]
    no_requeue: Annotated[bool | str, Opt("never requeue", parse=_flag, scheduler=True)]
    overcommit: Annotated[bool | str, Opt("overcommit CPUs", parse=_flag, scheduler=True)]
    mail_type: Annotated[
        str | Sequence[str], Opt("mail on events", parse=_mail_type, scheduler=True)
    ]
    mail_user: Annotated[str, Opt("mail address", parse=_free_text, scheduler=True)]
    reservation: Annotated[str, Opt("reservation", parse=_name, scheduler=True)]
    wckey: Annotated[str, Opt("workload characterization key", parse=_name, scheduler=True)]
    licenses: Annotated[str, Opt("licenses", parse=_free_text, scheduler=True)]
    nodelist: Annotated[str, Opt("nodes to use", parse=_free_text, scheduler=True)]
    exclude: Annotated[str, Opt("nodes to avoid", parse=_free_text, scheduler=True)]
    begin: Annotated[str, Opt("start no earlier than", parse=_free_text, scheduler=True)]
    deadline: Annotated[str, Opt("end no later than", parse=_free_text, scheduler=True)]
    time_min: Annotated[
        str | int | _dt.timedelta, Opt("minimum time limit", parse=_time_text, scheduler=True)
    ]
    nice: Annotated[int, Opt("scheduling niceness", parse=_nice, scheduler=True)]
    priority: Annotated[int, Opt("priority", parse=_count_or_zero, scheduler=True)]
    comment: Annotated[str, Opt("comment", parse=_free_text, scheduler=True)]
    hint: Annotated[str, Opt("scheduling hint", parse=_free_text, scheduler=True)]
    distribution: Annotated[str, Opt("task distribution", parse=_free_text, scheduler=True)]
    signal: Annotated[str, Opt("signal before the time limit", parse=_free_text, scheduler=True)]
    switches: Annotated[str, Opt("network switches", parse=_free_text, scheduler=True)]
    gres_flags: Annotated[str, Opt("gres flags", parse=_free_text, scheduler=True)]
    core_spec: Annotated[int, Opt("specialized cores", parse=_count_or_zero, scheduler=True)]
    thread_spec: Annotated[int, Opt("specialized threads", parse=_count_or_zero, scheduler=True)]
    network: Annotated[str, Opt("network", parse=_free_text, scheduler=True)]
    clusters: Annotated[str, Opt("clusters", parse=_free_text, scheduler=True)]
    profile: Annotated[str, Opt("profiling", parse=_free_text, scheduler=True)]


class TaskOptions(TaskDefaults, total=False):
    """Options of ``@task(...)`` and ``task.options(...)`` (all optional)."""

    gather: Annotated[
        Literal["rank0", "all"], Opt("rank 0's value, or a list of every rank's", parse=_gather)
    ]
    job_name: Annotated[str, Opt("Slurm job name", parse=_name)]
    max_concurrent: Annotated[int, Opt("array throttle: elements at once", parse=_positive)]
    retries: Annotated[int, Opt("run again this often on failure", parse=_retries)]
    packaging: Annotated[PackagingMode, Opt("how the code reaches the cluster", parse=_packaging)]
    requeue: Annotated[bool, Opt("Slurm may requeue it (checkpoint hooks)", parse=_bool)]
    pack: Annotated[int | Literal["auto"], Opt("elements per Slurm element", parse=_pack)]
    on_oom: Annotated[float, Opt("memory x this per retry after OUT_OF_MEMORY", parse=_factor)]
    on_timeout: Annotated[float, Opt("time x this per retry after TIMEOUT", parse=_factor)]
    max_mem: Annotated[str | int, Opt("on_oom's cap on memory", parse=_max_mem, field="max_mem_mb")]
    pure: Annotated[bool, Opt("same inputs, same result (cacheable)", parse=_bool, field="")]
    name: Annotated[str, Opt("the task's name (default: the function's)", field="")]


# the declaration, read once: name -> Declared (Opt + type)
TASK_OPTIONS = declared(TaskOptions)
# options the scheduler receives as options of their own, in declaration order:
# (option name, Resources field)
FLAGS: tuple[tuple[str, str], ...] = tuple(
    (n, d.opt.field or n) for n, d in TASK_OPTIONS.items() if d.opt.flag
)
DEFAULTABLE: tuple[str, ...] = tuple(declared(TaskDefaults))  # what a cluster may default
OPTION_NAMES: tuple[str, ...] = tuple(n for n in TASK_OPTIONS if n != "name")  # (task() takes it)
SCHEDULER_OPTIONS: tuple[str, ...] = tuple(n for n, d in TASK_OPTIONS.items() if d.opt.scheduler)
_FIELD_OF = {n: d.opt.field or n for n, d in TASK_OPTIONS.items() if not d.opt.scheduler}
_OPTION_OF = {field: name for name, field in _FIELD_OF.items()}
_NONE = Resources()
