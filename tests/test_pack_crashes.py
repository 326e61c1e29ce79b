"""Crashes inside packed Slurm elements (issue 20): a pack-mate that dies without a Python
exception (``os._exit``, a segfault, a signal) or raises a BaseException fails alone,
with its own error naming it and the pack's stderr tail; its mates keep their results."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lazyslurm import Cluster, compute, submit, task
from lazyslurm.backends.base import DONE, FAILED
from lazyslurm.errors import ElementCrashedError, ElementFailedError, TaskError
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import make_plan
from lazyslurm.runner import run_slurm_element
from lazyslurm.store import RunLayout, atomic_write, pack_keys, read_pickle

REPO = Path(__file__).resolve().parent.parent


def _run_dir(tmp_path: Path, jobs: list) -> RunLayout:
    run_id = "20260101-000000-cccccc"
    paths = RunLayout.of(run_id, tmp_path)
    paths.make_dirs()
    for rel, data in encode_run(make_plan(jobs), run_id=run_id, outputs=[], by_value=True).items():
        atomic_write(f"{paths.root}/{rel}", data)
    return paths


def exits_at_two(x: int) -> int:
    if x == 2:
        os._exit(1)
    return x


@pytest.mark.parametrize("workers", [1, 2])
def test_a_crashed_element_gets_its_own_error_record_and_its_mates_run(tmp_path, workers):
    """Without Slurm: the pack's runner writes the crashed element's error record, and
    the pack file holds the results of all the others, those after it included."""
    jobs = list(task(cpus_per_task=workers, pack=4)(exits_at_two).map(range(4)))
    paths = _run_dir(tmp_path, jobs)
    assert run_slurm_element(paths.root, "aj0", 0) == 0  # every element left its outcome
    data = Path(paths.pack("aj0", 0)).read_bytes()
    assert pack_keys(data) == [jobs[i].key for i in (0, 1, 3)]
    assert os.listdir(paths.errors_dir) == [f"{jobs[2].key}.pkl"]
    record = read_pickle(paths.error(jobs[2].key))
    assert record["type_name"] == "ElementCrashedError" and record["key"] == jobs[2].key
    assert record["message"].startswith("crashed: exited with status 1 without a result")
    assert not os.path.exists(paths.partial_pack("aj0", 0))


def stopped_at_one(x: int, signame: str) -> int:
    if x == 1:  # as Slurm stops a job: a signal (here to the element's process only)
        os.kill(os.getpid(), getattr(signal, signame))
        time.sleep(30)
    return x


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_pack_stopped_by_a_signal_stops_and_blames_no_element(tmp_path, signame):
    """SIGTERM and SIGINT stop a pack (scancel, the time limit): not a crash of the
    element that was running. The runner dies of the same signal (Slurm records what
    stopped it), writes no error record, and keeps the finished results in the partial
    file. A real SIGINT is no KeyboardInterrupt of the task's own."""
    stopped = task(pack=3)(stopped_at_one)
    paths = _run_dir(tmp_path, list(stopped.map([(x, signame) for x in range(3)])))
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "PYTHONPATH": str(REPO)}
    runner = REPO / "lazyslurm" / "runner" / "__main__.py"
    res = subprocess.run(
        [sys.executable, str(runner), paths.root, "aj0"], env=env, capture_output=True, timeout=60
    )
    assert res.returncode == -getattr(signal, signame), res.stderr
    assert os.listdir(paths.errors_dir) == []
    assert sorted(os.listdir(paths.results_dir)) == ["aj0_0.partial"]
    assert len(pack_keys(Path(paths.partial_pack("aj0", 0)).read_bytes())) == 1


@pytest.fixture
def opts(cluster_env, tmp_path):
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    return dict(workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5)


def _error_record(cl: Cluster, run, key: str) -> dict:
    return read_pickle(RunLayout.of(run.id, cl.backend.workdir).error(key))


@task(cpus_per_task=2, pack=4)
def forked_crash(x: int) -> int:
    if x == 1:
        print("element 1 leaves without a word", file=sys.stderr, flush=True)
        os._exit(0)
    if x == 2:
        os.kill(os.getpid(), signal.SIGSEGV)
    return x


@pytest.mark.slurm
def test_a_crash_in_a_forked_pack_is_a_failure_of_its_own_element(opts):
    """A forked pack (cpus_per_task=2, pack=4): the worker that called os._exit(0) and the
    one killed by SIGSEGV are FAILED with an error record each (not DONE, which made
    result() raise a CorruptResultError that read like tampering); the others are DONE."""
    xs = forked_crash.map(range(4))
    with Cluster("slurm", **opts) as cl:
        run = submit(xs, cluster=cl)
        snap = run.wait()
        (aj,) = run.array_jobs
        assert snap.states[aj.id] == [DONE, FAILED, FAILED, DONE]
        with pytest.raises(ElementCrashedError) as info:
            run.raise_failures(snap)
        err = info.value
        assert isinstance(err, ElementFailedError) and isinstance(err, TaskError)
        assert err.key == xs[1].key
        assert "exited 0 without a result" in str(err)
        assert "element 1 leaves without a word" in err.stderr_tail
        killed = _error_record(cl, run, xs[2].key)
        assert killed["type_name"] == "ElementCrashedError"
        assert "killed by signal 11 (SIGSEGV)" in killed["message"]
        assert compute(xs[0], xs[3], cluster=cl) == (0, 3)  # from the pack: not run again
        assert cl.backend.stats["sbatch"] == 1


def _segfault() -> None:
    ctypes.string_at(0)


def _interrupt() -> None:
    raise KeyboardInterrupt("raised by the task")


def _generator_exit() -> None:
    raise GeneratorExit("raised by the task")


CRASHES = {
    "os._exit(1)": lambda: os._exit(1),
    "segfault": _segfault,
    "KeyboardInterrupt": _interrupt,
    "GeneratorExit": _generator_exit,
}


@task(pack=4)
def sequential_crash(x: int, how: str) -> int:
    print(f"element {x} starts", file=sys.stderr, flush=True)
    if x == 2:
        CRASHES[how]()
    return x


@pytest.mark.slurm
@pytest.mark.parametrize("how", list(CRASHES))
def test_a_crash_in_a_sequential_pack_blames_its_own_element(opts, how):
    """A sequential pack (pack=4) whose element 2 crashes: elements 0 and 1 (finished
    before) and 3 (run after) are DONE; element 2 is FAILED with an error naming its own
    key and the pack's stderr tail (before: every mate FAILED, element 0 blamed, an
    empty tail). A KeyboardInterrupt or GeneratorExit raised by the task is the task's
    failure, with its type name."""
    xs = sequential_crash.map([(x, how) for x in range(4)])
    with Cluster("slurm", **opts) as cl:
        run = submit(xs, cluster=cl)
        snap = run.wait()
        (aj,) = run.array_jobs
        assert snap.states[aj.id] == [DONE, DONE, FAILED, DONE]
        with pytest.raises(TaskError) as info:
            run.raise_failures(snap)
        err = info.value
        assert err.key == xs[2].key
        text = str(err)
        if how in ("KeyboardInterrupt", "GeneratorExit"):
            assert f"raised {how}: raised by the task" in text
            assert not isinstance(err, ElementFailedError)
        else:
            assert isinstance(err, ElementCrashedError)
            assert "element 2 starts" in err.stderr_tail and "element 1 starts" not in text
            why = "exited with status 1" if how == "os._exit(1)" else "killed by signal 11"
            assert why in text
            if how == "segfault":  # faulthandler's traceback of the crash
                assert "Segmentation fault" in err.stderr_tail and "_segfault" in text
        assert compute(xs[0], xs[1], xs[3], cluster=cl) == (0, 1, 3)
        assert cl.backend.stats["sbatch"] == 1


@task(pack=3)
def fills_the_disk(x: int) -> str:
    if x == 2:  # the pack's partial file is past this size: its next write fails (EFBIG)
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
    return "x" * 100_000


@pytest.mark.slurm
def test_a_pack_that_cannot_write_its_results_shows_the_pack_level_stderr(opts):
    """The pack file (or its partial file) cannot be written (a full disk; here the file
    size limit): the error shows the pack-level stderr that says so, not element 0's
    empty part of the log."""
    xs = fills_the_disk.map(range(3))
    with Cluster("slurm", **opts) as cl, pytest.raises(ElementFailedError) as info:
        compute(xs, cluster=cl)
    tail = info.value.stderr_tail
    assert "could not write the results of pack" in tail
    assert "File too large" in tail


@pytest.mark.slurm
def test_a_checkpoint_hook_in_a_sequential_pack_still_runs_on_requeue(cluster_env, opts, tmp_path):
    """requeue=True in a sequential pack (whose elements run in a forked child): Slurm's
    SIGTERM still reaches the element's checkpoint hook, and the next attempt resumes.
    The child gets it twice (from Slurm, and passed on by the pack's runner): the second
    must not end the element while its hook still writes (it did: a truncated state)."""
    import json

    from test_backends_slurm import requeue_now, resumable, wait_until_running

    slurm_env = {**os.environ, "SLURM_CONF": cluster_env["LAZYSLURM_TEST_SLURM_CONF"]}
    state = tmp_path / "state.json"
    xs = resumable.map([(str(tmp_path / "quick.json"), 0), (str(state), 8)], pack=2)
    with Cluster("slurm", **opts) as cl:
        run = submit(xs, cluster=cl)
        wait_until_running(run)
        time.sleep(3)  # element 1 has done some work
        requeue_now(f"{run.handle.job_ids['aj0']}_0", slurm_env)
        deadline = time.monotonic() + 10  # the hook runs on the node once Slurm signals it
        while not state.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        saved = json.loads(state.read_text())  # written by the hook before the job ended
        assert saved["attempts"] == 1 and saved["steps"] >= 1
        (results,) = run.result()
    assert results[1] == {"steps": 8, "attempts": 2}
