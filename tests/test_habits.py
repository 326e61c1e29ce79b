"""The last habits of slurm-sdk and submitit users (docs/coming-from.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lazyslurm import Cluster, WorkflowContext, WorkflowTask, compute, task, workflow
from lazyslurm.callbacks import BaseCallback, SubmitEndContext, WorkflowTaskSubmitContext

REPO = Path(__file__).resolve().parent.parent


@task(time="00:01:00", mem="100M", partition="debug")
def double(x: int) -> int:
    return 2 * x


@workflow
def orchestrate(n: int, ctx: WorkflowContext) -> int:
    return sum(compute(double.map(range(n)))[0])


# --------------------------------------------------------------------------- slurm-sdk


TAIL_STATEMENT = """
import sys
from lazyslurm import Cluster, task

@task
def hello(n):
    import time
    for i in range(n):
        print(f"hello {i}", flush=True)
        time.sleep(0.3)
    return "done"

with Cluster("local", workdir=sys.argv[1]) as cluster:
    job = cluster.submit(hello)(3)
    job.tail(follow=True)          # slurm-sdk: streams until the job has ended
    print("status after tail:", job.get_status())
    if job.is_successful():
        print("Result:", job.get_result())
    else:
        print("Job failed!")
"""


def test_tail_follow_as_a_statement_streams_until_the_job_ends(tmp_path) -> None:
    """`job.tail(follow=True)` as a statement prints the lines and returns only once the
    job ended (it returned at once, the job still PENDING: "Job failed!")."""
    script = tmp_path / "hello.py"
    script.write_text(TAIL_STATEMENT)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "work")], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "hello 0", "hello 1", "hello 2", "status after tail: COMPLETED", "Result: done",
    ]  # fmt: skip


def test_tail_follow_in_a_loop_still_yields_the_lines(tmp_path) -> None:
    with Cluster("local", workdir=tmp_path) as cluster:
        job = cluster.submit(double)(2)
        lines = job.tail(follow=True)
        assert list(lines) == [] and job.get_status() == "COMPLETED"


def test_sbatch_options_is_a_dict() -> None:
    assert double.sbatch_options == {"time": 1, "mem": 100, "partition": "debug"}


def test_workflow_task_is_importable_and_tells_workflows_apart(tmp_path) -> None:
    """slurm-sdk callbacks check what was submitted: `isinstance(task, WorkflowTask)`."""
    from lazyslurm.workflows import WorkflowTask as FromWorkflows

    assert FromWorkflows is WorkflowTask
    assert isinstance(orchestrate, WorkflowTask) and not isinstance(double, WorkflowTask)
    assert isinstance(orchestrate.options(mem="1G"), WorkflowTask)  # options keep the kind

    seen: list[tuple[str, bool, bool]] = []

    class Graph(BaseCallback):
        def on_end_submit_job_ctx(self, ctx: SubmitEndContext) -> None:
            seen.append((ctx.job.name, isinstance(ctx.task, WorkflowTask), False))

        def on_workflow_task_submitted_ctx(self, ctx: WorkflowTaskSubmitContext) -> None:
            seen.append((ctx.child_task_name, ctx.child_is_workflow, True))

    with Cluster("sync", workdir=tmp_path, callbacks=[Graph()]):
        assert compute(orchestrate(3), double(5)) == (6, 10)
    assert ("orchestrate", True, False) in seen and ("orchestrate", True, True) in seen
    assert ("double", False, False) in seen and ("double", False, True) in seen


# --------------------------------------------------------------------------- submitit


def test_result_returns_the_value_not_a_lazy_view(tmp_path) -> None:
    """submitit: `job.result()` is the job's value (it was a lazy view of `.result`)."""
    with Cluster("sync", workdir=tmp_path):
        job = double(4)
        assert job.result() == 8
        assert double.map([1, 2]).result() == [2, 4]


def test_result_is_a_reserved_name() -> None:
    from lazyslurm.graph.core import RESERVED_NAMES

    assert "result" in RESERVED_NAMES
    view = double(1)["result"]  # a result key named "result" is still reachable
    assert type(view).__name__ == "JobView"


@pytest.mark.parametrize("name", ["visualise"])
def test_a_misspelt_handle_name_is_no_lazy_view(name: str) -> None:
    with pytest.raises(AttributeError, match="visualize"):
        getattr(double(1), name)
