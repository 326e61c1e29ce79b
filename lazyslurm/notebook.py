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

__all__ = ["lazy_html", "plan_html", "run_html", "status_html", "table_html", "usage_html"]

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
    """A ``Run``: its status (one poll) and its jobs coloured by state; once it has
    ended, what it used (:func:`usage_html`)."""
    if run.handle is None:
        return table_html("Run", [("run", "nothing to run: every node was already computed")])
    status = run.status()
    out = status_html(status) + _picture(run=run, level="jobs")
    if status.state not in ("RUNNING", "PENDING"):
        try:
            out += usage_html(run.usage())
        except Exception as exc:  # the display stays: say why the figures are missing
            why = " ".join(str(exc).split()) or type(exc).__name__
            out += f"<p>usage: cannot be read now ({_html.escape(why)})</p>"
    return out


_WARN = "color:#c92a2a"


def usage_html(usage: Any) -> str:
    """What a run used (:class:`lazyslurm.usage.Usage`): one row per task, requested
    against used, core-hours, then the warnings, the learned requests and the elements
    that took more than one attempt."""
    rows = [t.row() for t in usage.tasks]
    title = table_html("Usage", [("run", usage.run_id), ("", usage.summary())])
    parts = [title, _counts_html([h.lower() for h in usage.HEADERS], rows)]
    if usage.note:
        parts.append(f"<p>{_html.escape(usage.note)}</p>")
    if usage.warnings:
        items = "".join(f'<li style="{_WARN}">{_html.escape(w)}</li>' for w in usage.warnings)
        parts.append(f"<p>warnings:</p><ul>{items}</ul>")
    learned = [f"{t.task}: {t.learned_text}" for t in usage.tasks if t.learned_text]
    if learned:
        items = "".join(f"<li>{_html.escape(line)}</li>" for line in learned)
        parts.append(f"<p>learned requests:</p><ul>{items}</ul>")
    retried = usage.retried()
    if retried:
        attempt_rows = [
            (
                f"{e.array_job}[{e.index}]",
                a.number,
                a.state,
                _mb(a.request.mem_mb),
                a.request.time_min or "-",
                _mb(a.peak_mb),
                _secs(a.elapsed_s),
            )
            for e in retried[:50]
            for a in e.attempts
        ]
        head = ("element", "attempt", "state", "mem asked", "time asked (min)", "peak", "elapsed")
        parts.append("<p>attempts:</p>" + _counts_html(head, attempt_rows))
    return f'<div class="lazyslurm-usage">{"".join(parts)}</div>'


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}M"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"
