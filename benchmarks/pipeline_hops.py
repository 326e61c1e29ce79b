#!/usr/bin/env python
"""Latency per dependency hop: a chain of N lazyslurm tasks against N raw sbatch jobs.

    bash tests/cluster/start.sh && . /tmp/lazyslurm-test-cluster/env.sh
    python benchmarks/pipeline_hops.py [--n 10,20] [--reps 5] [--backends slurm,ssh,slurm-noacct]

lazyslurm: ``x = hop(None); x = hop(x); ...`` N tasks, each consuming the previous one's
result, run with one ``compute`` (N array jobs of one element, chained ``afterok`` by Slurm,
submitted at once). Raw: N ``sbatch --wrap true`` chained with ``afterok``, submitted at
once, timed until squeue (polled every 50 ms) shows none of them: the physical limit. Two
more raw chains write the time each job ran (``date``, and a Python start with the same
interpreter as lazyslurm's jobs) so that hops can also be compared as seen inside the jobs.

Per hop it prints the makespan / N, the slope between the two chain lengths
((T(N2) - T(N1)) / (N2 - N1), which leaves out fixed costs but is noisy: the first job's
start jitters with Slurm's scheduling cycle), and the hop inside the jobs (median time from
one task's user code to the next one's). Each lazyslurm task records when its process
started and when user code ran, which splits lazyslurm's makespan into Slurm's hops, the
runner's start-up, the time to the first task, and the client's detection of the end.
Medians of ``--reps`` runs; helpers are shared with ``seed_patterns.py``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import seed_patterns as sp

from lazyslurm import compute, task


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def hop(trail: list[tuple[float, float]] | None) -> list[tuple[float, float]]:
    """Append (process start, user code) wall-clock times of this task to the trail."""
    import os
    import time

    wall = time.time()
    now = time.clock_gettime(time.CLOCK_BOOTTIME)
    with open("/proc/self/stat") as fh:
        start = int(fh.read().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    return [*(trail or []), (wall - (now - start), wall)]


def lazyslurm_chain(backend: str, n: int, tag: str) -> dict[str, Any]:
    t0_wall = time.time()
    t0 = time.perf_counter()
    cluster = sp.make_cluster(backend, tag)
    b = cluster.backend
    with cluster:
        x = hop(None)
        for _ in range(n - 1):
            x = hop(x)
        (trail,) = compute(x)
    makespan = time.perf_counter() - t0
    t_end = t0_wall + makespan
    assert len(trail) == n
    starts = [s for s, _ in trail]
    codes = [c for _, c in trail]
    return {
        "makespan": makespan,
        "sbatch": b.stats["sbatch"],
        "polls": b.stats["polls"],
        # inside the cluster: user code of task k -> user code of task k+1
        "inner_hop": statistics.median(y - x for x, y in itertools.pairwise(codes)),
        "startup": statistics.median(c - s for s, c in trail),  # process start -> user code
        "to_first": codes[0] - t0_wall,  # compute() called -> first task's user code
        "detect": t_end - codes[-1],  # last task's user code -> result in hand
        "first_start": starts[0] - t0_wall,
    }


def raw_chain(n: int, accounting: bool, command: str = "true") -> dict[str, Any]:
    return sp.raw_chain(stages=n, width=0, kind="afterok", command=command, accounting=accounting)


def raw_stamped(n: int, python: bool, tag: str) -> dict[str, Any]:
    """A raw chain whose jobs append the time they ran to a file (``date``, or a Python
    start): the hop as seen inside the jobs, like lazyslurm's."""
    path = sp.OUT / "raw-hops" / f"{tag}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)  # a repeated measurement starts afresh
    q = shlex.quote(str(path))
    if python:
        code = f"import time; open({str(path)!r}, 'a').write(repr(time.time()) + chr(10))"
        command = f"{sp.PY} -c {shlex.quote(code)}"
    else:
        command = f"date +%s.%N >> {q}"
    r = raw_chain(n, True, command)
    stamps = [float(x) for x in path.read_text().split()]
    assert len(stamps) == n, stamps
    r["inner_hop"] = statistics.median(y - x for x, y in itertools.pairwise(stamps))
    return r


def med(rs: list[dict[str, Any]], k: str) -> float:
    return statistics.median(r[k] for r in rs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", default="10,20", help="chain lengths (two or more for the slope)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--backends", default="slurm,ssh,slurm-noacct")
    args = ap.parse_args(argv)
    ns = [int(x) for x in args.n.split(",")]
    backends = [b for b in args.backends.split(",") if b]
    sp.ENV.update(sp.cluster_env())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    t_start = time.perf_counter()
    print(
        f"# pipeline_hops.py  {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; "
        f"{os.cpu_count()} cores; python for jobs: {sp.PY} (ssh: /usr/bin/python3); "
        f"reps={args.reps} (medians); load average {os.getloadavg()}"
    )
    if "ssh" in backends:
        sp.REMOTE_SITE = sp.install_remote_site()

    guard = sp.Guard()
    # (label, cluster is acct, N) -> runs
    res: dict[tuple[str, bool, int], list[dict[str, Any]]] = {}
    accts = sorted({b != "slurm-noacct" for b in backends}, reverse=True)
    py = os.path.basename(sp.PY)
    raws: list[tuple[str, bool, Any]] = [
        *[("raw: sbatch --wrap true", a, lambda n, t, a=a: raw_chain(n, a)) for a in accts],
        ("raw: sbatch --wrap 'date >> file'", True, lambda n, t: raw_stamped(n, False, t)),
        (f"raw: sbatch --wrap '{py} -c <write time>'", True, lambda n, t: raw_stamped(n, True, t)),
    ]
    for rep in range(args.reps):
        for n in ns:
            for label, acct, fn in raws:
                tag = f"{stamp}-{len(res)}-{n}-r{rep}"
                res.setdefault((label, acct, n), []).append(
                    guard(lambda fn=fn, n=n, tag=tag: fn(n, tag), f"{label} acct={acct} N={n}")
                )
            for b in backends:
                tag = f"{stamp}-hops-{b}-{n}-r{rep}"
                res.setdefault((f"lazyslurm ({b})", b != "slurm-noacct", n), []).append(
                    guard(
                        lambda b=b, n=n, tag=tag: lazyslurm_chain(b, n, tag), f"lazyslurm {b} N={n}"
                    )
                )
        print(
            f"# rep {rep + 1}/{args.reps} done at {time.perf_counter() - t_start:.0f} s "
            f"(measurements repeated because of other users' jobs: {guard.retries})",
            flush=True,
        )

    def fmt(rs: list[dict[str, Any]], k: str, f: str = ".3f") -> str:
        return format(med(rs, k), f) if k in rs[0] else "-"

    print("\n## chain of N jobs/tasks, submitted at once (medians)")
    rows = []
    for (label, acct, n), rs in res.items():
        rows.append(
            [
                label,
                "acct" if acct else "noacct",
                n,
                sp.spread([r["makespan"] for r in rs]),
                f"{med(rs, 'makespan') / n:.3f}",
                fmt(rs, "inner_hop"),
                fmt(rs, "startup"),
                fmt(rs, "to_first", ".2f"),
                fmt(rs, "detect", ".2f"),
                fmt(rs, "polls", ".0f"),
            ]
        )
    rows.sort(key=lambda r: (not str(r[0]).startswith("raw"), r[1], r[0], r[2]))
    print(
        sp.table(
            [
                "chain",
                "cluster",
                "N",
                "makespan s",
                "s/hop (T/N)",
                "hop inside jobs s",
                "runner start->user code s",
                "compute()->1st task s",
                "last task->result s",
                "polls",
            ],
            rows,
        )
    )

    n1, n2 = ns[0], ns[-1]
    print(
        f"\n## per hop: T/N at N={n2}, the slope (T({n2}) - T({n1})) / {n2 - n1} (noisy: the "
        "first job's start jitters by ~0.5 s), and the hop seen inside the jobs; ratios to "
        "the raw chains"
    )
    true_tn = {a: med(res[("raw: sbatch --wrap true", a, n2)], "makespan") / n2 for a in accts}
    date_in = med(res[("raw: sbatch --wrap 'date >> file'", True, n2)], "inner_hop")
    py_in = med(res[(f"raw: sbatch --wrap '{py} -c <write time>'", True, n2)], "inner_hop")
    rows = []
    for (label, acct, n), rs in res.items():
        if n != n2:
            continue
        tn = med(rs, "makespan") / n2
        slope = (tn * n2 - med(res[(label, acct, n1)], "makespan")) / (n2 - n1)
        inner = med(rs, "inner_hop") if "inner_hop" in rs[0] else None
        rows.append(
            [
                label,
                "acct" if acct else "noacct",
                f"{tn:.3f}",
                f"{slope:.3f}",
                "-" if inner is None else f"{inner:.3f}",
                f"{tn / true_tn[acct]:.2f}",
                "-" if inner is None else f"{inner / date_in:.2f}",
                "-" if inner is None else f"{inner / py_in:.2f}",
            ]
        )
    print(
        sp.table(
            [
                "chain",
                "cluster",
                "s/hop T/N",
                "s/hop slope",
                "hop inside s",
                "T/N / raw true",
                "inside / raw date",
                "inside / raw python",
            ],
            rows,
        )
    )
    print(
        f"\n# total {time.perf_counter() - t_start:.0f} s; load average at end: "
        f"{os.getloadavg()}; still disturbed after {guard.attempts} tries: {guard.unclean}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
