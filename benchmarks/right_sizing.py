#!/usr/bin/env python
"""Right-sizing: a sweep that over-asks 8x, then the same sweep with learned requests.

    . /tmp/lazyslurm-test-cluster/env.sh      # tests/cluster/start.sh's clusters
    python benchmarks/right_sizing.py [--elements 24] [--seconds 35] [--mb 100]

One invocation, on the accounting cluster (which enforces ``--mem`` with cgroups):

1. ``guessed``: ``sweep.map(...)`` where each element touches ``--mb`` MB and runs
   ``--seconds`` s, asking 8x what it needs (``mem`` 8x its measured peak of a trial
   element, ``time`` 8x its run time, rounded up to whole minutes as Slurm takes them);
2. ``learned``: the same sweep (other keys) with ``mem="auto:<guess>"`` and
   ``time="auto:<guess>"``: it asks what run 1's records say (p95 x 1.2, p95 x 1.5).

Reported per row, from the plan and from ``run.usage()`` (sacct's figures): the request,
core-hours and GB-hours of memory **reserved** (elements x request x time limit: what
the scheduler must plan for, and what backfill sees), core-hours **allocated** (elapsed x
CPUs), the measured peak, and whether every element finished (none killed for memory or
time under the learned request).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lazyslurm import Cluster, submit, task

OUT = Path(tempfile.gettempdir()) / "lazyslurm-bench" / "right_sizing"
MB = 1024 * 1024


def sweep(mb: int, seconds: float, i: int) -> int:
    """One element: touch ``mb`` MB (every page), hold it ``seconds``."""
    import time

    block = bytearray(mb * MB)
    block[::4096] = b"x" * len(block[::4096])
    time.sleep(seconds)
    return i


def cluster(tag: str) -> Cluster:
    conf = os.environ.get("LAZYSLURM_TEST_SLURM_CONF") or os.environ.get("SLURM_CONF")
    if not conf:
        sys.exit("source the test cluster's env.sh (or set SLURM_CONF) first")
    return Cluster(
        "slurm", workdir=OUT / tag, env={"SLURM_CONF": conf}, python=sys.executable,
        poll_max_s=1.0,
    )  # fmt: skip


def row(name: str, run: Any, report: Any) -> dict[str, Any]:
    (aj,) = run.array_jobs
    r = aj.resources
    (t,) = report.tasks
    n = aj.size
    return {
        "row": name,
        "mem": f"{r.mem_mb}M",
        "time": f"{r.timeout_min} min",
        "core_h_reserved": n * (r.cpus_per_task or 1) * r.timeout_min / 60,
        "gb_h_reserved": n * r.mem_mb / 1024 * r.timeout_min / 60,
        "core_h_allocated": t.core_hours_allocated,
        "peak": t.peak_mb,
        "longest": t.elapsed_s,
        "finished": t.states.get("COMPLETED", 0),
        "elements": n,
        "learned": t.learned_text or "-",
    }


def settled(run: Any, n: int) -> Any:
    """The run's report once sacct has every element (it lags by seconds)."""
    deadline = time.monotonic() + 90
    while True:
        report = run.usage()
        sacct = sum(1 for e in report.elements if e.last and e.last.source.startswith("sacct"))
        if sacct == n or time.monotonic() > deadline:
            return report
        time.sleep(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--elements", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=35.0)
    ap.add_argument("--mb", type=int, default=100)
    args = ap.parse_args()
    n, secs, mb = args.elements, args.seconds, args.mb
    tag = time.strftime("%Y%m%d-%H%M%S")
    print(f"# right-sizing: {n} elements of {mb} MB for {secs:g} s, guessed 8x, then learned")
    with cluster(tag) as c:
        # a trial element: what one needs (its peak is the interpreter's too)
        trial = submit(task(mem="2G", time=10)(sweep)(mb, 0.5, -1), cluster=c, progress=False)
        trial.result()
        (probe,) = settled(trial, 1).tasks
        need_mb, need_min = probe.peak_mb, secs / 60
        guess_mb = math.ceil(8 * need_mb)
        guess_min = math.ceil(8 * need_min)
        print(f"# trial peak {need_mb:.0f} MB; guessed request: mem={guess_mb}M time={guess_min}")
        guessed = task(mem=f"{guess_mb}M", time=guess_min)(sweep)
        run1 = submit(guessed.map([(mb, secs, i) for i in range(n)]), cluster=c, progress=False)
        run1.result()
        rows = [row("guessed (8x)", run1, settled(run1, n))]
        learned = task(mem=f"auto:{guess_mb}M", time=f"auto:{guess_min}")(sweep)
        items = [(mb, secs, n + i) for i in range(n)]
        run2 = submit(learned.map(items), cluster=c, progress=False)
        run2.result()
        rows.append(row("learned", run2, settled(run2, n)))
    print()
    head = ["row", "mem", "time", "core-h reserved", "GB-h reserved", "core-h allocated",
            "peak", "longest", "finished"]  # fmt: skip
    cells = [head]
    for r in rows:
        cells.append(
            [
                r["row"],
                r["mem"],
                r["time"],
                f"{r['core_h_reserved']:.3f}",
                f"{r['gb_h_reserved']:.3f}",
                f"{r['core_h_allocated']:.3f}",
                f"{r['peak']:.0f}M",
                f"{r['longest']:.0f}s",
                f"{r['finished']}/{r['elements']}",
            ]
        )
    widths = [max(len(x[i]) for x in cells) for i in range(len(head))]
    for line in cells:
        print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                        for i, c in enumerate(line)))  # fmt: skip
    g, lr = rows
    print()
    print(f"core-hours reserved: {g['core_h_reserved'] / lr['core_h_reserved']:.1f}x less "
          f"with learned requests; GB-hours of memory reserved: "
          f"{g['gb_h_reserved'] / lr['gb_h_reserved']:.1f}x less")  # fmt: skip
    print(f"learned: {lr['learned']}")


if __name__ == "__main__":
    main()
