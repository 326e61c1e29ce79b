"""Requests learned from history: what past runs of a task used -> what it asks next.

Pure arithmetic over figures the client read from the store (``lazyslurm.cache``'s
usage lines: one command over the backend's shell): ``mem="auto"`` asks the 95th
percentile of the measured peaks times :data:`~lazyslurm.graph.resources.MEM_MARGIN`
(1.2), rounded up to :data:`MEM_STEP_MB`; ``time="auto"`` the 95th percentile of the
elapsed times times :data:`~lazyslurm.graph.resources.TIME_MARGIN` (1.5), rounded up to
whole minutes. See docs/usage.md for what this can and cannot know.

>>> s = [Sample("r1", "f-1", 200 * 1024, 30.0, "t1"), Sample("r2", "f-2", 210 * 1024, 41.0, "t0")]
>>> learned = learn(s, "t1")
>>> learned.mem_mb, learned.timeout_min, learned.runs, learned.older_code
(256, 2, 2, 1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import attrs

from lazyslurm.graph.resources import MEM_MARGIN, TIME_MARGIN, Learned

__all__ = ["HISTORY_RUNS", "MEM_STEP_MB", "Sample", "learn", "percentile"]

HISTORY_RUNS = 10  # the newest runs of a task that its requests are learned from
MEM_STEP_MB = 64  # learned memory is rounded up to a multiple of this


@attrs.frozen
class Sample:
    """One finished element of a past run: its peak memory (KiB) and elapsed time, and
    the code token of the task that ran it ("" unknown)."""

    run: str
    key: str
    peak_kb: float | None
    elapsed_s: float | None
    token: str = ""


def percentile(values: Sequence[float], q: float = 0.95) -> float:
    """The nearest-rank ``q`` percentile of ``values`` (not empty).

    >>> percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), percentile([5.0])
    (10, 5.0)
    >>> percentile(list(range(1, 101)))
    95
    """
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def learn(samples: Iterable[Sample], token: str = "", runs: int = HISTORY_RUNS) -> Learned:
    """What the samples of one task say it needs, from its newest ``runs`` runs (run ids
    sort by time). ``token``: the task's code now (runs of other code are counted in
    ``older_code``)."""
    by_run: dict[str, list[Sample]] = {}
    for s in samples:
        by_run.setdefault(s.run, []).append(s)
    newest = sorted(by_run, reverse=True)[:runs]
    kept = [s for r in newest for s in by_run[r]]
    peaks = [s.peak_kb / 1024 for s in kept if s.peak_kb is not None]
    times = [s.elapsed_s for s in kept if s.elapsed_s is not None]
    mem = peak = elapsed = minutes = None
    if peaks:
        peak = percentile(peaks)
        mem = max(MEM_STEP_MB, math.ceil(peak * MEM_MARGIN / MEM_STEP_MB) * MEM_STEP_MB)
    if times:
        elapsed = percentile(times)
        minutes = max(1, math.ceil(elapsed * TIME_MARGIN / 60))
    older = sum(1 for r in newest if token and any(s.token and s.token != token for s in by_run[r]))
    return Learned(
        mem_mb=mem,
        timeout_min=minutes,
        runs=len(newest),
        elements=len(kept),
        peak_mb=peak,
        elapsed_s=elapsed,
        older_code=older,
    )
