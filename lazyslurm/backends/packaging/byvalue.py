"""``packaging="by-value"``: the cluster needs only a Python.

lazyslurm's runner and cloudpickle are staged into ``WORKDIR/code/HASH`` once per
content hash; the user's own modules travel inside the pickles; pure-Python installed
packages the cluster's python lacks are staged as ``WORKDIR/code/deps-HASH``, a compiled
one is refused before anything is submitted. What travels is decided in
:mod:`lazyslurm.backends.packaging.modules`.
"""

from __future__ import annotations

import shlex
import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lazyslurm.backends.packaging.base import Launch, Prepared, pickles
from lazyslurm.backends.packaging.modules import (
    content_hash,
    installed_files,
    third_party_modules,
    unshippable_error,
)
from lazyslurm.backends.packaging.target import Target

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.planner import ArrayJob

__all__ = ["BUILDER", "ByValueBuilder"]


class ByValueBuilder:
    """``by-value`` for one backend session (see the module docstring)."""

    def __init__(self, target: Target) -> None:
        self.target = target

    def probe_line(self, workdir: str | None) -> str:
        return self.target.interpreter.probe_line(self.target.setup)

    def read_probe(self, stdout: str) -> None:
        self.target.interpreter.read_probe(stdout)

    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        return self.target.project_modules()

    def prepare(
        self,
        shell: Shell,
        workdir: str,
        array_jobs: Sequence[ArrayJob],
        files: Mapping[str, bytes],
        run_dir: str = "",
    ) -> Prepared:
        t = self.target
        blobs = pickles(array_jobs, files)
        t.python_version(shell, blobs)
        missing = t.interpreter.missing(shell, blobs, t.setup)
        runtime, code = t.code.runtime(workdir)
        dirs = [runtime]
        if missing:
            deps, staged = self.installed(workdir, missing)
            dirs.append(deps)
            code.update(staged)
        path = ":".join(shlex.quote(d) for d in dirs)
        line = f"export PYTHONPATH={path}${{PYTHONPATH:+:$PYTHONPATH}}"
        runner = f"{runtime}/lazyslurm/runner/__main__.py"  # the staged runtime's runner
        launch = Launch(t.python, (*t.setup, line), runner=runner)
        return Prepared.of(array_jobs, launch, code)

    def installed(
        self, workdir: str, names: set[str]
    ) -> tuple[str, dict[str, Mapping[str, bytes]]]:
        """The pure-Python installed packages ``names`` (and what they require) as
        ``WORKDIR/code/deps-HASH``: that directory and what to stage for it. A compiled one
        the cluster lacks is refused."""
        files, compiled = installed_files(names)
        lacking = {n for n in compiled if n not in self.target.interpreter.importable} & (
            set(third_party_modules()) | names
        )
        lacking |= {n for n in names if not any(k.split("/")[0].removesuffix(".py") == n
                                                 for k in files)}  # fmt: skip
        if lacking:
            raise unshippable_error(lacking, python=self.target.python, mode="by-value")
        digest = "deps-" + content_hash(files)
        return f"{workdir}/code/{digest}", self.target.code.need(workdir, digest, files)


BUILDER = ByValueBuilder
