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
from lazyslurm.graph.resources import Learned
from lazyslurm.graph.traverse import collect
from lazyslurm.planning.encode import read_manifest
from lazyslurm.planning.learn import Sample, learn
from lazyslurm.planning.planner import Plan, make_plan
from lazyslurm.store import (
    INSIDE,
    PACK_MAGIC,
    USAGE_HEAD_BYTES,
    USAGE_MARK,
    RunLayout,
    pack_keys,
    parse_job_ids,
    parse_usage,
    untrusted_fix,
)

if TYPE_CHECKING:
    from lazyslurm.backends.packaging.disk import DiskReport, GcResult
    from lazyslurm.backends.shell import Shell
    from lazyslurm.cluster import Cluster

__all__ = [
    "Cleared",
    "RunSummary",
    "UsageLine",
    "clear",
    "clear_code",
    "disk_usage",
    "history",
    "list_runs",
    "lookup",
    "parse_age",
    "plan_with_store",
    "read_run",
    "usage_lines",
]


@attrs.frozen
class RunSummary:
    """One run in a store, as ``lazyslurm.runs()`` lists it."""

    id: str
    created: float
    # DONE, FAILED or INCOMPLETE (from the store's result and error files), or CORRUPT:
    # its summary.json or manifest.json is missing, truncated or damaged (``problem``)
    state: str
    tasks: int
    done: int
    failed: int
    label: str = ""
    backend: str = ""
    problem: str = ""  # what is wrong with a CORRUPT run

    @property
    def started(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.created)

    def __str__(self) -> str:
        when = self.started.strftime("%Y-%m-%d %H:%M:%S")
        label = f"  {self.label}" if self.label else ""
        problem = f"  ({self.problem})" if self.problem else ""
        return f"{self.id}  {when}  {self.state:<10} {self.done}/{self.tasks} done{label}{problem}"


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


def _list_script() -> str:
    r"""The body of :func:`list_runs` (run in ``WORKDIR/runs``): a fixed number of
    processes whatever the number of runs. Prints, tab-separated::

        LZRUN  RUN  DIR_MTIME  RESULTS  ERRORS  HAS_SUMMARY  MANIFEST_SIZE (-1: none)
        LZPACK RUN  ELEMENTS   (the results held by the run's pack files)
        LZMOK  RUN             (its manifest ends as a whole one does)
        LZSUM  RUN  FIRST_LINE_OF_ITS_SUMMARY
    """
    q = shlex.quote
    summary, manifest = INSIDE.summary, INSIDE.manifest
    results, errors = INSIDE.results_dir, INSIDE.errors_dir
    magic = PACK_MAGIC.decode().strip()
    # one walk of the store: run directories, their two description files and outcomes,
    # counted by awk on the host that has them (only one line per run travels)
    # a sub-directory of a run other than these is not walked (logs/, specs/, ...)
    depth2 = "-type d -path './*/*' ! -path './*/*/*'"
    walk = (
        f"find . -mindepth 1 -maxdepth 3 \\( {depth2} ! -name {results} ! -name {errors} "
        "-prune \\) -o \\( -type d ! -path './*/*' "
        "-printf 'D\\t%T@\\t%P\\n' \\) -o \\( -type f \\( "
        f"-path {q(f'./*/{manifest}')} -printf 'M\\t%d\\t%P\\t%s\\n' -o \\( "
        f"-path {q(f'./*/{summary}')} -o -path {q(f'./*/{results}/*')} "
        f"-o -path {q(f'./*/{errors}/*')} \\) -printf 'F\\t%d\\t%P\\n' \\) \\) "
        "2>/dev/null | awk -F '\\t' '\n"  # (only manifests and run directories are stat'ed)
        '$1 == "D" { t[$3] = $2; next }\n'
        "$2 != 2 && $2 != 3 { next }\n"
        '{ n = split($3, p, "/"); r = p[1] }\n'
        f'$1 == "M" && n == 2 {{ m[r] = $4; next }}\n'
        f'n == 2 && p[2] == "{summary}" {{ s[r] = 1; next }}\n'
        f'n == 3 && p[2] == "{results}" && p[3] ~ /[.]pkl$/ {{ d[r]++; next }}\n'
        f'n == 3 && p[2] == "{errors}" && p[3] ~ /[.]p(kl|ack)$/ {{ e[r]++ }}\n'
        'END { for (r in t) if ((r in s) || (r in m)) printf "LZRUN\\t%s\\t%s\\t%d\\t%d\\t%d'
        '\\t%s\\n", r, t[r], d[r], e[r], (r in s), (r in m) ? m[r] : -1 }'
        "'\n"
    )
    # one more walk reads the first line of every pack file ("LZPACK1 COUNT"), the last
    # byte of every manifest (a whole one, json.dumps of a dict, ends with "}": a cut one
    # rarely does) and the first line of every summary, each after a `==> PATH <==`
    # header; awk keeps one line per run of it
    packs = q(f"./*/{results}/*{RunLayout.PACK_SUFFIX}")
    top = "! -path './*/*/*'"  # a file of the run directory itself
    read = (
        f"find . -mindepth 2 -maxdepth 3 \\( {depth2} ! -name {results} -prune \\) -o -type f \\( "
        f"-path {packs} -exec sh -c 'head -vn1 -- \"$@\"; echo' sh {{}} + -o "
        f"-path {q(f'./*/{manifest}')} {top} -exec sh -c 'tail -vc1 -- \"$@\"; echo' sh {{}} + -o "
        f"-path {q(f'./*/{summary}')} {top} "
        '-exec awk \'FNR == 1 { print "==> " FILENAME " <=="; print }\' {} + '
        "\\) 2>/dev/null | awk '\n"
        '/^==> .* <==$/ { split(substr($0, 5, length($0) - 8), p, "/"); '
        "r = p[2]; w = p[3]; next }\n"
        f'w == "{results}" {{ if ($1 == "{magic}" && $2 ~ /^[0-9]+$/) c[r] += $2; w = ""; next }}\n'
        f'w == "{manifest}" {{ if ($0 == "}}") printf "LZMOK\\t%s\\n", r; w = ""; next }}\n'
        f'w == "{summary}" {{ printf "LZSUM\\t%s\\t%s\\n", r, $0; w = ""; next }}\n'
        'END { for (r in c) printf "LZPACK\\t%s\\t%d\\n", r, c[r] }'
        "'\n"
    )
    return walk + read


def list_runs(shell: Shell, workdir: str) -> list[RunSummary]:
    """Every run under ``workdir/runs``, newest first, in one command (one round trip
    over SSH, and a fixed number of processes however many runs there are).

    A run is a directory holding ``summary.json`` or ``manifest.json``; one whose
    summary or manifest is missing, empty, truncated or not JSON is listed as CORRUPT
    (``problem`` says which) rather than left out.
    """
    bad, lines = _run_guarded(shell, workdir, _list_script(), "list runs")
    found: dict[str, tuple[str, ...]] = {}
    packed: dict[str, int] = {}
    whole: set[str] = set()
    summaries: dict[str, str] = {}
    for line in lines:
        kind, _, rest = line.partition("\t")
        fields = rest.split("\t")
        if kind == "LZRUN" and len(fields) == 6:
            found[fields[0]] = tuple(fields[1:])
        elif kind == "LZPACK" and len(fields) == 2 and fields[1].isdigit():
            packed[fields[0]] = int(fields[1])
        elif kind == "LZMOK":
            whole.add(rest)
        elif kind == "LZSUM" and len(fields) >= 2:
            summaries[fields[0]] = "\t".join(fields[1:])
    out = []
    for run_id, (mtime, results, errors, has_summary, manifest_size) in found.items():
        if run_id in bad:
            continue
        info, problems = _summary_of(summaries.get(run_id), has_summary == "1")
        if manifest_size == "-1":
            problems.append(f"{INSIDE.manifest} is missing")
        elif manifest_size == "0":
            problems.append(f"{INSIDE.manifest} is empty")
        elif run_id not in whole:
            problems.append(f"{INSIDE.manifest} is truncated")
        done, failed = int(results) + packed.get(run_id, 0), int(errors)
        tasks = _int(info.get("tasks"))
        if problems:
            state = "CORRUPT"
        else:
            state = "FAILED" if failed else "DONE" if done >= tasks else "INCOMPLETE"
        created = info.get("created")
        out.append(
            RunSummary(
                id=run_id,
                created=float(created) if isinstance(created, (int, float)) else float(mtime),
                state=state,
                tasks=tasks,
                done=done,
                failed=failed,
                label=str(info.get("label") or ""),
                backend=str(info.get("backend") or ""),
                problem="; ".join(problems),
            )
        )
    return sorted(out, key=lambda r: (r.created, r.id), reverse=True)


def _summary_of(text: str | None, exists: bool) -> tuple[dict[str, Any], list[str]]:
    """A run's summary fields, and what is wrong with its ``summary.json``."""
    name = INSIDE.summary
    if not exists:
        return {}, [f"{name} is missing"]
    if not text or not text.strip():
        return {}, [f"{name} is empty"]
    try:
        info = json.loads(text)
    except ValueError:
        return {}, [f"{name} is truncated or not JSON"]
    if not isinstance(info, dict):
        return {}, [f"{name} is not a JSON object"]
    return info, []


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


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


class Cleared(list[str]):
    """What :func:`clear` did: the ids of the runs it removed (this list), and in
    ``kept`` the runs old enough that it spared because they may still run (run id ->
    why). ``unchecked`` is why Slurm could not be asked (``squeue`` failed), else ""."""

    def __init__(self, removed: Iterable[str], kept: dict[str, str], unchecked: str) -> None:
        super().__init__(removed)
        self.kept = kept
        self.unchecked = unchecked


def _clean_script(cutoff: float, *, force: bool, dry_run: bool, live: str) -> str:
    """The body of :func:`clear` (run in ``WORKDIR/runs``): one command that finds the
    runs with no activity since ``cutoff``, asks the scheduler once which still have jobs
    (``live``: the backend's script printing those run ids), and removes the others.
    Prints ``LZ-REMOVED RUN``, ``LZ-KEPT RUN WHY DETAIL`` and ``LZ-LIVE-FAILED MESSAGE``
    lines (tab-separated)."""
    q = shlex.quote
    glob = q(RunLayout.RUN_ID_GLOB)
    manifest, pid = q(INSIDE.manifest), q(INSIDE.client_pid)
    # submitted to a scheduler (its jobs may outlive every client)
    slurm_run = f'[ -e "$d"/{q(INSIDE.submit_script)} ] || [ -e "$d"/{q(INSIDE.jobids)} ]'
    act = "" if dry_run else 'rm -rf -- "./$d" && '
    return (
        f"cutoff=@{cutoff:.3f}\nforce={int(force)}\nhost=$(uname -n)\n"
        "declare -A young live\n"
        # ours, named like a run, not writable by others, holding a manifest
        f'mapfile -t runs < <(find . -mindepth 1 -maxdepth 1 -type d -user "$me" '
        f"! -perm /022 -name {glob} -printf '%f\\n')\n"
        # the newest activity: a run with anything in it modified after the cutoff is
        # young (only run directories are walked)
        f"while IFS= read -r r; do young[$r]=1; done < <(find . -mindepth 1 ! -path './*/*' "
        f"! -name {glob} -prune -o -newermt \"$cutoff\" -printf '%P\\n' 2>/dev/null "
        "| awk -F/ '!s[$1]++ { print $1 }')\n"
        "old=()\nslurm=0\n"
        'for d in "${runs[@]}"; do\n'
        '  [ -z "${young[$d]}" ] || continue\n'
        f'  [ -f "$d"/{manifest} ] && ! [ -L "$d"/{manifest} ] || continue\n'
        '  old+=("$d")\n'
        f"  if {slurm_run}; then slurm=1; fi\n"
        "done\n"
        # one question to the scheduler for every such run: which still have jobs
        'sq=""\n'
        'if [ "$slurm" = 1 ] && [ "$force" = 0 ]; then\n'
        f"  if out=$( {{ {live}\n}} 2>&1); then\n"
        '    while IFS= read -r r; do live[$r]=1; done <<< "$out"\n'
        "  else\n"
        "    sq=failed\n"
        "    printf 'LZ-LIVE-FAILED\\t%s\\n' \"$(printf '%s' \"$out\" | tr '\\n\\t' '  ' "
        '| cut -c1-300)"\n'
        "  fi\n"
        "fi\n"
        'for d in "${old[@]}"; do\n'
        '  if [ "$force" = 0 ]; then\n'
        # a local run: its client (host and pid) still runs it
        f'    if [ -f "$d"/{pid} ]; then\n'
        f'      h=""; p=""; read -r h p _ < "$d"/{pid}\n'
        '      if [ -n "$h" ] && [ "$h" != "$host" ]; then\n'
        '        printf \'LZ-KEPT\\t%s\\telsewhere\\t%s %s\\n\' "$d" "$h" "$p"; continue\n'
        "      fi\n"
        '      case "$p" in ""|*[!0-9]*) ;; *) if kill -0 "$p" 2>/dev/null; then\n'
        '        printf \'LZ-KEPT\\t%s\\tclient\\t%s\\n\' "$d" "$p"; continue; fi;; esac\n'
        "    fi\n"
        f"    if {slurm_run}; then\n"
        '      if [ -n "$sq" ]; then printf \'LZ-KEPT\\t%s\\tunchecked\\t\\n\' "$d"; continue; fi\n'
        '      if [ -n "${live[$d]}" ]; then printf \'LZ-KEPT\\t%s\\tqueued\\t\\n\' "$d"; '
        "continue; fi\n"
        "    fi\n"
        "  fi\n"
        f"  {act}printf 'LZ-REMOVED\\t%s\\n' \"$d\"\n"
        "done\n"
    )


def _kept_reason(why: str, detail: str) -> str:
    """Why :func:`clear` kept a run, from its script's ``LZ-KEPT RUN WHY DETAIL`` line."""
    if why == "queued":
        return "jobs still queued or running"
    if why == "client":
        return f"its client (pid {detail}) still runs it"
    if why == "elsewhere":
        host, _, pid = detail.partition(" ")
        return f"its client (pid {pid or '?'} on host {host}) cannot be checked from this host"
    if why == "unchecked":
        return "the scheduler could not be asked: cannot tell whether its jobs still run"
    return why


def clear(
    cluster: Cluster | None = None,
    older_than: Any = 0,
    *,
    dry_run: bool = False,
    force: bool = False,
) -> Cleared:
    """Delete runs (and so their cached results) idle for longer than ``older_than``;
    returns their ids (a :class:`Cleared` list, whose ``kept`` names the runs spared).

    A run's age is that of its newest activity: the latest modification time of the run
    directory and everything in it (results, errors, logs, dynamic records, ...). A run
    that may still be running is kept, whatever its age: one whose Slurm jobs are still
    queued or running (one ``squeue`` by job names, ``lz-RUN-...``, in the same command),
    or a local run whose client process (``client.pid``) is alive, or runs on another
    host. When ``squeue`` fails (the controller is down), Slurm runs are kept rather than
    guessed about. ``force=True`` deletes those too (their jobs are not cancelled: they
    fail when they write their results).

    Only directories that are runs are touched: named like a run id, holding a run
    manifest, owned by this user, not writable by others and not symlinks; a directory
    of runs that is a symlink or not private is refused. ``dry_run`` deletes nothing and
    returns what would be deleted. Everything is one shell command (also over SSH).
    """
    from lazyslurm.cluster import resolve_cluster

    cl = resolve_cluster(cluster)
    cutoff = time.time() - parse_age(older_than)
    backend = cl.backend
    live = backend.live_runs_script() or (  # no scheduler behind this cluster: it cannot tell
        f"echo 'backend {cl.backend_name!r} cannot ask the scheduler that ran them' >&2; false"
    )
    script = _clean_script(cutoff, force=force, dry_run=dry_run, live=live)
    bad, lines = _run_guarded(backend.shell, str(backend.workdir), script, "clean runs")
    removed: list[str] = []
    kept: dict[str, str] = {}
    unchecked = ""
    for line in lines:
        kind, _, rest = line.partition("\t")
        if kind == "LZ-REMOVED" and rest not in bad:
            removed.append(rest)
        elif kind == "LZ-KEPT":
            run_id, why, detail = [*rest.split("\t", 2), "", ""][:3]
            kept[run_id] = _kept_reason(why, detail)
        elif kind == "LZ-LIVE-FAILED":
            unchecked = f"the scheduler could not be asked: {rest.strip() or '(no output)'}"
    if not dry_run:
        cl.session.forget_runs(removed)
    return Cleared(removed, kept, unchecked)


def _code_untrusted(workdir: str, facts: str) -> UntrustedStoreError:
    path = f"{workdir}/code"
    why = untrusted_facts(facts)
    msg = (
        f"the code directory {path} {why}: another user could have planted code there, so "
        f"lazyslurm neither counts nor removes anything in it. Fix: {untrusted_fix(path, why)}"
    )
    return UntrustedStoreError(msg, path=path)


def clear_code(
    cluster: Cluster | None = None, older_than: Any = 0, *, dry_run: bool = False
) -> GcResult:
    """Remove what ``WORKDIR/code`` holds that no run used for longer than ``older_than``:
    lazyslurm's runtime trees, project code, by-value packages and environments (a venv
    with its wheels and lock, counted as one); returns a
    :class:`~lazyslurm.backends.packaging.disk.GcResult` (``removed``, ``kept``).

    An entry's last use is the latest submission that used it (each submission touches
    what it uses). Never removed: an entry a run whose jobs are still queued or running
    uses (each run records its entries, ``RunLayout.code_uses``; one ``squeue`` in the
    same command). When ``squeue`` fails, or such a run did not record its entries (an
    older lazyslurm submitted it), nothing is removed and ``kept`` says why. A later run
    that needs a removed entry stages it again (an environment: uploaded and created
    again by its first job). Everything is one shell command (also over SSH)."""
    from lazyslurm.backends.packaging.disk import gc_script, read_gc
    from lazyslurm.cluster import resolve_cluster

    cl = resolve_cluster(cluster)
    backend = cl.backend
    workdir = str(backend.workdir)
    cutoff = time.time() - parse_age(older_than)
    script = gc_script(workdir, live=backend.live_runs_script(), cutoff=cutoff, dry_run=dry_run)
    res = backend.shell.run(script)
    if res.returncode != 0:
        msg = f"cannot clean {workdir}/code: {res.stderr.strip() or res.stdout.strip()}"
        raise BackendError(msg)
    done = read_gc(res.stdout)
    if done.untrusted:
        raise _code_untrusted(workdir, done.untrusted)
    return done


def disk_usage(cluster: Cluster | None = None) -> DiskReport:
    """What the work directory holds, in one command: its runs (count, size, oldest) and
    each unit of ``WORKDIR/code`` (kind, size, last use); a
    :class:`~lazyslurm.backends.packaging.disk.DiskReport` (``str()`` is the report
    ``lazyslurm usage --disk`` prints)."""
    from lazyslurm.backends.option import resolve
    from lazyslurm.backends.packaging.disk import read_usage, usage_script
    from lazyslurm.backends.packaging.options import PackagingOptions
    from lazyslurm.cluster import resolve_cluster

    cl = resolve_cluster(cluster)
    backend = cl.backend
    workdir = str(backend.workdir)
    res = backend.shell.run(usage_script(workdir))
    if res.returncode != 0:
        msg = f"cannot read what {workdir} holds: {res.stderr.strip()}"
        raise BackendError(msg)
    cap = 0.0
    if cl.spec is not None and PackagingOptions in cl.spec.options:
        cap = float(resolve(PackagingOptions, cl.backend_options)["code_cache_gb"] or 0)
    return read_usage(workdir, res.stdout, cap)


def plan_with_store(
    cl: Cluster, roots: list[Job], cache: bool | None
) -> tuple[Plan, dict[str, str]]:
    """The plan of ``roots`` given the session's memory and, with caching (``cache``, else
    the cluster's setting), the results already in the store: ``(plan, found)``.

    Tasks whose ``mem`` or ``time`` is ``"auto"`` ask what their past runs say
    (:func:`history`, one command), planned again with those numbers: a graph without
    them costs nothing more."""
    done: dict[str, str | None] = dict(cl.session.computed())
    found: dict[str, str] = {}
    if cache if cache is not None else cl.cache:
        found = lookup(cl, [j.key for j in collect(roots, done) if j.task.pure])
        done.update(found)
    limits = cl.pack_limits()

    def plan(learned: dict[str, Learned] | None) -> Plan:
        return make_plan(
            roots,
            done=done,
            max_array_size=cl.max_array_size(),
            max_jobs=limits.max_jobs if limits is not None else None,
            packing=limits is not None,
            time_cap=limits.time_cap if limits is not None else None,
            learned=learned,
        )

    p = plan(None)
    tokens = {aj.name: p.task(aj).token[:12] for aj in p.array_jobs if aj.learned is not None}
    if tokens:
        samples = history(cl, tokens)
        p = plan({name: learn(samples.get(name, ()), tokens[name]) for name in tokens})
    return attrs.evolve(p, cached=frozenset(found)), found


# --------------------------------------------------------------------------- usage lines


@attrs.frozen
class UsageLine:
    """What one element used, as its outcome record says (a usage line: see
    :func:`lazyslurm.store.encode_usage`): in run ``run``, from its ``result``, its
    ``error`` or the usage trailer of a ``pack`` file (``file``: that file's name)."""

    run: str
    kind: str  # "result", "error" or "pack"
    file: str
    fields: dict[str, str] = attrs.field(eq=False)

    @property
    def key(self) -> str:
        return self.fields.get("k", "")

    def number(self, name: str) -> float | None:
        """Field ``name`` as a number (None: absent or not a number)."""
        try:
            return float(self.fields[name])
        except (KeyError, ValueError):
            return None


RUN_PACK_BYTES = 1 << 22  # a run's own report: the last 4 MiB of each pack file
HISTORY_PACK_BYTES = 1 << 18  # history: the last 256 KiB (about 1,000 elements each)


def _glob(text: str) -> str:
    r"""``text`` as a literal part of a find(1) pattern.

    >>> _glob("a*b[1]?")
    'a\\*b\\[1]\\?'
    """
    return "".join("\\" + c if c in "*?[\\" else c for c in text)


def _usage_script(runs: Iterable[str] | None, names: Iterable[str] | None, pack_bytes: int) -> str:
    """The body (run in ``WORKDIR/runs``) that prints ``PATH<TAB>USAGE LINE`` for every
    usage line of this user's outcome records: every record of ``runs``, or, across
    every run, the results of the tasks ``names``; and the usage trailers of pack files
    (the last ``pack_bytes`` of each). Only record headers and pack tails are read,
    never whole results."""
    q = shlex.quote
    mark = USAGE_MARK.strip()
    pick = (  # bytes, not text (NULs out, for any awk): the usage lines with their file
        "LC_ALL=C tr -d '\\000' | LC_ALL=C awk "
        "'/^==> .* <==$/ { f = substr($0, 5, length($0) - 8); next }\n"
        f'/^{mark} / {{ print f "\\t" $0 }}\''
    )
    if runs is not None:
        dirs = " ".join(f"{q('./' + r + '/results')} {q('./' + r + '/errors')}" for r in runs)
        records = f"find {dirs} -maxdepth 1 -type f -user \"$me\" -name '*.pkl'"
        packs = (
            f"find {' '.join(q('./' + r + '/results') for r in runs)} -maxdepth 1 -type f "
            "-user \"$me\" -name '*.pack'"
        )
        wanted = ""
    else:
        names = list(names or ())
        alt = " -o ".join(f"-name {q(_glob(n) + '-*.pkl')}" for n in names)
        records = (
            "find . -mindepth 3 -maxdepth 3 -path './*/results/*' -type f -user \"$me\" "
            f"\\( {alt} \\)"
        )
        packs = (
            "find . -mindepth 3 -maxdepth 3 -path './*/results/*' -type f -user \"$me\" "
            "-name '*.pack'"
        )
        wanted = "\n".join(names)
    lines = [
        f"{records} -exec head -v -c {USAGE_HEAD_BYTES} -- {{}} + 2>/dev/null | {pick}",
        f"{packs} -exec tail -v -c {pack_bytes} -- {{}} + 2>/dev/null | {pick}",
    ]
    if wanted:  # history: the pack lines of those tasks only (key = NAME-HEX24)
        keep = (
            "awk -F '\\t' -v OFS='\\t' 'BEGIN { n = split(ENVIRON[\"LZ_NAMES\"], a, \"\\n\"); "
            "for (i = 1; i <= n; i++) w[a[i]] = 1 }\n"
            "{ if (match($2, / k=[^ ]+/)) { k = substr($2, RSTART + 3, RLENGTH - 3); "
            "if (substr(k, 1, length(k) - 25) in w) print } }'"
        )
        lines[1] = f"export LZ_NAMES={q(wanted)}\n{lines[1]} | {keep}"
    return "\n".join(lines) + "\ntrue\n"


def usage_lines(
    cl: Cluster,
    *,
    runs: Iterable[str] | None = None,
    names: Iterable[str] | None = None,
    pack_bytes: int | None = None,
) -> list[UsageLine]:
    """What the elements of ``runs`` used (every outcome record), or, across the store,
    the finished elements of the tasks named ``names``: one command over the backend's
    shell, reading record headers and pack tails only. A pack file's trailer repeats its
    records' lines: each (run, key) is given once, a record's own line first."""
    if runs is not None:
        runs = [r for r in runs if r and "/" not in r and not r.startswith(".")]
        if not runs:
            return []
    elif not names:
        return []
    size = pack_bytes or (RUN_PACK_BYTES if runs is not None else HISTORY_PACK_BYTES)
    backend = cl.backend
    script = _usage_script(runs, names, size)
    bad, lines = _run_guarded(backend.shell, str(backend.workdir), script, "read usage")
    seen: dict[tuple[str, str], UsageLine] = {}
    for line in lines:
        path, tab, text = line.partition("\t")
        fields = parse_usage(text) if tab else None
        parts = path.split("/")
        if fields is None or len(parts) != 4 or parts[1] in bad or not fields.get("k"):
            continue
        run, where, name = parts[1], parts[2], parts[3]
        kind = "pack" if name.endswith(RunLayout.PACK_SUFFIX) else where[:-1]
        got = UsageLine(run=run, kind=kind, file=name, fields=fields)
        old = seen.get((run, got.key))
        if old is None or (old.kind == "pack" and kind != "pack"):
            seen[(run, got.key)] = got
    return list(seen.values())


def history(cl: Cluster, tokens: dict[str, str]) -> dict[str, list[Sample]]:
    """The finished elements of past runs of the tasks named in ``tokens`` (name -> the
    task's code token now), from their outcome records (:func:`usage_lines`): one
    command. A key belongs to task NAME when it reads ``NAME-`` and 24 hex digits."""
    out: dict[str, list[Sample]] = {}
    for u in usage_lines(cl, names=sorted(tokens)):
        if u.kind == "error":
            continue
        name = u.key[:-25]
        if name not in tokens or u.key[-25] != "-":
            continue
        peak = u.number("m")
        elapsed = u.number("w")
        out.setdefault(name, []).append(Sample(u.run, u.key, peak, elapsed, u.fields.get("t", "")))
    return out


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
    where = f"{cl.backend.workdir}/{names[0]}"
    manifest, array_jobs = read_manifest(files[names[0]], run=run_id, path=where)
    job_ids = parse_job_ids(files.get(names[2], b"").decode())
    handle = RunHandle(run_id=run_id, array_jobs=array_jobs, job_ids=job_ids)
    return manifest, handle, files.get(names[1])
