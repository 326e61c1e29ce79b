"""preview(): jobs, worst-case cost and expected start of a graph; the budget; usage.

The arithmetic is checked over random plans (hypothesis); the expected start is asked of
the real test Slurm through subprocess and SSH; the budget refusal and ``usage`` run on it.
"""

from __future__ import annotations

import math
import os
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import dags

# the real cluster's helpers
from test_backends_slurm import slurm_cluster, ssh_cluster

import lazyslurm
from lazyslurm import Cluster, compute, preview, submit, task
from lazyslurm.backends.slurm.facts import parse_cluster_facts as parse_facts
from lazyslurm.backends.slurm.facts import parse_test_only, start_query_script
from lazyslurm.errors import BudgetExceededError, ClusterConfigError, LazySlurmError
from lazyslurm.graph.resources import Resources
from lazyslurm.planning.planner import make_plan
from lazyslurm.preview import (
    UNBOUNDED,
    ClusterFacts,
    JobCost,
    PartitionFacts,
    Preview,
    Start,
    job_cost,
    total_cost,
    usage,
)

# --------------------------------------------------------------------------- arithmetic


def resources() -> st.SearchStrategy[Resources]:
    """Random task resources, any of them possibly unset."""
    maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731
    return st.builds(
        Resources,
        timeout_min=maybe(st.integers(1, 10_000)),
        mem_mb=maybe(st.integers(1, 10**6)),
        cpus_per_task=maybe(st.integers(1, 128)),
        gpus=maybe(st.one_of(st.integers(0, 8).map(str), st.just("a100:2"))),
        nodes=maybe(st.integers(1, 4)),
        ntasks=maybe(st.integers(1, 8)),
        max_concurrent=maybe(st.integers(1, 50)),
    )


@given(res=resources(), n=st.integers(1, 5000))
def test_worst_case_is_elements_times_request_times_limit(res, n):
    """Core/GPU/GB-hours are elements x per-element request x time limit, unbounded without
    a limit; cpus are cpus_per_task x tasks (1 each when unset)."""
    c = job_cost("aj0", "f", n, res)
    tasks = res.ntasks or res.nodes or 1
    assert c.cpus == (res.cpus_per_task or 1) * tasks
    assert c.at_once == min(n, res.max_concurrent or n)
    if res.timeout_min is None:
        assert c.core_hours is None and c.time_min is None
        assert any(UNBOUNDED in note for note in c.assumptions)
    else:
        assert math.isclose(c.core_hours, n * c.cpus * res.timeout_min / 60)
        if res.mem_mb is not None:
            expected = n * res.mem_mb * (res.nodes or 1) / 1024 * res.timeout_min / 60
            assert math.isclose(c.mem_gb_hours, expected)
        if c.gpus:
            assert math.isclose(c.gpu_hours, n * c.gpus * res.timeout_min / 60)
        else:
            assert c.gpu_hours == 0.0


@given(res=resources(), default_time=st.integers(1, 600), max_time=st.integers(1, 600))
def test_unset_values_come_from_cluster_defaults_then_the_partition(res, default_time, max_time):
    """A task's own time wins; else the cluster default; else the partition's DefaultTime,
    else its MaxTime; memory falls back on DefMemPerCPU x cpus; each fallback is stated."""
    part = PartitionFacts("p", default=True, default_time_min=default_time, def_mem_per_cpu_mb=7)
    facts = ClusterFacts({"p": part}, def_mem_per_cpu_mb=3)
    c = job_cost("aj0", "f", 2, res, facts=facts)
    assert c.time_min == (res.timeout_min or default_time)
    assert (c.mem_mb is not None) and (res.mem_mb is not None or c.mem_mb == 7 * c.cpus)
    assert ("DefaultTime" in " ".join(c.assumptions)) == (res.timeout_min is None)
    no_default = ClusterFacts({"p": PartitionFacts("p", True, None, max_time)})
    assert job_cost("aj0", "f", 2, res, facts=no_default).time_min == (res.timeout_min or max_time)
    cluster_default = Resources(timeout_min=5, cpus_per_task=3)
    d = job_cost("aj0", "f", 2, res, defaults=cluster_default, facts=facts)
    assert d.time_min == (res.timeout_min or 5)
    assert d.cpus == (res.cpus_per_task or 3) * (res.ntasks or res.nodes or 1)


@settings(max_examples=60, deadline=None)
@given(dag=dags(), budget=st.floats(0.01, 100))
def test_totals_over_random_plans(dag, budget):
    """Over random plans: elements add up to the planned nodes, array jobs to the plan's,
    at_once lies between the largest array job's and the element count, core-hours are
    the sum (unbounded when any array job has no limit), and the budget refuses exactly
    the graphs whose worst case exceeds it."""
    plan = make_plan(dag.roots, done=dict.fromkeys(dag.done), max_array_size=dag.max_array_size)
    costs = [
        job_cost(aj.id, aj.name, aj.size, aj.resources, stage=aj.stage) for aj in plan.array_jobs
    ]
    t = total_cost(costs)
    assert t.elements == plan.nodes and t.array_jobs == len(plan.array_jobs)
    assert t.stages == len(plan.stages)
    assert max((c.at_once for c in costs), default=0) <= t.at_once <= t.elements
    if any(aj.resources.timeout_min is None for aj in plan.array_jobs):
        assert t.core_hours is None
    else:
        expected = sum(
            aj.size * (aj.resources.cpus_per_task or 1) * aj.resources.timeout_min / 60
            for aj in plan.array_jobs
        )
        assert math.isclose(t.core_hours, expected)
    p = Preview(tuple(costs))
    assert p.exceeds(budget) == (t.core_hours is None or t.core_hours > budget)
    text = str(p)
    assert text.splitlines()[0].startswith(f"{t.array_jobs} array job(s)")
    for c in costs:
        assert c.id in text


def test_gpus_from_gpus_or_gres():
    """GPUs per element come from gpus= (count or TYPE:COUNT) or a gpu gres (per node)."""
    assert job_cost("a", "f", 1, Resources(gpus="a100:2")).gpus == 2
    assert job_cost("a", "f", 1, Resources(gres="gpu:a100:4", nodes=2)).gpus == 8
    assert job_cost("a", "f", 1, Resources(gres="tmpdisk:100")).gpus == 0
    c = job_cost("a", "f", 3, Resources(gpus="2", timeout_min=90))
    assert c.gpu_hours == 9.0


# --------------------------------------------------------------------------- Slurm's words


def test_parse_test_only_success_and_failure():
    """A start time is parsed from Slurm's line; otherwise Slurm's own words are kept."""
    ok = parse_test_only(
        "sbatch: Job 1000239 to start at 2026-12-02T05:15:26 using 1 processors on nodes vm "
        "in partition debug\n"
    )
    assert ok.when is not None and ok.when.hour == 5 and str(ok) == "2026-12-02 05:15:26"
    bad = parse_test_only(
        "sbatch: error: invalid partition specified: nope\n"
        "allocation failure: Invalid partition name specified\n"
    )
    assert bad.when is None
    assert str(bad) == (
        "error: invalid partition specified: nope / "
        "allocation failure: Invalid partition name specified"
    )


def test_start_query_script_quotes_every_flag():
    """Flags reach sbatch --test-only quoted, one marked answer per array job."""
    script = start_query_script({"aj0": ["--job-name=x; rm -rf ~"], "aj1": ["--time=3"]})
    assert "'--job-name=x; rm -rf ~'" in script
    assert script.count("sbatch --test-only") == 2 and "echo LZ-START aj1" in script


def test_parse_facts_of_a_real_partition_line():
    """DefaultTime, MaxTime and DefMemPerCPU are read from scontrol's one-line form."""
    line = (
        "LZ-PART PartitionName=debug AllowGroups=ALL Default=YES DefaultTime=01:00:00 "
        "MaxTime=2-00:00:00 DefMemPerNode=UNLIMITED TRES=cpu=64"
    )
    facts = parse_facts(line + "\nLZ-CONF DefMemPerCPU            = 100\n")
    part = facts.partition(None)
    assert (part.name, part.default_time_min, part.max_time_min) == ("debug", 60, 2880)
    assert part.def_mem_per_cpu_mb is None and facts.def_mem_per_cpu_mb == 100


# --------------------------------------------------------------------------- display


def test_str_and_html_show_the_table_and_the_assumptions():
    """The terminal table and the notebook HTML both carry the rows and what was assumed;
    HTML escapes task names."""
    p = Preview(
        (
            JobCost("aj0", "a<b>", 10, time_min=60, cpus=2, mem_mb=2048, throttle=3),
            JobCost("aj1", "g", 1, stage=1, assumptions=("time: unbounded (no time set)",)),
        ),
        cached=4,
        starts={"aj0": Start(None, "error: nope")},
    )
    text = str(p)
    assert "worst case: unbounded core-hours" in text
    assert "20 core-hours in the array jobs with a time limit; no limit for aj1" in text
    assert "not run again: 4 node(s) found in the cache" in text
    assert "aj1: time: unbounded (no time set)" in text
    header = next(line for line in text.splitlines() if line.startswith("ARRAY JOB"))
    assert header.split()[-1] == "START"
    page = p._repr_html_()
    assert "<table>" in page and "a&lt;b&gt;" in page and "a<b>" not in page
    assert "error: nope" in page


# --------------------------------------------------------------------------- embedded


@task(time=30, cpus_per_task=2)
def work(i):
    return i


@task(time=10)
def gather(xs):
    return sum(xs)


def test_preview_on_an_embedded_cluster_counts_the_cache(tmp_path):
    """Nodes found in the store are left out and counted; nothing is submitted."""
    with Cluster("sync", workdir=tmp_path) as c:
        compute(work.map(range(3)))
    with Cluster("sync", workdir=tmp_path, cache=True) as c:
        p = preview(gather(work.map(range(5))))
        assert lazyslurm.runs(c) != [] and len(lazyslurm.runs(c)) == 1  # nothing new
    assert p.cached == 3
    assert [(j.name, j.elements) for j in p.jobs] == [("work", 2), ("gather", 1)]
    assert p.total.core_hours == 2 * 2 * 0.5 + 1 * 1 * 10 / 60
    assert "expected start: at once (backend 'sync' runs here)" in str(p)
    assert isinstance(lazyslurm.Preview, type) and isinstance(p, lazyslurm.Preview)


def test_preview_counts_nodes_computed_in_the_session(tmp_path):
    """What this session already computed is not run again, and is counted."""
    with Cluster("sync", workdir=tmp_path):
        arr = work.map(range(4))
        compute(arr)
        p = preview(gather(arr))
    assert p.session == 4 and [j.name for j in p.jobs] == ["gather"]


def test_budget_refuses_before_submitting(tmp_path):
    """compute(max_core_hours=N) over the worst case raises BudgetExceededError (a
    ValueError) showing the preview's top lines; no run is created."""
    with Cluster("sync", workdir=tmp_path) as c:
        with pytest.raises(BudgetExceededError) as info:
            compute(gather(work.map(range(100))), max_core_hours=10)
        assert lazyslurm.runs(c) == []
        assert compute(work(1), max_core_hours=10) == (1,)  # 1 core-hour: within budget
    err = info.value
    assert isinstance(err, ValueError) and isinstance(err, LazySlurmError)
    assert err.worst_core_hours == pytest.approx(100 + 10 / 60) and err.max_core_hours == 10
    text = str(err)
    assert "max_core_hours=10" in text and "Nothing was submitted" in text
    assert "2 array job(s) (sbatch calls), 101 element(s)" in text
    assert "aj0 work: 100 x 2 cpu x 00:30:00 = 100 core-hours" in text


def test_budget_refuses_an_unbounded_graph_and_comes_from_the_cluster(tmp_path):
    """A task without a time limit has no bounded worst case: a Cluster budget refuses it."""

    @task
    def free(x):
        return x

    with Cluster("sync", workdir=tmp_path, max_core_hours=1000) as c:
        with pytest.raises(BudgetExceededError, match=r"unbounded .*set time="):
            submit(free(1))
        assert lazyslurm.runs(c) == []


def test_budget_must_be_a_positive_number():
    """Cluster(max_core_hours=...) is checked when the cluster is made."""
    for bad, words in (("lots", "must be a number"), (0, "greater than zero"),
                       (-1, "greater than zero"), (True, "must be a number")):  # fmt: skip
        with pytest.raises(ClusterConfigError, match=words):
            Cluster("sync", max_core_hours=bad)


def test_usage_without_slurm_comes_from_the_runner(tmp_path):
    """usage on an embedded backend: no accounting, so the runner's own figures (and a
    note saying so), not an empty report."""
    with Cluster("sync", workdir=tmp_path) as c:
        run = submit(work(2))
        run.result()
        u = usage(run.id, c)
    assert u.available and u.sources == ("runner",)
    assert "backend 'sync' has no accounting (no sacct); the figures are the runner's own" in str(u)


# --------------------------------------------------------------------------- real Slurm


@pytest.fixture(scope="module")
def env(cluster_env):
    return cluster_env


def queued_names(conf: str) -> str:
    return subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%j"],
        env={**os.environ, "SLURM_CONF": conf},
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@task(time="00:02:00", mem="128M", max_concurrent=2)
def sweep(i):
    return i * i


@task(time=1, mem="128M")
def reduce_sum(xs):
    return sum(xs)


def start_is_known(start: Start) -> bool:
    """Slurm gave a time, not in the past (the shared test cluster may be busy: when it is
    depends on the other jobs, so only its sense is checked)."""
    import datetime as dt

    return start.when is not None and start.when >= dt.datetime.now() - dt.timedelta(minutes=2)


@pytest.fixture(params=["slurm", "ssh"])
def real_cluster(request, env, tmp_path):
    if request.param == "ssh":
        c = ssh_cluster(env)  # nothing installed on the cluster: packaging by value
    else:
        c = slurm_cluster(env, tmp_path)
    yield c
    c.close()


@pytest.mark.slurm
def test_expected_start_from_sbatch_test_only(real_cluster, env):
    """Through subprocess and SSH: every array job gets Slurm's expected start, all in one
    round trip after the session's probe; a partition Slurm refuses comes back in Slurm's
    words; nothing is queued."""
    graph = reduce_sum(sweep.map(range(150)))  # MaxArraySize=100: two chunks, then one
    bad = sweep.options(partition="nosuchpart").map(range(1000, 1002))
    with real_cluster as c:
        lazyslurm.plan(graph)  # the probe, once per session
        before = c.backend.shell.round_trips
        p = preview(graph, bad)
        assert c.backend.shell.round_trips == before + 1
    assert [(j.name, j.elements, j.nchunks) for j in p.jobs] == [
        ("sweep", 100, 2),
        ("sweep", 50, 2),
        ("sweep", 2, 1),
        ("reduce_sum", 1, 1),
    ]
    starts = [p.starts[j.id] for j in p.jobs]
    assert start_is_known(starts[0]) and start_is_known(starts[1]) and start_is_known(starts[3])
    assert starts[0].text.startswith("Job ") and "to start at" in starts[0].text
    assert starts[2].when is None and "invalid partition" in starts[2].text.lower()
    assert start_is_known(p.first_start)
    assert p.total.at_once == 2 + 2 + 2 + 1
    assert p.total.core_hours == pytest.approx(152 * 2 / 60 + 1 / 60)
    text = str(p)
    assert "expected start (Slurm, first stage): " in text and "invalid partition" in text
    conf = env["LAZYSLURM_TEST_SLURM_CONF"]
    assert "lz-preview-" not in queued_names(conf)


@pytest.mark.slurm
def test_unset_time_uses_what_the_partition_says(env, tmp_path):
    """Without a time limit, the worst case asks the partitions: the test cluster's have no
    DefaultTime and an unlimited MaxTime, so it is unbounded, and DefMemPerCPU sizes memory."""

    @task
    def bare(x):
        return x

    with slurm_cluster(env, tmp_path) as c:
        p = preview(bare.map(range(3)), start=False)
        assert p.starts == {}
        c.close()
    (job,) = p.jobs
    assert job.core_hours is None and job.mem_mb == 100  # DefMemPerCPU=100 x 1 cpu
    assert "partition 'debug' has no DefaultTime and no MaxTime" in " ".join(job.assumptions)


@pytest.mark.slurm
def test_budget_refusal_leaves_nothing_queued(real_cluster, env):
    """Over the budget on the real cluster (subprocess and SSH): BudgetExceededError, and
    no job of the graph reaches the queue."""
    name = f"budget{os.getpid()}x{time.time_ns() % 10**6}"
    big = task(time="10:00:00", cpus_per_task=8, job_name=name)(lambda i: i)
    with real_cluster as c:
        with pytest.raises(BudgetExceededError, match="core-hours"):
            compute(big.map(range(50)), max_core_hours=100)
        assert c.backend.stats["submits"] == 0
    conf = env["LAZYSLURM_TEST_SLURM_CONF"]
    assert name not in queued_names(conf)


@pytest.mark.slurm
def test_usage_compares_worst_case_with_sacct(env, tmp_path):
    """After a run on the accounting cluster, usage reads elapsed x allocated cpus from
    sacct (it lags by seconds) and compares it with the worst case."""
    with slurm_cluster(env, tmp_path) as c:
        run = submit(reduce_sum(sweep.map(range(4))), progress=False)
        assert run.result() == (14,)
        deadline = time.monotonic() + 30
        while True:
            u = usage(run.id, c)
            recorded = [sum(a.source.startswith("sacct") for e in u.elements
                            if e.task == t.task for a in e.attempts) for t in u.tasks]  # fmt: skip
            if recorded == [4, 1] or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert u.available and recorded == [4, 1] and u.sources == ("runner", "sacct")
    for t in u.tasks:
        worst = t.core_hours_reserved
        assert 0 <= t.core_hours_allocated and (worst is None or t.core_hours_allocated <= worst)
    text = str(u)
    assert text.startswith(f"run {run.id}: 5 of 5 element(s) measured")
    assert "WORST CORE-H" in text


@pytest.mark.slurm
def test_usage_without_accounting_says_so(env, tmp_path):
    """On the cluster without slurmdbd, usage says there is no accounting, and shows the
    runner's figures."""
    with slurm_cluster(env, tmp_path, accounting=False) as c:
        run = submit(sweep(3), progress=False)
        run.result()
        u = usage(run.id, c)
    assert u.available and u.sources == ("runner",)
    assert u.note == (
        "this cluster keeps no accounting (AccountingStorageType=none): sacct cannot say "
        "what the run used; the figures are the runner's own"
    )
