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
import contextvars
import copy
import dataclasses
import gc
import hashlib
import importlib
import io
import itertools
import operator
import pickle
import re
import sys
import types
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, Unpack, overload

import cloudpickle

from lazyslurm.errors import (
    DaskCollectionError,
    HiddenLazyValueError,
    InvalidArgumentError,
    InvalidNoutError,
    LazyValueError,
    MapOverMappingError,
    OptionTypeError,
    UnexpectedKeywordError,
    UnknownLengthError,
)
from lazyslurm.graph.resources import Resources, TaskOptions
from lazyslurm.graph.signature import Shape
from lazyslurm.registry import Executor, executor
from lazyslurm.store import (
    ElementKeys,
    MapItem,
    Rebuild,
    Ref,
    RefArray,
    RefList,
    Restore,
    compact_element,
    compact_size,
)

__all__ = [
    "COMPACT_MIN",
    "RESERVED_NAMES",
    "ArrayNode",
    "Job",
    "JobArray",
    "JobView",
    "Task",
    "WorkflowTask",
    "task",
]

# The names a Job, JobArray or JobView answers itself; every other public attribute
# name is a lazy view of the result (``job.attr``), as with dask. Kept short on purpose.
RESERVED_NAMES = frozenset(
    {
        # graph data
        "key",
        "task",
        "args",
        "kwargs",
        "deps",
        "order",
        "nout",
        "jobs",
        "keys",
        "base",
        "path",
        "dependencies",
        "with_nout",
        # computing and the job handle (slurm-sdk's vocabulary)
        "compute",
        "visualize",
        "wait",
        "get_result",
        "get_results",
        "get_status",
        "is_running",
        "is_completed",
        "is_successful",
        "cancel",
        "id",
        "get_script",
        "get_stdout",
        "get_stderr",
        "tail",
        "logs",
        # submitit's spelling of get_result
        "result",
    }
)

# Where ``with cluster:`` collects the jobs built in its block (flush on wait); None
# outside any block. Set and reset by the cluster, read here: the graph imports nothing.
BUILD_SINK: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "lazyslurm_build_sink", default=None
)
# True while lazyslurm itself pickles arguments (keys, specs): a Job found then is hidden
# where the planner cannot see it, and is refused instead of being pickled.
_REFUSE_PICKLE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "lazyslurm_refuse_job_pickle", default=False
)


@contextlib.contextmanager
def refusing_hidden_jobs() -> Iterator[None]:
    """Within this block, pickling a lazy value raises :class:`HiddenLazyValueError`."""
    token = _REFUSE_PICKLE.set(True)
    try:
        yield
    finally:
        _REFUSE_PICKLE.reset(token)


def safe_repr(obj: Any, limit: int = 60) -> str:
    """``repr(obj)`` shortened, never raising (for error messages about user objects)."""
    try:
        text = repr(obj)
    except Exception as exc:  # a user object whose repr is broken
        text = f"<{type(obj).__qualname__} object (repr failed: {type(exc).__name__})>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


R = TypeVar("R")
P = ParamSpec("P")
R_co = TypeVar("R_co", covariant=True)
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
    """Token of an argument that is not a plain container or atom.

    A lazy value hidden inside ``obj`` (where the planner cannot see it) raises
    :class:`HiddenLazyValueError` here, when the job is built.
    """
    token = _REFUSE_PICKLE.set(True)
    try:
        try:
            data = pickle.dumps(obj, protocol=5)
        except HiddenLazyValueError:
            raise
        except Exception:
            try:
                data = cloudpickle.dumps(obj)
            except HiddenLazyValueError:
                raise
            except Exception:
                # not picklable: compute() names it; the key must still be unique
                return f"?{type(obj).__qualname__}:{uuid.uuid4().hex}"
    finally:
        _REFUSE_PICKLE.reset(token)
    return f"{type(obj).__qualname__}:{hashlib.sha1(data).hexdigest()}"


_BUILTIN_ITERATORS = ("builtins", "itertools")


def _is_iterator(obj: Any) -> bool:
    """A generator, or an iterator of the standard library (map, zip, iter(list), ...)."""
    t = type(obj)
    if t is types.GeneratorType:
        return True
    return t.__module__ in _BUILTIN_ITERATORS and isinstance(obj, Iterator)


def _refuse_dask(obj: Any) -> None:
    if isinstance(obj, _Lazy):  # ours answer __dask_graph__ only to refuse dask
        return
    if getattr(type(obj), "__dask_graph__", None) is not None:
        msg = (
            f"a dask collection ({type(obj).__name__} {safe_repr(obj)}) cannot be a lazyslurm "
            f"argument or output: lazyslurm cannot run dask graphs. Compute it first "
            f"(dask.compute(x)) and pass the value, or turn the dask.delayed functions into "
            f"@lazyslurm.task functions"
        )
        raise DaskCollectionError(msg)


def _lift_struct(obj: Any, deps: list[Job], parts: list[str]) -> Any:
    """A namedtuple or a dataclass instance: walked field by field. Without a lazy value
    inside it is opaque data (its key part is unchanged); with one it becomes a
    :class:`Rebuild` (namedtuple) or :class:`Restore` (dataclass) placeholder."""
    n = len(deps)
    sub: list[str] = []
    t = type(obj)
    if isinstance(obj, tuple):
        items = _lift_all(obj, deps, sub)
        if len(deps) == n:
            parts.append(_opaque_token(obj))
            return obj
        parts.append(f"{t.__module__}.{t.__qualname__}({''.join(sub)})")
        return Rebuild(t, items)
    lazy: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if not hasattr(obj, f.name):  # an init=False field never set
            continue
        before = len(deps)
        value = _lift(getattr(obj, f.name), deps, sub)
        if len(deps) != before:
            lazy[f.name] = value
    if not lazy:
        parts.append(_opaque_token(obj))
        return obj
    base = copy.copy(obj)  # no __init__ call: custom __init__ and init=False fields are kept
    for name in lazy:
        object.__setattr__(base, name, None)  # frozen dataclasses too
    token = _opaque_token(base)
    parts.append(f"{token}{{{''.join(sub)}}}")
    return Restore(base, lazy)


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
        deps.extend(obj._extra)
        parts.append(f"@{obj._base.key}{obj._ptoken}")
        return Ref(obj._base.key, obj._path)
    if t is JobArray:
        node = obj._node
        if node is not None:  # a compact map: one node, one placeholder, one key part
            deps.append(node)
            parts.append("@" + node.key)
            return RefArray(node.key)
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
            tk = type(k)
            if tk in _ATOMS:
                parts.append(repr(k))
            elif tk is Job or tk is JobView or tk is JobArray:
                msg = (
                    f"{k!r} is used as a dict key: a lazy value has no value to hash until "
                    f"it is computed. Use it as a dict value, or build the dict inside a task"
                )
                raise LazyValueError(msg)
            else:
                parts.append(_opaque_token(k))
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
    if isinstance(obj, tuple) and hasattr(t, "_fields"):  # a namedtuple
        return _lift_struct(obj, deps, parts)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _lift_struct(obj, deps, parts)
    if _is_iterator(obj):  # consumed here: it stands for the list of its items
        return _lift(list(obj), deps, parts)
    _refuse_dask(obj)
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


class Task(Generic[P, R]):
    """A function with Slurm resources. Calling it or mapping it builds lazy jobs.

    Immutable: :meth:`options` and :meth:`after` return new tasks. ``name`` is a readable
    label for plans, pictures and logs; keys keep the function's own name.
    """

    def __init__(
        self,
        func: Callable[P, R],
        resources: Resources,
        *,
        pure: bool = True,
        after: tuple[Job, ...] = (),
        token: str | None = None,
        name: str | None = None,
        nout: int | None = None,
    ) -> None:
        if not callable(func):
            msg = f"@task needs a callable, got {safe_repr(func)}"
            raise OptionTypeError(msg)
        if not isinstance(pure, bool):
            msg = f"invalid type for pure={pure!r}: expected True or False"
            raise OptionTypeError(msg)
        if name is not None and (not isinstance(name, str) or not _LABEL.fullmatch(name)):
            msg = (
                f"invalid name={name!r}: expected a non-empty string of letters, digits and _ . + -"
            )
            raise OptionTypeError(msg)
        fname = getattr(func, "__name__", None) or type(func).__name__
        put = object.__setattr__
        put(self, "_func", func)
        put(self, "_resources", resources)
        put(self, "_pure", pure)
        put(self, "_after", after)
        put(self, "_name", _SAFE_NAME.sub("_", fname).strip("_") or "task")
        put(self, "_label", name)
        put(self, "_nout", check_nout(nout))  # of every call, unless the call gives one
        put(self, "_token", token or function_token(func))
        # gather="all" changes what the task returns (a list per rank): part of its keys
        gather = "" if resources.gather is None else f"\x00gather:{resources.gather}"
        put(self, "_hbase", hashlib.sha1((self._token + gather).encode()))  # copied per key
        put(self, "_after_token", _after_token(after))
        put(self, "_shape_cache", _UNSET)  # what the function accepts (signature.py), cached
        put(self, "__name__", fname)
        put(self, "__qualname__", getattr(func, "__qualname__", fname))
        put(self, "__module__", getattr(func, "__module__", None))
        put(self, "__doc__", getattr(func, "__doc__", None))
        put(self, "__wrapped__", func)

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"Task is immutable: use task.options({name}=...) to make a new one"
        raise TypeError(msg)

    def __reduce__(self) -> tuple[Any, ...]:
        state = (
            self._resources,
            self._pure,
            self._token,
            self._label,
            self._after,
            self._nout,
            type(self),
        )
        module, qualname = self.__module__, self.__qualname__
        found: Any = None
        # by name only from a module importable where it runs: never __main__ (the
        # runner is __main__ there) nor a module shipped by value
        by_name = module not in ("__main__", None, "") and not _shipped_by_value(module)
        if by_name and qualname and "<" not in qualname:
            found = sys.modules.get(module)
            for part in qualname.split("."):
                found = getattr(found, part, None)
        if isinstance(found, Task) and found._func is self._func:
            # importable by name (plain pickle cannot name a decorated function)
            return (_task_by_name, (module, qualname, *state))
        return (_rebuild_task, (self._func, *state))

    def __repr__(self) -> str:
        return f"Task({self.name})"

    def __get__(self, instance: Any, owner: type | None = None) -> Task[..., R]:
        """``@task`` on a method: ``obj.method`` is a task of the bound method (``self``
        is its first argument, part of its key), as a plain method binds ``self``."""
        if instance is None:
            return self
        return type(self)(
            types.MethodType(self._func, instance),
            self._resources,
            pure=self._pure,
            after=self._after,
            name=self._label,
            nout=self._nout,
        )

    @property
    def unwrapped(self) -> Callable[P, R]:
        """The plain function."""
        return self._func

    @property
    def name(self) -> str:
        """The label of plans, pictures and logs: ``name=`` if given, else the function's."""
        return self._label or self._name

    @property
    def resources(self) -> Resources:
        return self._resources

    @property
    def sbatch_options(self) -> dict[str, Any]:
        """The task's options, by name (slurm-sdk's ``sbatch_options``: a dict such as
        ``{"partition": "debug", "time": 10}``; the cluster's defaults are not in it)."""
        return self._resources.as_options()

    @property
    def pure(self) -> bool:
        return self._pure

    @property
    def token(self) -> str:
        """Hash of the function's identity and code."""
        return self._token

    def options(self, **overrides: Unpack[TaskOptions]) -> Task[P, R]:
        """A new task with some options changed (validated as in ``@task``)."""
        name = overrides.pop("name", self._label)
        opts = {**self._resources.as_options(), "pure": self._pure, **overrides}
        pure = opts.pop("pure")
        return type(self)(
            self._func,
            Resources.from_options(**opts),
            pure=pure,
            after=self._after,
            token=self._token,
            name=name,
            nout=self._nout,
        )

    def with_options(self, **overrides: Unpack[TaskOptions]) -> Task[P, R]:
        """Alias of :meth:`options` (slurm-sdk's spelling)."""
        return self.options(**overrides)

    def after(self, *deps: Job[Any] | JobArray[Any] | JobView) -> Task[P, R]:
        """This task, bound to run after ``deps`` (ordering only: no data passed)."""
        jobs: list[Job] = list(self._after)
        for dep in deps:
            if isinstance(dep, Job):
                jobs.append(dep)
            elif isinstance(dep, JobArray):
                jobs.extend(dep._jobs if dep._node is None else (dep._node,))
            elif isinstance(dep, JobView):
                jobs.append(dep._base)
            else:
                msg = f"after() takes Job or JobArray objects, got {type(dep).__name__}"
                raise TypeError(msg)
        return type(self)(
            self._func,
            self._resources,
            pure=self._pure,
            after=_unique(jobs),
            token=self._token,
            name=self._label,
            nout=self._nout,
        )

    def _shape(self) -> Shape | None:
        """What the function accepts (None: unknown, a builtin without a signature). Read
        once per task: calls and map items are checked against it when built."""
        shape = self._shape_cache
        if shape is _UNSET:
            shape = Shape.of(self._func, self.name)
            object.__setattr__(self, "_shape_cache", shape)
        return shape

    def _accepted_keywords(self) -> frozenset[str] | None:
        """Keyword names the function accepts (None: any, or unknown). Cached."""
        shape = self._shape()
        return None if shape is None else shape.keywords

    def _check_keywords(self, kwargs: Iterable[str], item: int | None = None) -> None:
        names = self._accepted_keywords()
        if names is None or names.issuperset(kwargs):
            return
        bad = [k for k in kwargs if k not in names]
        if bad:
            where = "" if item is None else f" (map item {item})"
            msg = (
                f"task {self.name!r}{where} got unexpected keyword argument(s) "
                f"{', '.join(map(repr, sorted(bad)))}; it accepts: "
                f"{', '.join(sorted(names)) or 'no keywords'}"
            )
            raise UnexpectedKeywordError(msg)

    def _check_call(self, nargs: int, kwargs: Mapping[str, Any], item: int | None = None) -> None:
        """Raise if the function cannot take this call (its keywords, then its arity);
        ``item``: the index of the map item being built."""
        shape = self._shape()
        if shape is None:
            return
        if kwargs:
            self._check_keywords(kwargs, item)
        shape.check(nargs, kwargs, item=item)

    def _call(
        self,
        *args: Any,
        nout: int | None = None,
        dask_key_name: str | None = None,
        **kwargs: Any,
    ) -> Job[R]:
        deps: list[Job] = []
        parts: list[str] = []
        self._check_call(len(args), kwargs)
        try:
            targs = tuple(_lift_all(args, deps, parts)) if args else ()
            if kwargs:
                parts.append("|")
                tkwargs = _lift_kwargs(kwargs, deps, parts)
            else:
                tkwargs = {}
        except RecursionError:
            raise _recursive_argument(self._name, args, kwargs) from None
        nout = self._nout if nout is None else check_nout(nout)
        if dask_key_name is None:
            key = _key_from(self._name, self._hbase, parts, self._pure, self._after_token)
        else:
            key = check_key_name(dask_key_name)
        job = _new_job(key, self, targs, tkwargs, _unique(deps), self._after, nout)
        sink = BUILD_SINK.get()
        if sink is not None:
            sink.append(job)
        return job

    if TYPE_CHECKING:
        # what checkers see: the function's own parameters (``nout=`` is not among them:
        # typed code writes ``task(...).with_nout(N)``)
        def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]: ...
    else:
        __call__ = _call

    def map(
        self,
        items: Iterable[Any] | JobArray[Any] | Job[Any],
        *,
        name: str | None = None,
        max_concurrent: int | None = None,
        pack: int | str | None = None,
    ) -> JobArray[R]:
        """One job per item: a dict is keyword arguments, a tuple positional arguments,
        anything else the single argument. Mapping over a ``JobArray`` (or a ``Job``
        with ``nout``) is element-wise; such items are unpacked by the same rule at run
        time, when their values are known.

        ``name`` labels this array in plans and logs (keys are unchanged);
        ``max_concurrent`` throttles it (at most N elements run at once). ``pack=k``
        runs ``k`` elements one after another in one Slurm element (one process);
        ``pack="auto"`` picks ``k`` from the cluster's limits. Keys do not change.
        Mapping over a ``Job`` (or view) of unknown length gives a ``Job`` whose value is
        the list of results: it maps where the producer's value is known, on the cluster,
        and submits the elements from there (dynamic expansion, docs/dynamic.md).
        """
        if isinstance(items, Mapping):
            raise MapOverMappingError(_map_mapping_message(self._name, items))
        if name is not None or max_concurrent is not None or pack is not None:
            extra: dict[str, Any] = {}
            if name is not None:
                extra["name"] = name
            if max_concurrent is not None:
                extra["max_concurrent"] = max_concurrent
            if pack is not None:
                extra["pack"] = pack
            return self.options(**extra).map(items)
        if isinstance(items, (Job, JobView)):
            length = items._length() if isinstance(items, Job) else None
            if length is None:  # known once the producer ran: mapped there (dynamic)
                # typed as the array it becomes: compute() gives the same list of results
                return _map_later(self, items)  # type: ignore[return-value]
            items = list(items)
        _refuse_dask(items)
        if self._pure and not isinstance(items, JobArray):
            compact = _compact(self, items)
            if compact is not None:
                sink = BUILD_SINK.get()
                if sink is not None:
                    sink.append(compact)
                return compact
        jobs = []
        name_, base, pure, after = self._name, self._hbase, self._pure, self._after
        after_token = self._after_token
        shape = self._shape()
        with gc_paused(), _naming_recursion(self._name):  # no cyclic garbage made here
            for n, item in enumerate(items.jobs if isinstance(items, JobArray) else items):
                t = type(item)
                if t is Job or t is JobView:  # unpacked at run time: its shape is unknown
                    deps: list[Job] = []
                    parts: list[str] = ["*"]
                    ref = _lift(item, deps, parts)
                    targs: tuple[Any, ...] = (MapItem(ref),)
                    tkwargs: dict[str, Any] = {}
                elif t is dict:
                    if shape is not None:
                        self._check_call(0, item, item=n)
                    deps, parts = [], ["|"]
                    tkwargs = _lift_kwargs(item, deps, parts)
                    targs = ()
                elif t is tuple:
                    if shape is not None:
                        shape.check(len(item), item=n)
                    deps, parts = [], []
                    targs = tuple(_lift_all(item, deps, parts))
                    tkwargs = {}
                else:
                    if shape is not None:
                        shape.check(1, item=n)
                    deps, parts = [], []
                    targs = (_lift(item, deps, parts),)
                    tkwargs = {}
                key = _key_from(name_, base, parts, pure, after_token)
                jobs.append(_new_job(key, self, targs, tkwargs, _unique(deps), after, None))
        arr: JobArray[R] = JobArray(tuple(jobs))
        sink = BUILD_SINK.get()
        if sink is not None:
            sink.append(arr)
        return arr


# A map over this many items or more (a range, a NumPy array, a list of plain configs) is
# kept as one node (ArrayNode): no Job per element, keys derived when asked.
COMPACT_MIN = 100_000
_COMPACT_LIST_ATOMS = frozenset({str, int, float, bool, type(None)})  # JSON-able too


def _compact_desc(items: Any) -> tuple[Any, str] | None:
    """``(description, token)`` of map items kept compact, or None (built one by one)."""
    t = type(items)
    if t is range:
        if len(items) < COMPACT_MIN:
            return None
        return ("range", items.start, items.stop, items.step), repr(items)
    if t.__name__ == "ndarray" and t.__module__ == "numpy":
        # 1-D, numbers: an element is a NumPy scalar, whose pickle (its key part) is the
        # same read back from the bytes (a row of a 2-D array pickles with its flags)
        if items.ndim != 1 or len(items) < COMPACT_MIN or items.dtype.kind not in "biuf":
            return None
        data = items.tobytes()  # C order, a copy: later changes to the array do not leak in
        dtype = items.dtype.str
        token = f"numpy:{dtype}:{items.shape}:{hashlib.sha1(data).hexdigest()}"
        return ("numpy", dtype, list(items.shape), data), token
    if t is list and len(items) >= COMPACT_MIN:
        atoms = _COMPACT_LIST_ATOMS
        for item in items:
            ti = type(item)
            if ti in atoms:
                continue
            if ti is not dict or not all(
                type(k) is str and type(v) in atoms for k, v in item.items()
            ):
                return None
        return ("list", items), hashlib.sha1(repr(items).encode()).hexdigest()
    return None


def _compact(t: Task[Any], items: Any) -> JobArray | None:
    """``t.map(items)`` as one :class:`ArrayNode`, when the items allow it."""
    found = _compact_desc(items)
    if found is None:
        return None
    desc, token = found
    shape = t._shape()
    if shape is not None:  # what each item calls: checked once per kind of item
        seen: set[Any] = set()
        for n, item in enumerate(desc[1] if desc[0] == "list" else desc[1:2]):
            kind = tuple(item) if type(item) is dict else None
            if kind in seen:
                continue
            seen.add(kind)
            if kind is None:
                shape.check(1, item=n)
            else:
                t._check_call(0, item, item=n)
    h = t._hbase.copy()
    h.update(f"\x00map\x00{token}".encode())
    if t._after_token:
        h.update(t._after_token)
    gather = "" if t._resources.gather is None else f"\x00gather:{t._resources.gather}"
    recipe = (t._name, t._token + gather, t._after_token.decode())
    node = ArrayNode(f"{t._name}-{h.hexdigest()[:24]}", t, desc, recipe)
    return JobArray((), node)


_UNSET: Any = object()
_JOB_HASH_SALT = "lazyslurm.Job"
_LABEL = re.compile(r"[A-Za-z0-9_.+\-]+")
_KEY_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")


def check_nout(nout: Any) -> int | None:
    """``nout`` if it is None or a non-negative int, else :class:`InvalidNoutError` (a
    ``ValueError``, as in dask, and a ``TypeError``)."""
    if nout is not None and (isinstance(nout, bool) or not isinstance(nout, int) or nout < 0):
        msg = f"nout must be a non-negative int (how many items the task returns), got {nout!r}"
        raise InvalidNoutError(msg)
    return nout


def check_key_name(name: Any) -> str:
    """A key given by ``dask_key_name=``: it names the node's files, so it is a word of
    letters, digits and ``_ . + -`` (not starting with ``.``, ``+`` or ``-``)."""
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name) or len(name) > 200:
        msg = (
            f"dask_key_name={name!r}: a node key names its files, so it must be a string of "
            f"letters, digits and _ . + - (starting with a letter, digit or _), at most 200"
        )
        raise OptionTypeError(msg)
    return name


class WorkflowTask(Task[P, R]):
    """A task made by ``@workflow`` (:mod:`lazyslurm.workflows`): a function that
    orchestrates other tasks from where it runs. It behaves as any :class:`Task`; the
    class says what it is (``isinstance(task, WorkflowTask)``, in callbacks too)."""


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


def _shipped_by_value(module: str) -> bool:
    """Whether cloudpickle ships ``module`` by value now (by-value packaging: it is not
    importable where the task runs, so a task of it must not be pickled by name)."""
    registered = cloudpickle.list_registry_pickle_by_value()
    if not registered:
        return False
    parts = module.split(".")
    return any(".".join(parts[:i]) in registered for i in range(1, len(parts) + 1))


def _task_by_name(module: str, qualname: str, *state: Any) -> Task:
    found: Any = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return _rebuild_task(found._func, *state)


def _map_mapping_message(name: str, items: Mapping[Any, Any]) -> str:
    kind = type(items).__name__
    return (
        f"{name}.map() got a {kind}: mapping over it would call {name} once per key. Pass "
        f"{name}.map(d.items()) for (key, value) pairs as two arguments, "
        f"{name}.map(d.values()) for the values, or a list of dicts, one per call's "
        f"keyword arguments: {name}.map([{{'x': 1}}, {{'x': 2}}])"
    )


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
    # .after stays on the mapper, outside
    inner = Task(t._func, t._resources, pure=t._pure, token=t._token, name=t._name)
    token = hashlib.sha1(f"map\x00{t._token}".encode()).hexdigest()[:16]  # as keys: no resources
    mapper = Task(MapLater(inner), t._resources, pure=t._pure, after=t._after, token=token)
    return mapper(items)


def _rebuild_task(
    func: Callable[..., Any],
    resources: Resources,
    pure: bool,
    token: str,
    name: str | None = None,
    after: tuple[Job, ...] = (),
    nout: int | None = None,
    cls: type[Task[Any, Any]] | None = None,
) -> Task:
    kind = cls if cls is not None and issubclass(cls, Task) else Task
    return kind(func, resources, pure=pure, token=token, name=name, after=after, nout=nout)


@overload
def task(func: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(**options: Unpack[TaskOptions]) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(func: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Turn a function into a lazy task. Options are validated here, at decoration time.

    Options: ``time``, ``mem``, ``cpus_per_task``, ``gpus``, ``gres``, ``partition``,
    ``account``, ``qos``, ``nodes``, ``ntasks``, ``ntasks_per_node``, ``gpus_per_node``,
    ``gpus_per_task``, ``gather`` (``"all"``: every rank's value), ``constraint``,
    ``job_name``, ``max_concurrent`` (array throttle), ``extra_sbatch``, ``retries``,
    ``requeue``, ``pack`` (elements per Slurm element, or ``"auto"``), ``pure``; ``nout``
    (as in dask: how many items every call returns, unless the call says). A parameter
    annotated ``JobContext`` or named ``job`` that the call leaves out receives the job's
    :class:`~lazyslurm.context.JobContext` (see docs/distributed.md).
    """
    pure = options.get("pure", True)
    name = options.pop("name", None)
    nout = check_nout(options.pop("nout", None))
    resources = Resources.from_options(**options)
    if func is not None:
        return Task(func, resources, pure=pure, name=name, nout=nout)
    return lambda f: Task(f, resources, pure=pure, name=name, nout=nout)


# --------------------------------------------------------------------------- Job


def _handles() -> Executor:
    """What runs the job-handle methods: the executor registered with
    :mod:`lazyslurm.registry` (graph imports nothing above it)."""
    return executor()


def _leak(value: Any, used_as: str) -> LazyValueError:
    """The error for a lazy value used where the client needs its value now."""
    msg = (
        f"{value!r} is lazy: its value is only known after it runs, so it cannot be "
        f"{used_as} here. Get the value with .get_result() (or .compute()), or pass it "
        f"to a task, which receives the computed value"
    )
    return LazyValueError(msg)


if TYPE_CHECKING:
    # For checkers, lazy values derive from Any: a Job[R] may stand where the function
    # expects an R (it is replaced by its result when the task runs), and job.attr /
    # job[i] are lazy views. Their declared methods (compute, get_result...) stay typed.
    _Opaque = Any

    # mypy takes a class with an Any base for a subtype of everything, so `bad: Job[str] =
    # job_of_int` would pass: for mypy (which reads MYPY as true) a Job is only a Job, and
    # its plugin (lazyslurm.mypy_plugin) lets a Job[R] stand for an R in task calls.
    # pyright checks a Job against a Job's own type first, so it keeps the Any base.
    class _Plain:
        __slots__ = ()

    MYPY = False
    if MYPY:  # mypy takes the name MYPY for true; pyright evaluates both branches, and
        _OpaqueJob = _Plain  # an assignment (not a class) lets its Any win there
    else:
        _OpaqueJob = Any
else:

    class _Opaque:
        __slots__ = ()

    _OpaqueJob = _Opaque


class _Lazy(Generic[R_co]):
    """Behaviour shared by lazy values: no truth value, no mutation, compute helpers."""

    __slots__ = ()

    def __bool__(self) -> bool:
        raise _leak(self, "used as a truth value (if, while, and, or, not)")

    def __setattr__(self, name: str, value: Any) -> None:
        msg = f"{type(self).__name__} is immutable"
        raise TypeError(msg)

    def __setitem__(self, key: Any, value: Any) -> None:
        msg = f"{type(self).__name__} is immutable: item assignment is not supported"
        raise TypeError(msg)

    def __delitem__(self, key: Any) -> None:
        msg = f"{type(self).__name__} is immutable: item deletion is not supported"
        raise TypeError(msg)

    def _repr_html_(self) -> str:
        """Notebook display: a small table and the graph (lazyslurm.notebook)."""
        return str(executor().lazy_html(self))

    def compute(self, *, cluster: Any = None, **kwargs: Any) -> R_co:
        """Run what this value needs and return its result."""
        return executor().compute(self, cluster=cluster, **kwargs)[0]

    def wait(
        self,
        timeout: float | None = None,
        poll_interval: float | None = None,
        *,
        cluster: Any = None,
    ) -> bool:
        """Submit what is not submitted yet, wait for this value's job(s) to end: True if
        they succeeded, False if they failed or were cancelled (never raises for that).
        A timeout raises TimeoutError and leaves the jobs running. Inside ``with
        cluster:`` the first wait submits every job built in the block (flush on wait)."""
        return _handles().wait(self, timeout, poll_interval, cluster=cluster)

    def visualize(self, **kwargs: Any) -> Any:
        return executor().visualize(self, **kwargs)

    def __dask_graph__(self) -> Any:
        """dask asks this of every object it is given: a lazyslurm value is refused
        clearly instead of being handed back uncomputed (``dask.compute(job)``)."""
        msg = (
            f"{self!r} is a lazyslurm value, not a dask collection: dask cannot compute it. "
            f"Use lazyslurm.compute(...) or .get_result(), and pass the value to dask"
        )
        raise DaskCollectionError(msg)


class _Handle(_Lazy[R_co]):
    """The job handle (slurm-sdk's vocabulary), for Job and JobArray (a view's names
    stay views of the result)."""

    __slots__ = ()

    def get_status(self, *, cluster: Any = None) -> str:
        """``NOT_SUBMITTED``, ``PENDING``, ``RUNNING``, ``COMPLETED``, ``FAILED``,
        ``CANCELLED`` (or Slurm's ``TIMEOUT``, ``OUT_OF_MEMORY``, ...); polls once."""
        return _handles().get_status(self, cluster=cluster)

    def is_running(self, *, cluster: Any = None) -> bool:
        """True while it runs (Slurm's RUNNING; a pending job is not running yet)."""
        return _handles().get_status(self, cluster=cluster) == "RUNNING"

    def is_completed(self, *, cluster: Any = None) -> bool:
        """True once it ended, whatever the outcome."""
        return _handles().is_completed(self, cluster=cluster)

    def is_successful(self, *, cluster: Any = None) -> bool:
        """True once it ended and succeeded."""
        return _handles().get_status(self, cluster=cluster) == "COMPLETED"

    def cancel(self, *, cluster: Any = None) -> bool:
        """Cancel its unfinished elements (a job never submitted is dropped from the
        block's flush). True if anything was cancelled or dropped."""
        return _handles().cancel(self, cluster=cluster)

    @property
    def id(self) -> str | None:
        """Slurm's job id once submitted (``"123_4"`` for an element of array job 123),
        None before. Local backends give ``RUN_ID:AJ_INDEX``."""
        return _handles().job_id(self)

    def get_script(self, *, cluster: Any = None) -> str:
        """The batch script that runs it (on local backends: the equivalent command)."""
        return _handles().get_script(self, cluster=cluster)


class Job(_Handle[R_co], _OpaqueJob):
    """One lazy call of a task. Immutable and hashable; equal keys mean equal jobs.

    Also a job handle (``wait``, ``get_result``, ``get_status``, ``cancel``, ``id``,
    ``get_stdout``, ``tail``, ...): those names, listed in ``RESERVED_NAMES``, are the
    Job's own; any other attribute is a lazy view of the result (``job.attr``).
    """

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
    def dependencies(self) -> tuple[Job, ...]:
        """Every job this one waits on: data dependencies, then ``.after`` ones."""
        return _unique(self._deps + self._order)

    @property
    def nout(self) -> int | None:
        return self._nout

    def with_nout(self, nout: int) -> Job[R_co]:
        """This job, declared to give ``nout`` items: ``f(x).with_nout(3)`` is
        ``f(x, nout=3)`` (the spelling type checkers accept: ``nout=`` is not a parameter
        of the function).

        >>> @task
        ... def pair(x): return x, x
        >>> len(pair(1).with_nout(2)), pair(1).with_nout(2) == pair(1, nout=2)
        (2, True)
        """
        if nout is None:
            msg = "with_nout() needs the number of items the task returns, got None"
            raise InvalidNoutError(msg)
        return _new_job(
            self.key,
            self._task,
            self._args,
            self._kwargs,
            self._deps,
            self._order,
            check_nout(nout),
        )

    def _length(self) -> int | None:
        return self._nout

    def __hash__(self) -> int:
        return hash((_JOB_HASH_SALT, self.key))  # never collides with its key string

    def __eq__(self, other: object) -> bool:
        if type(other) is Job:
            return other.key == self.key  # type: ignore[attr-defined]
        if isinstance(other, _Lazy):
            return False
        raise _leak(self, f"compared with {safe_repr(other)}")

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        return f"Job({self.key})"

    def __reduce__(self) -> tuple[Any, ...]:
        _refuse_if_hidden(self)
        table, index = _graph_table([self])
        return (_rebuild_graph, (table, index[self.key]))

    # -- lazy views
    def __getitem__(self, index: Any) -> JobView:
        return _view(self, (), (), "", "item", index)

    def __getattr__(self, name: str) -> JobView:
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "visualise":  # dask warns of it too: no lazy view of a misspelling
            msg = f"{self!r} has no visualise(): the spelling is visualize()"
            raise AttributeError(msg)
        return _view(self, (), (), "", "attr", name)

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

    # -- the job handle
    def get_result(self, timeout: float | None = None, *, cluster: Any = None) -> R_co:
        """The job's result (submitted and waited for first if needed); a failed task
        raises its original exception."""
        return _handles().get_result(self, timeout, cluster=cluster)

    def result(self, timeout: float | None = None, *, cluster: Any = None) -> R_co:
        """submitit's spelling of :meth:`get_result`: the job's value (not a lazy view)."""
        return _handles().get_result(self, timeout, cluster=cluster)

    def get_stdout(self, *, cluster: Any = None) -> str:
        """What the job printed so far (its log file)."""
        return _handles().get_output(self, "out", cluster=cluster)

    def get_stderr(self, *, cluster: Any = None) -> str:
        return _handles().get_output(self, "err", cluster=cluster)

    def tail(
        self,
        n: int = 10,
        follow: bool = False,
        *,
        poll_interval: float | None = None,
        stream: str = "out",
        cluster: Any = None,
    ) -> Iterable[str]:
        """The last ``n`` lines of its stdout; with ``follow=True`` an iterator that then
        yields new lines as they come while the job runs, and stops when it ends.

        ``job.tail(follow=True)`` written as a statement (its value unused, as in
        slurm-sdk) prints the lines itself and returns once the job has ended."""
        lines = _handles().tail(self, n, follow, poll_interval, stream, cluster=cluster)
        use = _value_use(sys._getframe(1)) if follow else "kept"
        if use == "kept":
            return lines
        for line in lines:
            print(line, flush=True)
        # echoed at a prompt (REPL, last line of a notebook cell): nothing more to show
        return () if use == "dropped" else None  # type: ignore[return-value]

    def logs(self, *, cluster: Any = None) -> tuple[str, str]:
        """``(stdout, stderr)`` of this job's last run in the session."""
        return executor().job_logs(self, cluster=cluster)


def _value_use(frame: types.FrameType) -> str:
    """What the call the frame is making does with its value, read from the instruction
    after it: ``"dropped"`` (a statement), ``"echoed"`` (a statement at an interactive
    prompt, whose value is displayed) or ``"kept"``."""
    import dis

    try:
        for ins in dis.get_instructions(frame.f_code):
            if ins.offset > frame.f_lasti:
                if ins.opname == "POP_TOP":
                    return "dropped"
                if ins.opname == "PRINT_EXPR" or (
                    ins.opname == "CALL_INTRINSIC_1" and "PRINT" in ins.argrepr
                ):
                    return "echoed"
                return "kept"
    except Exception:  # no code to read: assume it is used
        return "kept"
    return "kept"


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


def _refuse_if_hidden(value: Any) -> None:
    """While lazyslurm pickles arguments, a lazy value met there was hidden from it."""
    if _REFUSE_PICKLE.get():
        msg = (
            f"{value!r} is hidden inside an object lazyslurm cannot look into, so it "
            f"would not be a dependency: pass it directly as a task argument, or in a "
            f"list, tuple, dict value, set, namedtuple or dataclass"
        )
        raise HiddenLazyValueError(msg)


def _graph_table(roots: Iterable[Job]) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    """``roots`` and every job they need as a flat table, dependencies before dependents,
    each referring to its dependencies by row (pickling a deep pipeline recurses not)."""
    rows: list[tuple[Any, ...]] = []
    index: dict[str, int] = {}
    stack: list[tuple[Job, bool]] = [(r, False) for r in reversed(list(roots))]
    while stack:
        job, expanded = stack.pop()
        if expanded:
            if job.key not in index and type(job) is ArrayNode:  # one row: itself
                index[job.key] = len(rows)
                rows.append((job,))
            elif job.key not in index:
                index[job.key] = len(rows)
                rows.append(
                    (
                        job.key,
                        job._task,
                        job._args,
                        job._kwargs,
                        tuple(index[d.key] for d in job._deps),
                        tuple(index[d.key] for d in job._order),
                        job._nout,
                    )
                )
            continue
        if job.key in index:
            continue
        stack.append((job, True))
        if type(job) is ArrayNode:
            continue  # pickled whole, with its .after jobs
        for dep in reversed(job._deps + job._order):
            if dep.key not in index:
                stack.append((dep, False))
    return rows, index


def _rebuild_graph(rows: list[tuple[Any, ...]], root: int | list[int]) -> Any:
    jobs: list[Job] = []
    for row in rows:
        if len(row) == 1:  # an ArrayNode
            jobs.append(row[0])
            continue
        key, task, args, kwargs, deps, order, nout = row
        jobs.append(
            _new_job(
                key,
                task,
                args,
                kwargs,
                tuple(jobs[i] for i in deps),
                tuple(jobs[i] for i in order),
                nout,
            )
        )
    if isinstance(root, int):
        return jobs[root]
    return JobArray(tuple(jobs[i] for i in root))


def _view(
    base: Job, path: tuple[Any, ...], extra: tuple[Job, ...], ptoken: str, kind: str, step: Any
) -> JobView:
    """``base`` viewed through ``path`` then one more step. Lazy values in the step (a
    slice bound, an index, a method call's arguments) become placeholders and extra
    dependencies, resolved inside the consumer like the base."""
    deps: list[Job] = []
    parts: list[str] = []
    if kind == "attr":
        token = "." + step
    elif kind == "call":
        args, kwargs = step
        targs = tuple(_lift_all(args, deps, parts))
        parts.append("|")
        tkwargs = _lift_kwargs(kwargs, deps, parts)
        step = (targs, tkwargs)
        token = "(" + ",".join(parts) + ")"
    elif type(step) is slice:
        bounds = [_lift(b, deps, parts) for b in (step.start, step.stop, step.step)]
        step = slice(*bounds)
        token = "[" + ":".join(parts) + "]"
    else:
        step = _lift(step, deps, parts)
        token = "[" + "".join(parts) + "]"
    return JobView(base, (*path, (kind, step)), extra + tuple(deps), ptoken + token)


class JobView(_Lazy[Any], _Opaque):  # type: ignore[misc]
    """``job[i]``, ``job["k"]``, ``job.attr`` or ``job.method(...)``: resolved inside the
    consumer, never a Slurm job of its own."""

    __slots__ = ("_base", "_extra", "_path", "_ptoken")

    def __init__(
        self,
        base: Job,
        path: tuple[tuple[str, Any], ...],
        extra: tuple[Job, ...] = (),
        ptoken: str | None = None,
    ) -> None:
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_extra", extra)
        object.__setattr__(self, "_ptoken", repr(path) if ptoken is None else ptoken)

    @property
    def base(self) -> Job:
        return self._base

    @property
    def path(self) -> tuple[tuple[str, Any], ...]:
        return self._path

    def __getitem__(self, index: Any) -> JobView:
        return _view(self._base, self._path, self._extra, self._ptoken, "item", index)

    def __getattr__(self, name: str) -> JobView:
        if name.startswith("_"):
            raise AttributeError(name)
        return _view(self._base, self._path, self._extra, self._ptoken, "attr", name)

    @overload
    def __call__(self, *args: Any, dask_key_name: str, **kwargs: Any) -> Job[Any]: ...
    @overload
    def __call__(self, *args: Any, **kwargs: Any) -> JobView: ...
    def __call__(self, *args: Any, **kwargs: Any) -> JobView | Job[Any]:
        """``job.method(...)``: a lazy method call, made inside the consumer.

        dask's keywords are understood: ``pure=`` is accepted and has nothing to change (a
        view is resolved where it is used, so it is always pure); ``dask_key_name=NAME``
        makes the call a node of its own, with that key (it then runs as a job)."""
        kwargs.pop("pure", None)
        name = kwargs.pop("dask_key_name", None)
        view = _view(self._base, self._path, self._extra, self._ptoken, "call", (args, kwargs))
        return view if name is None else _as_node(view, name)

    def __iter__(self) -> Iterator[JobView]:
        msg = f"cannot iterate over {self!r}: its length is unknown"
        raise UnknownLengthError(msg)

    def __len__(self) -> int:
        msg = f"len() of {self!r} is unknown"
        raise UnknownLengthError(msg)

    def __hash__(self) -> int:
        return hash((self._base.key, self._ptoken))

    def __eq__(self, other: object) -> bool:
        if type(other) is JobView:
            return (other._base.key, other._ptoken) == (self._base.key, self._ptoken)  # type: ignore[attr-defined]
        if isinstance(other, _Lazy):
            return False
        raise _leak(self, f"compared with {safe_repr(other)}")

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __str__(self) -> str:
        raise _leak(self, "converted to str (print, f-string)")

    def __format__(self, spec: str) -> str:
        raise _leak(self, "formatted (f-string, format)")

    def __int__(self) -> int:
        raise _leak(self, "converted to int")

    def __float__(self) -> float:
        raise _leak(self, "converted to float")

    def __index__(self) -> int:
        raise _leak(self, "used as an index")

    def __repr__(self) -> str:
        steps = []
        for kind, k in self._path:
            if kind == "item":
                steps.append(f"[{safe_repr(k)}]")
            elif kind == "attr":
                steps.append(f".{k}")
            else:
                steps.append("(...)")
        return f"JobView({self._base.key}{''.join(steps)})"

    def __reduce__(self) -> tuple[Any, ...]:
        _refuse_if_hidden(self)
        return (JobView, (self._base, self._path, self._extra, self._ptoken))

    def get_result(self, timeout: float | None = None, *, cluster: Any = None) -> Any:
        """The viewed value (its job submitted and waited for first if needed)."""
        return _handles().get_result(self, timeout, cluster=cluster)


def _identity(value: Any) -> Any:
    return value


def _as_node(value: JobView, key: str) -> Job[Any]:
    """A view made a node of its own, with key ``key`` (``dask_key_name=``)."""
    return Task(_identity, Resources(), name="view")(value, dask_key_name=key)


class ArrayNode:
    """A ``task.map`` over many items (a range, a NumPy array, a list of plain configs:
    :data:`COMPACT_MIN` or more) kept as ONE graph node: the items' description
    (``desc``, see :mod:`lazyslurm.store`) and the recipe of its elements' keys. Element
    ``i`` is the job ``task.map`` would have built for item ``i`` (same key), made only
    when asked (:meth:`element`); the planner gives it array jobs without one object per
    element, and a fan-in over it refers to it whole (:class:`~lazyslurm.store.RefArray`).
    """

    __slots__ = ("desc", "key", "order", "recipe", "task")

    deps: tuple[Job, ...] = ()  # the items are known values: no data dependency
    nout = None

    def __init__(self, key: str, task: Task[Any], desc: Any, recipe: tuple[str, str, str]) -> None:
        self.key = key
        self.task = task
        self.desc = desc
        self.recipe = recipe
        self.order = task._after

    def __len__(self) -> int:
        return compact_size(self.desc)

    def keys(self) -> ElementKeys:
        return ElementKeys(self.recipe, self.desc)

    def element(self, index: int) -> Job:
        """The job of item ``index`` (negative: from the end)."""
        items = self.keys().items()
        key, args, kwargs = compact_element(self.recipe, items[index])
        if kwargs:
            kwargs = {k: kwargs[k] for k in sorted(kwargs)}
        return _new_job(key, self.task, args, kwargs, (), self.order, None)

    def __iter__(self) -> Iterator[Job]:
        recipe, t, order = self.recipe, self.task, self.order
        for item in self.keys().items():
            key, args, kwargs = compact_element(recipe, item)
            if kwargs:
                kwargs = {k: kwargs[k] for k in sorted(kwargs)}
            yield _new_job(key, t, args, kwargs, (), order, None)

    def __hash__(self) -> int:
        return hash((_JOB_HASH_SALT, self.key))

    def __eq__(self, other: object) -> bool:
        return type(other) is ArrayNode and other.key == self.key  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"ArrayNode({self.key} [{len(self)}])"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ArrayNode, (self.key, self.task, self.desc, self.recipe))


class JobArray(_Handle[list[R_co]], _Opaque):  # type: ignore[misc]
    """The jobs of one ``task.map``: a sequence of element ``Job`` objects.

    As an argument it stands for the list of its results (fan-in). Also a job handle
    for the whole array (``wait``, ``get_results``, ``get_status``, ``cancel``, ...).
    A map over many items keeps them as one :class:`ArrayNode` (``_node``): its element
    jobs are made when asked (``arr[i]``, iteration, ``jobs``).
    """

    __slots__ = ("_jobs", "_node")

    def __init__(self, jobs: tuple[Job[R_co], ...], node: ArrayNode | None = None) -> None:
        object.__setattr__(self, "_jobs", jobs)
        object.__setattr__(self, "_node", node)

    @property
    def jobs(self) -> tuple[Job[R_co], ...]:
        if self._node is not None:
            return tuple(self._node)
        return self._jobs

    @property
    def keys(self) -> tuple[str, ...]:
        if self._node is not None:
            return self._node.keys()  # type: ignore[return-value]  # a lazy sequence of str
        return tuple(j.key for j in self._jobs)

    @property
    def dependencies(self) -> tuple[Job, ...]:
        """The jobs outside this array that its elements wait on (data and ``.after``)."""
        if self._node is not None:
            return self._node.order
        own = set(self.keys)
        found = [d for j in self._jobs for d in itertools.chain(j._deps, j._order)]
        return tuple(d for d in _unique(found) if d.key not in own)

    def __len__(self) -> int:
        if self._node is not None:
            return len(self._node)
        return len(self._jobs)

    def __iter__(self) -> Iterator[Job[R_co]]:
        if self._node is not None:
            return iter(self._node)
        return iter(self._jobs)

    @overload
    def __getitem__(self, index: int) -> Job[R_co]: ...
    @overload
    def __getitem__(self, index: slice) -> JobArray[R_co]: ...
    def __getitem__(self, index: int | slice) -> Job[R_co] | JobArray[R_co]:
        if isinstance(index, slice):
            if any(isinstance(b, _Lazy) for b in (index.start, index.stop, index.step)):
                msg = (
                    f"{self!r}[{safe_repr(index)}]: a JobArray's elements are chosen when "
                    f"the graph is built, so its slice bounds must be known; slice the "
                    f"results inside a task instead (e.g. pick(arr, n))"
                )
                raise LazyValueError(msg)
            return JobArray(self.jobs[index])
        if isinstance(index, _Lazy):
            raise _leak(index, "used as an index of a JobArray")
        if self._node is not None:
            n = len(self._node)
            i = operator.index(index)
            if not -n <= i < n:
                msg = f"JobArray index {i} out of range ({n} elements)"
                raise IndexError(msg)
            return self._node.element(i)
        return self._jobs[index]

    def __hash__(self) -> int:
        if self._node is not None:
            return hash(self._node)
        return hash(self._jobs)

    def __eq__(self, other: object) -> bool:
        if type(other) is JobArray:
            if self._node is not None or other._node is not None:  # type: ignore[attr-defined]
                if self._node is not None and other._node is not None:  # type: ignore[attr-defined]
                    return self._node == other._node  # type: ignore[attr-defined]
                return len(self) == len(other) and tuple(self.keys) == tuple(other.keys)  # type: ignore[arg-type]
            return other._jobs == self._jobs  # type: ignore[attr-defined]
        if isinstance(other, _Lazy):
            return False
        raise _leak(self, f"compared with {safe_repr(other)}")

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __repr__(self) -> str:
        if self._node is not None:
            return f"JobArray({self._node.task.name}[{len(self._node)}])"
        name = self._jobs[0].task.name if self._jobs else "empty"
        return f"JobArray({name}[{len(self._jobs)}])"

    def __reduce__(self) -> tuple[Any, ...]:
        _refuse_if_hidden(self)
        if self._node is not None:
            return (JobArray, ((), self._node))
        table, index = _graph_table(self._jobs)
        return (_rebuild_graph, (table, [index[j.key] for j in self._jobs]))

    def get_results(self, timeout: float | None = None, *, cluster: Any = None) -> list[R_co]:
        """The list of the elements' results (submitted and waited for first if needed);
        a failed element raises its original exception."""
        return _handles().get_result(self, timeout, cluster=cluster)

    def result(self, timeout: float | None = None, *, cluster: Any = None) -> list[R_co]:
        """submitit's spelling: the list of the elements' results (:meth:`get_results`)."""
        return _handles().get_result(self, timeout, cluster=cluster)

    def get_stdout(self, *, cluster: Any = None) -> list[str]:
        """Each element's stdout, in order."""
        return _handles().get_output(self, "out", cluster=cluster)

    def get_stderr(self, *, cluster: Any = None) -> list[str]:
        return _handles().get_output(self, "err", cluster=cluster)


LazyValue = Job | JobView | JobArray
