"""Compact maps (issue 27): a ``task.map`` over a range, a NumPy array or a list of plain
configs of ``COMPACT_MIN`` items or more is one graph node (``ArrayNode``), its element
keys derived when asked, the same as one by one; plans, manifests and specs stay
O(array jobs); fan-ins refer to it whole."""

from __future__ import annotations

import json
import tracemalloc

import pytest

import lazyslurm.graph.core as core
from lazyslurm import Cluster, compute, task
from lazyslurm.graph.core import ArrayNode, JobArray
from lazyslurm.graph.traverse import lift_outputs
from lazyslurm.planning.encode import encode_run, read_manifest
from lazyslurm.planning.planner import AFTEROK, make_plan
from lazyslurm.runner import run_slurm_element
from lazyslurm.store import INSIDE, ElementKeys, RunLayout, read_element, spec_size

np = pytest.importorskip("numpy")


@task
def square(x):
    return x * x


@task
def config(a, b=0, name=""):
    return a + b + len(name)


@task
def total(xs):
    return sum(int(x) for x in xs)


@task
def boom(x):
    if x == 3:
        raise ValueError(f"bad {x}")
    return x


@pytest.fixture
def small(monkeypatch):
    """Maps of 4 items or more are compact (the real threshold is 100,000)."""
    monkeypatch.setattr(core, "COMPACT_MIN", 4)


def _one_by_one(monkeypatch, fn):
    monkeypatch.setattr(core, "COMPACT_MIN", 10**12)
    try:
        return fn()
    finally:
        monkeypatch.setattr(core, "COMPACT_MIN", 4)


ITEMS = {
    "range": lambda: range(3, 40, 3),
    "numpy 1-D": lambda: np.arange(10, dtype=np.int64) * 7,
    "numpy floats": lambda: np.linspace(0.0, 1.0, 9),
    "numpy bools": lambda: np.arange(8) % 3 == 0,
    "list of atoms": lambda: [1, "a", 2.5, None, True, "x" * 5000],
    "list of configs": lambda: [{"a": i, "b": -i, "name": "n" * i} for i in range(6)],
}


@pytest.mark.parametrize("kind", list(ITEMS))
def test_compact_keys_are_the_keys_of_the_map_built_one_by_one(kind, small, monkeypatch):
    fn = config if kind == "list of configs" else square
    arr = fn.map(ITEMS[kind]())
    assert type(arr._node) is ArrayNode
    plain = _one_by_one(monkeypatch, lambda: fn.map(ITEMS[kind]()))
    assert plain._node is None
    assert list(arr.keys) == [j.key for j in plain]
    assert len(arr) == len(plain)
    assert arr[2].key == plain[2].key and arr[-1].key == plain[-1].key
    assert [j.key for j in arr] == [j.key for j in plain]
    assert arr[2].args == plain[2].args and arr[2].kwargs == plain[2].kwargs


def test_small_maps_and_impure_tasks_stay_one_job_per_element(small):
    assert square.map(range(3))._node is None
    assert square.options(pure=False).map(range(10))._node is None
    assert square.map([[1], [2], [3], [4]])._node is None  # items that are not plain atoms
    assert square.map(np.arange(12).reshape(6, 2))._node is None  # rows: one by one
    assert square.map(range(10))._node is not None


def test_ten_million_elements_and_a_fan_in_build_plan_and_encode_in_constant_memory():
    """The issue's goal: a 10,000,000-element sweep + fan-in is O(array jobs) on the
    client (before: one Job, key and spec blob per element, 6.4 GB)."""
    tracemalloc.start()
    arr = square.options(pack="auto").map(range(10_000_000))
    fan_in = total(arr)
    plan = make_plan([fan_in], max_array_size=1001, max_jobs=10_000)
    files = encode_run(plan, run_id="r", outputs=[fan_in.key])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5_000_000, peak
    assert plan.nodes == 10_000_001
    sweep, last = plan.array_jobs
    assert sweep.size == 10_000_000 and sweep.slurm_size <= 10_000
    assert last.dependencies == ((AFTEROK, sweep.id),)
    assert max(len(b) for b in files.values()) < 10_000
    assert sweep.keys[9_999_999] == square(9_999_999).key


def test_chunks_manifest_round_trip_and_spec_elements(small, tmp_path):
    arr = square.map(np.arange(23) * 2)
    plan = make_plan([total(arr)], max_array_size=5)
    assert [aj.size for aj in plan.array_jobs] == [5, 5, 5, 5, 3, 1]
    fan_in = plan.array_jobs[-1]
    assert [k for k, _ in fan_in.dependencies] == [AFTEROK] * 5
    assert all(type(aj.keys) is ElementKeys for aj in plan.array_jobs[:-1])
    files = encode_run(plan, run_id="r1", outputs=[])
    _, back = read_manifest(files[INSIDE.manifest])
    assert back == plan.array_jobs
    assert list(back[1].keys) == [arr[i].key for i in range(5, 10)]
    layout = RunLayout(tmp_path / "r1")
    spec = tmp_path / "r1" / INSIDE.spec("aj2")
    spec.parent.mkdir(parents=True)
    spec.write_bytes(files[INSIDE.spec("aj2")])
    spec.chmod(0o600)
    assert spec_size(spec) == 5
    _, element = read_element(spec, 1)
    assert element[0] == arr[11].key and element[1] == (np.int64(22),)
    assert layout.spec("aj2") == str(spec)
    assert plan.location[arr[11].key] == (plan.array_jobs[2], 1)


def test_a_fan_in_over_a_compact_map_and_the_map_itself_on_the_local_backend(small, tmp_path):
    with Cluster("local", workdir=tmp_path) as cl:
        arr = square.options(pack=3).map(range(10))
        assert compute(total(arr), cluster=cl) == (285,)
        assert compute(arr, cluster=cl) == ([i * i for i in range(10)],)
        assert arr[4].get_result(cluster=cl) == 16
        configs = config.map([{"a": i, "b": 1} for i in range(5)])
        assert compute(total(configs), configs[4], cluster=cl) == (15, 5)


def test_a_compact_map_finished_in_this_session_is_not_run_again(small, tmp_path):
    with Cluster("local", workdir=tmp_path) as cl:
        arr = square.map(range(6))
        assert compute(arr, cluster=cl) == ([0, 1, 4, 9, 16, 25],)
        runs = len(cl.session.runs())
        assert compute(arr, cluster=cl) == ([0, 1, 4, 9, 16, 25],)
        assert len(cl.session.runs()) == runs  # nothing submitted
        assert compute(total(arr), cluster=cl) == (55,)  # the fan-in reads the earlier run
        assert cl.session.location(arr[5].key) is not None


def _written(plan, root):
    files = encode_run(plan, run_id=root.name, outputs=[])
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        (root / rel).write_bytes(data)
        (root / rel).chmod(0o600)
    root.chmod(0o700)
    for sub in ("results", "errors", "logs"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    return root


def test_a_fan_in_over_a_compact_map_with_a_failed_element_is_cancelled(small, tmp_path):
    """A pack whose element failed holds fewer records: the fan-in reads it key by key
    and cancels itself naming that input (its pack-mates' results stay)."""
    bad = boom.options(pack=4).map(range(8))
    plan = make_plan([total(bad)])
    root = _written(plan, tmp_path / "r3")
    assert run_slurm_element(str(root), "aj0", 0) == 0  # element 3 failed, its mates ran
    assert run_slurm_element(str(root), "aj0", 1) == 0
    assert run_slurm_element(str(root), "aj1", 0) == 1
    fan_in = plan.array_jobs[1].keys[0]
    cancelled = RunLayout(root).cancelled(fan_in)
    from lazyslurm.store import decode_outcome, decode_value, read_private

    record = read_private(cancelled)
    assert decode_value(decode_outcome(record, key=fan_in, path="p")[1]) == bad[3].key


def test_the_runner_reads_a_packed_compact_spec(small, tmp_path):
    arr = square.options(pack=4).map(range(10))
    plan = make_plan([total(arr)])
    root = _written(plan, tmp_path / "r2")
    for j in range(3):
        assert run_slurm_element(str(root), "aj0", j) == 0
    assert sorted(p.name for p in (root / "results").iterdir()) == [
        "aj0_0.pack",
        "aj0_1.pack",
        "aj0_2.pack",
    ]
    assert run_slurm_element(str(root), "aj1", 0) == 0
    fan_in = plan.array_jobs[1].keys[0]
    from lazyslurm.store import decode_result, decode_value, read_private

    data = read_private(str(root / "results" / f"{fan_in}.pkl"))
    assert decode_value(decode_result(data, key=fan_in, path="p")[1]) == 285


def test_a_compact_map_pickles_whole(small):
    import pickle

    arr = square.map(range(10**9))
    back = pickle.loads(pickle.dumps(total(arr)))
    assert back.key == total(arr).key
    assert type(back.deps[0]) is ArrayNode
    assert pickle.loads(pickle.dumps(arr)) == arr
    _, roots = lift_outputs([arr])
    assert roots == [arr._node]
    entry = make_plan(roots, max_array_size=10**6).array_jobs[0].to_manifest()
    assert len(json.dumps(entry)) < 1000 and entry["keys"] == []


@pytest.fixture
def env(cluster_env):
    return cluster_env


@pytest.mark.slurm
def test_compact_maps_on_slurm_packed_unpacked_and_a_failure(env, tmp_path, monkeypatch):
    """On the real Slurm: a packed compact map and its fan-in; an unpacked one split
    into chunks (MaxArraySize); a failing element raises its own error."""
    from lazyslurm.errors import TaskError

    monkeypatch.setattr(core, "COMPACT_MIN", 4)
    conf = env["LAZYSLURM_TEST_SLURM_CONF"]
    opts = dict(workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5)
    with Cluster("slurm", **opts) as cl:
        arr = square.options(pack="auto").map(range(300))
        assert compute(total(arr), cluster=cl) == (sum(i * i for i in range(300)),)
        run = cl.session.runs()[-1]
        assert [aj.size for aj in run.array_jobs] == [300, 1]
        wide = square.map(np.arange(130))
        assert compute(total(wide), wide[129], cluster=cl) == (
            sum(i * i for i in range(130)),
            129 * 129,
        )
        bad = boom.options(pack=4).map(range(8))
        with pytest.raises(TaskError, match="bad 3"):
            compute(total(bad), cluster=cl)
        assert isinstance(bad, JobArray) and bad._node is not None
