"""``packaging="inherit"``: the given interpreter and environment as they are.

The cluster's ``python`` (after the ``setup`` lines) must import lazyslurm and
cloudpickle; jobs start the runner of the lazyslurm installed there. On this host (the
``slurm`` backend) the client's own lazyslurm, on the shared file system, comes first on
``PYTHONPATH``. Installed modules travel by reference, a task's own module (not
installed) by value.
"""

from __future__ import annotations

import shlex
import sys
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lazyslurm.backends.packaging.base import Launch, Prepared, pickles
from lazyslurm.backends.packaging.modules import project_modules
from lazyslurm.backends.packaging.target import Target
from lazyslurm.errors import ClusterConfigError

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.planner import ArrayJob

__all__ = ["BUILDER", "InheritBuilder"]

_LAZYSLURM = Path(__file__).resolve().parents[2]  # this very lazyslurm (backends/packaging/..)


class InheritBuilder:
    """``inherit`` for one backend session (see the module docstring)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def setup(self) -> tuple[str, ...]:
        """The setup lines; on this host the very lazyslurm this client runs, on the
        shared file system, comes first on the path."""
        if not self.target.local:
            return self.target.setup
        here = shlex.quote(str(_LAZYSLURM.parent))
        return (f"export PYTHONPATH={here}${{PYTHONPATH:+:$PYTHONPATH}}", *self.target.setup)

    def probe_line(self, workdir: str | None) -> str:
        return self.target.interpreter.probe_line(self.setup())

    def read_probe(self, stdout: str) -> None:
        self.target.interpreter.read_probe(stdout)
        self.check()

    def check(self) -> None:
        """The cluster's python must import lazyslurm and cloudpickle."""
        if {"lazyslurm", "cloudpickle"} <= self.target.interpreter.importable:
            return
        msg = (
            f"python {self.target.python!r} on the cluster cannot import lazyslurm and "
            f"cloudpickle, which packaging='inherit' expects installed there: use "
            f"packaging='by-value' (the default over SSH: nothing to install), install them "
            f"there (`pip install lazyslurm-dag cloudpickle`), or pass python=... / setup=[...] "
            f"to the Cluster"
        )
        raise ClusterConfigError(msg)

    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        """Only the function's own module, when it is not installed."""
        name = getattr(func, "__module__", None) or ""
        mod = sys.modules.get(name)
        if mod is not None and project_modules({name: mod}) == [name]:
            return [mod]
        return []

    def prepare(
        self,
        shell: Shell,
        workdir: str,
        array_jobs: Sequence[ArrayJob],
        files: Mapping[str, bytes],
        run_dir: str = "",
    ) -> Prepared:
        t = self.target
        t.python_version(shell, pickles(array_jobs, files), self.setup())
        self.check()
        runner = t.interpreter.runner  # the cluster's lazyslurm (probed), if any
        if t.local:  # this very lazyslurm, on the shared file system
            runner = str(_LAZYSLURM / "runner" / "__main__.py")
        return Prepared.of(array_jobs, Launch(t.python, self.setup(), runner=runner))


BUILDER = InheritBuilder
