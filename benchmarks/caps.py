#!/usr/bin/env python
"""A run over the per-user submit cap, fed in on the cluster (docs/reliability.md#submit-caps).

    bash tests/cluster/start.sh && . /tmp/lazyslurm-test-cluster/env.sh   # brings up the site
    python benchmarks/caps.py [--n 200] [--chunks 5,10] [--reps 1]

On the test site (``LAZYSLURM_TEST_SITE_CONF``; QOS ``capped``: MaxSubmitJobsPerUser=20,
MaxJobsPerUser=10): ``sum(square.map(range(N)))`` with ``pack=1`` in arrays of
``max_array_size`` elements, under the cap (fed in by feeder jobs), against the same graph
under QOS ``normal`` (no cap: everything submitted at once; the probe is kept from seeing
the cap by a ``sacctmgr`` that fails). Per row: seconds from submit() to the result, the
most Slurm jobs of this user queued at once (``squeue -h -r -u USER``, sampled every 0.5 s),
how many feeder jobs ran, and the run's controller calls. The machine is shared (2 cores):
the numbers are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lazyslurm import Cluster, submit, task  # noqa: E402


@task(time=2)
def square(x: int) -> int:
    return x * x


@task(time=2)
def total(xs: list[int]) -> int:
    return sum(xs)


def _queued(conf: str) -> int | None:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-u", os.environ.get("USER") or "root", "-o", "%i"],
        env={**os.environ, "SLURM_CONF": conf}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    return len(out.stdout.split()) if out.returncode == 0 else None


def one(conf: str, n: int, chunk: int, capped: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="lz-caps-"))
    env = {"SLURM_CONF": conf}
    options: dict[str, Any] = {}
    if not capped:
        fake = work / "bin"
        fake.mkdir()
        (fake / "sacctmgr").write_text("#!/bin/sh\nexit 1\n")
        (fake / "sacctmgr").chmod(0o755)
        env["PATH"] = f"{fake}:{os.environ.get('PATH', '/usr/bin:/bin')}"
        options["qos"] = "normal"
    most, stop = [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            q = _queued(conf)
            most[0] = max(most[0], q or 0)
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with Cluster("slurm", workdir=str(work), env=env, max_array_size=chunk,
                     poll_max_s=1.0, probe_cache_s=0, **options) as c:  # fmt: skip
            t0 = time.monotonic()
            run = submit(total(square.map(range(n))), cluster=c)
            (out,) = run.result()
            took = time.monotonic() - t0
            calls = run.controller_calls or {}
    finally:
        stop.set()
        sampler.join()
    assert out == sum(x * x for x in range(n)), out
    logs = work / "runs" / run.id / "logs"
    feeders = sum(1 for p in logs.iterdir() if p.name.startswith("feed_") and p.suffix == ".out")
    return {"s": took, "most": most[0], "feeders": feeders, "calls": calls}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--chunks", default="5,10")
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    conf = os.environ.get("LAZYSLURM_TEST_SITE_CONF")
    if not conf:
        sys.exit("source the test cluster's env.sh first (LAZYSLURM_TEST_SITE_CONF)")
    print(f"{args.n} elements + their sum, pack=1; cap: MaxSubmitJobsPerUser=20")
    print(f"{'arrays of':>9} {'run':>8} {'seconds':>8} {'most queued':>11} {'feeders':>7}  calls")
    for chunk in (int(c) for c in args.chunks.split(",")):
        for capped in (True, False):
            rows = [one(conf, args.n, chunk, capped) for _ in range(args.reps)]
            secs = statistics.median(r["s"] for r in rows)
            last = rows[-1]
            calls = " ".join(f"{k} {v}" for k, v in sorted(last["calls"].items()))
            print(
                f"{chunk:>9} {'capped' if capped else 'no cap':>8} {secs:>8.1f} "
                f"{max(r['most'] for r in rows):>11} {last['feeders']:>7}  {calls}"
            )


if __name__ == "__main__":
    main()
