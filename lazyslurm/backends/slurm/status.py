"""Slurm's own account of a run's elements: ``sacct``/``squeue`` rows -> element states.

Pure functions over the text those commands print, and :class:`Watch`, a run's memory of
what one status query cannot tell twice (since when an element is unlisted, completed
without a result, requeued). The backend (:mod:`lazyslurm.backends.slurm.backend`) runs
the commands; the runner's result and error files stay the first truth (sacct lags).

:func:`never_clears` recognises the pending reasons Slurm keeps for good
(``BadConstraints``, ``PartitionConfig``, ``InvalidAccount``, ...), read from squeue's
``%r`` or sacct's ``Reason``: such an element fails with the cause and the fix.

>>> never_clears("BadConstraints") is not None, never_clears("Priority")
(True, None)
>>> never_clears("QOSMaxCpuPerJobLimit") is not None, never_clears("QOSGrpCpuLimit")
(True, None)
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence, Set
from typing import Any

import attrs

from lazyslurm.backends.base import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    ArrayJob,
    ElementFailure,
    Snapshot,
)
from lazyslurm.store import RunLayout

__all__ = [
    "Row",
    "StatusUnavailable",
    "Watch",
    "classify",
    "element_state",
    "listing",
    "never_clears",
    "parse_array_ids",
    "parse_status",
]

# reason -> what to change. Only reasons that no amount of waiting clears: the job's own
# request is impossible where it was sent (aggregate limits such as AssocGrp* and QOSGrp*
# do clear when other jobs end, and PartitionDown/ReqNodeNotAvail when an admin acts).
_NEVER: dict[str, str] = {
    "BadConstraints": (
        "no node can ever satisfy the request (mem, cpus_per_task, constraint, gres or "
        "extra_sbatch): ask for less, or choose a partition with bigger nodes"
    ),
    "PartitionConfig": (
        "the request (cpus_per_task, nodes, mem, ...) is more than the partition's "
        "configuration allows: ask for less or choose another partition"
    ),
    "PartitionNodeLimit": (
        "the number of nodes is outside the partition's MinNodes/MaxNodes: change nodes= "
        "(or --nodes in extra_sbatch) or choose another partition"
    ),
    "PartitionTimeLimit": "time= is over the partition's MaxTime: ask for less time",
    "InvalidAccount": "the account does not exist or you are not in it: fix account=",
    "InvalidQOS": "the QOS does not exist or your account may not use it: fix qos=",
    "AccountNotAllowed": "the partition does not allow this account: fix account= or partition=",
    "QOSNotAllowed": "the partition does not allow this QOS: fix qos= or partition=",
    "InactiveLimit": "the job reached the system's InactiveLimit: submit it again",
    "JobHeldAdmin": "an administrator holds the job: ask them to release it",
    "FrontEndDown": "no front end node is available: ask the cluster's administrators",
}
# per-job maxima of an association or QOS (QOSMaxCpuPerJobLimit, AssocMaxWallDurationPer
# JobLimit, ...): the job alone is over the limit, so it never starts
_PER_JOB = re.compile(r"^(Assoc|QOS)Max\w*PerJob\w*$")


def never_clears(reason: str) -> str | None:
    """What to change when a pending job's ``reason`` can never clear, else None."""
    word = reason.split(",")[0].strip().strip("()")
    if word in _NEVER:
        return _NEVER[word]
    if _PER_JOB.match(word):
        return (
            f"the job alone is over a per-job limit of its {'QOS' if word[0] == 'Q' else 'account'}"
            " (see `sacctmgr show qos` / `sacctmgr show assoc`): ask for less"
        )
    return None


# Slurm states grouped by what they mean for us. Anything else is treated as a terminal
# failure, so that waiting never loops forever on a state we do not know.
ACTIVE = {
    "PENDING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "REQUEUE_FED": PENDING,
    "RESV_DEL_HOLD": PENDING,
    "RUNNING": RUNNING,
    "CONFIGURING": RUNNING,
    "COMPLETING": RUNNING,
    "SUSPENDED": RUNNING,
    "STOPPED": RUNNING,
    "SIGNALING": RUNNING,
    "STAGE_OUT": RUNNING,
    "RESIZING": RUNNING,
    "UPDATE_DB": RUNNING,
    "POWER_UP_NODE": PENDING,
}


COMPLETED = "COMPLETED"


NO_RESULT_GRACE_S = 15.0  # COMPLETED in Slurm but no result file yet (shared FS lag)


# an element that neither the status source nor the store has listed for this long (each
# listing resets the clock) is asked of the other source once; silent there too: UNKNOWN
UNLISTED_GRACE_S = 60.0


NEVER_SATISFIED = "DependencyNeverSatisfied"


# an element of a packed Slurm element whose own input failed: it cancelled itself
INPUT_FAILED = ElementFailure(state="CANCELLED", reason="an input of it failed")


# with requeue=True these mean "Slurm runs it again": waited on, for up to the grace below
REQUEUE_STATES = {"PREEMPTED", "NODE_FAIL", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}


REQUEUE_GRACE_S = 300.0  # PREEMPTED/NODE_FAIL that never turns PENDING again: a failure


SACCT_FORMAT = "JobID,State,ExitCode,Reason,NodeList"


# a status command failing with these words will fail the same way on every retry
PERMANENT_STATUS_ERRORS = (
    "accounting storage is disabled",
    "command not found",
    "invalid option",
    "unrecognized option",
    "Invalid field",
)


class StatusUnavailable(Exception):
    """The status query failed (slurmctld unreachable) though the shell worked; not a
    user-facing error (``poll`` turns it into a report or a BackendError)."""

    def __init__(self, msg: str, *, permanent: bool = False) -> None:
        super().__init__(msg)
        self.permanent = permanent


SQUEUE_FORMAT = "%i|%T|%r|%N"


# under sacct, elements pending this long also get squeue's reason (it may never clear)
PENDING_REASON_CHECK_S = 5.0


def parse_array_ids(text: str) -> tuple[str, list[int] | None]:
    """Split a Slurm job id into (array master id, element indices or None).

    >>> parse_array_ids("101_3"), parse_array_ids("101_[0-2,5%2]"), parse_array_ids("102")
    (('101', [3]), ('101', [0, 1, 2, 5]), ('102', None))
    """
    master, sep, rest = text.partition("_")
    if not sep:
        return master, None
    rest = rest.strip("[]").split("%")[0]
    indices: list[int] = []
    for part in rest.split(","):
        if "-" in part:
            lo, hi = part.split("-")
            indices.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            indices.append(int(part))
    return master, indices


@attrs.frozen
class Row:
    state: str
    exit_code: str = ""
    reason: str = ""
    node: str = ""  # the job's nodes (Slurm's node list), once it had some


def parse_status(text: str, squeue: bool) -> dict[tuple[str, int | None], Row]:
    """Rows of ``sacct -X -n -P -o JobID,State,ExitCode,Reason,NodeList`` or
    ``squeue -h -o '%i|%T|%r|%N'`` (the node list may be missing), keyed by (master id,
    index or None).

    >>> rows = parse_status("101_0|NODE_FAIL|0:0|None|site2\\n"
    ...                     "101_[1-2]|PENDING|0:0|Priority|None assigned\\n", squeue=False)
    >>> sorted((k, v.state, v.reason, v.node) for k, v in rows.items())
    [(('101', 0), 'NODE_FAIL', '', 'site2'), (('101', 1), 'PENDING', 'Priority', ''), \
(('101', 2), 'PENDING', 'Priority', '')]
    """
    rows: dict[tuple[str, int | None], Row] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        job_id, state, third = parts[0], parts[1], parts[2]
        if "." in job_id:  # a step (sacct without -X)
            continue
        state = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
        node = parts[3 if squeue else 4] if len(parts) > (3 if squeue else 4) else ""
        node = "" if node.startswith("None") else node  # sacct: "None assigned"
        if squeue:
            row = Row(state, reason="" if third == "None" else third, node=node)
        else:  # sacct keeps a finished job's last pending reason (JobHeldUser, ...): noise
            reason = parts[3] if len(parts) > 3 and state == "PENDING" else ""
            row = Row(state, exit_code=third, reason=reason, node=node)
        master, indices = parse_array_ids(job_id)
        if indices is None:
            rows[(master, None)] = row
        else:
            for i in indices:
                rows[(master, i)] = row
    return rows


def with_pending_reasons(
    rows: dict[tuple[str, int | None], Row], queued: dict[tuple[str, int | None], Row]
) -> dict[tuple[str, int | None], Row]:
    """sacct's rows, with squeue's reason for the elements both see PENDING (slurmdbd
    keeps a pending job's first reason, so one that never clears is seen only there).

    >>> rows = parse_status("7_[0-1]|PENDING|0:0|None", squeue=False)
    >>> queued = parse_status("7_1|PENDING|BadConstraints", squeue=True)
    >>> [(k, v.reason) for k, v in sorted(with_pending_reasons(rows, queued).items())]
    [(('7', 0), 'None'), (('7', 1), 'BadConstraints')]
    """
    out = dict(rows)
    for key, row in queued.items():
        known = rows.get(key) or rows.get((key[0], None))
        if row.state == "PENDING" and row.reason and known is not None:
            if known.state == "PENDING":
                out[key] = attrs.evolve(known, reason=row.reason)
    return out


def cross_checked(
    rows: dict[tuple[str, int | None], Row], text: str, suspects: Set[str], source: str
) -> tuple[dict[tuple[str, int | None], Row], Set[str]]:
    r"""The status rows with the other source's rows (``text``: its output, then
    ``-RC=status``) filling in what they lack, and the suspects that source answered for.

    An answer counts if the command worked, or if squeue found none of the jobs
    ("Invalid job id specified": it forgot them); a failed query answers for none.

    >>> rows = parse_status("7_0|RUNNING|0:0|None", squeue=False)
    >>> out, asked = cross_checked(rows, "\n7_1|RUNNING|None\n-RC=0\n", {"7_1"}, "squeue")
    >>> sorted((k, v.state) for k, v in out.items()), sorted(asked)
    ([(('7', 0), 'RUNNING'), (('7', 1), 'RUNNING')], ['7_1'])
    >>> cross_checked(rows, "\nslurm_load_jobs error: Invalid job id specified\n-RC=1\n",
    ...                {"7_1"}, "squeue")[1]
    {'7_1'}
    >>> cross_checked(rows, "\nsacct: error: Problem talking to the database\n-RC=1\n",
    ...                {"7_1"}, "sacct")[1]
    frozenset()
    """
    body, _, code = text.partition("-RC=")
    forgotten = source == "squeue" and "Invalid job id specified" in body
    if code.strip() != "0" and not forgotten:
        return rows, frozenset()
    out = dict(rows)
    for key, row in parse_status(body, squeue=source == "squeue").items():
        out.setdefault(key, row)
    return out, set(suspects)


class Watch:
    """Per-run memory of the backend (what sacct cannot tell us twice)."""

    def __init__(self) -> None:
        self.completed_since: dict[tuple[str, int], float] = {}
        # since when no source has listed an element (forgotten as soon as one does)
        self.unlisted_since: dict[tuple[str, int], float] = {}
        # Slurm ids (``ID_J``) of elements unlisted past the grace: the next poll asks the
        # other source about exactly these before any is called UNKNOWN
        self.suspects: set[str] = set()
        self.sources = ("the status source", "the other source")  # names, for messages
        # remote runs: files seen by the last poll, and a wait the next poll does there
        self.files_seen: int | None = None
        self.deferred_wait_s = 0.0
        # outages: the last status rows and snapshot, and since when polls fail
        self.rows: dict[tuple[str, int | None], Row] = {}
        self.last: Snapshot | None = None
        self.unreachable_since: float | None = None  # time.monotonic()
        self.unreachable_wall: float | None = None  # time.time(), for messages
        self.final: dict[tuple[str, int], tuple[str, ElementFailure | None]] = {}
        # packed compact maps: each Slurm element's state at the last poll, and the
        # element states made of them (patched where they change, not rebuilt)
        self.packed: dict[str, tuple[list[str], list[str]]] = {}
        # local runs: an inotify watch of the outcome directories (dirwatch.DirWatch),
        # False where none can be had, None until the first poll
        self.notify: Any = None
        self.partial: Snapshot | None = None  # from the listing of a poll whose status failed
        # the cluster requeues a batch job lost with its node or preempted (JobRequeue=1
        # and jobs not submitted --no-requeue): the backend sets it from its probe
        self.site_requeues = False
        # requeue=True: requeues seen per element, and since when it sits requeued
        self.requeues: dict[tuple[str, int], int] = {}
        self.requeued_since: dict[tuple[str, int], float] = {}
        # local runs: mtimes of results/ and errors/ just before the last poll listed them
        self.stamp: tuple[int, ...] | None = None
        self.dynamic_records: int | None = None  # records in dynamic/ at the last poll
        # sacct: since when some element has been PENDING (its reason there may stay
        # "None": slurmdbd is not told of a pending job's new reason, squeue is asked)
        self.pending_since: float | None = None
        # local runs: when Slurm's status was last asked
        self.status_at: float | None = None
        # what a job of the run says it does before its task (the run's ``environment``)
        self.note = ""
        # Slurm commands made for the run, by kind: its calls file as the last poll summed
        # it (every process's), and what this process made since
        self.calls_total: dict[str, int] | None = None
        self.calls_since: dict[str, int] = {}
        # on-cluster retries: the guards' records (retries/AJ.N.json) by array job, as
        # the last full poll read them (docs/reliability.md#retries-on-the-cluster)
        self.retries: dict[str, list[dict[str, Any]]] = {}


def listing(text: str) -> tuple[set[str], set[str], set[str]]:
    """Keys with result / error / cancelled records, from ``ls -1 -f results errors``
    (with the names ``AJ_J`` of pack files among the results)."""
    listed: dict[str, list[str]] = {d: [] for d in RunLayout.OUTCOME_DIRS}
    current = listed[RunLayout.OUTCOME_DIRS[0]]
    for line in text.splitlines():
        line = line.strip()
        if line.endswith(":") and line[:-1] in listed:
            current = listed[line[:-1]]
        else:
            current.append(line)
    return classify(listed)


def classify(listed: Mapping[str, Sequence[str]]) -> tuple[set[str], set[str], set[str]]:
    """Keys with result / error / cancelled records from the names in each outcome
    directory (pack files count as results under their name ``AJ_J``)."""
    found: dict[str, set[str]] = {d: set() for d in RunLayout.OUTCOME_DIRS}
    cancelled: set[str] = set()
    for d, names in listed.items():
        for name in names:
            key = RunLayout.key_of(name) or RunLayout.pack_of(name)
            if key is not None:
                found[d].add(key)
            elif (key := RunLayout.cancelled_of(name)) is not None:
                cancelled.add(key)
    results, errors = (found[d] for d in RunLayout.OUTCOME_DIRS)
    return results, errors, cancelled


def requeued_by_slurm(aj: ArrayJob, watch: Watch) -> bool:
    """Whether Slurm queues ``aj``'s elements again after a node failure or a preemption:
    ``requeue=True`` asks it; else the cluster's JobRequeue=1 does it unless the task asked
    ``no_requeue`` (such a NODE_FAIL or PREEMPTED row is waited on, not a failure)."""
    if aj.resources.requeue:
        return True
    return watch.site_requeues and not any(k == "no_requeue" for k, _ in aj.resources.scheduler)


def element_state(
    row: Row | None,
    has_error: bool,
    job_id: str,
    index: int,
    aj: ArrayJob,
    watch: Watch,
    now: float,
    *,
    cross_checked: bool = False,
) -> tuple[str, ElementFailure | None]:
    """An element's state from its status row (None: not listed) and whether it left an
    error file. ``cross_checked``: the other source was asked about it in this poll."""
    element = (aj.id, index)
    if row is None:  # not (yet) listed: the runner's files are the only truth
        if has_error:
            return FAILED, ElementFailure(state="FAILED", job_id=job_id)
        # sacct records a new job within about a second, an array's started elements
        # within ~5 s; between a pending row and its element's own row, sacct lists
        # neither: only a silence longer than the grace counts, and only if the other
        # source (asked once, in a later poll) does not list the element either
        first = watch.unlisted_since.setdefault(element, now)
        if now - first < UNLISTED_GRACE_S:
            return PENDING, None
        if not cross_checked:
            watch.suspects.add(f"{job_id}_{index // aj.pack}")
            return PENDING, None
        source, other = watch.sources
        return FAILED, ElementFailure(
            state="UNKNOWN",
            job_id=job_id,
            reason=f"{source} has not listed it for {now - first:.0f} s, nor {other} when "
            "asked again, and it left no result (it may have left Slurm's memory)",
        )
    watch.unlisted_since.pop(element, None)  # listed: a later silence starts a new grace
    slurm_state = row.state
    if slurm_state == "CANCELLED" and NEVER_SATISFIED not in row.reason:
        row = attrs.evolve(row, reason="")  # squeue's last pending reason (Dependency): noise
    if slurm_state in REQUEUE_STATES and requeued_by_slurm(aj, watch):
        if element not in watch.requeued_since:  # a new requeue (attempt) of this element
            watch.requeued_since[element] = now
            watch.requeues[element] = watch.requeues.get(element, 0) + 1
        if slurm_state in ACTIVE or now - watch.requeued_since[element] < REQUEUE_GRACE_S:
            return PENDING, None
    else:
        watch.requeued_since.pop(element, None)
    attempt = watch.requeues.get(element, 0)
    if attempt:
        row = attrs.evolve(
            row, reason=f"{row.reason} (attempt {attempt + 1}, after {attempt} requeue(s))"
        )
    if slurm_state in ACTIVE:
        if slurm_state == "PENDING" and NEVER_SATISFIED in row.reason:
            return CANCELLED, ElementFailure(
                state="CANCELLED", job_id=job_id, reason=NEVER_SATISFIED
            )
        fix = never_clears(row.reason) if slurm_state == "PENDING" else None
        if fix is not None:
            return FAILED, ElementFailure(
                state="PENDING",
                job_id=job_id,
                reason=f"Slurm will never start it ({row.reason}): {fix}",
            )
        return ACTIVE[slurm_state], None
    if slurm_state == COMPLETED:
        if has_error:
            return FAILED, ElementFailure(state="FAILED", exit_code=row.exit_code, job_id=job_id)
        first = watch.completed_since.setdefault((aj.id, index), now)
        if now - first < NO_RESULT_GRACE_S:
            return RUNNING, None  # its result file is on its way
        return FAILED, ElementFailure(
            state="COMPLETED",
            exit_code=row.exit_code,
            job_id=job_id,
            reason="completed without a result file",
        )
    kind = CANCELLED if slurm_state == "CANCELLED" else FAILED
    return kind, ElementFailure(
        state=slurm_state,
        exit_code=row.exit_code,
        job_id=job_id,
        reason=row.reason,
        node=row.node,
    )


RETRY_MARK = "LZ-RETRY"  # a poll's line: one guard's record (JSON) follows
GUARD_KEY = ".guard"  # job ids: AJ.guard=ID (render.GUARD)
# a guard job that ended in one of these has given up: its array job's lost elements fail
GUARD_GAVE_UP = frozenset(
    {"FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
     "DEADLINE"}
)  # fmt: skip


def parse_retry_records(text: str) -> dict[str, list[dict[str, Any]]]:
    """The guards' records from a poll's ``LZ-RETRY {json}`` lines, by array job and
    attempt (a line that does not parse is skipped: a record being written)."""
    import json

    out: dict[str, list[dict[str, Any]]] = {}
    for line in text.splitlines():
        if not line.startswith(RETRY_MARK + " "):
            continue
        try:
            rec = json.loads(line[len(RETRY_MARK) + 1 :])
        except ValueError:
            continue
        if isinstance(rec, dict) and "array_job" in rec:
            out.setdefault(rec["array_job"], []).append(rec)
    for recs in out.values():
        recs.sort(key=lambda r: r.get("attempt", 0))
    return out


def latest_attempt(
    records: Sequence[Mapping[str, Any]], slurm_index: int, job_id: str, guard: str | None
) -> tuple[str, str | None, int, Mapping[str, Any] | None, bool]:
    """Where Slurm element ``slurm_index`` of a guarded array job stands: the Slurm job of
    its latest attempt, the guard watching that job, its attempt number (1: the first),
    the record of a guard that gave up on it (None if none did), and whether that
    attempt's job has this one element (sacct may list it by its bare id)."""
    attempt, gave_up, alone = 1, None, False
    for rec in records:
        retried = rec.get("retried") or {}
        if slurm_index in retried.get("indices", ()):
            job_id, guard = retried["job_id"], retried.get("guard")
            attempt = rec.get("attempt", attempt) + 1
            alone = len(retried["indices"]) == 1
        elif rec.get("gave_up") and rec.get("watched") == job_id:
            gave_up = rec
    return job_id, guard, attempt, gave_up, alone


def retries_note(records: Mapping[str, Sequence[Mapping[str, Any]]], names: Mapping[str, str]
                 ) -> str:  # fmt: skip
    """One line on the elements guards resubmitted: ``retried on the cluster: train[0]
    attempt 2 (NODE_FAIL on site2; --exclude=site2)``."""
    parts = []
    for aj, recs in sorted(records.items()):
        for rec in recs:
            retried = rec.get("retried")
            if not retried:
                continue
            lost = rec.get("lost", {})
            why = sorted({
                f"{v.get('state')}" + (f" on {v['node']}" if v.get("node") else "")
                for v in lost.values()
            })  # fmt: skip
            req = retried.get("request", {})
            exclude = ",".join(req.get("exclude") or ())
            asked = [f"mem={req['mem_mb']}M" if "mem_mb" in req else "",
                     f"time={req['time_min']}min" if "time_min" in req else "",
                     f"--exclude={exclude}" if exclude else ""]  # fmt: skip
            idx = ",".join(str(i) for i in retried.get("indices", ()))
            parts.append(
                f"{names.get(aj, aj)}[{idx}] attempt {rec.get('attempt', 1) + 1} "
                f"(job {retried.get('job_id')}; {', '.join(why)}"
                + "".join(f"; {a}" for a in asked if a)
                + ")"
            )
    return ("retried on the cluster: " + "; ".join(parts)) if parts else ""
