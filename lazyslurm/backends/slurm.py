"""Slurm, on this host (subprocess) or over SSH (paramiko): one backend over a ``Shell``.

Slurm does all the scheduling. Per action, one round trip:
- start: one transfer of the spec files, job scripts and submission script, whose
  execution submits every array job ``--hold`` and releases them together;
- poll: one command for the whole run: ``sacct`` (or ``squeue`` on clusters without
  accounting) plus a listing of the run's result and error files, which are the first
  truth for finished elements (sacct lags by seconds); the status query is skipped once
  every element has its result file. On this host, waiting between polls ends as soon as
  a result or error file lands;
- read_files: one transfer; cancel: one ``scancel`` of the run's jobs and of every job
  named after the run (subgraphs submitted from compute nodes).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence, Set
from typing import Any

import attrs

from lazyslurm.backends.base import (
    CANCELLED,
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    ArrayJob,
    ElementFailure,
    RunHandle,
    Snapshot,
    sleep_until_change,
)
from lazyslurm.backends.option import Option
from lazyslurm.backends.shell import LocalShell, Shell, make_ssh_shell
from lazyslurm.backends.slurm_limits import (
    Node,
    check_resources,
    job_budget,
    job_limits,
    never_clears,
    parse_nodes,
)
from lazyslurm.errors import (
    BackendError,
    ClusterConfigError,
    ResourceLimitError,
    RunDirectoryGoneError,
    SSHHostKeyError,
    SubmissionError,
)
from lazyslurm.graph.resources import SBATCH_OPTIONS, Resources, parse_time
from lazyslurm.packaging import Packager, PackagingOptions, check_staged, packaging_names
from lazyslurm.planning.sbatch import (
    IDS_MARKER,
    SUBMIT_FAILED_MARKER,
    job_script,
    sbatch_flags,
    submit_script,
)
from lazyslurm.store import INSIDE, RunLayout, default_workdir

# DEBUG: each sbatch, sacct, squeue and scancel with its duration; extra fields run_id and
# array_job (and element where one applies) on every line
log = logging.getLogger("lazyslurm.slurm")

__all__ = [
    "OPTIONS",
    "TASK_DEFAULTS",
    "Partition",
    "SlurmBackend",
    "make_slurm_backend",
    "parse_array_ids",
    "parse_partitions",
    "parse_status",
]

# Slurm states grouped by what they mean for us. Anything else is treated as a terminal
# failure, so that waiting never loops forever on a state we do not know.
_ACTIVE = {
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
_COMPLETED = "COMPLETED"
_NO_RESULT_GRACE_S = 15.0  # COMPLETED in Slurm but no result file yet (shared FS lag)
# an element that neither the status source nor the store has listed for this long (each
# listing resets the clock) is asked of the other source once; silent there too: UNKNOWN
_UNLISTED_GRACE_S = 60.0
_NEVER_SATISFIED = "DependencyNeverSatisfied"
# an element of a packed Slurm element whose own input failed: it cancelled itself
_INPUT_FAILED = ElementFailure(state="CANCELLED", reason="an input of it failed")
# with requeue=True these mean "Slurm runs it again": waited on, for up to the grace below
_REQUEUE_STATES = {"PREEMPTED", "NODE_FAIL", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED"}
_REQUEUE_GRACE_S = 300.0  # PREEMPTED/NODE_FAIL that never turns PENDING again: a failure
_WATCH_TICK_S_REMOTE = 0.05  # over SSH: how often the poll's wait looks at the store
_WATCH_TICK_S = 0.02  # local runs: how often wait_for_change looks at the store's directories
_SACCT_FORMAT = "JobID,State,ExitCode,Reason"
_UNREACHABLE_TIMEOUT_S = 600.0  # default of the unreachable_timeout_s option
_POLL_BUDGET_S = 120.0  # one poll command (beyond its wait) gives up after this long


# a status command failing with these words will fail the same way on every retry
_PERMANENT_STATUS_ERRORS = (
    "accounting storage is disabled",
    "command not found",
    "invalid option",
    "unrecognized option",
    "Invalid field",
)


class _StatusUnavailable(Exception):
    """The status query failed (slurmctld unreachable) though the shell worked; not a
    user-facing error (``poll`` turns it into a report or a BackendError)."""

    def __init__(self, msg: str, *, permanent: bool = False) -> None:
        super().__init__(msg)
        self.permanent = permanent


_SQUEUE_FORMAT = "%i|%T|%r"
# under sacct, elements pending this long also get squeue's reason (it may never clear)
_PENDING_REASON_CHECK_S = 5.0
# local runs: a poll reads only the store (results and errors: the first truth) when Slurm
# was asked less than this long ago. sacct costs 0.1-0.4 s of the CPUs the jobs run on,
# and a poll follows each file that lands; what only Slurm knows (a job killed without a
# record, a dependency never satisfied) is seen at most this late.
_STATUS_EVERY_S = 2.0
_PENDING_MARK = "LZ-PENDING"
_CROSS_MARK = "LZ-CROSS"  # the other source's rows for elements unlisted past the grace
_SKIPPED = "LZ-STATUS-RC=0 skipped"  # the poll's status command was not needed


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
class _Row:
    state: str
    exit_code: str = ""
    reason: str = ""


def parse_status(text: str, squeue: bool) -> dict[tuple[str, int | None], _Row]:
    """Rows of ``sacct -X -n -P -o JobID,State,ExitCode,Reason`` or
    ``squeue -h -o '%i|%T|%r'``, keyed by (master id, index or None).

    >>> rows = parse_status("101_0|COMPLETED|0:0|None\\n101_[1-2]|PENDING|0:0|Priority\\n",
    ...                     squeue=False)
    >>> sorted((k, v.state, v.reason) for k, v in rows.items())[1:]
    [(('101', 1), 'PENDING', 'Priority'), (('101', 2), 'PENDING', 'Priority')]
    """
    rows: dict[tuple[str, int | None], _Row] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 3 or not parts[0]:
            continue
        job_id, state, third = parts[0], parts[1], parts[2]
        if "." in job_id:  # a step (sacct without -X)
            continue
        state = state.split()[0] if state else "UNKNOWN"  # "CANCELLED by 0" -> CANCELLED
        if squeue:
            row = _Row(state, reason="" if third == "None" else third)
        else:  # sacct keeps a finished job's last pending reason (JobHeldUser, ...): noise
            reason = parts[3] if len(parts) > 3 and state == "PENDING" else ""
            row = _Row(state, exit_code=third, reason=reason)
        master, indices = parse_array_ids(job_id)
        if indices is None:
            rows[(master, None)] = row
        else:
            for i in indices:
                rows[(master, i)] = row
    return rows


def _with_pending_reasons(
    rows: dict[tuple[str, int | None], _Row], queued: dict[tuple[str, int | None], _Row]
) -> dict[tuple[str, int | None], _Row]:
    """sacct's rows, with squeue's reason for the elements both see PENDING (slurmdbd
    keeps a pending job's first reason, so one that never clears is seen only there).

    >>> rows = parse_status("7_[0-1]|PENDING|0:0|None", squeue=False)
    >>> queued = parse_status("7_1|PENDING|BadConstraints", squeue=True)
    >>> [(k, v.reason) for k, v in sorted(_with_pending_reasons(rows, queued).items())]
    [(('7', 0), 'None'), (('7', 1), 'BadConstraints')]
    """
    out = dict(rows)
    for key, row in queued.items():
        known = rows.get(key) or rows.get((key[0], None))
        if row.state == "PENDING" and row.reason and known is not None:
            if known.state == "PENDING":
                out[key] = attrs.evolve(known, reason=row.reason)
    return out


def _cross_checked(
    rows: dict[tuple[str, int | None], _Row], text: str, suspects: Set[str], source: str
) -> tuple[dict[tuple[str, int | None], _Row], Set[str]]:
    r"""The status rows with the other source's rows (``text``: its output, then
    ``-RC=status``) filling in what they lack, and the suspects that source answered for.

    An answer counts if the command worked, or if squeue found none of the jobs
    ("Invalid job id specified": it forgot them); a failed query answers for none.

    >>> rows = parse_status("7_0|RUNNING|0:0|None", squeue=False)
    >>> out, asked = _cross_checked(rows, "\n7_1|RUNNING|None\n-RC=0\n", {"7_1"}, "squeue")
    >>> sorted((k, v.state) for k, v in out.items()), sorted(asked)
    ([(('7', 0), 'RUNNING'), (('7', 1), 'RUNNING')], ['7_1'])
    >>> _cross_checked(rows, "\nslurm_load_jobs error: Invalid job id specified\n-RC=1\n",
    ...                {"7_1"}, "squeue")[1]
    {'7_1'}
    >>> _cross_checked(rows, "\nsacct: error: Problem talking to the database\n-RC=1\n",
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


@attrs.frozen
class Partition:
    """What we read of a Slurm partition (``scontrol show partition -o``)."""

    name: str
    default: bool
    max_time_min: int | None  # None: unlimited


def parse_partitions(text: str) -> dict[str, Partition]:
    r"""Partitions from ``LZ-PART``-prefixed ``scontrol show partition -o`` lines.

    >>> p = parse_partitions("LZ-PART PartitionName=a Default=YES MaxTime=UNLIMITED\n"
    ...                      "LZ-PART PartitionName=b Default=NO MaxTime=1-00:00:00\n")
    >>> p["a"].default, p["a"].max_time_min, p["b"].max_time_min
    (True, None, 1440)
    """
    out = {}
    for line in text.splitlines():
        if not line.startswith("LZ-PART "):
            continue
        fields = dict(f.split("=", 1) for f in line[8:].split() if "=" in f)
        name = fields.get("PartitionName")
        if not name:
            continue
        max_time = fields.get("MaxTime", "UNLIMITED")
        try:
            minutes = None if max_time in ("UNLIMITED", "INFINITE") else parse_time(max_time)
        except ValueError:
            minutes = None
        out[name] = Partition(name, fields.get("Default") == "YES", minutes)
    return out


class _Watch:
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
        self.rows: dict[tuple[str, int | None], _Row] = {}
        self.last: Snapshot | None = None
        self.unreachable_since: float | None = None  # time.monotonic()
        self.unreachable_wall: float | None = None  # time.time(), for messages
        self.final: dict[tuple[str, int], tuple[str, ElementFailure | None]] = {}
        self.partial: Snapshot | None = None  # from the listing of a poll whose status failed
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


class SlurmBackend:
    """Runs plans on Slurm through a :class:`~lazyslurm.backends.shell.Shell`."""

    def __init__(
        self,
        shell: Shell,
        *,
        name: str = "slurm",
        workdir: str | None = None,
        python: str | None = None,
        setup: Sequence[str] = (),
        defaults: Resources | None = None,
        max_array_size: int | None = None,
        status: str = "auto",
        packaging: PackagingOptions | None = None,
        unreachable_timeout_s: float = _UNREACHABLE_TIMEOUT_S,
    ) -> None:
        if status not in ("auto", "sacct", "squeue"):
            msg = f"status must be 'auto', 'sacct' or 'squeue', got {status!r}"
            raise ClusterConfigError(msg)
        self.name = name
        self.shell = shell
        self._workdir = workdir
        self.python = python or sys.executable
        self.setup = tuple(setup)
        self.defaults = defaults or Resources()
        self._max_array_size = max_array_size
        self._status = status
        self.packager = Packager(
            packaging or PackagingOptions(),
            local=isinstance(shell, LocalShell),
            python=self.python,
            setup=self.setup,
        )
        self.unreachable_timeout_s = float(unreachable_timeout_s)
        self._probed = False
        self._accounting = False  # slurmdbd behind sacct (probed)
        self.partitions: dict[str, Partition] = {}
        self.nodes: list[Node] = []
        self.job_limits: dict[str, int] = {}  # MaxJobCount, MaxSubmitJobs (probed)
        self._watches: dict[str, _Watch] = {}
        self.ships_by_value = True
        self.stats = {"sbatch": 0, "polls": 0, "submits": 0}

    # -- one probe per session: limits, accounting, interpreter
    def _probe(self) -> None:
        if self._probed:
            return
        script = [
            # per-user job limits, where accounting keeps them (else nothing is printed):
            # each sacctmgr asks slurmdbd (~0.2 s), so both run meanwhile, in the background
            "lz_acct=$(mktemp); { "
            "sacctmgr -n -P show assoc where user=$(id -un) format=MaxSubmit 2>/dev/null & "
            "sacctmgr -n -P show qos format=MaxSubmitPU 2>/dev/null; wait; "
            '} > "$lz_acct" 2>/dev/null & lz_acct_pid=$!',
            "scontrol show config 2>&1"
            " | grep -E '^(MaxArraySize|MaxJobCount|AccountingStorageType) '",
            "scontrol show partition -o 2>/dev/null | sed 's/^/LZ-PART /'",
            "scontrol show node -o 2>/dev/null | sed 's/^/LZ-NODE /'",
            "echo LZ-HOME=$HOME",
            self.packager.probe_script(self._workdir),  # interpreter, modules, staged code
            'wait "$lz_acct_pid" 2>/dev/null; sed \'s/^/LZ-MAXSUBMIT=/\' "$lz_acct" 2>/dev/null;'
            ' rm -f "$lz_acct"',
        ]
        res = self.shell.run("\n".join(script))
        config = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", res.stdout, re.MULTILINE))
        if "MaxArraySize" not in config:
            detail = (res.stdout + res.stderr).strip()
            msg = f"cannot read Slurm's configuration (scontrol show config): {detail}"
            raise BackendError(msg)
        if self._max_array_size is None:
            self._max_array_size = min(int(config["MaxArraySize"]), 10**6)
        self.partitions = parse_partitions(res.stdout)
        self.nodes = parse_nodes(res.stdout)
        self.job_limits = job_limits(config, res.stdout)
        none = config.get("AccountingStorageType", "").endswith("/none")
        self._accounting = not none
        if self._status == "auto":
            self._status = "squeue" if none else "sacct"
        home = re.search(r"^LZ-HOME=(/.*)$", res.stdout, re.MULTILINE)
        if self._workdir is None or self._workdir.startswith("~"):
            if home is None:
                msg = f"cannot find the home directory on the cluster: {res.stdout!r}"
                raise BackendError(msg)
            rest = (self._workdir or "~/.lazyslurm")[1:].lstrip("/")
            self._workdir = f"{home.group(1)}/{rest}"
        self.packager.read_probe(res.stdout)
        self._probed = True

    @property
    def workdir(self) -> str:
        self._probe()
        assert self._workdir is not None
        return self._workdir

    @property
    def status_source(self) -> str:
        self._probe()
        return self._status

    def max_array_size(self) -> int:
        self._probe()
        assert self._max_array_size is not None
        return self._max_array_size

    def pack_limits(self) -> tuple[int | None, Any]:
        """What ``pack="auto"`` must fit: the most Slurm elements one run may queue (half
        of MaxJobCount, which every user shares, and MaxSubmitJobs where accounting
        sets it) and ``time_cap(resources)``, the partition's MaxTime in minutes."""
        self._probe()
        budget = job_budget(self.job_limits)

        def time_cap(resources: Resources) -> int | None:
            part = self._partition_of(resources)
            return part.max_time_min if part is not None else None

        return budget, time_cap

    def _partition_of(self, resources: Resources) -> Partition | None:
        name = resources.partition or self.defaults.partition
        if name:
            return self.partitions.get(name)
        return next((p for p in self.partitions.values() if p.default), None)

    # -- submission
    def check_limits(self, array_jobs: Sequence[ArrayJob]) -> None:
        """Refuse, before anything is submitted, what Slurm would accept but never start:
        a time limit over the partition's MaxTime, or memory or CPUs over its largest node,
        stay pending forever (:class:`~lazyslurm.errors.ResourceLimitError`). (What Slurm
        refuses, such as an unknown partition, it refuses in the all-or-nothing
        submission, with its own message.)"""
        self._probe()
        budget = job_budget(self.job_limits, share=1)
        queued = sum(aj.slurm_size for aj in array_jobs)
        if budget is not None and queued > budget:
            which = ", ".join(f"{k}={v}" for k, v in sorted(self.job_limits.items()))
            msg = (
                f"the run would queue {queued} Slurm jobs (array elements) but the cluster "
                f"allows {budget} ({which}): pack elements into fewer Slurm jobs with "
                f"pack=k or pack='auto' (task option or task.map(items, pack=...)); "
                f"nothing was submitted"
            )
            raise ResourceLimitError(msg, option="pack", value=str(queued), limit=str(budget))
        if not self.partitions:
            return
        for aj in array_jobs:
            part = self._partition_of(aj.resources)
            if part is None:
                continue
            limit = aj.resources.timeout_min or self.defaults.timeout_min
            packed = ""
            if limit is not None and aj.pack > 1:  # elements run in turn in one Slurm element
                cpus = aj.resources.cpus_per_task or self.defaults.cpus_per_task or 1
                limit *= -(-aj.pack // cpus)
                packed = f" (packed {aj.pack} to a Slurm element: use a smaller pack)"
            if limit is not None and part.max_time_min is not None and limit > part.max_time_min:
                msg = (
                    f"array job {aj.id} ({aj.name}) asks for time={limit} min{packed} but "
                    f"partition {part.name!r} allows at most {part.max_time_min} min: Slurm "
                    f"would keep it pending forever (PartitionTimeLimit); nothing was submitted"
                )
                raise ResourceLimitError(
                    msg, option="time", value=str(limit), limit=str(part.max_time_min)
                )
            check_resources(
                f"array job {aj.id} ({aj.name})",
                part.name,
                self.nodes,
                {
                    f: getattr(aj.resources, f) or getattr(self.defaults, f)
                    for f in ("mem_mb", "cpus_per_task")
                },
            )

    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJob], files: Mapping[str, bytes]
    ) -> RunHandle:
        self.check_limits(array_jobs)
        layout = RunLayout.of(run_id, self.workdir)
        flags = {
            aj.id: sbatch_flags(aj, run_id=run_id, layout=layout, defaults=self.defaults)
            for aj in array_jobs
        }
        prepared = self.packager.prepare(self.shell, self.workdir, array_jobs, files)
        staged = dict(files)
        for aj in array_jobs:
            launch = prepared.launches[aj.id]
            staged[INSIDE.job_script(aj.id)] = job_script(
                aj,
                run_id=run_id,
                layout=layout,
                python=launch.python,
                setup=launch.setup,
                launcher=launch.launcher,
                runner=None if launch.launcher else launch.runner,
            ).encode()
        staged[INSIDE.submit_script] = submit_script(
            array_jobs, run_id=run_id, layout=layout, flags=flags
        ).encode()
        for sub in layout.SUBDIRS:
            staged[f"{INSIDE.subdir(sub)}/.keep"] = b""
        q = shlex.quote
        # one transfer, rooted at the work directory: the run and any code to stage
        inside = RunLayout.of(run_id)  # the run's paths relative to the work directory
        staged = {f"{inside.root}/{k}": v for k, v in staged.items()} | dict(prepared.files)
        then = prepared.before + f"bash {q(layout.submit_script)}"
        t0 = time.monotonic()
        try:
            res = self.shell.put_files(self.workdir, staged, then=then)
        except BaseException:  # interrupted or lost mid-submission: leave nothing held
            self._cancel_run_by_name(run_id)
            raise
        assert res is not None
        check_staged(self.workdir, res.stderr)  # staged code found not private: refused
        for success in prepared.on_success:  # the staged code is in place now
            success()
        self.stats["submits"] += 1
        if res.returncode != 0 or IDS_MARKER not in res.stdout:
            raise _submission_error(res.stdout, res.stderr, flags, array_jobs)
        self.stats["sbatch"] += len(array_jobs)
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith(IDS_MARKER))
        ids = dict(pair.split("=", 1) for pair in line.split()[1:])
        if log.isEnabledFor(logging.DEBUG):
            took = time.monotonic() - t0
            for j in array_jobs:  # one round trip submitted them all: each shows its total
                log.debug(
                    "sbatch %s: Slurm job %s (%d elements, %.3f s for the %d sbatch calls)",
                    " ".join(flags[j.id]),
                    ids.get(j.id, "?"),
                    j.size,
                    took,
                    len(array_jobs),
                    extra={"run_id": run_id, "array_job": j.id, "duration_s": took},
                )
        self._watches[run_id] = _Watch()
        return RunHandle(run_id=run_id, array_jobs=tuple(array_jobs), job_ids=ids)

    def dynamic_records(self, handle: RunHandle) -> int | None:
        """How many subgraph records (docs/dynamic.md) the run had at the last poll
        (None if unknown): the client reads them only when there are new ones."""
        watch = self._watches.get(handle.run_id)
        return None if watch is None else watch.dynamic_records

    def child_config(self) -> dict[str, Any]:
        """What a task needs to submit a subgraph to this Slurm from a compute node
        (docs/dynamic.md): the cluster's task defaults and limits (no environment: the
        job inherits the one it was submitted with)."""
        return {
            "defaults": self.defaults.as_options(),
            "max_array_size": self._max_array_size,
            "status": self._status,
        }

    # -- watching
    def poll(self, handle: RunHandle) -> Snapshot:
        """One poll. Polls only read, so a failed one (slurmctld unreachable, SSH connection
        lost) is retried by the next: meanwhile the last known states are reported, marked
        ``unreachable_since``, for up to ``unreachable_timeout_s``; then BackendError."""
        watch = self._watches.setdefault(handle.run_id, _Watch())
        started = (time.monotonic(), time.time())
        try:
            snap = self._poll_once(handle, watch)
        except (RunDirectoryGoneError, SSHHostKeyError):
            raise
        except (BackendError, _StatusUnavailable) as exc:
            if isinstance(exc, _StatusUnavailable) and exc.permanent:
                msg = f"{exc} (not an outage: retrying cannot help)"
                raise BackendError(msg) from None
            return self._unreachable(handle, watch, exc, started)
        if watch.unreachable_since is not None:
            log.warning(
                "%s reachable again after %.0f s",
                self.name,
                time.monotonic() - watch.unreachable_since,
            )
            watch.unreachable_since = watch.unreachable_wall = None
        watch.last = snap
        return snap

    def _unreachable(
        self, handle: RunHandle, watch: _Watch, exc: Exception, started: tuple[float, float]
    ) -> Snapshot:
        reason = str(exc).strip() or type(exc).__name__
        now = time.monotonic()
        if watch.unreachable_since is None:  # since the start of the first failed poll
            watch.unreachable_since, watch.unreachable_wall = started
            log.warning(
                "%s unreachable since %s: %s; polls retry for up to %.0f s (unreachable_timeout_s)",
                self.name,
                time.strftime("%H:%M:%S", time.localtime(watch.unreachable_wall)),
                reason,
                self.unreachable_timeout_s,
            )
        since = time.strftime("%H:%M:%S", time.localtime(watch.unreachable_wall))
        if now - watch.unreachable_since > self.unreachable_timeout_s:
            msg = (
                f"{self.name}: the cluster has been unreachable since {since} "
                f"({now - watch.unreachable_since:.0f} s, more than unreachable_timeout_s="
                f"{self.unreachable_timeout_s:g}): {reason}. The run's jobs may still be "
                f"running: re-attach later with Run.attach({handle.run_id!r}) or "
                f"`lazyslurm status {handle.run_id}`"
            )
            raise BackendError(msg) from exc
        last = watch.last
        if isinstance(exc, _StatusUnavailable) and watch.partial is not None:
            last = watch.partial  # the run's files were listed: results that landed count
        if last is None:
            last = Snapshot(states={aj.id: [PENDING] * aj.size for aj in handle.array_jobs})
        return attrs.evolve(
            last, unreachable_since=watch.unreachable_wall, unreachable_reason=reason
        )

    def _poll_files_only(self, handle: RunHandle, watch: _Watch) -> Snapshot | None:
        """A poll of a local run from its store alone, with Slurm's rows of the last status
        query, when that was less than ``_STATUS_EVERY_S`` ago; else None."""
        if watch.status_at is None or time.monotonic() - watch.status_at >= _STATUS_EVERY_S:
            return None
        layout = RunLayout.of(handle.run_id, self.workdir)
        stamp = _dir_stamp(layout)  # taken before the listing: no change is missed
        try:
            listed = {d: os.listdir(layout.subdir(d)) for d in layout.OUTCOME_DIRS}
            records = [n for n in os.listdir(layout.dynamic_dir) if layout.is_dynamic_record(n)]
        except FileNotFoundError:
            return None  # a run directory gone: the full poll says so
        if len(records) != (watch.dynamic_records or 0):
            return None  # a subgraph appeared: the full poll counts it
        results, errors, cancelled = _classify(listed)
        watch.stamp = stamp
        return self._snapshot(handle, watch.rows, results, errors, watch, cancelled=cancelled)

    def _other_source(self) -> str:
        """The source asked about elements the status source has not listed past the grace:
        squeue under sacct; under squeue, sacct where accounting exists, else squeue again."""
        return "sacct" if self.status_source == "squeue" and self._accounting else "squeue"

    def _cross_check(self, suspects: Set[str]) -> str:
        """Script lines printing the other source's rows for the arrays of ``suspects``
        (``ID_J``), after a marker, then its exit status. By array, not by element: sacct
        lists a pending element only in its array's collapsed row (``ID_[3-9]``)."""
        q = shlex.quote
        masters = ",".join(sorted({s.split("_")[0] for s in suspects}))
        if self._other_source() == "sacct":
            cmd = f"sacct -X -n -P -j {q(masters)} -o {_SACCT_FORMAT}"
        else:
            cmd = f"squeue -h -t all -r -j {q(masters)} -o {q(_SQUEUE_FORMAT)}"
        return f"\necho {_CROSS_MARK}; {cmd} 2>&1; echo {_CROSS_MARK}-RC=$?"

    def _poll_once(self, handle: RunHandle, watch: _Watch) -> Snapshot:
        if self.shell.local_files:
            snap = self._poll_files_only(handle, watch)
            if snap is not None:
                return snap
        q = shlex.quote
        ids = ",".join(handle.job_ids[aj.id] for aj in handle.array_jobs)
        layout = RunLayout.of(handle.run_id, self.workdir)
        run_dir = layout.root
        results, errors = (q(layout.subdir(d)) for d in layout.OUTCOME_DIRS)
        grep = q(layout.OUTCOME_GREP)
        if self.status_source == "sacct":
            status_cmd = f"sacct -X -n -P -j {q(ids)} -o {_SACCT_FORMAT}"
        else:
            status_cmd = f"squeue -h -t all -j {q(ids)} -o {q(_SQUEUE_FORMAT)}"
        # when every element already has its result file (the first truth), the status
        # command (sacct: ~0.1 s) has nothing to add: the run's last poll skips it
        total = sum(aj.size if aj.pack == 1 else aj.slurm_size for aj in handle.array_jobs)
        wait = ""
        budget = _POLL_BUDGET_S
        if watch.deferred_wait_s > 0 and watch.files_seen is not None:
            # over SSH the wait between polls happens on the cluster, inside this one
            # round trip: it ends as soon as a result or error file lands
            ticks = max(1, round(watch.deferred_wait_s / _WATCH_TICK_S_REMOTE))
            wait = (
                f"i=0; while [ $(ls -1 -f {results} {errors} 2>/dev/null"
                f" | grep -c {grep}) -le {watch.files_seen} ] && [ $i -lt {ticks} ]; "
                f"do sleep {_WATCH_TICK_S_REMOTE}; i=$((i+1)); done\n"
            )
            budget += watch.deferred_wait_s
            watch.deferred_wait_s = 0.0
        # results of subgraphs that tasks submitted (docs/dynamic.md) land in the same
        # directory: the count proves nothing while a record this handle lacks exists
        known = len({aj.id.rsplit("_", 1)[0] for aj in handle.array_jobs if aj.parent})
        dyn = q(layout.dynamic_dir)
        script = wait + (
            f"n=$(ls -1 -f {results} 2>/dev/null | grep -c {grep})\n"
            f"d=$(ls -1 -f {dyn} 2>/dev/null | grep -c '[.]json$')\n"
            f'if [ "${{n:-0}}" -ge {total} ] && [ "${{d:-0}}" -le {known} ]; '
            f"then echo {_SKIPPED}; else\n"
            f"{status_cmd}\necho LZ-STATUS-RC=$?\nfi\n"
            f"cd {q(run_dir)} 2>/dev/null || {{ echo LZ-GONE; exit 0; }}\n"
            f"echo LZ-FILES && ls -1 -f {' '.join(layout.OUTCOME_DIRS)}\n"
            # counted after the listing: a record is written before its task's result
            f"echo LZ-DYN=$(ls -1 -f {dyn} 2>/dev/null | grep -c '[.]json$')"
        )
        since = watch.pending_since
        ask_squeue = since is not None and time.monotonic() - since >= _PENDING_REASON_CHECK_S
        if self.status_source == "sacct" and ask_squeue:
            script += (
                f"\necho {_PENDING_MARK}; squeue -h -r -t PD -j {q(ids)} "
                f"-o {q(_SQUEUE_FORMAT)} 2>/dev/null"
            )
        suspects = set(watch.suspects)  # unlisted past the grace: the other source is asked
        if suspects:
            script += self._cross_check(suspects)
        if self.shell.local_files:  # taken before the listing: no change is missed
            watch.stamp = _dir_stamp(layout)
        t0 = time.monotonic()
        res = self.shell.run(script, timeout_s=budget)
        self.stats["polls"] += 1
        skipped = _SKIPPED in res.stdout  # every result was in: Slurm was not asked
        if log.isEnabledFor(logging.DEBUG):
            took = time.monotonic() - t0
            log.debug(
                "%s (%.3f s%s)",
                status_cmd,
                took,
                ", not run: every result is in" if skipped else "",
                extra={"run_id": handle.run_id, "array_job": None, "duration_s": took},
            )
        status_text, _, rest = res.stdout.partition("LZ-STATUS-RC=")
        if "LZ-GONE" in rest.splitlines():
            msg = (
                f"run directory {run_dir} is gone (deleted while the run was going on?): "
                f"its results and errors can no longer be read; the run's jobs were "
                f"cancelled. Submit the graph again"
            )
            self.cancel(handle)
            raise RunDirectoryGoneError(msg)
        files = rest.split("LZ-FILES", 1)[-1]
        files, _, cross_text = files.partition(_CROSS_MARK)
        files, _, pending_text = files.partition(_PENDING_MARK)
        results, errors, cancelled = _listing(files)
        watch.files_seen = len(results) + len(errors) + len(cancelled)
        dyn = re.search(r"^LZ-DYN=(\d+)$", files, re.MULTILINE)
        watch.dynamic_records = int(dyn.group(1)) if dyn else None
        if not rest.startswith("0"):
            # slurmctld unreachable (or the status command failed): the listing still
            # counts, with the last status rows known
            watch.partial = self._snapshot(
                handle, watch.rows, results, errors, watch, False, cancelled=cancelled
            )
            detail = res.stderr.strip() or status_text.strip() or "(no output)"
            msg = f"status query ({self.status_source}) failed: {detail}"
            permanent = any(words in detail for words in _PERMANENT_STATUS_ERRORS)
            raise _StatusUnavailable(msg, permanent=permanent)
        rows = parse_status(status_text, squeue=self.status_source == "squeue")
        if pending_text:
            rows = _with_pending_reasons(rows, parse_status(pending_text, squeue=True))
        asked: Set[str] = frozenset()
        if suspects:
            rows, asked = _cross_checked(rows, cross_text, suspects, self._other_source())
            watch.suspects -= suspects  # each is listed now, UNKNOWN, or asked again
        watch.sources = (self.status_source, self._other_source())
        pending = any(row.state == "PENDING" for row in rows.values())
        if not pending:
            watch.pending_since = None
        elif watch.pending_since is None:
            watch.pending_since = time.monotonic()
        watch.rows, watch.partial = rows, None
        if not skipped:
            watch.status_at = time.monotonic()
        return self._snapshot(
            handle, rows, results, errors, watch, cancelled=cancelled, asked=asked
        )

    def _snapshot(
        self,
        handle: RunHandle,
        rows: Mapping[tuple[str, int | None], _Row],
        results: set[str],
        errors: set[str],
        watch: _Watch,
        status_known: bool = True,
        *,
        cancelled: Set[str] = frozenset(),
        asked: Set[str] = frozenset(),
    ) -> Snapshot:
        """Element states from Slurm's rows and the outcome files listed: ``cancelled``
        holds the keys of elements that cancelled themselves (an input failed); ``asked``
        the Slurm ids (``ID_J``) the other source was asked about in this poll."""
        now = time.monotonic()
        states: dict[str, list[str]] = {}
        failures: dict[tuple[str, int], ElementFailure] = {}
        for aj in handle.array_jobs:
            job_id = handle.job_ids[aj.id]
            row_states = []
            for i, key in enumerate(aj.keys):
                final = watch.final.get((aj.id, i))
                if final is not None:
                    state, failure = final
                elif key in cancelled:
                    state, failure = CANCELLED, _INPUT_FAILED
                elif key in results or (
                    aj.pack > 1
                    and RunLayout.pack_name(aj.id, i // aj.pack) in results
                    and key not in errors
                ):  # a pack file: every element of the pack has run; a result if no error
                    state, failure = DONE, None
                else:
                    row = rows.get((job_id, i // aj.pack))  # its Slurm element
                    if row is None and aj.slurm_size == 1:
                        # sacct first records an array as its bare master id, which
                        # stands for one (unknown) element: usable only for size 1
                        row = rows.get((job_id, None))
                    if row is None and not status_known:  # no news: never a grace that ends
                        state, failure = PENDING, None
                    else:
                        state, failure = _element_state(
                            row,
                            key in errors,
                            job_id,
                            i,
                            aj,
                            watch,
                            now,
                            cross_checked=f"{job_id}_{i // aj.pack}" in asked,
                        )
                if state in (DONE, FAILED, CANCELLED):
                    watch.final[(aj.id, i)] = (state, failure)
                if failure is not None:
                    failures[(aj.id, i)] = failure
                row_states.append(state)
            states[aj.id] = row_states
        return Snapshot(states=states, failures=failures)

    def wait_for_change(self, handle: RunHandle, timeout_s: float) -> None:
        """Wait up to ``timeout_s``, waking as soon as a result or error file lands so the
        next poll follows at once. On this host the store's directories are watched here;
        over SSH the wait is folded into the next poll's one round trip, on the cluster."""
        watch = self._watches.get(handle.run_id)
        local = self.shell.local_files
        if watch is not None and watch.unreachable_since is not None:
            sleep_until_change(timeout_s)  # no round trip to fold the wait into
            return
        if watch is not None and not local and watch.files_seen is not None:
            watch.deferred_wait_s = timeout_s
            return
        if watch is None or watch.stamp is None or not local:
            sleep_until_change(timeout_s)
            return
        layout = RunLayout.of(handle.run_id, self.workdir)
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or _dir_stamp(layout) != watch.stamp:
                return
            time.sleep(min(_WATCH_TICK_S, left))

    def cancel(self, handle: RunHandle) -> None:
        """Cancel the run: its known jobs and every job whose name carries its run id (the
        subgraphs its tasks submitted that no poll has read yet), in one ``scancel``."""
        ids = [handle.job_ids[aj.id] for aj in handle.array_jobs if aj.id in handle.job_ids]
        t0 = time.monotonic()
        self.shell.run(_cancel_script(handle.run_id, ids))
        took = time.monotonic() - t0
        log.debug(
            "scancel %s and jobs named lz-%s-* (%.3f s)",
            " ".join(ids),
            handle.run_id,
            took,
            extra={"run_id": handle.run_id, "array_job": None, "duration_s": took},
        )

    def cancel_elements(self, handle: RunHandle, elements: Sequence[tuple[str, int]]) -> None:
        """``scancel`` some elements (``ID_INDEX``); Slurm cancels their dependents."""
        ids = " ".join(
            shlex.quote(f"{handle.job_ids[aj]}_{i}") for aj, i in elements if aj in handle.job_ids
        )
        if ids:
            self.shell.run(f"scancel {ids}")

    def _cancel_run_by_name(self, run_id: str) -> None:
        """Cancel every job whose name carries ``run_id`` (ids may never have reached us)."""
        try:
            self.shell.run(_cancel_script(run_id, ()), timeout_s=30)
        except Exception:  # best effort: the original error is what matters
            pass

    def by_value_modules(self, resources: Resources, func: Any) -> list[Any]:
        """Modules pickled by value with ``func`` (per the task's packaging mode)."""
        return self.packager.by_value_modules(resources, func)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        return self.shell.read_files(self.workdir, paths)

    def close(self) -> None:
        self.shell.close()


def _cancel_script(run_id: str, ids: Sequence[str]) -> str:
    r"""One ``scancel`` of ``ids`` and of every job of this user whose name starts with
    ``lz-RUN_ID-``: the run's own jobs and the subgraphs its tasks submitted from compute
    nodes (same prefix), whether or not a poll has read their records yet.

    >>> s = _cancel_script("r1", ["101", "102"])
    >>> s.startswith("{ printf '%s\\n' 101 102; squeue -h -u"), "lz-r1-*)" in s
    (True, True)
    >>> s.endswith("| sort -u | xargs -r scancel")
    True
    """
    q = shlex.quote
    known = f"printf '%s\\n' {' '.join(q(i) for i in ids)}; " if ids else ""
    return (
        f"{{ {known}squeue -h -u \"$(id -un)\" -o '%F %j' | while read -r id name; "
        f'do case "$name" in {q(f"lz-{run_id}-")}*) echo "$id";; esac; done; }}'
        " | sort -u | xargs -r scancel"
    )


def _dir_stamp(layout: RunLayout) -> tuple[int, ...]:
    """Modification times of a local run's outcome directories (a file landing changes them)."""
    stamp = []
    for sub in layout.OUTCOME_DIRS:
        try:
            stamp.append(os.stat(layout.subdir(sub)).st_mtime_ns)
        except OSError:
            stamp.append(-1)
    return tuple(stamp)


def _listing(text: str) -> tuple[set[str], set[str], set[str]]:
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
    return _classify(listed)


def _classify(listed: Mapping[str, Sequence[str]]) -> tuple[set[str], set[str], set[str]]:
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


def _element_state(
    row: _Row | None,
    has_error: bool,
    job_id: str,
    index: int,
    aj: ArrayJob,
    watch: _Watch,
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
        if now - first < _UNLISTED_GRACE_S:
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
    if slurm_state == "CANCELLED" and _NEVER_SATISFIED not in row.reason:
        row = attrs.evolve(row, reason="")  # squeue's last pending reason (Dependency): noise
    if aj.resources.requeue and slurm_state in _REQUEUE_STATES:
        if element not in watch.requeued_since:  # a new requeue (attempt) of this element
            watch.requeued_since[element] = now
            watch.requeues[element] = watch.requeues.get(element, 0) + 1
        if slurm_state in _ACTIVE or now - watch.requeued_since[element] < _REQUEUE_GRACE_S:
            return PENDING, None
    else:
        watch.requeued_since.pop(element, None)
    attempt = watch.requeues.get(element, 0)
    if attempt:
        row = attrs.evolve(
            row, reason=f"{row.reason} (attempt {attempt + 1}, after {attempt} requeue(s))"
        )
    if slurm_state in _ACTIVE:
        if slurm_state == "PENDING" and _NEVER_SATISFIED in row.reason:
            return CANCELLED, ElementFailure(
                state="CANCELLED", job_id=job_id, reason=_NEVER_SATISFIED
            )
        fix = never_clears(row.reason) if slurm_state == "PENDING" else None
        if fix is not None:
            return FAILED, ElementFailure(
                state="PENDING",
                job_id=job_id,
                reason=f"Slurm will never start it ({row.reason}): {fix}",
            )
        return _ACTIVE[slurm_state], None
    if slurm_state == _COMPLETED:
        if has_error:
            return FAILED, ElementFailure(state="FAILED", exit_code=row.exit_code, job_id=job_id)
        first = watch.completed_since.setdefault((aj.id, index), now)
        if now - first < _NO_RESULT_GRACE_S:
            return RUNNING, None  # its result file is on its way
        return FAILED, ElementFailure(
            state="COMPLETED",
            exit_code=row.exit_code,
            job_id=job_id,
            reason="completed without a result file",
        )
    kind = CANCELLED if slurm_state == "CANCELLED" else FAILED
    return kind, ElementFailure(
        state=slurm_state, exit_code=row.exit_code, job_id=job_id, reason=row.reason
    )


def _submission_error(
    stdout: str,
    stderr: str,
    flags: Mapping[str, Sequence[str]],
    array_jobs: Sequence[ArrayJob] = (),
) -> SubmissionError:
    """The error for a refused submission: which array job, Slurm's words, its options.

    A job can be refused by ``sbatch`` (the marker line names its array job) or only when
    the held jobs are released (``scontrol release`` names the refused Slurm job ids, which
    the marker line maps back to array jobs).
    """
    m = re.search(rf"^{SUBMIT_FAILED_MARKER} (\S+)(.*)$", stderr, re.MULTILINE)
    which = m.group(1) if m else "?"
    slurm_msg = stderr[m.end() :].strip() if m else (stderr or stdout).strip()
    slurm_msg = slurm_msg or "(Slurm printed nothing)"
    names = {aj.id: aj.name for aj in array_jobs}
    refused = [which]
    step = "submission"
    if which == "release" and m is not None:
        step = "release"
        by_slurm_id = {
            sid: aj for aj, _, sid in (p.partition("=") for p in m.group(2).split()) if sid
        }
        said = re.findall(r"^(\d+)(?:_\S*)?:", slurm_msg, re.MULTILINE)
        refused = list(dict.fromkeys(by_slurm_id[s] for s in said if s in by_slurm_id))
        refused = refused or ["?"]
    lines = []
    for aj_id in refused:
        label = f"array job {aj_id}" + (f" ({names[aj_id]})" if aj_id in names else "")
        opts = " ".join(flags.get(aj_id, [])) or "(unknown)"
        lines.append(f"{label}, options: {opts}")
    where = "at release of the held jobs" if step == "release" else "at submission"
    msg = (
        f"Slurm refused {lines[0].split(',')[0]} {where}: {slurm_msg}\n"
        + "\n".join(lines)
        + "\nevery job of this run already submitted was cancelled; nothing is left in the "
        "queue. Change the options above (or the task's resources) and submit again"
    )
    return SubmissionError(msg)


_SLURM = ("slurm", "ssh")
OPTIONS = (  # Cluster("slurm" | "ssh", ...) options of this backend
    Option("python", "str", None, "interpreter on the cluster (slurm: this one)", _SLURM),
    Option("setup", "str_list", (), "shell lines run before each task (module load ...)", _SLURM),
    Option("env", "env", None, "environment variables for every Slurm command", _SLURM),
    Option(
        "unreachable_timeout_s",
        "number",
        _UNREACHABLE_TIMEOUT_S,
        "how long polls retry while slurmctld or the SSH connection is unreachable",
        _SLURM,
        positive=True,
    ),
    Option(
        "status",
        "str",
        "auto",
        "status source: sacct, squeue, or auto (sacct if accounting)",
        _SLURM,
        choices=("auto", "sacct", "squeue"),
    ),
    *(
        Option(
            name, kind, None, f"default {help} for tasks that set none", _SLURM, task_default=True
        )
        for name, kind, help in (
            ("partition", "str", "partition"),
            ("account", "str", "account"),
            ("qos", "str", "QOS"),
            ("time", "str_or_int", "time limit"),
            ("mem", "str_or_int", "memory"),
            ("cpus_per_task", "int", "CPUs per task"),
            ("constraint", "str", "node constraint"),
            ("extra_sbatch", "str_list", "raw sbatch flags"),
            ("ntasks_per_node", "int", "tasks per node"),
            ("gpus_per_node", "str_or_int", "GPUs per node"),
            ("gpus_per_task", "str_or_int", "GPUs per task"),
        )
    ),
    *(  # sbatch's long options by Python name (exclusive, mail_type, mem_per_cpu, ...)
        Option(name, "sbatch", None, f"default --{o.flag} for tasks", _SLURM, task_default=True)
        for name, o in SBATCH_OPTIONS.items()
    ),
)
TASK_DEFAULTS = tuple(o.name for o in OPTIONS if o.task_default)


def make_slurm_backend(
    kind: str,
    *,
    workdir: Any = None,
    max_array_size: int | None = None,
    python: str | None = None,
    setup: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    status: str = "auto",
    unreachable_timeout_s: float = _UNREACHABLE_TIMEOUT_S,
    profile: str | None = None,
    **options: Any,
) -> SlurmBackend:
    """Build the ``slurm`` (subprocess) or ``ssh`` (paramiko) backend from Cluster options.

    Task defaults for the whole cluster (``partition``, ``account``, ...) apply where a
    task leaves them unset. ``profile`` (the cluster profile the options came from) is
    named in SSH connection errors.
    """
    defaults = Resources.from_options(**{k: v for k, v in options.items() if k in TASK_DEFAULTS})
    packaging = PackagingOptions.from_options(options)
    own = {*TASK_DEFAULTS, *packaging_names()}
    shell_opts = {k: v for k, v in options.items() if k not in own}
    wd = None if workdir is None else str(workdir)
    if kind == "slurm":
        shell: Shell = LocalShell(env=env)
        wd = wd or str(default_workdir())
        return SlurmBackend(
            shell,
            name="slurm",
            workdir=wd,
            python=python or sys.executable,
            setup=setup,
            defaults=defaults,
            max_array_size=max_array_size,
            status=status,
            packaging=packaging,
            unreachable_timeout_s=unreachable_timeout_s,
        )
    shell = make_ssh_shell(env=env, profile=profile, **shell_opts)  # paramiko or OpenSSH
    return SlurmBackend(
        shell,
        name="ssh",
        workdir=wd,
        python=python or "python3",
        setup=setup,
        defaults=defaults,
        max_array_size=max_array_size,
        status=status,
        packaging=packaging,
        unreachable_timeout_s=unreachable_timeout_s,
    )
