"""compute/submit on the embedded backends: results, errors, session memory, events."""

from __future__ import annotations

import dataclasses
import itertools
import os
import threading
import time
from typing import NamedTuple

import pytest

from lazyslurm import Cluster, compute, plan, submit, task
from lazyslurm.backends.base import CANCELLED, FAILED
from lazyslurm.errors import (
    ElementFailedError,
    SerializationError,
    TaskCancelledError,
    TaskError,
)


@task
def inc(x):
    return x + 1


@task
def add(x, y):
    return x + y


@task
def total(xs):
    return sum(xs)


@task
def fail_on(x, bad):
    if x == bad:
        msg = f"bad value {x}"
        raise ValueError(msg)
    return x


class CustomError(Exception):
    """An exception type of the user's own."""


@task
def raise_custom():
    raise CustomError("custom")


@task
def slow_or_fail(i):
    if i == 1:
        msg = "element 1 fails"
        raise ValueError(msg)
    time.sleep(30)
    return i


@task
def stamp(path, i):
    """Record start/end times of element i to a file (for throttle checks)."""
    t0 = time.time()
    time.sleep(0.05)
    with open(os.path.join(path, f"{i}"), "w") as fh:
        fh.write(f"{t0} {time.time()}")
    return i


def test_compute_returns_tuple_and_rebuilds_containers(cluster):
    """compute returns a tuple; containers come back with results in place."""
    a = inc(1)
    assert compute(a, [inc(a), {"k": a}], 7) == (2, [3, {"k": 2}], 7)


def test_expr_compute_returns_one_result(cluster):
    """expr.compute() returns the value itself."""
    assert add(inc(1), 10).compute() == 12


def test_job_array_and_fan_in(cluster):
    """A JobArray computes to a list; as an argument it is the list of its results."""
    arr = inc.map(range(5))
    assert arr.compute() == [1, 2, 3, 4, 5]
    assert total(arr).compute() == 15


def test_views_resolve_inside_consumer(cluster):
    """job[i] and job["k"] are resolved in the consumer and add no array job."""

    @task
    def pair():
        return {"a": [10, 20]}

    p = pair()
    expr = add(p["a"][0], p["a"][1])
    assert len(plan(expr).array_jobs) == 2
    assert expr.compute() == 30


def test_nout_maps_lazily(cluster):
    """A task called with nout=N can be mapped over, items unpacked at run time."""

    @task
    def split(n):
        return [{"x": i, "y": 10 * i} for i in range(n)]

    s = split(3, nout=3)
    assert total(add.map(s)).compute() == 0 + 11 + 22


def test_nested_jobs_in_containers_are_dependencies(cluster):
    """Jobs inside lists, tuples, dicts and sets are resolved to their results."""

    @task
    def show(obj):
        return obj

    a, b = inc(1), inc(2)
    assert show({"l": [a], "t": (b,), "s": {a, b}}).compute() == {"l": [2], "t": (3,), "s": {2, 3}}


def test_remote_error_keeps_type_and_traceback(cluster):
    """A task's exception re-raises with its original type, task name, key, traceback."""
    job = fail_on(2, bad=2)
    with pytest.raises(ValueError, match="bad value 2") as info:
        job.compute()
    err = info.value
    assert isinstance(err, TaskError)
    assert err.task == "fail_on" and err.key == job.key
    assert "Traceback" in err.remote_traceback and "fail_on" in str(err)


def test_custom_exception_type_is_kept(cluster):
    """A user-defined exception type is kept too."""
    with pytest.raises(CustomError):
        raise_custom().compute()


def test_dependents_of_failure_are_cancelled(cluster):
    """Dependents of a failed task never run; the error names the failure and them."""
    a = fail_on.map([(i, 1) for i in range(3)])
    b = inc.map(a)
    with pytest.raises(ValueError, match="dependent task") as info:
        total(b).compute()
    assert info.value.key == a[1].key
    cancelled = info.value.cancelled
    cancelled_keys = {c.key for c in cancelled}
    assert {b[1].key, total(b).key} <= cancelled_keys
    assert all(isinstance(c, TaskCancelledError) and c.cause_key == a[1].key for c in cancelled)
    if cluster.backend_name == "local":  # logs of a failed node are still at hand
        assert "bad value 1" in a[1].logs()[1]
    # siblings that finished before the failure was seen are remembered; the rest were
    # cancelled when it was (result() fails fast)
    for node in (a[0], a[2], b[0], b[2]):
        assert (node.key in cluster.session.computed()) != (node.key in cancelled_keys)
    assert b[1].key not in cluster.session.computed()


def test_a_failure_raises_at_once_and_cancels_the_unfinished_rest(tmp_path):
    """result() raises as soon as one element fails; unfinished siblings are cancelled."""
    xs = slow_or_fail.map(range(3))
    with Cluster("local", workdir=tmp_path, max_workers=3):
        run = submit(xs)
        with pytest.raises(ValueError, match="element 1 fails") as info:
            run.result()
    assert run.last_snapshot.states["aj0"] == [CANCELLED, FAILED, CANCELLED]
    assert {c.key for c in info.value.cancelled} == {xs[0].key, xs[2].key}
    assert "cancelled" in str(info.value)


def test_unpicklable_argument_fails_before_anything_runs(cluster):
    """A non-picklable argument raises SerializationError naming it; nothing runs."""
    lock = threading.Lock()
    with pytest.raises(SerializationError, match=r"keyword argument 'y'.*lock"):
        add(inc(1), y=lock).compute()
    runs = cluster.workdir / "runs"
    assert not runs.exists() or not any(runs.iterdir())


def test_session_memory_runs_each_node_once(cluster, tmp_path):
    """After wait(), later graphs reuse stored results: nothing is planned twice."""
    a = inc.map(range(3))
    a.wait()
    assert plan(a).array_jobs == ()
    assert plan(total(a)).array_jobs[0].dependencies == ()
    assert total(a).compute() == 6
    assert a.get_results() == [1, 2, 3]


def test_after_ordering_dependency(cluster):
    """.after() adds an ordering edge without passing data."""
    first = inc(0)
    second = inc.after(first)(100)
    p = plan(second)
    assert [aj.name for aj in p.array_jobs] == ["inc", "inc"]
    assert p.array_jobs[1].dependencies[0][0] == "afterok"
    assert second.compute() == 101


def test_callbacks_receive_events(cluster):
    """on_submit, on_state and on_done are called with the run and state changes."""
    events = []

    class Recorder:
        def on_submit(self, run):
            events.append(("submit", run.id))

        def on_state(self, node, old, new):
            events.append(("state", node, new))

        def on_done(self, run):
            events.append(("done", run.id))

    job = inc(41)
    assert compute(job, callbacks=[Recorder()]) == (42,)
    assert events[0][0] == "submit" and events[-1][0] == "done"
    assert ("state", job.key, "DONE") in events


def test_submit_returns_run_at_once(cluster):
    """submit() returns a Run; result() waits and returns the outputs."""
    run = submit(inc(1), inc(2))
    assert run.id
    assert run.result() == (2, 3)
    status = run.status()
    assert (status.state, status.counts, status.array_jobs) == (
        "DONE",
        {"DONE": 2},
        {"aj0": ("inc", {"DONE": 2})},
    )


def test_cluster_context_is_per_context(tmp_path):
    """with cluster: makes it active only inside the block."""
    from lazyslurm import current_cluster

    c = Cluster("sync", workdir=tmp_path)
    assert current_cluster() is None
    with c:
        assert current_cluster() is c
    assert current_cluster() is None


def test_unknown_backend_is_rejected():
    """An unknown backend name is a clear ValueError."""
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        Cluster("nope")


def test_default_cluster_is_used_without_one():
    """Without a cluster, compute uses the embedded default."""
    assert inc(1).compute() == 2


def test_logs_of_an_element(cluster):
    """job.logs() returns what the element printed."""

    @task
    def chatty(x):
        print(f"hello {x}")
        return x

    job = chatty(5)
    job.compute()
    if cluster.backend_name == "local":
        out, _ = job.logs()
        assert "hello 5" in out


def test_retries_rerun_a_failing_task(cluster, tmp_path):
    """retries=N runs a failing task again, up to N more times."""

    @task(retries=2)
    def flaky(path):
        n = len(os.listdir(path))
        with open(os.path.join(path, str(n)), "w"):
            pass
        if n < 2:
            raise RuntimeError("not yet")
        return n

    d = tmp_path / "flaky"
    d.mkdir()
    assert flaky(str(d)).compute() == 2


def test_worker_crash_is_a_job_failure(tmp_path):
    """A task that kills its process fails the element with its exit code."""

    @task
    def die():
        os._exit(3)

    with (
        Cluster("local", workdir=tmp_path, max_workers=1),
        pytest.raises(ElementFailedError, match="exit code 3"),
    ):
        die().compute()


def test_throttle_limits_concurrency(tmp_path):
    """max_concurrent=1 runs an array's elements one at a time."""
    d = tmp_path / "stamps"
    d.mkdir()
    throttled = stamp.options(max_concurrent=1)
    with Cluster("local", workdir=tmp_path / "w", max_workers=2):
        throttled.map([(str(d), i) for i in range(4)]).compute()
    spans = sorted(tuple(map(float, (d / str(i)).read_text().split())) for i in range(4))
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


def test_run_directory_is_private(cluster):
    """Run directories are created with mode 0700."""
    run = submit(inc(3))
    run.result()
    mode = (cluster.workdir / "runs" / run.id).stat().st_mode & 0o777
    assert mode == 0o700


ATTACH_CHILD = """
import os, signal, sys
sys.path.insert(0, {repo!r})
from lazyslurm import Cluster, submit
from examples import parallelization_patterns as pp
cluster = Cluster("local", workdir={workdir!r}, max_workers=2)
run = submit(pp.pipeline_graph(), pp.parameter_sweep_graph(), cluster=cluster)
print(run.id, flush=True)
if {finish!r}:
    run.wait()
os.kill(os.getpid(), signal.SIGKILL)
"""


def run_and_kill(tmp_path, finish: bool) -> str:
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parent.parent)
    code = ATTACH_CHILD.format(repo=repo, workdir=str(tmp_path / "w"), finish=finish)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=repo)
    assert proc.returncode == -9, proc.stderr
    return proc.stdout.split()[0]


def test_attach_from_a_new_process_after_the_submitter_was_killed(tmp_path):
    """A run submitted by a SIGKILLed process is attached here and gives every result."""
    from lazyslurm import Run
    from tests.test_examples import EXPECTED_PIPELINE, best_of_sweep

    run_id = run_and_kill(tmp_path, finish=True)
    run = Run.attach(run_id, Cluster("local", workdir=tmp_path / "w"))
    assert run.status().state == "DONE"
    assert run.result() == (EXPECTED_PIPELINE, best_of_sweep())
    out, _ = run.logs(run.array_jobs[0].keys[0])
    assert out == ""


def test_attach_to_a_local_run_cut_short_reports_it_lost(tmp_path):
    """Elements a killed local client never ran are reported cancelled (lost), not waited on."""
    from lazyslurm import Run

    run_id = run_and_kill(tmp_path, finish=False)
    run = Run.attach(run_id, Cluster("local", workdir=tmp_path / "w"))
    status = run.status()
    if status.state != "DONE":  # the child may have been quicker than its kill
        assert status.counts.get("CANCELLED")
        with pytest.raises(Exception, match=r"lost|cancelled"):
            run.result()


def test_attach_unknown_run_is_a_key_error(tmp_path):
    """Attaching to a run id that is not in the store says so."""
    from lazyslurm import Run

    with pytest.raises(KeyError, match="no run 'nope'"):
        Run.attach("nope", Cluster("local", workdir=tmp_path))


def test_progress_display_when_asked(tmp_path, capsys):
    """progress=True draws a bar per array job; the default off a TTY draws no bars, only
    the run's id and its end (two lines); progress=False nothing."""
    with Cluster("local", workdir=tmp_path, max_workers=2):
        compute(inc.map(range(3)), progress=True)
        err = capsys.readouterr().err
        assert "lazyslurm run" in err and "aj0 inc" in err and "3/3" in err
        compute(inc.map(range(4)))
        err = capsys.readouterr().err
        assert "━" not in err and len(err.splitlines()) == 2, err
        assert "lazyslurm: submitted run" in err and "s: 1 done" in err  # inc(3) is new
        compute(inc.map(range(5)), progress=False)
        assert capsys.readouterr().err == ""


def test_events_go_to_logging(cluster, caplog):
    """State changes and run events are sent to the 'lazyslurm' logger."""
    import logging

    with caplog.at_level(logging.DEBUG, logger="lazyslurm"):
        job = inc(100)
        job.compute()
    text = caplog.text
    assert (
        "submitted run" in text
        and f"{job.key}: PENDING -> DONE" in text.replace("RUNNING -> DONE", "PENDING -> DONE")
    ) or f"{job.key}:" in text


def test_debug_logs_carry_the_run_array_job_and_element(tmp_path, caplog):
    """At DEBUG: the plan summary, cache hits and state changes, with extra fields."""
    import logging

    with Cluster("sync", workdir=tmp_path, cache=True):
        compute(inc.map([200, 201]))
    with (
        caplog.at_level(logging.DEBUG, logger="lazyslurm"),
        Cluster("sync", workdir=tmp_path, cache=True),
    ):
        run = submit(inc.map([200, 201, 202]), progress=False)
        run.result()
    records = [r for r in caplog.records if getattr(r, "run_id", None) == run.id]
    messages = [r.getMessage() for r in records]
    assert f"plan of run {run.id}: 1 array jobs, 1 tasks, 2 cache hits" in messages
    assert "plan aj0: inc x1 (dependencies: none)" in messages
    hits = [m for m in messages if m.startswith("cache hit: ")]
    assert len(hits) == 2
    change = next(r for r in records if r.getMessage().endswith("-> DONE"))
    assert change.array_job == "aj0" and change.element == 0
    assert change.getMessage().startswith(run.array_jobs[0].keys[0])


def test_options_that_do_not_apply_are_refused():
    """Slurm options on an embedded cluster, or max_workers on Slurm, are clear errors."""
    only = '\'partition\' only applies to backend "slurm" or "ssh"'
    with pytest.raises(ValueError, match=only):
        Cluster("local", partition="debug")
    only = '\'max_workers\' only applies to backend "local" or "sync"'
    with pytest.raises(ValueError, match=only):
        Cluster("slurm", max_workers=3)


def test_attach_to_a_live_local_run_waits_for_it(tmp_path):
    """Attached from another session while its submitter lives, a local run is pending,
    not lost, and its results arrive."""
    from lazyslurm import Run

    @task
    def nap(x):
        time.sleep(0.5)
        return x

    with Cluster("local", workdir=tmp_path, max_workers=2):
        run = submit(nap.map([1, 2]))
        other = Run.attach(run.id, Cluster("local", workdir=tmp_path))
        assert "CANCELLED" not in other.status().counts
        assert other.result() == ([1, 2],)
        assert run.result() == ([1, 2],)


def test_remote_traceback_shows_the_real_source(cluster):
    """An importable task is shipped by reference: its traceback names its file and line."""
    from examples import parallelization_patterns as pp

    with pytest.raises(TypeError) as info:
        pp.train_model(lr="x", batch_size=1, epochs=1, seed=0).compute()
    tb = info.value.remote_traceback
    assert "parallelization_patterns.py" in tb and "accuracy = 0.5" in tb


CANCEL_CHILD = """
import sys, time
sys.path.insert(0, {repo!r})
from lazyslurm import Cluster, submit, task
from lazyslurm.errors import ElementCancelledError

@task
def nap(x):
    time.sleep(30)
    return x

run = submit(nap.map([1, 2]), cluster=Cluster("local", workdir={workdir!r}, max_workers=2))
print(run.id, flush=True)
try:
    run.result()
except ElementCancelledError:
    print("cancelled", flush=True)
"""


def test_cancel_a_local_run_from_another_process(tmp_path):
    """Run.cancel() from another process stops a local run (its owner honours the request)."""
    import subprocess
    import sys
    from pathlib import Path

    from lazyslurm import Run

    repo = str(Path(__file__).resolve().parent.parent)
    code = CANCEL_CHILD.format(repo=repo, workdir=str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    run_id = child.stdout.readline().strip()
    Run.attach(run_id, Cluster("local", workdir=tmp_path)).cancel()
    out, _ = child.communicate(timeout=20)
    assert out.strip() == "cancelled"


def test_cancel_while_a_worker_is_starting(tmp_path):
    """An element whose worker is still starting when the run is cancelled never runs."""
    from lazyslurm.backends import local

    started = threading.Event()
    release = threading.Event()
    real = local._Worker

    class SlowStart(real):  # a worker that takes its time to start, like a busy machine
        def __init__(self, env):
            started.set()
            release.wait(10)
            super().__init__(env)

    @task
    def long(x):
        time.sleep(30)
        return x

    backend = local.LocalBackend(tmp_path, max_workers=1)
    local._Worker = SlowStart
    try:
        with Cluster(backend):
            run = submit(long(1), progress=False)
            assert started.wait(10)
            run.cancel()
            release.set()
            snap = run.wait(timeout=10)
        assert snap.states["aj0"] == ["CANCELLED"]
    finally:
        local._Worker = real
        release.set()
        backend.close()


def test_a_thread_started_inside_with_cluster_uses_that_cluster(tmp_path):
    """Threads do not inherit context variables: they still compute on the open cluster,
    not silently on the local default; a thread's own `with` wins."""
    from examples import parallelization_patterns as pp
    from lazyslurm.cluster import current_cluster

    outer = Cluster("sync", workdir=tmp_path / "a")
    own = Cluster("sync", workdir=tmp_path / "b")
    seen = {}

    def work():
        seen["compute"] = pp.stage1_preprocess("t").compute()
        seen["cluster"] = current_cluster()
        with own:
            seen["own"] = current_cluster()

    with outer:
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert seen == {"compute": "preprocessed_t", "cluster": outer, "own": own}
    assert pp.stage1_preprocess("t").key in outer.session.computed()
    assert current_cluster() is None


# --------------------------------------------------------------------------- issue 10


class Point(NamedTuple):
    x: object
    y: object = 0


@dataclasses.dataclass
class Box:
    a: object
    b: object = 1


@dataclasses.dataclass(frozen=True)
class Frozen:
    a: object
    tag: str = "t"


@dataclasses.dataclass
class Custom:
    a: object
    n: int = dataclasses.field(init=False, default=5)

    def __init__(self, value: object) -> None:
        self.a = value
        self.n = 7


@dataclasses.dataclass
class Late:
    a: object
    cache: object = dataclasses.field(init=False)


@task
def ident(x):
    return x


CONTAINERS = {
    "list": lambda j: [j, 1],
    "tuple": lambda j: (j, 1),
    "dict value": lambda j: {"k": j},
    "set": lambda j: {j, 1},
    "frozenset": lambda j: frozenset({j}),
    "namedtuple": lambda j: Point(j, [j]),
    "dataclass": lambda j: Box(j),
    "frozen dataclass": lambda j: Frozen(j),
    "custom __init__": lambda j: Custom(j),
    "init=False field unset": lambda j: Late(j),
    "generator": lambda j: (x for x in [j, 1]),
    "iterator": lambda j: iter([j, 1]),
    "nested": lambda j: {"p": Point(Box([j]))},
    "view": lambda j: j.bit_length(),
    "lazy slice": lambda j: ident([1, 2, 3, 4])[:j],
}
EXPECTED = {
    "list": [2, 1],
    "tuple": (2, 1),
    "dict value": {"k": 2},
    "set": {2, 1},
    "frozenset": frozenset({2}),
    "namedtuple": Point(2, [2]),
    "dataclass": Box(2),
    "frozen dataclass": Frozen(2),
    "custom __init__": "Custom(a=2, n=7)",
    "init=False field unset": "Late(a=2, cache=<unset>)",
    "generator": [2, 1],
    "iterator": [2, 1],
    "nested": {"p": Point(Box([2]))},
    "view": 2,
    "lazy slice": [1, 2],
}


def _shown(value):
    if isinstance(value, Custom):
        return f"Custom(a={value.a}, n={value.n})"
    if isinstance(value, Late):
        return f"Late(a={value.a}, cache={getattr(value, 'cache', '<unset>')})"
    return value


@pytest.mark.parametrize("kind", list(CONTAINERS))
def test_nothing_unevaluated_comes_back_from_compute(cluster, kind):
    """A Job in any container kind is computed, both as a compute output and as a task argument."""
    with cluster:
        (out,) = compute(CONTAINERS[kind](inc(1)))
        assert _shown(out) == EXPECTED[kind]
        assert _shown(ident(CONTAINERS[kind](inc(1))).compute()) == EXPECTED[kind]


def test_a_job_kept_in_an_object_lazyslurm_cannot_see_into_is_refused(cluster):
    """compute refuses a Job hidden in a plain object rather than returning it unevaluated."""
    holder = type("Holder", (), {})()
    holder.__dict__["job"] = inc(1)
    with cluster, pytest.raises(SerializationError, match="hidden"):
        compute(holder)


class Scaler:
    def __init__(self, k):
        self.k = k

    @task
    def scale(self, x):
        return self.k * x


def test_a_method_task_runs_with_its_instance(cluster):
    """@task on a method: the job runs with self bound, on the workers too."""
    with cluster:
        assert compute(Scaler(3).scale(2), Scaler(5).scale(2)) == (6, 10)


def test_names_show_in_plans(cluster):
    """map(..., name=...) names its array job in the plan; keys are unchanged."""
    with cluster:
        p = plan(total(inc.map([1, 2], name="first")), inc.map([3], name="second"))
        assert sorted(aj.name for aj in p.array_jobs) == ["first", "second", "total"]


class BrokenStrError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str is broken")


@task
def raise_broken_str():
    raise BrokenStrError()


def test_an_exception_whose_str_raises_still_comes_back(cluster):
    """A task's exception with a broken __str__ is re-raised with its type, not a crash."""
    with cluster, pytest.raises(BrokenStrError) as info:
        raise_broken_str().compute()
    assert isinstance(info.value, TaskError)
