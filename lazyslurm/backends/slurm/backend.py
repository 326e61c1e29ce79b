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

A busy controller (:mod:`~lazyslurm.backends.slurm.controller`): the probe, the submission
and cancels that fail with Slurm's transient errors are tried again with exponential
backoff and jitter for up to ``unreachable_timeout_s`` (a submission first cancels what
an earlier try may have left in the queue, found by the run's job names); polls already
retry across polls. Every Slurm command made for a run is counted in its ``calls`` file
(:meth:`SlurmBackend.controller_calls`), and ``max_rpc_per_min`` spaces the polls' status
queries out.
"""

from __future__ import annotations

import functools
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
    Accounting,
    ArrayJob,
    BackendBase,
    ElementFailure,
    PackLimits,
    RunHandle,
    Snapshot,
    Start,
    sleep_until_change,
)
from lazyslurm.backends.option import resolve
from lazyslurm.backends.packaging import (
    Packager,
    check_staged,
    environment_note,
    read_missing,
    report_gc,
)
from lazyslurm.backends.packaging.options import PackagingOptions
from lazyslurm.backends.registry import BackendSpec
from lazyslurm.backends.shell import CommandResult, LocalShell, Shell, make_ssh_shell
from lazyslurm.backends.shell.options import SSHOptions
from lazyslurm.backends.slurm.accounting import parse_accounting
from lazyslurm.backends.slurm.accounting import query as accounting_query
from lazyslurm.backends.slurm.controller import (
    CALLS_MARK,
    CALLS_TOTAL_MARK,
    Backoff,
    TokenBucket,
    add_calls,
    count_script,
    parse_calls,
    total_script,
    transient,
)
from lazyslurm.backends.slurm.dirwatch import watch_dirs
from lazyslurm.backends.slurm.facts import (
    CONFIG_KEYS,
    Facts,
    check_resources,
    job_budget,
    probe_script,
    read_probe,
    split_starts,
    start_query_script,
)
from lazyslurm.backends.slurm.feed import (
    FEEDER,
    FedRuns,
    FirstSubmission,
    check_feedable,
    fed_submission,
    over_cap,
    stop_script,
)
from lazyslurm.backends.slurm.options import (
    PROBE_CACHE_S,
    STATUS_SOURCES,
    UNREACHABLE_TIMEOUT_S,
    SlurmOptions,
)
from lazyslurm.backends.slurm.probecache import load_probe, save_probe, slurm_lines
from lazyslurm.backends.slurm.render import (
    cancel_script,
    live_runs_script,
    read_submitted,
    sbatch_flags,
    submission,
)
from lazyslurm.backends.slurm.status import (
    GUARD_GAVE_UP,
    GUARD_KEY,
    INPUT_FAILED,
    PENDING_REASON_CHECK_S,
    PERMANENT_STATUS_ERRORS,
    RETRY_MARK,
    SACCT_FORMAT,
    SQUEUE_FORMAT,
    Row,
    StatusUnavailable,
    Watch,
    classify,
    cross_checked,
    element_state,
    latest_attempt,
    listing,
    parse_retry_records,
    parse_status,
    retries_note,
    with_pending_reasons,
)
from lazyslurm.errors import (
    BackendError,
    ClusterConfigError,
    PackagingError,
    ResourceLimitError,
    RunDirectoryGoneError,
    SSHHostKeyError,
    SubmissionError,
)
from lazyslurm.graph.options import declared
from lazyslurm.graph.resources import DEFAULTABLE, Resources, TaskDefaults
from lazyslurm.planning.cost import ClusterFacts
from lazyslurm.store import INSIDE, ElementKeys, RunLayout, default_workdir, read_private

# DEBUG: each sbatch, sacct, squeue and scancel with its duration; extra fields run_id and
# array_job (and element where one applies) on every line
log = logging.getLogger("lazyslurm.slurm")

__all__ = [
    "SPECS",
    "STATUS_SOURCES",
    "SlurmBackend",
    "SlurmOptions",
    "make_slurm_backend",
]

_WATCH_TICK_S_REMOTE = 0.05  # over SSH: how often the poll's wait looks at the store
_WATCH_TICK_S = 0.02  # local runs: how often wait_for_change looks at the store's directories
_POLL_BUDGET_S = 120.0  # one poll command (beyond its wait) gives up after this long
_QUERY_TIMEOUT_S = 120.0  # one query round trip (sbatch --test-only, sacct)
_PREVIEW_RUN = "preview"  # run id in the --test-only flags (nothing is written)


# local runs: a poll reads only the store (results and errors: the first truth) when Slurm
# was asked less than this long ago. sacct costs 0.1-0.4 s of the CPUs the jobs run on,
# and a poll follows each file that lands; what only Slurm knows (a job killed without a
# record, a dependency never satisfied) is seen at most this late.
_STATUS_EVERY_S = 2.0
_PENDING_MARK = "LZ-PENDING"
_CROSS_MARK = "LZ-CROSS"  # the other source's rows for elements unlisted past the grace
_SKIPPED = "LZ-STATUS-RC=0 skipped"  # the poll's status command was not needed
_HELD = "LZ-STATUS-RC=0 held"  # not asked: max_rpc_per_min left no token for it
# the probe's Slurm commands: scontrol show config, partition, node; sacctmgr twice
_PROBE_CALLS = {"scontrol": 3, "sacctmgr": 2}


class SlurmBackend(FedRuns, BackendBase):
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
        unreachable_timeout_s: float = UNREACHABLE_TIMEOUT_S,
        max_rpc_per_min: float | None = None,
        rpc_burst: int | None = None,
        probe_cache_s: float = PROBE_CACHE_S,
    ) -> None:
        if status not in STATUS_SOURCES:
            msg = f"status must be one of {', '.join(STATUS_SOURCES)}, got {status!r}"
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
            live_runs=live_runs_script(),
        )
        self.unreachable_timeout_s = float(unreachable_timeout_s)
        self.probe_cache_s = float(probe_cache_s)
        self._facts: Facts | None = None  # the one probe's (once per session)
        self._watches: dict[str, Watch] = {}
        self.ships_by_value = True
        self.node = "lazyslurm.backends.slurm.node"  # the compute-node side
        self.stats = {"sbatch": 0, "polls": 0, "submits": 0}
        # max_rpc_per_min: one bucket for every run of this session (the limit is the user's)
        self.max_rpc_per_min, self.rpc_burst = max_rpc_per_min, rpc_burst
        self.bucket = None if max_rpc_per_min is None else TokenBucket(max_rpc_per_min, rpc_burst)
        # Slurm commands this process made outside any run (the probe, previews): by kind
        self.session_calls: dict[str, int] = {}

    # -- one probe per session: configuration, partitions, nodes, limits, interpreter
    @property
    def facts(self) -> Facts:
        """What the cluster is (:mod:`~lazyslurm.backends.slurm.facts`), probed once."""
        if self._facts is None:
            # the packaging's part of the probe: interpreter, modules, staged code
            remote = "" if self.shell.local_files else "the login node (over SSH)"
            backoff = Backoff(self.unreachable_timeout_s)
            while True:
                res = self._run_probe(self.packager.probe_line(self._workdir))
                if not self.stats.get("probe_cached"):
                    self._count(None, _PROBE_CALLS, needed=True)
                try:
                    facts = read_probe(res.stdout, res.stderr, where=remote)
                    break
                except BackendError as exc:  # scontrol failed: a busy controller waits
                    if not transient(str(exc)) or not self._again(backoff, "probe", exc):
                        raise
            if self._max_array_size is None:
                self._max_array_size = min(facts.max_array_size, 10**6)
            if self._status == "auto":
                self._status = "sacct" if facts.accounting else "squeue"
            if self._workdir is None or self._workdir.startswith("~"):
                if facts.home is None:
                    msg = f"cannot find the home directory on the cluster: {res.stdout!r}"
                    raise BackendError(msg)
                rest = (self._workdir or "~/.lazyslurm")[1:].lstrip("/")
                self._workdir = f"{facts.home}/{rest}"
            self.packager.read_probe(res.stdout)
            self._facts = facts
        return self._facts

    def _run_probe(self, more: str) -> CommandResult:
        """The probe's round trip. On this host, its Slurm part comes from the last
        process's probe while slurm.conf is unchanged (:mod:`.probecache`): then only
        the packaging's lines run, if any (nothing for this very interpreter inherited)."""
        if not isinstance(self.shell, LocalShell) or self.probe_cache_s <= 0:
            return self.shell.run(probe_script(more))
        env, slurm = self.shell.env, probe_script()
        kept = load_probe(env, slurm, self.probe_cache_s)
        if kept is not None:
            self.stats["probe_cached"] = 1
            if not more.strip():
                return CommandResult(0, kept, "")
            res = self.shell.run(more)
            return attrs.evolve(res, stdout=kept + res.stdout)
        res = self.shell.run(probe_script(more))
        if res.returncode == 0 and "MaxArraySize" in res.stdout:
            save_probe(env, slurm, slurm_lines(res.stdout, CONFIG_KEYS))
        return res

    def _probe(self) -> None:
        self.facts  # noqa: B018 - probed on first use

    @functools.cached_property
    def site_requeues(self) -> bool:
        """Whether Slurm queues again a batch job lost with its node or preempted, unasked:
        the cluster's ``JobRequeue`` (1 by default) and no ``SBATCH_NO_REQUEUE`` in the
        environment jobs are submitted from (this host's, and the cluster's ``env=``)."""
        if not self.facts.job_requeue:
            return False
        env = dict(os.environ) if isinstance(self.shell, LocalShell) else {}
        env.update(getattr(self.shell, "env", None) or {})  # the shells' own variables
        return not env.get("SBATCH_NO_REQUEUE")

    def cluster_facts(self) -> ClusterFacts:
        """Partitions (defaults, MaxTime, DefMemPerCPU): what worst cases need."""
        return self.facts.cluster

    def expected_starts(self, array_jobs: Sequence[ArrayJob]) -> dict[str, Start]:
        """Slurm's expected start of each array job (``sbatch --test-only`` with its real
        flags, alone: a test has no dependencies), all in one round trip."""
        if not array_jobs:
            return {}
        layout = RunLayout.of(_PREVIEW_RUN, self.workdir)
        flags = {
            aj.id: sbatch_flags(
                attrs.evolve(aj, dependencies=(), after=()),
                run_id=_PREVIEW_RUN,
                layout=layout,
                defaults=self.defaults,
            )
            for aj in array_jobs
        }
        res = self.shell.run(start_query_script(flags), timeout_s=_QUERY_TIMEOUT_S)
        return split_starts(res.stdout)

    def live_runs_script(self) -> str:
        """One squeue of this user's jobs; the run ids in their names (``lz-RUN-...``)."""
        return live_runs_script()

    def accounting(self, handle: RunHandle) -> Accounting:
        """What sacct recorded of each element of the run (one round trip)."""
        if not self.facts.accounting:
            return Accounting(
                note="this cluster keeps no accounting (AccountingStorageType=none): sacct "
                "cannot say what the run used"
            )
        masters = {
            handle.job_ids[aj.id]: aj.id for aj in handle.array_jobs if aj.id in handle.job_ids
        }
        if not masters:
            return Accounting(note="the run has no Slurm job ids (was it submitted?)")
        if any(aj.resources.guarded for aj in handle.array_jobs):
            # on-cluster retries: the jobs the guards resubmitted hold later attempts of
            # the same elements (same indices), oldest first as sacct lists job ids
            for aj_id, recs in self._retry_records(handle.run_id).items():
                for rec in recs:
                    retried = rec.get("retried") or {}
                    if retried.get("job_id"):
                        masters[retried["job_id"]] = aj_id
        res = self.shell.run(accounting_query(list(masters)), timeout_s=_QUERY_TIMEOUT_S)
        return Accounting(parse_accounting(res.stdout, masters))

    def _retry_records(self, run_id: str) -> dict[str, list[dict[str, Any]]]:
        """The guards' records of a run (on-cluster retries), by array job: one command."""
        where = shlex.quote(RunLayout.of(run_id, self.workdir).retries_dir)
        res = self.shell.run(
            f'for f in {where}/*.json; do [ -f "$f" ] && '
            f'printf \'%s %s\\n\' {RETRY_MARK} "$(cat "$f")"; done; true',
            timeout_s=_QUERY_TIMEOUT_S,
        )
        return parse_retry_records(res.stdout)

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

    def pack_limits(self) -> PackLimits:
        """What ``pack="auto"`` must fit: the most Slurm elements one run may queue (half
        of MaxJobCount, which every user shares, and MaxSubmitJobs where accounting
        sets it) and ``time_cap(resources)``, the partition's MaxTime in minutes."""
        facts = self.facts

        def time_cap(resources: Resources) -> int | None:
            part = facts.cluster.partition(resources.with_defaults(self.defaults).partition)
            return part.max_time_min if part is not None else None

        return PackLimits(job_budget(facts.job_limits), time_cap)

    # -- submission
    def check_limits(self, array_jobs: Sequence[ArrayJob]) -> None:
        """Refuse, before anything is submitted, what Slurm would accept but never start:
        a time limit over the partition's MaxTime, or memory or CPUs over its largest node,
        stay pending forever (:class:`~lazyslurm.errors.ResourceLimitError`). (What Slurm
        refuses, such as an unknown partition, it refuses in the all-or-nothing
        submission, with its own message.)"""
        facts = self.facts
        budget = job_budget(facts.job_limits, share=1)
        # a guarded array job (on-cluster retries) queues its guard job beside it
        queued = sum(aj.slurm_size + aj.resources.guarded for aj in array_jobs)
        if budget is not None and queued > budget:  # fed in on the cluster, if it can be
            which = ", ".join(f"{k}={v}" for k, v in sorted(facts.job_limits.items()))
            check_feedable(array_jobs, budget, which)
        if not facts.cluster.partitions:
            return
        for aj in array_jobs:
            asked = aj.effective(self.defaults)
            part = facts.cluster.partition(asked.partition)
            if part is None:
                continue
            limit = asked.timeout_min
            packed = ""
            if limit is not None and aj.pack > 1:  # elements run in turn in one Slurm element
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
                list(facts.nodes),
                {f: getattr(asked, f) for f in ("mem_mb", "cpus_per_task")},
            )

    def start(
        self, run_id: str, array_jobs: Sequence[ArrayJob], files: Mapping[str, bytes]
    ) -> RunHandle:
        self.check_limits(array_jobs)
        layout = RunLayout.of(run_id, self.workdir)
        self._watches[run_id] = Watch()
        fed = self._fed_budget(array_jobs)  # over the submit cap: fed in (feed.py)
        queued = self._queued_now(run_id) if fed is not None else None
        for attempt in (1, 2):
            # code entries the probe saw may have been removed since (clean --code, the
            # code_cache_gb cap of another session): found gone before anything is
            # submitted, they are staged again, once
            prepared = self.packager.prepare(
                self.shell, self.workdir, array_jobs, files, run_dir=layout.root
            )

            def render(budget: int, queued: int | None, launches=prepared.launches) -> Any:
                return fed_submission(
                    array_jobs, run_id=run_id, layout=layout, defaults=self.defaults,
                    launches=launches, budget=budget, queued=queued,
                    timeout_s=self.unreachable_timeout_s,
                    feeder_time_min=self._feeder_time(array_jobs[0]),
                )  # fmt: skip

            first = FirstSubmission.of(array_jobs, fed, queued, render)
            todo = submission(
                array_jobs,
                run_id=run_id,
                layout=layout,
                defaults=self.defaults,
                launches=prepared.launches,
            ) if fed is None else render(fed, queued)  # fmt: skip
            flags = todo.flags
            staged = {**files, **todo.files}
            for sub in layout.SUBDIRS:
                staged[f"{INSIDE.subdir(sub)}/.keep"] = b""
            staged[INSIDE.code_uses] = "".join(f"{n}\n" for n in prepared.uses).encode()
            # one transfer, rooted at the work directory: the run and any code to stage
            inside = RunLayout.of(run_id)  # the run's paths relative to the work directory
            staged = {f"{inside.root}/{k}": v for k, v in staged.items()} | dict(prepared.files)
            then = prepared.before + todo.command
            if prepared.after:  # the code cache's cap, once the run is in the queue
                then += f"\nlz_rc=$?\n[ $lz_rc -ne 0 ] || {{\n{prepared.after}}}\nexit $lz_rc"
            t0 = time.monotonic()
            try:
                res = self.shell.put_files(self.workdir, staged, then=then)
            except BaseException:  # interrupted or lost mid-submission: leave nothing held
                self._cancel_run_by_name(run_id)
                raise
            assert res is not None
            check_staged(self.workdir, res.stderr)  # staged code found not private: refused
            gone = read_missing(res.stderr)
            if not gone:
                break
            self.packager.forget(gone)
            if attempt == 2:
                msg = (
                    f"entries of {self.workdir}/code the run uses ({', '.join(gone)}) were "
                    f"removed while it was being submitted, twice (lazyslurm clean --code, "
                    f"or the code_cache_gb cap of another session?): nothing was submitted; "
                    f"run again"
                )
                raise PackagingError(msg)
        for success in prepared.on_success:  # the staged code is in place now
            success()
        report_gc(self.workdir, res.stdout)
        self.stats["submits"] += 1
        ids = self._submitted(run_id, res, todo.command, flags, array_jobs, first)
        self.stats["sbatch"] += len(array_jobs)
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
        return RunHandle(run_id=run_id, array_jobs=tuple(array_jobs), job_ids=ids)

    def _submitted(
        self,
        run_id: str,
        res: CommandResult,
        command: str,
        flags: Mapping[str, Sequence[str]],
        array_jobs: Sequence[ArrayJob],
        first: FirstSubmission | None = None,
    ) -> dict[str, str]:
        """The job ids the submission printed. Refused over the submit cap, the run is
        fed in under the cap learned (``first``, feed.py), or, when only its feeder was
        refused, waits for room and tries again. When it failed with Slurm's transient
        errors (a busy controller), it is tried again after backoff with jitter, for up to
        ``unreachable_timeout_s``.

        Before each new try, every job named after the run is cancelled: an ``sbatch``
        that timed out may have been accepted all the same, and the failed try's own
        cleanup (``scancel``) may have timed out too. What is found was submitted held and
        never ran (the release is the submission's last step), so cancelling it and
        submitting again is always right, and no job of the run is queued twice. Once a
        retried submission went through, the same search runs once more, sparing the new
        jobs: a request of a failed try that slurmctld took only later (it had queued it
        while stalled) is cancelled too. (The one case where a failed try's jobs may have
        started: a release that timed out after Slurm applied it; they are cancelled before
        the run is submitted again.)"""
        backoff = Backoff(self.unreachable_timeout_s)
        full = Backoff(float("inf"), cap_s=60)  # the submit cap is full: wait for room
        layout = RunLayout.of(run_id, self.workdir)
        retry = f"{cancel_script(run_id, calls_file=layout.calls)} || exit 75\n{command}"
        while True:
            self._count(run_id, parse_calls(res.stdout, CALLS_MARK), needed=True)
            try:
                ids = read_submitted(res.returncode, res.stdout, res.stderr, flags, array_jobs)
            except SubmissionError as exc:
                said = res.stderr if res.returncode != 75 else f"lz-transient {res.stderr}"
                if over_cap(said):  # not an error of the run: "not now"
                    cancel = cancel_script(run_id, calls_file=layout.calls)
                    again = None if first is None else self._refed(run_id, first, cancel, said)
                    if again is not None:
                        res, command = again
                        retry = f"{cancel} || exit 75\n{command}"
                        continue
                    wait = full.next_wait()
                    log.warning(
                        "%s: the submit cap is full (%s): the run waits for room; trying "
                        "again in %.0f s", self.name, said.strip().splitlines()[0], wait or 0,
                    )  # fmt: skip
                    time.sleep(wait or 0)
                    res = self.shell.run(retry)
                    continue
                if not transient(said):
                    raise
                if not self._again(backoff, "submission", exc):
                    self._cancel_run_by_name(run_id)  # nothing of the run may stay held
                    raise SubmissionError(self._gave_up(backoff, "submission", exc)) from exc
            else:
                if backoff.tries:  # a request of a failed try that slurmctld took late
                    sweep = cancel_script(run_id, calls_file=layout.calls, keep=list(ids.values()))
                    self._retried(run_id, sweep, "cancel of an earlier try's jobs")
                return ids
            res = self.shell.run(retry)

    def _again(self, backoff: Backoff, what: str, exc: BaseException) -> bool:
        """Wait before trying ``what`` again after Slurm's transient error ``exc``; False
        (at once) when ``unreachable_timeout_s`` has passed since the first try."""
        wait = backoff.next_wait()
        if wait is None:
            return False
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log.warning(
            "%s: %s failed (%s): Slurm's controller is busy or away; trying again in %.1f s "
            "(try %d, for up to unreachable_timeout_s=%g s)",
            self.name,
            what,
            first,
            wait,
            backoff.tries + 1,
            self.unreachable_timeout_s,
        )
        time.sleep(wait)
        return True

    def _gave_up(
        self,
        backoff: Backoff,
        what: str,
        exc: BaseException,
        after: str = "nothing of the run was left in the queue",
    ) -> str:
        """The message of a ``what`` given up after ``unreachable_timeout_s``."""
        return (
            f"{what} failed: Slurm's controller did not answer for {backoff.elapsed():.0f} s "
            f"({backoff.tries + 1} tries, unreachable_timeout_s={self.unreachable_timeout_s:g}); "
            f"{after}. Slurm said: {exc}"
        )

    def _count(self, run_id: str | None, counts: Mapping[str, int], *, needed: bool) -> None:
        """Count Slurm commands this process made (for ``run_id``, else for the session);
        ``needed`` ones (submit, cancel) take their tokens from ``max_rpc_per_min``'s bucket
        now (the polls' queries took theirs before they were made)."""
        total = sum(counts.values())
        if not total:
            return
        if needed and self.bucket is not None:
            self.bucket.take(total)
        if run_id is None:
            add_calls(self.session_calls, counts)
            return
        add_calls(self._watches.setdefault(run_id, Watch()).calls_since, counts)

    def controller_calls(self, handle: RunHandle) -> dict[str, int] | None:
        """The Slurm commands made for the run so far, by kind (``sbatch``, ``squeue``,
        ``sacct``, ``scontrol``, ``scancel``, ``srun``), by every process: the run's
        ``calls`` file as the last poll summed it, and what this process made since.
        None before the first submission or poll of the run in this process."""
        watch = self._watches.get(handle.run_id)
        if watch is None:
            return None
        if self.shell.local_files:  # the file itself, as it is now (each poll need not sum it)
            try:
                text = read_private(RunLayout.of(handle.run_id, self.workdir).calls).decode()
            except (OSError, UnicodeDecodeError):
                pass
            else:
                return parse_calls(text)
        return add_calls(dict(watch.calls_total or {}), watch.calls_since)

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
            # a busy controller: how long the node side retries, how often it may ask
            "unreachable_timeout_s": self.unreachable_timeout_s,
            "max_rpc_per_min": self.max_rpc_per_min,
            "rpc_burst": self.rpc_burst,
        }

    # -- watching
    def poll(self, handle: RunHandle) -> Snapshot:
        """One poll. Polls only read, so a failed one (slurmctld unreachable, SSH connection
        lost) is retried by the next: meanwhile the last known states are reported, marked
        ``unreachable_since``, for up to ``unreachable_timeout_s``; then BackendError."""
        ids = handle.job_ids
        if FEEDER in ids and any(aj.id not in ids for aj in handle.array_jobs):
            return self._poll_fed(handle)  # over the submit cap: not all submitted yet
        watch = self._watches.setdefault(handle.run_id, Watch())
        started = (time.monotonic(), time.time())
        try:
            snap = self._poll_once(handle, watch)
        except (RunDirectoryGoneError, SSHHostKeyError):
            raise
        except (BackendError, StatusUnavailable) as exc:
            if isinstance(exc, StatusUnavailable) and exc.permanent:
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
        if snap.finished and watch.notify:  # nothing more to wait for
            watch.notify.close()
            watch.notify = False
        return snap

    def _arm(self, watch: Watch, layout: RunLayout) -> None:
        """Before a local poll lists the store: the inotify watch that ends the next
        wait when a file lands (made once per run), emptied of what this poll will see."""
        if watch.notify is None:
            found = watch_dirs([layout.subdir(d) for d in layout.OUTCOME_DIRS])
            watch.notify = found if found is not None else False
        elif watch.notify:
            watch.notify.drain()

    def _unreachable(
        self, handle: RunHandle, watch: Watch, exc: Exception, started: tuple[float, float]
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
        if isinstance(exc, StatusUnavailable) and watch.partial is not None:
            last = watch.partial  # the run's files were listed: results that landed count
        if last is None:
            last = Snapshot(states={aj.id: [PENDING] * aj.size for aj in handle.array_jobs})
        return attrs.evolve(
            last, unreachable_since=watch.unreachable_wall, unreachable_reason=reason
        )

    def _poll_files_only(
        self, handle: RunHandle, watch: Watch, *, held: bool = False
    ) -> Snapshot | None:
        """A poll of a local run from its store alone, with Slurm's rows of the last status
        query, when that was less than ``_STATUS_EVERY_S`` ago (or ``held``: Slurm may not
        be asked now); else None."""
        if not held and (
            watch.status_at is None or time.monotonic() - watch.status_at >= _STATUS_EVERY_S
        ):
            return None
        layout = RunLayout.of(handle.run_id, self.workdir)
        stamp = _dir_stamp(layout)  # taken before the listing: no change is missed
        self._arm(watch, layout)
        try:
            listed = {d: os.listdir(layout.subdir(d)) for d in layout.OUTCOME_DIRS}
            records = [n for n in os.listdir(layout.dynamic_dir) if layout.is_dynamic_record(n)]
        except FileNotFoundError:
            return None  # a run directory gone: the full poll says so
        if len(records) != (watch.dynamic_records or 0):
            return None  # a subgraph appeared: the full poll counts it
        results, errors, cancelled = classify(listed)
        watch.stamp = stamp
        watch.note = _local_note(layout)
        return self._snapshot(handle, watch.rows, results, errors, watch, cancelled=cancelled)

    def _other_source(self) -> str:
        """The source asked about elements the status source has not listed past the grace:
        squeue under sacct; under squeue, sacct where accounting exists, else squeue again."""
        return "sacct" if self.status_source == "squeue" and self.facts.accounting else "squeue"

    def _cross_check(self, suspects: Set[str], calls: str | None = None) -> str:
        """Script lines printing the other source's rows for the arrays of ``suspects``
        (``ID_J``), after a marker, then its exit status. By array, not by element: sacct
        lists a pending element only in its array's collapsed row (``ID_[3-9]``). The query
        is counted in ``calls``, the run's calls file (when given)."""
        q = shlex.quote
        masters = ",".join(sorted({s.split("_")[0] for s in suspects}))
        if self._other_source() == "sacct":
            cmd = f"sacct -X -n -P -j {q(masters)} -o {SACCT_FORMAT}"
        else:
            cmd = f"squeue -h -t all -r -j {q(masters)} -o {q(SQUEUE_FORMAT)}"
        count = count_script(calls, {self._other_source(): 1})
        return f"\necho {_CROSS_MARK}; {cmd} 2>&1; lz_rc=$?; {count}; echo {_CROSS_MARK}-RC=$lz_rc"

    def _poll_once(self, handle: RunHandle, watch: Watch) -> Snapshot:
        if self.shell.local_files:
            snap = self._poll_files_only(handle, watch)
            if snap is not None:
                return snap
        since = watch.pending_since
        ask_squeue = since is not None and time.monotonic() - since >= PENDING_REASON_CHECK_S
        ask_squeue = ask_squeue and self.status_source == "sacct"
        suspects = set(watch.suspects)  # unlisted past the grace: the other source is asked
        # max_rpc_per_min: a query without a token is held (the run's files still count)
        cost = 1 + ask_squeue + bool(suspects)
        held = self.bucket is not None and not self.bucket.try_take(cost)
        if held and self.shell.local_files:
            snap = self._poll_files_only(handle, watch, held=True)
            if snap is not None:
                return snap
        q = shlex.quote
        ids = ",".join(handle.job_ids[aj.id] for aj in handle.array_jobs)
        guarded = [aj for aj in handle.array_jobs if aj.resources.guarded]
        if guarded:  # on-cluster retries: the guards are asked too (and, below, the
            # jobs and guards the guards' records name, read in the same script)
            ids = ",".join([ids] + [handle.job_ids[f"{aj.id}{GUARD_KEY}"] for aj in guarded
                                    if f"{aj.id}{GUARD_KEY}" in handle.job_ids])  # fmt: skip
        layout = RunLayout.of(handle.run_id, self.workdir)
        run_dir = layout.root
        results, errors = (q(layout.subdir(d)) for d in layout.OUTCOME_DIRS)
        grep = q(layout.OUTCOME_GREP)
        more = ""
        if guarded:
            retries = q(layout.retries_dir)
            more = '"${lz_more:+,$lz_more}"'
        if self.status_source == "sacct":
            status_cmd = f"sacct -X -n -P -j {q(ids)}{more} -o {SACCT_FORMAT}"
        else:
            status_cmd = f"squeue -h -t all -j {q(ids)}{more} -o {q(SQUEUE_FORMAT)}"
        if guarded:  # the ids the guards' records name (their retries, the next guards)
            status_cmd = (
                f"lz_more=$(cat {retries}/*.json 2>/dev/null | grep -o "
                "'\"\\(job_id\\|guard\\)\": \"[0-9_]*\"' | grep -o '[0-9][0-9_]*' | "
                "sort -u | paste -sd, -)\n" + status_cmd
            )
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
        calls = layout.calls
        if held:
            status = f"echo {_HELD}\n"
        else:
            status = (
                f'if [ "${{n:-0}}" -ge {total} ] && [ "${{d:-0}}" -le {known} ]; '
                f"then echo {_SKIPPED}; else\n"
                f"{status_cmd}\necho LZ-STATUS-RC=$?\n"
                f"{count_script(calls, {self.status_source: 1})}\nfi\n"
            )
        script = wait + (
            f"n=$(ls -1 -f {results} 2>/dev/null | grep -c {grep})\n"
            f"d=$(ls -1 -f {dyn} 2>/dev/null | grep -c '[.]json$')\n"
            f"{status}"
            f"cd {q(run_dir)} 2>/dev/null || {{ echo LZ-GONE; exit 0; }}\n"
            # what a job does before its task (creating the environment): one stat
            f"[ ! -f {_ENV} ] || echo LZ-ENV $(date +%s) $(head -c 200 {_ENV})\n"
            f"echo LZ-FILES && ls -1 -f {' '.join(layout.OUTCOME_DIRS)}\n"
            # counted after the listing: a record is written before its task's result
            f"echo LZ-DYN=$(ls -1 -f {dyn} 2>/dev/null | grep -c '[.]json$')"
        )
        if guarded:  # the guards' records, a line each
            script += (
                f'\nfor f in {q(INSIDE.retries_dir)}/*.json; do [ -f "$f" ] && '
                f'printf \'%s %s\\n\' {RETRY_MARK} "$(cat "$f")"; done'
            )
        if ask_squeue and not held:
            script += (
                f"\necho {_PENDING_MARK}; squeue -h -r -t PD -j {q(ids)} "
                f"-o {q(SQUEUE_FORMAT)} 2>/dev/null\n{count_script(calls, {'squeue': 1})}"
            )
        if suspects and not held:
            script += self._cross_check(suspects, calls)
        script += f"\n{total_script(calls)}"
        if self.shell.local_files:  # taken before the listing: no change is missed
            watch.stamp = _dir_stamp(layout)
            self._arm(watch, layout)
        t0 = time.monotonic()
        res = self.shell.run(script, timeout_s=budget)
        self.stats["polls"] += 1
        stdout = self._read_calls(handle.run_id, res.stdout)
        skipped = _SKIPPED in stdout  # every result was in: Slurm was not asked
        if skipped and self.bucket is not None:
            self.bucket.give_back(1)
        if log.isEnabledFor(logging.DEBUG):
            took = time.monotonic() - t0
            log.debug(
                "%s (%.3f s%s)",
                status_cmd,
                took,
                ", not run: every result is in"
                if skipped
                else ", not run: no token left (max_rpc_per_min)"
                if held
                else "",
                extra={"run_id": handle.run_id, "array_job": None, "duration_s": took},
            )
        status_text, _, rest = stdout.partition("LZ-STATUS-RC=")
        if "LZ-GONE" in rest.splitlines():
            msg = (
                f"run directory {run_dir} is gone (deleted while the run was going on?): "
                f"its results and errors can no longer be read; the run's jobs were "
                f"cancelled. Submit the graph again"
            )
            self.cancel(handle)
            raise RunDirectoryGoneError(msg)
        env = re.search(r"^LZ-ENV (\d+) (.*)$", rest.split("LZ-FILES", 1)[0], re.MULTILINE)
        watch.note = environment_note(env.group(2), int(env.group(1))) if env else ""
        files = rest.split("LZ-FILES", 1)[-1]
        if RETRY_MARK in files:
            watch.retries = parse_retry_records(files)
            files = "\n".join(ln for ln in files.splitlines() if not ln.startswith(RETRY_MARK))
        files, _, cross_text = files.partition(_CROSS_MARK)
        files, _, pending_text = files.partition(_PENDING_MARK)
        results, errors, cancelled = listing(files)
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
            permanent = any(words in detail for words in PERMANENT_STATUS_ERRORS)
            raise StatusUnavailable(msg, permanent=permanent)
        if held:  # Slurm was not asked: its last rows stand
            watch.partial = None
            return self._snapshot(handle, watch.rows, results, errors, watch, cancelled=cancelled)
        rows = parse_status(status_text, squeue=self.status_source == "squeue")
        if pending_text:
            rows = with_pending_reasons(rows, parse_status(pending_text, squeue=True))
        asked: Set[str] = frozenset()
        if suspects:
            rows, asked = cross_checked(rows, cross_text, suspects, self._other_source())
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

    def _read_calls(self, run_id: str, stdout: str) -> str:
        """Count the Slurm commands a poll's script made, and take the run's calls file's
        sum it printed; ``stdout`` without those lines."""
        lines = stdout.splitlines(keepends=True)
        marked = [ln for ln in lines if ln.startswith(CALLS_MARK)]
        if not marked:
            return stdout
        text = "".join(marked)
        self._count(run_id, parse_calls(text, CALLS_MARK), needed=False)
        if any(ln.startswith(CALLS_TOTAL_MARK + " ") or ln.strip() == CALLS_TOTAL_MARK
               for ln in marked):  # fmt: skip
            watch = self._watches.setdefault(run_id, Watch())
            watch.calls_total = parse_calls(text, CALLS_TOTAL_MARK)
            watch.calls_since = {}
        return "".join(ln for ln in lines if not ln.startswith(CALLS_MARK))

    def _snapshot(
        self,
        handle: RunHandle,
        rows: Mapping[tuple[str, int | None], Row],
        results: set[str],
        errors: set[str],
        watch: Watch,
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
        watch.site_requeues = self.site_requeues
        for aj in handle.array_jobs:
            job_id = handle.job_ids[aj.id]
            if (
                aj.pack > 1
                and type(aj.keys) is ElementKeys
                and not (errors or cancelled)
                and not aj.resources.guarded  # on-cluster retries: element by element
            ):
                # a packed compact map, nothing failed: a state per Slurm element, not
                # per element (its keys are not derived: pack files name the whole pack)
                states[aj.id] = self._pack_states(
                    aj, job_id, rows, results, watch, now, status_known, asked, failures
                )
                continue
            row_states = []
            guard = handle.job_ids.get(f"{aj.id}{GUARD_KEY}") if aj.resources.guarded else None
            records = watch.retries.get(aj.id, [])
            guard_now: str | None = None
            gave_up: Mapping[str, Any] | None = None
            for i, key in enumerate(aj.keys):
                final = watch.final.get((aj.id, i))
                if final is not None:
                    state, failure = final
                elif key in cancelled:
                    state, failure = CANCELLED, INPUT_FAILED
                elif key in results or (
                    aj.pack > 1
                    and RunLayout.pack_name(aj.id, i // aj.pack) in results
                    and key not in errors
                ):  # a pack file: every element of the pack has run; a result if no error
                    state, failure = DONE, None
                else:
                    jid, attempt, single = job_id, 1, aj.slurm_size == 1
                    if guard is not None:  # its latest attempt's job, and who guards it
                        jid, guard_now, attempt, gave_up, alone = latest_attempt(
                            records, i // aj.pack, job_id, guard
                        )
                        single = single if attempt == 1 else alone
                    row = rows.get((jid, i // aj.pack))  # its Slurm element
                    if row is None and single:
                        # sacct first records an array as its bare master id, which
                        # stands for one (unknown) element: usable only for size 1
                        row = rows.get((jid, None))
                    if row is None and not status_known:  # no news: never a grace that ends
                        state, failure = PENDING, None
                    else:
                        state, failure = element_state(
                            row,
                            key in errors,
                            jid,
                            i,
                            aj,
                            watch,
                            now,
                            cross_checked=f"{jid}_{i // aj.pack}" in asked,
                        )
                    if (
                        guard is not None
                        and key not in errors
                        and (state == FAILED or (gave_up is not None and state != DONE))
                    ):
                        state, failure = self._guarded(
                            failure, rows.get((guard_now, None)) if guard_now else None,
                            gave_up, attempt, jid,
                            i // aj.pack,
                        )  # fmt: skip
                if state in (DONE, FAILED, CANCELLED):
                    watch.final[(aj.id, i)] = (state, failure)
                if failure is not None:
                    failures[(aj.id, i)] = failure
                row_states.append(state)
            states[aj.id] = row_states
        note = watch.note
        if watch.retries:
            more = retries_note(watch.retries, {aj.id: aj.name for aj in handle.array_jobs})
            note = f"{note}; {more}" if note and more else note or more
        return Snapshot(states=states, failures=failures, note=note)

    @staticmethod
    def _guarded(
        failure: ElementFailure | None,
        guard_row: Row | None,
        gave_up: Mapping[str, Any] | None,
        attempt: int,
        job_id: str,
        slurm_index: int,
    ) -> tuple[str, ElementFailure | None]:
        """An element of a guarded array job that Slurm says failed, with no error record
        of its own: still PENDING while its guard may resubmit it (the guard has not ended,
        or it ended well and its record is not read yet); FAILED once the guard gave up,
        with the guard's reason."""
        if gave_up is None and (guard_row is None or guard_row.state not in GUARD_GAVE_UP):
            return PENDING, None
        if failure is None:  # Slurm's row not read yet: the guard's record says
            lost = ((gave_up or {}).get("lost") or {}).get(str(slurm_index)) or {}
            failure = ElementFailure(
                state=lost.get("state") or "FAILED", job_id=job_id, node=lost.get("node", "")
            )
        why = (gave_up or {}).get("gave_up") or (
            f"its guard job ended {guard_row.state}" if guard_row is not None else ""
        )
        if failure is not None:
            extra = f"attempt {attempt}; the on-cluster retry gave up: {why}"
            reason = f"{failure.reason} ({extra})" if failure.reason else extra
            failure = attrs.evolve(failure, reason=reason)
        return FAILED, failure

    @staticmethod
    def _pack_states(
        aj: ArrayJob,
        job_id: str,
        rows: Mapping[tuple[str, int | None], Row],
        results: set[str],
        watch: Watch,
        now: float,
        status_known: bool,
        asked: Set[str],
        failures: dict[tuple[str, int], ElementFailure],
    ) -> list[str]:
        """:meth:`_snapshot`'s states of a packed array job with no error and no
        cancelled record in the run: each Slurm element's state, for all its elements
        (the final state kept under its first element's index). The list of the last
        poll is returned as it was when nothing changed, else a copy patched where the
        Slurm elements changed (10 million states are not rebuilt per poll)."""
        per: list[str] = []
        n, k = aj.size, aj.pack
        for j in range(aj.slurm_size):
            first, count = j * k, min(k, n - j * k)
            final = watch.final.get((aj.id, first))
            if final is not None:
                state, failure = final
            elif RunLayout.pack_name(aj.id, j) in results:
                state, failure = DONE, None
            else:
                row = rows.get((job_id, j))
                if row is None and aj.slurm_size == 1:
                    row = rows.get((job_id, None))
                if row is None and not status_known:
                    state, failure = PENDING, None
                else:
                    state, failure = element_state(
                        row,
                        False,
                        job_id,
                        first,
                        aj,
                        watch,
                        now,
                        cross_checked=f"{job_id}_{j}" in asked,
                    )
            if state in (DONE, FAILED, CANCELLED):
                watch.final[(aj.id, first)] = (state, failure)
            if failure is not None:
                for i in range(first, first + count):
                    failures[(aj.id, i)] = failure
            per.append(state)
        last = watch.packed.get(aj.id)
        if last is not None and last[0] == per:
            return last[1]
        if last is None:
            out = []
            for j, state in enumerate(per):
                out.extend([state] * min(k, n - j * k))
        else:
            out = last[1][:]
            for j, (was, now_) in enumerate(zip(last[0], per, strict=True)):
                if was != now_:
                    out[j * k : min(n, (j + 1) * k)] = [now_] * min(k, n - j * k)
        watch.packed[aj.id] = (per, out)
        return out

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
        if watch.notify:  # inotify: woken by the rename that publishes a file
            if _dir_stamp(layout) == watch.stamp:
                watch.notify.wait(timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or _dir_stamp(layout) != watch.stamp:
                return
            time.sleep(min(_WATCH_TICK_S, left))

    def cancel(self, handle: RunHandle) -> None:
        """Cancel the run: its known jobs and every job whose name carries its run id (the
        subgraphs its tasks submitted that no poll has read yet), in one ``scancel``; tried
        again while Slurm's controller is busy (:meth:`_cancelled`)."""
        ids = [handle.job_ids[aj.id] for aj in handle.array_jobs if aj.id in handle.job_ids]
        t0 = time.monotonic()
        if FEEDER in handle.job_ids:  # fed in (feed.py): no feeder submits anything more
            layout = RunLayout.of(handle.run_id, self.workdir)
            self._retried(handle.run_id, stop_script(layout), "stop of the feeders")
        self._cancelled(handle.run_id, ids)
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
        ids = [f"{handle.job_ids[aj]}_{i}" for aj, i in elements if aj in handle.job_ids]
        if not ids:
            return
        calls = RunLayout.of(handle.run_id, self.workdir).calls
        script = (
            f"scancel {' '.join(shlex.quote(i) for i in ids)}; lz_rc=$?\n"
            f"{count_script(calls, {'scancel': 1})}\n(exit $lz_rc)"
        )
        self._retried(handle.run_id, script, "scancel of some elements")

    def _cancelled(
        self, run_id: str, ids: Sequence[str], *, timeout_s: float | None = None
    ) -> None:
        """Cancel ``ids`` and every job named after ``run_id``, trying again (backoff with
        jitter) while Slurm answers with its transient errors, for up to ``timeout_s``
        (default ``unreachable_timeout_s``); then :class:`~lazyslurm.errors.BackendError`."""
        calls = RunLayout.of(run_id, self.workdir).calls
        script = cancel_script(run_id, ids, calls_file=calls)
        self._retried(run_id, script, "cancel", timeout_s=timeout_s)

    def _retried(
        self, run_id: str, script: str, what: str, *, timeout_s: float | None = None
    ) -> CommandResult:
        """Run a script of Slurm commands that may be run again (cancels), counting its
        calls; again after backoff with jitter while it fails with Slurm's transient
        errors, up to ``timeout_s`` (default ``unreachable_timeout_s``)."""
        backoff = Backoff(self.unreachable_timeout_s if timeout_s is None else timeout_s)
        while True:
            res = self.shell.run(script, timeout_s=_QUERY_TIMEOUT_S)
            self._count(run_id, parse_calls(res.stdout, CALLS_MARK), needed=True)
            said = res.stderr if res.returncode != 75 else f"lz-transient {res.stderr}"
            if res.ok or not transient(said):
                return res
            failed = BackendError(f"{what} of run {run_id}: {res.stderr.strip()}")
            if not self._again(backoff, what, failed):
                after = f"the run's jobs may still be queued: `lazyslurm cancel {run_id}` later"
                raise BackendError(self._gave_up(backoff, what, failed, after))

    def _cancel_run_by_name(self, run_id: str) -> None:
        """Cancel every job whose name carries ``run_id`` (ids may never have reached us):
        best effort, for up to 30 s."""
        try:
            self._cancelled(run_id, (), timeout_s=30)
        except Exception:  # best effort: the original error is what matters
            pass

    def by_value_modules(self, resources: Resources, func: Any) -> list[Any]:
        """Modules pickled by value with ``func`` (per the task's packaging mode)."""
        return self.packager.by_value_modules(resources, func)

    def read_files(self, paths: Sequence[str]) -> dict[str, bytes]:
        return self.shell.read_files(self.workdir, paths)

    def close(self) -> None:
        self.shell.close()


_ENV = shlex.quote(INSIDE.environment)  # a job's note, in the run directory


def _local_note(layout: RunLayout) -> str:
    """The run's ``environment`` note, on this host (what a poll over SSH reads there)."""
    try:
        with open(layout.environment, encoding="utf-8", errors="replace") as f:
            return environment_note(f.read(200), time.time())
    except OSError:
        return ""


def _dir_stamp(layout: RunLayout) -> tuple[int, ...]:
    """Modification times of a local run's outcome directories (a file landing changes them)."""
    stamp = []
    for sub in layout.OUTCOME_DIRS:
        try:
            stamp.append(os.stat(layout.subdir(sub)).st_mtime_ns)
        except OSError:
            stamp.append(-1)
    return tuple(stamp)


def make_slurm_backend(
    kind: str,
    *,
    workdir: Any = None,
    max_array_size: int | None = None,
    profile: str | None = None,
    **options: Any,
) -> SlurmBackend:
    """Build the ``slurm`` (subprocess) or ``ssh`` (paramiko) backend from Cluster options
    (those of :class:`SlurmOptions`, the task defaults, packaging and, for ssh, the
    connection's; every default comes from its declaration).

    Task defaults for the whole cluster (``partition``, ``account``, ...) apply where a
    task leaves them unset. ``profile`` (the cluster profile the options came from) is
    named in SSH connection errors.
    """
    own = resolve(SlurmOptions, options)
    defaults = Resources.defaults_from(options)
    packaging = resolve(PackagingOptions, options)
    taken = {*declared(SlurmOptions), *DEFAULTABLE, *declared(PackagingOptions)}
    shell_opts = {k: v for k, v in options.items() if k not in taken}
    wd = None if workdir is None else str(workdir)
    common = {
        "setup": own["setup"],
        "defaults": defaults,
        "max_array_size": max_array_size,
        "status": own["status"],
        "packaging": packaging,
        "unreachable_timeout_s": own["unreachable_timeout_s"],
        "max_rpc_per_min": own["max_rpc_per_min"],
        "rpc_burst": own["rpc_burst"],
        "probe_cache_s": own["probe_cache_s"],
    }
    if kind == "slurm":
        shell: Shell = LocalShell(env=own["env"])
        return SlurmBackend(
            shell,
            name="slurm",
            workdir=wd or str(default_workdir()),
            python=own["python"] or sys.executable,
            **common,
        )
    shell = make_ssh_shell(env=own["env"], profile=profile, **shell_opts)  # paramiko or OpenSSH
    return SlurmBackend(shell, name="ssh", workdir=wd, python=own["python"] or "python3", **common)


def _make(kind: str) -> Any:
    def make(**options: Any) -> SlurmBackend:
        return make_slurm_backend(kind, **options)

    return make


SPECS = (
    BackendSpec(
        "slurm",
        _make("slurm"),
        (SlurmOptions, PackagingOptions, TaskDefaults),
        "Slurm on this host (sbatch, squeue, sacct, scancel)",
    ),
    BackendSpec(
        "ssh",
        _make("ssh"),
        (SlurmOptions, PackagingOptions, TaskDefaults, SSHOptions),
        "Slurm over SSH (paramiko: one round trip per action)",
        remote=True,
    ),
)
