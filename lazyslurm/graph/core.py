"""Lazy, immutable expression nodes: ``Task``, ``Job``, ``JobArray`` and lazy views.

Building submits nothing. Every ``Job`` carries a deterministic key (task name + a hash of
the function's code and of its arguments), its argument template (with :class:`Ref`
placeholders where other jobs stand) and the jobs it depends on. The arguments are walked
once, when the call is made; a fan-in over N jobs costs O(N).

>>> @task
... def inc(x):
...     return x + 1
>>> a = inc(1)
>>> b = inc(a)
>>> b.deps == (a,) and a.key != b.key and inc(1).key == a.key
True
>>> arr = inc.map([1, 2, 3])
>>> len(arr), [j.key == inc(i).key for i, j in zip([1, 2, 3], arr)]
(3, [True, True, True])
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import operator
import pickle
import re
import types
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar, overload

import cloudpickle

from lazyslurm.errors import InvalidArgumentError, OptionTypeError, UnknownLengthError
from lazyslurm.graph.resources import Resources
from lazyslurm.registry import executor
from lazyslurm.store import MapItem, Ref, RefList

__all__ = ["Job", "JobArray", "JobView", "Task", "task"]

R = TypeVar("R")
_ATOMS = frozenset({str, int, float, bool, type(None), bytes, complex})
_LONG = frozenset({str, bytes})  # long ones are hashed into keys, not repr'd (4x their size)
_LONG_AT = 4096


def _long_token(value: str | bytes) -> str:
    data = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return f"{type(value).__name__}#{len(data)}#{hashlib.sha1(data).hexdigest()}"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_]+")


# --------------------------------------------------------------------------- tokens


def _code_token(code: types.CodeType, out: list[str]) -> None:
    out.append(code.co_name)
    out.append(code.co_code.hex())
    out.append(repr(code.co_names))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _code_token(const, out)
        else:
            out.append(repr(const))


def function_token(func: Callable[..., Any]) -> str:
    """A hash of a function's identity and code: changes when its code changes.

    >>> def f(x): return x + 1
    >>> t1 = function_token(f)
    >>> def f(x): return x + 2
    >>> t1 != function_token(f)
    True
    """
    parts = [getattr(func, "__module__", "") or "", getattr(func, "__qualname__", "") or ""]
    code = getattr(func, "__code__", None)
    if code is not None:
        _code_token(code, parts)
        parts.append(repr(getattr(func, "__defaults__", None)))
        parts.append(repr(sorted((getattr(func, "__kwdefaults__", None) or {}).items())))
        # closures made by one factory share their code: their captured values tell them apart
        for cell in getattr(func, "__closure__", None) or ():
            try:
                parts.append(_opaque_token(cell.cell_contents))
            except ValueError:  # an empty cell
                parts.append("<empty>")
        owner = getattr(func, "__self__", None)  # bound methods: the instance
        if owner is not None:
            parts.append(_opaque_token(owner))
    else:  # builtins, callable objects
        try:
            parts.append(hashlib.sha1(cloudpickle.dumps(func)).hexdigest())
        except Exception:
            parts.append(uuid.uuid4().hex)
    return hashlib.sha1("\x00".join(parts).encode()).hexdigest()[:16]


def _opaque_token(obj: Any) -> str:
    """Token of an argument that is not a plain container or atom."""
    try:
        data = pickle.dumps(obj, protocol=5)
    except Exception:
        try:
            data = cloudpickle.dumps(obj)
        except Exception:
            # not picklable: compute() names it; the key must still be unique
            return f"?{type(obj).__qualname__}:{uuid.uuid4().hex}"
    return f"{type(obj).__qualname__}:{hashlib.sha1(data).hexdigest()}"


def _lift(obj: Any, deps: list[Job], parts: list[str]) -> Any:
    """Walk one argument: record its dependencies and token; return its template.

    Jobs become :class:`Ref` placeholders; everything else is returned as is (containers
    are rebuilt only when they hold a lazy value).
    """
    t = type(obj)
    if t in _ATOMS:
        parts.append(repr(obj) if t not in _LONG or len(obj) < _LONG_AT else _long_token(obj))
        return obj
    if t is Job:
        deps.append(obj)
        parts.append("@" + obj.key)
        return Ref(obj.key)
    if t is JobView:
        deps.append(obj._base)
        parts.append(f"@{obj._base.key}{obj._path!r}")
        return Ref(obj._base.key, obj._path)
    if t is JobArray:
        keys = tuple(j.key for j in obj._jobs)
        deps.extend(obj._jobs)
        parts.append("@[" + ",".join(keys) + "]")
        return RefList(keys)
    if t is list or t is tuple:
        n = len(deps)
        parts.append("[" if t is list else "(")
        items = _lift_all(obj, deps, parts)
        parts.append("]")
        if len(deps) == n:
            return obj
        return items if t is list else tuple(items)
    if t is dict:
        n = len(deps)
        parts.append("{")
        items = {}
        for k, v in obj.items():
            parts.append(repr(k) if type(k) in _ATOMS else _opaque_token(k))
            items[k] = _lift(v, deps, parts)
        parts.append("}")
        return obj if len(deps) == n else items
    if t is set or t is frozenset:
        n = len(deps)
        entries = []
        for x in obj:
            xp: list[str] = []
            entries.append((_lift(x, deps, xp), "".join(xp)))
        entries.sort(key=lambda e: e[1])
        parts.append(("{" if t is set else "frozenset{") + ",".join(e[1] for e in entries) + "}")
        return obj if len(deps) == n else t(e[0] for e in entries)
    if isinstance(obj, (Task, JobArray, Job, JobView)):
        msg = f"cannot use {obj!r} as an argument here"
        raise TypeError(msg)
    if isinstance(obj, io.IOBase):  # its contents would be shipped as a snapshot, silently
        name = getattr(obj, "name", None)
        msg = (
            f"an open file ({type(obj).__name__}{f' {name!r}' if name else ''}) cannot be a "
            f"task argument: pass its path and open it inside the task"
        )
        raise InvalidArgumentError(msg)
    parts.append(_opaque_token(obj))
    return obj


def _lift_all(values: Iterable[Any], deps: list[Job], parts: list[str]) -> list[Any]:
    """``[_lift(v, deps, parts) for v in values]``, with atoms and jobs handled inline
    (the common cases of a call's arguments and of a fan-in list)."""
    out = []
    for v in values:
        t = type(v)
        if t in _ATOMS:
            parts.append(repr(v) if t not in _LONG or len(v) < _LONG_AT else _long_token(v))
            out.append(v)
        elif t is Job:
            deps.append(v)
            parts.append("@" + v.key)
            out.append(Ref(v.key))
        else:
            out.append(_lift(v, deps, parts))
    return out


def _after_token(after: tuple[Job, ...]) -> bytes:
    """What ``.after()`` edges add to a key (nothing when there are none)."""
    if not after:
        return b""
    # ordering edges are part of the node: equal keys must mean equal jobs
    return ("\x00after:" + ",".join(j.key for j in after)).encode()


def _key_from(name: str, base: Any, parts: list[str], pure: bool, after_token: bytes) -> str:
    """``_make_key`` with the function token already hashed into ``base`` (a sha1 object,
    copied, never updated) and the ``.after()`` part already encoded."""
    h = base.copy()
    h.update("\x00".join(parts).encode())
    if after_token:
        h.update(after_token)
    if not pure:
        h.update(uuid.uuid4().bytes)
    return f"{name}-{h.hexdigest()[:24]}"


def _make_key(name: str, token: str, parts: list[str], pure: bool, after: tuple[Job, ...]) -> str:
    return _key_from(name, hashlib.sha1(token.encode()), parts, pure, _after_token(after))


_job_key = operator.attrgetter("key")


def _unique(jobs: Iterable[Job]) -> tuple[Job, ...]:
    """The jobs without repeated keys, first occurrence kept, in order."""
    if not isinstance(jobs, (list, tuple)):
        jobs = list(jobs)
    if len(jobs) < 2 or len(set(map(_job_key, jobs))) == len(jobs):
        return tuple(jobs)  # nothing repeated (the common case): skip hashing the jobs
    return tuple(dict.fromkeys(jobs))


# --------------------------------------------------------------------------- Task


class Task(Generic[R]):
    """A function with Slurm resources. Calling it or mapping it builds lazy jobs.

    Immutable: :meth:`options` and :meth:`after` return new tasks.
    """

    def __init__(
        self,
        func: Callable[..., R],
        resources: Resources,
        *,
        pure: bool = True,
        after: tuple[Job, ...] = (),
        token: str | None = None,
    ) -> None:
        if not callable(func):
            msg = f"@task needs a callable, got {func!r}"
            raise OptionTypeError(msg)
        if not isinstance(pure, bool):
            msg = f"invalid type for pure={pure!r}: expected True or False"
            raise OptionTypeError(msg)
        name = getattr(func, "__name__", None) or type(func).__name__
        put = object.__setattr__
        put(self, "_func", func)
        put(self, "_resources", resources)
        put(self, "_pure", pure)
        put(self, "_after", after)
        put(self, "_name", _SAFE_NAME.sub("_", name).strip("_") or "task")
        put(self, "_token", token or function_token(func))
        put(self, "_hbase", hashlib.sha1(self._token.encode()))  # copied per key
        put(self, "_after_token", _after_token(after))
        put(self, "__name__", name)
        put(self, "__qualname__", getattr(func, "__qualname__", name))
        put(self, "__module__", getattr(func, "__module__", None))
        put(self, "__doc__", getattr(func, "__doc__", None))
        put(self, "__wrapped__", func)

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"Task is immutable: use task.options({name}=...) to make a new one"
        raise TypeError(msg)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_task, (self._func, self._resources, self._pure, self._token))

    def __repr__(self) -> str:
        return f"Task({self._name})"

    @property
    def unwrapped(self) -> Callable[..., R]:
        """The plain function."""
        return self._func

    @property
    def name(self) -> str:
        return self._name

    @property
    def resources(self) -> Resources:
        return self._resources

    @property
    def pure(self) -> bool:
        return self._pure

    @property
    def token(self) -> str:
        """Hash of the function's identity and code."""
        return self._token

    def options(self, **overrides: Any) -> Task[R]:
        """A new task with some options changed (validated as in ``@task``)."""
        opts = {**self._resources.as_options(), "pure": self._pure, **overrides}
        pure = opts.pop("pure")
        return Task(
            self._func,
            Resources.from_options(**opts),
            pure=pure,
            after=self._after,
            token=self._token,
        )

    def after(self, *deps: Job | JobArray | JobView) -> Task[R]:
        """This task, bound to run after ``deps`` (ordering only: no data passed)."""
        jobs: list[Job] = list(self._after)
        for dep in deps:
            if isinstance(dep, Job):
                jobs.append(dep)
            elif isinstance(dep, JobArray):
                jobs.extend(dep._jobs)
            elif isinstance(dep, JobView):
                jobs.append(dep._base)
            else:
                msg = f"after() takes Job or JobArray objects, got {type(dep).__name__}"
                raise TypeError(msg)
        return Task(
            self._func, self._resources, pure=self._pure, after=_unique(jobs), token=self._token
        )

    def __call__(self, *args: Any, nout: int | None = None, **kwargs: Any) -> Job:
        deps: list[Job] = []
        parts: list[str] = []
        try:
            targs = tuple(_lift_all(args, deps, parts)) if args else ()
            if kwargs:
                parts.append("|")
                tkwargs = _lift_kwargs(kwargs, deps, parts)
            else:
                tkwargs = {}
        except RecursionError:
            raise _recursive_argument(self._name, args, kwargs) from None
        if nout is not None and (isinstance(nout, bool) or not isinstance(nout, int) or nout < 0):
            msg = f"nout must be a non-negative int, got {nout!r}"
            raise OptionTypeError(msg)
        key = _key_from(self._name, self._hbase, parts, self._pure, self._after_token)
        return _new_job(key, self, targs, tkwargs, _unique(deps), self._after, nout)

    def map(self, items: Iterable[Any] | JobArray | Job) -> Any:
        """One job per item: a dict is keyword arguments, a tuple positional arguments,
        anything else the single argument. Mapping over a ``JobArray`` (or a ``Job``
        with ``nout``) is element-wise; such items are unpacked by the same rule at run
        time, when their values are known.

        Mapping over a ``Job`` (or view) of unknown length gives a ``Job`` whose value is
        the list of results: it maps where the producer's value is known, on the cluster,
        and submits the elements from there (dynamic expansion, docs/dynamic.md).
        """
        if isinstance(items, (Job, JobView)):
            length = items._length() if isinstance(items, Job) else None
            if length is None:  # known once the producer ran: mapped there (dynamic)
                return _map_later(self, items)
            items = list(items)
        jobs = []
        name, base, pure, after = self._name, self._hbase, self._pure, self._after
        after_token = self._after_token
        with gc_paused(), _naming_recursion(self._name):  # no cyclic garbage made here
            for item in items.jobs if isinstance(items, JobArray) else items:
                t = type(item)
                if t is Job or t is JobView:
                    deps: list[Job] = []
                    parts: list[str] = ["*"]
                    ref = _lift(item, deps, parts)
                    targs: tuple[Any, ...] = (MapItem(ref),)
                    tkwargs: dict[str, Any] = {}
                elif t is dict:
                    deps, parts = [], ["|"]
                    tkwargs = _lift_kwargs(item, deps, parts)
                    targs = ()
                elif t is tuple:
                    deps, parts = [], []
                    targs = tuple(_lift_all(item, deps, parts))
                    tkwargs = {}
                else:
                    deps, parts = [], []
                    targs = (_lift(item, deps, parts),)
                    tkwargs = {}
                key = _key_from(name, base, parts, pure, after_token)
                jobs.append(_new_job(key, self, targs, tkwargs, _unique(deps), after, None))
        return JobArray(tuple(jobs))


@contextlib.contextmanager
def _naming_recursion(task: str) -> Iterator[None]:
    """A map item that contains itself: a clear error instead of a RecursionError."""
    try:
        yield
    except RecursionError:
        msg = f"a map item of task {task!r} contains itself (or is nested too deeply to walk)"
        raise InvalidArgumentError(msg) from None


def _recursive_argument(task: str, args: Any, kwargs: dict[str, Any]) -> InvalidArgumentError:
    """The error for an argument lazyslurm cannot walk: name which one."""
    which = "an argument"
    for label, value in [*enumerate(args), *kwargs.items()]:
        try:
            _lift(value, [], [])
        except RecursionError:
            which = f"argument {label!r}" if isinstance(label, str) else f"argument {label}"
            break
    msg = (
        f"{which} of task {task!r} contains itself (or is nested too deeply to walk): "
        f"lazyslurm cannot find the jobs in it; pass a structure without cycles"
    )
    return InvalidArgumentError(msg)


def _lift_kwargs(kwargs: dict[str, Any], deps: list[Job], parts: list[str]) -> dict[str, Any]:
    """Keyword arguments in sorted order, each name then its value (atoms inline)."""
    out = {}
    for k in sorted(kwargs):
        parts.append(k)
        v = kwargs[k]
        t = type(v)
        if t in _ATOMS:
            parts.append(repr(v) if t not in _LONG or len(v) < _LONG_AT else _long_token(v))
            out[k] = v
        else:
            out[k] = _lift(v, deps, parts)
    return out


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector during a bulk build (``task.map``, planning).

    Building N jobs allocates O(N) long-lived objects, and each time the collector's
    thresholds trip it walks every live object (the whole graph so far): about a quarter
    of the time of a 100,000-node build. Nothing built here is cyclic garbage, so the
    collections are deferred to the end of the operation (like Mercurial's ``nogc``).
    Also usable as a decorator.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class MapLater:
    """The function of a map over a value of unknown length: ``task.map(items)``, called
    where ``items`` is known. Its value is a ``JobArray``: a dynamic expansion."""

    __slots__ = ("__name__", "__qualname__", "task")

    def __init__(self, task: Task[Any]) -> None:
        self.task = task
        self.__name__ = f"{task.name}_map"
        self.__qualname__ = f"MapLater.{task.name}"

    def __call__(self, items: Any) -> JobArray:
        return self.task.map(items)

    def __reduce__(self) -> tuple[Any, ...]:
        return (MapLater, (self.task,))


def _map_later(t: Task[Any], items: Job | JobView) -> Job:
    """A job that maps ``t`` over ``items`` once their value is known (dynamic node)."""
    inner = Task(t._func, t._resources, pure=t._pure, token=t._token)  # .after stays outside
    token = hashlib.sha1(f"map\x00{t._token}".encode()).hexdigest()[:16]  # as keys: no resources
    mapper = Task(MapLater(inner), t._resources, pure=t._pure, after=t._after, token=token)
    return mapper(items)


def _rebuild_task(func: Callable[..., Any], resources: Resources, pure: bool, token: str) -> Task:
    return Task(func, resources, pure=pure, token=token)


@overload
def task(func: Callable[..., R], /) -> Task[R]: ...
@overload
def task(**options: Any) -> Callable[[Callable[..., R]], Task[R]]: ...
def task(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a function into a lazy task. Options are validated here, at decoration time.

    Options: ``time``, ``mem``, ``cpus_per_task``, ``gpus``, ``gres``, ``partition``,
    ``account``, ``qos``, ``nodes``, ``ntasks``, ``constraint``, ``job_name``,
    ``max_concurrent`` (array throttle), ``extra_sbatch``, ``retries``, ``pure``.
    """
    pure = options.get("pure", True)
    resources = Resources.from_options(**options)
    if func is not None:
        return Task(func, resources, pure=pure)
    return lambda f: Task(f, resources, pure=pure)


# --------------------------------------------------------------------------- Job


class _Lazy:
    """Behaviour shared by lazy values: no truth value, no mutation, compute helpers."""

    __slots__ = ()

    def __bool__(self) -> bool:
        msg = (
            f"truth value of lazy {self!r} is not known until it is computed; call .compute() first"
        )
        raise TypeError(msg)

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"{type(self).__name__} is immutable"
        raise TypeError(msg)

    def __setitem__(self, key: Any, value: Any) -> None:
        msg = f"{type(self).__name__} is immutable: item assignment is not supported"
        raise TypeError(msg)

    def __delitem__(self, key: Any) -> None:
        msg = f"{type(self).__name__} is immutable: item deletion is not supported"
        raise TypeError(msg)

    def compute(self, *, cluster: Any = None, **kwargs: Any) -> Any:
        """Run what this value needs and return its result."""
        return executor().compute(self, cluster=cluster, **kwargs)[0]

    def wait(self, *, cluster: Any = None) -> None:
        """Compute what this value needs (seed style); results stay in the session."""
        executor().compute(self, cluster=cluster, fetch=False)

    def visualize(self, **kwargs: Any) -> Any:
        return executor().visualize(self, **kwargs)


class Job(_Lazy):
    """One lazy call of a task. Immutable and hashable; equal keys mean equal jobs."""

    __slots__ = ("_args", "_deps", "_kwargs", "_nout", "_order", "_task", "key")

    def __init__(
        self,
        key: str,
        task: Task[Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        deps: tuple[Job, ...],
        order: tuple[Job, ...],
        nout: int | None,
    ) -> None:
        values = (key, task, args, kwargs, deps, order, nout)
        for setter, value in zip(_JOB_SLOT_SETTERS, values, strict=True):
            setter(self, value)

    # -- graph data
    @property
    def task(self) -> Task[Any]:
        return self._task

    @property
    def args(self) -> tuple[Any, ...]:
        """Positional argument template (upstream jobs appear as ``Ref`` placeholders)."""
        return self._args

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self._kwargs)

    @property
    def deps(self) -> tuple[Job, ...]:
        """Jobs whose results this job consumes."""
        return self._deps

    @property
    def order(self) -> tuple[Job, ...]:
        """Jobs this job must run after, without consuming their results (``.after``)."""
        return self._order

    @property
    def nout(self) -> int | None:
        return self._nout

    def _length(self) -> int | None:
        return self._nout

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.key == self.key

    def __repr__(self) -> str:
        return f"Job({self.key})"

    def __reduce__(self) -> tuple[Any, ...]:
        msg = (
            f"{self!r} cannot be pickled: pass jobs as task arguments (they become "
            f"placeholders), not inside objects lazyslurm cannot look into"
        )
        raise TypeError(msg)

    # -- lazy views
    def __getitem__(self, index: Any) -> JobView:
        return JobView(self, (("item", index),))

    def __getattr__(self, name: str) -> JobView:
        if name.startswith("_"):
            raise AttributeError(name)
        return JobView(self, (("attr", name),))

    def __iter__(self) -> Iterator[JobView]:
        if self._nout is None:
            msg = (
                f"cannot iterate over {self!r}: its length is unknown; call the task "
                f"with nout=N, e.g. split(data, nout=5)"
            )
            raise UnknownLengthError(msg)
        return (self[i] for i in range(self._nout))

    def __len__(self) -> int:
        if self._nout is None:
            msg = f"len() of {self!r} is unknown; call the task with nout=N"
            raise UnknownLengthError(msg)
        return self._nout

    # -- seed compatibility
    def get_result(self, *, cluster: Any = None) -> Any:
        """The job's result (computed first if needed)."""
        return self.compute(cluster=cluster)

    def logs(self, *, cluster: Any = None) -> tuple[str, str]:
        """``(stdout, stderr)`` of this job's last run in the session."""
        return executor().job_logs(self, cluster=cluster)


_JOB_SLOT_SETTERS = tuple(
    Job.__dict__[name].__set__
    for name in ("key", "_task", "_args", "_kwargs", "_deps", "_order", "_nout")
)


def _new_job(
    key: str,
    task: Task[Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    deps: tuple[Job, ...],
    order: tuple[Job, ...],
    nout: int | None,
    _new: Callable[[type], Any] = object.__new__,
    _set: tuple[Callable[[Any, Any], None], ...] = _JOB_SLOT_SETTERS,
) -> Job:
    """``Job(...)`` for the hot paths: fills the slots directly (same object)."""
    job = _new(Job)
    _set[0](job, key)
    _set[1](job, task)
    _set[2](job, args)
    _set[3](job, kwargs)
    _set[4](job, deps)
    _set[5](job, order)
    _set[6](job, nout)
    return job


class JobView(_Lazy):
    """``job[i]``, ``job["k"]`` or ``job.attr``: resolved inside the consumer, never a job."""

    __slots__ = ("_base", "_path")

    def __init__(self, base: Job, path: tuple[tuple[str, Any], ...]) -> None:
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_path", path)

    @property
    def base(self) -> Job:
        return self._base

    @property
    def path(self) -> tuple[tuple[str, Any], ...]:
        return self._path

    def __getitem__(self, index: Any) -> JobView:
        return JobView(self._base, (*self._path, ("item", index)))

    def __getattr__(self, name: str) -> JobView:
        if name.startswith("_"):
            raise AttributeError(name)
        return JobView(self._base, (*self._path, ("attr", name)))

    def __iter__(self) -> Iterator[JobView]:
        msg = f"cannot iterate over {self!r}: its length is unknown"
        raise UnknownLengthError(msg)

    def __len__(self) -> int:
        msg = f"len() of {self!r} is unknown"
        raise UnknownLengthError(msg)

    def __hash__(self) -> int:
        return hash((self._base.key, self._path))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobView) and (other._base, other._path) == (
            self._base,
            self._path,
        )

    def __repr__(self) -> str:
        steps = "".join(f"[{k!r}]" if kind == "item" else f".{k}" for kind, k in self._path)
        return f"JobView({self._base.key}{steps})"

    def get_result(self, *, cluster: Any = None) -> Any:
        return self.compute(cluster=cluster)


class JobArray(_Lazy):
    """The jobs of one ``task.map``: a sequence of element ``Job`` objects.

    As an argument it stands for the list of its results (fan-in).
    """

    __slots__ = ("_jobs",)

    def __init__(self, jobs: tuple[Job, ...]) -> None:
        object.__setattr__(self, "_jobs", jobs)

    @property
    def jobs(self) -> tuple[Job, ...]:
        return self._jobs

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(j.key for j in self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs)

    @overload
    def __getitem__(self, index: int) -> Job: ...
    @overload
    def __getitem__(self, index: slice) -> JobArray: ...
    def __getitem__(self, index: int | slice) -> Job | JobArray:
        if isinstance(index, slice):
            return JobArray(self._jobs[index])
        return self._jobs[index]

    def __hash__(self) -> int:
        return hash(self._jobs)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JobArray) and other._jobs == self._jobs

    def __repr__(self) -> str:
        name = self._jobs[0].task.name if self._jobs else "empty"
        return f"JobArray({name}[{len(self._jobs)}])"

    def __reduce__(self) -> tuple[Any, ...]:
        msg = f"{self!r} cannot be pickled: pass it as a task argument instead"
        raise TypeError(msg)

    def get_results(self, *, cluster: Any = None) -> list[Any]:
        """The list of the elements' results (computed first if needed)."""
        return self.compute(cluster=cluster)


LazyValue = Job | JobView | JobArray
