#!/usr/bin/env python
"""Client-side graph building: lazyslurm against dask.delayed, side by side in one run.

    python benchmarks/graph_build.py [--n 100000] [--depth 10000] [--quick]

Measures, on this machine and in this process (absolute times drift between runs, so
read the ratios):

1. Sweep: N calls of a decorated ``train`` over config dicts (``train.map(configs)`` and
   a plain loop ``[train(**c) for c in configs]``), then one fan-in ``select`` over all of
   them; dask.delayed doing the same (``delayed(train)(**c)`` in a loop, then
   ``delayed(select)(list_of_delayed)``). dask's fan-in grows quadratically: a dask size
   whose extrapolated time exceeds ``--dask-budget`` is skipped and the estimate printed.
2. Deep pipeline: a chain of D calls, each consuming the previous one.
3. lazyslurm planning (``make_plan``) and encoding (``encode_run``) time per node.
4. Peak client memory for the N sweep built and planned, in a fresh process.

Targets (``shared/notes/targets.md``): per call no slower than dask.delayed in the same
run; the 100,000-element sweep with its fan-in built and planned in under 1 s; client
memory under 500 MB.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import lazyslurm  # noqa: E402
from lazyslurm import task  # noqa: E402
from lazyslurm.planning import make_plan  # noqa: E402
from lazyslurm.planning.encode import encode_run  # noqa: E402

# --------------------------------------------------------------------------- workload
# The seed's sweep functions (bodies never run here: only the graphs are built).


def train(lr: float, batch_size: int, epochs: int, seed: int) -> dict[str, Any]:
    import random

    random.seed(seed)
    return {
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "seed": seed,
        "accuracy": 0.5 + (lr * 10) * random.random(),
    }


def select(results: list[dict[str, Any]]) -> dict[str, Any]:
    return max(results, key=lambda r: r["accuracy"])


def step(x: Any) -> Any:
    return x


ls_train = task(time="00:03:00", mem="256M", cpus_per_task=1)(train)
ls_select = task(time="00:03:00", mem="256M")(select)
ls_step = task(time="00:01:00", mem="256M")(step)


def configs(n: int) -> list[dict[str, Any]]:
    lrs, sizes = (0.001, 0.01, 0.1), (32, 64)
    return [
        {"lr": lrs[i % 3], "batch_size": sizes[(i // 3) % 2], "epochs": 10, "seed": i}
        for i in range(n)
    ]


# --------------------------------------------------------------------------- builders
# Each returns (seconds building the N elements, seconds of the fan-in, keep-alive).


def ls_sweep_map(cfgs: list[dict[str, Any]]) -> tuple[float, float, Any]:
    t0 = time.perf_counter()
    arr = ls_train.map(cfgs)
    t1 = time.perf_counter()
    best = ls_select(arr)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, best


def ls_sweep_loop(cfgs: list[dict[str, Any]]) -> tuple[float, float, Any]:
    t0 = time.perf_counter()
    jobs = [ls_train(**c) for c in cfgs]
    t1 = time.perf_counter()
    best = ls_select(jobs)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, best


def dask_sweep(cfgs: list[dict[str, Any]], fan_in: bool = True) -> tuple[float, float, Any]:
    from dask import delayed

    t0 = time.perf_counter()
    jobs = [delayed(train)(**c) for c in cfgs]
    t1 = time.perf_counter()
    best = delayed(select)(jobs) if fan_in else jobs
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, best


def ls_chain(depth: int) -> tuple[float, Any]:
    t0 = time.perf_counter()
    x = ls_step(0)
    for _ in range(depth - 1):
        x = ls_step(x)
    return time.perf_counter() - t0, x


def dask_chain(depth: int) -> tuple[float, Any]:
    from dask import delayed

    t0 = time.perf_counter()
    x = delayed(step)(0)
    for _ in range(depth - 1):
        x = delayed(step)(x)
    return time.perf_counter() - t0, x


def settle() -> None:
    """Let collections a build deferred run now, inside the timing.

    lazyslurm pauses the cyclic garbage collector during ``task.map`` and ``make_plan``;
    the collections it skipped then run at the next allocations. Keeping 100,000 small
    tracked objects alive trips the gen-0 and gen-1 (and, if due, gen-2) thresholds.
    """
    keep = [[] for _ in range(100_000)]
    del keep


def settled(build: Callable[[], Any]) -> float:
    """Seconds of ``build()`` plus the collections it deferred (``settle``'s own cost,
    measured on a collected heap just before, is subtracted)."""
    gc.collect()
    t0 = time.perf_counter()
    settle()
    own = time.perf_counter() - t0
    gc.collect()
    t0 = time.perf_counter()
    out = build()
    settle()
    elapsed = time.perf_counter() - t0 - own
    del out
    return elapsed


def best_of(fn: Callable[[], tuple], repeats: int) -> tuple:
    """Run ``fn`` ``repeats`` times from a collected heap; keep the fastest (by total)."""
    best: tuple | None = None
    for _ in range(max(1, repeats)):
        gc.collect()
        out = fn()
        times = out[:-1]
        if best is None or sum(times) < sum(best):
            best = times
        del out
    gc.collect()
    assert best is not None
    return best


# --------------------------------------------------------------------------- output


def table(title: str, header: list[str], rows: list[list[str]], left: int = 1) -> str:
    """Aligned plain-text table: the first ``left`` columns and a "note" column are
    left-aligned, the others (numbers) right-aligned."""
    cols = list(zip(header, *rows, strict=True))
    widths = [max(len(c) for c in col) for col in cols]
    right = [i >= left and h != "note" for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        out = []
        for i, cell in enumerate(cells):
            out.append(cell.rjust(widths[i]) if right[i] else cell.ljust(widths[i]))
        return "  ".join(out).rstrip()

    sep = "  ".join("-" * w for w in widths)
    text = [title, line(header), sep, *(line(r) for r in rows)]
    return "\n".join(text)


def us(seconds: float, n: int) -> str:
    return f"{seconds / n * 1e6:.1f}"


def sec(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b <= 0:
        return "-"
    r = a / b
    return f"{r:.1f}x" if r < 100 else f"{r:.0f}x"


def emit(text: str, out: list[str]) -> None:
    print(text, flush=True)
    out.append(text)


# --------------------------------------------------------------------------- memory


def peak_rss() -> int:
    """Peak resident set size of this process, in bytes.

    ``VmHWM`` is per address space, so it starts afresh at exec; ``ru_maxrss`` can carry
    the parent's peak into a child process on Linux, so it is only the fallback.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def memory_child(n: int) -> None:
    """Fresh process: build and plan the N sweep + fan-in; print peaks as JSON."""
    mode = os.environ.get("GRAPH_BUILD_MEMORY_MODE", "rss")
    cfgs = configs(n)
    gc.collect()
    base_rss = peak_rss()
    if mode == "tracemalloc":
        tracemalloc.start()
    t0 = time.perf_counter()
    best = ls_select(ls_train.map(cfgs))
    plan = make_plan([best])
    settle()  # deferred collections (no subtraction: a fresh process pays it once)
    elapsed = time.perf_counter() - t0
    result: dict[str, Any] = {"nodes": plan.nodes, "seconds": elapsed}
    if mode == "tracemalloc":
        result["traced_peak"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    result["base_rss"] = base_rss
    result["peak_rss"] = peak_rss()
    print(json.dumps(result))


def measure_memory(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mode in ("rss", "tracemalloc"):
        env = {**os.environ, "GRAPH_BUILD_MEMORY_MODE": mode}
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--_memory-child", str(n)],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        if mode == "rss":
            out.update(data)
            out["fresh_seconds"] = data["seconds"]
        else:
            out["traced_peak"] = data["traced_peak"]
    return out


# --------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="largest sweep size (100000)")
    ap.add_argument("--depth", type=int, default=None, help="pipeline depth (10000)")
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument(
        "--dask-budget",
        type=float,
        default=None,
        help="skip a dask measurement whose extrapolated time exceeds this "
        "many seconds (default 30; 3 with --quick)",
    )
    ap.add_argument("--_memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._memory_child is not None:
        memory_child(args._memory_child)
        return 0

    import dask

    quick = args.quick
    n_max = args.n
    depth = args.depth or (2_000 if quick else 10_000)
    budget = args.dask_budget if args.dask_budget is not None else (3.0 if quick else 30.0)
    sizes = sorted({s for s in (1_000, 4_000, 16_000) if s < n_max} | {n_max})
    if quick:
        sizes = sorted({s for s in (1_000, 4_000) if s < n_max} | {n_max})

    def reps(n: int) -> int:
        if quick:
            return 1
        return 5 if n <= 4_000 else 3

    out: list[str] = []
    started = time.perf_counter()
    emit(
        f"lazyslurm {getattr(lazyslurm, '__version__', '?')} vs dask {dask.__version__} | "
        f"Python {platform.python_version()} | {platform.machine()} | "
        f"{os.cpu_count()} CPUs | load {os.getloadavg()[0]:.1f} | "
        f"{time.strftime('%Y-%m-%d %H:%M')}",
        out,
    )
    emit("", out)

    # ---------------------------------------------------------------- 1. sweep
    rows: list[list[str]] = []
    summary: dict[str, Any] = {}
    dask_prev: tuple[int, float, float] | None = None  # n, per-call s, fan-in s
    for n in sizes:
        cfgs = configs(n)
        r = reps(n)
        m_el, m_fi = best_of(lambda cfgs=cfgs: ls_sweep_map(cfgs), r)
        l_el, l_fi = best_of(lambda cfgs=cfgs: ls_sweep_loop(cfgs), r)

        # dask: extrapolate from the previous size (linear calls, quadratic fan-in)
        d_el = d_fi = None
        note = ""
        if dask_prev is None:
            est_el, est_fi = 0.0, 0.0
        else:
            pn, p_call, p_fi = dask_prev
            est_el, est_fi = p_call * n, p_fi * (n / pn) ** 2
        if est_el + est_fi <= budget:
            dr = 1 if est_el + est_fi > 2.0 else (1 if quick else 3)
            d_el, d_fi = best_of(lambda cfgs=cfgs: dask_sweep(cfgs), dr)
            dask_prev = (n, d_el / n, d_fi)
        else:
            if est_el <= budget:  # per call is linear: still measure it, without fan-in
                d_el, _ = best_of(lambda cfgs=cfgs: dask_sweep(cfgs, fan_in=False), 1)
            note = f"fan-in skipped (quadratic, est. {est_fi:.0f} s)"
        d_tot = None if d_fi is None or d_el is None else d_el + d_fi
        est_tot = None if d_el is None else d_el + est_fi

        def tot_ratio(
            ours: float, d_tot: float | None = d_tot, est_tot: float | None = est_tot
        ) -> str:
            if d_tot is not None:
                return ratio(d_tot, ours)
            return "-" if est_tot is None else f"~{ratio(est_tot, ours)} (est.)"

        rows.append(
            [
                f"{n:,}",
                "lazyslurm train.map",
                us(m_el, n),
                sec(m_fi),
                sec(m_el + m_fi),
                ratio(d_el, m_el),
                tot_ratio(m_el + m_fi),
                "",
            ]
        )
        rows.append(
            [
                "",
                "lazyslurm loop",
                us(l_el, n),
                sec(l_fi),
                sec(l_el + l_fi),
                ratio(d_el, l_el),
                tot_ratio(l_el + l_fi),
                "",
            ]
        )
        rows.append(
            [
                "",
                "dask.delayed loop",
                "-" if d_el is None else us(d_el, n),
                "-" if d_fi is None else sec(d_fi),
                "-" if d_tot is None else sec(d_tot),
                "1.0x" if d_el is not None else "-",
                "1.0x" if d_tot is not None else "-",
                note,
            ]
        )
        summary[n] = {
            "map": (m_el, m_fi),
            "loop": (l_el, l_fi),
            "dask": (d_el, d_fi),
            "dask_est_total": est_tot,
        }
        del cfgs
        gc.collect()
    emit(
        table(
            "1. Sweep: N calls of train(**config) + one fan-in select(all)  [build only; best of "
            f"{'1' if quick else '3-5'}]",
            [
                "N",
                "variant",
                "us/call",
                "fan-in s",
                "total s",
                "dask/this call",
                "dask/this total",
                "note",
            ],
            rows,
            left=2,
        ),
        out,
    )
    emit("", out)

    # ---------------------------------------------------------------- 2. deep pipeline
    rows = []
    depths = sorted({d for d in (1_000,) if d < depth} | {depth})
    dask_chain_prev: tuple[int, float] | None = None
    chain_summary: dict[int, tuple[float, float | None]] = {}
    for d in depths:
        (l_t,) = best_of(lambda d=d: ls_chain(d), 1 if quick else 3)
        est = None
        if dask_chain_prev is not None:
            est = dask_chain_prev[1] * (d / dask_chain_prev[0]) ** 2
        d_t: float | None = None
        note = ""
        if est is None or est <= budget:
            (d_t,) = best_of(lambda d=d: dask_chain(d), 1 if (quick or (est or 0) > 2) else 3)
            dask_chain_prev = (d, d_t)
        else:
            note = f"skipped (quadratic, est. {est:.0f} s)"
        chain_summary[d] = (l_t, d_t)
        rows.append([f"{d:,}", "lazyslurm", us(l_t, d), sec(l_t), ratio(d_t, l_t), ""])
        rows.append(
            [
                "",
                "dask.delayed",
                "-" if d_t is None else us(d_t, d),
                "-" if d_t is None else sec(d_t),
                "1.0x" if d_t is not None else "-",
                note,
            ]
        )
    emit(
        table(
            "2. Deep pipeline: chain of D calls, each on the previous one  [build only]",
            ["D", "variant", "us/call", "total s", "dask/this", "note"],
            rows,
            left=2,
        ),
        out,
    )
    emit("", out)

    # ---------------------------------------------------------------- 3. planning
    rows = []
    big_cfgs = configs(n_max)
    r = 1 if quick else 3
    plan_summary: dict[str, float] = {}

    def plan_case(label: str, build: Callable[[], Any]) -> None:
        root = build()
        best_plan = best_enc = float("inf")
        for _ in range(r):
            gc.collect()
            t0 = time.perf_counter()
            plan = make_plan([root])
            t1 = time.perf_counter()
            encode_run(plan, run_id="bench", outputs=[root.key])
            t2 = time.perf_counter()
            best_plan, best_enc = min(best_plan, t1 - t0), min(best_enc, t2 - t1)
        nodes, njobs = plan.nodes, len(plan.array_jobs)
        plan_summary[label] = best_plan
        rows.append(
            [
                label,
                f"{nodes:,}",
                f"{njobs:,}",
                sec(best_plan),
                us(best_plan, nodes),
                sec(best_enc),
                us(best_enc, nodes),
            ]
        )

    plan_case(f"sweep {n_max:,} (map) + fan-in", lambda: ls_select(ls_train.map(big_cfgs)))
    plan_case(
        f"sweep {n_max:,} (loop) + fan-in", lambda: ls_select([ls_train(**c) for c in big_cfgs])
    )
    plan_case(f"chain {depth:,}", lambda: ls_chain(depth)[1])
    gc.collect()
    emit(
        table(
            f"3. lazyslurm planning: make_plan and encode_run  [best of {r}]",
            ["graph", "nodes", "array jobs", "make_plan s", "us/node", "encode_run s", "us/node"],
            rows,
        ),
        out,
    )
    emit("", out)

    # end to end: build + fan-in + plan, as one block
    # end to end, including the collections lazyslurm's GC pause deferred (see settle)
    def end_to_end() -> tuple[float, None]:
        return settled(lambda: make_plan([ls_select(ls_train.map(big_cfgs))])), None

    def end_to_end_loop() -> tuple[float, None]:
        return settled(lambda: make_plan([ls_select([ls_train(**c) for c in big_cfgs])])), None

    (e2e,) = best_of(end_to_end, 1 if quick else 3)
    (e2e_loop,) = best_of(end_to_end_loop, 1 if quick else 3)
    big_cfgs = []  # free the configs before the memory measurement
    gc.collect()

    # ---------------------------------------------------------------- 4. memory
    mem = measure_memory(n_max)
    mb = 1024 * 1024
    rows = [
        [
            f"sweep {n_max:,} + fan-in, built + planned (map)",
            sec(e2e),
            sec(mem["fresh_seconds"]),
            f"{mem['peak_rss'] / mb:.0f}",
            f"{(mem['peak_rss'] - mem['base_rss']) / mb:.0f}",
            f"{mem['traced_peak'] / mb:.0f}",
        ],
        [f"sweep {n_max:,} + fan-in, built + planned (loop)", sec(e2e_loop), "-", "-", "-", "-"],
    ]
    emit(
        table(
            "4. End to end and client memory (memory in a fresh process)",
            [
                "case",
                "best s",
                "fresh-process s",
                "peak RSS MB",
                "RSS growth MB",
                "tracemalloc peak MB",
            ],
            rows,
        ),
        out,
    )
    emit("", out)

    # ---------------------------------------------------------------- targets
    big = summary[n_max]
    ref_n = max((n for n in sizes if summary[n]["dask"][0] is not None), default=None)
    worst_call = (
        max(
            max(summary[n]["map"][0], summary[n]["loop"][0]) / summary[n]["dask"][0]
            for n in sizes
            if summary[n]["dask"][0] is not None
        )
        if ref_n is not None
        else float("nan")
    )
    rows = [
        [
            "per call, slowest lazyslurm variant / dask (all N)",
            f"{worst_call:.2f}x",
            "<= 1x",
            "met" if worst_call <= 1 else "MISSED",
        ],
        [
            f"sweep {n_max:,} + fan-in built and planned",
            f"{e2e:.3f} s",
            "< 1 s",
            "met" if e2e < 1 else "MISSED",
        ],
        [
            "  same, plain loop instead of .map",
            f"{e2e_loop:.3f} s",
            "< 1 s",
            "met" if e2e_loop < 1 else "MISSED",
        ],
        [
            f"peak client memory, {n_max:,} sweep built + planned",
            f"{mem['peak_rss'] / mb:.0f} MB",
            "< 500 MB",
            "met" if mem["peak_rss"] < 500 * mb else "MISSED",
        ],
    ]
    emit(table("Targets", ["metric", "measured", "target", "status"], rows), out)
    emit("", out)

    key = [
        f"per call dask/lazyslurm: map {ratio(big['dask'][0], big['map'][0])}, "
        f"loop {ratio(big['dask'][0], big['loop'][0])} (N={n_max:,})",
    ]
    if ref_n is not None and summary[ref_n]["dask"][1] is not None:
        s = summary[ref_n]
        key.append(f"sweep+fan-in total at N={ref_n:,}: {ratio(sum(s['dask']), sum(s['map']))}")
    if big["dask_est_total"] is not None and big["dask"][1] is None:
        key.append(
            f"at N={n_max:,}: dask est. {big['dask_est_total']:.0f} s vs "
            f"{sum(big['map']):.2f} s ({ratio(big['dask_est_total'], sum(big['map']))})"
        )
    dl = chain_summary[depth]
    key.append(f"chain D={depth:,}: {ratio(dl[1], dl[0])}")
    key.append(f"plan {us(plan_summary[f'sweep {n_max:,} (map) + fan-in'], n_max + 1)} us/node")
    key.append(f"{n_max:,} built+planned {e2e:.2f} s")
    key.append(f"peak RSS {mem['peak_rss'] / mb:.0f} MB")
    emit("KEY RATIOS: " + "; ".join(key), out)
    emit(
        f"(benchmark wall time {time.perf_counter() - started:.0f} s; "
        f"load average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)",
        out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
