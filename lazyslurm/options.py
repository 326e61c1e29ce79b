"""Every ``Cluster`` option, gathered from the one place each is declared.

Each backend declares its options once, beside its code, as a ``TypedDict`` of
``Annotated[TYPE, Opt(...)]`` keys (:mod:`lazyslurm.graph.options`): the common ones
(:class:`~lazyslurm.backends.option.CommonOptions`), then those its
:class:`~lazyslurm.backends.base.BackendSpec` lists. ``Cluster(...)`` (typed by
:class:`ClusterOptions`), cluster profiles and the options table of ``docs/reference.md``
(``python -m lazyslurm.options``) all read them here.

>>> all_options()["port"].backends, all_options()["partition"].task_default
(('ssh',), True)
>>> problems("slurm", {"partiton": "cpu", "port": 22})
[('partiton', "unknown; did you mean 'partition'?"), ('port', 'only applies to backend "ssh"')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lazyslurm.backends.registry as backends
from lazyslurm.backends.local.options import LocalOptions
from lazyslurm.backends.option import CommonOptions, Option, options_of
from lazyslurm.backends.packaging.options import PackagingOptions
from lazyslurm.backends.shell.options import SSHOptions
from lazyslurm.backends.slurm.options import SlurmOptions
from lazyslurm.errors import ClusterConfigError
from lazyslurm.graph.options import Declared, suggest
from lazyslurm.graph.resources import DEFAULTABLE, TaskDefaults

__all__ = [
    "ClusterOptions",
    "all_options",
    "check",
    "did_you_mean",
    "markdown_table",
    "options_for",
    "problems",
]


class ClusterOptions(
    CommonOptions, LocalOptions, SlurmOptions, PackagingOptions, SSHOptions, TaskDefaults,
    total=False,
):  # fmt: skip
    """The keyword options of ``Cluster(backend, ...)``, typed: those of every built-in
    backend (each declared once, beside its backend; a backend refuses the options of
    others at run time). All optional."""


def options_for(backend: str) -> dict[str, Declared]:
    """The options ``Cluster(backend, ...)`` takes: the common ones and its own."""
    return {**options_of(CommonOptions), **backends.get(backend).declared()}


def all_options() -> dict[str, Option]:
    """Every option of every backend, with the backends that take it."""
    out: dict[str, Option] = {}
    taken: dict[str, list[str]] = {}
    decl: dict[str, Declared] = dict(options_of(CommonOptions))
    names = backends.names()
    for name in decl:
        taken[name] = list(names)
    for spec in backends.specs():
        for opt_name, d in spec.declared().items():
            decl.setdefault(opt_name, d)
            taken.setdefault(opt_name, []).append(spec.name)
    for name, d in decl.items():
        out[name] = Option(d, tuple(dict.fromkeys(taken[name])), task_default=name in DEFAULTABLE)
    return out


def did_you_mean(name: str, known: Any, value: Any = None) -> str:
    """``"; did you mean 'x'?"`` for the closest known name (submitit's names too:
    ``timeout_min`` -> ``time``), or ``""``."""
    close = suggest(name, list(known), value)
    return f"; {close}" if close else ""


def problems(backend: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, what is wrong)`` for each option that is unknown, of the wrong type or
    value, or not for ``backend``; and a missing required one (``hostname`` for ssh)."""
    mine = options_for(backend)
    every: dict[str, Option] | None = None
    out: list[tuple[str, str]] = []
    for name, value in options.items():
        d = mine.get(name)
        if d is None:
            every = every if every is not None else all_options()
            opt = every.get(name)
            if opt is None:
                out.append((name, f"unknown{did_you_mean(name, every, value)}"))
            else:
                wrong = opt.problem(value) if value is not None else None
                out.append((name, wrong or opt.applies_to(backend) or "not for this backend"))
            continue
        wrong = d.problem(value) if value is not None else None
        if wrong is not None:
            out.append((name, wrong))
    if "hostname" in mine and options.get("hostname") is None:
        out.append(("hostname", f'backend "{backend}" needs it'))
    return out


def check(backend: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`ClusterConfigError` for the first problem :func:`problems` finds."""
    for name, wrong in problems(backend, options):
        if wrong.startswith("unknown"):
            known = ", ".join(options_for(backend))
            msg = (
                f"unknown Cluster option {name!r} for backend {backend!r}"
                f"{wrong[len('unknown') :]} (options of {backend!r}: {known})"
            )
        else:
            msg = f"Cluster option {name!r} {wrong}"
        raise ClusterConfigError(msg)


def markdown_table() -> str:
    """The options of the built-in backends as a Markdown table (for docs/reference.md;
    a backend registered from outside documents its own)."""
    rows = ["| option | backends | type | default | what it is |", "|---|---|---|---|---|"]
    builtin = backends.BUILTIN
    for o in all_options().values():
        mine = [b for b in o.backends if b in builtin]
        if not mine:
            continue
        where = "all" if set(mine) >= set(builtin) else ", ".join(mine)
        default = "" if o.default in (None, ()) else f"`{o.default!r}`"
        kind = o.declared.type_text().replace("|", "\\|")
        rows.append(f"| `{o.name}` | {where} | `{kind}` | {default} | {o.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
