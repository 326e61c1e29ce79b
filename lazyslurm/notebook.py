"""Rich displays for notebooks: ``_repr_html_`` of ``Job``, ``JobArray``, ``Plan``, ``Run``
and ``RunStatus`` call these. Each is a small table, plus the picture where it helps (the
graph of a lazy value, the jobs of a plan, the jobs of a run coloured by state).

Pictures need graphviz's ``dot``; without it the table alone is shown.

>>> from lazyslurm import task
>>> @task
... def inc(x): return x + 1
>>> html = table_html("Job", [("task", "inc"), ("key", "inc-1")])
>>> "<th" in html and "inc-1" in html
True
"""

from __future__ import annotations

import html as _html
from collections.abc import Sequence
from typing import Any

__all__ = ["lazy_html", "plan_html", "run_html", "status_html", "table_html"]

_STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px;margin:2px 0"
_CELL = "text-align:left;padding:1px 8px;border-bottom:1px solid #ddd"


def table_html(title: str, rows: Sequence[tuple[str, Any]]) -> str:
    """A two-column table (name, value), values escaped."""
    body = "".join(
        f'<tr><th style="{_CELL}">{_html.escape(str(k))}</th>'
        f'<td style="{_CELL}">{_html.escape(str(v))}</td></tr>'
        for k, v in rows
    )
    return (
        f'<table style="{_STYLE}"><caption style="text-align:left;font-weight:bold">'
        f"{_html.escape(title)}</caption>{body}</table>"
    )


def _counts_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f'<th style="{_CELL}">{_html.escape(h)}</th>' for h in header)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{_html.escape(str(c))}</td>' for c in r) + "</tr>"
        for r in rows
    )
    return f'<table style="{_STYLE}"><tr>{head}</tr>{body}</table>'


def _picture(*exprs: Any, **options: Any) -> str:
    """The SVG of ``visualize(...)``, or "" when graphviz's dot is missing."""
    from lazyslurm.draw import visualize
    from lazyslurm.errors import GraphvizNotFoundError

    try:
        svg = visualize(*exprs, **options).pipe(format="svg").decode()
    except (GraphvizNotFoundError, OSError):
        return ""
    except Exception as exc:  # graphviz's ExecutableNotFound and friends
        if type(exc).__name__ in ("ExecutableNotFound", "CalledProcessError"):
            return ""
        raise
    start = svg.find("<svg")
    return f"<div>{svg[start:]}</div>" if start >= 0 else ""


def lazy_html(value: Any) -> str:
    """A ``Job``, ``JobArray`` or ``JobView``: what it is, and its graph."""
    from lazyslurm.graph.core import Job, JobArray

    if isinstance(value, Job):
        rows: list[tuple[str, Any]] = [
            ("task", value.task.name),
            ("key", value.key),
            ("depends on", len(value.deps)),
            ("after", len(value.order)),
        ]
        if value.nout is not None:
            rows.append(("nout", value.nout))
        res = value.task.resources.describe()
        if res:
            rows.append(("resources", " · ".join(f"{k} {v}" for k, v in res.items())))
        title = "Job"
    elif isinstance(value, JobArray):
        names = sorted({j.task.name for j in value.jobs})
        rows = [("task", ", ".join(names) or "-"), ("elements", len(value))]
        title = "JobArray"
    else:
        rows = [("of", getattr(value, "base", value)), ("path", getattr(value, "path", ""))]
        return table_html("JobView", rows)
    return table_html(title, rows) + _picture(value)


def plan_html(plan: Any) -> str:
    """A ``Plan``: one row per array job, and the jobs picture."""
    rows = []
    for aj in plan.array_jobs:
        deps = ", ".join(f"{k} {up}" for k, up in aj.dependencies) or "-"
        res = " · ".join(f"{k} {v}" for k, v in aj.resources.describe().items()) or "-"
        rows.append((aj.id, aj.name, aj.size, aj.stage, deps, res))
    table = _counts_html(("array job", "task", "elements", "stage", "after", "resources"), rows)
    head = table_html("Plan", [("array jobs", len(plan.array_jobs)), ("tasks", plan.nodes)])
    roots = [j for aj in plan.array_jobs for j in plan.elements(aj)]
    picture = _picture(*roots, level="jobs") if roots and plan.nodes <= 5000 else ""
    return head + table + picture


def status_html(status: Any) -> str:
    """A ``RunStatus``: overall state and counts per array job."""
    order = ("DONE", "RUNNING", "PENDING", "FAILED", "CANCELLED")
    rows = [
        (aj, name, sum(c.values()), *(c.get(s, 0) for s in order))
        for aj, (name, c) in status.array_jobs.items()
    ]
    note = getattr(status, "note", "")
    head = table_html(
        f"run {status.run_id}", [("state", status.state), *([("note", note)] if note else [])]
    )
    return head + _counts_html(("array job", "task", "elements", *order), rows)


def run_html(run: Any) -> str:
    """A ``Run``: its status (one poll) and its jobs coloured by state."""
    if run.handle is None:
        return table_html("Run", [("run", "nothing to run: every node was already computed")])
    status = run.status()
    return status_html(status) + _picture(run=run, level="jobs")
