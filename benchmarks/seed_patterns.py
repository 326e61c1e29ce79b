#!/usr/bin/env python
"""The seed's patterns on a real Slurm: lazyslurm against submitit and the raw floor, in one run.

    bash tests/cluster/start.sh && . /tmp/lazyslurm-test-cluster/env.sh
    python benchmarks/seed_patterns.py [--reps 5] [--reps-long 3]
        [--backends slurm,ssh,slurm-noacct] [--no-submitit] [--no-overhead] [--quick]

Needs the test clusters of ``tests/cluster/start.sh`` (their settings are read from the
``LAZYSLURM_TEST_*`` variables, or from ``/tmp/lazyslurm-test-cluster/env.json``) and
submitit for the peer. Prints, per measurement, the median of ``--reps`` runs (min-max;
``--reps-long`` for the 4 x 20 pipelines and the floors). The machine is shared: each
measurement waits for an empty queue and idle CPUs, and is repeated (up to 4 times) if
anyone else's jobs or Python processes ran meanwhile; progress goes to stderr.

1. lazyslurm, for each seed pattern (fan-out/fan-in, pipeline, parameter sweep) and each
   backend, in the seed's style (``examples.parallelization_patterns.fan_out_fan_in`` etc.,
   a ``.wait()`` per stage) and fully lazy (one ``compute``); then a 4-stage x 20-element
   element-wise pipeline, fully lazy (and stage by stage). Makespan is wall time from the
   start of the pattern's code (cluster creation included) to the final result in hand;
   ``sbatch`` is ``backend.stats["sbatch"]``, ``polls`` ``stats["polls"]``, and round trips
   are ``backend.shell.round_trips`` (split into probe / submit / polls / fetch).
2. submitit (the strongest peer), idiomatic: ``map_array``, wait for the results, submit
   the next stage; the 4 x 20 pipeline stage by stage and in its best style (all four
   arrays at once chained by ``aftercorr``, each task reading its upstream pickle).
3. The raw floor: four ``sbatch --array=0-19 --wrap '<python> -c pass'`` chained by
   ``aftercorr``, submitted at once, timed until squeue (polled every 50 ms) shows none.
4. The runner's overhead inside the job: process start (``/proc/self/stat``) to user code,
   lazyslurm's runner against a bare ``python -c`` with the same interpreter.

Every Python started by a job is the resolved interpreter (``sys.executable`` of this
process, never the pyenv shim: see ``shared/notes/targets.md``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
# jobs started on this host inherit the environment: let them import lazyslurm and examples
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)

from examples import parallelization_patterns as pp  # noqa: E402
from lazyslurm import Cluster, compute, task  # noqa: E402

PY = os.path.realpath(sys.executable)  # the interpreter itself, not a shim
STATE = Path(os.environ.get("LAZYSLURM_TEST_CLUSTER_DIR", "/tmp/lazyslurm-test-cluster"))
OUT = Path(tempfile.gettempdir()) / "lazyslurm-bench"
SITE = "lazyslurm-bench-site"  # under the SSH user's home
WIDTH, DEPTH = 20, 4
EXPECTED_4X20 = [i + 1 + 10 + 100 + 1000 for i in range(WIDTH)]

# --------------------------------------------------------------------------- environment


def cluster_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.startswith("LAZYSLURM_TEST_")}
    if "LAZYSLURM_TEST_SLURM_CONF" not in env:
        path = STATE / "env.json"
        if not path.exists():
            raise SystemExit(
                "no test cluster: run `bash tests/cluster/start.sh` (as root) and "
                f"`. {STATE}/env.sh` first"
            )
        env.update(json.loads(path.read_text()))
    return env


ENV: dict[str, str] = {}


def conf(accounting: bool = True) -> str:
    return ENV["LAZYSLURM_TEST_SLURM_CONF" if accounting else "LAZYSLURM_TEST_SLURM_CONF_NOACCT"]


def slurm_env(accounting: bool = True) -> dict[str, str]:
    return {**os.environ, "SLURM_CONF": conf(accounting)}


def ssh_options() -> dict[str, Any]:
    return dict(
        hostname=ENV["LAZYSLURM_TEST_SSH_HOST"],
        port=int(ENV["LAZYSLURM_TEST_SSH_PORT"]),
        username=ENV["LAZYSLURM_TEST_SSH_USER"],
        key_filename=ENV["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=ENV["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
    )


def install_remote_site() -> str:
    """lazyslurm + cloudpickle + attrs in the SSH user's home (as a user would install them)."""
    import attr
    import attrs
    import cloudpickle

    from lazyslurm.backends.shell import SSHShell

    files: dict[str, bytes] = {}
    for pkg in (
        ROOT / "lazyslurm",
        Path(cloudpickle.__file__).parent,
        Path(attr.__file__).parent,
        Path(attrs.__file__).parent,
    ):
        for path in pkg.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"{pkg.name}/{path.relative_to(pkg)}"] = path.read_bytes()
    with SSHShell(**ssh_options()) as shell:
        shell.run(f"rm -rf ~/{SITE}")
        shell.put_files(f"~/{SITE}", files)
        # compile once, as pip would, so no job pays for it
        shell.run(f"/usr/bin/python3 -m compileall -q ~/{SITE} >/dev/null 2>&1")
        return f"{shell.home()}/{SITE}"


REMOTE_SITE = ""


def make_cluster(backend: str, tag: str) -> Cluster:
    """A fresh session on one backend, with the library's default poll settings."""
    if backend == "ssh":
        return Cluster(
            "ssh",
            python="/usr/bin/python3",
            setup=[f"export PYTHONPATH={shlex.quote(REMOTE_SITE)}"],
            workdir=f"~/.lazyslurm-bench/{tag}",
            **ssh_options(),
        )
    accounting = backend == "slurm"
    return Cluster(
        "slurm",
        workdir=OUT / "lazyslurm" / backend / tag,
        python=PY,
        env={"SLURM_CONF": conf(accounting)},
    )


def live_jobs() -> int:
    """Pending or running jobs on both clusters (anyone's)."""
    n = 0
    for acct in (True, False):
        out = subprocess.run(
            ["squeue", "-h", "-t", "PD,R,CG,CF", "-o", "%i"],
            env=slurm_env(acct),
            capture_output=True,
            text=True,
        ).stdout
        n += len(out.split())
    return n


def array_ids(accounting: bool) -> set[int]:
    """Every array/job id the cluster still knows (finished ones stay for MinJobAge)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "%F"],
        env=slurm_env(accounting),
        capture_output=True,
        text=True,
    ).stdout
    return {int(x) for x in out.split() if x.isdigit()}


def _others_cpu() -> float:
    """CPU seconds used so far by other people's Python processes on this machine (their
    tests and scripts): Python processes that are neither ours nor inside a Slurm job."""
    mine = os.getpid()
    hz = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as fh:
                head, _, rest = fh.read().rpartition(")")
            fields = rest.split()
        except OSError:
            continue
        comm = head.split("(", 1)[1]
        procs[int(pid)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / hz)
    total = 0.0
    for pid, (_, comm, cpu) in procs.items():
        if "python" not in comm:
            continue
        p, ours = pid, False
        while p in procs and p > 1:
            if p == mine or procs[p][1] == "slurmstepd":
                ours = True
                break
            p = procs[p][0]
        if not ours:
            total += cpu
    return total


class Guard:
    """Runs a measurement on a quiet cluster and repeats it if anyone else submitted jobs
    meanwhile (the machine is shared: 2 cores, and every job start costs CPU)."""

    def __init__(self, attempts: int = 4) -> None:
        self.attempts = attempts
        self.retries = 0
        self.unclean = 0

    def __call__(self, fn: Callable[[], dict[str, Any]], label: str = "") -> dict[str, Any]:
        for _ in range(self.attempts):
            t0 = time.perf_counter()
            quiet = wait_quiet()
            waited = time.perf_counter() - t0
            before = array_ids(True) | array_ids(False)
            cpu0 = _others_cpu()
            r = fn()
            others = len((array_ids(True) | array_ids(False)) - before) - r["sbatch"]
            cpu = _others_cpu() - cpu0
            clean = others <= 0 and not live_jobs() and cpu < 1.0
            print(
                f"#   {label}: {r['makespan']:.2f} s (waited {waited:.0f} s for quiet"
                f"{'' if quiet else ', in vain'}; {max(others, 0)} other jobs, "
                f"{cpu:.1f} s CPU of others{'' if clean else ': repeated'})",
                file=sys.stderr,
                flush=True,
            )
            if clean:
                return r
            self.retries += 1
            time.sleep(1.0)
        self.unclean += 1
        r["unclean"] = True
        return r


def cpu_idle(sample_s: float = 0.3) -> float:
    """Fraction of the machine's CPU time idle over ``sample_s`` (from /proc/stat)."""

    def read() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            values = [int(x) for x in fh.readline().split()[1:]]
        return values[3] + values[4], sum(values)  # idle + iowait, total

    idle0, total0 = read()
    time.sleep(sample_s)
    idle1, total1 = read()
    return (idle1 - idle0) / max(total1 - total0, 1)


def wait_quiet(max_s: float = 120.0, min_idle: float = 0.8) -> bool:
    """Wait (up to ``max_s``) until nobody has jobs queued and the CPUs are mostly idle
    (other people's tests share this 2-core machine). Returns whether it got quiet."""
    deadline = time.monotonic() + max_s
    while True:
        if not live_jobs() and cpu_idle() >= min_idle:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


# --------------------------------------------------------------------------- lazyslurm side


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def add_1(x: int) -> int:
    return x + 1


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def add_10(x: int) -> int:
    return x + 10


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def add_100(x: int) -> int:
    return x + 100


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def add_1000(x: int) -> int:
    return x + 1000


STAGES = (add_1, add_10, add_100, add_1000)


def pipeline_4x20_graph() -> Any:
    stage: Any = list(range(WIDTH))
    for t in STAGES:
        stage = t.map(stage)  # element-wise: aftercorr
    return stage


def pipeline_4x20_seed(cluster: Cluster) -> list[int]:
    """The same pipeline in the seed's style: each stage waited for before the next."""
    with cluster:
        stage: Any = list(range(WIDTH))
        for t in STAGES:
            stage = t.map(stage)
            stage.wait()
        return stage.get_results()


def check_fan(r: Any) -> bool:
    return r["total_sum"] == 124750 and r["total_chunks"] == 5


def check_pipeline(r: Any) -> bool:
    return list(r) == [f"final_transform_{i}(preprocessed_data_{i + 1})" for i in range(3)]


def check_sweep(r: Any) -> bool:
    return r["lr"] == 0.1 and "accuracy" in r


PATTERNS: dict[str, tuple[Callable[[Cluster], Any], Callable[[], Any], Callable[[Any], bool]]] = {
    "fan-out/fan-in": (pp.fan_out_fan_in, pp.fan_out_fan_in_graph, check_fan),
    "pipeline": (pp.pipeline, pp.pipeline_graph, check_pipeline),
    "parameter sweep": (pp.parameter_sweep, pp.parameter_sweep_graph, check_sweep),
    "4x20 pipeline": (pipeline_4x20_seed, pipeline_4x20_graph, lambda r: list(r) == EXPECTED_4X20),
}


class Meter:
    """Round trips of a backend, split by action (wraps the backend's methods)."""

    def __init__(self, backend: Any) -> None:
        self.b = backend
        self.split = {"probe": 0, "submit": 0, "poll": 0, "fetch": 0}
        self.poll_times: list[float] = []
        for name, kind in (
            ("_probe", "probe"),
            ("start", "submit"),
            ("poll", "poll"),
            ("read_files", "fetch"),
        ):
            setattr(backend, name, self._wrap(getattr(backend, name), kind))

    def _wrap(self, fn: Callable[..., Any], kind: str) -> Callable[..., Any]:
        def wrapped(*a: Any, **k: Any) -> Any:
            before = self.b.shell.round_trips
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.split[kind] += self.b.shell.round_trips - before
                if kind == "poll":
                    self.poll_times.append(time.perf_counter() - t0)

        return wrapped


def run_lazyslurm(backend: str, pattern: str, style: str, tag: str) -> dict[str, Any]:
    seed_fn, graph_fn, check = PATTERNS[pattern]
    t0 = time.perf_counter()
    cluster = make_cluster(backend, tag)
    b = cluster.backend  # kept: `with cluster:` closes it and drops the reference
    meter = Meter(b)
    with contextlib.redirect_stdout(io.StringIO()):
        if style == "seed":
            result = seed_fn(cluster)
        else:
            with cluster:
                (result,) = compute(graph_fn())
    makespan = time.perf_counter() - t0
    cluster.close()
    if not check(result):
        raise RuntimeError(f"{pattern} ({style}, {backend}) gave a wrong result: {result!r}")
    return {
        "makespan": makespan,
        "sbatch": b.stats["sbatch"],
        "submits": b.stats["submits"],
        "polls": b.stats["polls"],
        "rt": b.shell.round_trips,
        "rt_split": dict(meter.split),
        "poll_s": statistics.median(meter.poll_times) if meter.poll_times else 0.0,
    }


# --------------------------------------------------------------------------- submitit side


def _call_kw(fn: Callable[..., Any], kw: dict[str, Any]) -> Any:
    return fn(**kw)


def _from_upstream(fn: Callable[[Any], Any], folder: str, up_array: str, index: int) -> Any:
    """A task of submitit's aftercorr pipeline: reads element ``index`` of the upstream array."""
    from submitit.core.utils import pickle_load

    status, value = pickle_load(Path(folder) / f"{up_array}_{index}_0_result.pkl")
    assert status == "success", value
    return fn(value)


def _plus(k: int) -> Callable[[int], int]:
    def f(x: int) -> int:
        return x + k

    f.__name__ = f"add_{k}"
    return f


SUBMITIT_STAGES = tuple(_plus(k) for k in (1, 10, 100, 1000))


def submitit_executor(folder: Path, **extra: Any) -> Any:
    import submitit

    ex = submitit.AutoExecutor(folder=str(folder))
    ex.update_parameters(
        slurm_partition="debug", timeout_min=3, mem_gb=0.25, cpus_per_task=1, **extra
    )
    return ex


def submitit_pattern(pattern: str, folder: Path) -> tuple[Any, int]:
    """The pattern in idiomatic submitit; returns (result, sbatch calls)."""
    ex = submitit_executor(folder)
    if pattern == "fan-out/fan-in":
        split = ex.submit(pp.split_dataset.unwrapped, "large_dataset.csv", 5)
        chunks = split.result()
        jobs = ex.map_array(_call_kw, [pp.process_chunk.unwrapped] * len(chunks), chunks)
        results = [j.result() for j in jobs]
        return ex.submit(pp.merge_results.unwrapped, results).result(), 3
    if pattern == "pipeline":
        raw = ["data_1", "data_2", "data_3"]
        s1 = [j.result() for j in ex.map_array(pp.stage1_preprocess.unwrapped, raw)]
        s2 = [
            j.result()
            for j in ex.map_array(
                pp.stage2_transform.unwrapped, s1, [f"transform_{i}" for i in range(len(s1))]
            )
        ]
        return [j.result() for j in ex.map_array(pp.stage3_finalize.unwrapped, s2)], 3
    if pattern == "parameter sweep":
        configs = pp.sweep_configs()
        jobs = ex.map_array(_call_kw, [pp.train_model.unwrapped] * len(configs), configs)
        results = [j.result() for j in jobs]
        return ex.submit(pp.select_best_model.unwrapped, results).result(), 2
    if pattern == "4x20 pipeline":
        values: list[Any] = list(range(WIDTH))
        for fn in SUBMITIT_STAGES:
            values = [j.result() for j in ex.map_array(fn, values)]
        return values, DEPTH
    if pattern == "4x20 pipeline (aftercorr)":
        jobs = ex.map_array(SUBMITIT_STAGES[0], range(WIDTH))
        for fn in SUBMITIT_STAGES[1:]:
            up = jobs[0].job_id.split("_")[0]
            ex.update_parameters(slurm_additional_parameters={"dependency": f"aftercorr:{up}"})
            jobs = ex.map_array(
                _from_upstream, [fn] * WIDTH, [str(folder)] * WIDTH, [up] * WIDTH, range(WIDTH)
            )
        return [j.result() for j in jobs], DEPTH
    raise KeyError(pattern)


SUBMITIT_CHECKS = {
    **{k: v[2] for k, v in PATTERNS.items()},
    "4x20 pipeline (aftercorr)": lambda r: list(r) == EXPECTED_4X20,
}


def run_submitit(pattern: str, tag: str) -> dict[str, Any]:
    folder = OUT / "submitit" / tag
    os.environ["SLURM_CONF"] = conf(True)  # submitit calls sbatch/sacct from this process
    t0 = time.perf_counter()
    result, sbatch = submitit_pattern(pattern, folder)
    makespan = time.perf_counter() - t0
    if not SUBMITIT_CHECKS[pattern](result):
        raise RuntimeError(f"submitit {pattern} gave a wrong result: {result!r}")
    return {"makespan": makespan, "sbatch": sbatch}


# --------------------------------------------------------------------------- raw floor


def raw_chain(
    *,
    stages: int,
    width: int,
    kind: str,
    command: str,
    accounting: bool = True,
    poll_s: float = 0.05,
) -> dict[str, Any]:
    """``stages`` sbatch calls (arrays of ``width``, or plain jobs if width is 0) chained by
    ``kind``, submitted at once; timed until squeue shows none of them."""
    env = slurm_env(accounting)
    t0 = time.perf_counter()
    ids: list[str] = []
    for _ in range(stages):
        cmd = [
            "sbatch",
            "--parsable",
            "-p",
            "debug",
            "-o",
            "/dev/null",
            "-e",
            "/dev/null",
            "--kill-on-invalid-dep=yes",
        ]
        if width:
            cmd.append(f"--array=0-{width - 1}")
        if ids:
            cmd.append(f"--dependency={kind}:{ids[-1]}")
        out = subprocess.run(
            [*cmd, "--wrap", command], env=env, capture_output=True, text=True, check=True
        ).stdout
        ids.append(out.strip().split(";")[0])
    submitted = time.perf_counter() - t0
    joined = ",".join(ids)
    while True:
        out = subprocess.run(
            ["squeue", "-h", "-t", "PD,R,CG,CF,S", "-j", joined, "-o", "%i"],
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        if not out.strip():
            break
        time.sleep(poll_s)
    return {
        "makespan": time.perf_counter() - t0,
        "sbatch": stages,
        "submit_s": submitted,
        "ids": ids,
    }


def raw_floor(accounting: bool = True, python: str = PY) -> dict[str, Any]:
    return raw_chain(
        stages=DEPTH,
        width=WIDTH,
        kind="aftercorr",
        command=f"{python} -c pass",
        accounting=accounting,
    )


SYS_PY = "/usr/bin/python3"  # the SSH user's interpreter (Debian's: no pyenv site hooks)


# --------------------------------------------------------------------------- runner overhead

OVERHEAD_CODE = (
    "import os, time\n"
    "now = time.clock_gettime(time.CLOCK_BOOTTIME)\n"
    "with open('/proc/self/stat') as fh:\n"
    "    start = int(fh.read().rsplit(')', 1)[1].split()[19])\n"
    "elapsed = now - start / os.sysconf('SC_CLK_TCK')\n"
)


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def since_process_start(i: int) -> float:
    """Seconds from this process's start (the job script's exec of the runner) to here."""
    ns: dict[str, Any] = {}
    exec(OVERHEAD_CODE, ns)
    return ns["elapsed"]


def overhead_lazyslurm(backend: str, width: int, tag: str) -> list[float]:
    cluster = make_cluster(backend, tag)
    with cluster:
        (values,) = compute(since_process_start.map(range(width)))
    return values


def overhead_raw(python: str, width: int, tag: str) -> list[float]:
    folder = OUT / "raw-overhead" / tag
    folder.mkdir(parents=True, exist_ok=True)
    code = OVERHEAD_CODE + "print(elapsed)\n"
    cmd = [
        "sbatch",
        "--parsable",
        "-p",
        "debug",
        f"--array=0-{width - 1}",
        "-o",
        f"{folder}/%a.out",
        "-e",
        f"{folder}/%a.err",
        "--wait",
        "--wrap",
        f"{python} -c {shlex.quote(code)}",
    ]
    subprocess.run(cmd, env=slurm_env(True), capture_output=True, text=True, check=True)
    return [float((folder / f"{i}.out").read_text().split()[-1]) for i in range(width)]


# --------------------------------------------------------------------------- reporting


def med(xs: list[float]) -> float:
    return statistics.median(xs)


def spread(xs: list[float]) -> str:
    return f"{med(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"


def table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    global REMOTE_SITE
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--reps",
        type=int,
        default=5,
        help="runs of each small pattern (fan-out/fan-in, pipeline, sweep)",
    )
    ap.add_argument(
        "--reps-long", type=int, default=3, help="runs of the 4x20 pipelines and the raw floor"
    )
    ap.add_argument("--backends", default="slurm,ssh,slurm-noacct")
    ap.add_argument("--patterns", default=",".join(PATTERNS))
    ap.add_argument("--no-submitit", action="store_true")
    ap.add_argument("--no-overhead", action="store_true")
    ap.add_argument(
        "--seed-4x20-backends",
        default="slurm,ssh",
        help="backends for the 4x20 pipeline in the seed's stage-by-stage style",
    )
    ap.add_argument("--quick", action="store_true", help="1 rep, slurm only")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.reps_long, args.backends = 1, 1, "slurm"
    ENV.update(cluster_env())
    backends = [b for b in args.backends.split(",") if b]
    patterns = [p for p in args.patterns.split(",") if p]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t_start = time.perf_counter()

    print(f"# seed_patterns.py  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"# host {platform.node()}, {os.cpu_count()} cores, {platform.platform()}")
    sv = subprocess.run(
        ["sinfo", "--version"], capture_output=True, text=True, env=slurm_env()
    ).stdout.strip()
    print(
        f"# {sv}; python for jobs: {PY} (ssh: /usr/bin/python3); reps={args.reps} "
        f"(4x20 and floors: {args.reps_long}), medians"
    )
    print(f"# load average at start: {os.getloadavg()}")
    if "ssh" in backends:
        REMOTE_SITE = install_remote_site()

    lz: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    sub: dict[str, list[dict[str, Any]]] = {}
    floor: dict[Any, list[dict[str, Any]]] = {True: [], False: [], SYS_PY: []}

    cases = [
        (b, p, s)
        for p in patterns
        for b in backends
        for s in ("seed", "lazy")
        if not (p == "4x20 pipeline" and s == "seed" and b not in args.seed_4x20_backends)
    ]
    sub_patterns = (
        [*patterns, "4x20 pipeline (aftercorr)"] if "4x20 pipeline" in patterns else patterns
    )
    guard = Guard()
    reps = max(args.reps, args.reps_long)
    for rep in range(reps):
        long_rep = rep < args.reps_long
        for acct in (True, False) if "slurm-noacct" in backends and long_rep else (True,):
            if long_rep:
                floor[acct].append(guard(lambda a=acct: raw_floor(a), f"raw floor acct={acct}"))
        if "ssh" in backends and long_rep:  # the floor for the SSH user's interpreter
            floor[SYS_PY].append(guard(lambda: raw_floor(True, SYS_PY), "raw floor sys python"))
        for b, p, s in cases:
            if (p.startswith("4x20") and not long_rep) or (
                not p.startswith("4x20") and rep >= args.reps
            ):
                continue
            tag = f"{stamp}-r{rep}-{p.replace('/', '-').replace(' ', '-')}-{s}"
            n = len(lz.get((b, p, s), []))
            lz.setdefault((b, p, s), []).append(
                guard(
                    lambda b=b, p=p, s=s, t=f"{tag}-{n}": run_lazyslurm(b, p, s, t),
                    f"lazyslurm {p} {s} {b}",
                )
            )
        if not args.no_submitit:
            for p in sub_patterns:
                if (p.startswith("4x20") and not long_rep) or (
                    not p.startswith("4x20") and rep >= args.reps
                ):
                    continue
                tag = f"{stamp}-r{rep}-{p.replace('/', '-').replace(' ', '-')}"
                sub.setdefault(p, []).append(
                    guard(lambda p=p, t=tag: run_submitit(p, t), f"submitit {p}")
                )
        print(
            f"# rep {rep + 1}/{reps} done at {time.perf_counter() - t_start:.0f} s"
            f" (measurements repeated because of other users' jobs so far: {guard.retries})",
            flush=True,
        )

    # -- tables
    print(
        "\n## lazyslurm (makespan: median (min-max); counts of the median run; "
        "round trips = probe+submit+polls+fetch)"
    )
    rows = []
    for (b, p, s), rs in lz.items():
        ms = [r["makespan"] for r in rs]
        last = sorted(rs, key=lambda r: r["makespan"])[len(rs) // 2]  # the median run
        split = last["rt_split"]
        rows.append(
            [
                p,
                "seed (.wait per stage)" if s == "seed" else "lazy (one compute)",
                b,
                spread(ms),
                last["sbatch"],
                last["submits"],
                last["polls"],
                f"{last['rt']} = {split['probe']}+{split['submit']}+{split['poll']}+{split['fetch']}",
                f"{last['poll_s'] * 1000:.0f}",
            ]
        )
    print(
        table(
            [
                "pattern",
                "style",
                "backend",
                "makespan s",
                "sbatch",
                "submits",
                "polls",
                "round trips",
                "ms/poll",
            ],
            rows,
        )
    )

    if sub:
        print("\n## submitit 1.5.x, idiomatic (map_array, wait for results, next stage)")
        print(
            table(
                ["pattern", "makespan s", "sbatch"],
                [
                    [p, spread([r["makespan"] for r in rs]), rs[0]["sbatch"]]
                    for p, rs in sub.items()
                ],
            )
        )

    print(
        f"\n## raw floor: {DEPTH} x sbatch --array=0-{WIDTH - 1} --wrap '<python> -c pass',"
        " aftercorr, submitted at once"
    )
    names = {True: f"acct, {PY}", False: f"noacct, {PY}", SYS_PY: f"acct, {SYS_PY} (for ssh)"}
    print(
        table(
            ["cluster, python", "makespan s", "sbatch", "submission s"],
            [
                [
                    names[a],
                    spread([r["makespan"] for r in rs]),
                    DEPTH,
                    f"{med([r['submit_s'] for r in rs]):.3f}",
                ]
                for a, rs in floor.items()
                if rs
            ],
        )
    )

    print("\n## ratios (medians)")
    rows = []
    for (b, p, s), rs in lz.items():
        m = med([r["makespan"] for r in rs])
        peer = sub.get(p)
        best = sub.get("4x20 pipeline (aftercorr)") if p == "4x20 pipeline" else None
        fl = floor[SYS_PY] if b == "ssh" else floor[b != "slurm-noacct"] or floor[True]
        row = [p, s, b, f"{m:.2f}"]
        row.append(f"{m / med([r['makespan'] for r in peer]):.2f}" if peer else "-")
        row.append(f"{m / med([r['makespan'] for r in best]):.2f}" if best else "-")
        row.append(f"{m / med([r['makespan'] for r in fl]):.2f}" if p == "4x20 pipeline" else "-")
        rows.append(row)
    print(
        table(
            [
                "pattern",
                "style",
                "backend",
                "lazyslurm s",
                "/ submitit",
                "/ submitit best (aftercorr)",
                "/ raw floor",
            ],
            rows,
        )
    )

    if not args.no_overhead:
        print("\n## task overhead inside the job: process start -> user code, seconds")
        rows = []
        for width in (1, WIDTH):
            wait_quiet()
            lzv = overhead_lazyslurm("slurm", width, f"{stamp}-overhead-{width}")
            wait_quiet()
            raw = overhead_raw(PY, width, f"{stamp}-{width}")
            row = [
                f"{width} task(s) at once",
                f"{med(lzv):.3f} (max {max(lzv):.3f})",
                f"{med(raw):.3f} (max {max(raw):.3f})",
                f"{med(lzv) - med(raw):+.3f}",
            ]
            if "ssh" in backends:
                wait_quiet()
                sv_ = overhead_lazyslurm("ssh", width, f"{stamp}-overhead-ssh-{width}")
                wait_quiet()
                rv = overhead_raw("/usr/bin/python3", width, f"{stamp}-sys-{width}")
                row += [f"{med(sv_):.3f}", f"{med(rv):.3f}"]
            rows.append(row)
        heads = ["", "lazyslurm runner (slurm)", f"bare {os.path.basename(PY)} -c", "runner's own"]
        if "ssh" in backends:
            heads += ["runner (ssh, /usr/bin/python3)", "bare /usr/bin/python3 -c"]
        print(table(heads, rows))

    print(
        f"\n# total {time.perf_counter() - t_start:.0f} s; load average at end: "
        f"{os.getloadavg()}; measurements still disturbed after {guard.attempts} tries: "
        f"{guard.unclean}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
