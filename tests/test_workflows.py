"""@workflow: orchestrating functions that run as jobs (lazyslurm.workflows)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_backends_slurm import env, slurm_cluster  # noqa: F401

from examples import workflows as ex
from lazyslurm import Cluster, WorkflowContext, compute, submit, task, workflow
from lazyslurm.errors import InvalidArgumentError, TaskArgumentsError
from lazyslurm.execute import Run

REPO = Path(__file__).resolve().parents[1]


@task
def write(shared: str, name: str, value: int) -> str:
    path = f"{shared}/{name}"
    Path(path).write_text(str(value))
    return path


@task
def read(path: str) -> int:
    return int(Path(path).read_text())


@workflow(time="00:05:00", mem="256M")
def waits(values: list, ctx: WorkflowContext) -> dict:
    """Waits for its children (compute inside the workflow)."""
    paths = [write(str(ctx.shared_dir), f"v{i}", v) for i, v in enumerate(values)]
    total = sum(compute(*[read(p) for p in paths]))
    files = sorted(os.listdir(ctx.shared_dir))
    return {"total": total, "files": files, "dir": str(ctx.workflow_job_dir)}


@workflow
def returns_lazy(values, ctx):
    """Returns its children lazily: they are submitted after it ends (dynamic)."""
    return [read(write(str(ctx.shared_dir), f"w{i}", v)) for i, v in enumerate(values)]


def test_decorator_keeps_options_and_finds_the_context_parameter():
    """@workflow takes @task's options, is impure by default, and injects ctx by annotation
    or by the name ctx."""
    assert waits.resources.timeout_min == 5 and waits.pure is False
    assert waits.unwrapped.param == "ctx"
    assert returns_lazy.unwrapped.param == "ctx"


def test_a_workflow_call_is_bound_without_its_context():
    """The context is injected, never passed: a call leaving it out builds, one argument
    too many is refused when the job is built (TaskArgumentsError), not on the node."""
    assert waits([1]).args == ([1],) and returns_lazy([1]).args == ([1],)
    with pytest.raises(TaskArgumentsError, match=r"got 2 positional.*: waits\(values"):
        waits([1], 2)
    with pytest.raises(TaskArgumentsError, match="missing the required argument 'values'"):
        returns_lazy()


def test_a_workflow_called_outside_a_run_says_so():
    """Calling a workflow's function outside a job is a clear error."""
    with pytest.raises(InvalidArgumentError, match="runs as a job"):
        waits.unwrapped([1])


@pytest.mark.parametrize("backend", ["local", "sync"])
def test_workflow_uses_shared_dir_and_its_children(backend, tmp_path):
    """A workflow computes children that write into ctx.shared_dir and returns a value made
    from their results; a workflow returning lazy children gives their values."""
    with Cluster(backend, workdir=tmp_path, max_workers=2):
        got, lazy = compute(waits([1, 2, 3]), returns_lazy([4, 5]))
    assert got["total"] == 6 and got["files"] == ["v0", "v1", "v2"]
    assert Path(got["dir"]).is_relative_to(tmp_path)
    assert lazy == [4, 5]


def test_examples_run_embedded(tmp_path):
    """The two example workflows (train + evaluate; the seed's fan-out/fan-in) run."""
    with Cluster("local", workdir=tmp_path, max_workers=2):
        models, merged = compute(
            ex.train_and_evaluate({"a": 1, "b": 2}), ex.fan_out_fan_in("d.csv", 5)
        )
    assert models["best"] == "b" and merged["total_sum"] == sum(range(500))


@pytest.mark.slurm
def test_workflow_on_slurm_detached(env, tmp_path):  # noqa: F811
    """On Slurm: the client submits a workflow and is SIGKILLed; a new process attaches and
    gets the value the workflow computed from children it submitted from the compute node
    (into ctx.shared_dir); the lazily returning workflow's children show in the run."""
    workdir = tmp_path / "work"
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO / "tests")!r})
        from lazyslurm import Cluster, submit
        from test_workflows import waits, returns_lazy
        c = Cluster("slurm", workdir={str(workdir)!r},
                    env={{"SLURM_CONF": {env["LAZYSLURM_TEST_SLURM_CONF"]!r}}})
        run = submit(waits([1, 2, 3]), returns_lazy([4, 5]), cluster=c)
        print(run.id, flush=True)
        time.sleep(600)
        """
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert child.stdout is not None
    run_id = child.stdout.readline().strip()
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    c = slurm_cluster(env, tmp_path)
    run = Run.attach(run_id, c)
    got, lazy = run.result()
    assert got["total"] == 6 and got["files"] == ["v0", "v1", "v2"]
    assert lazy == [4, 5]
    assert any(aj.name == "write" for aj in run.array_jobs)  # the lazy one's children
    assert sorted(os.listdir(Path(got["dir"]) / "shared")) == ["v0", "v1", "v2"]


def test_example_workflows_run_as_a_script(tmp_path):
    """`python lazyslurm/examples/workflows.py`: tasks defined in __main__ travel by value (the
    runner is __main__ where they run), workflows and their children included."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, str(repo / "lazyslurm" / "examples" / "workflows.py")],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo), "LAZYSLURM_WORKDIR": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "fan-out/fan-in total: 124750 over 5 chunks" in proc.stdout


@pytest.mark.slurm
def test_example_workflows_on_slurm(env, tmp_path):  # noqa: F811
    """The example workflows on the real Slurm: train + evaluate, and pattern 1."""
    with slurm_cluster(env, tmp_path) as c:
        run = submit(
            ex.train_and_evaluate({"a": 1, "b": 2}), ex.fan_out_fan_in("d.csv", 5), cluster=c
        )
        models, merged = run.result()
    assert models["best"] == "b" and merged["total_sum"] == sum(range(500))


@pytest.mark.slurm
@pytest.mark.ssh
def test_workflow_over_ssh(env):  # noqa: F811
    """Over SSH with nothing installed on the cluster (by-value packaging), a workflow
    computes its children from the compute node (the slurm backend there, with the
    workflow's interpreter and staged code) and returns lazy ones too."""
    from test_backends_slurm import ssh_cluster

    with ssh_cluster(env) as c:
        got, lazy = compute(waits([1, 2, 3]), returns_lazy([4, 5]), cluster=c)
    assert got["total"] == 6 and got["files"] == ["v0", "v1", "v2"]
    assert lazy == [4, 5]
