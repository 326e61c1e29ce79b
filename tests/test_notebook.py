"""Notebook displays: _repr_html_ of Job, JobArray, Plan, Run, RunStatus (lazyslurm/notebook.py)."""

from __future__ import annotations

import shutil

import pytest

from lazyslurm import Cluster, plan, submit, task

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot not installed")


@task(time=5, mem="1G")
def inc(x: int) -> int:
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@needs_dot
def test_a_job_shows_its_task_key_resources_and_graph() -> None:
    """A Job's HTML: task, key, dependencies, resources, and the SVG of its graph."""
    job = total(inc.map([1, 2, 3]))
    html = job._repr_html_()
    assert "<table" in html and job.key in html and "total" in html
    assert "<svg" in html and "inc [0-2]" in html.replace("&#45;", "-")
    arr = inc.map([1, 2])
    arr_html = arr._repr_html_()
    assert "JobArray" in arr_html and "elements" in arr_html and "<svg" in arr_html
    assert "time 5min · mem 1024M" in inc(1)._repr_html_()


def test_html_is_escaped() -> None:
    """Values are escaped: a task or key cannot inject markup."""
    from lazyslurm.notebook import table_html

    assert "<script>" not in table_html("x", [("name", "<script>alert(1)</script>")])


@needs_dot
def test_plan_run_and_status_show_tables_and_the_coloured_jobs(tmp_path) -> None:
    """Plan: a row per array job; Run: status and its jobs picture coloured by state."""
    graph = total(inc.map([1, 2, 3]))
    with Cluster("sync", workdir=tmp_path):
        p = plan(graph)
        html = p._repr_html_()
        assert "aj0" in html and "aj1" in html and "afterok aj0" in html and "<svg" in html
        run = submit(graph, progress=False)
        run.result()
        run_page = run._repr_html_()
        assert f"run {run.id}" in run_page and "DONE" in run_page and "<svg" in run_page
        assert "#" in run_page  # fill colours of the states
        status_page = run.status()._repr_html_()
        assert "DONE" in status_page and "inc" in status_page and "<svg" not in status_page
