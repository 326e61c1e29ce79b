"""Hypothesis strategies shared by the test modules.

``dags()`` builds random lazy graphs with the public API (calls, Python loops of calls,
``.map`` over concrete items, element-wise ``.map`` over JobArrays and ``nout`` jobs,
fan-ins over JobArrays, lazy views, ``.after()`` ordering edges) and records, next to the
graph, the edges the recipe *meant* to create. Tests compare what the library built and
planned against that independent record.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from hypothesis import strategies as st

from lazyslurm.graph import Job, JobArray, Task, task
from lazyslurm.planning.planner import ArrayJob

__all__ = [
    "RESOURCE_VARIANTS",
    "Dag",
    "array_job_dags",
    "dags",
    "mem_strings",
    "plain_values",
    "time_strings",
]


# --------------------------------------------------------------------------- task bodies
# Distinct module-level functions: distinct code and names, so distinct tasks.


def t0(*args: Any, **kwargs: Any) -> Any:
    return ("t0", args, kwargs)


def t1(*args: Any, **kwargs: Any) -> Any:
    return ("t1", args, kwargs)


def t2(*args: Any, **kwargs: Any) -> Any:
    return ("t2", args, kwargs)


FUNCS = (t0, t1, t2)
RESOURCE_VARIANTS: tuple[dict[str, Any], ...] = (
    {},
    {"mem": "1G"},
    {"time": "00:30:00", "cpus_per_task": 2},
)


# --------------------------------------------------------------------------- plain values

_atoms = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.text(max_size=6),
    st.binary(max_size=4),
)


def plain_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Nested lists, tuples and str-keyed dicts of atoms (no NaN: equal repr = equal value)."""
    return st.recursive(
        _atoms,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3),
            st.lists(inner, max_size=3).map(tuple),
            st.dictionaries(st.text(max_size=3), inner, max_size=3),
        ),
        max_leaves=max_leaves,
    )


# --------------------------------------------------------------------------- option values


@st.composite
def time_strings(draw: st.DrawFn) -> tuple[str, int]:
    """A valid Slurm time string and the number of minutes it stands for (rounded up)."""
    form = draw(st.sampled_from(["MM:SS", "HH:MM:SS", "D-HH:MM:SS"]))
    d = draw(st.integers(0, 30)) if form == "D-HH:MM:SS" else 0
    h = draw(st.integers(0, 23)) if form != "MM:SS" else 0
    m = draw(st.integers(0, 59 if form != "MM:SS" else 500))
    s = draw(st.integers(0, 59))
    total = ((d * 24 + h) * 60 + m) * 60 + s
    if total == 0:
        s = total = 1
    text = {
        "MM:SS": f"{m:02d}:{s:02d}",
        "HH:MM:SS": f"{h:02d}:{m:02d}:{s:02d}",
        "D-HH:MM:SS": f"{d}-{h:02d}:{m:02d}:{s:02d}",
    }[form]
    return text, max(1, math.ceil(total / 60))


@st.composite
def mem_strings(draw: st.DrawFn) -> tuple[str, int]:
    """A valid memory string ("256M", "4G", ...) and its size in whole megabytes."""
    unit = draw(st.sampled_from(["M", "G", "m", "g"]))
    n = draw(st.integers(1, 4096))
    suffix = draw(st.sampled_from(["", "B"]))
    return f"{n}{unit}{suffix}", n * (1024 if unit in "Gg" else 1)


# --------------------------------------------------------------------------- random DAGs


@dataclasses.dataclass(frozen=True)
class Dag:
    """A random graph and the edges its recipe meant to create.

    ``jobs`` maps each node key to its ``Job`` (first built, creation order); ``data`` and
    ``order`` are ``(consumer key, producer key)`` pairs; ``roots`` are every value built.
    """

    jobs: dict[str, Job]
    data: frozenset[tuple[str, str]]
    order: frozenset[tuple[str, str]]
    roots: tuple[Job, ...]
    done: frozenset[str]
    max_array_size: int
    steps: tuple[str, ...]

    def __repr__(self) -> str:
        lines = "\n  ".join(self.steps)
        return f"Dag(max_array_size={self.max_array_size}, done={sorted(self.done)},\n  {lines})"

    def producers(self, key: str) -> set[str]:
        """Keys ``key`` must run after (data and ordering)."""
        return {p for c, p in self.data | self.order if c == key}


ALL_KINDS = ("job", "array", "nout")


class _Builder:
    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw
        self.values: list[tuple[str, Any, str]] = []  # (kind, Job | JobArray, label)
        self.jobs: dict[str, Job] = {}
        self.data: set[tuple[str, str]] = set()
        self.order: set[tuple[str, str]] = set()
        self.steps: list[str] = []
        self.tag = 0

    # -- helpers
    def pick(self, kinds: tuple[str, ...] = ALL_KINDS) -> tuple[str, Any, str] | None:
        choices = [v for v in self.values if v[0] in kinds]
        if not choices:
            return None
        return choices[self.draw(st.integers(0, len(choices) - 1))]

    def record(self, job: Job, data: set[Job], order: set[Job]) -> None:
        self.jobs.setdefault(job.key, job)
        self.data |= {(job.key, p.key) for p in data}
        self.order |= {(job.key, p.key) for p in order}

    def fresh(self) -> int:
        self.tag += 1
        return self.tag

    def argument(self) -> tuple[Any, set[Job], str]:
        """One argument: a constant, or a lazy value possibly nested in a container."""
        v = self.pick()
        if v is None or self.draw(st.integers(0, 3)) == 0:
            c = self.fresh()
            return c, set(), str(c)
        kind, obj, label = v
        if kind == "array":
            form = self.draw(st.sampled_from(["fanin", "element", "list"]))
            if form == "element" and len(obj):
                i = self.draw(st.integers(0, len(obj) - 1))
                return obj[i], {obj[i]}, f"{label}[{i}]"
            if form == "list":
                return list(obj), set(obj.jobs), f"list({label})"
            return obj, set(obj.jobs), label
        form = self.draw(st.sampled_from(["job", "view", "list", "tuple", "dict", "set"]))
        if form == "view":
            return obj[0], {obj}, f"{label}[0]"
        wrap = {
            "job": (lambda j: j, "{}"),
            "list": (lambda j: [j, 1], "[{}, 1]"),
            "tuple": (lambda j: (0, j), "(0, {})"),
            "dict": (lambda j: {"k": j}, "{{'k': {}}}"),
            "set": (lambda j: {j}, "{{{}}}"),
        }[form]
        return wrap[0](obj), {obj}, wrap[1].format(label)

    def arguments(self) -> tuple[list[Any], set[Job], str]:
        args, deps, labels = [], set(), []
        for _ in range(self.draw(st.integers(0, 2))):
            a, d, lab = self.argument()
            args.append(a)
            deps |= d
            labels.append(lab)
        return args, deps, ", ".join(labels)

    def bound_task(self, tasks: list[list[Task[Any]]]) -> tuple[Task[Any], set[Job], str]:
        ti = self.draw(st.integers(0, len(tasks) - 1))
        vi = self.draw(st.integers(0, len(tasks[ti]) - 1))
        t = tasks[ti][vi]
        label = f"t{ti}v{vi}"
        if not self.values or self.draw(st.integers(0, 2)):
            return t, set(), label
        after: list[Any] = []
        order: set[Job] = set()
        labels = []
        for _ in range(self.draw(st.integers(1, 2))):
            kind, obj, lab = self.pick()  # type: ignore[misc]
            if kind == "array":
                after.append(obj)
                order |= set(obj.jobs)
            elif self.draw(st.booleans()):
                after.append(obj)
                order.add(obj)
            else:
                after.append(obj["x"])  # a view orders after its base job
                order.add(obj)
                lab += "['x']"
            labels.append(lab)
        return t.after(*after), order, f"{label}.after({', '.join(labels)})"

    # -- steps
    def step(self, tasks: list[list[Task[Any]]]) -> None:
        kinds = ["call", "loop", "map"]
        if self.pick(("array",)):
            kinds += ["map_array", "map_array"]
        if self.pick(("nout",)):
            kinds.append("map_nout")
        kind = self.draw(st.sampled_from(kinds))
        t, order, tlabel = self.bound_task(tasks)
        name = f"v{len(self.values)}"
        if kind == "call":
            args, deps, alabel = self.arguments()
            if not deps or self.draw(st.booleans()):
                c = self.fresh()
                args.append(c)
                alabel = f"{alabel}, {c}" if alabel else str(c)
            nout = self.draw(st.one_of(st.none(), st.integers(1, 3)))
            job = t(*args, nout=nout)
            self.record(job, deps, order)
            self.values.append(("nout" if nout else "job", job, name))
            self.steps.append(f"{name} = {tlabel}({alabel}, nout={nout})")
        elif kind == "loop":
            n = self.draw(st.integers(1, 4))
            args, deps, alabel = self.arguments()
            base = self.fresh()
            for i in range(n):
                job = t(*args, base + i)
                self.record(job, deps, order)
                self.values.append(("job", job, f"{name}_{i}"))
            self.tag += n
            self.steps.append(f"{name}_i = [{tlabel}({alabel}, {base} + i) for i in range({n})]")
        elif kind == "map":
            n = self.draw(st.integers(0, 4))
            items, per_item, labels = [], [], []
            for _ in range(n):
                form = self.draw(st.sampled_from(["single", "tuple", "dict"]))
                a, d, lab = self.argument()
                c = self.fresh()
                item = {"single": a if d else c, "tuple": (a, c), "dict": {"a": a, "c": c}}[form]
                items.append(item)
                per_item.append(d)
                if form == "single":
                    labels.append(lab if d else str(c))
                else:
                    labels.append(f"{form}({lab}, {c})")
            arr = t.map(items)
            for job, deps in zip(arr, per_item, strict=True):
                self.record(job, deps, order)
            self.values.append(("array", arr, name))
            self.steps.append(f"{name} = {tlabel}.map([{', '.join(labels)}])")
        elif kind == "map_array":
            _, src, slabel = self.pick(("array",))  # type: ignore[misc]
            how = self.draw(st.sampled_from(["all", "all", "reversed", "tail"]))
            view = {"all": src, "reversed": src[::-1], "tail": src[1:]}[how]
            arr = t.map(view)
            for job, up in zip(arr, view, strict=True):
                self.record(job, {up}, order)
            self.values.append(("array", arr, name))
            self.steps.append(f"{name} = {tlabel}.map({slabel} {how})")
        else:  # map over a job with nout: every element needs the whole job
            _, src, slabel = self.pick(("nout",))  # type: ignore[misc]
            arr = t.map(src)
            for job in arr:
                self.record(job, {src}, order)
            self.values.append(("array", arr, name))
            self.steps.append(f"{name} = {tlabel}.map({slabel})")


@st.composite
def task_pools(draw: st.DrawFn) -> list[list[Task[Any]]]:
    """1-3 tasks, each with 1-3 resource variants (sometimes impure)."""
    pool = []
    for func in FUNCS[: draw(st.integers(1, len(FUNCS)))]:
        variants = []
        for opts in RESOURCE_VARIANTS[: draw(st.integers(1, len(RESOURCE_VARIANTS)))]:
            t = task(**opts)(func)
            if draw(st.integers(0, 5)) == 0:
                t = t.options(pure=False)
            variants.append(t)
        pool.append(variants)
    return pool


@st.composite
def dags(draw: st.DrawFn, max_steps: int = 7) -> Dag:
    """A random lazy graph with its intended edges, a ``done`` set and a max array size."""
    tasks = draw(task_pools())
    b = _Builder(draw)
    for _ in range(draw(st.integers(1, max_steps))):
        b.step(tasks)
    roots: list[Job] = []
    for _, obj, _ in b.values:
        roots.extend(obj.jobs if isinstance(obj, JobArray) else [obj])
    keys = sorted(b.jobs)
    done = (
        draw(st.sets(st.sampled_from(keys), max_size=3)) if keys and draw(st.booleans()) else set()
    )
    max_array_size = draw(st.one_of(st.integers(1, 4), st.just(1001)))
    return Dag(
        jobs=b.jobs,
        data=frozenset(b.data),
        order=frozenset(b.order),
        roots=tuple(roots),
        done=frozenset(done),
        max_array_size=max_array_size,
        steps=tuple(b.steps),
    )


# --------------------------------------------------------------------------- array jobs


@st.composite
def array_job_dags(draw: st.DrawFn, max_jobs: int = 6, max_size: int = 4) -> list[ArrayJob]:
    """Array job records in submission (topological) order, as the planner makes them:
    each depends on some earlier ones, ``aftercorr`` only between equal sizes over 1."""
    n = draw(st.integers(1, max_jobs))
    sizes = [draw(st.integers(1, max_size)) for _ in range(n)]
    out: list[ArrayJob] = []
    for j, size in enumerate(sizes):
        ups = draw(st.sets(st.integers(0, j - 1), max_size=3)) if j else set()
        deps = []
        for u in sorted(ups):
            elementwise = sizes[u] == size > 1 and draw(st.booleans())
            deps.append(("aftercorr" if elementwise else "afterok", f"aj{u}"))
        keys = tuple(f"k{j}-{i}" for i in range(size))
        out.append(ArrayJob(f"aj{j}", f"t{j}", keys, dependencies=tuple(deps)))
    return out
