"""How a task's code and environment reach the cluster: ``packaging=`` modes.

``auto`` (default): ``inherit`` for Slurm on this host, ``by-value`` over SSH.
``inherit``: the given interpreter and environment as they are. ``by-value``: the
cluster needs only a Python; lazyslurm's runner and cloudpickle are staged into
``WORKDIR/code/HASH`` once per content hash, user modules travel inside the pickles.
``wheel``: the project's wheel in a venv on the cluster, once per content hash.
``container``: an image built, tagged by content hash, pushed, and run by podman,
Pyxis or Apptainer. See ``docs/packaging.md``.

Each mode is one :class:`~lazyslurm.backends.packaging.base.Builder`, the class
``BUILDER`` of the module ``<mode>.py`` here (``by-value``: ``byvalue.py``), found by the
mode's name in :data:`~lazyslurm.graph.resources.PackagingMode`. What they share (the
cluster's Python, ``WORKDIR/code`` and its trust) is :mod:`.target`.

The Slurm backend asks a :class:`Packager`, itself a ``Builder``, the same four things:
a shell snippet for its one probe (:meth:`Packager.probe_line`, read back by
:meth:`Packager.read_probe`), which modules to pickle by value
(:meth:`Packager.by_value_modules`), and, per run, :meth:`Packager.prepare`: the files to
stage, a shell snippet to run before submitting, and how each array job starts its runner
(:class:`Launch`). The Packager picks the builder of each array job's mode and merges.
"""

from __future__ import annotations

import importlib
import logging
import re
import time
import types
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from lazyslurm.backends.option import resolve
from lazyslurm.backends.packaging.base import Builder, Launch, Prepared, environment_note
from lazyslurm.backends.packaging.disk import ago, human_kb, read_gc, read_missing
from lazyslurm.backends.packaging.options import PackagingOptions
from lazyslurm.backends.packaging.target import (
    Target,
    atomic_move,
    check_staged,
    code_listing,
    read_code_listing,
    untrusted_code_error,
)
from lazyslurm.errors import ClusterConfigError
from lazyslurm.graph.resources import PACKAGING_MODES, Resources

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell
    from lazyslurm.planning.planner import ArrayJob

__all__ = [
    "Builder",
    "Launch",
    "Packager",
    "PackagingOptions",
    "Prepared",
    "atomic_move",
    "check_staged",
    "code_listing",
    "environment_note",
    "read_code_listing",
    "read_missing",
    "report_gc",
    "settings",
    "untrusted_code_error",
]

log = logging.getLogger(__name__)


def report_gc(workdir: str, stdout: str) -> None:
    """Log what the ``code_cache_gb`` cap removed after a submission (a warning per
    unit: the next run that needs it stages or creates it again)."""
    if "LZ-REMOVED\t" not in stdout and "LZ-KEPT\t" not in stdout:
        return
    done = read_gc(stdout)
    now = time.time()
    for unit in done.removed:
        log.warning(
            "removed %s/code/%s (%s, %s, last used %s ago): WORKDIR/code held %s, over "
            "code_cache_gb; least recently used entries go first",
            workdir, unit.name, unit.kind, human_kb(unit.kb), ago(now - unit.last_used),
            human_kb(done.total_kb),
        )  # fmt: skip
    if not done.removed and done.kept:
        why = "; ".join(f"{u}: {w}" for u, w in list(done.kept.items())[:3])
        log.warning(
            "%s/code holds %s, over code_cache_gb, but nothing could be removed (%s): "
            "`lazyslurm usage --disk` shows what it holds",
            workdir, human_kb(done.total_kb), why,
        )  # fmt: skip


def settings(given: Mapping[str, Any]) -> types.SimpleNamespace:
    """The packaging options of a Cluster, checked and with their defaults, as attributes
    named without the ``packaging_`` prefix (``mode`` for ``packaging`` itself).

    >>> settings({"packaging": "container", "packaging_tls_verify": "false"}).tls_verify
    False
    """
    values = resolve(PackagingOptions, given, check=True)
    out = {"mode": values.pop("packaging")}
    out.update((k.removeprefix("packaging_"), v) for k, v in values.items())
    out["build_args"], out["run_args"] = tuple(out["build_args"]), tuple(out["run_args"])
    return types.SimpleNamespace(**out)


# an entry of WORKDIR/code named in a launch (a runtime, by-value packages, project code,
# an environment)
_CODE_ENTRY = re.compile(r"/code/((?:venv-|wheels-|deps-|proj-)?[0-9a-f]{16})(?![\w.-])")

# each mode's module, by the mode's declared name ("by-value": byvalue.py); "auto" is not
# a mode of its own (Packager.mode_of resolves it)
_MODULES = {m: f"{__name__}.{m.replace('-', '')}" for m in PACKAGING_MODES if m != "auto"}


class Packager:
    """The packaging side of one Slurm backend session (see the module docstring): a
    :class:`Builder` that hands each array job to the builder of its mode.

    ``local``: Slurm on this host (``auto`` means ``inherit``; the client's own lazyslurm
    is reachable on the shared file system).
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        local: bool,
        python: str,
        setup: Sequence[str] = (),
        live_runs: str = "",
    ) -> None:
        self.options = settings(options)  # the cluster's mode is checked here, once
        self.target = Target(self.options, local=local, python=python, setup=setup)
        self.builders: dict[str, Builder] = {}  # by mode, made when first needed
        self.live_runs = live_runs  # shell printing the runs still queued or running

    def mode_of(self, resources: Resources | None) -> str:
        """The effective mode of a task (its own ``packaging=``, else the cluster's)."""
        mode = (resources.packaging if resources is not None else None) or self.options.mode
        if mode == "auto":
            return "inherit" if self.target.local else "by-value"
        return mode

    def builder(self, mode: str) -> Builder:
        """The session's builder of ``mode`` (a mode of ``PackagingMode``, not ``auto``;
        task and cluster options were checked against it when given)."""
        if mode not in self.builders:
            module = _MODULES.get(mode)
            if module is None:
                modes = ", ".join(_MODULES)
                msg = f"unknown packaging mode {mode!r}: use auto, {modes}"
                raise ClusterConfigError(msg)
            self.builders[mode] = importlib.import_module(module).BUILDER(self.target)
        return self.builders[mode]

    # -- the probe (in the backend's one probe round trip): the cluster's own mode
    def probe_line(self, workdir: str | None) -> str:
        mine = self.builder(self.mode_of(None)).probe_line(workdir)
        return "\n".join(filter(None, [mine, self.target.code.probe_line(workdir)]))

    def read_probe(self, stdout: str) -> None:
        self.target.code.read_probe(stdout)
        self.builder(self.mode_of(None)).read_probe(stdout)

    # -- pickling
    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        """Modules to register with cloudpickle by value while pickling ``func``."""
        return self.builder(self.mode_of(resources)).by_value_modules(resources, func)

    # -- one run
    def prepare(
        self,
        shell: Shell,
        workdir: str,
        array_jobs: Sequence[ArrayJob],
        files: Mapping[str, bytes],
        run_dir: str = "",
    ) -> Prepared:
        """Check and build what the run's array jobs need (nothing is submitted yet): each
        mode's builder prepares its array jobs; the code directories they use are staged
        once, and every entry of ``WORKDIR/code`` they use is named in ``uses`` (also
        those the setup lines name: a workflow's inner runs inherit them)."""
        by_mode: dict[str, list[ArrayJob]] = {}
        for aj in array_jobs:
            by_mode.setdefault(self.mode_of(aj.resources), []).append(aj)
        code = self.target.code
        code.begin()
        parts = [
            self.builder(mode).prepare(shell, workdir, jobs, files, run_dir)
            for mode, jobs in by_mode.items()
        ]
        merged = Prepared.merge(parts)
        named = {
            m.group(1)
            for launch in merged.launches.values()
            for text in (launch.python, launch.runner or "", *launch.setup, *launch.launcher)
            for m in _CODE_ENTRY.finditer(text)
        }
        merged = attrs.evolve(merged, uses=tuple(dict.fromkeys([*merged.uses, *sorted(named)])))
        cap_kb = int(float(self.options.code_cache_gb or 0) * 1024 * 1024)
        return code.stage(workdir, merged, cap_kb=cap_kb, live=self.live_runs)

    def forget(self, names: Sequence[str]) -> None:
        """Entries of ``WORKDIR/code`` found gone at submission: staged again next time."""
        self.target.code.forget(names)
