"""What a task's function accepts: read once per task, checked when a job is built.

A call (``f(1, 2)``) or a map item (``f.map([(1, 2)])``) whose arguments the function
cannot take raises here, on the client, instead of failing on the node. The parameter
that receives the job's :class:`~lazyslurm.context.JobContext` (:func:`context_parameter`)
is never required of the call: the runner fills it in when the call leaves it out.

>>> def f(a, b=0, *, c, job=None): ...
>>> s = Shape.of(f, "f")
>>> s.check(2, ("c",))           # f(1, 2, c=3): fine
>>> def why(nargs, keywords):
...     try:
...         s.check(nargs, keywords)
...     except TypeError as exc:
...         return str(exc).split(":")[0]
>>> why(3, ("c",))
"task 'f' got 3 positional arguments but its function takes at most 2"
>>> why(1, ())
"task 'f' is missing the required argument 'c'"
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Collection
from typing import Any

from lazyslurm.errors import TaskArgumentsError

__all__ = ["Shape", "context_parameter"]

_ANNOTATION = re.compile(r"\bJobContext\b")


def context_parameter(func: Callable[..., Any]) -> tuple[str, int | None] | None:
    """The parameter that receives the :class:`~lazyslurm.context.JobContext`:
    ``(name, position)``.

    It is the parameter annotated ``JobContext`` (the class itself, or a string:
    ``JobContext | None``, ``Optional[JobContext]``), else the one named ``job``.
    ``position`` is its index for a positional parameter, ``None`` for a keyword-only
    one. Client side only (the runner reads the result from the spec's header).

    >>> def train(lr, *, job): ...
    >>> context_parameter(train)
    ('job', None)
    >>> def plain(x): ...
    >>> context_parameter(plain) is None
    True
    """
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature
        return None
    return _context_of(params)


def _context_of(params: list[inspect.Parameter]) -> tuple[str, int | None] | None:
    found = None
    for i, p in enumerate(params):
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = p.annotation
        if ann is not p.empty:
            # the class's repr names it (<class 'lazyslurm.context.JobContext'>): the
            # graph does not import the runner-side module to compare identities
            text = ann if isinstance(ann, str) else repr(ann)
            if _ANNOTATION.search(text):
                found = p, i
                break
        if p.name == "job" and found is None:
            found = p, i
    if found is None:
        return None
    p, i = found
    return p.name, None if p.kind is p.KEYWORD_ONLY else i


class Shape:
    """The calls a function accepts, from its signature (``Shape.of``; None if it has none).

    ``keywords``: the names it accepts as keywords (None: any, it has ``**kwargs``).
    """

    __slots__ = ("_at_least", "_at_most", "_by_keyword", "_kw_required", "_positional",
                 "_required", "keywords", "name", "text")  # fmt: skip

    def __init__(self, params: list[inspect.Parameter], name: str, text: str) -> None:
        P = inspect.Parameter
        context = _context_of(params)
        injected = context[0] if context is not None else None  # the runner fills it in
        positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
        self.name = name
        self.text = text
        self._positional = tuple(p.name for p in positional)
        self._by_keyword = frozenset(
            p.name for p in positional if p.kind is P.POSITIONAL_OR_KEYWORD
        )
        varargs = any(p.kind is P.VAR_POSITIONAL for p in params)
        self._at_most = None if varargs else len(positional)
        # required: (name, position or None for keyword-only, positional-only?)
        self._required = tuple(
            (p.name, i if i < len(positional) else None, p.kind is P.POSITIONAL_ONLY)
            for i, p in enumerate(params)
            if p.default is P.empty
            and p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)
            and p.name != injected
        )
        # a call with positional arguments only is fine iff it gives this many at least
        # (the fast path of a map over tuples)
        self._at_least = 1 + max((i for _, i, _ in self._required if i is not None), default=-1)
        self._kw_required = any(i is None for _, i, _ in self._required)
        if any(p.kind is P.VAR_KEYWORD for p in params):
            self.keywords: frozenset[str] | None = None
        else:
            self.keywords = frozenset(
                p.name for p in params if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)
            )

    @classmethod
    def of(cls, func: Callable[..., Any], name: str) -> Shape | None:
        """The shape of ``func`` (None: no signature to read, e.g. some builtins)."""
        try:
            sig = inspect.signature(func)
        except (TypeError, ValueError):
            return None
        return cls(list(sig.parameters.values()), name, f"{name}{sig}")

    def check(self, nargs: int, keywords: Collection[str] = (), item: int | None = None) -> None:
        """Raise :class:`~lazyslurm.errors.TaskArgumentsError` unless a call with
        ``nargs`` positional arguments and these keyword names binds (unknown keywords
        are checked before, by the caller, with the accepted names in the message).
        ``item``: the index of the map item being checked, for the message."""
        at_most = self._at_most
        if at_most is not None and nargs > at_most:
            self._fail(
                item,
                f"got {nargs} positional argument{'s' * (nargs != 1)} but its function takes "
                + (f"at most {at_most}" if at_most else "none"),
            )
        if not keywords:
            if nargs >= self._at_least and not self._kw_required:
                return
        else:
            named = self._positional[:nargs]
            twice = [k for k in named if k in keywords and k in self._by_keyword]
            if twice:
                self._fail(item, f"got multiple values for the argument {twice[0]!r}")
        missing = [
            name
            for name, i, only_positional in self._required
            if (i is None or i >= nargs) and (only_positional or name not in keywords)
        ]
        if missing:
            which = ", ".join(map(repr, missing))
            plural = "s" * (len(missing) != 1)
            self._fail(item, f"is missing the required argument{plural} {which}")

    def _fail(self, item: int | None, what: str) -> None:
        where = "" if item is None else f" (map item {item})"
        msg = f"task {self.name!r}{where} {what}: {self.text}. Fix the call to match"
        raise TaskArgumentsError(msg)
