"""On-cluster retries: the guard job of an array job whose task retries (docs/reliability.md
#retries-on-the-cluster). Runs on a compute node, with the client gone.

An array job ``AJ`` whose task has ``retries > 0`` or ``requeue=True``
(:attr:`~lazyslurm.graph.resources.Resources.guarded`) is submitted with a guard job
``G`` (``--dependency=afterany:AJ``); AJ's dependents wait ``afterok:G``. When AJ has
ended, G runs ``python -m lazyslurm.backends.slurm.retry RUN_DIR AJ WATCHED ATTEMPT``:

1. It lists the Slurm elements of ``WATCHED`` (AJ itself, or an earlier retry of some of
   its elements) that left no outcome record (a result, error or cancelled record; for a
   packed element, its pack file).
2. None: exit 0 (the dependents start). One left an error record (the task raised, past
   its in-process retries): nothing is resubmitted, exit 1 (the dependents are cancelled,
   as without a guard).
3. It asks Slurm why each was lost, and on which node (``squeue -t all``, else
   ``sacct``). Retried: ``NODE_FAIL`` (the node is excluded from then on), ``PREEMPTED``
   (``requeue=True``: Slurm's ``PreemptMode=CANCEL``; such attempts do not count against
   ``retries``), ``OUT_OF_MEMORY`` with ``on_oom`` (memory x on_oom, up to ``max_mem``),
   ``TIMEOUT`` with ``on_timeout`` (time x on_timeout). Anything else, or an element
   whose ``retries`` are spent: exit 1, and the record says why.
4. It resubmits AJ's own job script with ``--array=<those indices>`` (same indices: same
   elements, same keys, same result files) and the new request, submits the next guard
   (``afterany`` on that job), makes AJ's pending dependents also wait for the new guard
   (:func:`~lazyslurm.backends.slurm.node.repoint_dependents`, as dynamic expansion
   does), writes its record (``retries/AJ.ATTEMPT.json``) and exits 0.
"""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

from lazyslurm.backends.slurm.node import _said, _slurm, repoint_dependents
from lazyslurm.backends.slurm.options import UNREACHABLE_TIMEOUT_S
from lazyslurm.backends.slurm.render import (
    GUARD,
    guard_flags,
    sbatch_flags,
)
from lazyslurm.dynamic import local_records, locked
from lazyslurm.graph.resources import Resources, parse_mem, parse_time
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.runner import ATTEMPT_ENV
from lazyslurm.store import RunLayout, atomic_write, read_private

__all__ = ["RETRYABLE", "guard", "main", "read_retry_records"]

# Slurm's states of an element lost for a reason outside the task
RETRYABLE = ("NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY", "TIMEOUT")
_ASK_AGAIN_S = 60.0  # how long elements Slurm does not list yet are asked about again
# an element in one of these is not over (Slurm requeued it): nothing to retry yet
_NOT_OVER = frozenset(
    {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING",
     "COMPLETING", "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED"}
)  # fmt: skip
_FORMAT_SQUEUE = "%i|%T|%N|%m|%l|%r"
_FORMAT_SACCT = "JobID,State,NodeList,ReqMem,Timelimit,Reason"


def read_retry_records(layout: RunLayout, array_job: str | None = None) -> list[dict[str, Any]]:
    """The guards' records of a run (of one array job), by array job then attempt."""
    try:
        names = os.listdir(layout.retries_dir)
    except (FileNotFoundError, NotADirectoryError):
        return []
    out = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        aj, _, _attempt = name[: -len(".json")].rpartition(".")
        if array_job is not None and aj != array_job:
            continue
        try:
            out.append(json.loads(read_private(f"{layout.retries_dir}/{name}")))
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda r: (r.get("array_job", ""), r.get("attempt", 0)))


def _find_array_job(layout: RunLayout, array_job: str) -> tuple[ArrayJob, dict[str, Any]]:
    manifest = json.loads(read_private(layout.manifest))
    entries = list(manifest["array_jobs"])
    for rec in local_records(layout):
        entries.extend(rec.array_jobs)
    for e in entries:
        if e["id"] == array_job:
            return ArrayJob.from_manifest(e), manifest
    msg = f"array job {array_job} is not in run {layout.root}"
    raise LookupError(msg)


def _outcome(layout: RunLayout, aj: ArrayJob, j: int) -> str:
    """``"ok"``, ``"error"`` or ``""`` (nothing: lost) for Slurm element ``j``."""
    if aj.pack > 1 and os.path.exists(layout.pack(aj.id, j)):
        return "ok"
    keys = [aj.keys[i] for i in range(j * aj.pack, min(aj.size, (j + 1) * aj.pack))]
    found = ""
    for key in keys:
        if os.path.exists(layout.result(key)):
            found = found or "ok"
        elif os.path.exists(layout.error(key)) or os.path.exists(layout.cancelled(key)):
            found = "error"
        elif aj.pack == 1:
            return ""
        else:  # a pack without its pack file: it did not end
            return ""
    return found


def _slurm_rows(layout: RunLayout, job: str, timeout_s: float) -> dict[int, dict]:
    """Slurm's word on each element of ``job``: state, node, request. squeue first (the
    controller's present: a requeued element is PENDING there, while sacct still lists
    its first attempt's NODE_FAIL); sacct for the elements squeue no longer knows (its
    latest row for each)."""
    rows: dict[int, dict] = {}
    for source in ("squeue", "sacct"):
        if source == "squeue":
            argv = ["squeue", "-h", "-r", "-t", "all", "-j", job, "-o", _FORMAT_SQUEUE]
        else:
            argv = ["sacct", "-X", "-n", "-P", "-j", job, "-o", _FORMAT_SACCT]
        res = _slurm(argv, layout, timeout_s)
        if res.returncode != 0:
            continue
        found: dict[int, dict] = {}
        for line in res.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) < 6 or "_" not in parts[0] or "." in parts[0]:
                continue
            index = parts[0].split("_", 1)[1]
            if not index.isdigit():
                continue
            found[int(index)] = {  # sacct: oldest attempt first, the latest stays
                "state": (parts[1].split() or ["UNKNOWN"])[0],
                "node": "" if parts[2].startswith("None") else parts[2],
                "mem": parts[3],
                "time": parts[4],
                "reason": "" if parts[5] in ("None", "") else parts[5],
            }
        for j, row in found.items():
            rows.setdefault(j, row)  # squeue's word stands
    return rows


def _mem_mb(text: str) -> int | None:
    text = text.strip().rstrip("nc")  # sacct's ReqMem: "100Mn" (per node), "1Gc" (per CPU)
    try:
        return parse_mem(text if text[-1:].isalpha() else f"{text}M")
    except (ValueError, TypeError, IndexError):
        return None


def _time_min(text: str) -> int | None:
    if not text or text.upper() in ("UNLIMITED", "INVALID", "PARTITION_LIMIT"):
        return None
    try:
        return parse_time(text)
    except (ValueError, TypeError):
        return None


def guard(run_dir: str, array_job: str, watched: str, attempt: int) -> int:
    """What the guard job does (the module docstring); its exit status."""
    layout = RunLayout(run_dir)
    aj, manifest = _find_array_job(layout, array_job)
    config = manifest.get("dynamic") or {}
    timeout_s = float(config.get("unreachable_timeout_s") or UNREACHABLE_TIMEOUT_S)
    r: Resources = aj.resources
    past = read_retry_records(layout, array_job)
    watched_indices = range(aj.slurm_size)
    for rec in past:
        if rec.get("retried", {}).get("job_id") == watched:
            watched_indices = rec["retried"]["indices"]
    lost, failed = [], []
    for j in watched_indices:
        got = _outcome(layout, aj, j)
        if got == "error":
            failed.append(j)
        elif not got:
            lost.append(j)
    say = print
    if not lost and not failed:
        say(f"lazyslurm guard: every element of {watched} ({array_job}) left its outcome")
        return 0
    record: dict[str, Any] = {
        "array_job": array_job,
        "attempt": attempt,
        "watched": watched,
        "guard": os.environ.get("SLURM_JOB_ID", ""),
        "at": time.time(),
        "failed": failed,
        "lost": {},
    }

    def give_up(why: str) -> int:
        record["gave_up"] = why
        _write(layout, record)
        say(f"lazyslurm guard: {why}", file=sys.stderr)
        return 1

    if failed:
        return give_up(
            f"element(s) {_span(failed)} of {watched} ({array_job}) failed in the task "
            f"(error records): not a loss to retry; the dependents are cancelled"
        )
    rows = _slurm_rows(layout, watched, timeout_s)
    deadline = time.monotonic() + _ASK_AGAIN_S
    while any(j not in rows for j in lost) and time.monotonic() < deadline:
        time.sleep(2)  # sacct records an element a few seconds late; squeue may lag too
        rows = _slurm_rows(layout, watched, timeout_s)
    say(f"lazyslurm guard: lost {_span(lost)} of {watched}; Slurm says {rows}")
    if any(rows.get(j, {}).get("state") in _NOT_OVER for j in lost):
        # requeued by Slurm (requeue=True: preemption, scontrol requeue, a node failure
        # with JobRequeue=1), not over: the next guard waits for it, as this one did
        return _rearm(layout, aj, manifest, watched, attempt, timeout_s, record)
    spent: dict[int, int] = {}  # attempts that count against retries, per element
    excluded: list[str] = []
    for rec in past:
        for j in rec.get("retried", {}).get("indices", ()):
            if rec["lost"].get(str(j), {}).get("counts", True):
                spent[j] = spent.get(j, 0) + 1
        for node in rec.get("retried", {}).get("request", {}).get("exclude", ()):
            excluded.append(node)
    mem: int | None = None
    minutes: int | None = None
    problems = []
    for j in lost:
        row = rows.get(j)
        if row is None:
            problems.append(f"{j}: Slurm no longer knows it (neither squeue nor sacct)")
            continue
        state, node = row["state"], row["node"]
        entry = {"state": state, "node": node, "reason": row["reason"], "counts": True}
        record["lost"][str(j)] = entry
        where = f" on {node}" if node else ""
        if state not in RETRYABLE:
            problems.append(f"{j}: {state}{where} ({row['reason'] or 'no reason'}), not retried")
            continue
        if state == "PREEMPTED" and r.requeue:
            entry["counts"] = False  # Slurm's own requeue would not count it either
        elif spent.get(j, 0) >= r.retries:
            problems.append(f"{j}: {state}{where}, and its retries={r.retries} are spent")
            continue
        if state == "NODE_FAIL" and node:
            excluded.append(node)
        if state == "OUT_OF_MEMORY":
            if r.on_oom is None:
                problems.append(f"{j}: OUT_OF_MEMORY{where}; set on_oom to retry with more")
                continue
            now = _mem_mb(row["mem"]) or (r.mem_mb if isinstance(r.mem_mb, int) else None)
            if now is None:
                problems.append(f"{j}: OUT_OF_MEMORY, and its memory request is unknown")
                continue
            new = math.ceil(now * r.on_oom)
            if r.max_mem_mb is not None:
                if now >= r.max_mem_mb:
                    problems.append(f"{j}: OUT_OF_MEMORY at {now}M, already max_mem")
                    continue
                new = min(new, r.max_mem_mb)
            mem = max(mem or 0, new)
        if state == "TIMEOUT":
            if r.on_timeout is None:
                problems.append(f"{j}: TIMEOUT{where}; set on_timeout to retry with more time")
                continue
            now_t = _time_min(row["time"])
            if now_t is None:
                problems.append(f"{j}: TIMEOUT, and its time limit is unknown")
                continue
            minutes = max(minutes or 0, math.ceil(now_t * r.on_timeout))
    if problems:
        return give_up(
            f"{len(problems)} element(s) of {watched} ({array_job}, attempt {attempt}) "
            f"cannot be retried: " + "; ".join(problems)
        )
    # the request: AJ's own flags, the array narrowed, the escalations, the exclusions
    defaults = Resources.from_options(**config.get("defaults", {}))
    run_id = os.path.basename(layout.root.rstrip("/"))
    flags = sbatch_flags(aj, run_id=run_id, layout=layout, defaults=defaults)
    prev = next((rec for rec in reversed(past) if rec.get("retried")), None)
    request = dict(prev["retried"]["request"]) if prev else {}
    if mem is not None:
        request["mem_mb"] = mem
    if minutes is not None:
        request["time_min"] = minutes
    user_exclude = dict(r.scheduler).get("exclude")
    request["exclude"] = sorted(set(excluded))
    out = []
    for f in flags:
        name = f.split("=", 1)[0]
        if name == "--array":
            throttle = f.partition("%")[2]
            f = f"--array={_span(lost)}" + (f"%{throttle}" if throttle else "")
        elif name in ("--mem", "--mem-per-cpu") and "mem_mb" in request:
            continue
        elif name == "--time" and "time_min" in request:
            continue
        elif name == "--exclude" and request["exclude"]:
            continue
        out.append(f)
    if "mem_mb" in request:
        out.append(f"--mem={request['mem_mb']}M")
    if "time_min" in request:
        out.append(f"--time={request['time_min']}")
    out.append(f"--export=ALL,{ATTEMPT_ENV}={attempt + 1}")  # the runner's usage line
    if request["exclude"]:
        nodes = sorted(set(request["exclude"]) | ({user_exclude} if user_exclude else set()))
        out.append(f"--exclude={','.join(nodes)}")
    new_job = _sbatch([*out, "--", layout.job_script(array_job)], layout, timeout_s)
    if new_job is None or new_job.startswith("!"):
        return give_up(f"resubmitting {_span(lost)} of {array_job} failed: {new_job}")
    gflags = guard_flags(aj, run_id=run_id, layout=layout, defaults=defaults)
    new_guard = _sbatch(
        [*gflags, f"--dependency=afterany:{new_job}", "--",
         layout.guard_script(array_job), new_job, str(attempt + 1)],
        layout, timeout_s,
    )  # fmt: skip
    if new_guard is None or new_guard.startswith("!"):
        _slurm(["scancel", new_job], layout, timeout_s)
        return give_up(f"submitting the next guard failed: {new_guard}; the retry was cancelled")
    record["retried"] = {
        "indices": lost,
        "job_id": new_job,
        "guard": new_guard,
        "request": request,
        "flags": out,
    }
    _write(layout, record)  # before the dependents change: a poll finds the new ids
    try:
        with locked(layout):
            repoint_dependents(
                layout, array_job, [new_guard], [f"{array_job}.{GUARD}"],
                local_records(layout), manifest, timeout_s,
            )  # fmt: skip
    except Exception as exc:
        _slurm(["scancel", new_job, new_guard], layout, timeout_s)
        del record["retried"]
        return give_up(f"could not make the dependents wait for the retry: {exc}")
    lost_text = ", ".join(
        f"{j} ({record['lost'][str(j)]['state']} on {record['lost'][str(j)]['node'] or '?'})"
        for j in lost
    )
    say(
        f"lazyslurm guard: attempt {attempt + 1} of element(s) {lost_text} of {array_job}: "
        f"job {new_job} ({' '.join(out)}), guarded by {new_guard}"
    )
    return 0


def _rearm(
    layout: RunLayout,
    aj: ArrayJob,
    manifest: Mapping[str, Any],
    watched: str,
    attempt: int,
    timeout_s: float,
    record: dict[str, Any],
) -> int:
    """Some of ``watched``'s elements are back in the queue (Slurm requeued them): submit
    the next guard of the same job and attempt, make the dependents wait for it too, and
    exit 0 (no record: nothing was resubmitted)."""
    config = manifest.get("dynamic") or {}
    defaults = Resources.from_options(**config.get("defaults", {}))
    run_id = os.path.basename(layout.root.rstrip("/"))
    gflags = guard_flags(aj, run_id=run_id, layout=layout, defaults=defaults)
    new_guard = _sbatch(
        [*gflags, f"--dependency=afterany:{watched}", "--",
         layout.guard_script(aj.id), watched, str(attempt)],
        layout, timeout_s,
    )  # fmt: skip
    if new_guard is None or new_guard.startswith("!"):
        record["gave_up"] = f"elements were requeued, but the next guard failed: {new_guard}"
        _write(layout, record)
        return 1
    try:
        with locked(layout):
            repoint_dependents(
                layout, aj.id, [new_guard], [f"{aj.id}.{GUARD}"], local_records(layout),
                manifest, timeout_s,
            )  # fmt: skip
    except Exception as exc:
        _slurm(["scancel", new_guard], layout, timeout_s)
        record["gave_up"] = f"could not make the dependents wait for the next guard: {exc}"
        _write(layout, record)
        return 1
    print(f"lazyslurm guard: {watched} has requeued elements; job {new_guard} guards it now")
    return 0


def _sbatch(args: Sequence[str], layout: RunLayout, timeout_s: float) -> str | None:
    """``sbatch --parsable ARGS``: the new job id, or ``"!" + Slurm's words``."""
    res = _slurm(["sbatch", "--parsable", *args], layout, timeout_s)
    if res.returncode != 0:
        return "!" + _said(res)
    return res.stdout.strip().split(";", 1)[0] or None


def _span(indices: Sequence[int]) -> str:
    """``0,3-5`` for [0, 3, 4, 5]."""
    out: list[str] = []
    run: list[int] = []
    for i in sorted(indices):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [i]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ",".join(out)


def _write(layout: RunLayout, record: Mapping[str, Any]) -> None:
    os.makedirs(layout.retries_dir, mode=0o700, exist_ok=True)
    path = layout.retry_record(record["array_job"], record["attempt"])
    atomic_write(path, json.dumps(record, sort_keys=True).encode())


def main(argv: Sequence[str]) -> int:
    if len(argv) != 4 or not argv[3].isdigit():
        print(
            "usage: python -m lazyslurm.backends.slurm.retry RUN_DIR ARRAY_JOB WATCHED ATTEMPT",
            file=sys.stderr,
        )
        return 2
    run_dir, array_job, watched, attempt = argv
    print(f"lazyslurm guard of {array_job} (attempt {attempt}, job {watched}) in {run_dir}: "
          f"{shlex.join(sys.argv)}")  # fmt: skip
    try:
        return guard(run_dir, array_job, watched, int(attempt))
    except (OSError, ValueError, LookupError) as exc:  # a run directory it cannot read
        print(f"lazyslurm guard: cannot read run {run_dir}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
