"""The store across runs: list runs, find cached results, clear old runs.

Each query is one shell command over the backend's :class:`~lazyslurm.backends.shell.Shell`
(a subprocess for local and ``slurm`` clusters, one SSH exec for ``ssh``): the same code
serves every backend.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shlex
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from lazyslurm.errors import BackendError, ClusterConfigError
from lazyslurm.store import INSIDE, RunLayout

if TYPE_CHECKING:
    from lazyslurm.backends.shell import Shell
    from lazyslurm.cluster import Cluster

__all__ = ["RunSummary", "clear", "list_runs", "lookup", "parse_age"]


@attrs.frozen
class RunSummary:
    """One run in a store, as ``lazyslurm.runs()`` lists it."""

    id: str
    created: float
    state: str  # DONE, FAILED or INCOMPLETE (from the store's result and error files)
    tasks: int
    done: int
    failed: int
    label: str = ""
    backend: str = ""

    @property
    def started(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.created)

    def __str__(self) -> str:
        when = self.started.strftime("%Y-%m-%d %H:%M:%S")
        label = f"  {self.label}" if self.label else ""
        return f"{self.id}  {when}  {self.state:<10} {self.done}/{self.tasks} done{label}"


def list_runs(shell: Shell, workdir: str) -> list[RunSummary]:
    """Every run under ``workdir/runs``, newest first, in one command."""
    q = shlex.quote
    grep = q(RunLayout.OUTCOME_GREP)
    script = (
        f"cd {q(RunLayout.runs_dir(workdir))} 2>/dev/null || exit 0\n"
        f'for d in */; do d=${{d%/}}; [ -f "$d/{INSIDE.summary}" ] || continue\n'
        f'  r=$(ls -f "$d/{INSIDE.results_dir}" 2>/dev/null | grep -c {grep})\n'
        f'  e=$(ls -f "$d/{INSIDE.errors_dir}" 2>/dev/null | grep -c {grep})\n'
        f'  printf "LZRUN %s %s " "$r" "$e"; tr -d "\\n" < "$d/{INSIDE.summary}"; echo\n'
        "done\n"
    )
    res = shell.run(script)
    if res.returncode != 0:
        msg = f"cannot list runs in {workdir}: {res.stderr.strip()}"
        raise BackendError(msg)
    out = []
    for line in res.stdout.splitlines():
        if not line.startswith("LZRUN "):
            continue
        _, r, e, data = line.split(" ", 3)
        try:
            info = json.loads(data)
        except ValueError:
            continue
        done, failed, tasks = int(r), int(e), int(info.get("tasks", 0))
        state = "FAILED" if failed else "DONE" if done >= tasks else "INCOMPLETE"
        out.append(
            RunSummary(
                id=info["run_id"],
                created=float(info.get("created", 0)),
                state=state,
                tasks=tasks,
                done=done,
                failed=failed,
                label=info.get("label", ""),
                backend=info.get("backend", ""),
            )
        )
    return sorted(out, key=lambda r: r.created, reverse=True)


def lookup(cluster: Cluster, keys: Iterable[str]) -> dict[str, str]:
    """Which of ``keys`` already have a result in the cluster's store: key -> run id."""
    wanted = set(keys)
    if not wanted:
        return {}
    backend = cluster.backend
    res = backend.shell.run(
        f"cd {shlex.quote(RunLayout.runs_dir(backend.workdir))} 2>/dev/null || exit 0\n"
        f"find . -mindepth 3 -maxdepth 3 -path {shlex.quote(RunLayout.RESULTS_FIND)} -print"
    )
    found: dict[str, str] = {}
    for line in res.stdout.splitlines():
        m = RunLayout.RESULT_PATH.match(line.strip())
        if m and m.group(2) in wanted:
            found.setdefault(m.group(2), m.group(1))
    return found


def parse_age(value: Any) -> float:
    """Seconds from ``timedelta``, a number of seconds, or ``"7d"``, ``"12h"``, ``"30m"``.

    >>> parse_age("7d"), parse_age("90s"), parse_age(_dt.timedelta(hours=1))
    (604800.0, 90.0, 3600.0)
    """
    if isinstance(value, _dt.timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
        if m:
            unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
            return float(m.group(1)) * unit
    msg = f"invalid age {value!r}: use a timedelta, seconds, or '30m', '12h', '7d', '2w'"
    raise ClusterConfigError(msg)


def clear(cluster: Cluster | None = None, older_than: Any = 0) -> list[str]:
    """Delete runs (and so their cached results) older than ``older_than``; returns their ids.

    Age is taken from the run directory's modification time.
    """
    from lazyslurm.cluster import resolve_cluster

    cl = resolve_cluster(cluster)
    cutoff = time.time() - parse_age(older_than)
    backend = cl.backend
    res = backend.shell.run(
        f"cd {shlex.quote(RunLayout.runs_dir(backend.workdir))} 2>/dev/null || exit 0\n"
        f"find . -mindepth 1 -maxdepth 1 -type d ! -newermt @{cutoff:.3f} -print | "
        'while read -r d; do rm -rf -- "$d" && echo "${d#./}"; done'
    )
    removed = [line for line in res.stdout.splitlines() if line]
    for key, run in list(cl.computed.items()):
        if run in removed:
            del cl.computed[key]
            cl.values.pop(key, None)
    return removed
