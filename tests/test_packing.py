"""Packing small elements into fewer Slurm elements (issue 13): the option, the plan,
the runner's one results file per packed Slurm element, and the readers of that file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lazyslurm import Cluster, compute, task
from lazyslurm.backends.slurm.render import job_script, sbatch_flags
from lazyslurm.errors import CorruptResultError, InvalidOptionError, OptionTypeError
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import AFTERCORR, AFTEROK, make_plan, pack_size
from lazyslurm.runner import run_slurm_element
from lazyslurm.store import (
    RunLayout,
    atomic_write,
    decode_result,
    decode_value,
    encode_outcome,
    encode_pack,
    log_section,
    pack_keys,
)

REPO = Path(__file__).resolve().parent.parent


@task
def double(x: int) -> int:
    return 2 * x


@task
def fragile(x: int) -> int:
    if x == 2:
        raise ValueError(f"bad {x}")
    return x


@task
def total(xs: list[int]) -> int:
    return sum(xs)


def test_pack_is_validated_at_decoration_time():
    assert task(pack=4)(abs).resources.pack == 4
    assert task(pack="auto")(abs).resources.pack == "auto"
    assert task(pack=1)(abs).resources.pack is None  # one per Slurm element: the default
    with pytest.raises(InvalidOptionError, match="pack"):
        task(pack="many")(abs)
    with pytest.raises(InvalidOptionError, match="pack"):
        task(pack=0)(abs)
    with pytest.raises(OptionTypeError, match="pack"):
        task(pack=2.5)(abs)
    with pytest.raises(InvalidOptionError, match="ranks"):
        task(pack=4, ntasks=2)(abs)


def test_map_pack_keeps_keys_and_packs_the_plan():
    plain = double.map(range(10))
    packed = double.map(range(10), pack=4)
    assert [j.key for j in plain] == [j.key for j in packed]
    (aj,) = make_plan(list(packed)).array_jobs
    assert (aj.size, aj.pack, aj.slurm_size) == (10, 4, 3)
    assert aj.location(9, "r1") == "r1:aj0_2" and aj.slurm_index(9) == 2
    again = type(aj).from_manifest(aj.to_manifest())
    assert again == aj


def test_packed_time_limit_and_array_in_sbatch():
    slow = task(time=10, cpus_per_task=2)(abs)
    (aj,) = make_plan(list(slow.map(range(10), pack=5))).array_jobs
    assert aj.effective().timeout_min == 30  # 5 elements, 2 at a time: 3 turns of 10 min
    flags = sbatch_flags(aj, run_id="r1", layout=RunLayout("/w/runs/r1"))
    assert "--array=0-1" in flags and "--time=30" in flags
    assert (
        "packed 5 per Slurm element (2, time 30min each)"
        in make_plan(list(slow.map(range(10), pack=5))).describe()[0]
    )


def test_pack_auto_fits_array_size_job_budget_and_max_time():
    assert pack_size("auto", 100_000, 1001) == 782
    sweep = task(pack="auto", time=1)(abs)
    jobs = list(sweep.map(range(10_000)))
    (aj,) = make_plan(jobs, max_array_size=1001).array_jobs
    assert aj.pack == 79 and aj.slurm_size <= 128
    # a budget of 50 Slurm jobs (MaxSubmitJobs): the pack grows
    (aj,) = make_plan(jobs, max_array_size=1001, max_jobs=50).array_jobs
    assert aj.slurm_size <= 50
    # MaxTime of 20 min: at most 20 one-minute elements in turn, so more array jobs
    ajs = make_plan(jobs, max_array_size=100, time_cap=lambda r: 20).array_jobs
    assert {a.pack for a in ajs} == {20} and sum(a.slurm_size for a in ajs) == 500
    # a backend that does not pack
    (aj,) = make_plan(jobs, packing=False, max_array_size=10**6).array_jobs
    assert aj.pack == 1


@given(st.integers(1, 40), st.integers(1, 6), st.integers(1, 6))
def test_aftercorr_only_between_arrays_packed_alike(n, k1, k2):
    a = double.map(range(n), pack=k1)
    b = double.map(a, pack=k2)
    p = make_plan(list(b))
    (up, down) = p.array_jobs
    kind = dict((u, kd) for kd, u in down.dependencies)[up.id]
    unpacked = make_plan(list(double.map(double.map(range(n))))).array_jobs[1].dependencies
    # packed alike: Slurm element j waits for Slurm element j, as unpacked arrays do
    assert kind == (unpacked[0][0] if k1 == k2 else AFTEROK)
    assert k1 != k2 or n == 1 or kind == AFTERCORR


def _run_dir(tmp_path: Path, jobs, run_id="20260101-000000-aaaaaa", done=None) -> tuple:
    plan = make_plan(jobs, done=done or {})
    paths = RunLayout.of(run_id, tmp_path)
    paths.make_dirs()
    for rel, data in encode_run(plan, run_id=run_id, outputs=[]).items():
        atomic_write(f"{paths.root}/{rel}", data)
    return plan, paths


def test_a_packed_slurm_element_writes_one_results_file(tmp_path, capfd):
    jobs = list(fragile.map(range(5), pack=3))
    _, paths = _run_dir(tmp_path, jobs)
    # element 2 failed (its error record written), 0 and 1 ran: every element of the pack
    # left its outcome, so the Slurm element succeeds and Slurm starts its dependents
    assert run_slurm_element(paths.root, "aj0", 0) == 0
    assert run_slurm_element(paths.root, "aj0", 1) == 0
    assert sorted(os.listdir(paths.results_dir)) == ["aj0_0.pack", "aj0_1.pack"]
    assert os.listdir(paths.errors_dir) == [f"{jobs[2].key}.pkl"]
    data = Path(paths.pack("aj0", 0)).read_bytes()
    assert pack_keys(data) == [jobs[0].key, jobs[1].key]
    assert data.startswith(b"LZPACK1 2\n")
    run = paths.root.rsplit("/", 1)[1]
    _, payload = decode_result(data, key=jobs[1].key, path="p", run=run)
    assert decode_value(payload) == 1
    with pytest.raises(CorruptResultError, match="holds no record"):
        decode_result(data, key=jobs[2].key, path="p", run=run)
    out = capfd.readouterr().out
    assert log_section(out, "aj0", 1).strip() == ""
    assert "=== lazyslurm element aj0[2] ===" in out


def test_a_packed_pack_with_workers_keeps_element_order(tmp_path):
    par = task(cpus_per_task=2, pack=4)(double.unwrapped)
    jobs = list(par.map(range(4)))
    _, paths = _run_dir(tmp_path, jobs)
    assert run_slurm_element(paths.root, "aj0", 0) == 0
    assert pack_keys(Path(paths.pack("aj0", 0)).read_bytes()) == [j.key for j in jobs]


def test_downstream_elements_read_upstream_pack_files(tmp_path):
    a = double.map(range(4), pack=2)
    b = double.map(a, pack=2)
    s = total(b)
    plan, paths = _run_dir(tmp_path, [s])
    for aj in plan.array_jobs:
        for j in range(aj.slurm_size):
            assert run_slurm_element(paths.root, aj.id, j) == 0
    key = s.key
    data = Path(paths.result(key)).read_bytes()
    run = paths.root.rsplit("/", 1)[1]
    assert decode_value(decode_result(data, key=key, path="p", run=run)[1]) == 4 * 6


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_element_cancels_only_its_own_dependents_in_packs(tmp_path, workers):
    """Element-wise packed chain: the dependent of the failed element cancels itself
    (a cancelled record naming the input), its pack-mates run; a fan-in over the chain
    is cancelled too, and exits non-zero so that Slurm cancels what follows it."""
    step = task(cpus_per_task=workers)(double.unwrapped)
    a = fragile.map(range(4), pack=2)
    b = step.map(a, pack=2)
    s = total(b)
    plan, paths = _run_dir(tmp_path, [s])
    first, second, fan_in = plan.array_jobs
    assert [kind for kind, _ in second.dependencies] == [AFTERCORR]
    for aj in (first, second):
        for j in range(aj.slurm_size):
            assert run_slurm_element(paths.root, aj.id, j) == 0
    assert run_slurm_element(paths.root, fan_in.id, 0) == 1
    assert sorted(os.listdir(paths.errors_dir)) == sorted(
        [f"{a[2].key}.pkl", f"{b[2].key}.cancelled", f"{s.key}.cancelled"]
    )
    run = paths.root.rsplit("/", 1)[1]
    record = Path(paths.cancelled(b[2].key)).read_bytes()
    assert decode_value(decode_result(record, key=b[2].key, path="p", run=run)[1]) == a[2].key
    assert pack_keys(Path(paths.pack(second.id, 1)).read_bytes()) == [b[3].key]
    data = Path(paths.pack(second.id, 1)).read_bytes()
    assert decode_value(decode_result(data, key=b[3].key, path="p", run=run)[1]) == 6


def test_a_partial_pack_ends_at_its_last_whole_record():
    """A pack killed while writing leaves a partial file whose last record may be cut
    short: the whole records before it are read, the cut one is not."""
    from lazyslurm.store import PARTIAL_HEAD

    recs = [encode_outcome(b"v%d" % i, key=f"f-{i}", writer="r1/aj0/0") for i in range(3)]
    torn = PARTIAL_HEAD + recs[0] + recs[1] + recs[2][:-3]
    assert pack_keys(torn) == ["f-0", "f-1"]
    assert decode_result(torn, key="f-1", path="p", run="r1") == ("r1/aj0/0", b"v1")
    with pytest.raises(CorruptResultError, match="holds no record"):
        decode_result(torn, key="f-2", path="p", run="r1")
    assert pack_keys(PARTIAL_HEAD + recs[0] + recs[1][:5]) == ["f-0"]
    assert pack_keys(PARTIAL_HEAD) == []
    whole = encode_pack(recs)
    with pytest.raises(CorruptResultError, match="damaged"):  # a whole pack is never cut
        pack_keys(whole.replace(b"LZPACK1 3", b"LZPACK1 4", 1))


def test_a_damaged_pack_names_the_key_its_reader_wanted():
    """A pack damaged before the record a reader (the runner's loader, the client's fetch)
    wants: the error names that key (it named "?")."""
    recs = [encode_outcome(b"v%d" % i, key=f"f-{i}", writer="r1/aj0/0") for i in range(2)]
    damaged = encode_pack(recs).replace(b"LZOUT1", b"LZOUT?", 1)
    with pytest.raises(CorruptResultError, match=r"node f-1 \(p\) is in a pack file") as info:
        decode_result(damaged, key="f-1", path="p", run="r1")
    assert info.value.key == "f-1" and "damaged at byte 10" in str(info.value)
    with pytest.raises(CorruptResultError, match=r"^the pack file p is damaged at byte 10"):
        pack_keys(damaged, "p")


def test_a_forged_record_in_a_pack_is_refused():
    good = encode_outcome(b"x", key="f-1", writer="r1/aj0/0")
    forged = encode_pack([good[:-1] + b"y"])
    with pytest.raises(CorruptResultError, match="checksum"):
        decode_result(forged, key="f-1", path="p", run="r1")
    other_run = encode_pack([encode_outcome(b"x", key="f-1", writer="r2/aj0/0")])
    with pytest.raises(CorruptResultError, match="not by run r1"):
        decode_result(other_run, key="f-1", path="p", run="r1")


def test_job_script_starts_the_runner_by_path():
    (aj,) = make_plan(list(double.map(range(2)))).array_jobs
    text = job_script(
        aj, run_id="r1", layout=RunLayout("/w/runs/r1"), python="/py", runner="/x y/__main__.py"
    )
    assert "exec /py '/x y/__main__.py' /w/runs/r1 aj0" in text
    assert "-m lazyslurm.runner" in job_script(
        aj, run_id="r1", layout=RunLayout("/w/runs/r1"), python="/py"
    )


def test_the_runner_by_path_imports_only_its_budget(tmp_path):
    """What the job scripts start: no package __init__, typing, pathlib, dataclasses,
    logging, tempfile, pickle or cloudpickle for a by-reference task on plain data."""
    from lazyslurm.store import FunctionRef, encode_spec, encode_value

    paths = RunLayout.of("20260101-000000-bbbbbb", tmp_path)
    paths.make_dirs()
    spec = encode_spec({"func": FunctionRef("builtins", "abs")}, [encode_value(("k-0", (-3,), {}))])
    atomic_write(paths.spec("aj0"), spec)
    runner = REPO / "lazyslurm" / "runner" / "__main__.py"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
    res = subprocess.run(
        [sys.executable, "-X", "importtime", str(runner), paths.root, "aj0"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    mods = {ln.split("|")[-1].strip() for ln in res.stderr.splitlines() if "import time" in ln}
    for banned in (
        "lazyslurm",
        "typing",
        "pathlib",
        "dataclasses",
        "logging",
        "tempfile",
        "pickle",
        "_pickle",
        "cloudpickle",
        "json",
        "re",
        "struct",
        "traceback",
    ):
        assert banned not in mods, f"the runner imported {banned}"
    assert Path(paths.result("k-0")).exists()


def test_packing_on_the_local_backend_runs_each_element(tmp_path):
    """Backends without Slurm run every element alone: pack changes nothing there."""
    with Cluster("local", workdir=tmp_path, max_workers=2) as cl:
        assert compute(total(fragile.map([0, 1, 3], pack=2)), cluster=cl) == (4,)


# --------------------------------------------------------------------------- real Slurm


@pytest.fixture
def env(cluster_env):
    return cluster_env


@pytest.mark.slurm
@pytest.mark.parametrize("accounting", [True, False], ids=["sacct", "squeue"])
def test_packed_map_on_slurm_results_failures_cache_and_attach(env, tmp_path, accounting):
    """On the real Slurm: a packed map's results come back through pack files (one per
    Slurm element), a failing element fails alone (its pack's others have results),
    the cache finds packed results in a later session, and Run.attach fetches them."""
    from lazyslurm import submit
    from lazyslurm.errors import TaskError

    conf = env["LAZYSLURM_TEST_SLURM_CONF" if accounting else "LAZYSLURM_TEST_SLURM_CONF_NOACCT"]
    opts = dict(workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5)
    with Cluster("slurm", **opts) as cl:
        xs = double.map(range(7), pack=3)
        assert compute(total(xs), cluster=cl) == (42,)
        run_dir = next((tmp_path / "work" / "runs").iterdir())
        names = sorted(n for n in os.listdir(run_dir / "results") if not n.startswith("."))
        assert names == ["aj0_0.pack", "aj0_1.pack", "aj0_2.pack", f"{total(xs).key}.pkl"]
        bad = fragile.map(range(5), pack=5)
        with pytest.raises(TaskError, match="bad 2"):
            compute(bad, cluster=cl)
        for i in (0, 1, 3, 4):
            assert cl.session.computed()[bad[i].key].endswith(":aj0_0")
    with Cluster("slurm", **opts) as again:  # a new session: found in the store
        run = submit(total(double.map(range(7), pack=3)), cluster=again)
        assert run.plan is None or run.plan.nodes == 0 or run.result() == (42,)
        assert again.session.computed()[xs[4].key].endswith(":aj0_1")
        attached = type(run).attach(cl.session.computed()[xs[0].key].split(":")[0], again)
        assert attached.result() == (42,)


@pytest.mark.slurm
def test_a_failure_in_a_pack_cancels_only_its_own_dependents_on_slurm(env, tmp_path):
    """On the real Slurm, waiting without fail-fast: the failed element's element-wise
    dependent is cancelled, the dependents of its pack-mates run, and the fan-in is
    cancelled; the first failure raised is the task's own, with the rest as cancelled."""
    from lazyslurm import submit
    from lazyslurm.backends.base import CANCELLED, DONE, FAILED
    from lazyslurm.errors import TaskError

    conf = env["LAZYSLURM_TEST_SLURM_CONF"]
    opts = dict(workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5)
    with Cluster("slurm", **opts) as cl:
        a = fragile.map(range(4), pack=2)
        b = double.map(a, pack=2)
        run = submit(total(b), cluster=cl)
        snap = run.wait()
        first, second, fan_in = run.array_jobs
        assert snap.states[first.id] == [DONE, DONE, FAILED, DONE]
        assert snap.states[second.id] == [DONE, DONE, CANCELLED, DONE]
        assert snap.states[fan_in.id] == [CANCELLED]
        with pytest.raises(TaskError, match="bad 2") as info:
            run.raise_failures(snap)
        assert {c.key for c in info.value.cancelled} == {b[2].key, total(b).key}
        assert compute(b[3], cluster=cl) == (6,)  # the healthy pack-mate's dependent ran
        assert cl.session.computed()[b[3].key].endswith(f":{second.id}_1")


def test_a_fan_in_reads_and_indexes_each_pack_file_once(tmp_path, monkeypatch):
    """A fan-in over packed arrays parses each pack's record headers once, not once per
    key (that was quadratic: 97 s for a fan-in over 100,000 packed elements)."""
    import lazyslurm.store as store

    xs = double.map(range(12), pack=4)
    s = total(xs)
    plan, paths = _run_dir(tmp_path, [s])
    first, fan_in = plan.array_jobs
    for j in range(first.slurm_size):
        assert run_slurm_element(paths.root, first.id, j) == 0
    scans = []
    real = store._pack_records
    monkeypatch.setattr(store, "_pack_records", lambda d, p, k: scans.append(p) or real(d, p, k))
    assert run_slurm_element(paths.root, fan_in.id, 0) == 0
    assert sorted(scans) == sorted(paths.pack(first.id, j) for j in range(3))
    run = paths.root.rsplit("/", 1)[1]
    data = Path(paths.result(s.key)).read_bytes()
    assert decode_value(decode_result(data, key=s.key, path="p", run=run)[1]) == 2 * 66


@task
def killed_at_two(x: int) -> int:
    if x == 2:  # Slurm stops the whole pack (SIGTERM to its every process), as at its time
        element = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
        subprocess.run(["scancel", element], check=True)  # limit: its finished results stay
        time.sleep(60)
    return x


@pytest.mark.slurm
def test_a_pack_killed_partway_keeps_its_finished_results_for_the_next_run(env, tmp_path):
    """The elements a pack finished before it was killed are in results/AJ_J.partial:
    the next session that looks in the store (cache=True) finds them, and submits
    nothing for them."""
    from lazyslurm.errors import ElementFailedError

    opts = dict(
        workdir=tmp_path / "work",
        env={"SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]},
        poll_max_s=0.5,
    )
    xs = killed_at_two.map(range(4), pack=4)
    with Cluster("slurm", **opts) as cl, pytest.raises(ElementFailedError):
        compute(xs, cluster=cl)
    (run_dir,) = (tmp_path / "work" / "runs").iterdir()
    assert sorted(n for n in os.listdir(run_dir / "results") if not n.startswith(".")) == [
        "aj0_0.partial"
    ]
    with Cluster("slurm", **opts, cache=True) as again:
        assert compute(xs[0], xs[1], cluster=again) == (0, 1)
        assert again.session.computed()[xs[1].key] == f"{run_dir.name}:aj0_0.partial"
        assert again.backend.stats["sbatch"] == 0
