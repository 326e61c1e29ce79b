"""Pictures of a graph and of its plan: ``visualize(*exprs)`` returns a ``graphviz.Digraph``.

Two levels:

``level="tasks"``
    The graph as written: one node per task call, except that the elements of one mapped
    array (one planned array job) are collapsed into a single node such as
    ``process_chunk [0-4]``; a 10,000-element sweep is one node. Lazy views (``job[i]``)
    are not nodes. Ordering-only edges (``task.after``) are dashed.
``level="jobs"``
    What Slurm will get: one node per planned array job with its element count, resources
    and throttle; stages are ranks; edges are labelled with their dependency kind
    (``afterok``, ``aftercorr`` or ``ordering``). Already computed inputs that the plan
    reads from the store are drawn as grey ``cached`` nodes.

Nodes are coloured by state when ``states`` (node key -> PENDING, RUNNING, DONE, FAILED or
CANCELLED) or a ``run`` is given, with a legend; nodes already computed in the cluster
session (or listed in ``cached``) are greyed and labelled ``cached``. A collapsed node
shows its counts (``3 done · 2 running``) and takes the colour of its most pressing state.

Only the graph and the plan are read: nothing is submitted, and no backend is started.
graphviz is imported when drawing, never when lazyslurm is imported.

>>> from lazyslurm import task
>>> @task
... def f(x): return x
>>> @task
... def total(xs): return sum(xs)
>>> dot = visualize(total(f.map(range(5))))
>>> "f [0-4]" in dot.source and "total" in dot.source
True
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lazyslurm.backends.base import CANCELLED, DONE, FAILED, PENDING, RUNNING
from lazyslurm.errors import GraphvizNotFoundError, InvalidOptionError, OptionTypeError
from lazyslurm.graph.core import Job, JobArray, JobView
from lazyslurm.graph.traverse import lift_outputs
from lazyslurm.planning.planner import (
    DEFAULT_MAX_ARRAY_SIZE,
    ArrayJob,
    Plan,
    make_plan,
    stages_of,
)

if TYPE_CHECKING:
    import graphviz

    from lazyslurm.cluster import Cluster

__all__ = ["visualize"]

LEVELS = ("tasks", "jobs")
RANKDIRS = ("TB", "LR", "BT", "RL")
SOURCE_FORMATS = ("dot", "gv")
DEFAULT_FORMAT = "svg"

STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)
# classes of a node beside the backend's states
CACHED = "cached"  # already computed: its result is read from the store
TO_RUN = "to run"  # will run (no state known)
NOT_NEEDED = "not needed"  # not computed, but only cached nodes need it: will not run

# most pressing first: a collapsed node takes the colour of the first class it holds
_PRIORITY = (FAILED, CANCELLED, RUNNING, PENDING, TO_RUN, DONE, CACHED, NOT_NEEDED)
_COUNT_ORDER = (DONE, RUNNING, PENDING, FAILED, CANCELLED, CACHED, TO_RUN, NOT_NEEDED)

_GREY_TEXT = "#868e96"
_STYLE: dict[str, dict[str, str]] = {
    PENDING: {"fillcolor": "#fff3bf"},
    RUNNING: {"fillcolor": "#a5d8ff"},
    DONE: {"fillcolor": "#b2f2bb"},
    FAILED: {"fillcolor": "#ffa8a8", "penwidth": "2"},
    CANCELLED: {"fillcolor": "#ffd8a8"},
    CACHED: {"fillcolor": "#e9ecef", "fontcolor": _GREY_TEXT, "color": "#adb5bd"},
    TO_RUN: {"fillcolor": "white"},
    NOT_NEEDED: {
        "fillcolor": "white",
        "fontcolor": "#adb5bd",
        "color": "#adb5bd",
        "extra_style": "dotted",
    },
}
_FONT = "Helvetica"


def _word(cls: str) -> str:
    return cls.lower()


# --------------------------------------------------------------------------- inputs


def _keys(items: Iterable[Any] | None, what: str) -> set[str]:
    """Node keys from strings, jobs (a view stands for its job) and job arrays."""
    out: set[str] = set()
    if items is None:
        return out
    if isinstance(items, (str, Job, JobView, JobArray)):
        items = [items]
    for item in items:
        if isinstance(item, str):
            out.add(item)
        elif isinstance(item, Job):
            out.add(item.key)
        elif isinstance(item, JobView):
            out.add(item.base.key)
        elif isinstance(item, JobArray):
            out.update(item.keys)
        else:
            msg = f"{what} takes node keys, Job or JobArray objects, got {type(item).__name__}"
            raise OptionTypeError(msg)
    return out


def _normalise_states(states: Mapping[Any, str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if states is None:
        return out
    if not isinstance(states, Mapping):
        msg = f"states must be a mapping of node key -> state, got {type(states).__name__}"
        raise OptionTypeError(msg)
    for node, state in states.items():
        word = state.upper() if isinstance(state, str) else state
        if word not in STATES:
            msg = f"invalid state {state!r} for {node!r}: expected one of {', '.join(STATES)}"
            raise InvalidOptionError(msg)
        for key in _keys([node], "states"):
            out[key] = word
    return out


def _session(cluster: Cluster | None) -> Cluster | None:
    """The cluster whose session memory the picture reflects, without creating one."""
    from lazyslurm.cluster import current_cluster, default_cluster

    if cluster is not None:
        return cluster
    active = current_cluster()
    if active is not None:
        return active
    if default_cluster.cache_info().currsize:  # compute() without a cluster ran already
        return default_cluster()
    return None


def _max_array_size(cluster: Cluster | None) -> int:
    """The cluster's limit if known without starting a backend, else Slurm's default."""
    known = cluster.known_max_array_size() if cluster is not None else None
    return known or DEFAULT_MAX_ARRAY_SIZE


def _is_run(obj: Any) -> bool:
    """A submitted run (duck-typed: pictures never import the executor)."""
    if isinstance(obj, (Job, JobArray, JobView)):  # their attributes are lazy views
        return False
    return all(hasattr(obj, a) for a in ("last_snapshot", "array_jobs", "plan", "handle"))


def _snapshot_states(run: Any) -> dict[str, str]:
    """Node key -> state from a run's last poll (PENDING if never polled)."""
    out: dict[str, str] = {}
    snap = run.last_snapshot
    for aj in run.array_jobs:
        if snap is not None:
            states = snap.states.get(aj.id, ())
        elif run.handle is not None:
            states = [PENDING] * aj.size
        else:
            states = ()
        out.update(zip(aj.keys, states, strict=False))
    return out


# --------------------------------------------------------------------------- model


class _Model:
    """What is drawn, independent of the level: roots, the plan, and each node's class."""

    def __init__(
        self,
        roots: list[Job],
        plan: Plan | None,
        done: Mapping[str, str | None],
        states: Mapping[str, str],
        costs: Mapping[str, str] | None = None,
        usage: Mapping[str, list[str]] | None = None,
    ) -> None:
        self.roots = roots
        self.plan = plan
        self.done = done
        self.states = states
        self.costs = costs or {}  # array job id -> its worst-case line (cost=True)
        # array job id, and task name, -> what it used (usage=True)
        self.usage = usage or {}

    def cls(self, key: str) -> str:
        state = self.states.get(key)
        if state is not None:
            return state
        if key in self.done:
            return CACHED
        if self.plan is None or key in self.plan.location:
            return TO_RUN
        return NOT_NEEDED

    def counts(self, keys: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in keys:
            c = self.cls(key)
            out[c] = out.get(c, 0) + 1
        return out


def _status_line(counts: Mapping[str, int], n: int) -> str:
    """``""`` for a plain node; else the state word (one node) or the counts (array)."""
    if set(counts) <= {TO_RUN}:
        return ""
    if n == 1:
        return _word(next(iter(counts)))
    return " · ".join(f"{counts[c]} {_word(c)}" for c in _COUNT_ORDER if counts.get(c))


def _main_class(counts: Mapping[str, int]) -> str:
    return next((c for c in _PRIORITY if counts.get(c)), TO_RUN)


def _label(lines: Iterable[str]) -> str:
    """A DOT label of plain lines: backslashes kept literal, lines centred."""
    return "\\n".join(line.replace("\\", "\\\\") for line in lines if line)


def _node_attrs(cls: str, shape_style: str) -> dict[str, str]:
    attrs = dict(_STYLE[cls])
    extra = attrs.pop("extra_style", "")
    attrs["style"] = ",".join(s for s in (shape_style, "filled", extra) if s)
    if cls == CACHED:
        attrs["style"] += ",dashed"
    return attrs


def _index_range(n: int, offset: int = 0) -> str:
    return f"[{offset}]" if n == 1 else f"[{offset}-{offset + n - 1}]"


def _cost_lines(array_jobs: Iterable[Any], cluster: Cluster | None) -> dict[str, str]:
    """Array job id -> ``worst N core-h`` (and GPU-h), with the cluster's task defaults if
    its backend already runs; no backend is started, nothing is asked of Slurm."""
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.cost import job_cost

    cl = _session(cluster)
    defaults = cl.task_defaults if cl is not None else Resources()
    out = {}
    for aj in array_jobs:  # planned array jobs, or those of a re-attached run
        c = job_cost(aj.id, aj.name, aj.size, aj.resources, defaults=defaults)
        core = "unbounded" if c.core_hours is None else f"{c.core_hours:.3g}"
        line = f"worst {core} core-h"
        if c.gpus:
            gpu = "unbounded" if c.gpu_hours is None else f"{c.gpu_hours:.3g}"
            line += f" · {gpu} GPU-h"
        out[aj.id] = line
    return out


def _usage_lines(report: Any) -> dict[str, list[str]]:
    """Array job id and task name -> the lines of what it used (a run's
    :class:`~lazyslurm.usage.Usage`): peak against memory asked, longest against the time
    limit, CPU use and idle core-hours, then a mark per warning."""
    from lazyslurm.usage import (
        MEM_UNDER,
        TIME_OVER,
        duration_text,
        hours_text,
        mem_text,
        percent_text,
    )

    out: dict[str, list[str]] = {}
    for t in report.tasks:
        r = t.request
        limit = "-" if r.time_min is None else duration_text(r.time_min * 60)
        lines = [
            f"peak {mem_text(t.peak_mb)} of {mem_text(r.mem_mb)} ({percent_text(t.mem_ratio)})",
            f"longest {duration_text(t.elapsed_s)} of {limit} ({percent_text(t.time_ratio)})",
            f"cpu {percent_text(t.cpu_ratio)} · {hours_text(t.core_hours_wasted)} core-h idle",
        ]
        if t.mem_ratio is not None and t.mem_ratio < MEM_UNDER:
            lines.append(f"! memory under {MEM_UNDER:.0%} of the request")
        if t.time_ratio is not None and t.time_ratio > TIME_OVER:
            lines.append(f"! time over {TIME_OVER:.0%} of the limit")
        for state in ("OUT_OF_MEMORY", "TIMEOUT"):
            if t.states.get(state):
                lines.append(f"! {t.states[state]} {state}")
        for aj in t.array_jobs:
            out[aj] = lines
        out.setdefault(t.task, lines)
    return out


# --------------------------------------------------------------------------- levels


def _group_of(aj: ArrayJob) -> tuple[Any, ...]:
    """Array jobs of one task, resources and stage: the chunks of one array (one node at
    the tasks level; one index range at the jobs level)."""
    return (aj.name, aj.resources, aj.stage)


def _draw_tasks(dot: graphviz.Digraph, model: _Model, array_jobs: Sequence[ArrayJob]) -> set[str]:
    """One node per task call, one per mapped array (the chunks of an array together);
    ordering-only edges dashed. Returns the classes drawn."""
    groups: dict[tuple[Any, ...], list[ArrayJob]] = {}
    for aj in array_jobs:
        groups.setdefault(_group_of(aj), []).append(aj)
    nid = {g: f"t{i}" for i, g in enumerate(groups)}
    drawn: set[str] = set()
    for g, ajs in groups.items():
        keys = [k for aj in ajs for k in aj.keys]
        counts = model.counts(keys)
        drawn.update(counts)
        title = g[0] if len(keys) == 1 else f"{g[0]} {_index_range(len(keys))}"
        tooltip = f"{len(keys)} node(s): " + ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        dot.node(
            nid[g],
            _label([title, _status_line(counts, len(keys)), *model.usage.get(g[0], ())]),
            tooltip=tooltip,
            **_node_attrs(_main_class(counts), "rounded"),
        )
    by_id = {aj.id: aj for aj in array_jobs}
    edges: dict[tuple[str, str], bool] = {}  # (up, down) -> carries data
    for aj in array_jobs:
        down = nid[_group_of(aj)]
        for _, up in aj.dependencies:
            edge = (nid[_group_of(by_id[up])], down)
            edges[edge] = edges.get(edge, False) or up not in aj.after
    for (up, down), data in edges.items():
        if data:
            dot.edge(up, down)
        else:
            dot.edge(up, down, style="dashed", tooltip="ordering only (.after)")
    return drawn


def _aj_label(
    aj: ArrayJob, model: _Model, offset: int, chunks: int
) -> tuple[list[str], dict[str, int]]:
    counts = model.counts(aj.keys)
    title = (
        aj.name if aj.size == 1 and chunks == 1 else f"{aj.name} {_index_range(aj.size, offset)}"
    )
    size = "1 element" if aj.size == 1 else f"{aj.size} elements"
    lines = [title, f"{aj.id} · {size}"]
    if aj.nchunks > 1:
        last = offset + aj.size - 1
        lines.append(f"chunk {aj.chunk + 1}/{aj.nchunks} (elements {offset}-{last})")
    res = aj.resources.describe()
    lines.append(" · ".join(f"{k} {v}" for k, v in res.items()) or "default resources")
    if aj.throttle:
        lines.append(f"throttle {aj.throttle} at a time")
    lines.append(model.costs.get(aj.id, ""))
    status = _status_line(counts, aj.size)
    lines.append(status)
    lines.extend(model.usage.get(aj.id, ()))
    return lines, counts


def _draw_jobs(
    dot: graphviz.Digraph, model: _Model, array_jobs: Sequence[ArrayJob], plan: Plan | None
) -> set[str]:
    """One node per array job, stages as ranks, edges labelled with their dependency kind;
    with the ``plan`` (a live graph), inputs already computed as grey nodes. The same
    drawing serves a plan and a run re-attached from its manifest."""
    drawn: set[str] = set()
    offsets: dict[str, int] = {}  # first index of each chunk within its array
    chunks: dict[tuple[Any, ...], int] = {}
    filled: dict[tuple[Any, ...], int] = {}
    for aj in array_jobs:
        group = _group_of(aj)
        chunks[group] = chunks.get(group, 0) + 1
        offsets[aj.id] = filled.get(group, 0)
        filled[group] = offsets[aj.id] + aj.size
    prev_stage: str | None = None
    for stage in stages_of(array_jobs):
        s = stage[0].stage
        with dot.subgraph(name=f"stage{s}") as sg:
            sg.attr(rank="same")
            sid = f"stage_label{s}"
            sg.node(sid, f"stage {s}", shape="plaintext", fontcolor=_GREY_TEXT, fontsize="11")
            if prev_stage is not None:
                dot.edge(prev_stage, sid, style="invis")
            prev_stage = sid
            for aj in stage:
                lines, counts = _aj_label(aj, model, offsets[aj.id], chunks[_group_of(aj)])
                drawn.update(counts)
                sg.node(
                    aj.id,
                    _label(lines),
                    tooltip=f"{aj.id}: " + ", ".join(aj.keys[:5]) + (" ..." if aj.size > 5 else ""),
                    **_node_attrs(_main_class(counts), ""),
                )
    ids = {aj.id for aj in array_jobs}
    for aj in array_jobs:
        maker = aj.parent
        if maker in ids and not aj.dependencies:  # a subgraph a task returned (dynamic)
            dot.edge(maker, aj.id, label="returned", style="dotted", tooltip="dynamic expansion")
        for kind, up in aj.dependencies:
            if up in aj.after:
                dot.edge(
                    up,
                    aj.id,
                    label="ordering",
                    style="dashed",
                    tooltip=f"ordering only (.after), submitted as {kind}",
                )
            else:
                dot.edge(up, aj.id, label=kind)
    if plan is not None:
        drawn |= _draw_cached_inputs(dot, model, plan)
    return drawn


def _draw_cached_inputs(dot: graphviz.Digraph, model: _Model, plan: Plan) -> set[str]:
    """Inputs already computed: grey nodes the plan reads from the store."""
    drawn: set[str] = set()
    cached: dict[tuple[Any, ...], list[Job]] = {}
    consumers: dict[tuple[Any, ...], dict[str, None]] = {}
    seen: set[str] = set()

    def add(job: Job, consumer: str | None) -> None:
        group = (job.task.token, job.task.name, job.task.resources)
        if job.key not in seen:
            seen.add(job.key)
            cached.setdefault(group, []).append(job)
        if consumer is not None:
            consumers.setdefault(group, {})[consumer] = None

    for aj in plan.array_jobs:
        for job in plan.elements(aj):
            for dep in job.deps + job.order:
                if dep.key not in plan.location:
                    add(dep, aj.id)
    for root in model.roots:
        if root.key not in plan.location:
            add(root, None)
    for i, (group, jobs) in enumerate(cached.items()):
        nid = f"c{i}"
        counts = model.counts(j.key for j in jobs)
        drawn.update(counts)
        name = group[1] if len(jobs) == 1 else f"{group[1]} \N{MULTIPLICATION SIGN}{len(jobs)}"
        dot.node(
            nid,
            _label([name, _status_line(counts, len(jobs))]),
            **_node_attrs(_main_class(counts), "rounded"),
        )
        for consumer in consumers.get(group, ()):
            dot.edge(
                nid, consumer, style="dashed", color="#adb5bd", tooltip="result read from the store"
            )
    return drawn


def _draw_legend(dot: graphviz.Digraph, drawn: set[str], rankdir: str) -> None:
    """A small boxed legend of the colours used; none for a plain picture.

    One row across a top-to-bottom picture (one column across a left-to-right one), so
    that it never makes a rank taller or wider than a node.
    """
    if drawn <= {TO_RUN}:
        return
    entries = list(STATES) if drawn & set(STATES) else []
    entries += [c for c in (CACHED, TO_RUN, NOT_NEEDED) if c in drawn]
    cells = []
    for cls in entries:
        style = _STYLE[cls]
        border = {CACHED: ' style="dashed"', NOT_NEEDED: ' style="dotted"'}.get(cls, "")
        cells.append(
            f'<td bgcolor="{style["fillcolor"]}" color="{style.get("color", "black")}"'
            f'{border} border="1" cellpadding="3">'
            f'<font color="{style.get("fontcolor", "black")}">{_word(cls)}</font></td>'
        )
    if rankdir in ("TB", "BT"):
        rows = "<tr>" + "".join(cells) + "</tr>"
    else:
        rows = "".join(f"<tr>{c}</tr>" for c in cells)
    table = f'<table border="0" cellspacing="3">{rows}</table>'
    with dot.subgraph(name="cluster_legend") as lg:
        lg.attr(
            label="legend", fontsize="10", fontcolor=_GREY_TEXT, color="#ced4da", style="rounded"
        )
        lg.node("legend", f"<{table}>", shape="plaintext", fontsize="10", margin="0")


# --------------------------------------------------------------------------- output


def _target(filename: str | Path, format: str | None) -> tuple[Path, str]:
    import graphviz

    path = Path(filename)
    suffix = path.suffix[1:].lower()
    if format is not None:
        fmt = format.lower()
    elif suffix in graphviz.FORMATS:
        fmt = suffix
    elif not suffix:
        fmt = DEFAULT_FORMAT
        path = path.with_name(path.name + "." + fmt)
    else:
        msg = (
            f"cannot tell the picture format from {path.name!r}: use a suffix such as "
            f".svg, .png, .pdf or .dot, or pass format="
        )
        raise InvalidOptionError(msg)
    if fmt not in graphviz.FORMATS:
        msg = f"unknown picture format {fmt!r}: use svg, png, pdf or dot (or another of dot's)"
        raise InvalidOptionError(msg)
    return path, fmt


def _render(dot: graphviz.Digraph, path: Path, fmt: str) -> None:
    import graphviz

    if fmt in SOURCE_FORMATS:
        path.write_text(dot.source, encoding="utf-8")
        return
    try:
        data = dot.pipe(format=fmt)
    except graphviz.ExecutableNotFound as exc:
        raise GraphvizNotFoundError(f"cannot render {path} as {fmt}") from exc
    path.write_bytes(data)


# --------------------------------------------------------------------------- entry point


def visualize(
    *exprs: Any,
    filename: str | Path | None = None,
    format: str | None = None,
    rankdir: str = "TB",
    level: str = "tasks",
    cluster: Cluster | None = None,
    states: Mapping[Any, str] | None = None,
    cached: Iterable[Any] | None = None,
    run: Any = None,
    cost: bool = False,
    usage: Any = False,
) -> graphviz.Digraph:
    """Draw what ``compute(*exprs)`` would run, as a ``graphviz.Digraph``.

    ``level="tasks"`` draws the graph (a mapped array is one node, ``name [0-N]``);
    ``level="jobs"`` draws the planned Slurm array jobs with their resources, stages as
    ranks and dependency kinds on the edges.

    ``filename`` also renders to that file, in the format of its suffix (svg, png, pdf;
    dot writes the DOT text) or ``format``; without a suffix, ``.svg`` is added. Rendering
    needs graphviz's ``dot`` program (:class:`~lazyslurm.errors.GraphvizNotFoundError`
    if missing); building the graph and its ``.source`` does not.

    ``cluster`` (default: the active one) supplies what this session already computed
    (drawn greyed, ``cached``) and, if its backend is running, the array size limit; no
    backend is started. ``cached`` adds node keys (or jobs) to treat as computed.
    ``states`` maps node keys (or jobs) to PENDING, RUNNING, DONE, FAILED or CANCELLED;
    ``run`` (a :class:`~lazyslurm.execute.Run`, also accepted among ``exprs``) draws that
    run's plan coloured by its last poll (a run re-attached with ``Run.attach`` has no plan
    in this process: its array jobs are drawn instead).

    ``cost=True`` (with ``level="jobs"``) adds each array job's worst case from its time
    limit (``worst 12.5 core-h``, see :mod:`lazyslurm.preview`); nothing is asked of Slurm.

    ``usage=True`` (with a ``run``) adds what each task or array job used: its peak
    against the memory asked, its longest element against the time limit, CPU use and
    idle core-hours, and a ``!`` line per warning (``run.usage()``: docs/usage.md); a
    :class:`~lazyslurm.usage.Usage` already read may be passed instead of True.
    """
    if level not in LEVELS:
        msg = f"invalid level={level!r}: expected one of {', '.join(LEVELS)}"
        raise InvalidOptionError(msg)
    if cost and level != "jobs":
        msg = f"cost=True annotates array jobs: use it with level='jobs', not {level!r}"
        raise InvalidOptionError(msg)
    if rankdir not in RANKDIRS:
        msg = f"invalid rankdir={rankdir!r}: expected one of {', '.join(RANKDIRS)}"
        raise InvalidOptionError(msg)
    plain: list[Any] = []
    for expr in exprs:
        if _is_run(expr):
            if run is not None and run is not expr:
                msg = "visualize takes one run at a time"
                raise InvalidOptionError(msg)
            run = expr
        else:
            plain.append(expr)
    if usage is not False and usage is not None and run is None:
        msg = "usage=True shows what a run used: pass the run (visualize(run=run, usage=True))"
        raise InvalidOptionError(msg)
    target = _target(filename, format) if filename is not None else None
    extra_cached = _keys(cached, "cached")
    explicit = _normalise_states(states)

    _, roots = lift_outputs(plain)
    plan: Plan | None
    expanded = (
        run is not None
        and run.plan is not None
        and (
            len(run.array_jobs) != len(run.plan.array_jobs)  # tasks returned subgraphs
        )
    )
    if run is not None and (run.plan is None or expanded):  # its records only
        plan, done, node_states = None, {}, _snapshot_states(run)
        array_jobs = full = tuple(run.array_jobs)
    elif run is not None:
        plan = run.plan
        if not roots:
            roots = [job for aj in plan.array_jobs for job in plan.elements(aj)]
        # done = whatever the run did not compute itself: read from the store
        session = getattr(getattr(run, "cluster", None), "computed", {})
        done: dict[str, str | None] = {k: v for k, v in session.items() if k not in plan.location}
        done.update(plan.external)
        done.update((key, None) for key in extra_cached if key not in done)
        node_states = _snapshot_states(run)
    else:
        cl = _session(cluster)
        done = dict(cl.session.computed()) if cl is not None else {}
        done.update((key, None) for key in extra_cached if key not in done)
        plan = make_plan(roots, done=done, max_array_size=_max_array_size(cl))
        node_states = {}
    if plan is not None:
        array_jobs = plan.array_jobs
        # the whole graph, planned as if nothing were done and without chunking: its
        # array jobs are the tasks level's nodes (the same grouping compute uses)
        full = make_plan(roots, done={}, max_array_size=sys.maxsize).array_jobs
    node_states.update(explicit)

    import graphviz

    dot = graphviz.Digraph(name="lazyslurm")
    dot.attr(rankdir=rankdir, fontname=_FONT, nodesep="0.3", ranksep="0.45")
    dot.attr("node", shape="box", fontname=_FONT, fontsize="12", margin="0.15,0.06")
    dot.attr("edge", fontname=_FONT, fontsize="10", color="#495057", arrowsize="0.7")
    costs = _cost_lines(array_jobs, cluster or getattr(run, "cluster", None)) if cost else None
    used = None
    if usage is not False and usage is not None:
        used = _usage_lines(run.usage() if usage is True else usage)
    model = _Model(roots, plan, done, node_states, costs, used)
    if level == "tasks":
        drawn = _draw_tasks(dot, model, full)
    else:
        drawn = _draw_jobs(dot, model, array_jobs, plan)
    _draw_legend(dot, drawn, rankdir)
    if target is not None:
        _render(dot, *target)
    return dot
