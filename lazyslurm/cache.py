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

from lazyslurm.backends.base import RunHandle
from lazyslurm.backends.shell.base import untrusted_facts
from lazyslurm.errors import BackendError, ClusterConfigError, UntrustedStoreError
from lazyslurm.graph.core import Job
from lazyslurm.graph.traverse import collect
from lazyslurm.planning.encode import read_manifest
from lazyslurm.planning.planner import Plan, make_plan
from lazyslurm.store import INSIDE, RunLayout, pack_keys, untrusted_fix

if TYPE_CHECKING:
    from lazyslurm.backends.shell import Shell
    from lazyslurm.cluster import Cluster

__all__ = [
    "RunSummary",
    "clear",
    "list_runs",
    "lookup",
    "parse_age",
    "plan_with_store",
    "read_run",
]


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


def _guarded(workdir: str, body: str) -> str:
    """A script that runs ``body`` in ``WORKDIR/runs`` only if that directory is private to
    this user (else prints ``LZ-UNTRUSTED``), after printing ``LZ-BAD RUN`` for each entry
    there that is a symlink, not ours, or writable by others (callers skip those)."""
    runs = shlex.quote(RunLayout.runs_dir(workdir))
    return (
        f"runs={runs}\n"
        '[ -e "$runs" ] || [ -L "$runs" ] || exit 0\n'
        "me=$(id -u)\n"
        "case $runs in /*) ;; *) runs=$PWD/$runs ;; esac\n"  # named absolute if refused
        'bad=$(find "$runs" -maxdepth 0 \\( -type l -o ! -user "$me" -o -perm /022 \\) '
        "-printf '%y %U %m')\n"
        'if [ -n "$bad" ]; then\n'
        '  echo "LZ-UNTRUSTED $me $bad $runs"; exit 0\nfi\n'
        'cd -- "$runs" || exit 0\n'
        'find . -mindepth 1 -maxdepth 1 \\( -type l -o ! -user "$me" -o -perm /022 \\) '
        "-printf 'LZ-BAD %f\\n'\n" + body
    )


def _run_guarded(shell: Shell, workdir: str, body: str, what: str) -> tuple[set[str], list[str]]:
    """Run :func:`_guarded`; return the run ids to skip and the other output lines."""
    res = shell.run(_guarded(workdir, body))
    if res.returncode != 0:
        msg = f"cannot {what} in {workdir}: {res.stderr.strip()}"
        raise BackendError(msg)
    bad: set[str] = set()
    lines = []
    for line in res.stdout.splitlines():
        if line.startswith("LZ-UNTRUSTED "):
            me, kind, uid, mode, path = line[13:].split(" ", 4)
            why = untrusted_facts(f"{me} {kind} {uid} {mode}")
            msg = (
                f"the directory of runs {path} {why}: another user could plant results "
                f"there. Fix: {untrusted_fix(path, why)}"
            )
            raise UntrustedStoreError(msg, path=path)
        if line.startswith("LZ-BAD "):
            bad.add(line[7:])
        else:
            lines.append(line)
    return bad, lines


def list_runs(shell: Shell, workdir: str) -> list[RunSummary]:
    """Every run under ``workdir/runs``, newest first, in one command."""
    grep = shlex.quote(RunLayout.OUTCOME_GREP)
    res_grep = shlex.quote("[.]pkl$")  # results alone (pack files are counted below)
    body = (
        f'for d in */; do d=${{d%/}}; [ -f "$d/{INSIDE.summary}" ] || continue\n'
        f'  r=$(ls -f "$d/{INSIDE.results_dir}" 2>/dev/null | grep -c {res_grep})\n'
        # a pack file's first line is "LZPACK1 COUNT": its results count one each
        f'  p=$(head -qn1 "$d/{INSIDE.results_dir}"/*{RunLayout.PACK_SUFFIX} 2>/dev/null'
        " | awk '$1 == \"LZPACK1\" {s += $2} END {print s + 0}'); r=$((r + p))\n"
        f'  e=$(ls -f "$d/{INSIDE.errors_dir}" 2>/dev/null | grep -c {grep})\n'
        f'  printf "LZRUN %s %s %s " "$d" "$r" "$e"; tr -d "\\n" < "$d/{INSIDE.summary}"; echo\n'
        "done\n"
    )
    bad, lines = _run_guarded(shell, workdir, body, "list runs")
    out = []
    for line in lines:
        if not line.startswith("LZRUN "):
            continue
        _, d, r, e, data = line.split(" ", 4)
        if d in bad:
            continue
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
    """Which of ``keys`` already have a result in the cluster's store: key -> its
    location (the run id, or ``RUN:AJ_J`` for a result in a pack file).

    Only runs private to this user count (a result planted in a shared work directory is
    never found), and each result is verified again when it is read. Pack files are
    read (one transfer) only while keys are still missing.
    """
    wanted = set(keys)
    if not wanted:
        return {}
    backend = cluster.backend
    body = (
        f"find . -mindepth 3 -maxdepth 3 -path {shlex.quote(RunLayout.RESULTS_FIND)} "
        '-type f -user "$me" -print\n'
    )
    bad, lines = _run_guarded(backend.shell, str(backend.workdir), body, "look up results")
    result_path = re.compile(RunLayout.RESULT_PATH)
    pack_paths = [re.compile(RunLayout.PACK_PATH), re.compile(RunLayout.PARTIAL_PATH)]
    found: dict[str, str] = {}
    packs: list[tuple[str, str]] = []
    partial: list[tuple[str, str]] = []  # of packs killed partway: read after whole ones
    for line in lines:
        m = result_path.match(line.strip())
        if m and m.group(2) in wanted and m.group(1) not in bad:
            found.setdefault(m.group(2), m.group(1))
            continue
        for pattern, into in zip(pack_paths, (packs, partial), strict=True):
            m = pattern.match(line.strip())
            if m and m.group(1) not in bad:
                into.append((m.group(1), m.group(2)))
    if (packs or partial) and len(found) < len(wanted):
        found.update(_lookup_packs(backend, packs + partial, wanted - set(found)))
    return found


def _lookup_packs(backend: Any, packs: list[tuple[str, str]], wanted: set[str]) -> dict[str, str]:
    """Keys of ``wanted`` held by pack files ``(run, AJ_J)`` (or partial ones, ``(run,
    AJ_J.partial)``: the first file that holds a key wins), read in one transfer (the
    records are verified again when a result is read)."""
    rel = {RunLayout.of(run).result("", run=f"{run}:{name}"): (run, name) for run, name in packs}
    files = backend.read_files(sorted(rel))
    found: dict[str, str] = {}
    for path, data in files.items():
        run, name = rel[path]
        try:
            keys = pack_keys(data, path)
        except Exception:  # a damaged pack: its results are not found, so run again
            continue
        for key in keys:
            if key in wanted:
                found.setdefault(key, f"{run}:{name}")
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


def clear(
    cluster: Cluster | None = None, older_than: Any = 0, *, dry_run: bool = False
) -> list[str]:
    """Delete runs (and so their cached results) older than ``older_than``; returns their ids.

    Only directories that are runs are touched: named like a run id, holding a run
    manifest, owned by this user and not symlinks; a directory of runs that is a symlink
    or not private is refused. Age is taken from the run directory's modification time.
    ``dry_run`` deletes nothing and returns what would be deleted.
    """
    from lazyslurm.cluster import resolve_cluster

    cl = resolve_cluster(cluster)
    cutoff = time.time() - parse_age(older_than)
    backend = cl.backend
    act = 'echo "$d"' if dry_run else 'rm -rf -- "./$d" && echo "$d"'
    name = shlex.quote(RunLayout.RUN_ID_GLOB)
    body = (
        f'find . -mindepth 1 -maxdepth 1 -type d -user "$me" -name {name} '
        f"! -newermt @{cutoff:.3f} -printf '%f\\n' | while read -r d; do\n"
        f'  if [ -f "$d/{INSIDE.manifest}" ] && ! [ -L "$d/{INSIDE.manifest}" ]; then {act}; fi\n'
        "done\n"
    )
    bad, lines = _run_guarded(backend.shell, str(backend.workdir), body, "clean runs")
    removed = [line for line in lines if line and line not in bad]
    if not dry_run:
        cl.session.forget_runs(removed)
    return removed


def plan_with_store(
    cl: Cluster, roots: list[Job], cache: bool | None
) -> tuple[Plan, dict[str, str]]:
    """The plan of ``roots`` given the session's memory and, with caching (``cache``, else
    the cluster's setting), the results already in the store: ``(plan, found)``."""
    done: dict[str, str | None] = dict(cl.session.computed())
    found: dict[str, str] = {}
    if cache if cache is not None else cl.cache:
        found = lookup(cl, [j.key for j in collect(roots, done) if j.task.pure])
        done.update(found)
    limits = cl.pack_limits()
    p = make_plan(
        roots,
        done=done,
        max_array_size=cl.max_array_size(),
        max_jobs=limits.max_jobs if limits is not None else None,
        packing=limits is not None,
        time_cap=limits.time_cap if limits is not None else None,
    )
    return attrs.evolve(p, cached=frozenset(found)), found


def read_run(cl: Cluster, run_id: str) -> tuple[dict[str, Any], RunHandle, bytes | None]:
    """A run as its directory records it, in one transfer: the manifest's fields, a
    handle (its ArrayJob records and Slurm job ids), and the outputs file if any.
    ``KeyError`` when there is no such run."""
    layout = RunLayout.of(run_id)
    names = [layout.manifest, layout.outputs, layout.jobids]
    files = cl.backend.read_files(names)
    if names[0] not in files:
        msg = f"no run {run_id!r} in {cl.backend_name} work directory {cl.backend.workdir}"
        raise KeyError(msg)
    manifest, array_jobs = read_manifest(files[names[0]])
    job_ids = dict(
        pair.split("=", 1) for pair in files.get(names[2], b"").decode().split() if "=" in pair
    )
    handle = RunHandle(run_id=run_id, array_jobs=array_jobs, job_ids=job_ids)
    return manifest, handle, files.get(names[1])
