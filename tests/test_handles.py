"""The job handle (lazyslurm.handles): slurm-sdk's vocabulary on lazy jobs, flush on wait."""

from __future__ import annotations

import re
import time
from typing import get_type_hints

import pytest
from test_backends_slurm import env, ssh_cluster  # noqa: F401 - fixtures

from lazyslurm import Cluster, Job, JobArray, Run, submit, task
from lazyslurm.errors import LazyValueError, NotSubmittedError, WaitTimeoutError
from lazyslurm.graph.core import RESERVED_NAMES, JobView


@task
def inc(x: int) -> int:
    return x + 1


@task
def fail(x: int) -> int:
    raise ValueError(f"bad {x}")


@task
def nap(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


@task
def talk(lines: int, pause: float) -> int:
    import sys

    for i in range(lines):
        print(f"line {i}")
        print(f"err {i}", file=sys.stderr)
        time.sleep(pause)
    return lines


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@pytest.fixture
def local(tmp_path):
    return Cluster("local", workdir=tmp_path, max_workers=2)


# --------------------------------------------------------------------------- waiting


def test_wait_returns_true_on_success_and_false_on_failure(local):
    """wait() is True for a job that succeeded, False for a failed one, and never raises."""
    with local:
        ok, bad = inc(1), fail(2)
        assert ok.wait() is True
        assert bad.wait() is False
        assert inc.map([1, 2]).wait() is True
        assert fail.map([1, 2]).wait() is False


def test_get_result_raises_the_original_exception(local):
    """get_result() of a failed job raises the task's own exception type."""
    with local:
        bad = fail(3)
        assert bad.wait() is False
        with pytest.raises(ValueError, match="bad 3"):
            bad.get_result()
        with pytest.raises(ValueError, match="bad 1"):
            fail.map([1]).get_results()
        assert inc(total(inc.map([1, 2]))).get_result() == 6


def test_a_dependent_of_a_failure_is_cancelled_and_raises_the_root_cause(local):
    """wait() on a job whose upstream failed is False; get_result raises the upstream's error."""
    with local:
        job = inc(fail(1))
        assert job.wait() is False
        assert job.get_status() == "CANCELLED"
        with pytest.raises(ValueError, match="bad 1"):
            job.get_result()


def test_wait_timeout_raises_timeout_error_and_leaves_the_job_running(local):
    """A timeout raises TimeoutError; the job keeps running and a later wait() succeeds."""
    with local:
        job = nap(1.5, "done")
        with pytest.raises(TimeoutError) as info:
            job.wait(timeout=0.2)
        assert isinstance(info.value, WaitTimeoutError)
        assert job.get_status() in ("PENDING", "RUNNING")
        assert job.wait(poll_interval=0.05) is True
        assert job.get_result() == "done"


def test_wait_rejects_bad_timeouts(local):
    """A negative timeout or a non-positive poll interval is refused at once."""
    with pytest.raises(ValueError, match="timeout"):
        inc(1).wait(timeout=-1, cluster=local)
    with pytest.raises(ValueError, match="poll_interval"):
        inc(1).wait(poll_interval=0, cluster=local)


# --------------------------------------------------------------------------- state, ids


def test_status_id_and_predicates_follow_the_job(local):
    """Before submission: NOT_SUBMITTED and id None; then RUNNING; then COMPLETED."""
    with local:
        job = nap(1.0, 1)
        assert job.id is None and job.get_status() == "NOT_SUBMITTED"
        assert not job.is_running() and not job.is_completed()
        local.submit(nap)(1.0, 1)  # the same call: submitted at once, same key
        assert job.id is not None and ":aj0_0" in job.id
        deadline = time.monotonic() + 10
        while job.get_status() != "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.is_running() and not job.is_completed()
        assert job.wait()
        assert job.get_status() == "COMPLETED"
        assert job.is_completed() and job.is_successful() and not job.is_running()


def test_array_ids_and_status(local):
    """A JobArray's id is its array job's; an element's id ends with _INDEX."""
    with local:
        arr = inc.map([10, 20, 30])
        assert arr.id is None and arr.get_status() == "NOT_SUBMITTED"
        assert arr.wait()
        run_aj = arr.id
        assert run_aj is not None and "_" not in run_aj.split(":")[-1]
        assert [j.id for j in arr] == [f"{run_aj}_{i}" for i in range(3)]
        assert arr.get_status() == "COMPLETED" and arr.is_successful()
        assert fail.map([1]).wait() is False
        assert fail.map([1]).get_status() == "FAILED"


def test_cancel_stops_one_job_and_its_dependents_only(local):
    """cancel() ends a running job CANCELLED, cancels its dependents, spares the others."""
    with local:
        slow = nap(30, 1)
        after = inc(slow)
        other = nap(0.2, 2)
        assert other.wait() is True  # the flush submitted all three
        assert slow.id is not None and after.id is not None
        assert slow.cancel() is True
        assert slow.wait() is False and slow.get_status() == "CANCELLED"
        assert after.wait() is False and after.get_status() == "CANCELLED"
        assert other.wait() is True and other.get_result() == 2


def test_cancel_before_submission_drops_the_job_from_the_flush(local):
    """A job cancelled before any wait is never submitted by the block's flush."""
    with local:
        dropped = nap(5, 1)
        kept = inc(1)
        assert dropped.cancel() is True
        assert kept.wait()
        assert dropped.id is None and dropped.get_status() == "NOT_SUBMITTED"


# --------------------------------------------------------------------------- output


def test_stdout_stderr_script_and_tail(local):
    """get_stdout/get_stderr read the logs; get_script shows how it runs; tail(n) the end."""
    with local:
        job = talk(5, 0)
        with pytest.raises(NotSubmittedError, match=r"cluster\.submit"):
            job.get_stdout()
        assert job.wait()
        assert job.get_stdout().splitlines() == [f"line {i}" for i in range(5)]
        assert "err 4" in job.get_stderr()
        assert "lazyslurm.runner" in job.get_script()
        assert job.tail(2) == ["line 3", "line 4"]
        assert job.tail(2, stream="err") == ["err 3", "err 4"]
        arr = talk.map([(1, 0), (2, 0)])
        assert arr.wait()
        assert arr.get_stdout() == ["line 0\n", "line 0\nline 1\n"]


def test_tail_follow_streams_lines_while_the_job_runs(local):
    """tail(follow=True) yields lines while the job is still running, then stops at its end."""
    with local:
        job = local.submit(talk)(6, 0.4)
        seen = []
        running_when_first = None
        for line in job.tail(n=10, follow=True, poll_interval=0.05):
            if running_when_first is None:
                running_when_first = job.get_status()
            seen.append(line)
        assert seen == [f"line {i}" for i in range(6)]
        assert running_when_first == "RUNNING"
        assert job.is_completed()


# --------------------------------------------------------------------------- API surface


def test_dependencies_and_generics():
    """JobArray.dependencies lists the outside jobs it waits on; Job[T] works in annotations."""
    a, b = inc(1), inc(2)
    arr = inc.map([a, b])
    later = total.after(a).map([[b], [b]])
    assert set(arr.dependencies) == {a, b}
    assert set(later.dependencies) == {a, b}
    assert inc(a).dependencies == (a,)

    def annotated(x: Job[list[dict]]) -> JobArray[int]: ...

    hints = get_type_hints(annotated)
    assert hints["x"] == Job[list[dict]] and hints["return"] == JobArray[int]


def test_reserved_names_are_documented_and_other_names_are_views():
    """Every public name of Job is in RESERVED_NAMES; any other attribute is a lazy view."""
    for cls in (Job, JobArray, JobView):
        public = {n for n in dir(cls) if not n.startswith("_")}
        assert public <= RESERVED_NAMES, public - RESERVED_NAMES
    assert len(RESERVED_NAMES) < 40
    job = inc(1)
    assert isinstance(job.id, (str, type(None)))
    assert callable(job.cancel) and callable(job.wait)
    assert isinstance(job.accuracy, JobView)
    assert isinstance(job.accuracy.id, JobView)  # on a view, every name is a view


@task
def words(text: str) -> str:
    return text


@task
def count(parts: list[str]) -> int:
    return len(parts)


def test_a_called_view_is_a_lazy_method_call(local):
    """job.split(" ") is resolved inside the consumer, never as a Slurm job of its own."""
    with local:
        text = words("a b c")
        view = text.split(" ")
        assert isinstance(view, JobView)
        assert count(view).get_result() == 3
        assert view.get_result() == ["a", "b", "c"]
        assert text.upper().get_result() == "A B C"
        (run,) = local.session.runs()  # one flush: words and count; no job for the views
        assert [aj.name for aj in run.array_jobs] == ["words", "count"]


def test_leaked_views_and_comparisons_raise_clear_errors():
    """print, f-strings, if and == on a lazy value raise an error naming it and the fix."""
    job = inc(1)
    view = job["k"]
    for use in (str, lambda v: f"{v}", bool, lambda v: v == 3, lambda v: v != 3, int):
        with pytest.raises(LazyValueError, match=r"JobView\(inc-.*get_result"):
            use(view)
    with pytest.raises(LazyValueError, match="compared with 10"):
        job == 10  # noqa: B015
    with pytest.raises(LazyValueError):
        inc.map([1]) == [2]  # noqa: B015
    assert job == inc(1) and job != inc(2) and view == job["k"]
    assert repr(view) == f"JobView({job.key}['k'])"


# --------------------------------------------------------------------------- flush on wait


def test_first_wait_submits_every_job_of_the_block_in_one_submission(local):
    """Inside `with cluster:` the first wait submits all jobs built so far, in one run."""
    with local:
        train = nap(0.5, "model")
        evaluate = nap(0.5, "baseline")
        sweep = inc.map([1, 2, 3])
        assert train.wait()
        # evaluation and the sweep were submitted before the first wait returned
        assert evaluate.id is not None and sweep.id is not None
        run_ids = {j.id.split(":")[0] for j in (train, evaluate, *sweep)}
        assert len(run_ids) == 1 and len(local.session.runs()) == 1
        assert evaluate.get_result() == "baseline" and sweep.get_results() == [2, 3, 4]
        assert len(local.session.runs()) == 1  # nothing submitted again


def test_train_then_evaluate_overlap_in_seed_style(local):
    """Seed style: training and evaluation run at the same time, not one after the other."""
    with local:
        train = talk(3, 0.3)
        evaluation = talk(3, 0.3)
        assert train.wait() and evaluation.wait()
        # each printed its first line before the other ended: they overlapped
        assert train.get_status() == evaluation.get_status() == "COMPLETED"
        assert train.id.split(":")[0] == evaluation.id.split(":")[0]


def test_jobs_outside_a_block_stay_lazy(local):
    """Outside `with cluster:` a wait submits only what it needs; other jobs stay lazy."""
    a = inc(100)
    b = inc(200)
    assert a.wait(cluster=local)
    assert a.id is not None and b.id is None
    assert b.get_result(cluster=local) == 201


def test_jobs_never_waited_on_are_not_submitted_when_the_block_ends(local):
    """Leaving the block submits nothing: a job never waited on never runs."""
    with local:
        never = inc(7)
    assert never.id is None and local.session.runs() == [] and local.session.pending() == []


def test_cluster_submit_submits_at_once_with_overrides(local):
    """cluster.submit(task, **options)(*args) submits at once and returns the Job handle."""
    with local:
        job = local.submit(inc, mem="1G")(41)
        assert isinstance(job, Job) and job.id is not None
        assert job.task.resources.mem_mb == 1024
        arr = local.submit(inc).map([1, 2])
        assert arr.id is not None
        assert job.get_result() == 42 and arr.get_results() == [2, 3]
    with pytest.raises(TypeError, match="@task"):
        local.submit(len)


def test_a_new_job_on_an_unfinished_one_waits_for_it_instead_of_resubmitting(local):
    """A job that needs a still-running job of the session is not submitted twice."""
    with local:
        first = local.submit(nap)(0.5, 5)
        assert inc(first).get_result() == 6
        assert len(local.session.runs()) == 2
        assert first.get_result() == 5


def test_handles_work_after_the_block_ends(local):
    """After the block, a handle still finds the session that ran it."""
    with local:
        job = inc(5)
        assert job.wait()
    assert job.id is not None and job.get_status() == "COMPLETED"
    assert job.get_result() == 6


# --------------------------------------------------------------------------- real Slurm, over SSH


@pytest.fixture
def ssh(env):  # noqa: F811 - the imported fixture
    c = ssh_cluster(env)  # nothing installed on the cluster: packaging by value
    yield c
    c.close()


def _until(job, states, limit=60.0):
    deadline = time.monotonic() + limit
    while job.get_status() not in states and time.monotonic() < deadline:
        time.sleep(0.2)
    return job.get_status()


@pytest.mark.slurm
@pytest.mark.ssh
def test_job_handle_on_real_slurm_over_ssh(ssh):
    """Over SSH: id is Slurm's ID_INDEX, get_status follows, tail streams, get_stdout reads."""
    with ssh:
        job = ssh.submit(talk)(4, 1.0)
        assert re.fullmatch(r"\d+_0", job.id)
        assert job.get_status() in ("PENDING", "RUNNING", "COMPLETED")
        script = job.get_script()  # the staged runner, started by path (issue 13)
        assert "#!/bin/bash" in script and "lazyslurm/runner/__main__.py" in script
        lines, status_at_first = [], None
        for line in job.tail(n=10, follow=True, poll_interval=0.2):
            status_at_first = status_at_first or job.get_status()
            lines.append(line)
        assert lines == [f"line {i}" for i in range(4)]
        # the first line came while the job ran (sacct may still say PENDING a moment)
        assert status_at_first in ("PENDING", "RUNNING")
        assert job.wait() and job.get_status() == "COMPLETED" and job.is_successful()
        assert job.get_stdout().splitlines() == lines and "err 3" in job.get_stderr()
        assert job.get_result() == 4


@pytest.mark.slurm
@pytest.mark.ssh
def test_cancel_on_real_slurm_over_ssh(ssh):
    """Over SSH: cancel() scancels one element; its sibling in the same array job completes."""
    with ssh:
        arr = ssh.submit(nap).map([(60, 1), (1, 2)])
        slow, quick = arr
        assert arr.id.isdigit() and slow.id == f"{arr.id}_0" and quick.id == f"{arr.id}_1"
        assert _until(slow, ("RUNNING",)) == "RUNNING" and slow.is_running()
        assert slow.cancel() is True
        assert slow.wait() is False and slow.get_status() == "CANCELLED"
        assert quick.wait() is True and quick.get_result() == 2
        assert arr.get_status() == "CANCELLED" and arr.is_completed()


def test_leaving_a_local_block_lets_submitted_jobs_finish_or_stops_them_on_error(local):
    """On local, the block's end waits for submitted jobs; an exception cancels them."""
    with local:
        done = local.submit(nap)(0.5, 1)
    assert done.get_status() == "COMPLETED" and done.get_result() == 1
    with pytest.raises(KeyError), local:
        stopped = local.submit(nap)(30, 2)
        raise KeyError("user error")
    assert stopped.get_status() == "CANCELLED"


def test_a_handle_sees_a_failure_found_by_an_attached_run(tmp_path):
    """A job whose run was re-attached (Run.attach) reports its end state, without hanging."""
    first = Cluster("local", workdir=tmp_path, max_workers=1)
    with first:
        job = fail(9)
        run = submit(job)
        run.wait()
    second = Cluster("local", workdir=tmp_path, max_workers=1)
    attached = Run.attach(run.id, second)
    with pytest.raises(ValueError, match="bad 9"):
        attached.result()
    assert job.wait(cluster=second) is False
    assert job.get_status(cluster=second) == "FAILED"
    with pytest.raises(ValueError, match="bad 9"):
        job.get_result(cluster=second)
