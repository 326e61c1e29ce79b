"""The compute-node entry point: `python -m lazyslurm.runner RUN_DIR ARRAY_JOB`, and one
launch per rank (srun) with its gather step, here and on the real Slurm."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

import lazyslurm
from lazyslurm import Cluster, compute, submit
from lazyslurm.context import JobContext
from lazyslurm.errors import JobFailedError, TaskError
from lazyslurm.graph import Job, task
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import Plan, make_plan
from lazyslurm.runner import (
    EXIT_OK,
    EXIT_TASK_FAILED,
    call_args,
    gather,
    resolve,
    run_element,
    run_rank,
)
from lazyslurm.runner.__main__ import main
from lazyslurm.store import (
    MapItem,
    Ref,
    RefList,
    RunLayout,
    atomic_write,
    encode_outcome,
    read_pickle,
)

REPO = Path(lazyslurm.__file__).resolve().parent.parent


# --------------------------------------------------------------------------- tasks


@task
def make_item(i: int) -> Any:
    return [{"x": i, "y": 1}, (i, 2)][i] if i < 2 else i


@task
def add(x: int, y: int = 100) -> int:
    return x + y


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def split(n: int) -> tuple[int, dict[str, list[int]]]:
    return n, {"k": [n + 2]}


@task
def namespace(value: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(value=value)


@task
def combine(*parts: Any, **named: Any) -> list[Any]:
    return [*parts, sorted(named.items())]


@task
def fail(msg: str) -> None:
    raise ValueError(msg)


@task
def flaky(counter: str, fail_times: int) -> int:
    path = Path(counter)
    n = int(path.read_text()) if path.exists() else 0
    path.write_text(str(n + 1))
    if n < fail_times:
        msg = f"attempt {n} failed"
        raise RuntimeError(msg)
    return n


@task
def unpicklable_result() -> Any:
    return threading.Lock()


class Unpicklable(Exception):
    def __reduce__(self) -> Any:
        msg = "no pickling"
        raise TypeError(msg)


@task
def fail_unpicklable() -> None:
    raise Unpicklable("custom failure")


@task
def chatty(x: int) -> int:
    print(f"hello from {x}")
    print(f"warning about {x}", file=sys.stderr)
    return x


# --------------------------------------------------------------------------- helpers


def write_run(run_dir: Path, plan: Plan) -> RunLayout:
    """Create a run directory holding the plan's manifest and spec files."""
    paths = RunLayout(run_dir)
    paths.make_dirs()
    files = encode_run(plan, run_id=run_dir.name, outputs=[], by_value=True)
    for rel, data in files.items():
        atomic_write(run_dir / rel, data)
    return paths


def runner(run_dir: Path | str, array_job: str, index: int | None, *extra: str) -> Any:
    """Run `python -m lazyslurm.runner RUN_DIR AJ` with SLURM_ARRAY_TASK_ID=index."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    if index is not None:
        env["SLURM_ARRAY_TASK_ID"] = str(index)
    return subprocess.run(
        [sys.executable, "-m", "lazyslurm.runner", str(run_dir), array_job, *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=Path(run_dir).parent,
    )


def run_all(paths: RunLayout, plan: Plan) -> None:
    """Run every element of the plan in submission order, each in its own process."""
    for aj in plan.array_jobs:
        for i in range(aj.size):
            out = runner(paths.root, aj.id, i)
            assert out.returncode == EXIT_OK, out.stderr


def result(paths: RunLayout, job: Job) -> Any:
    return read_pickle(paths.result(job.key))


# --------------------------------------------------------------------------- end to end


def test_runs_a_plan_end_to_end_in_subprocesses(tmp_path: Path) -> None:
    """A plan runs element by element via `python -m lazyslurm.runner`; results stored."""
    items = make_item.map([0, 1, 2])  # {"x": 0, "y": 1}, (1, 2), 2
    sums = add.map(items)  # add(x=0, y=1), add(1, 2), add(2)
    grand = total(sums)
    pair = split(5, nout=2)
    ns = namespace(3)
    out = combine(pair[0], pair[1]["k"][0], ns.value, fan={sums[0], sums[1]}, total=grand)
    plan = make_plan([out])
    paths = write_run(tmp_path / "runs" / "r1", plan)
    run_all(paths, plan)
    assert [result(paths, j) for j in items] == [{"x": 0, "y": 1}, (1, 2), 2]
    assert [result(paths, j) for j in sums] == [1, 3, 102]
    assert result(paths, grand) == 106
    assert result(paths, out) == [5, 7, 3, [("fan", {1, 3}), ("total", 106)]]
    assert os.listdir(Path(paths.root) / "errors") == []


def test_a_raising_task_writes_an_error_record_and_exits_1(tmp_path: Path) -> None:
    """A raising task writes errors/KEY.pkl (type, message, traceback) and exits 1."""
    job = fail("broken input")
    plan = make_plan([job])
    paths = write_run(tmp_path / "r1", plan)
    out = runner(paths.root, "aj0", 0)
    assert out.returncode == EXIT_TASK_FAILED == 1
    assert "ValueError: broken input" in out.stderr
    record = read_pickle(paths.error(job.key))
    assert record["type_name"] == "ValueError" and record["module"] == "builtins"
    assert record["message"] == "broken input"
    assert record["task"] == "fail" and record["key"] == job.key
    assert "in fail" in record["traceback"] and "ValueError: broken input" in record["traceback"]
    exc = cloudpickle.loads(record["exception"])
    assert type(exc) is ValueError and exc.args == ("broken input",)
    assert not os.path.exists(paths.result(job.key))


def test_retries_rerun_the_task(tmp_path: Path) -> None:
    """retries=N runs a failing task up to N more times; it succeeds if an attempt does."""
    counter = tmp_path / "count"
    ok = flaky.options(retries=2)(str(counter), 2)
    plan = make_plan([ok])
    paths = write_run(tmp_path / "r1", plan)
    out = runner(paths.root, "aj0", 0)
    assert out.returncode == EXIT_OK, out.stderr
    assert counter.read_text() == "3" and result(paths, ok) == 2
    assert "attempt 1 of" in out.stderr and "attempt 2 of" in out.stderr


def test_retries_exhausted_record_the_last_failure(tmp_path: Path) -> None:
    """When every attempt fails, the last failure is recorded and the exit code is 1."""
    counter = tmp_path / "count"
    bad = flaky.options(retries=1)(str(counter), 5)
    paths = write_run(tmp_path / "r1", make_plan([bad]))
    assert runner(paths.root, "aj0", 0).returncode == EXIT_TASK_FAILED
    assert counter.read_text() == "2"
    assert read_pickle(paths.error(bad.key))["message"] == "attempt 1 failed"


def test_results_of_earlier_runs_are_read_from_their_run(tmp_path: Path) -> None:
    """A dependency done in an earlier run is read from that run's results directory."""
    a = add(1, 1)
    b = add(a, 5)
    plan = make_plan([b], done={a.key: "r0"})
    old = RunLayout(tmp_path / "runs" / "r0")
    old.make_dirs()
    atomic_write(
        old.result(a.key), encode_outcome(cloudpickle.dumps(40), key=a.key, writer="r0/x/0")
    )
    paths = write_run(tmp_path / "runs" / "r1", plan)
    assert runner(paths.root, "aj0", 0).returncode == EXIT_OK
    assert result(paths, b) == 45


def test_element_index_comes_from_slurm_array_task_id(tmp_path: Path) -> None:
    """The runner runs element $SLURM_ARRAY_TASK_ID of the array job, and only it."""
    arr = add.map([(i, 0) for i in range(3)])
    paths = write_run(tmp_path / "r1", make_plan(list(arr)))
    assert runner(paths.root, "aj0", 2).returncode == EXIT_OK
    assert [os.path.exists(paths.result(j.key)) for j in arr] == [False, False, True]
    assert result(paths, arr[2]) == 2


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    """Without SLURM_ARRAY_TASK_ID, or with the wrong arguments, the runner exits 2."""
    paths = write_run(tmp_path / "r1", make_plan([add(1)]))
    out = runner(paths.root, "aj0", None)
    assert out.returncode == 2 and "SLURM_ARRAY_TASK_ID" in out.stderr
    out = runner(paths.root, "aj0", 0, "extra")
    assert out.returncode == 2 and "usage" in out.stderr
    assert main([]) == 2


# --------------------------------------------------------------------------- in process


def test_run_element_in_process(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """run_element writes the result and returns 0; the task's prints reach stdout/stderr."""
    job = chatty(4)
    paths = write_run(tmp_path / "r1", make_plan([job]))
    assert run_element(str(paths.root), "aj0", 0) == EXIT_OK
    assert result(paths, job) == 4
    out, err = capfd.readouterr()
    assert "hello from 4" in out and "warning about 4" in err


def test_an_unpicklable_result_is_a_task_error(tmp_path: Path) -> None:
    """A result that cannot be pickled is recorded as the task's error (exit 1)."""
    job = unpicklable_result()
    paths = write_run(tmp_path / "r1", make_plan([job]))
    assert run_element(str(paths.root), "aj0", 0) == EXIT_TASK_FAILED
    record = read_pickle(paths.error(job.key))
    assert record["type_name"] == "TypeError" and "lock" in record["message"]
    assert not os.path.exists(paths.result(job.key))


def test_an_unpicklable_exception_keeps_type_name_and_message(tmp_path: Path) -> None:
    """An unpicklable exception is recorded by type name, message and traceback."""
    job = fail_unpicklable()
    paths = write_run(tmp_path / "r1", make_plan([job]))
    assert run_element(str(paths.root), "aj0", 0) == EXIT_TASK_FAILED
    record = read_pickle(paths.error(job.key))
    assert record["exception"] is None
    assert record["type_name"] == "Unpicklable" and record["message"] == "custom failure"
    assert "custom failure" in record["traceback"]


def test_resolve_replaces_placeholders_everywhere() -> None:
    """resolve swaps Ref (with item/attr paths) and RefList in nested containers."""
    values = {"a": {"k": [10, 20]}, "b": types.SimpleNamespace(v=3), "c": 5}
    template = [
        Ref("c"),
        Ref("a", (("item", "k"), ("item", 1))),
        Ref("b", (("attr", "v"),)),
        (RefList(("c", "c")), {"x": Ref("c")}),
        {Ref("c")},
        frozenset({Ref("c")}),
        "plain",
    ]
    assert resolve(template, values.__getitem__) == [
        5,
        20,
        3,
        ([5, 5], {"x": 5}),
        {5},
        frozenset({5}),
        "plain",
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"x": 1, "y": 2}, ((), {"x": 1, "y": 2})),
        ((1, 2), ((1, 2), {})),
        ([1, 2], (([1, 2],), {})),
        (7, ((7,), {})),
        (None, ((None,), {})),
    ],
)
def test_map_items_unpack_at_run_time_by_the_map_rule(value: Any, expected: Any) -> None:
    """A MapItem resolves to kwargs (dict), positional args (tuple) or the single argument."""
    load = {"up": value}.__getitem__
    assert call_args((MapItem(Ref("up")),), {}, load) == expected


def test_call_args_without_map_item_resolves_templates() -> None:
    """Ordinary arguments are resolved as templates, positional and keyword alike."""
    load = {"a": 1, "b": 2}.__getitem__
    assert call_args((Ref("a"), [Ref("b")]), {"k": Ref("a")}, load) == ((1, [2]), {"k": 1})


# --------------------------------------------------------------------------- what it is


@task
def exits(code: int) -> int:
    sys.exit(code)


@pytest.mark.parametrize("code", [0, 3])
def test_sys_exit_in_a_task_is_reported_as_what_it_is(tmp_path: Path, code: int) -> None:
    """A task that calls sys.exit(N) fails with an error record saying so (not a lost result)."""
    job = exits(code)
    paths = write_run(tmp_path / "r1", make_plan([job]))
    assert runner(paths.root, "aj0", 0).returncode == EXIT_TASK_FAILED
    record = read_pickle(paths.error(job.key))
    assert record["type_name"] == "SystemExit"
    assert (
        f"called sys.exit({code})" in record["message"]
        and "instead of returning" in record["message"]
    )


def test_a_module_missing_on_the_cluster_is_named_with_the_fix(tmp_path: Path) -> None:
    """A function whose module cannot be imported where it runs: the error names the module
    and the packaging that ships it."""
    import pickle

    from lazyslurm.store import FunctionRef, encode_spec, read_element

    job = add(1, 2)
    paths = write_run(tmp_path / "r1", make_plan([job]))
    header, element = read_element(paths.spec("aj0"), 0)
    header["func"] = FunctionRef("only_on_the_client_mod", "add")
    atomic_write(paths.spec("aj0"), encode_spec(header, [pickle.dumps(element, protocol=5)]))
    assert runner(paths.root, "aj0", 0).returncode == EXIT_TASK_FAILED
    record = read_pickle(paths.error(job.key))
    assert record["type_name"] == "ModuleNotFoundError"
    assert "'only_on_the_client_mod' is not importable" in record["message"]
    assert "packaging='by-value'" in record["message"]


def test_a_truncated_upstream_result_is_named_not_blamed_on_the_consumer(tmp_path: Path) -> None:
    """A corrupt input fails its consumer with CorruptResultError naming that input's key
    and path."""
    a = add(1, 1)
    b = add(a, 5)
    plan = make_plan([b], done={a.key: "r0"})
    old = RunLayout(tmp_path / "runs" / "r0")
    old.make_dirs()
    good = encode_outcome(cloudpickle.dumps(40), key=a.key, writer="r0/x/0")
    atomic_write(old.result(a.key), good[:-2])
    paths = write_run(tmp_path / "runs" / "r1", plan)
    assert runner(paths.root, "aj0", 0).returncode == EXIT_TASK_FAILED
    record = read_pickle(paths.error(b.key))
    assert record["type_name"] == "CorruptResultError"
    assert a.key in record["message"] and old.result(a.key) in record["message"]
    assert "truncated" in record["message"]


# --------------------------------------------------------------------------- one launch per rank


@task(ntasks=4)
def rank_info(x, job: JobContext):
    return x, job.rank, job.world_size


@task(ntasks=4, gather="all")
def every_rank(x, *, job):
    return x * 10 + job.rank


@task(ntasks=4)
def rank_two_fails(x, *, job):
    if job.rank == 2:
        raise ValueError(f"rank {job.rank} cannot do {x}")
    return x


def written(tmp_path: Path, job: Job) -> RunLayout:
    """The run directory of a one-job plan, as the client writes it."""
    paths = RunLayout.of("r1", tmp_path)
    paths.make_dirs()
    for rel, data in encode_run(make_plan([job]), run_id="r1", outputs=[]).items():
        atomic_write(f"{paths.root}/{rel}", data)
    return paths


def rank_env(rank: int, world: int = 4) -> dict[str, str]:
    return {
        "SLURM_JOB_ID": "77",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "SLURM_NODEID": "0",
        "SLURM_NTASKS": str(world),
        "SLURM_TASKS_PER_NODE": str(world),
        "SLURM_JOB_NODELIST": "vm",
    }


def run_ranks(paths: RunLayout, world: int = 4, skip: tuple[int, ...] = ()) -> list[int]:
    return [
        run_rank(str(paths.root), "aj0", 0, rank_env(r, world))
        for r in range(world)
        if r not in skip
    ]


def test_rank_zero_value_is_the_result(tmp_path):
    """Every rank runs with its own context; rank 0's value becomes the element's result."""
    job = rank_info(5)
    paths = written(tmp_path, job)
    assert run_ranks(paths) == [0, 0, 0, 0]
    assert gather(str(paths.root), "aj0", 0, 4) == 0
    assert read_pickle(paths.result(job.key)) == (5, 0, 4)
    assert not os.path.exists(f"{paths.root}/ranks/{job.key}")


def test_gather_all_lists_every_rank_in_rank_order(tmp_path):
    """gather="all" gives a list of every rank's value, rank 0 first."""
    job = every_rank(1)
    paths = written(tmp_path, job)
    run_ranks(paths)
    assert gather(str(paths.root), "aj0", 0, 4) == 0
    assert read_pickle(paths.result(job.key)) == [10, 11, 12, 13]


def test_a_failing_rank_fails_the_element_with_its_error_naming_the_rank(tmp_path):
    """One rank's exception becomes the element's error, its message naming the rank."""
    job = rank_two_fails(3)
    paths = written(tmp_path, job)
    assert run_ranks(paths) == [0, 0, 1, 0]
    assert gather(str(paths.root), "aj0", 0, 4) == 1
    record = read_pickle(paths.error(job.key))
    assert record["rank"] == 2 and record["type_name"] == "ValueError"
    assert record["message"] == "rank 2 cannot do 3 [on rank 2 of 4]"
    assert not os.path.exists(paths.result(job.key))


def test_a_rank_that_left_nothing_fails_the_element(tmp_path, capsys):
    """A rank killed before writing its outcome fails the element; stderr names it."""
    job = rank_info(1)
    paths = written(tmp_path, job)
    run_ranks(paths, skip=(3,))
    assert gather(str(paths.root), "aj0", 0, 4) == 1
    assert "rank(s) 3 of 4 ended without a result" in capsys.readouterr().err
    assert not os.path.exists(paths.result(job.key)) and not os.path.exists(paths.error(job.key))


def test_one_process_backends_run_a_multi_rank_task_once(tmp_path):
    """Outside Slurm a multi-rank task is one process: rank 0 of 1; "all" is a list of one."""
    job = every_rank(2)
    paths = written(tmp_path, job)
    assert run_element(str(paths.root), "aj0", 0) == 0
    assert read_pickle(paths.result(job.key)) == [20]


# --------------------------------------------------------------------------- real Slurm


@pytest.fixture
def slurm(cluster_env, tmp_path):
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    with Cluster("slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5) as c:
        yield c


@task(ntasks=4, mem="200M", time="00:03:00")
def slurm_rank_info(x, job: JobContext):
    return x, job.rank, job.world_size, job.local_world_size, job.job_id, os.getpid()


@task(ntasks=4, mem="200M", time="00:03:00", gather="all")
def slurm_every_rank(x, *, job):
    return x, job.rank, job.local_rank, job.master_port, os.getpid()


@task(ntasks=4, mem="200M", time="00:03:00")
def slurm_rank_two_fails(x, *, job):
    if job.rank == 2:
        raise ValueError(f"rank {job.rank} gave up on {x}")
    time.sleep(30)  # the others wait at a "barrier": srun must end them
    return x


@pytest.mark.slurm
def test_four_ranks_on_slurm_return_rank_zeros_value(slurm):
    """ntasks=4 on the real Slurm: rank 0's value, from a job of world size 4, per element."""
    results = slurm_rank_info.map([1, 2]).compute(cluster=slurm)
    assert [r[:4] for r in results] == [(1, 0, 4, 4), (2, 0, 4, 4)]
    assert results[0][4] != results[1][4]  # each element is its own Slurm job


@pytest.mark.slurm
def test_four_ranks_on_slurm_gather_all(slurm):
    """gather="all" on the real Slurm: four values from four processes, one rendezvous port."""
    values = slurm_every_rank(7).compute(cluster=slurm)
    assert [v[:3] for v in values] == [(7, r, r) for r in range(4)]
    assert len({v[3] for v in values}) == 1 and len({v[4] for v in values}) == 4


@pytest.mark.slurm
def test_one_failing_rank_on_slurm_fails_the_element_naming_the_rank(slurm):
    """One failing rank of four: ValueError naming rank 2; srun ends the other ranks."""
    job = slurm_rank_two_fails(1)
    run = submit(job, cluster=slurm)
    with pytest.raises(ValueError, match=r"rank 2 gave up on 1 \[on rank 2 of 4\]") as info:
        run.result()
    assert isinstance(info.value, TaskError) and not isinstance(info.value, JobFailedError)
    _, err = run.logs(job)
    assert "task 2: Exited with exit code 1" in err and "Terminated" in err


# ------------------------------------------------------- the job's working directory (issue 20)


@task
def raises_its_own(x: int) -> int:
    raise ValueError(f"my own error {x}")


@task
def imports_from_the_cwd(x: int) -> int:
    import helper_in_the_cwd  # a user's module beside the client: still importable

    return helper_in_the_cwd.VALUE + x


def _shadowing_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's (so the job's) working directory holds a token.py and a types.py
    that break whoever imports them instead of the standard library's."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("token", "types"):
        (proj / f"{name}.py").write_text(f"raise ImportError('the user {name}.py shadowed')\n")
    (proj / "helper_in_the_cwd.py").write_text("VALUE = 41\n")
    monkeypatch.chdir(proj)


@pytest.mark.slurm
@pytest.mark.parametrize("backend", ["slurm", "local"])
def test_a_token_py_in_the_working_directory_shadows_nothing(
    cluster_env, tmp_path, monkeypatch, backend
):
    """A token.py (and types.py) in the job's working directory: the task's own ValueError
    arrives as a ValueError (before, the runner's traceback import picked the user's
    token.py and an ImportError replaced it); a user module there still imports. The
    Slurm job starts the runner by path, the local pool with `python -P -m`."""
    _shadowing_cwd(tmp_path, monkeypatch)
    opts: dict[str, Any] = {"workdir": tmp_path / "work"}
    if backend == "slurm":
        opts.update(env={"SLURM_CONF": cluster_env["LAZYSLURM_TEST_SLURM_CONF"]}, poll_max_s=0.5)
    with Cluster(backend, **opts) as cl:
        with pytest.raises(ValueError, match="my own error 1") as info:
            compute(raises_its_own(1), cluster=cl)
        assert isinstance(info.value, TaskError)
        assert compute(imports_from_the_cwd(1), cluster=cl) == (42,)


def test_the_runner_by_module_is_not_shadowed_either(tmp_path, monkeypatch):
    """`python -P -m lazyslurm.runner` (job scripts that cannot name the runner's path):
    the same, without Slurm."""
    from lazyslurm.backends.slurm.render import job_script

    _shadowing_cwd(tmp_path, monkeypatch)
    job = raises_its_own(2)
    plan = make_plan([job])
    paths = write_run(tmp_path / "20260101-000000-dddddd", plan)
    script = job_script(plan.array_jobs[0], run_id="r", layout=paths, python=sys.executable)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0", "PYTHONPATH": str(REPO)}
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert res.returncode == EXIT_TASK_FAILED, res.stderr
    record = read_pickle(paths.error(job.key))
    assert (record["type_name"], record["message"]) == ("ValueError", "my own error 2")


@task
def needs_networkx(x: int) -> str:
    # installed for the client; the SSH account has only the stdlib. By a computed name,
    # which the check before submission cannot see in the pickle (it would stage this
    # pure-Python package when the client has it loaded): as a plugin loaded by name
    import importlib

    return importlib.import_module("".join(["network", "x"])).__version__  # not folded


@pytest.mark.ssh
def test_a_module_missing_on_the_node_names_the_fix(cluster_env, tmp_path):
    """Over SSH with packaging by value, a task body imports a module the client has and
    the cluster lacks: a ModuleNotFoundError still (`except ModuleNotFoundError` catches
    it), whose message names the packaging modes that bring the module there."""
    env = cluster_env
    opts = dict(
        hostname=env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(env["LAZYSLURM_TEST_SSH_PORT"]),
        username=env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
        workdir=f"~/lazyslurm-tests/missing-{os.getpid()}-{time.time_ns()}",
        poll_max_s=0.5,
    )
    with Cluster("ssh", **opts) as cl, pytest.raises(ModuleNotFoundError) as info:
        compute(needs_networkx(1), cluster=cl)
    err = info.value
    assert isinstance(err, TaskError) and err.name == "networkx"
    text = str(err)
    assert "No module named 'networkx'" in text
    assert "installed here, on the client, but not where the task ran" in text
    for fix in ("packaging='wheel'", "packaging='container'", "packaging='inherit'"):
        assert fix in text
