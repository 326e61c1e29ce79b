"""Every headline ratio of docs/benchmarks.md, side by side in one run.

    bash tests/cluster/start.sh                 # or an additional cluster, see below
    python -m benchmarks [--cases overhead,pipeline,...] [--reps 3] [--quick]

Which Slurm: the ``acct`` part (accounting, ``sacct``) of the test cluster whose
``env.sh`` was sourced (else the ``env.json`` of ``$LAZYSLURM_TEST_CLUSTER_DIR``, default
``/tmp/lazyslurm-test-cluster``). The issue's
figures are taken on a cluster with Slurm's default limits and ``TaskPlugin=task/none``:
start one beside the shared ones with ``tests/cluster/README.md``'s knobs
(``LAZYSLURM_TEST_CLUSTER_DIR=/tmp/lz-limits ... TASK=none MAX_ARRAY=1001
MAX_JOBS=10000 bash tests/cluster/start.sh``) and point ``LAZYSLURM_TEST_CLUSTER_DIR``
at it.

Cases (default: all but ``sweep10m``, which runs ten million elements, ~5 min):

- ``graph``: building a 10,000-call sweep, per call, against dask.delayed (if installed);
- ``scale``: a 1,000,000 and a 10,000,000-element sweep + fan-in built and planned, in a
  fresh process each (seconds, peak RSS); goal <= 2 s and <= 500 MB for ten million;
- ``overhead``: 80 trivial elements, unpacked, a fresh ``Cluster("slurm")`` each time (its
  probe counts), against ``sbatch --array=0-79 --wrap "python -c pass" -o /dev/null``
  timed until squeue (polled every 50 ms) shows none; goal <= 1.15x;
- ``pipeline``: the 4 x 20 element-wise pipeline, unpacked, against four such arrays
  chained by ``aftercorr`` (goal <= 1.15x), and against submitit's best (all four
  arrays at once, ``aftercorr``) when submitit is installed (goal <= 0.3x);
- ``seed``: the seed's three patterns as written (``.wait()`` per stage), all three in
  one process each, against submitit's idiomatic code (goal <= 0.3x);
- ``packed``: 1,000 no-ops with ``pack="auto"`` against the raw one-job-per-element
  floor (goal <= 0.3x);
- ``sweep100k``: a 100,000-element sweep + fan-in, ``pack="auto"``: seconds to submitted,
  to finished, client RSS (goal: finished <= 0.2x dask-jobqueue's 178 s on the lab);
- ``sweep10m``: the same with 10,000,000 elements, run to completion.

Each Slurm measurement waits for a quiet queue first; the lazyslurm row and its floor
alternate within each repetition; medians are printed, and the ratios are of medians.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the scripts beside this one import each other by name
# submitit's jobs unpickle functions of seed_patterns by name: they must import it too
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p
)

import seed_patterns as sp  # noqa: E402

from benchmarks import noop_tasks  # noqa: E402
from lazyslurm import Cluster, compute, submit, task  # noqa: E402

PY = sp.PY
ALL = ("graph", "scale", "overhead", "pipeline", "seed", "packed", "sweep100k", "sweep10m")
DEFAULT = tuple(c for c in ALL if c != "sweep10m")
DASK_JOBQUEUE_100K_S = 178.0  # dask-jobqueue 0.9.0 on the lab, 100,000 no-ops (targets.md)
HYPERQUEUE_SCALE = 1_000_000  # HyperQueue's published scale: about a million tasks

noop = task(time="00:03:00", mem="100M", cpus_per_task=1)(noop_tasks.noop)


@task(time="00:10:00", mem="2G")
def count(xs: list[Any]) -> int:
    return len(xs)


# --------------------------------------------------------------------------- helpers


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})" if len(xs) > 1 else f"{xs[0]:.2f}"


def cluster(tag: str, accounting: bool = True) -> Cluster:
    return Cluster(
        "slurm", workdir=sp.OUT / "all" / tag, python=PY, env={"SLURM_CONF": sp.conf(accounting)}
    )


def quiet() -> None:
    sp.wait_quiet(max_s=30)


class Report:
    """Rows of the final table: what, lazyslurm, peer, ratio, goal."""

    def __init__(self) -> None:
        self.rows: list[list[str]] = []

    def add(
        self,
        case: str,
        what: str,
        ours: str,
        peer: str,
        ratio: float | None,
        goal: str = "",
        met: bool | None = None,
    ) -> None:
        r = "-" if ratio is None else f"{ratio:.2f}x" if ratio >= 0.01 else f"{ratio:.1e}x"
        status = "" if met is None else ("met" if met else "NOT MET")
        self.rows.append([case, what, ours, peer, r, goal, status])
        print(f"# {case}: {what}: {ours} vs {peer} = {r} {goal} {status}", flush=True)


# --------------------------------------------------------------------------- cases


def case_graph(rep: Report, reps: int, quick: bool) -> None:
    import graph_build as gb

    n = 2_000 if quick else 10_000
    cfgs = gb.configs(n)
    ours = min(gb.ls_sweep_map(cfgs)[0] for _ in range(reps))
    try:
        import dask  # noqa: F401
    except ImportError:
        rep.add("graph", f"{n:,} calls, per call", f"{ours / n * 1e6:.1f} us", "dask absent", None)
        return
    theirs = min(gb.dask_sweep(cfgs, fan_in=False)[0] for _ in range(reps))
    rep.add(
        "graph",
        f"{n:,} calls of train.map, per call",
        f"{ours / n * 1e6:.1f} us",
        f"dask.delayed {theirs / n * 1e6:.1f} us",
        ours / theirs,
        "<= 1x",
        ours <= theirs,
    )


SCALE_CHILD = """
import resource, sys, time
t0 = time.perf_counter()
import lazyslurm.graph.core as core
from lazyslurm import task
from lazyslurm.planning.planner import make_plan
n = int(sys.argv[1])
if sys.argv[2] == "one-by-one":
    core.COMPACT_MIN = 10**12  # a Job per element, as before issue 27
t1 = time.perf_counter()
@task(pack="auto")
def train(x): return x
@task
def select(xs): return max(xs)
best = select(train.map(range(n)))
plan = make_plan([best], max_array_size=1001, max_jobs=10000)
t2 = time.perf_counter()
assert plan.nodes == n + 1
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(t2 - t1, rss, len(plan.array_jobs), sum(a.slurm_size for a in plan.array_jobs))
"""


def _scale(n: int, how: str, reps: int) -> tuple[float, float, str]:
    runs = []
    for _ in range(reps):
        out = subprocess.run(
            [sys.executable, "-c", SCALE_CHILD, str(n), how],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        runs.append((float(out[0]), float(out[1]), f"{out[2]} array jobs, {out[3]} Slurm elements"))
    return med([r[0] for r in runs]), max(r[1] for r in runs), runs[0][2]


def case_scale(rep: Report, reps: int, quick: bool) -> None:
    """Built + planned in a fresh process (peak RSS of the whole process); the peer of
    the million-element row is the same graph with a Job per element (before issue 27)."""
    secs, mb, shape = _scale(1_000_000, "compact", reps)
    old_s, old_mb, _ = _scale(1_000_000, "one-by-one", 1)
    rep.add(
        "scale",
        "1,000,000-element sweep + fan-in, built + planned",
        f"{secs * 1000:.1f} ms, {mb:.0f} MB ({shape})",
        f"a Job per element {old_s:.2f} s, {old_mb:.0f} MB",
        secs / old_s,
        "",
        None,
    )
    secs, mb, shape = _scale(10_000_000, "compact", reps)
    rep.add(
        "scale",
        "10,000,000-element sweep + fan-in, built + planned",
        f"{secs * 1000:.1f} ms, {mb:.0f} MB ({shape})",
        "goal 2 s and 500 MB",
        secs / 2.0,
        "<= 1x",
        secs <= 2.0 and mb <= 500,
    )


def lazy_array(width: int, tag: str) -> float:
    """compute(noop.map(range(width))) in a fresh Cluster: its probe counts."""
    t0 = time.perf_counter()
    with cluster(tag):
        (values,) = compute(noop.map(range(width)))
    assert values == [None] * width
    return time.perf_counter() - t0


def floor_array(width: int) -> float:
    return sp.raw_chain(stages=1, width=width, kind="afterok", command=f"{PY} -c pass")["makespan"]


def paired(
    reps: int, ours: Callable[[int], float], floor: Callable[[], float]
) -> tuple[list[float], list[float]]:
    a, b = [], []
    for r in range(reps):
        quiet()
        b.append(floor())
        quiet()
        a.append(ours(r))
        print(
            f"#   rep {r + 1}: ours {a[-1]:.2f} s, floor {b[-1]:.2f} s", file=sys.stderr, flush=True
        )
    return a, b


def case_overhead(rep: Report, reps: int, quick: bool) -> None:
    stamp = time.strftime("%H%M%S")
    ours, floor = paired(
        reps, lambda r: lazy_array(80, f"ovh-{stamp}-{r}"), lambda: floor_array(80)
    )
    rep.add(
        "overhead",
        "80 trivial elements, unpacked, fresh Cluster",
        f"{spread(ours)} s",
        f"raw floor {spread(floor)} s",
        med(ours) / med(floor),
        "<= 1.15x",
        med(ours) / med(floor) <= 1.15,
    )


def case_pipeline(rep: Report, reps: int, quick: bool) -> None:
    stamp = time.strftime("%H%M%S")

    def ours(r: int) -> float:
        t0 = time.perf_counter()
        with cluster(f"pipe-{stamp}-{r}"):
            (values,) = compute(sp.pipeline_4x20_graph())
        assert list(values) == sp.EXPECTED_4X20
        return time.perf_counter() - t0

    mine, floor = paired(reps, ours, lambda: sp.raw_floor(True)["makespan"])
    rep.add(
        "pipeline",
        "4 x 20 element-wise pipeline, unpacked",
        f"{spread(mine)} s",
        f"raw floor {spread(floor)} s",
        med(mine) / med(floor),
        "<= 1.15x",
        med(mine) / med(floor) <= 1.15,
    )
    if not _has("submitit"):
        return
    best = []
    for r in range(reps):
        quiet()
        best.append(sp.run_submitit("4x20 pipeline (aftercorr)", f"pipe-{stamp}-{r}")["makespan"])
    rep.add(
        "pipeline",
        "4 x 20 pipeline vs submitit's best (aftercorr)",
        f"{spread(mine)} s",
        f"submitit {spread(best)} s",
        med(mine) / med(best),
        "<= 0.3x",
        med(mine) / med(best) <= 0.3,
    )


SEED_CHILD = """
import contextlib, io, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import seed_patterns as sp
sp.ENV.update(sp.cluster_env())
with contextlib.redirect_stdout(io.StringIO()):
    for p in ("fan-out/fan-in", "pipeline", "parameter sweep"):
        sp.run_lazyslurm(sys.argv[2], p, "seed", sys.argv[3] + p.replace("/", "-"))
print(time.perf_counter() - t0)
"""

SEED_SUBMITIT = """
import sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
import seed_patterns as sp
sp.ENV.update(sp.cluster_env())
for p in ("fan-out/fan-in", "pipeline", "parameter sweep"):
    sp.run_submitit(p, sys.argv[3] + p.replace("/", "-"))
print(time.perf_counter() - t0)
"""


def case_seed(rep: Report, reps: int, quick: bool) -> None:
    """The seed's three patterns as written, as a whole process each (interpreter start
    and imports included), lazyslurm against submitit."""
    if not _has("submitit"):
        rep.add("seed", "seed patterns", "-", "submitit absent", None)
        return
    stamp = time.strftime("%H%M%S")

    def whole(code: str, r: int) -> float:
        quiet()
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", code, str(HERE), "slurm", f"seed-{stamp}-{r}-"],
            check=True,
            capture_output=True,
            text=True,
        )
        return time.perf_counter() - t0

    mine, theirs = [], []
    for r in range(reps):
        theirs.append(whole(SEED_SUBMITIT, r))
        mine.append(whole(SEED_CHILD, r))
        print(
            f"#   rep {r + 1}: ours {mine[-1]:.2f} s, submitit {theirs[-1]:.2f} s",
            file=sys.stderr,
            flush=True,
        )
    rep.add(
        "seed",
        "the seed's three patterns as written, whole process",
        f"{spread(mine)} s",
        f"submitit {spread(theirs)} s",
        med(mine) / med(theirs),
        "<= 0.3x",
        med(mine) / med(theirs) <= 0.3,
    )


def sweep(n: int, tag: str) -> dict[str, float]:
    t0 = time.perf_counter()
    with cluster(tag):
        run = submit(count(noop.map(range(n), pack="auto")))
        submitted = time.perf_counter() - t0
        (got,) = run.result()
    assert got == n, got
    return {
        "submitted": submitted,
        "finished": time.perf_counter() - t0,
        "rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "jobs": sum(aj.slurm_size for aj in run.array_jobs),
    }


def case_packed(rep: Report, reps: int, quick: bool) -> None:
    n = 1_000
    stamp = time.strftime("%H%M%S")
    ours, floor = paired(
        max(1, reps - 1),
        lambda r: sweep(n, f"packed-{stamp}-{r}")["finished"],
        lambda: _raw_many(n),
    )
    rep.add(
        "packed",
        f"{n:,} no-ops, pack='auto'",
        f"{spread(ours)} s",
        f"raw floor {spread(floor)} s",
        med(ours) / med(floor),
        "<= 0.3x",
        med(ours) / med(floor) <= 0.3,
    )


def _raw_many(n: int) -> float:
    env = sp.slurm_env(True)
    t0 = time.perf_counter()
    ids = []
    for start in range(0, n, 1000):
        size = min(1000, n - start)
        out = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "-p",
                "debug",
                "-o",
                "/dev/null",
                "-e",
                "/dev/null",
                f"--array=0-{size - 1}",
                "--wrap",
                f"{PY} -c pass",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        ids.append(out.strip().split(";")[0])
    while subprocess.run(
        ["squeue", "-h", "-t", "PD,R,CG,CF,S", "-j", ",".join(ids), "-o", "%i"],
        env=env,
        capture_output=True,
        text=True,
    ).stdout.strip():
        time.sleep(0.05)
    return time.perf_counter() - t0


SWEEP_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/benchmarks")
import seed_patterns as sp
from benchmarks.__main__ import sweep
sp.ENV.update(sp.cluster_env())
print(json.dumps(sweep(int(sys.argv[2]), sys.argv[3])))
"""


def _sweep_fresh(n: int, tag: str) -> dict[str, float]:
    """:func:`sweep` in a fresh process (its RSS is the client's alone)."""
    import json

    out = subprocess.run(
        [sys.executable, "-c", SWEEP_CHILD, str(HERE.parent), str(n), tag],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def case_sweep(rep: Report, n: int) -> None:
    quiet()
    r = _sweep_fresh(n, f"sweep{n}-{time.strftime('%H%M%S')}")
    what = f"{n:,}-element sweep + fan-in, pack='auto' ({r['jobs']} Slurm elements)"
    ours = (
        f"submitted {r['submitted']:.2f} s, finished {r['finished']:.1f} s, "
        f"client {r['rss']:.0f} MB"
    )
    if n == 100_000:
        ratio = r["finished"] / DASK_JOBQUEUE_100K_S
        rep.add(
            "sweep100k",
            what,
            ours,
            f"dask-jobqueue {DASK_JOBQUEUE_100K_S:.0f} s (lab)",
            ratio,
            "<= 0.2x",
            ratio <= 0.2,
        )
    else:
        rep.add(
            "sweep10m",
            what,
            ours,
            f"HyperQueue's published scale ~{HYPERQUEUE_SCALE:,} tasks",
            n / HYPERQUEUE_SCALE,
            "runs to completion",
            True,
        )


def _has(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cases",
        default=",".join(DEFAULT),
        help=f"comma-separated, of: {', '.join(ALL)} (or 'all')",
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="one repetition, smaller graphs")
    args = ap.parse_args(argv)
    cases = ALL if args.cases == "all" else tuple(c for c in args.cases.split(",") if c)
    unknown = set(cases) - set(ALL)
    if unknown:
        ap.error(f"unknown case(s) {', '.join(sorted(unknown))}; known: {', '.join(ALL)}")
    reps = 1 if args.quick else args.reps
    sp.ENV.update(sp.cluster_env())
    os.environ["SLURM_CONF"] = sp.conf(True)  # submitit and the raw floors call sbatch
    conf = Path(sp.conf(True)).read_text()
    task_plugin = next(
        (ln.split("=", 1)[1] for ln in conf.splitlines() if ln.startswith("TaskPlugin=")), "?"
    )
    limits = " ".join(
        ln for ln in conf.splitlines() if ln.startswith(("MaxArraySize=", "MaxJobCount="))
    )
    started = time.time()
    print(f"# python -m benchmarks  {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(
        f"# host {platform.node()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}; cluster {sp.STATE} ({task_plugin}, {limits}); "
        f"reps={reps}; load average {os.getloadavg()[0]:.1f}"
    )
    rep = Report()
    runs: dict[str, Callable[[], None]] = {
        "graph": lambda: case_graph(rep, reps, args.quick),
        "scale": lambda: case_scale(rep, reps, args.quick),
        "overhead": lambda: case_overhead(rep, reps, args.quick),
        "pipeline": lambda: case_pipeline(rep, reps, args.quick),
        "seed": lambda: case_seed(rep, reps, args.quick),
        "packed": lambda: case_packed(rep, reps, args.quick),
        "sweep100k": lambda: case_sweep(rep, 100_000),
        "sweep10m": lambda: case_sweep(rep, 10_000_000),
    }
    for case in cases:
        runs[case]()
    print()
    print(
        sp.table(["case", "what", "lazyslurm", "peer / floor", "ratio", "goal", "status"], rep.rows)
    )
    print(
        f"# total {time.time() - started:.0f} s; load average at the end {os.getloadavg()[0]:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
