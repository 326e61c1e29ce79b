"""A mypy plugin: in a task call, a ``Job[R]`` may stand where the function takes an ``R``.

A ``Job`` is replaced by its result where the task runs, so ``train(prepare(x))`` is
right when ``train`` takes what ``prepare`` returns. For mypy a ``Job`` is only a ``Job``
(so ``bad: Job[str] = job_of_int`` is an error); this plugin widens each parameter of a
task call to also accept the ``Job`` of its type. Enable it in the project's mypy
configuration::

    [tool.mypy]
    plugins = ["lazyslurm.mypy_plugin"]

pyright needs nothing: it accepts a ``Job[R]`` for an ``R`` and still tells ``Job`` types
apart. Imported by mypy only, never by lazyslurm.
"""

from __future__ import annotations

from collections.abc import Callable

from mypy.plugin import MethodSigContext, Plugin
from mypy.types import (
    AnyType,
    CallableType,
    FunctionLike,
    Instance,
    TupleType,
    Type,
    UnionType,
    get_proper_type,
)

__all__ = ["plugin"]

_CALL = "lazyslurm.graph.core.Task.__call__"
# containers whose items may be jobs too (lazyslurm walks them: lists, tuples, dict values,
# sets), and their abstract spellings
_CONTAINERS = frozenset(
    {
        "builtins.list", "builtins.tuple", "builtins.dict", "builtins.set", "builtins.frozenset",
        "typing.Sequence", "typing.Iterable", "typing.Mapping", "typing.Collection",
        "collections.abc.Sequence", "collections.abc.Iterable", "collections.abc.Mapping",
        "collections.abc.Collection",
    }
)  # fmt: skip


def _widen(ctx: MethodSigContext) -> FunctionLike:
    """The call's signature, each parameter ``T`` made ``T | Job[T]`` (``Job`` is what
    the call returns: a ``Job[R]``)."""
    sig = ctx.default_signature
    if not isinstance(sig, CallableType):
        return sig
    job = get_proper_type(sig.ret_type)
    if not isinstance(job, Instance):
        return sig

    def lazy(t: Type) -> Type:
        """``t | Job[t]``, containers' items widened too (a list of jobs is a fan-in)."""
        p = get_proper_type(t)
        if isinstance(p, AnyType):
            return t
        if isinstance(p, Instance) and p.type.fullname in _CONTAINERS and p.args:
            inner: Type = p.copy_modified(args=[lazy(a) for a in p.args])
        elif isinstance(p, TupleType):
            inner = p.copy_modified(items=[lazy(i) for i in p.items])
        elif isinstance(p, UnionType):
            return UnionType.make_union([lazy(i) for i in p.items])
        else:
            inner = t
        return UnionType.make_union([inner, Instance(job.type, [t])])

    return sig.copy_modified(arg_types=[lazy(t) for t in sig.arg_types])


class LazySlurmPlugin(Plugin):
    def get_method_signature_hook(
        self, fullname: str
    ) -> Callable[[MethodSigContext], FunctionLike] | None:
        return _widen if fullname == _CALL else None


def plugin(version: str) -> type[Plugin]:
    """mypy's entry point."""
    return LazySlurmPlugin
