"""slurm-sdk's callback vocabulary, as thin adapters over lazyslurm's own events.

slurm-sdk programs pass ``BaseCallback`` subclasses to their cluster. lazyslurm accepts
them in ``Cluster(..., callbacks=[...])`` and ``compute(..., callbacks=[...])`` and calls
their ``on_*_ctx`` hooks from its four events (``on_submit``, ``on_poll``, ``on_state``,
``on_done``, see :class:`lazyslurm.execute.Callback`):

==================================  ============================================  =========
slurm-sdk hook                      lazyslurm event                               once per
==================================  ============================================  =========
``on_workflow_begin_ctx``           ``on_submit``                                 run
``on_end_submit_job_ctx``           ``on_submit``                                 array job
``on_workflow_task_submitted_ctx``  ``on_submit``                                 array job
``on_job_status_update_ctx``        ``on_state`` (a state change seen by a poll)  element
``on_completed_ctx``                ``on_state`` to DONE, FAILED or CANCELLED     element
``on_workflow_end_ctx``             ``on_done``                                   run
==================================  ============================================  =========

A "workflow" is one run (the whole DAG), a slurm-sdk "job" is one element. Hooks with no
lazyslurm event (packaging, the start of submission, the runner-side run hooks, and any
hook a callback maps to the runner only in ``execution_loci``) are named in a
:class:`~lazyslurm.errors.CallbackWarning` when the callback is registered.

>>> class Printer(BaseCallback):
...     def on_completed_ctx(self, ctx):
...         print(ctx.job_state)
>>> from lazyslurm import Cluster, task
>>> @task
... def inc(x): return x + 1
>>> with Cluster("sync", workdir=getfixture("tmp_path"), callbacks=[Printer()]):
...     inc(1).compute()
COMPLETED
2
"""

from __future__ import annotations

import logging
import time
import types
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lazyslurm.backends.base import CANCELLED, DONE, FAILED, PENDING, RUNNING, TERMINAL
from lazyslurm.errors import CallbackWarning
from lazyslurm.graph.core import WorkflowTask
from lazyslurm.store import RunLayout

__all__ = [
    "BaseCallback",
    "BenchmarkCallback",
    "CompletedContext",
    "JobStatusUpdatedContext",
    "LoggerCallback",
    "RichLoggerCallback",
    "SubmitEndContext",
    "WorkflowCallbackContext",
    "WorkflowTaskSubmitContext",
    "adapt",
]

HONOURED = (
    "on_end_submit_job_ctx",
    "on_job_status_update_ctx",
    "on_completed_ctx",
    "on_workflow_begin_ctx",
    "on_workflow_end_ctx",
    "on_workflow_task_submitted_ctx",
)
NOT_HONOURED = {
    "on_begin_package_ctx": "lazyslurm ships code by import path or by value, no packaging step",
    "on_end_package_ctx": "lazyslurm ships code by import path or by value, no packaging step",
    "on_begin_submit_job_ctx": "lazyslurm has no event before a run is submitted",
    "on_begin_run_job_ctx": "callbacks are never shipped to the runner",
    "on_end_run_job_ctx": "callbacks are never shipped to the runner",
}
HOOKS = (*HONOURED, *NOT_HONOURED)

# lazyslurm's element states as Slurm's JobState words
_SLURM_STATE = {
    PENDING: "PENDING",
    RUNNING: "RUNNING",
    DONE: "COMPLETED",
    FAILED: "FAILED",
    CANCELLED: "CANCELLED",
}


# --------------------------------------------------------------------------- contexts


@dataclass
class SubmitEndContext:
    """One array job was submitted (``job`` is its ``ArrayJob`` record)."""

    job: Any
    job_id: str
    pre_submission_id: str
    target_job_dir: str
    sbatch_options: dict[str, Any]
    cluster: Any = None
    timestamp: float = field(default_factory=time.time)
    backend_type: str | None = None
    task: Any = None  # the Task its elements call (a WorkflowTask for a @workflow)


@dataclass
class JobStatusUpdatedContext:
    """An element changed state (``job`` is its node key)."""

    job: Any
    job_id: str
    status: dict[str, Any]
    timestamp: float
    previous_state: str | None = None
    is_terminal: bool = False


@dataclass
class CompletedContext:
    """An element reached an end state. ``error_*`` and ``traceback`` stay ``None``: the
    exception is raised by ``compute`` (reading it here would cost a transfer each)."""

    job: Any
    job_id: str | None
    job_dir: str | None
    job_state: str | None
    exit_code: str | None
    reason: str | None
    stdout_path: str | None
    stderr_path: str | None
    start_time: float | None
    end_time: float | None
    duration: float | None
    status: dict[str, Any] | None = None
    error_type: str | None = None
    error_message: str | None = None
    traceback: str | None = None
    result_path: str | None = None
    emitted_by: str = "client"
    job_context: Any = None


@dataclass
class WorkflowCallbackContext:
    """A run (the whole DAG) began or ended. ``workflow_context`` is the ``Run``."""

    workflow_job_id: str
    workflow_job_dir: str
    workflow_name: str
    workflow_context: Any
    timestamp: float
    result: Any = None
    exception: BaseException | None = None
    cluster: Any = None


@dataclass
class WorkflowTaskSubmitContext:
    """One array job of a run was submitted."""

    parent_workflow_id: str
    parent_workflow_dir: str
    parent_workflow_name: str
    child_job_id: str
    child_job_dir: str
    child_task_name: str
    child_is_workflow: bool
    timestamp: float
    cluster: Any = None


# --------------------------------------------------------------------------- callbacks


class BaseCallback:
    """slurm-sdk's callback base: override any ``on_*_ctx`` hook (no-ops here).

    ``execution_loci`` maps a hook to ``"client"``, ``"runner"`` or ``"both"``; lazyslurm
    runs hooks on the client only. ``poll_interval_secs`` is accepted; status updates come
    at every state change the run's poll loop sees.
    """

    execution_loci: Mapping[str, str] = types.MappingProxyType({})
    poll_interval_secs: float | None = None
    requires_pickling: bool = False

    def on_begin_package_ctx(self, ctx: Any) -> None:
        """Not honoured (no packaging step)."""

    def on_end_package_ctx(self, ctx: Any) -> None:
        """Not honoured (no packaging step)."""

    def on_begin_submit_job_ctx(self, ctx: Any) -> None:
        """Not honoured (no event before submission)."""

    def on_end_submit_job_ctx(self, ctx: SubmitEndContext) -> None:
        """An array job was submitted."""

    def on_begin_run_job_ctx(self, ctx: Any) -> None:
        """Not honoured (runner side)."""

    def on_end_run_job_ctx(self, ctx: Any) -> None:
        """Not honoured (runner side)."""

    def on_job_status_update_ctx(self, ctx: JobStatusUpdatedContext) -> None:
        """An element changed state."""

    def on_completed_ctx(self, ctx: CompletedContext) -> None:
        """An element ended."""

    def on_workflow_begin_ctx(self, ctx: WorkflowCallbackContext) -> None:
        """A run was submitted."""

    def on_workflow_end_ctx(self, ctx: WorkflowCallbackContext) -> None:
        """A run ended."""

    def on_workflow_task_submitted_ctx(self, ctx: WorkflowTaskSubmitContext) -> None:
        """An array job of a run was submitted."""


class LoggerCallback(BaseCallback):
    """Log submissions, state changes and ends with :mod:`logging` (``lazyslurm.callbacks``
    logger unless ``logger`` is given)."""

    def __init__(
        self, *, logger: logging.Logger | None = None, poll_interval: float | None = None
    ) -> None:
        self.logger = logger or logging.getLogger(__name__)
        self.poll_interval_secs = poll_interval

    def on_workflow_begin_ctx(self, ctx: WorkflowCallbackContext) -> None:
        self.logger.info("run %s submitted (%s)", ctx.workflow_job_id, ctx.workflow_job_dir)

    def on_end_submit_job_ctx(self, ctx: SubmitEndContext) -> None:
        self.logger.info(
            "%s (%s x%d) submitted as job %s via %s",
            ctx.pre_submission_id,
            ctx.job.name,
            len(ctx.job.keys),
            ctx.job_id,
            ctx.backend_type,
        )

    def on_job_status_update_ctx(self, ctx: JobStatusUpdatedContext) -> None:
        self.logger.info(
            "[%s] %s -> %s", ctx.job_id, ctx.previous_state, ctx.status.get("JobState")
        )

    def on_completed_ctx(self, ctx: CompletedContext) -> None:
        if ctx.job_state == "COMPLETED":
            return  # already logged as a status update
        self.logger.error(
            "[%s] %s%s (stderr: %s)",
            ctx.job_id,
            ctx.job_state,
            f" exit code {ctx.exit_code}" if ctx.exit_code else "",
            ctx.stderr_path,
        )

    def on_workflow_end_ctx(self, ctx: WorkflowCallbackContext) -> None:
        self.logger.info("run %s finished", ctx.workflow_job_id)


class RichLoggerCallback(LoggerCallback):
    """:class:`LoggerCallback` printed with colours on a rich console (stderr)."""

    _STYLE = types.MappingProxyType(
        {"COMPLETED": "green", "FAILED": "bold red", "CANCELLED": "yellow", "RUNNING": "cyan"}
    )

    def __init__(self, *, console: Any = None, poll_interval: float | None = None) -> None:
        super().__init__(poll_interval=poll_interval)
        if console is None:
            from rich.console import Console

            console = Console(stderr=True)
        self.console = console

    def on_workflow_begin_ctx(self, ctx: WorkflowCallbackContext) -> None:
        self.console.print(
            f"[bold]run {ctx.workflow_job_id}[/bold] submitted [dim]{ctx.workflow_job_dir}[/dim]"
        )

    def on_end_submit_job_ctx(self, ctx: SubmitEndContext) -> None:
        self.console.print(
            f"  {ctx.pre_submission_id} [bold]{ctx.job.name}[/bold] x{len(ctx.job.keys)} "
            f"-> job [cyan]{ctx.job_id}[/cyan]"
        )

    def on_job_status_update_ctx(self, ctx: JobStatusUpdatedContext) -> None:
        state = str(ctx.status.get("JobState"))
        style = self._STYLE.get(state, "white")
        self.console.print(f"  [{ctx.job_id}] [{style}]{state}[/{style}]")

    def on_completed_ctx(self, ctx: CompletedContext) -> None:
        if ctx.job_state != "COMPLETED":
            self.console.print(
                f"  [{ctx.job_id}] [bold red]{ctx.job_state}[/bold red] "
                f"[dim]{ctx.stderr_path}[/dim]"
            )

    def on_workflow_end_ctx(self, ctx: WorkflowCallbackContext) -> None:
        self.console.print(f"[bold]run {ctx.workflow_job_id}[/bold] finished")


class BenchmarkCallback(BaseCallback):
    """Times a run: submission, each element's wait and run time as the polls saw them.

    ``metrics`` holds ``runs`` (run id -> ``submitted``/``finished`` wall times and
    ``duration_s``) and ``elements`` (job id -> ``queued_s``, ``ran_s``); :meth:`summary`
    aggregates them. Poll-based: resolution is the poll interval.
    """

    def __init__(self) -> None:
        self.metrics: dict[str, dict[str, Any]] = {"runs": {}, "elements": {}}
        self._seen: dict[str, dict[str, float]] = {}

    def on_workflow_begin_ctx(self, ctx: WorkflowCallbackContext) -> None:
        self.metrics["runs"][ctx.workflow_job_id] = {"submitted": ctx.timestamp}

    def on_job_status_update_ctx(self, ctx: JobStatusUpdatedContext) -> None:
        seen = self._seen.setdefault(ctx.job_id, {"submitted": ctx.timestamp})
        seen.setdefault(str(ctx.status.get("JobState")), ctx.timestamp)

    def on_completed_ctx(self, ctx: CompletedContext) -> None:
        seen = self._seen.pop(str(ctx.job_id), {})
        end = ctx.end_time or time.time()
        started = seen.get("RUNNING", end)
        queued_from = ctx.start_time or seen.get("submitted", started)
        self.metrics["elements"][str(ctx.job_id)] = {
            "state": ctx.job_state,
            "queued_s": max(0.0, started - queued_from),
            "ran_s": max(0.0, end - started),
        }

    def on_workflow_end_ctx(self, ctx: WorkflowCallbackContext) -> None:
        run = self.metrics["runs"].setdefault(ctx.workflow_job_id, {})
        run["finished"] = ctx.timestamp
        run["duration_s"] = ctx.timestamp - run.get("submitted", ctx.timestamp)

    def summary(self) -> dict[str, Any]:
        """Counts and means over every element seen."""
        rows = list(self.metrics["elements"].values())
        n = len(rows)
        return {
            "runs": len(self.metrics["runs"]),
            "elements": n,
            "mean_queued_s": sum(r["queued_s"] for r in rows) / n if n else 0.0,
            "mean_ran_s": sum(r["ran_s"] for r in rows) / n if n else 0.0,
            "run_duration_s": [r.get("duration_s") for r in self.metrics["runs"].values()],
        }


# --------------------------------------------------------------------------- adapter


def _overridden(cb: Any, hook: str) -> bool:
    fn = getattr(type(cb), hook, None)
    return fn is not None and fn is not getattr(BaseCallback, hook)


def _is_sdk_callback(cb: Any) -> bool:
    return isinstance(cb, BaseCallback) or (
        any(hasattr(cb, h) for h in HOOKS)
        and not any(hasattr(cb, e) for e in ("on_submit", "on_state", "on_poll", "on_done"))
    )


def _runner_only(cb: Any) -> set[str]:
    loci = getattr(cb, "execution_loci", None) or {}
    return {h for h, where in loci.items() if str(getattr(where, "value", where)) == "runner"}


class SdkAdapter:
    """Calls one slurm-sdk callback's hooks from lazyslurm's events."""

    def __init__(self, callback: Any) -> None:
        self.callback = callback
        skipped = _runner_only(callback)
        self._hooks = {h for h in HONOURED if hasattr(callback, h) and h not in skipped}
        dropped = sorted(
            {h for h in NOT_HONOURED if hasattr(callback, h) and _overridden(callback, h)}
            | (skipped & set(HOOKS))
        )
        if dropped:
            runner_only = "mapped to the runner only, and callbacks run on the client"
            why = "; ".join(f"{h}: {NOT_HONOURED.get(h, runner_only)}" for h in dropped)
            msg = f"{type(callback).__name__}: hook(s) lazyslurm cannot honour, never called: {why}"
            warnings.warn(msg, CallbackWarning, stacklevel=4)
        self._where: dict[str, tuple[Any, str, int]] = {}  # key -> (array job, Slurm id, index)
        self._run: Any = None
        self._snapshot: Any = None
        self._submitted = 0.0

    def __repr__(self) -> str:
        return f"SdkAdapter({self.callback!r})"

    def _call(self, hook: str, ctx: Any) -> None:
        if hook in self._hooks:
            getattr(self.callback, hook)(ctx)

    @staticmethod
    def _run_dir(run: Any) -> str:
        return RunLayout.of(run.id, run.cluster.backend.workdir).root

    # lazyslurm events
    def on_submit(self, run: Any) -> None:
        self._bind(run)
        now = time.time()
        self._submitted = now
        run_dir = self._run_dir(run)
        self._call(
            "on_workflow_begin_ctx",
            WorkflowCallbackContext(
                run.id,
                run_dir,
                run.id,
                run,
                now,
                cluster=run.cluster,
            ),
        )
        job_ids = run.handle.job_ids if run.handle else {}
        for aj in run.array_jobs:
            sid = str(job_ids.get(aj.id, f"{run.id}/{aj.id}"))
            task = run.plan.task(aj) if run.plan is not None and aj.id in run.plan.members else None
            self._call(
                "on_end_submit_job_ctx",
                SubmitEndContext(
                    aj,
                    sid,
                    aj.id,
                    run_dir,
                    aj.resources.as_options(),
                    run.cluster,
                    now,
                    run.cluster.backend_name,
                    task,
                ),
            )
            self._call(
                "on_workflow_task_submitted_ctx",
                WorkflowTaskSubmitContext(
                    run.id,
                    run_dir,
                    run.id,
                    sid,
                    run_dir,
                    aj.name,
                    isinstance(task, WorkflowTask),
                    now,
                    run.cluster,
                ),
            )

    def on_poll(self, run: Any, snapshot: Any) -> None:
        if run is not self._run:
            self._bind(run)
        self._snapshot = snapshot

    def on_state(self, node: str, old: str, new: str) -> None:
        where = self._where.get(node)
        if where is None:
            return
        aj, sid, idx = where
        job_id = f"{sid}_{idx}"
        now = time.time()
        state = _SLURM_STATE.get(new, new)
        snap = self._snapshot
        failure = snap.failures.get((aj.id, idx)) if snap is not None and new != DONE else None
        if failure is not None:
            state = failure.state or state
        status = {"JobState": state, "ExitCode": failure.exit_code if failure else None}
        self._call(
            "on_job_status_update_ctx",
            JobStatusUpdatedContext(
                node,
                job_id,
                status,
                now,
                _SLURM_STATE.get(old, old),
                new in TERMINAL,
            ),
        )
        if new in TERMINAL:
            run_dir = self._run_dir(self._run)
            self._call(
                "on_completed_ctx",
                CompletedContext(
                    node,
                    job_id,
                    run_dir,
                    state,
                    (failure.exit_code if failure else "0:0"),
                    failure.reason if failure else None,
                    RunLayout(run_dir).log(aj.id, idx, "out"),
                    RunLayout(run_dir).log(aj.id, idx, "err"),
                    self._submitted or None,
                    now,
                    now - self._submitted if self._submitted else None,
                    status=status,
                    result_path=RunLayout(run_dir).result(node) if new == DONE else None,
                ),
            )

    def on_done(self, run: Any) -> None:
        self._call(
            "on_workflow_end_ctx",
            WorkflowCallbackContext(
                run.id,
                self._run_dir(run),
                run.id,
                run,
                time.time(),
                cluster=run.cluster,
            ),
        )

    def _bind(self, run: Any) -> None:
        self._run = run
        self._snapshot = None
        job_ids = run.handle.job_ids if run.handle else {}
        self._where = {
            key: (aj, str(job_ids.get(aj.id, f"{run.id}/{aj.id}")), idx)
            for aj in run.array_jobs
            for idx, key in enumerate(aj.keys)
        }


def adapt(callbacks: Iterable[Any]) -> list[Any]:
    """lazyslurm callbacks as given; slurm-sdk ones wrapped in an :class:`SdkAdapter`
    (which warns, now, about hooks it cannot honour)."""
    return [SdkAdapter(cb) if _is_sdk_callback(cb) else cb for cb in callbacks]
