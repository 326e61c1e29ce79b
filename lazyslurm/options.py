"""Every ``Cluster`` option, gathered from the one place each is declared.

Each backend declares its options (name, type, default, one line of help) beside its
code: :data:`lazyslurm.backends.option.COMMON`, ``OPTIONS`` of
:mod:`lazyslurm.backends.local`, :mod:`lazyslurm.backends.slurm`,
:mod:`lazyslurm.packaging` and :mod:`lazyslurm.backends.shell.ssh`. ``Cluster(...)``,
cluster profiles and the options table of ``docs/reference.md``
(``python -m lazyslurm.options``) all read them here.

>>> OPTIONS["port"].backends, OPTIONS["partition"].task_default
(('ssh',), True)
>>> problems("slurm", {"partiton": "cpu", "port": 22})
[('partiton', "unknown; did you mean 'partition'?"), ('port', 'only applies to backend "ssh"')]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lazyslurm.backends import local, slurm
from lazyslurm.backends.option import BACKENDS, COMMON, Option
from lazyslurm.backends.shell import ssh
from lazyslurm.errors import ClusterConfigError
from lazyslurm.graph.options import suggest
from lazyslurm.packaging import OPTIONS as PACKAGING

__all__ = ["BACKENDS", "OPTIONS", "check", "did_you_mean", "markdown_table", "problems"]

OPTIONS: dict[str, Option] = {
    o.name: o for o in (*COMMON, *local.OPTIONS, *slurm.OPTIONS, *PACKAGING, *ssh.OPTIONS)
}


def did_you_mean(name: str, known: Any, value: Any = None) -> str:
    """``"; did you mean 'x'?"`` for the closest known name (submitit's names too:
    ``timeout_min`` -> ``time``), or ``""``."""
    close = suggest(name, list(known), value)
    return f"; {close}" if close else ""


def problems(backend: str, options: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(name, what is wrong)`` for each option that is unknown, of the wrong type or
    value, or not for ``backend``; and a missing required one (``hostname`` for ssh)."""
    out: list[tuple[str, str]] = []
    for name, value in options.items():
        opt = OPTIONS.get(name)
        if opt is None:
            out.append((name, f"unknown{did_you_mean(name, OPTIONS, value)}"))
            continue
        wrong = opt.problem(value) if value is not None else None
        if wrong is None:
            wrong = opt.applies_to(backend)
        if wrong is not None:
            out.append((name, wrong))
    if backend == "ssh" and options.get("hostname") is None:
        out.append(("hostname", 'backend "ssh" needs it'))
    return out


def check(backend: str, options: Mapping[str, Any]) -> None:
    """Raise :class:`ClusterConfigError` for the first problem :func:`problems` finds."""
    for name, wrong in problems(backend, options):
        if wrong.startswith("unknown"):
            known = ", ".join(o for o in OPTIONS if OPTIONS[o].applies_to(backend) is None)
            msg = (
                f"unknown Cluster option {name!r} for backend {backend!r}"
                f"{wrong[len('unknown') :]} (options of {backend!r}: {known})"
            )
        else:
            msg = f"Cluster option {name!r} {wrong}"
        raise ClusterConfigError(msg)


def markdown_table() -> str:
    """The options as a Markdown table (for docs/reference.md)."""
    rows = ["| option | backends | type | default | what it is |", "|---|---|---|---|---|"]
    for o in OPTIONS.values():
        backends = "all" if o.backends == BACKENDS else ", ".join(o.backends)
        default = "" if o.default in (None, ()) else f"`{o.default!r}`"
        rows.append(f"| `{o.name}` | {backends} | {o.kind} | {default} | {o.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(markdown_table(), end="")
