"""Right-sizing (issue 24): what each element used, the usage report, learned requests.

Every outcome record carries a usage line written by the runner (wall, CPU, peak RSS,
the request it ran with); the report merges those with the scheduler's accounting where
there is one; ``mem="auto"``/``time="auto"`` ask what past runs used. The Slurm tests
run on the real test clusters: ``acct`` enforces ``--mem`` (task/cgroup,
ConstrainRAMSpace), ``noacct`` has no sacct.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lazyslurm import Cluster, preview, submit, task, visualize
from lazyslurm.backends.slurm.accounting import parse_cpu_s, parse_rss_mb
from lazyslurm.cache import usage_lines
from lazyslurm.errors import ClusterConfigError, ElementFailedError, InvalidOptionError, TaskError
from lazyslurm.graph.resources import Auto, Learned, Resources
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.learn import Sample, learn
from lazyslurm.planning.planner import ArrayJob, make_plan
from lazyslurm.runner import run_slurm_element
from lazyslurm.store import (
    RunLayout,
    atomic_write,
    decode_outcome,
    decode_result,
    encode_outcome,
    encode_pack,
    outcome_usage,
    pack_keys,
)

MB = 1024 * 1024


def hold(mb: int, seconds: float = 0.0, tag: int = 0) -> int:
    """Touch ``mb`` megabytes (every page), then wait ``seconds`` (``tag``: another key)."""
    import time

    block = bytearray(mb * MB)
    block[::4096] = b"x" * len(block[::4096])
    time.sleep(seconds)
    return mb


def fails(x: int) -> int:
    raise ValueError(f"boom {x}")


# --------------------------------------------------------------------------- records


def test_old_records_and_packs_stay_readable():
    """A record without a usage line (written before this) decodes as before, and has no
    usage; a pack's usage trailer is invisible to every reader of its records."""
    old = encode_outcome(b"x", key="f-1", writer="r1/aj0/0")
    assert decode_outcome(old, key="f-1", path="p", run="r1") == ("r1/aj0/0", b"x")
    assert outcome_usage(old) is None
    new = encode_outcome(b"y", key="f-2", writer="r1/aj0/1", usage="LZUSE1 k=f-2 w=1.5 m=2048")
    assert decode_outcome(new, key="f-2", path="p", run="r1") == ("r1/aj0/1", b"y")
    assert outcome_usage(new) == {"k": "f-2", "w": "1.5", "m": "2048"}
    pack = encode_pack([old, new])
    assert pack.endswith(b"\nLZUSAGE\nLZUSE1 k=f-2 w=1.5 m=2048\n")
    assert pack_keys(pack) == ["f-1", "f-2"]
    assert decode_result(pack, key="f-2", path="p", run="r1") == ("r1/aj0/1", b"y")


def _run_dir(tmp_path: Path, jobs: list) -> RunLayout:
    run_id = "20260101-000000-dddddd"
    paths = RunLayout.of(run_id, tmp_path)
    paths.make_dirs()
    for rel, data in encode_run(make_plan(jobs), run_id=run_id, outputs=[], by_value=True).items():
        atomic_write(f"{paths.root}/{rel}", data)
    return paths


@pytest.mark.parametrize("workers", [1, 2], ids=["sequential", "forked"])
def test_each_element_of_a_pack_has_its_own_peak(tmp_path, workers):
    """In a pack, elements run one after another in one process (or in forked workers):
    each one's peak is its own (the high-water mark is reset before it), not the
    largest so far; the pack file's trailer repeats every line."""
    sizes = [150, 10, 60, 10]
    jobs = list(task(cpus_per_task=workers, pack=4)(hold).map(sizes))
    paths = _run_dir(tmp_path, jobs)
    # in a fresh interpreter, as on a node: a child forked from this test process (a large
    # one, late in a suite) would start from its resident pages
    code = (
        "import sys; from lazyslurm.runner import run_slurm_element; "
        f"sys.exit(run_slurm_element({paths.root!r}, 'aj0', 0))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == 0
    data = Path(paths.pack("aj0", 0)).read_bytes()
    trailer = data[data.index(b"\nLZUSAGE\n") :].decode().split("\n")[2:-1]
    peaks = {}
    for line in trailer:
        fields = dict(w.split("=", 1) for w in line.split()[1:])
        peaks[fields["k"]] = int(fields["m"]) / 1024
        assert fields["mb"] == "hwm" and float(fields["w"]) >= 0 and "c" in fields
    assert set(peaks) == {j.key for j in jobs}
    for job, mb in zip(jobs, sizes, strict=True):
        assert mb <= peaks[job.key] < mb + 60, (mb, peaks)  # a small element stays small


def test_a_crashed_forked_element_records_its_peak(tmp_path):
    """A forked pack-mate killed without a word still gets figures: its process's, as
    the parent reaped it (os.wait4)."""

    def crash_big(x: int) -> int:
        block = bytearray(80 * MB)
        block[::4096] = b"x" * len(block[::4096])
        if x == 1:
            os._exit(3)
        return x

    jobs = list(task(cpus_per_task=2, pack=2)(crash_big).map([0, 1]))
    paths = _run_dir(tmp_path, jobs)
    assert run_slurm_element(paths.root, "aj0", 0) == 0
    got = outcome_usage(Path(paths.error(jobs[1].key)).read_bytes())
    assert got is not None and got["mb"] == "wait" and int(got["m"]) / 1024 >= 80


def test_every_element_records_what_it_used(cluster):
    """On the embedded backends (a worker process per element, or the caller's own
    process): each element's peak grows with what it touched, its wall and CPU time are
    there, and the report has a row per task."""
    big = task(mem="2G", time=10)(hold)
    run = submit(big.map([20, 220]), progress=False, cluster=cluster)
    run.result()
    u = run.usage()
    (t,) = u.tasks
    assert t.task == "hold" and t.measured == t.elements == 2
    small, large = (e.last for e in u.elements)
    assert small.source == "runner" and small.measured == "hwm" and small.state == "COMPLETED"
    assert 170 < large.peak_mb - small.peak_mb < 260  # each element's own high-water mark
    assert large.elapsed_s is not None and large.cpu_s is not None
    assert t.request.mem_mb == 2048 and t.request.time_min == 10
    assert t.mem_ratio < 0.25 and any("memory used under 25%" in w for w in t.warnings)
    assert t.suggest["mem"].endswith("M")


def test_report_shapes_text_json_html_and_picture(tmp_path, capsys, monkeypatch):
    """The same figures everywhere: text (lazyslurm usage), JSON (--json), the notebook's
    HTML and visualize(run=..., usage=True)."""
    from lazyslurm.cli import main

    monkeypatch.setenv("LAZYSLURM_WORKDIR", str(tmp_path / "work"))
    with Cluster("local", workdir=tmp_path / "work") as c:
        run = submit(task(mem="4G", time=1)(hold).map([30, 40]), cluster=c, progress=False)
        run.result()
        report = run.usage()
        html = report._repr_html_()
        picture = visualize(run=run, usage=True, level="jobs").source
        with pytest.raises(InvalidOptionError, match="pass the run"):
            visualize(usage=True)
    (t,) = report.tasks
    peak = f"{t.peak_mb:.0f}M"
    assert peak in str(report) and "4G" in str(report) and "warnings:" in str(report)
    assert peak in html and "memory used under 25%" in html
    assert f"peak {peak} of 4G" in picture and "! memory under 25% of the request" in picture
    assert main(["usage", run.id, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run"] == run.id and data["sources"] == ["runner"]
    (row,) = data["tasks"]
    assert set(row) >= {"task", "request", "used", "efficiency", "core_hours", "warnings"}
    assert row["request"] == {"mem_mb": 4096, "cpus": 1, "time_min": 1}
    assert set(row["core_hours"]) == {"reserved", "allocated", "used", "wasted"}
    assert row["used"]["peak_mb"] == pytest.approx(t.peak_mb)
    (attempt,) = data["elements"][0]["attempts"]
    assert attempt["number"] == 1 and attempt["source"] == "runner"
    assert attempt["request"]["mem_mb"] == 4096
    assert main(["usage", run.id]) == 0
    assert "MEM ASKED" in capsys.readouterr().out


# --------------------------------------------------------------------------- learned


def test_auto_requests_parse_plan_and_round_trip():
    """mem="auto"/"auto:4G" and time="auto"/"auto:1:00:00" are Auto requests; the planner
    asks the fallback without history and the learned numbers with it; the manifest
    keeps what was learned. A cluster cannot default to auto."""
    r = Resources.from_options(mem="auto:4G", time="auto")
    assert r.mem_mb == Auto(4096) and r.timeout_min == Auto() and r.learns
    assert Resources.from_options(**r.as_options()) == r
    f = task(mem="auto:4G", time="auto:1:00:00")(hold)
    (aj,) = make_plan(f.map([1, 2]).jobs).array_jobs
    assert (aj.resources.mem_mb, aj.resources.timeout_min) == (4096, 60)
    assert aj.learned == Learned(auto=("mem", "time"))
    got = Learned(mem_mb=256, timeout_min=2, runs=3, elements=6, auto=("mem", "time"))
    (aj,) = make_plan(f.map([1, 2]).jobs, learned={"hold": got}).array_jobs
    assert (aj.resources.mem_mb, aj.resources.timeout_min) == (256, 2)
    assert ArrayJob.from_manifest(json.loads(json.dumps(aj.to_manifest()))) == aj
    with pytest.raises(ClusterConfigError, match="cannot be a cluster's default"):
        Cluster("slurm", mem="auto")
    with pytest.raises(InvalidOptionError, match="auto:4G"):
        task(mem="lots")(hold)


def test_learning_is_p95_times_margin_rounded_up():
    """p95 of the peaks x 1.2 (to 64 MB), p95 of the elapsed x 1.5 (to minutes), from the
    newest runs; runs of other code are counted, and used."""
    samples = [Sample(f"r{i:02d}", f"f-{i}", (100 + i) * 1024, 10.0 + i, "old") for i in range(20)]
    samples.append(Sample("r99", "f-99", 300 * 1024, 100.0, "new"))
    got = learn(samples, "new", runs=10)
    assert got.runs == 10 and got.elements == 10 and got.older_code == 9
    assert got.peak_mb == 300 and got.mem_mb == 384  # 360 -> 384
    assert got.elapsed_s == 100 and got.timeout_min == 3  # 150 s -> 3 min


def test_learned_requests_on_the_local_backend(tmp_path):
    """Three runs of a task with mem="auto:1G": the fourth asks p95 x 1.2 of their peaks,
    and preview says so and from how many runs."""
    auto = task(mem="auto:1G", time="auto:10")(hold)
    with Cluster("local", workdir=tmp_path / "work") as c:
        first = preview(auto.map([(60, 0, 0)]), cluster=c, start=False)
        assert "no history yet: mem 1024M (its fallback)" in str(first)
        for i in range(3):
            submit(auto.map([(60, 0, i)]), cluster=c, progress=False).result()
        p = preview(auto.map([(60, 0, 9)]), cluster=c, start=False)
        lines = usage_lines(c, names=["hold"])
        # new code under the same name: the figures still count, and the preview says so
        changed = task(name="hold", mem="auto:1G", time="auto:10")(lambda mb: mb)
        q = preview(changed.map([1]), cluster=c, start=False)
    (job,) = p.jobs
    peaks = [int(u.fields["m"]) / 1024 for u in lines]
    assert len(peaks) == 3 and job.mem_mb <= 1.5 * max(peaks)
    assert job.time_min == 1
    assert "learned from 3 run(s)" in str(p) and "code changed" not in str(p)
    assert q.jobs[0].mem_mb == job.mem_mb
    assert "the task's code changed since 3 of those runs" in str(q)


# --------------------------------------------------------------------------- real Slurm


def slurm(env, tmp_path, accounting=True, **kw) -> Cluster:
    conf = env["LAZYSLURM_TEST_SLURM_CONF" if accounting else "LAZYSLURM_TEST_SLURM_CONF_NOACCT"]
    return Cluster(
        "slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}, poll_max_s=0.5, **kw
    )


SACCT_FIELDS = "JobID,State,ElapsedRaw,TotalCPU,MaxRSS,ReqMem"


def sacct_rows(env, job_ids: list[str]) -> dict[str, dict[str, str]]:
    """sacct's own figures, asked directly: JobID -> fields of its allocation line, with
    the MaxRSS of its batch step."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-j", ",".join(job_ids), "-o", SACCT_FIELDS],
        env={**os.environ, "SLURM_CONF": env["LAZYSLURM_TEST_SLURM_CONF"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rows: dict[str, dict[str, str]] = {}
    for line in out.splitlines():
        job, state, elapsed, cpu, rss, req = line.split("|")
        base, _, step = job.partition(".")
        if not step:
            rows[base] = {"state": state, "elapsed": elapsed, "cpu": cpu, "req": req, "rss": ""}
        elif step == "batch" and base in rows:
            rows[base]["rss"] = rss
    return rows


def settled(run, done=lambda report: "sacct" in report.sources, within_s: float = 60):
    """The run's report once ``done(report)`` (sacct records elements seconds after they
    end), or the last one read after ``within_s``."""
    deadline = time.monotonic() + within_s
    while True:
        report = run.usage()
        if done(report) or time.monotonic() > deadline:
            return report
        time.sleep(1)


LAYOUTS = {
    "alone": {},
    "sequential": {"pack": 3},
    "forked": {"pack": 3, "cpus_per_task": 2},
}


@pytest.mark.slurm
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("accounting", [True, False], ids=["acct", "noacct"])
def test_each_element_on_slurm_records_its_own_use(cluster_env, tmp_path, accounting, layout):
    """On Slurm, with and without accounting, alone or packed (one after another, or in
    forked workers): every element's record says what it used, its peak its own, and
    the memory Slurm gave it."""
    sizes = [120, 15, 60]
    f = task(mem="600M", time=5, **LAYOUTS[layout])(hold)
    with slurm(cluster_env, tmp_path, accounting) as c:
        run = submit(f.map(sizes), cluster=c, progress=False)
        assert run.result() == (sizes,)
        lines = {u.key: u for u in usage_lines(c, runs=[run.id])}
        (aj,) = run.array_jobs
        for key, mb in zip(aj.keys, sizes, strict=True):
            u = lines[key]
            assert mb <= u.number("m") / 1024 < mb + 60, (layout, mb, u.fields)
            assert u.fields["mb"] == "hwm" and u.number("w") >= 0 and u.number("c") >= 0
            assert u.number("rm") == 600 and u.fields["h"]
            assert u.kind == ("result" if layout == "alone" else "pack")
        report = settled(run) if accounting else run.usage()
    (t,) = report.tasks
    assert t.measured == 3 and t.request.mem_mb == 600
    assert report.sources == (("runner", "sacct") if accounting else ("runner",))
    if not accounting:
        assert "keeps no accounting" in report.note


@pytest.mark.slurm
def test_a_mixed_run_matches_sacct_and_shows_every_attempt(cluster_env, tmp_path):
    """A run with an element that finishes (sacct samples its memory every second), one
    killed for memory (cgroup), one that raises, and a packed array: the report's figures
    of each element that ran alone are sacct's own (Elapsed, TotalCPU, MaxRSS, ReqMem);
    the one killed shows OUT_OF_MEMORY with the memory it asked (it left no record); the
    packed ones are the runner's; warnings say what to change."""
    sampled = task(mem="800M", time=5, extra_sbatch=["--acctg-freq=task=1"])(hold)
    starved = task(mem="100M", time=5)(hold)
    broken = task(mem="300M", time=5)(fails)
    packed = task(mem="600M", time=5, pack=2)(hold)
    with slurm(cluster_env, tmp_path) as c:
        run = submit(
            sampled(150, 3.0), starved(400), broken(1), packed.map([30, 40]),
            cluster=c, progress=False,
        )  # fmt: skip
        run.wait()  # every element to its end (result() would cancel the rest at the first failure)
        with pytest.raises((TaskError, ElementFailedError)):  # the OOM, or the raise
            run.result()
        ids = {aj.id: run.handle.job_ids[aj.id] for aj in run.array_jobs}
        deadline = time.monotonic() + 60
        while True:  # sacct records array elements a few seconds after they end
            theirs = sacct_rows(cluster_env, list(ids.values()))
            report = run.usage()  # after sacct's own: never older than it
            ended = all(r["state"] not in ("RUNNING", "PENDING") for r in theirs.values())
            sampled_rss = any(r["rss"] for r in theirs.values())
            if (ended and sampled_rss) or time.monotonic() > deadline:
                break
            time.sleep(1)
    elements = {e.key: e for e in report.elements}
    for aj in run.array_jobs:
        if aj.pack > 1:
            continue
        (e,) = [elements[k] for k in aj.keys]
        mine = theirs[f"{ids[aj.id]}_0"]
        a = e.last
        assert a.state == mine["state"].split()[0]
        assert a.elapsed_s == int(mine["elapsed"])
        assert a.cpu_s == pytest.approx(parse_cpu_s(mine["cpu"]))
        assert a.request.mem_mb == parse_rss_mb(mine["req"])
        if mine["rss"]:
            assert a.peak_mb == pytest.approx(parse_rss_mb(mine["rss"]))
            assert a.measured == "sacct"
    big = next(e for e in report.elements if e.task == "hold" and e.last.request.mem_mb == 800)
    assert big.last.peak_mb >= 150 and big.last.source == "sacct+runner"
    killed = next(e for e in report.elements if e.last and e.last.request.mem_mb == 100)
    assert killed.last.state == "OUT_OF_MEMORY" and killed.last.source == "sacct"
    assert killed.last.runner is None  # it left no record: sacct alone knows
    raised = next(e for e in report.elements if e.task == "fails")
    assert raised.last.state == "FAILED" and raised.last.peak_mb > 0
    for e in report.elements:
        if e.packed:
            assert e.last.source == "runner" and e.last.peak_mb >= 30
    text = str(report)
    assert "ran out of memory (OUT_OF_MEMORY) at 100M" in text
    assert "memory used under 25% of the request" in text  # the packed ones: 40M of 600M


@pytest.mark.slurm
def test_a_requeued_element_shows_both_attempts(cluster_env, tmp_path):
    """An element Slurm runs twice (requeued while it ran) has two attempts in the report,
    each with its state and request, the runner's figures on the one that finished."""
    from test_backends_slurm import requeue_now, wait_until_running

    f = task(mem="300M", time=5, requeue=True)(hold)
    with slurm(cluster_env, tmp_path) as c:
        run = submit(f(50, 4.0), cluster=c, progress=False)
        wait_until_running(run)
        time.sleep(1)
        conf = {**os.environ, "SLURM_CONF": cluster_env["LAZYSLURM_TEST_SLURM_CONF"]}
        requeue_now(f"{run.handle.job_ids['aj0']}_0", conf)
        assert run.result() == (50,)
        deadline = time.monotonic() + 60
        while True:
            report = run.usage()
            (e,) = report.elements
            done = len(e.attempts) == 2 and e.last.state == "COMPLETED"
            if done or time.monotonic() > deadline:
                break
            time.sleep(1)
    first, second = e.attempts
    assert (first.number, second.number) == (1, 2)
    assert first.state == "REQUEUED" and second.state == "COMPLETED"
    assert first.request.mem_mb == second.request.mem_mb == 300
    assert second.runner is not None and second.runner["a"] == "2"
    assert "attempts:" in str(report) and "1 REQUEUED" in str(report)


@pytest.mark.slurm
def test_mem_auto_learns_within_1_5x_of_the_peak_on_a_memory_enforcing_cluster(
    cluster_env, tmp_path
):
    """On the cluster that enforces --mem (cgroup): a task peaking at about 200 MB with
    mem="auto:1G" asks 1G the first time, then what its runs so far used; after 3 runs
    the next asks within 1.5x of the measured peak (preview says it learned from 3
    runs), and runs to completion with it."""
    auto = task(mem="auto:1G", time="auto:5")(hold)
    with slurm(cluster_env, tmp_path) as c:
        for i in range(3):
            run = submit(auto(200, 0.5, i), cluster=c, progress=False)
            assert run.result() == (200,)
            (aj,) = run.array_jobs
            assert (aj.resources.mem_mb == 1024) == (i == 0) and aj.learned.runs == i
        p = preview(auto(200, 0.5, 3), cluster=c, start=False)
        peaks = [u.number("m") / 1024 for u in usage_lines(c, names=["hold"])]
        (job,) = p.jobs
        assert len(peaks) == 3 and max(peaks) >= 200
        assert max(peaks) < job.mem_mb <= 1.5 * max(peaks), (job.mem_mb, peaks)
        assert "learned from 3 run(s)" in str(p)
        run = submit(auto(200, 0.5, 3), cluster=c, progress=False)
        assert run.result() == (200,)  # the learned request is enough under cgroup
        (aj,) = run.array_jobs
        assert aj.resources.mem_mb == job.mem_mb and aj.learned.runs == 3
        assert "learned from 3 run(s)" in str(run.usage())


@pytest.mark.slurm
@pytest.mark.ssh
def test_usage_and_history_over_ssh(cluster_env):
    """Over SSH (the records are on the cluster): the report and the history lookup are
    one command each."""
    from test_backends_slurm import ssh_cluster

    f = task(mem="auto:500M", time=5)(hold)
    with ssh_cluster(cluster_env) as c:
        run = submit(f.map([(40, 0, int(time.time()))]), cluster=c, progress=False)
        run.result()
        report = run.usage()
        lines = usage_lines(c, names=["hold"])
    (t,) = report.tasks
    assert t.measured == 1 and t.peak_mb >= 40 and "runner" in report.sources
    assert any(u.run == run.id for u in lines)
