"""One behaviour suite that every backend passes: local, sync, fake, and the real
``SlurmBackend`` over a stand-in Slurm (tests/slurm_standin.py), with sacct and with squeue,
and the same suite on the real test clusters (``real-*``, marker ``slurm``).

Written once (as dask's ``GetFunctionTestMixin`` is): the ``backend`` fixture hands each
test a :class:`Harness` that builds clusters on one store; a test states a behaviour in
the public API and every backend must show it. Where a backend cannot show a behaviour
(sync and fake run everything inside ``start``: nothing is left to cancel), the test says
so with a skip.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from slurm_standin import SlurmStandIn

from lazyslurm import Cluster, Run, compute, submit, task
from lazyslurm.backends.base import CANCELLED, DONE, RUNNING
from lazyslurm.backends.fake import FakeBackend
from lazyslurm.backends.slurm import SlurmBackend
from lazyslurm.errors import JobCancelledError, TaskCancelledError, TaskError
from lazyslurm.planning import AFTERCORR, AFTEROK, ArrayJob

# --------------------------------------------------------------------------- tasks


@task
def inc(x):
    return x + 1


@task
def double(x):
    return 2 * x


@task
def total(xs):
    return sum(xs)


@task
def boom(x):
    if x == 1:
        raise KeyError(f"no item {x}")
    return x


@task
def touch(path):
    Path(path).write_text("first")
    return path


@task
def saw(path):
    """Whether ``touch`` ran before this (an ordering-only edge carries no data)."""
    return os.path.exists(path)


@task(max_concurrent=1)
def occupy(room, i):
    """Enter ``room`` (a directory), count who is inside, stay a moment, leave."""
    me = Path(room) / str(i)
    me.write_text("")
    inside = len(os.listdir(room))
    time.sleep(0.2)
    me.unlink()
    return inside


@task
def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


# --------------------------------------------------------------------------- harness


class Harness:
    """One backend kind over one store: ``cluster()`` is a new session there (a new backend
    object, as another process would make), ``concurrent`` says whether runs proceed after
    ``start`` returns (so that they can be seen running and cancelled)."""

    def __init__(self, kind: str, tmp_path: Path, slurm_conf: str | None = None) -> None:
        self.kind = kind
        self.workdir = tmp_path / "work"
        self.concurrent = kind not in ("sync", "fake")
        self.standin: SlurmStandIn | None = None
        if kind.startswith("slurm"):
            self.standin = SlurmStandIn(tmp_path / "slurm", accounting=kind == "slurm-sacct")
        self.slurm_conf = slurm_conf  # real-* kinds: the test cluster's slurm.conf
        self._clusters: list[Cluster] = []

    def cluster(self) -> Cluster:
        fast = {"poll_min_s": 0.02, "poll_max_s": 0.1}
        if self.kind in ("local", "sync"):
            cl = Cluster(self.kind, workdir=self.workdir, max_workers=2, **fast)
        elif self.kind == "fake":
            cl = Cluster(FakeBackend(self.workdir), **fast)
        elif self.kind == "processes":
            from lazyslurm.examples.custom_backend import SPEC

            cl = Cluster(SPEC, workdir=self.workdir, slots=2, **fast)
        elif self.kind.startswith("real"):
            env = {"SLURM_CONF": self.slurm_conf}
            cl = Cluster("slurm", workdir=self.workdir, env=env, poll_min_s=0.05, poll_max_s=0.3)
        else:
            assert self.standin is not None
            cl = Cluster(SlurmBackend(self.standin, workdir=str(self.workdir)), **fast)
        self._clusters.append(cl)
        return cl

    def close(self) -> None:
        for cl in self._clusters:
            cl.close()
        if self.standin is not None:
            self.standin.close()


KINDS = [
    "local",
    "sync",
    "fake",
    "processes",  # the one-file backend of docs/backends.md (lazyslurm/examples/custom_backend.py)
    "slurm-sacct",  # SlurmBackend over the stand-in Slurm, with accounting
    "slurm-squeue",  # ... and without (status from squeue)
    # the same suite on the real test clusters (tests/cluster/start.sh)
    pytest.param("real-sacct", marks=pytest.mark.slurm),
    pytest.param("real-squeue", marks=pytest.mark.slurm),
]


@pytest.fixture(params=KINDS)
def backend(request, tmp_path):
    """Each backend in turn, with a private store."""
    conf = None
    if request.param.startswith("real"):
        env = request.getfixturevalue("cluster_env")
        acct = request.param == "real-sacct"
        conf = env["LAZYSLURM_TEST_SLURM_CONF" if acct else "LAZYSLURM_TEST_SLURM_CONF_NOACCT"]
    h = Harness(request.param, tmp_path, conf)
    yield h
    h.close()


# every registered backend is in KINDS: the real test clusters cover slurm, and ssh is
# the same SlurmBackend over another shell (its runs: tests/test_handles.py and others)
_COVERED = {"local", "sync", "slurm", "ssh", "processes"}


def test_the_suite_covers_every_registered_backend() -> None:
    """A backend registered here (built in, or the documented example) is in this suite."""
    import lazyslurm.examples.custom_backend  # noqa: F401 - registers "processes"
    from lazyslurm import backends

    assert set(backends.names()) <= _COVERED


def test_the_docs_show_the_example_backend_whole() -> None:
    """docs/backends.md holds lazyslurm/examples/custom_backend.py verbatim: what the page teaches
    is what this suite runs."""
    root = Path(__file__).resolve().parent.parent
    source = (root / "lazyslurm" / "examples" / "custom_backend.py").read_text()
    assert f"```python\n{source}```" in (root / "docs" / "backends.md").read_text()


def wait_until(cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


# --------------------------------------------------------------------------- values


def test_map_and_fan_in_compute_the_right_values(backend):
    """A map, a fan-in over it and a plain value come back as compute's tuple."""
    arr = inc.map(range(5))
    with backend.cluster() as cl:
        assert compute(total(arr), arr, 7, cluster=cl) == (15, [1, 2, 3, 4, 5], 7)


def test_elementwise_chains_are_aftercorr_and_correct(backend):
    """A map over a map is submitted element-wise (aftercorr) and gives each element's value."""
    a = inc.map(range(4))
    b = double.map(a)
    with backend.cluster() as cl:
        run = submit(total(b), b, cluster=cl)
        assert run.result() == (20, [2, 4, 6, 8])
    kinds = {aj.name: [k for k, _ in aj.dependencies] for aj in run.array_jobs}
    assert kinds == {"inc": [], "double": [AFTERCORR], "total": [AFTEROK]}


def test_after_runs_its_job_first(backend, tmp_path):
    """``task.after(job)`` runs job first though no data passes between them."""
    marker = str(tmp_path / "marker")
    first = touch(marker)
    with backend.cluster() as cl:
        run = submit(saw.after(first)(marker), cluster=cl)
        assert run.result() == (True,)
    (up, down) = run.array_jobs
    assert down.after == (up.id,) and down.dependencies == ((AFTEROK, up.id),)


# --------------------------------------------------------------------------- failures


def test_a_failure_reraises_cancels_dependents_and_spares_siblings(backend):
    """A task's exception re-raises with its type and remote traceback; its dependents are
    cancelled (err.cancelled); independent elements and siblings still complete."""
    bad = boom.map(range(3))
    after_bad = inc.map(bad)  # element-wise: only element 1 is cancelled
    fan_in = total(bad)  # needs every element: cancelled
    sibling = double.map(range(3))  # independent: completes
    with backend.cluster() as cl:
        run = submit(fan_in, after_bad, sibling, cluster=cl)
        run.wait()  # to the end: result() alone fails fast and cancels what is unfinished
        with pytest.raises(KeyError) as info:
            run.result()
        err = info.value
        assert isinstance(err, TaskError) and err.key == bad[1].key
        assert "in boom" in err.remote_traceback  # (source lines only where the module is)
        assert "KeyError: 'no item 1'" in err.remote_traceback
        assert "remote traceback" in "".join(traceback.format_exception_only(err))
        assert {c.key for c in err.cancelled} == {after_bad[1].key, fan_in.key}
        assert all(
            isinstance(c, TaskCancelledError) and c.cause_key == bad[1].key for c in err.cancelled
        )
        states = {
            key: s
            for aj in run.array_jobs
            for key, s in zip(aj.keys, run.last_snapshot.states[aj.id], strict=True)
        }
        for job in (bad[0], bad[2], after_bad[0], after_bad[2], *sibling):
            assert states[job.key] == DONE
        assert states[after_bad[1].key] == states[fan_in.key] == CANCELLED
        # what completed is remembered: asking for it again submits nothing
        again = submit(sibling, after_bad[2], cluster=cl)
        assert again.handle is None and again.result() == ([0, 2, 4], 3)


# --------------------------------------------------------------------------- throttle


def test_throttle_is_respected(backend, tmp_path):
    """An array with max_concurrent=1 never has two elements running at once."""
    room = tmp_path / "room"
    room.mkdir()
    with backend.cluster() as cl:
        (inside,) = compute(occupy.map([(str(room), i) for i in range(4)]), cluster=cl)
    assert inside == [1, 1, 1, 1]
    if backend.standin is not None:  # what Slurm was asked, and what it did
        (job,) = backend.standin.jobs().values()
        assert job["throttle"] == 1 and job["max_running"] == 1


# --------------------------------------------------------------------------- cancel


def test_cancel_after_the_end_changes_nothing(backend):
    """Cancelling a finished run leaves its results readable."""
    with backend.cluster() as cl:
        run = submit(total(inc.map(range(3))), cluster=cl)
        assert run.result() == (6,)
        run.cancel()
        assert run.result() == (6,)


def test_cancel_stops_a_running_run(backend):
    """Cancel ends every unfinished element CANCELLED (dependents too) and the result
    raises JobCancelledError."""
    if not backend.concurrent:
        pytest.skip(f"{backend.kind} runs everything inside start(): nothing left to cancel")
    slow = sleep_for.map([60, 60])
    with backend.cluster() as cl:
        run = submit(total(slow), cluster=cl)
        wait_until(lambda: RUNNING in run.poll().states[run.array_jobs[0].id])
        started = time.monotonic()
        run.cancel()
        snap = run.wait(timeout=30)
        assert time.monotonic() - started < 30
        assert all(s == CANCELLED for states in snap.states.values() for s in states)
        with pytest.raises(JobCancelledError):
            run.result()


# --------------------------------------------------------------------------- attach


def graph() -> tuple[Any, ...]:
    """Every kind of edge: element-wise, fan-in, ordering-only."""
    a = inc.map(range(4))
    b = double.map(a)
    t = total(b)
    return t, b, inc.after(t)(100)


def test_attach_gives_the_same_outputs_and_array_jobs(backend):
    """Run.attach from the store (a new session) gives the same outputs and the same
    ArrayJob records; each record survives its manifest form (through JSON) unchanged."""
    with backend.cluster() as cl:
        run = submit(*graph(), cluster=cl)
        out = run.result()
    assert out == (20, [2, 4, 6, 8], 101)
    for aj in run.array_jobs:
        assert ArrayJob.from_manifest(json.loads(json.dumps(aj.to_manifest()))) == aj
    attached = Run.attach(run.id, backend.cluster())
    assert attached.array_jobs == run.array_jobs
    assert attached.handle.job_ids == run.handle.job_ids
    assert attached.result() == out


def test_attach_to_a_failed_run_raises_the_same_failure(backend):
    """A re-attached failed run raises the task's exception type again."""
    with backend.cluster() as cl:
        run = submit(total(boom.map(range(3))), cluster=cl)
        with pytest.raises(KeyError):
            run.result()
    attached = Run.attach(run.id, backend.cluster())
    with pytest.raises(KeyError) as info:
        attached.result()
    assert info.value.key == boom(1).key


def test_results_are_read_in_one_transfer(backend):
    """Gathering a run's outputs reads every result file in one read_files call."""
    arr = inc.map(range(6))
    with backend.cluster() as cl:
        run = submit(total(arr), arr, cluster=cl)
        run.wait()
        calls: list[list[str]] = []
        read = cl.backend.read_files

        def counting(paths):
            calls.append(list(paths))
            return read(paths)

        cl.backend.read_files = counting  # type: ignore[method-assign]
        trips = backend.standin.round_trips if backend.standin else 0
        assert run.result() == (21, [1, 2, 3, 4, 5, 6])
    assert len(calls) == 1 and len(calls[0]) == 7
    if backend.standin is not None:  # the poll that sees the end, then one read
        assert backend.standin.round_trips - trips <= 2


def test_visualize_of_a_live_and_an_attached_run_agree(backend):
    """The jobs-level picture of a run and of the same run re-attached have the same source
    (stages, dependency kinds, ordering edges, states)."""
    with backend.cluster() as cl:
        run = submit(*graph(), cluster=cl)
        run.result()
        live = run.visualize(level="jobs").source
    attached = Run.attach(run.id, backend.cluster())
    attached.wait()
    again = attached.visualize(level="jobs").source
    assert again == live
    assert "label=aftercorr" in live and "label=ordering" in live and "stage 3" in live
