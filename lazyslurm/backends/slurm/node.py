"""Slurm's compute-node side: what a task does from where it runs, on this Slurm.

:mod:`lazyslurm.dynamic` calls these when a task returns lazy values (docs/dynamic.md),
and :mod:`lazyslurm.workflows` for a ``@workflow``'s cluster; the client names this
module in the run's manifest (the backend's ``node``), so any backend can have its own.

- :func:`start_subgraph`: submit the subgraph held (the same :func:`~lazyslurm.backends.
  slurm.render.submission` the client uses), make the run's already-queued dependents of
  the expanding task wait for it (``scontrol update dependency=``, keeping their
  unfulfilled dependencies; ``--kill-on-invalid-dep`` stays in force), release it, and
  write its record. Anything failing after the submission cancels the subgraph (nothing
  of it has run: it was held) and raises.
- :func:`cost_facts`: the partitions' defaults, for the run's budget (``max_core_hours``).
- :func:`inner_cluster`: the Cluster arguments that reach this Slurm from here, with the
  job's own interpreter and setup lines.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from typing import Any

from lazyslurm.backends.slurm.controller import Backoff, transient
from lazyslurm.backends.slurm.facts import COST_PROBE, parse_cluster_facts
from lazyslurm.backends.slurm.options import UNREACHABLE_TIMEOUT_S
from lazyslurm.backends.slurm.render import (
    cancel_script,
    read_job_script,
    read_submitted,
    submission,
)
from lazyslurm.dynamic import Subgraph, SubgraphRecord, commit, local_records, locked
from lazyslurm.errors import DynamicExpansionError, SubmissionError
from lazyslurm.graph.resources import Resources
from lazyslurm.planning.cost import ClusterFacts
from lazyslurm.store import RunLayout, atomic_write, parse_job_ids, read_private, record_calls

__all__ = ["cost_facts", "inner_cluster", "repoint_dependents", "start_subgraph"]

# Slurm's client fails now and then while slurmctld is busy or restarting ("Socket timed
# out on send/recv operation", "Unable to contact slurm controller"): such a command is
# tried again with backoff and jitter (controller.Backoff) for up to the cluster's
# unreachable_timeout_s (in the manifest's "dynamic" config)
_SLURM_TIMEOUT_S = 120.0  # one command; its own timeouts are shorter (MessageTimeout)
_GONE = "Invalid job id specified"  # squeue: none of the jobs asked for is known any more


def cost_facts() -> ClusterFacts | None:
    """The partitions' defaults (DefaultTime, MaxTime, DefMemPerCPU), asked here; None if
    Slurm does not answer (then a task without a time limit counts as unbounded)."""
    try:
        res = subprocess.run(
            ["bash", "-c", COST_PROBE], capture_output=True, text=True, timeout=_SLURM_TIMEOUT_S
        )
    except subprocess.TimeoutExpired:
        return None
    return parse_cluster_facts(res.stdout)


def inner_cluster(layout: RunLayout, array_job: str, manifest: Mapping[str, Any]) -> tuple[
    str, dict[str, Any]
]:  # fmt: skip
    """``(backend, options)`` of the run's cluster reached from where element of
    ``array_job`` runs: Slurm on this host with that job's interpreter and setup lines
    (its packaging is inherited), the cluster's task defaults and array size limit."""
    config = manifest.get("dynamic") or {}
    start = read_job_script(read_private(layout.job_script(array_job)).decode())
    options = {
        "python": start.python,
        "setup": list(start.setup),
        "poll_max_s": 1.0,
        "max_array_size": config.get("max_array_size"),
        **Resources.from_options(**config.get("defaults", {})).as_options(),
    }
    for name in ("unreachable_timeout_s", "max_rpc_per_min", "rpc_burst"):  # a busy controller
        if config.get(name) is not None:
            options[name] = config[name]
    return "slurm", options


def start_subgraph(sub: Subgraph) -> None:
    """Submit ``sub`` on this Slurm (see the module docstring); fills its record's
    ``job_ids`` and ``added`` and commits the record."""
    layout, record = sub.layout, sub.record
    start = read_job_script(read_private(layout.job_script(sub.array_job)).decode())
    if shutil.which("sbatch") is None:
        where = f" (inside the container {start.launcher[0]!r} started?)" if start.launcher else ""
        msg = (
            f"a task of array job {sub.array_job} returned lazy values, but sbatch is not "
            f"found where it runs{where}: dynamic expansion and @workflow submit from the "
            f"compute node. Use packaging='by-value' or 'wheel', or put Slurm's client (and "
            f"its configuration) in the image"
        )
        raise DynamicExpansionError(msg)
    ajs = sub.plan.array_jobs
    prefix = sub.prefix
    todo = submission(
        ajs,
        run_id=sub.run_id,
        layout=layout,
        defaults=Resources.from_options(**sub.config.get("defaults", {})),
        launches=dict.fromkeys((aj.id for aj in ajs), start),
        jobids=layout.subgraph_file(prefix, "ids"),
        stderr=layout.subgraph_file(prefix, "err"),
        release=False,  # released once the dependents wait for it
        name=prefix,
    )
    for rel, data in todo.files.items():
        atomic_write(f"{layout.root}/{rel}", data)
    timeout_s = float(sub.config.get("unreachable_timeout_s") or UNREACHABLE_TIMEOUT_S)
    ids = _submit(sub.run_id, prefix, layout, todo.command, todo.flags, ajs, timeout_s)
    record.job_ids = ids
    try:
        with _cancelled_if_stopped(list(ids.values())), locked(layout):
            records = local_records(layout)  # under the lock: earlier expansions' edges
            record.added = repoint_dependents(
                layout, sub.array_job, [ids[f] for f in record.final], list(record.final),
                records, sub.manifest, timeout_s,
            )  # fmt: skip
            rel = _slurm(["scontrol", "release", *ids.values()], layout, timeout_s)
            if rel.returncode != 0:
                msg = (
                    f"could not release the subgraph's jobs ({' '.join(ids.values())}): "
                    f"{_said(rel)}. The subgraph was cancelled"
                )
                raise DynamicExpansionError(msg)
            commit(layout, record)
    except BaseException:
        _slurm(["scancel", *ids.values()], layout, timeout_s)
        raise


def _submit(
    run_id: str,
    prefix: str,
    layout: RunLayout,
    command: str,
    flags: Mapping[str, Any],
    ajs: Any,
    timeout_s: float,
) -> dict[str, str]:
    """Submit a subgraph (held) with ``command``: as the client does, a submission that
    failed with Slurm's transient errors is tried again after backoff with jitter, for up
    to ``timeout_s``, each time after cancelling the jobs an earlier try may have left
    (named ``lz-RUN-PREFIX...``: held, they never ran). Its calls are counted by the
    submission script itself."""
    backoff = Backoff(timeout_s)
    again = f"{cancel_script(run_id, prefix=prefix, calls_file=layout.calls)} || exit 75\n"
    script = command
    while True:
        res = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
        try:
            return read_submitted(res.returncode, res.stdout, res.stderr, flags, ajs)
        except SubmissionError as exc:
            said = res.stderr if res.returncode != 75 else f"lz-transient {res.stderr}"
            wait = backoff.next_wait() if transient(said) else None
            if wait is None:
                if transient(said):
                    subprocess.run(["bash", "-c", again], capture_output=True, check=False)
                msg = f"submitting the subgraph from the compute node failed: {exc}"
                raise DynamicExpansionError(msg) from None
        time.sleep(wait)
        script = again + command


@contextlib.contextmanager
def _cancelled_if_stopped(ids: list[str]) -> Iterator[None]:
    """While the subgraph is held, Slurm stopping this element (SIGTERM: its time limit,
    scancel) cancels the subgraph first: held jobs that nobody releases would stay queued
    forever. Then the signal does what it did before (the checkpoint hooks, or death)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may handle signals
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is None:  # installed outside Python: leave it to the default
        previous = signal.SIG_DFL

    def stop(signum: int, frame: Any) -> None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["scancel", *ids], capture_output=True, timeout=_SLURM_TIMEOUT_S)
        signal.signal(signum, previous)
        if callable(previous):
            previous(signum, frame)
        else:
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _slurm(
    argv: list[str], layout: RunLayout, timeout_s: float = UNREACHABLE_TIMEOUT_S
) -> subprocess.CompletedProcess[str]:
    """Run a Slurm client command here, counted in the run's calls file; a failure with
    Slurm's transient errors (or a command that hangs) is tried again with backoff and
    jitter for up to ``timeout_s``. The last try's result. A job id Slurm no longer knows
    is an answer, not a failure."""
    backoff = Backoff(timeout_s)
    while True:
        record_calls(layout.calls, {argv[0]: 1})
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=_SLURM_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            said = f"timed out after {_SLURM_TIMEOUT_S:g} s (lz-transient)"
            res = subprocess.CompletedProcess(argv, -1, "", said)
        if res.returncode == 0 or _GONE in res.stderr or not transient(res.stderr):
            return res
        if not backoff.sleep():
            return res


def _said(res: subprocess.CompletedProcess[str]) -> str:
    """A failed command's exit status and last words, for a message."""
    words = " / ".join(ln.strip() for ln in res.stderr.strip().splitlines()[-2:] if ln.strip())
    return f"exit {res.returncode}" + (f": {words}" if words else " and no message")


def repoint_dependents(
    layout: RunLayout,
    array_job: str,
    final_ids: list[str],
    names: list[str],
    records: list[SubgraphRecord],
    manifest: Mapping[str, Any],
    timeout_s: float = UNREACHABLE_TIMEOUT_S,
) -> dict[str, list[str]]:
    """Add ``afterok`` on ``final_ids`` to every pending job depending on ``array_job``
    (in the run's graph as extended by earlier expansions). Returns what was added (the
    ``names`` of what they now wait for, per dependent). Used by dynamic expansion (the
    subgraph's final array jobs) and by on-cluster retries (the next guard job:
    :mod:`lazyslurm.backends.slurm.retry`).
    Raises :class:`~lazyslurm.errors.DynamicExpansionError` when Slurm cannot say which
    of them are pending (``squeue`` kept failing) or refuses an update: a dependent left
    as it is would start before the subgraph ends and fail for want of its results."""
    deps: dict[str, set[str]] = {}
    slurm_ids: dict[str, str] = {}
    for e in manifest["array_jobs"]:
        deps[e["id"]] = {u for _, u in e["dependencies"]}
    try:
        slurm_ids.update(parse_job_ids(read_private(layout.jobids).decode()))
    except OSError:
        pass
    for rec in records:
        for e in rec.array_jobs:
            deps[e["id"]] = {u for _, u in e["dependencies"]}
        slurm_ids.update(rec.job_ids)
    for rec in records:
        for d, finals in rec.added.items():
            deps.setdefault(d, set()).update(finals)
    dependents = sorted(d for d, ups in deps.items() if array_job in ups)
    targets = {slurm_ids[d]: d for d in dependents if d in slurm_ids}
    if not targets:
        return {}
    argv = ["squeue", "-h", "-t", "PENDING", "-j", ",".join(targets), "-o", "%i|%E"]
    res = _slurm(argv, layout, timeout_s)
    if res.returncode != 0 and _GONE not in res.stderr:
        names = ", ".join(f"{d} (job {sid})" for sid, d in sorted(targets.items()))
        msg = (
            f"could not make the jobs waiting for this task wait for the subgraph it "
            f"returned: squeue, asked which of {names} are pending, failed "
            f"({_said(res)}). The subgraph was cancelled; is slurmctld reachable from the "
            f"compute node?"
        )
        raise DynamicExpansionError(msg)
    current: dict[str, str] = {}
    for line in res.stdout.splitlines() if res.returncode == 0 else ():
        job, _, dep = line.partition("|")
        current.setdefault(job.split("_", 1)[0], dep.strip())
    new = "afterok:" + ":".join(final_ids)
    added: dict[str, list[str]] = {}
    for sid, dep in current.items():
        if sid not in targets:
            continue
        keep = [item.split("(", 1)[0] for item in dep.split(",") if item.endswith("(unfulfilled)")]
        spec = ",".join([*keep, new])
        upd = _slurm(
            ["scontrol", "update", f"jobid={sid}", f"dependency={spec}"], layout, timeout_s
        )
        if upd.returncode != 0:
            msg = (
                f"could not make job {sid} ({targets[sid]}) wait for the subgraph "
                f"(scontrol update dependency={spec}): {_said(upd)}. The subgraph was "
                f"cancelled"
            )
            raise DynamicExpansionError(msg)
        added[targets[sid]] = list(names)
    return added
