"""The one protocol every packaging mode implements, and what a mode hands back.

A mode is one :class:`Builder` class, ``BUILDER`` of the module
``lazyslurm/backends/packaging/<mode>.py`` (``by-value``: ``byvalue.py``), constructed
with the session's :class:`~lazyslurm.backends.packaging.target.Target`. The
:class:`~lazyslurm.backends.packaging.Packager` picks the builder of each array job's
mode and merges what they return (:meth:`Prepared.merge`).

This module imports nothing of its package: the builders import it, never their parent.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from lazyslurm.store import INSIDE

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.planner import ArrayJob

__all__ = ["Builder", "Launch", "Prepared", "environment_note", "pickles"]


@attrs.frozen
class Launch:
    """How one array job starts its runner: ``setup`` lines, then
    ``exec LAUNCHER... PYTHON -m lazyslurm.runner RUN_DIR ARRAY_JOB``."""

    python: str
    setup: tuple[str, ...] = ()
    launcher: tuple[str, ...] = ()
    runner: str | None = None  # lazyslurm/runner/__main__.py there, started by path, if known


@attrs.frozen
class Prepared:
    """What one run needs staged and run before its submission.

    A builder names the code directories its launches use in ``code`` (``NAME`` ->
    files, for ``WORKDIR/code/NAME``; only those the probe did not see there);
    :meth:`~lazyslurm.backends.packaging.target.CodeDir.stage` turns them into ``files``,
    ``before`` and ``on_success``, once per run however many modes ask for one, so what
    :meth:`~lazyslurm.backends.packaging.Packager.prepare` returns has ``code`` empty.
    ``uses`` names every entry of ``WORKDIR/code`` the run's jobs use (staged or reused:
    the backend records them in the run directory, ``RunLayout.code_uses``, so that
    ``lazyslurm clean --code`` and the ``code_cache_gb`` cap never remove what a queued
    or running run needs); ``after`` is shell run once the submission went through, in
    the same round trip (the ``code_cache_gb`` cap).
    """

    files: Mapping[str, bytes] = attrs.field(factory=dict)  # relative to the workdir
    before: str = ""  # shell run (same round trip) before the submission script
    launches: Mapping[str, Launch] = attrs.field(factory=dict)  # array job id -> Launch
    on_success: tuple[Callable[[], None], ...] = ()  # once the submission went through
    code: Mapping[str, Mapping[str, bytes]] = attrs.field(factory=dict)  # to stage, by name
    uses: tuple[str, ...] = ()  # names in WORKDIR/code the jobs use
    after: str = ""  # shell run (same round trip) after a submission that went through

    @classmethod
    def of(
        cls,
        array_jobs: Iterable[ArrayJob],
        launch: Launch,
        code: Mapping[str, Mapping[str, bytes]] | None = None,
    ) -> Prepared:
        """Every array job of ``array_jobs`` started by ``launch``, using ``code``."""
        return cls(launches={aj.id: launch for aj in array_jobs}, code=dict(code or {}))

    @classmethod
    def merge(cls, parts: Iterable[Prepared]) -> Prepared:
        """One Prepared of several (one per mode of a run); a code directory several
        modes use is staged once.

        >>> a = Prepared(before="a\\n", launches={"aj0": Launch("p")}, code={"h": {"f": b""}})
        >>> b = Prepared(before="b\\n", launches={"aj1": Launch("q")}, code={"h": {"f": b""}})
        >>> m = Prepared.merge([a, b])
        >>> m.before, sorted(m.launches), list(m.code)
        ('a\\nb\\n', ['aj0', 'aj1'], ['h'])
        """
        files: dict[str, bytes] = {}
        before: list[str] = []
        launches: dict[str, Launch] = {}
        done: list[Callable[[], None]] = []
        code: dict[str, Mapping[str, bytes]] = {}
        uses: dict[str, None] = {}
        after: list[str] = []
        for p in parts:
            files.update(p.files)
            before.append(p.before)
            launches.update(p.launches)
            done.extend(p.on_success)
            code.update(p.code)
            uses.update(dict.fromkeys(p.uses))
            after.append(p.after)
        return cls(files, "".join(before), launches, tuple(done), code, tuple(uses), "".join(after))


class Builder(Protocol):
    """One packaging mode for one backend session (constructed as ``Cls(target)``).

    The backend asks, through the Packager: a shell snippet for its one probe round trip
    (``probe_line``; its output read back by ``read_probe``), the modules cloudpickle
    pickles by value with a task's function (``by_value_modules``), and per run what to
    stage and how each array job starts (``prepare``, nothing submitted yet).
    """

    def probe_line(self, workdir: str | None) -> str:
        """This mode's part of the backend's one probe (may be empty)."""
        ...

    def read_probe(self, stdout: str) -> None:
        """Read this mode's part of the probe's output back (may refuse the cluster)."""
        ...

    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        """Modules to register with cloudpickle by value while pickling ``func``."""
        ...

    def prepare(
        self,
        shell: Shell,
        workdir: str,
        array_jobs: Sequence[ArrayJob],
        files: Mapping[str, bytes],
        run_dir: str = "",
    ) -> Prepared:
        """Check and build what ``array_jobs`` (all of this mode) need: a launch for
        each, and the code directories they use. ``run_dir`` is the run's directory on
        the cluster (where a job says what it is doing before the task starts, e.g.
        ``RunLayout.environment`` while it creates an environment)."""
        ...


def pickles(array_jobs: Iterable[ArrayJob], files: Mapping[str, bytes]) -> list[bytes]:
    """The spec files (pickles) of ``array_jobs`` among a run's ``files``."""
    return [files.get(INSIDE.spec(aj.id), b"") for aj in array_jobs]


def environment_note(text: str, now: float) -> str:
    """What the run's ``environment`` file (``RunLayout.environment``, written by the job
    that creates the run's environment) says, in words; ``now`` on the same clock.

    >>> environment_note("creating 100 7", 112)
    'creating the environment (once): 7 wheels, 12 s'
    >>> environment_note("created 100 131 7", 200)
    'created the environment (once): 7 wheels in 31 s'
    >>> environment_note("failed 100 103 7", 200)
    "creating the environment failed after 3 s (7 wheels): see the elements' logs"
    """
    words = text.split()
    if len(words) < 3 or not all(w.isdigit() for w in words[1:]):
        return ""
    what, start = words[0], int(words[1])
    wheels = f"{words[-1]} wheel{'s' if words[-1] != '1' else ''}"
    if what == "creating":
        return f"creating the environment (once): {wheels}, {max(0, int(now) - start)} s"
    if len(words) < 4:
        return ""
    took = max(0, int(words[2]) - start)
    if what == "created":
        return f"created the environment (once): {wheels} in {took} s"
    if what == "failed":
        return f"creating the environment failed after {took} s ({wheels}): see the elements' logs"
    return ""
