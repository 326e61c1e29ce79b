"""slurm-sdk's callback classes, mapped onto lazyslurm's events (local, sync, real Slurm)."""

from __future__ import annotations

import io
import logging
import re
import time

import pytest
from rich.console import Console

from lazyslurm import Cluster, compute, task
from lazyslurm.callbacks import (
    BaseCallback,
    BenchmarkCallback,
    LoggerCallback,
    RichLoggerCallback,
    SdkAdapter,
    adapt,
)
from lazyslurm.errors import CallbackWarning


class Recorder(BaseCallback):
    """Records (hook, ctx) for every honoured hook."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def on_workflow_begin_ctx(self, ctx):
        self.calls.append(("workflow_begin", ctx))

    def on_end_submit_job_ctx(self, ctx):
        self.calls.append(("submitted", ctx))

    def on_workflow_task_submitted_ctx(self, ctx):
        self.calls.append(("task_submitted", ctx))

    def on_job_status_update_ctx(self, ctx):
        self.calls.append(("status", ctx))

    def on_completed_ctx(self, ctx):
        self.calls.append(("completed", ctx))

    def on_workflow_end_ctx(self, ctx):
        self.calls.append(("workflow_end", ctx))

    def hooks(self) -> list[str]:
        return [h for h, _ in self.calls]

    def of(self, hook: str) -> list:
        return [c for h, c in self.calls if h == hook]


@task
def double(x: int) -> int:
    return 2 * x


@task
def fails_on_two(x: int) -> int:
    if x == 2:
        # late enough that its sibling has ended: compute() stops a run at its first
        # failure (fail-fast), which would otherwise race the sibling's completion
        time.sleep(1.0)
        raise ValueError("two")
    return x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


def test_cluster_callbacks_see_a_run_in_slurm_sdk_terms(tmp_path, cluster):
    """Cluster(callbacks=...) gets workflow begin, one submit per array job, status,
    completion per element and workflow end, in that order."""
    rec = Recorder()
    with Cluster(cluster.backend_name, workdir=tmp_path / "w", callbacks=[rec]):
        assert total(double.map([1, 2, 3])).compute() == 12
    hooks = rec.hooks()
    assert hooks[:5] == [
        "workflow_begin",
        "submitted",
        "task_submitted",
        "submitted",
        "task_submitted",
    ]
    assert hooks[-1] == "workflow_end" and hooks.count("completed") == 4
    begin = rec.of("workflow_begin")[0]
    assert begin.workflow_job_dir.endswith(f"/runs/{begin.workflow_job_id}")
    sub = rec.of("submitted")[0]
    assert sub.pre_submission_id == "aj0" and sub.job.name == "double"
    done = rec.of("completed")
    assert {c.job_state for c in done} == {"COMPLETED"} and {c.exit_code for c in done} == {"0:0"}
    assert all(c.result_path.endswith(f"/results/{c.job}.pkl") for c in done)
    assert all(s.status["JobState"] in ("RUNNING", "COMPLETED") for s in rec.of("status"))


def test_compute_callbacks_see_failures_with_their_state(tmp_path, cluster):
    """compute(callbacks=...) reports a failed element as FAILED with its exit code (the
    sibling completed, or was cancelled when compute failed fast)."""
    rec = Recorder()
    with pytest.raises(ValueError, match="two"):
        compute(fails_on_two.map([1, 2]), cluster=cluster, callbacks=[rec])
    states = {c.job: (c.job_state, c.exit_code) for c in rec.of("completed")}
    assert ("FAILED", "1:0") in states.values()
    assert sorted(states.values())[0] in (("CANCELLED", ""), ("COMPLETED", "0:0"))
    assert [c.is_terminal for c in rec.of("status")][-1] is True


class Packager(BaseCallback):
    def on_begin_package_ctx(self, ctx):
        raise AssertionError("never called")

    def on_begin_run_job_ctx(self, ctx):
        raise AssertionError("never called")

    def on_completed_ctx(self, ctx):
        pass


class RunnerOnly(BaseCallback):
    execution_loci = {"on_completed_ctx": "runner"}

    def on_completed_ctx(self, ctx):
        raise AssertionError("runner only: never called on the client")


def test_hooks_that_cannot_be_honoured_are_named_at_registration(tmp_path):
    """Registering a callback that overrides packaging/runner hooks warns, naming them."""
    with pytest.warns(CallbackWarning) as record:
        c = Cluster("sync", workdir=tmp_path, callbacks=[Packager()])
    (msg,) = [str(w.message) for w in record]
    assert "on_begin_package_ctx" in msg and "on_begin_run_job_ctx" in msg
    assert "on_completed_ctx" not in msg
    with c:
        assert double(1).compute() == 2  # the unusable hooks are never called


def test_runner_only_hooks_are_named_and_never_called(tmp_path):
    """A hook mapped to the runner only is named in the warning and not run on the client."""
    with pytest.warns(CallbackWarning, match="on_completed_ctx: mapped to the runner only"):
        callbacks = adapt([RunnerOnly()])
    with Cluster("sync", workdir=tmp_path):
        assert compute(double(3), callbacks=callbacks) == (6,)


def test_lazyslurm_callbacks_pass_through_unwrapped():
    """Objects with lazyslurm's own hooks (on_submit, ...) are used as they are."""

    class Mine:
        def on_done(self, run):
            pass

    mine = Mine()
    wrapped = adapt([mine, Recorder()])
    assert wrapped[0] is mine and isinstance(wrapped[1], SdkAdapter)


def test_logger_callback_logs_submission_states_and_failures(tmp_path, caplog):
    """LoggerCallback logs the run, each array job's submission and the failed element."""
    caplog.set_level(logging.INFO, logger="lazyslurm.callbacks")
    with Cluster("sync", workdir=tmp_path, callbacks=[LoggerCallback()]):
        with pytest.raises(ValueError):
            fails_on_two.map([1, 2]).compute()
    text = caplog.text
    assert re.search(r"run \S+ submitted", text) and "aj0 (fails_on_two x2) submitted" in text
    assert "-> FAILED" in text and "FAILED exit code 1:0" in text
    assert re.search(r"run \S+ finished", text)


def test_rich_logger_callback_prints_on_its_console(tmp_path):
    """RichLoggerCallback prints the run, the array jobs and the end states."""
    out = io.StringIO()
    cb = RichLoggerCallback(console=Console(file=out, width=200, color_system=None))
    with Cluster("sync", workdir=tmp_path, callbacks=[cb]):
        double.map([1, 2]).compute()
    text = out.getvalue()
    assert "submitted" in text and "double x2" in text and text.count("COMPLETED") == 2


def test_benchmark_callback_times_runs_and_elements(tmp_path):
    """BenchmarkCallback records each run's duration and each element's wait and run time."""
    bench = BenchmarkCallback()
    with Cluster("local", workdir=tmp_path, max_workers=2, callbacks=[bench]):
        double.map([1, 2, 3]).compute()
    summary = bench.summary()
    assert summary["runs"] == 1 and summary["elements"] == 3
    assert summary["run_duration_s"][0] >= 0 and summary["mean_ran_s"] >= 0
    assert {m["state"] for m in bench.metrics["elements"].values()} == {"COMPLETED"}


@pytest.mark.slurm
def test_callbacks_on_the_real_slurm_carry_slurm_job_ids(cluster_env, tmp_path):
    """On Slurm, submit and completion contexts carry Slurm's job ids (ID and ID_INDEX)."""
    rec = Recorder()
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    with (
        Cluster(
            "slurm", workdir=tmp_path, env={"SLURM_CONF": conf}, poll_max_s=0.5, callbacks=[rec]
        ),
        pytest.raises(ValueError, match="two"),
    ):
        fails_on_two.map([1, 2]).compute()
    (sub,) = rec.of("submitted")
    assert sub.job_id.isdigit() and sub.backend_type == "slurm"
    done = {c.job_id: c.job_state for c in rec.of("completed")}
    assert done == {f"{sub.job_id}_0": "COMPLETED", f"{sub.job_id}_1": "FAILED"}
    assert rec.hooks()[-1] == "workflow_end"
