"""Slurm, on this host (subprocess) or over SSH (paramiko): one backend over a ``Shell``.

Slurm does all the scheduling. Per action, one round trip:
- start: one transfer of the spec files, job scripts and submission script, whose
  execution submits every array job ``--hold`` and releases them together;
- poll: one command for the whole run: ``sacct`` (or ``squeue`` on clusters without
  accounting) plus a listing of the run's result and error files, which are the first
  truth for finished elements (sacct lags by seconds); the status query is skipped once
  every element has its result file. On this host, waiting between polls ends as soon as
  a result or error file lands;
- read_files: one transfer; cancel: one ``scancel``.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
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
from lazyslurm.backends.shell import LocalShell, Shell, SSHShell
from lazyslurm.errors import BackendError, ClusterConfigError, SubmissionError
from lazyslurm.graph.resources import Resources, parse_time
from lazyslurm.planning.sbatch import (
    IDS_MARKER,
    SUBMIT_FAILED_MARKER,
    job_script,
    sbatch_flags,
    submit_script,
)
from lazyslurm.store import INSIDE, RunLayout, default_workdir

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
_UNLISTED_GRACE_S = 60.0  # neither squeue/sacct nor the store knows the element
_NEVER_SATISFIED = "DependencyNeverSatisfied"
_WATCH_TICK_S_REMOTE = 0.05  # over SSH: how often the poll's wait looks at the store
_WATCH_TICK_S = 0.02  # local runs: how often wait_for_change looks at the store's directories
_SACCT_FORMAT = "JobID,State,ExitCode"
_SQUEUE_FORMAT = "%i|%T|%r"


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
    """Rows of ``sacct -X -n -P -o JobID,State,ExitCode`` or
    ``squeue -h -o '%i|%T|%r'``, keyed by (master id, index or None).

    >>> rows = parse_status("101_0|COMPLETED|0:0\\n101_[1-2]|PENDING|0:0\\n", squeue=False)
    >>> sorted((k, v.state) for k, v in rows.items())
    [(('101', 0), 'COMPLETED'), (('101', 1), 'PENDING'), (('101', 2), 'PENDING')]
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
        row = _Row(state, reason=third) if squeue else _Row(state, exit_code=third)
        master, indices = parse_array_ids(job_id)
        if indices is None:
            rows[(master, None)] = row
        else:
            for i in indices:
                rows[(master, i)] = row
    return rows


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
        self.unlisted_since: dict[tuple[str, int], float] = {}
        # remote runs: files seen by the last poll, and a wait the next poll does there
        self.files_seen: int | None = None
        self.deferred_wait_s = 0.0
        self.final: dict[tuple[str, int], tuple[str, ElementFailure | None]] = {}
        # local runs: mtimes of results/ and errors/ just before the last poll listed them
        self.stamp: tuple[int, ...] | None = None
        self.dynamic_records: int | None = None  # records in dynamic/ at the last poll


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
        check_python: bool = False,
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
        self._check_python = check_python
        self._probed = False
        self.partitions: dict[str, Partition] = {}
        self._watches: dict[str, _Watch] = {}
        self.ships_by_value = True
        self.stats = {"sbatch": 0, "polls": 0, "submits": 0}

    # -- one probe per session: limits, accounting, interpreter
    def _probe(self) -> None:
        if self._probed:
            return
        q = shlex.quote
        script = [
            "scontrol show config 2>&1 | grep -E '^(MaxArraySize|AccountingStorageType) '",
            "scontrol show partition -o 2>/dev/null | sed 's/^/LZ-PART /'",
            "echo LZ-HOME=$HOME",
        ]
        if self._check_python:  # in a subshell, after the user's setup lines
            script.append(
                "( "
                + "; ".join(
                    [*self.setup, f"{q(self.python)} -c 'import lazyslurm.runner, cloudpickle'"]
                )
                + " ) 2>&1 "
                "&& echo LZ-PYTHON=ok || echo LZ-PYTHON=missing"
            )
        res = self.shell.run("\n".join(script))
        config = dict(re.findall(r"^(\w+)\s*=\s*(\S+)", res.stdout, re.MULTILINE))
        if "MaxArraySize" not in config:
            detail = (res.stdout + res.stderr).strip()
            msg = f"cannot read Slurm's configuration (scontrol show config): {detail}"
            raise BackendError(msg)
        if self._max_array_size is None:
            self._max_array_size = min(int(config["MaxArraySize"]), 10**6)
        self.partitions = parse_partitions(res.stdout)
        if self._status == "auto":
            none = config.get("AccountingStorageType", "").endswith("/none")
            self._status = "squeue" if none else "sacct"
        home = re.search(r"^LZ-HOME=(/.*)$", res.stdout, re.MULTILINE)
        if self._workdir is None or self._workdir.startswith("~"):
            if home is None:
                msg = f"cannot find the home directory on the cluster: {res.stdout!r}"
                raise BackendError(msg)
            rest = (self._workdir or "~/.lazyslurm")[1:].lstrip("/")
            self._workdir = f"{home.group(1)}/{rest}"
        if self._check_python and "LZ-PYTHON=ok" not in res.stdout:
            detail = res.stdout.split("LZ-HOME=")[-1].split("\n", 1)[-1].strip()
            msg = (
                f"python {self.python!r} on the cluster cannot import lazyslurm and "
                f"cloudpickle: install this lazyslurm there (e.g. `pip install "
                f"lazyslurm-*.whl` built with `pip wheel --no-deps .`, and cloudpickle) or "
                f"pass python=... / setup=[...] to the Cluster. Output: {detail}"
            )
            raise ClusterConfigError(msg)
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

    # -- submission
    def check_limits(self, array_jobs: Sequence[ArrayJob]) -> None:
        """Refuse, before anything is submitted, what Slurm would accept but never start:
        a time limit over the partition's MaxTime stays pending forever. (What Slurm
        refuses, such as an unknown partition, it refuses in the all-or-nothing
        submission, with its own message.)"""
        self._probe()
        if not self.partitions:
            return
        default = next((p for p in self.partitions.values() if p.default), None)
        for aj in array_jobs:
            name = aj.resources.partition or self.defaults.partition
            part = self.partitions.get(name) if name else default
            if part is None:
                continue
            limit = aj.resources.timeout_min or self.defaults.timeout_min
            if limit is not None and part.max_time_min is not None and limit > part.max_time_min:
                msg = (
                    f"array job {aj.id} ({aj.name}) asks for time={limit} min but partition "
                    f"{part.name!r} allows at most {part.max_time_min} min: Slurm would keep it "
                    f"pending forever (PartitionTimeLimit); nothing was submitted"
                )
                raise SubmissionError(msg)

    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJob], files: Mapping[str, bytes]
    ) -> RunHandle:
        self.check_limits(array_jobs)
        layout = RunLayout.of(run_id, self.workdir)
        flags = {
            aj.id: sbatch_flags(aj, run_id=run_id, layout=layout, defaults=self.defaults)
            for aj in array_jobs
        }
        staged = dict(files)
        for aj in array_jobs:
            staged[INSIDE.job_script(aj.id)] = job_script(
                aj, run_id=run_id, layout=layout, python=self.python, setup=self.setup
            ).encode()
        staged[INSIDE.submit_script] = submit_script(
            array_jobs, run_id=run_id, layout=layout, flags=flags
        ).encode()
        for sub in layout.SUBDIRS:
            staged[f"{INSIDE.subdir(sub)}/.keep"] = b""
        q = shlex.quote
        try:
            res = self.shell.put_files(layout.root, staged, then=f"bash {q(layout.submit_script)}")
        except BaseException:  # interrupted or lost mid-submission: leave nothing held
            self._cancel_run_by_name(run_id)
            raise
        assert res is not None
        self.stats["submits"] += 1
        if res.returncode != 0 or IDS_MARKER not in res.stdout:
            raise _submission_error(res.stdout, res.stderr, flags)
        self.stats["sbatch"] += len(array_jobs)
        line = next(ln for ln in res.stdout.splitlines() if ln.startswith(IDS_MARKER))
        ids = dict(pair.split("=", 1) for pair in line.split()[1:])
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
        total = sum(aj.size for aj in handle.array_jobs)
        watch = self._watches.setdefault(handle.run_id, _Watch())
        wait = ""
        if watch.deferred_wait_s > 0 and watch.files_seen is not None:
            # over SSH the wait between polls happens on the cluster, inside this one
            # round trip: it ends as soon as a result or error file lands
            ticks = max(1, round(watch.deferred_wait_s / _WATCH_TICK_S_REMOTE))
            wait = (
                f"i=0; while [ $(ls -1 -f {results} {errors} 2>/dev/null"
                f" | grep -c {grep}) -le {watch.files_seen} ] && [ $i -lt {ticks} ]; "
                f"do sleep {_WATCH_TICK_S_REMOTE}; i=$((i+1)); done\n"
            )
            watch.deferred_wait_s = 0.0
        # results of subgraphs that tasks submitted (docs/dynamic.md) land in the same
        # directory: the count proves nothing while a record this handle lacks exists
        known = len({aj.id.rsplit("_", 1)[0] for aj in handle.array_jobs if "_" in aj.id})
        dyn = q(layout.dynamic_dir)
        script = wait + (
            f"n=$(ls -1 -f {results} 2>/dev/null | grep -c {grep})\n"
            f"d=$(ls -1 -f {dyn} 2>/dev/null | grep -c '[.]json$')\n"
            f'if [ "${{n:-0}}" -ge {total} ] && [ "${{d:-0}}" -le {known} ]; '
            f"then echo LZ-STATUS-RC=0; else\n"
            f"{status_cmd}\necho LZ-STATUS-RC=$?\nfi\n"
            f"cd {q(run_dir)} && echo LZ-FILES && ls -1 -f {' '.join(layout.OUTCOME_DIRS)}\n"
            # counted after the listing: a record is written before its task's result
            f"echo LZ-DYN=$(ls -1 -f {dyn} 2>/dev/null | grep -c '[.]json$')"
        )
        if self.shell.local_files:  # taken before the listing: no change is missed
            watch.stamp = _dir_stamp(layout)
        res = self.shell.run(script)
        self.stats["polls"] += 1
        status_text, _, rest = res.stdout.partition("LZ-STATUS-RC=")
        if not rest.startswith("0"):
            msg = f"status query failed: {res.stderr.strip() or res.stdout.strip()}"
            raise BackendError(msg)
        files = rest.split("LZ-FILES", 1)[-1]
        results, errors = _listing(files)
        watch.files_seen = len(results) + len(errors)
        dyn = re.search(r"^LZ-DYN=(\d+)$", files, re.MULTILINE)
        watch.dynamic_records = int(dyn.group(1)) if dyn else None
        rows = parse_status(status_text, squeue=self.status_source == "squeue")
        return self._snapshot(handle, rows, results, errors, watch)

    def _snapshot(
        self,
        handle: RunHandle,
        rows: Mapping[tuple[str, int | None], _Row],
        results: set[str],
        errors: set[str],
        watch: _Watch,
    ) -> Snapshot:
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
                elif key in results:
                    state, failure = DONE, None
                else:
                    row = rows.get((job_id, i))
                    if row is None and aj.size == 1:
                        # sacct first records an array as its bare master id, which
                        # stands for one (unknown) element: usable only for size 1
                        row = rows.get((job_id, None))
                    state, failure = _element_state(row, key in errors, job_id, i, aj, watch, now)
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
        ids = " ".join(shlex.quote(handle.job_ids[aj.id]) for aj in handle.array_jobs)
        if ids:
            self.shell.run(f"scancel {ids}")

    def _cancel_run_by_name(self, run_id: str) -> None:
        """Cancel every job whose name carries ``run_id`` (ids may never have reached us)."""
        prefix = shlex.quote(f"lz-{run_id}-")
        script = (
            f"squeue -h -o '%i %j' | while read -r id name; do "
            f'case "$name" in {prefix}*) echo "$id";; esac; done | xargs -r scancel'
        )
        try:
            self.shell.run(script, timeout_s=30)
        except Exception:  # best effort: the original error is what matters
            pass

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        return self.shell.read_files(self.workdir, paths)

    def close(self) -> None:
        self.shell.close()


def _dir_stamp(layout: RunLayout) -> tuple[int, ...]:
    """Modification times of a local run's outcome directories (a file landing changes them)."""
    stamp = []
    for sub in layout.OUTCOME_DIRS:
        try:
            stamp.append(os.stat(layout.subdir(sub)).st_mtime_ns)
        except OSError:
            stamp.append(-1)
    return tuple(stamp)


def _listing(text: str) -> tuple[set[str], set[str]]:
    """Keys with result / error files, from ``ls -1 -f results errors``."""
    found: dict[str, set[str]] = {d: set() for d in RunLayout.OUTCOME_DIRS}
    current = found[RunLayout.OUTCOME_DIRS[0]]
    for line in text.splitlines():
        line = line.strip()
        if line.endswith(":") and line[:-1] in found:
            current = found[line[:-1]]
            continue
        key = RunLayout.key_of(line)
        if key is not None:
            current.add(key)
    results, errors = (found[d] for d in RunLayout.OUTCOME_DIRS)
    return results, errors


def _element_state(
    row: _Row | None,
    has_error: bool,
    job_id: str,
    index: int,
    aj: ArrayJob,
    watch: _Watch,
    now: float,
) -> tuple[str, ElementFailure | None]:
    if row is None:  # not (yet) in accounting: the runner's files are the only truth
        if has_error:
            return FAILED, ElementFailure(state="FAILED", job_id=job_id)
        first = watch.unlisted_since.setdefault((aj.id, index), now)
        if now - first < _UNLISTED_GRACE_S:  # sacct records new jobs within about a second
            return PENDING, None
        return FAILED, ElementFailure(
            state="UNKNOWN",
            job_id=job_id,
            reason=f"Slurm has no record of it for {_UNLISTED_GRACE_S:.0f} s and it left no "
            "result (it may have left Slurm's memory)",
        )
    slurm_state = row.state
    if slurm_state in _ACTIVE:
        if slurm_state == "PENDING" and _NEVER_SATISFIED in row.reason:
            return CANCELLED, ElementFailure(
                state="CANCELLED", job_id=job_id, reason=_NEVER_SATISFIED
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
    stdout: str, stderr: str, flags: Mapping[str, Sequence[str]]
) -> SubmissionError:
    m = re.search(rf"{SUBMIT_FAILED_MARKER} (\S+)", stderr)
    which = m.group(1) if m else "?"
    slurm_msg = stderr.split("\n", 1)[1].strip() if m else (stderr or stdout).strip()
    opts = " ".join(flags.get(which, []))
    msg = (
        f"Slurm refused array job {which}: {slurm_msg}\n"
        f"its options: {opts}\n"
        f"every job of this run already submitted was cancelled; nothing is left in the queue"
    )
    return SubmissionError(msg)


_SLURM = ("slurm", "ssh")
OPTIONS = (  # Cluster("slurm" | "ssh", ...) options of this backend
    Option("python", "str", None, "interpreter on the cluster (slurm: this one)", _SLURM),
    Option("setup", "str_list", (), "shell lines run before each task (module load ...)", _SLURM),
    Option("env", "env", None, "environment variables for every Slurm command", _SLURM),
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
        )
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
    **options: Any,
) -> SlurmBackend:
    """Build the ``slurm`` (subprocess) or ``ssh`` (paramiko) backend from Cluster options.

    Task defaults for the whole cluster (``partition``, ``account``, ...) apply where a
    task leaves them unset.
    """
    defaults = Resources.from_options(**{k: v for k, v in options.items() if k in TASK_DEFAULTS})
    shell_opts = {k: v for k, v in options.items() if k not in TASK_DEFAULTS}
    wd = None if workdir is None else str(workdir)
    if kind == "slurm":
        shell: Shell = LocalShell(env=env)
        wd = wd or str(default_workdir())
        # a shared file system: jobs run the very lazyslurm this client runs
        here = str(Path(__file__).resolve().parents[2])  # the directory holding lazyslurm/
        path_line = f"export PYTHONPATH={shlex.quote(here)}${{PYTHONPATH:+:$PYTHONPATH}}"
        return SlurmBackend(
            shell,
            name="slurm",
            workdir=wd,
            python=python or sys.executable,
            setup=(path_line, *setup),
            defaults=defaults,
            max_array_size=max_array_size,
            status=status,
        )
    shell = SSHShell(env=env, **shell_opts)
    return SlurmBackend(
        shell,
        name="ssh",
        workdir=wd,
        python=python or "python3",
        setup=setup,
        defaults=defaults,
        max_array_size=max_array_size,
        status=status,
        check_python=True,
    )
