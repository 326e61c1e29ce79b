"""Submit caps: a run that needs more queued Slurm jobs than the user may queue
(``MaxSubmitJobsPerUser`` of a QOS, ``MaxSubmitJobs`` of an association) is fed in,
tranche by tranche, on the cluster, with the client gone (docs/reliability.md#submit-caps).

- At submission (the client, :func:`fed_submission`): the array jobs that fit now (a
  prefix, in topological order, counting the user's jobs already queued, and one slot
  for the feeder) are submitted as usual (held, released together), with a **feeder**: a
  tiny job (``lz-RUN-feed``) that waits (``afterany``) for the oldest of them. Every job
  script is rendered now; what is left, in order, with its sbatch flags and its
  dependencies by array job id, is in ``feed.json`` (:attr:`RunLayout.feed_plan`).
- On the cluster (:func:`step`, the feeder's job): under the run's lock, count the
  user's queued jobs (``squeue -r -u``: array elements one by one), submit the next array
  jobs in order while they fit (keeping one slot for its successor), each with the
  Slurm ids of its upstreams (read from the run's ``jobids`` file, where each new id is
  written at once), then submit its successor, which waits for the oldest of the run's
  jobs still queued (or ``--begin=now+30``, when none is). Never more than the cap is
  queued by the run, the feeders included.
- ``QOSMaxSubmitJobPerUserLimit`` / ``AssocMaxSubmitJobLimit`` (:func:`over_cap`) mean
  *later*: the client waits and tries again at the first submission; a feeder stops
  and leaves the rest to its successor (whose own submission it retries, with backoff).
  Any other refusal is written to ``feed.err`` (:attr:`RunLayout.feed_error`): the
  client's next poll raises it.
- The client's polls (:func:`read_progress`, :func:`unsubmitted_states`) read the
  ``jobids`` file as it grows: array jobs not submitted yet are PENDING.
- :class:`FedRuns`: the client's side of all this, mixed into
  :class:`~lazyslurm.backends.slurm.backend.SlurmBackend` (whose submission, poll and
  cancel call it); :class:`FirstSubmission`: a cap the probe did not see, learned from
  sbatch's refusal.

The compute-node side reuses :mod:`~lazyslurm.backends.slurm.node`'s Slurm command
helper (counted calls, retried while the controller is busy) and the run's lock of
:mod:`lazyslurm.dynamic` (a subgraph's dependents submitted later wait for it as well).
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import re
import shlex
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from lazyslurm.backends.base import RunHandle, Snapshot
from lazyslurm.backends.packaging.base import Launch
from lazyslurm.backends.shell import CommandResult, Shell
from lazyslurm.backends.slurm.controller import (
    CALLS_MARK,
    Backoff,
    count_script,
    parse_calls,
    transient,
)
from lazyslurm.backends.slurm.facts import job_budget
from lazyslurm.backends.slurm.render import (
    JOB_NAME_PREFIX,
    SUBMIT_FAILED_MARKER,
    Submission,
    resource_flags,
    submission,
    submit_script,
)
from lazyslurm.errors import BackendError, ResourceLimitError, SubmissionError
from lazyslurm.graph.resources import Resources
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.store import INSIDE, RunLayout, atomic_write, parse_job_ids, read_private

__all__ = [
    "CAP_ERRORS",
    "FEEDER",
    "FEEDER_TIME_MIN",
    "RESERVED",
    "FedRuns",
    "FirstSubmission",
    "check_feedable",
    "fed_submission",
    "feeder_flags",
    "first_tranche",
    "main",
    "over_cap",
    "queued_script",
    "read_progress",
    "split",
    "step",
    "stop_script",
    "unsubmitted_states",
]

FEEDER = "feed"  # the feeder's id among a run's job ids and file names (jobs/feed.sh)
RESERVED = 2  # slots a tranche leaves: the feeder that runs and the successor it submits
FEEDER_TIME_MIN = 15  # a feeder's time limit: a step takes seconds, unless Slurm is away
_MARGIN_S = 90  # a feeder stops waiting for Slurm this long before its time limit
FEEDER_MEM_MB = 512
log = logging.getLogger("lazyslurm.slurm")  # the backend's logger (its warnings)
_QUERY_TIMEOUT_S = 120.0  # the client's count of the user's queued jobs
IDLE_BEGIN_S = 30  # no job of the run queued and no room: the next feeder starts this late
_QUEUE_FORMAT = "%A|%F|%t|%j"  # job (element) id, array master id, state, name

# sbatch's reasons for a full per-user (QOS) or per-association submit limit: not an
# error of the run, only "not now" (measured on the test site, Slurm 22.05)
CAP_ERRORS = re.compile(
    r"MaxSubmitJobPerUserLimit|MaxSubmitJobPerAccountLimit|AssocMaxSubmitJobLimit|"
    r"GrpSubmitJobsLimit|MaxSubmitJobsLimit",
    re.IGNORECASE,
)


def over_cap(text: str) -> bool:
    """Whether Slurm refused a submission only because the submit cap is full.

    >>> over_cap("sbatch: error: QOSMaxSubmitJobPerUserLimit\\nsbatch: error: Batch job "
    ...          "submission failed: Job violates accounting/QOS policy")
    True
    >>> over_cap("sbatch: error: Batch job submission failed: Invalid partition name")
    False
    """
    return CAP_ERRORS.search(text) is not None


def split(sizes: Sequence[int], free: int) -> int:
    """How many of ``sizes`` (Slurm jobs of each array job, in submission order) fit in
    ``free`` queue slots: a prefix (an array job needs its upstreams submitted first).

    >>> split([10, 5, 5, 1], 19), split([10, 5, 5, 1], 20), split([10], 9), split([], 5)
    (2, 3, 0, 0)
    """
    n = used = 0
    for size in sizes:
        if used + size > free:
            break
        used += size
        n += 1
    return n


def first_tranche(array_jobs: Sequence[ArrayJob], budget: int, queued: int | None) -> list[
    ArrayJob
]:  # fmt: skip
    """The array jobs the client submits with the feeder: what fits ``budget`` less the
    user's ``queued`` jobs less the feeder (none when ``queued`` is unknown).

    >>> ajs = [ArrayJob(f"aj{n}", "t", ("k",) * 5) for n in range(4)]
    >>> [aj.id for aj in first_tranche(ajs, 20, 3)], first_tranche(ajs, 20, None)
    (['aj0', 'aj1', 'aj2'], [])
    """
    free = budget - queued - 1 if queued is not None else 0
    return list(array_jobs[: split([aj.slurm_size for aj in array_jobs], free)])


@attrs.define
class FirstSubmission:
    """The client's first submission of a run, as the submit cap shapes it: the budget it
    is fed under (None: not fed), what the last try submitted (array job ids and their
    Slurm jobs, in order), and how to render a try (``render(budget, queued)``).

    The probe may not see the cap (a limit ``sacctmgr`` does not show this user, a group
    limit): when sbatch refuses a try over the cap, the cap is at most the user's jobs
    queued now (the try's own are cancelled by then), plus those the try had submitted
    before the refused one, plus the refused one's, less one. The run is then fed under
    that bound (:meth:`shrunk`); a try of the feeder alone that is refused means the cap
    is full with other jobs: the client waits and tries it again.
    """

    array_jobs: Sequence[ArrayJob]
    render: Callable[[int, int | None], Submission]
    budget: int | None
    tried: list[tuple[str, int]]

    @classmethod
    def of(
        cls,
        array_jobs: Sequence[ArrayJob],
        budget: int | None,
        queued: int | None,
        render: Callable[[int, int | None], Submission],
    ) -> FirstSubmission:
        out = cls(array_jobs, render, budget, [])
        out._tried(queued)
        return out

    def _tried(self, queued: int | None) -> None:
        if self.budget is None:
            self.tried = [(aj.id, aj.slurm_size) for aj in self.array_jobs]
        else:
            first = first_tranche(self.array_jobs, self.budget, queued)
            self.tried = [(aj.id, aj.slurm_size) for aj in first] + [(FEEDER, 1)]

    def shrunk(self, queued: int | None, refused: str | None = None) -> Submission | None:
        """After sbatch refused array job ``refused`` of the last try over the cap (None:
        which one is unknown), with ``queued`` jobs of the user in the queue now: the next
        try, fed under the bound learned (see the class docstring); None to try the same
        again later (only the feeder was refused, or the queue could not be counted).
        :class:`~lazyslurm.errors.ResourceLimitError` when an array job can never fit.

        >>> ajs = [ArrayJob(f"aj{n}", "t", ("k",) * 5) for n in range(6)]
        >>> first = FirstSubmission.of(ajs, None, None, lambda b, q: (b, q))
        >>> first.shrunk(3, "aj4"), first.tried   # aj0-3 went in, aj4 not: the cap < 28
        ((27, 3), [('aj0', 5), ('aj1', 5), ('aj2', 5), ('aj3', 5), ('feed', 1)])
        >>> first.shrunk(3), first.budget         # refused again, which one unknown
        ((23, 3), 23)
        >>> first.shrunk(20, "feed"), first.tried  # only the feeder left
        ((23, 20), [('feed', 1)])
        >>> first.shrunk(22) is None              # the cap is full: wait
        True
        """
        if queued is None or sum(n for _, n in self.tried) <= 1:
            return None
        ids = [i for i, _ in self.tried]
        upto = ids.index(refused) + 1 if refused in ids else len(ids)
        bound = queued + sum(n for _, n in self.tried[:upto]) - 1
        self.budget = bound if self.budget is None else min(self.budget, bound)
        check_feedable(
            self.array_jobs,
            self.budget,
            f"at most {self.budget}: sbatch refused a job over the cap with {queued} queued",
        )
        self._tried(queued)
        return self.render(self.budget, queued)


def check_feedable(array_jobs: Sequence[ArrayJob], budget: int, limits: str) -> None:
    """A run over the cap can be fed in only if each array job fits the cap with the two
    feeders' slots (:data:`RESERVED`); else :class:`~lazyslurm.errors.ResourceLimitError`
    naming the fixes, before anything is submitted."""
    guarded = [aj for aj in array_jobs if aj.resources.guarded]
    if guarded:  # feeders submit array jobs, not their guards: not both, yet
        aj = guarded[0]
        msg = (
            f"the run would queue more Slurm jobs than the cluster lets you queue "
            f"({budget}: {limits}), and array job {aj.id} ({aj.name}) retries on the cluster "
            f"(retries, requeue, on_oom or on_timeout: a guard job per array job). A run "
            f"fed in under the cap cannot retry on the cluster yet: drop those options for "
            f"this run, or pack elements into fewer Slurm jobs (pack='auto') so that it "
            f"fits; nothing was submitted"
        )
        raise ResourceLimitError(msg, option="retries", value=str(len(guarded)), limit=str(budget))
    room = budget - RESERVED
    big = [aj for aj in array_jobs if aj.slurm_size > room]
    if not big:
        return
    aj = big[0]
    room_text = f"at most {room}" if room > 0 else "none"
    msg = (
        f"array job {aj.id} ({aj.name}) would queue {aj.slurm_size} Slurm jobs (array "
        f"elements) at once, but the cluster lets you queue {budget} ({limits}): a run over "
        f"that limit is fed in a few array jobs at a time, and each must fit it with 2 "
        f"slots for the feeder jobs ({room_text}). Cut arrays smaller with "
        f"Cluster(..., max_array_size={max(room, 1)}), or pack elements into fewer Slurm "
        f"jobs with pack=k or pack='auto'; nothing was submitted"
    )
    raise ResourceLimitError(msg, option="pack", value=str(aj.slurm_size), limit=str(room))


def stop_script(layout: RunLayout) -> str:
    """Shell that stops a fed run's feeders for good (before its jobs are cancelled): the
    ``feed.stop`` file, written under the run's lock (``flock``, as the feeders take it),
    so no feeder is halfway through a step when the cancel comes (one waited for, up to
    120 s).

    >>> "flock -w 120" in stop_script(RunLayout("/w/runs/r1"))
    True
    """
    q = shlex.quote
    lock, stop = q(f"{layout.dynamic_dir}/.lock"), q(layout.feed_stop)
    write = f"(umask 077; echo cancelled > {stop})"
    return (
        f"if command -v flock >/dev/null 2>&1; then flock -w 120 {lock} sh -c "
        f"{q(write)} || {write}; else {write}; fi"
    )


def queued_script() -> str:
    """Shell printing how many Slurm jobs this user has queued (array elements counted one
    by one, as the submit limits count them)."""
    return (
        'lz_q=$(squeue -h -r -u "$(id -un)" -o %A) && '
        '{ if [ -z "$lz_q" ]; then echo 0; else printf \'%s\\n\' "$lz_q" | wc -l; fi; }'
    )


def feeder_flags(
    run_id: str, layout: RunLayout, like: Resources | None, time_min: int = FEEDER_TIME_MIN
) -> list[str]:
    """The sbatch flags of a feeder job: small, requeued if its node fails (a lost feeder
    would leave the rest of the run unsubmitted), in the partition, account and QOS of
    ``like`` (the run's first array job, the cluster's defaults filled in: the QOS whose
    limits the run counts against), with a time limit of ``time_min``.

    >>> feeder_flags("r1", RunLayout("/w/runs/r1"), None)[:2]
    ['--job-name=lz-r1-feed', '--output=/w/runs/r1/logs/feed_%j.out']
    """
    d = like or Resources()
    r = Resources(
        timeout_min=time_min,
        mem_mb=FEEDER_MEM_MB,
        cpus_per_task=1,
        partition=d.partition,
        account=d.account,
        qos=d.qos,
    )
    logs = layout.subdir("logs").replace("%", "%%")
    return [
        f"--job-name={JOB_NAME_PREFIX}{run_id}-{FEEDER}",
        f"--output={logs}/{FEEDER}_%j.out",
        f"--error={logs}/{FEEDER}_%j.err",
        "--requeue",
        *resource_flags(r),
    ]


def _feeder_script(run_id: str, layout: RunLayout, start: Launch) -> str:
    """The feeder's job script: the runner's interpreter, setup lines and launcher,
    running this module's :func:`main` on ``RUN_DIR`` (lazyslurm from the
    directory the runner is started from, when it is started by path)."""
    q = shlex.quote
    lines = ["#!/bin/bash", f"# lazyslurm run {run_id}: feed the rest of the run in", *start.setup]
    if start.runner and not start.launcher:
        root = os.path.dirname(os.path.dirname(os.path.dirname(start.runner)))
        lines.append(f"export PYTHONPATH={q(root)}${{PYTHONPATH:+:$PYTHONPATH}}")
    # -c, not -m: the package's __init__ imports this module first (runpy would warn)
    code = f"import sys; from {__name__} import main; sys.exit(main())"
    words = [*start.launcher, start.python, "-P", "-c", code, layout.root]
    lines += ["exec " + " ".join(q(w) for w in words), ""]
    return "\n".join(lines)


def fed_submission(
    array_jobs: Sequence[ArrayJob],
    *,
    run_id: str,
    layout: RunLayout,
    defaults: Resources | None,
    launches: Mapping[str, Launch],
    budget: int,
    queued: int | None,
    timeout_s: float,
    feeder_time_min: int = FEEDER_TIME_MIN,
) -> Submission:
    """:func:`~lazyslurm.backends.slurm.render.submission` of a run over the cap: every
    job script, the first tranche (what fits ``budget`` less the ``queued`` jobs of this
    user, less the feeder; none when ``queued`` is unknown) and the feeder, all or nothing;
    the rest in ``feed.json``. ``feeder_time_min``: the feeders' time limit (at most the
    partition's MaxTime: a feeder that can never start would stop the run)."""
    todo = submission(
        array_jobs, run_id=run_id, layout=layout, defaults=defaults, launches=launches
    )
    first = first_tranche(array_jobs, budget, queued)
    fflags = feeder_flags(run_id, layout, array_jobs[0].effective(defaults), feeder_time_min)
    after = (("afterany", first[0].id),) if first else ()
    feeder = ArrayJob(FEEDER, FEEDER, (FEEDER,), dependencies=after)
    script = submit_script(
        [*first, feeder],
        run_id=run_id,
        layout=layout,
        flags={**todo.flags, FEEDER: fflags},
    )
    plan = {
        "version": 1,
        "run_id": run_id,
        "cap": budget,
        "unreachable_timeout_s": timeout_s,
        "feeder_time_min": feeder_time_min,
        "jobs": [
            {
                "id": aj.id,
                "size": aj.slurm_size,
                "deps": [list(d) for d in aj.dependencies],
                "flags": list(todo.flags[aj.id]),
            }
            for aj in array_jobs
        ],
        "feeder": fflags,
    }
    start = launches[array_jobs[0].id]
    files = dict(todo.files)
    files[INSIDE.submit_script] = script.encode()
    files[INSIDE.job_script(FEEDER)] = _feeder_script(run_id, layout, start).encode()
    files[INSIDE.feed_plan] = json.dumps(plan).encode()
    return attrs.evolve(todo, files=files)


# --------------------------------------------------------------------------- client: backend


class FedRuns:
    """The client's side of feeding, mixed into
    :class:`~lazyslurm.backends.slurm.backend.SlurmBackend` (which has every attribute
    named below): whether a run is fed, the user's queued jobs, a submission tried again
    under a cap learned from sbatch's refusal, and the poll of a run not all submitted."""

    name: str
    shell: Shell
    defaults: Resources
    facts: Any  # facts.Facts: the one probe's
    workdir: str
    poll: Callable[[RunHandle], Snapshot]
    _count: Callable[..., None]
    _cancel_run_by_name: Callable[[str], None]

    def _refed(
        self, run_id: str, first: FirstSubmission, cancel: str, said: str
    ) -> tuple[CommandResult, str] | None:
        """After a refusal over the submit cap (``said``: the submission's stderr): the run
        submitted again, fed in under the cap learned (its result and command), or None
        (wait and try the same again)."""
        refused = re.search(rf"^{SUBMIT_FAILED_MARKER} (\S+)", said, re.MULTILINE)
        try:
            todo = first.shrunk(self._queued_now(run_id), refused and refused.group(1))
        except ResourceLimitError:
            self._cancel_run_by_name(run_id)
            raise
        if todo is None:
            return None
        inside = RunLayout.of(run_id)
        log.warning(
            "%s: sbatch refused run %s over the submit cap: it is fed in, at most %d Slurm "
            "jobs queued at once", self.name, run_id, first.budget,
        )  # fmt: skip
        staged = {f"{inside.root}/{k}": v for k, v in todo.files.items()}
        # what the refused try may have left is cancelled first (by the run's job names)
        then = f"{cancel} || exit 75\n{todo.command}"
        res = self.shell.put_files(self.workdir, staged, then=then)
        assert res is not None
        return res, todo.command

    def _feeder_time(self, first: ArrayJob) -> int:
        """A feeder's time limit: FEEDER_TIME_MIN, or less where the partition of the run's
        first array job (the feeders') allows less."""
        part = self.facts.cluster.partition(first.effective(self.defaults).partition)
        cap = part.max_time_min if part is not None else None
        return max(1, min(FEEDER_TIME_MIN, cap)) if cap is not None else FEEDER_TIME_MIN

    def _fed_budget(self, array_jobs: Sequence[ArrayJob]) -> int | None:
        """The submit cap a run over it is fed in under (feed.py), None for a run that fits."""
        budget = job_budget(self.facts.job_limits, share=1)
        queued = sum(aj.slurm_size for aj in array_jobs)
        return budget if budget is not None and queued > budget else None

    def _queued_now(self, run_id: str) -> int | None:
        """How many Slurm jobs this user has queued now (one squeue); None if unknown."""
        res = self.shell.run(
            f"{queued_script()}; {count_script(None, {'squeue': 1})}", timeout_s=_QUERY_TIMEOUT_S
        )
        self._count(run_id, parse_calls(res.stdout, CALLS_MARK), needed=True)
        first = res.stdout.strip().splitlines()[:1]
        return int(first[0]) if res.ok and first and first[0].strip().isdigit() else None

    def _poll_fed(self, handle: RunHandle) -> Snapshot:
        """A poll of a run fed in under the submit cap (feed.py): the ``jobids`` file as
        the feeders grew it (the handle keeps the new ids), then the submitted array
        jobs' poll; the others are PENDING. What stopped the feeding is raised."""
        inside = RunLayout.of(handle.run_id)
        try:
            files = self.shell.read_files(self.workdir, [inside.jobids, inside.feed_error])
        except BackendError:
            files = {}  # the poll below says how the cluster is unreachable
        ids, error = read_progress(files, inside)
        if error:
            msg = (
                f"run {handle.run_id} is over the submit cap and its feeder stopped: {error}\n"
                f"the jobs already queued go on; cancel them with `lazyslurm cancel "
                f"{handle.run_id}`"
            )
            raise SubmissionError(msg)
        new = {k: v for k, v in ids.items() if k not in handle.job_ids}
        if new and isinstance(handle.job_ids, dict):
            handle.job_ids.update(new)  # the Run's handle: cancel and accounting see them
        ids = {**handle.job_ids, **new}
        known = tuple(aj for aj in handle.array_jobs if aj.id in ids)
        pending = unsubmitted_states(handle.array_jobs, ids)
        if not known:
            return Snapshot(states=pending)
        snap = self.poll(attrs.evolve(handle, array_jobs=known, job_ids=ids))
        return attrs.evolve(snap, states={**snap.states, **pending})


# --------------------------------------------------------------------------- client: polls


def read_progress(files: Mapping[str, bytes], layout: RunLayout) -> tuple[dict[str, str], str]:
    """From the run's ``jobids`` and ``feed.err`` (as read, relative to the work directory
    or absolute as in ``layout``): the Slurm id of each array job submitted so far, and
    why feeding stopped (empty while it goes on)."""
    ids = parse_job_ids(files.get(layout.jobids, b"").decode(errors="replace"))
    ids.pop(FEEDER, None)
    return ids, files.get(layout.feed_error, b"").decode(errors="replace").strip()


def unsubmitted_states(array_jobs: Sequence[ArrayJob], ids: Mapping[str, str]) -> dict[
    str, list[str]
]:  # fmt: skip
    """PENDING for every element of an array job the feeder has not submitted yet."""
    from lazyslurm.backends.base import PENDING

    return {aj.id: [PENDING] * aj.size for aj in array_jobs if aj.id not in ids}


# --------------------------------------------------------------------------- the feeder


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def _write_ids(layout: RunLayout, ids: Mapping[str, str]) -> None:
    atomic_write(layout.jobids, (" ".join(f"{k}={v}" for k, v in ids.items()) + "\n").encode())


def _queue(layout: RunLayout, timeout_s: float) -> list[tuple[str, str, str, str]] | None:
    """This user's queued jobs, one row per array element: ``(id, master id, state,
    name)``; None when squeue kept failing."""
    from lazyslurm.backends.slurm.node import _slurm

    res = _slurm(["squeue", "-h", "-r", "-u", _user(), "-o", _QUEUE_FORMAT], layout, timeout_s)
    if res.returncode != 0:
        return None
    rows = []
    for line in res.stdout.splitlines():
        parts = line.strip().split("|", 3)
        if len(parts) == 4:
            rows.append((parts[0], parts[1], parts[2], parts[3]))
    return rows


def _sbatch(
    argv: list[str],
    layout: RunLayout,
    timeout_s: float,
    find: Callable[[], str | None] = lambda: None,
) -> tuple[str | None, str]:
    """One sbatch (``--parsable``): ``(job id, "")``, or ``(None, Slurm's words)``. Slurm's
    transient errors are tried again with backoff for up to ``timeout_s``, each time after
    ``find()`` (the job by its name: an sbatch that timed out may have been taken) found
    nothing; a cap refusal is returned at once."""
    from lazyslurm.backends.slurm.node import _slurm

    backoff = Backoff(max(timeout_s, 0.0))
    while True:
        res = _slurm(argv, layout, 0)
        if res.returncode == 0 and res.stdout.strip():
            return res.stdout.strip().split(";")[0], ""
        said = res.stderr.strip() or f"exit {res.returncode}"
        if over_cap(said) or not transient(said) or not backoff.sleep():
            return None, said
        taken = find()
        if taken is not None:
            return taken, ""


def _finder(
    layout: RunLayout, name: str, *, pending: bool = False, but: str | None = None
) -> Callable[[], str | None]:
    """A search of the queue for a job whose name starts with ``name`` (only pending ones
    with ``pending``; never job ``but``): its (master) id, or None."""

    def find() -> str | None:
        rows = _queue(layout, 0)
        for a, m, t, n in rows or ():
            if n.startswith(name) and (t == "PD" or not pending) and but not in (a, m):
                return m
        return None

    return find


def _fail(layout: RunLayout, text: str) -> None:
    print(f"lazyslurm feed: {text}", file=sys.stderr)
    atomic_write(layout.feed_error, (text.strip() + "\n").encode())


def step(layout: RunLayout, own: str | None = None) -> dict[str, Any]:
    """One feeder's work (see the module docstring). Returns what it did (for its log):
    ``submitted`` (array job -> Slurm id), ``queued`` (the user's jobs it counted),
    ``successor`` (its id, None when nothing is left), ``left`` and ``refused`` (Slurm's
    words when a submission was refused for now)."""
    from lazyslurm.dynamic import local_records, locked

    plan = json.loads(read_private(layout.feed_plan))
    run_id, cap = plan["run_id"], int(plan["cap"])
    # Slurm away: waited on for up to unreachable_timeout_s, and never past the time limit
    limit_s = 60.0 * int(plan.get("feeder_time_min") or FEEDER_TIME_MIN) - _MARGIN_S
    deadline = time.monotonic() + max(limit_s, 30.0)
    timeout_s = float(plan.get("unreachable_timeout_s") or 300)

    def left_s() -> float:
        return min(timeout_s, deadline - time.monotonic())

    done: dict[str, Any] = {
        "submitted": {}, "queued": None, "successor": None, "left": 0, "refused": "",
    }  # fmt: skip
    with locked(layout):
        if os.path.exists(layout.feed_stop):  # the run was cancelled
            return done
        try:
            ids = parse_job_ids(read_private(layout.jobids).decode())
        except OSError:
            ids = {}
        todo = [j for j in plan["jobs"] if j["id"] not in ids]
        if not todo:
            return done
        rows = _queue(layout, left_s())
        mine = f"{JOB_NAME_PREFIX}{run_id}-"
        feeders = f"{mine}{FEEDER}"
        if rows is not None:
            done["queued"] = len(rows)
            # an array job a lost try (or a requeued feeder) submitted: adopted, not resubmitted
            for j in todo:
                found = next((m for _, m, _, n in rows if n.startswith(f"{mine}{j['id']}-")), None)
                if found is not None:
                    ids[j["id"]] = found
            free = cap - len(rows) - 1  # this feeder is among the rows; one for its successor
        else:
            free = 0
        records = local_records(layout)
        plan_sizes = {j["id"]: j["size"] for j in plan["jobs"]}
        for j in [j for j in todo if j["id"] not in ids]:
            if j["size"] > free:
                break
            ups = [up for _, up in j["deps"]]
            if any(up not in ids for up in ups):
                break
            deps = [f"{kind}:{ids[up]}" for kind, up in j["deps"]]
            for rec in records:  # a subgraph an upstream returned: wait for it too
                if rec.parent[0] in ups:
                    deps += [f"afterok:{rec.job_ids[f]}" for f in rec.final if f in rec.job_ids]
            dep = [f"--dependency={','.join(dict.fromkeys(deps))}"] if deps else []
            argv = ["sbatch", "--parsable", *j["flags"], *dep, "--", layout.job_script(j["id"])]
            job, said = _sbatch(argv, layout, left_s(), _finder(layout, f"{mine}{j['id']}-"))
            if job is None:
                if over_cap(said) and rows is not None:
                    # the cap is at most what was queued, plus what went in, plus this
                    # one, less one (lowered since submission, or never seen): later
                    # feeders count on that, not on a refusal each
                    went = sum(plan_sizes[i] for i in done["submitted"])
                    bound = len(rows) + went + j["size"] - 1
                    if bound < cap:
                        plan["cap"] = cap = bound
                        atomic_write(layout.feed_plan, json.dumps(plan).encode())
                if over_cap(said) or transient(said):
                    done["refused"] = " / ".join(said.split("\n")[:2])
                    break  # not now: the successor tries again
                _fail(
                    layout,
                    f"Slurm refused array job {j['id']} of run {run_id} (submitted by the "
                    f"feeder, the run being over the submit cap): {said}\noptions: "
                    f"{' '.join(j['flags'])}",
                )
                return done
            ids[j["id"]] = job
            done["submitted"][j["id"]] = job
            _write_ids(layout, ids)
            free -= j["size"]
        _write_ids(layout, ids)
        left = [j for j in plan["jobs"] if j["id"] not in ids]
        done["left"] = len(left)
        if not left:
            return done
        if rows is not None and any(
            n == feeders and t == "PD" and own not in (a, m) for a, m, t, n in rows
        ):  # another feeder (of a requeued one's try) is pending already
            return done
        ours = {
            int(m)
            for _, m, _, n in rows or ()
            if n.startswith(mine) and n != feeders and m.isdigit()
        }
        ours |= {int(v) for v in done["submitted"].values() if v.isdigit()}
        when = [f"--dependency=afterany:{min(ours)}"] if ours else [f"--begin=now+{IDLE_BEGIN_S}"]
        argv = ["sbatch", "--parsable", *plan["feeder"], *when, "--", layout.job_script(FEEDER)]
        backoff = Backoff(max(deadline - time.monotonic(), 0.0), cap_s=30)
        find = _finder(layout, feeders, pending=True, but=own)
        while True:
            job, said = _sbatch(argv, layout, left_s(), find)
            if job is not None:
                done["successor"] = job
                return done
            if not (over_cap(said) or transient(said)) or not backoff.sleep():
                _fail(
                    layout,
                    f"the feeder of run {run_id} could not queue its successor, so "
                    f"{len(left)} array jobs of the run stay unsubmitted: {said}",
                )
                return done


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m lazyslurm.backends.slurm.feed RUN_DIR``: one feeder's step."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m lazyslurm.backends.slurm.feed RUN_DIR", file=sys.stderr)
        return 2
    layout = RunLayout(args[0])
    t0 = time.monotonic()
    try:
        done = step(layout, os.environ.get("SLURM_JOB_ID"))
    except Exception as exc:  # the client must hear of it: its polls read feed.err
        _fail(layout, f"the feeder failed: {type(exc).__name__}: {exc}")
        raise
    print(
        f"lazyslurm feed: queued {done['queued']}, submitted "
        f"{' '.join(f'{k}={v}' for k, v in done['submitted'].items()) or 'nothing'}, "
        f"{done['left']} array jobs left, successor {done['successor']} "
        f"({time.monotonic() - t0:.2f} s)"
        + (f"; refused for now: {done['refused']}" if done["refused"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
