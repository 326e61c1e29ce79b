#!/usr/bin/env python
"""Each session-overhead lever of issue 27, turned off one at a time, side by side.

    . /tmp/lz-limits/env.sh     # the test cluster to measure on (its env.sh)
    python benchmarks/levers.py [--reps 5] [--width 80]

The case is the issue's: ``compute(noop.map(range(80)))`` (``noop`` shipped by value, as
a user's script's functions are) in a fresh ``Cluster("slurm")`` each time, against the
raw floor (``sbatch --array=0-79 --wrap "python -c pass" -o /dev/null``, squeue polled
every 50 ms). Each repetition runs, in turn: the floor, everything on, then each lever
off alone. A lever's share is the median of (its row - everything on), pairwise per
repetition. The levers:

- ``probe cache``: the Slurm part of the probe kept across processes (off:
  ``probe_cache_s=0``);
- ``bytecode cache``: lazyslurm's compiled modules kept where Python writes none (off: the
  cache directory made unusable, so every element compiles ``store.py`` and the runner);
- ``plain function``: the function by value as plain data (off: cloudpickled, read with
  ``_pickle``);
- ``unheld last``: a one-array run submitted without ``--hold`` (off: held and released);
- ``inotify``: the wait between polls woken by the rename of a result (off: the store's
  modification times looked at every 20 ms).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import seed_patterns as sp

import lazyslurm.backends.slurm.backend as slurm_backend
import lazyslurm.backends.slurm.render as render
import lazyslurm.planning.encode as encode
from benchmarks import noop_tasks
from lazyslurm import Cluster, compute, task

PY = sp.PY
noop = task(time="00:03:00", mem="100M", cpus_per_task=1)(noop_tasks.noop)
LEVERS = ("probe cache", "bytecode cache", "plain function", "unheld last", "inotify")


def one(width: int, tag: str, off: str = "") -> float:
    saved = (encode.function_data, render.submit_script, slurm_backend.watch_dirs)
    env = {"SLURM_CONF": sp.conf(True)}
    opts: dict = {}
    if off == "probe cache":
        opts["probe_cache_s"] = 0
    elif off == "bytecode cache":
        bad = Path(tempfile.mkdtemp(prefix="lz-nocache-"))
        bad.chmod(0o777)  # not private: never used, so every process compiles
        env["XDG_CACHE_HOME"] = str(bad)  # the jobs' (the client's probe cache stays)
    elif off == "plain function":
        encode.function_data = lambda func, importable: None
    elif off == "unheld last":

        def held(jobs, **kw):  # a dependency-free extra array would keep every one held
            text = saved[1](jobs, **kw)
            return (
                text.replace("--parsable ", "--parsable --hold ", 1).replace(
                    'echo "LAZYSLURM-IDS', 'scontrol release "${ids[@]}"\necho "LAZYSLURM-IDS', 1
                )
                if len(jobs) == 1
                else text
            )

        render.submit_script = held
    elif off == "inotify":
        slurm_backend.watch_dirs = lambda paths: None
    try:
        cluster = Cluster("slurm", workdir=sp.OUT / "levers" / tag, python=PY, env=env, **opts)
        t0 = time.perf_counter()
        with cluster:
            (values,) = compute(noop.map(range(width)))
        took = time.perf_counter() - t0
    finally:
        encode.function_data, render.submit_script, slurm_backend.watch_dirs = saved
    assert values == [None] * width
    return took


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--width", type=int, default=80)
    args = ap.parse_args(argv)
    sp.ENV.update(sp.cluster_env())
    os.environ["SLURM_CONF"] = sp.conf(True)
    print(
        f"# levers.py {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; cluster "
        f"{sp.conf(True)}; width {args.width}; reps {args.reps}; load "
        f"{os.getloadavg()[0]:.1f}"
    )
    rows: dict[str, list[float]] = {"raw floor": [], "everything on": []}
    rows.update({f"{lever} off": [] for lever in LEVERS})
    stamp = time.strftime("%H%M%S")
    for rep in range(args.reps):
        sp.wait_quiet(max_s=30)
        rows["raw floor"].append(
            sp.raw_chain(stages=1, width=args.width, kind="afterok", command=f"{PY} -c pass")[
                "makespan"
            ]
        )
        sp.wait_quiet(max_s=30)
        rows["everything on"].append(one(args.width, f"{stamp}-{rep}-on"))
        for lever in LEVERS:
            sp.wait_quiet(max_s=30)
            rows[f"{lever} off"].append(one(args.width, f"{stamp}-{rep}-{lever}", lever))
        print(
            f"# rep {rep + 1}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()),
            flush=True,
        )
    floor = statistics.median(rows["raw floor"])
    on = rows["everything on"]
    out = []
    for name, ts in rows.items():
        share = (
            ""
            if name in ("raw floor", "everything on")
            else (f"{statistics.median(t - o for t, o in zip(ts, on, strict=True)):+.2f}")
        )
        out.append([name, sp.spread(ts), f"{statistics.median(ts) / floor:.2f}", share])
    print(sp.table(["row", "makespan s (min-max)", "x raw floor", "lever's share s (paired)"], out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
