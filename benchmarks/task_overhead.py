#!/usr/bin/env python
"""Per-task overhead of lazyslurm's runner: against ``python -c pass``, side by side.

    bash tests/cluster/start.sh && . /tmp/lazyslurm-test-cluster/env.sh
    python benchmarks/task_overhead.py [--width 80] [--reps 3] [--pairs 200] [--noacct]

Three measurements, all with the resolved interpreter (not a pyenv shim):

1. On this host, no Slurm: ``--pairs`` alternating starts of ``python -c pass`` and of
   the runner running one element whose function is ``builtins.abs`` by reference
   (median wall time of each, and the median of the pairwise differences), plus
   variants (``-S``, ``-I -S``, ``-m lazyslurm.runner``, and the import line of the
   runner before the diet) so that the choice of start is measured, not guessed.
2. ``-X importtime``: the top lines of the runner as job scripts start it, and of
   ``import lazyslurm.runner, cloudpickle``.
3. On the test Slurm: one ``--width``-element array of trivial work per row, the rows
   side by side in each of ``--reps`` repetitions (medians): ``python -c pass``
   (``sbatch --array --wrap``, timed until squeue shows none), ``python -c 'import
   lazyslurm.runner, cloudpickle'`` (the runner's imports before the diet), and
   lazyslurm ``noop.map(range(width))``, whole ``compute``, once with job scripts
   starting ``python -m lazyslurm.runner`` (as before) and once with the runner started
   by path (now): ``noop`` is the user's code, shipped by value (read without
   cloudpickle); and ``abs.map(range(width))``, a function shipped by reference. Ratios
   to the floor.

Which cluster: the one ``$LAZYSLURM_TEST_SLURM_CONF`` (``--noacct``: ``_NOACCT``) names,
so a second instance (``TaskPlugin=task/none``) is measured by sourcing its env.sh.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cloudpickle
import seed_patterns as sp

from benchmarks import noop_tasks
from lazyslurm import Cluster, compute, task
from lazyslurm.store import (
    FunctionRef,
    RunLayout,
    atomic_write,
    encode_spec,
    encode_value,
)

RUNNER = str(sp.ROOT / "lazyslurm" / "runner" / "__main__.py")
# the venv's interpreter (not a pyenv shim, and not the base interpreter behind the venv's
# symlink, whose site-packages run other .pth hooks): floor and runner alike
PY = sys.executable
OLD_IMPORTS = "import lazyslurm.runner, cloudpickle"
noop = task(time="00:03:00", mem="100M", cpus_per_task=1)(noop_tasks.noop)
by_ref = task(time="00:03:00", mem="100M", cpus_per_task=1)(abs)


# --------------------------------------------------------------------------- on this host


def element_run(folder: Path, by_value: bool = False) -> RunLayout:
    """A run directory holding one element: ``builtins.abs(-3)`` by reference, or
    (``by_value``) ``noop_tasks.noop(-3)`` pickled by value, as a function of the user's
    script or project is shipped (read with the light loader, no cloudpickle import)."""
    paths = RunLayout.of("20260101-000000-000000", folder)
    paths.make_dirs()
    blob = encode_value(("k-0", (-3,), {}))
    func: Any = FunctionRef("builtins", "abs")
    if by_value:
        cloudpickle.register_pickle_by_value(noop_tasks)
        try:
            spec = encode_spec({"func": noop_tasks.noop}, [blob])
        finally:
            cloudpickle.unregister_pickle_by_value(noop_tasks)
    else:
        spec = encode_spec({"func": func}, [blob])
    atomic_write(paths.spec("aj0"), spec)
    return paths


def pairwise(commands: dict[str, list[str]], pairs: int, env: dict[str, str]) -> dict:
    """Wall and CPU (user + system) time of each command, started in turn ``pairs`` times,
    in ms. CPU time is what a busy node pays; wall time on a shared host is noisy."""
    import resource

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    times: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in commands}
    for _ in range(pairs):
        for name, argv in commands.items():
            c0, t0 = cpu(), time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
            times[name][0].append((time.perf_counter() - t0) * 1000)
            times[name][1].append((cpu() - c0) * 1000)
    return times


def local_table(pairs: int) -> str:
    py = PY
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp2:
        paths = element_run(Path(tmp))
        by_value = element_run(Path(tmp2), by_value=True)
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
        run = [paths.root, "aj0"]
        commands = {
            "python -c pass (floor)": [py, "-c", "pass"],
            "python RUNNER RUN AJ (job scripts now)": [py, RUNNER, *run],
            "  same, function by value (light loader)": [py, RUNNER, by_value.root, "aj0"],
            "python -m lazyslurm.runner RUN AJ": [py, "-m", "lazyslurm.runner", *run],
            f"python -c '{OLD_IMPORTS}'": [py, "-c", OLD_IMPORTS],
            "python -S -c pass": [py, "-S", "-c", "pass"],
            "python -S RUNNER RUN AJ": [py, "-S", RUNNER, *run],
            "python -I -S -c pass": [py, "-I", "-S", "-c", "pass"],
        }
        times = pairwise(commands, pairs, env)
    (floor, floor_cpu) = times["python -c pass (floor)"]
    med = statistics.median
    rows = []
    for name, (ts, cs) in times.items():
        diffs = [t - f for t, f in zip(ts, floor, strict=True)]
        cdiffs = [c - f for c, f in zip(cs, floor_cpu, strict=True)]
        rows.append(
            [
                name,
                f"{med(ts):.1f}",
                f"{med(diffs):+.1f}",
                f"{med(ts) / med(floor):.2f}",
                f"{med(cs):.1f}",
                f"{med(cdiffs):+.1f}",
            ]
        )
    return sp.table(
        [
            "start (this host, no Slurm)",
            "wall ms",
            "wall - floor (pairwise)",
            "wall x floor",
            "CPU ms",
            "CPU - floor (pairwise)",
        ],
        rows,
    )


def importtime_top(argv: list[str], env: dict[str, str], n: int = 12) -> str:
    out = subprocess.run([PY, "-X", "importtime", *argv], env=env, capture_output=True, text=True)
    rows = []
    for line in out.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
            continue
        self_us, cum_us, name = int(parts[0].split(":")[1]), int(parts[1]), parts[2]
        rows.append((cum_us, self_us, name))
    total = sum(c for c, _, name in rows if not name.startswith("  "))
    rows.sort(reverse=True)
    lines = [f"    {c:>7} us cumulative {s:>6} us self  {name.strip()}" for c, s, name in rows[:n]]
    return "\n".join(
        [
            f"  $ python -X importtime {shlex.join(argv)}  (all imports: {total / 1000:.1f} ms)",
            *lines,
        ]
    )


def importtime_section() -> str:
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as tmp2:
        paths = element_run(Path(tmp))
        by_value = element_run(Path(tmp2), by_value=True)
        env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
        return "\n".join(
            [
                importtime_top([RUNNER, paths.root, "aj0"], env),
                importtime_top([RUNNER, by_value.root, "aj0"], env),
                importtime_top(["-c", OLD_IMPORTS], env),
                importtime_top(["-c", "pass"], env, n=5),
            ]
        )


# --------------------------------------------------------------------------- on Slurm


def raw_array(width: int, command: str, accounting: bool) -> float:
    r = sp.raw_chain(stages=1, width=width, kind="afterok", command=command, accounting=accounting)
    return r["makespan"]


def lazyslurm_array(
    width: int, accounting: bool, tag: str, by_path: bool, by_reference: bool = False
) -> float:
    """``noop.map(range(width))``: a function of the user's (not installed) code, shipped
    by value as such functions are; or (``by_reference``) ``abs``, a builtin, shipped by
    reference, which shows what the rest of lazyslurm costs."""
    cluster = Cluster(
        "slurm",
        workdir=sp.OUT / "task_overhead" / tag,
        python=PY,
        env={"SLURM_CONF": sp.conf(accounting)},
    )
    if not by_path:
        cluster.backend.runner = None  # job scripts: python -m lazyslurm.runner (as before)
    t0 = time.perf_counter()
    with cluster:
        (values,) = compute((by_ref if by_reference else noop).map(range(width)))
    assert values == ([*range(width)] if by_reference else [None] * width)
    return time.perf_counter() - t0


def slurm_table(width: int, reps: int, accounting: bool) -> str:
    py = PY
    rows: dict[str, list[float]] = {}
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for rep in range(reps):
        cases: list[tuple[str, Any]] = [
            ("python -c pass (raw floor)", lambda: raw_array(width, f"{py} -c pass", accounting)),
            (
                f"python -c '{OLD_IMPORTS}'",
                lambda: raw_array(width, f"{py} -c {shlex.quote(OLD_IMPORTS)}", accounting),
            ),
            (
                f"lazyslurm noop.map(range({width})), -m lazyslurm.runner (before)",
                lambda rep=rep: lazyslurm_array(width, accounting, f"{stamp}-m-{rep}", False),
            ),
            (
                f"lazyslurm noop.map(range({width})), runner by path (after the diet)",
                lambda rep=rep: lazyslurm_array(width, accounting, f"{stamp}-p-{rep}", True),
            ),
            (
                f"lazyslurm abs.map(range({width})), by path, function by reference",
                lambda rep=rep: lazyslurm_array(
                    width, accounting, f"{stamp}-r-{rep}", True, by_reference=True
                ),
            ),
        ]
        for name, fn in cases:
            sp.wait_quiet(max_s=20)  # other users' jobs and tests share the machine
            rows.setdefault(name, []).append(fn())
            print(f"#   {name}: {rows[name][-1]:.2f} s", file=sys.stderr, flush=True)
        print(f"# rep {rep + 1}/{reps} done", flush=True)
    floor = statistics.median(rows["python -c pass (raw floor)"])
    out = [
        [name, sp.spread(ts), f"{statistics.median(ts) / floor:.2f}"] for name, ts in rows.items()
    ]
    return sp.table(
        [f"what each of {width} elements runs", "makespan s (min-max)", "x raw floor"], out
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--width", type=int, default=80)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=200)
    ap.add_argument("--noacct", action="store_true", help="the cluster without accounting")
    ap.add_argument("--no-slurm", action="store_true", help="only the measurements on this host")
    args = ap.parse_args(argv)
    # installed packages have bytecode; this environment sets PYTHONDONTWRITEBYTECODE=1,
    # which jobs inherit: compile once so that no start pays for compiling
    subprocess.run(
        [PY, "-m", "compileall", "-q", str(sp.ROOT / "lazyslurm"), str(sp.ROOT / "benchmarks")],
        check=True,
    )
    dont_write = os.environ.get("PYTHONDONTWRITEBYTECODE")
    print(
        f"# task_overhead.py  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; "
        f"{os.cpu_count()} cores; python {PY}; PYTHONDONTWRITEBYTECODE={dont_write}; "
        f"load average {os.getloadavg()}"
    )
    print(f"\n## one start each, {args.pairs} alternating rounds on this host (medians)")
    print(local_table(args.pairs))
    print("\n## -X importtime (largest cumulative first)")
    print(importtime_section())
    if not args.no_slurm:
        sp.ENV.update(sp.cluster_env())
        conf = sp.conf(not args.noacct)
        task_plugin = next(
            (
                ln.split("=", 1)[1]
                for ln in Path(conf).read_text().splitlines()
                if ln.startswith("TaskPlugin=")
            ),
            "?",
        )
        print(f"\n## on Slurm ({conf}, TaskPlugin={task_plugin}), {args.reps} reps side by side")
        print(slurm_table(args.width, args.reps, not args.noacct))
    print(f"\n# load average at end {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
