"""What Slurm's accounting (``sacct``) recorded of a run: one row per attempt of each element.

Where the cluster keeps no accounting (``AccountingStorageType=none``), the answer is a
note saying so (and the runner's own records are what remains: see docs/usage.md).

>>> rows = parse_accounting("101_0|COMPLETED|12|2|81920K|00:03.500|n1|2026-12-06T10:00:00|"
...                         "2026-12-06T10:00:12|4G|30|0:0\\n", {"101": "aj0"})
>>> rows[0].elapsed_s, rows[0].cpus, rows[0].max_rss_mb, rows[0].total_cpu_s, rows[0].node
(12, 2, 80.0, 3.5, 'n1')
>>> rows[0].req_mem_mb, rows[0].time_limit_min, rows[0].attempt
(4096.0, 30, 1)
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from lazyslurm.backends.base import Accounted
from lazyslurm.backends.slurm.status import parse_array_ids

__all__ = ["FIELDS", "parse_accounting", "parse_cpu_s", "parse_rss_mb", "query"]

# the allocation's line and its steps' (MaxRSS is only on the steps; the allocation's
# TotalCPU covers them), for every attempt (-D: a requeued element's earlier ones too)
FIELDS = (
    "JobID,State,ElapsedRaw,AllocCPUS,MaxRSS,TotalCPU,NodeList,Start,End,ReqMem,"
    "TimelimitRaw,ExitCode"
)


def query(job_ids: Sequence[str]) -> str:
    """The sacct command for the elements of ``job_ids`` (array masters), steps and
    earlier attempts included."""
    return f"sacct -n -P -D -j {shlex.quote(','.join(job_ids))} -o {FIELDS} 2>&1"


def parse_rss_mb(text: str) -> float | None:
    """sacct's ``MaxRSS`` (``81920K``, ``1.5G``, ``0``) in megabytes.

    >>> parse_rss_mb("81920K"), parse_rss_mb("2G"), parse_rss_mb("")
    (80.0, 2048.0, None)
    """
    text = text.strip()
    if not text:
        return None
    units = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
    unit = units.get(text[-1].upper())
    try:
        return float(text[:-1]) * unit if unit is not None else float(text) / 1024**2
    except ValueError:
        return None


def parse_cpu_s(text: str) -> float | None:
    """sacct's ``TotalCPU`` (``[D-]HH:MM:SS`` or ``MM:SS.mmm``) in seconds.

    >>> parse_cpu_s("00:03.500"), parse_cpu_s("01:00:00"), parse_cpu_s("1-00:00:01")
    (3.5, 3600.0, 86401.0)
    """
    text = text.strip()
    if not text:
        return None
    days, _, rest = text.rpartition("-")
    try:
        parts = [float(p) for p in rest.split(":")]
    except ValueError:
        return None
    seconds = 0.0
    for p in parts:
        seconds = seconds * 60 + p
    return seconds + (int(days) * 86400 if days else 0)


def parse_accounting(text: str, array_jobs: Mapping[str, str]) -> tuple[Accounted, ...]:
    """Rows of :func:`query`'s output (``array_jobs``: master job id -> array job id):
    one per attempt of each element (sacct lists an element's attempts oldest first,
    each allocation line before its steps), with the largest MaxRSS of its steps and the
    allocation's TotalCPU."""
    nfields = len(FIELDS.split(","))
    attempts: dict[tuple[str, int], list[dict[str, object]]] = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) < 9:
            continue
        parts += [""] * (nfields - len(parts))
        job, state, elapsed, cpus, rss, cpu, node, start, end = parts[:9]
        req_mem, limit, exit_code = parts[9:12]
        step = job.partition(".")[2]
        master, indices = parse_array_ids(job.partition(".")[0])
        if master not in array_jobs or indices is None or len(indices) != 1:
            continue  # not of this run, or a range of elements that never started
        rows = attempts.setdefault((array_jobs[master], indices[0]), [])
        if not step:  # the allocation: a new attempt
            rows.append(
                {
                    "state": state.split()[0] if state else "UNKNOWN",
                    "elapsed": int(elapsed) if elapsed.isdigit() else 0,
                    "cpus": int(cpus) if cpus.isdigit() else 0,
                    "node": node if node != "None assigned" else "",
                    "start": start,
                    "end": end,
                    "cpu": parse_cpu_s(cpu),
                    "rss": parse_rss_mb(rss),
                    "req_mem": parse_rss_mb(req_mem.rstrip("cn")) if req_mem else None,
                    "limit": int(limit) if limit.isdigit() else None,
                    "exit": exit_code,
                }
            )
            continue
        if not rows:
            continue
        row = rows[-1]
        mb = parse_rss_mb(rss)
        if mb is not None and (row["rss"] is None or mb > row["rss"]):  # type: ignore[operator]
            row["rss"] = mb
    out = []
    for (aj, index), rows in sorted(attempts.items()):
        for n, row in enumerate(rows, 1):
            out.append(
                Accounted(
                    array_job=aj,
                    index=index,
                    state=str(row["state"]),
                    elapsed_s=int(row["elapsed"]),  # type: ignore[call-overload]
                    cpus=int(row["cpus"]),  # type: ignore[call-overload]
                    max_rss_mb=row["rss"],  # type: ignore[arg-type]
                    total_cpu_s=row["cpu"],  # type: ignore[arg-type]
                    node=str(row["node"]),
                    start=str(row["start"]),
                    end=str(row["end"]),
                    attempt=n,
                    req_mem_mb=row["req_mem"],  # type: ignore[arg-type]
                    time_limit_min=row["limit"],  # type: ignore[arg-type]
                    exit_code=str(row["exit"]),
                )
            )
    return tuple(out)
