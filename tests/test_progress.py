"""The live progress display: what its table says."""

from __future__ import annotations

import time

from rich.console import Console

from lazyslurm.backends.base import Snapshot
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.progress import RichProgress


class _Run:
    """What the display reads of a run: its id and array jobs."""

    id = "20260101-000000-abcdef"
    array_jobs = (ArrayJob("aj0", "f", ("k0", "k1")),)


def rendered(snap: Snapshot) -> str:
    console = Console(record=True, width=200)
    console.print(RichProgress()._table(_Run(), snap))
    return " ".join(console.export_text().split())  # the title wraps to the table's width


def test_the_title_says_since_when_the_cluster_is_unreachable():
    """While polls fail, the title says 'cluster unreachable since HH:MM:SS' and why."""
    since = time.time() - 30
    snap = Snapshot(
        states={"aj0": ["RUNNING", "DONE"]},
        unreachable_since=since,
        unreachable_reason="status query (squeue) failed: Unable to contact slurm controller",
    )
    text = rendered(snap)
    assert f"cluster unreachable since {time.strftime('%H:%M:%S', time.localtime(since))}" in text
    assert "Unable to contact slurm controller" in text
    assert "unreachable" not in rendered(Snapshot(states={"aj0": ["RUNNING", "DONE"]}))
