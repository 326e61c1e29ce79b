"""Graph -> stages -> array jobs -> dependency kinds. Pure functions, no I/O.

>>> from lazyslurm.graph import task
>>> @task
... def f(x): return x
>>> @task
... def g(xs): return xs
>>> a = f.map(range(4))
>>> b = f.options(mem="1G").map(a)   # element-wise over a, other resources
>>> p = make_plan([g(b)])
>>> [(aj.name, aj.size, list(aj.dependencies)) for aj in p.array_jobs]
[('f', 4, []), ('f', 4, [('aftercorr', 'aj0')]), ('g', 1, [('afterok', 'aj1')])]
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from operator import attrgetter
from typing import Any

import attrs

from lazyslurm.graph.core import ArrayNode, Job, Task, gc_paused
from lazyslurm.graph.resources import Learned, Resources
from lazyslurm.graph.traverse import collect
from lazyslurm.planning.rules import AFTERCORR, AFTEROK, edge_kind
from lazyslurm.store import ElementKeys, compact_slice

__all__ = [
    "AFTERCORR",
    "AFTEROK",
    "AUTO_PACK_TARGET",
    "DEFAULT_MAX_ARRAY_SIZE",
    "ArrayJob",
    "Plan",
    "compact_spans",
    "make_plan",
    "pack_size",
    "stages_of",
]

DEFAULT_MAX_ARRAY_SIZE = 1001  # Slurm's default MaxArraySize: indices 0..1000


def subgraph_prefix(array_job: str, index: int) -> str:
    """The id prefix of the array jobs of a subgraph that element ``index`` of
    ``array_job`` returned (dynamic expansion): ``aj1`` element 0 gives ``aj1_0_``."""
    return f"{array_job}_{index}_"


_key = attrgetter("key")


@attrs.frozen
class ArrayJob:
    """One Slurm array job: elements of one task with one set of resources, in one stage.

    Plain data, and the only form an array job takes: the planner makes it, the backends
    submit and watch it, the manifest stores it (:meth:`to_manifest`) and a re-attached
    run reads it back unchanged (:meth:`from_manifest`). Element ``i`` computes node
    ``keys[i]``.
    """

    id: str
    name: str  # the task's name
    keys: tuple[str, ...]
    resources: Resources = attrs.field(factory=Resources)
    stage: int = 0
    chunk: int = 0
    nchunks: int = 1
    dependencies: tuple[tuple[str, str], ...] = ()  # (kind, upstream array job id)
    after: tuple[str, ...] = ()  # upstream ids whose edges are ordering only (.after)
    pack: int = 1  # elements run by one Slurm element (one process), one after another
    # the task learns a request from past runs (mem/time "auto"): what was learned (an
    # empty Learned: nothing yet, the fallback is asked); ``resources`` holds the numbers
    learned: Learned | None = None

    @property
    def parent(self) -> str | None:
        """The array job whose element returned this one (a dynamic subgraph: ids read
        ``PARENT_INDEX_ID``, see :func:`subgraph_prefix`); None for a run's own.

        >>> ArrayJob("aj1_0_aj0", "t", ()).parent, ArrayJob("aj1", "t", ()).parent
        ('aj1', None)
        """
        parts = self.id.rsplit("_", 2)
        return parts[0] if len(parts) == 3 else None

    @property
    def depth(self) -> int:
        """How deep a dynamic subgraph this array job is in (0: the run's own)."""
        return self.id.count("_") // 2

    @property
    def size(self) -> int:
        """Elements (graph nodes) of the array job."""
        return len(self.keys)

    @property
    def slurm_size(self) -> int:
        """Slurm array elements: ``size`` elements, ``pack`` to a Slurm element.

        Slurm element ``j`` runs elements ``j * pack`` to ``(j + 1) * pack - 1``.
        """
        return -(-len(self.keys) // self.pack)

    def slurm_index(self, index: int) -> int:
        """The Slurm element that runs element ``index`` (its log files are that one's)."""
        return index // self.pack

    def location(self, index: int, run_id: str) -> str:
        """Where element ``index``'s result is kept: ``run_id`` (``results/KEY.pkl``), or
        ``run_id:AJ_J`` when packed (its record in the pack file of Slurm element J)."""
        if self.pack == 1:
            return run_id
        return f"{run_id}:{self.id}_{index // self.pack}"

    def effective(self, defaults: Resources | None = None) -> Resources:
        """What one Slurm element of this array job asks for: the task's resources, the
        cluster's ``defaults`` where it sets none, and the time limit of a packed element
        (the task's limit times the elements that run one after another in it: ``pack``,
        or ``pack / cpus_per_task`` rounded up when they run ``cpus_per_task`` at a time).
        The one place these are worked out (job flags, limit checks, preview, pictures).

        >>> aj = ArrayJob("aj0", "f", ("a", "b", "c"), Resources(timeout_min=2), pack=3)
        >>> aj.effective(Resources(cpus_per_task=2, partition="p")).timeout_min
        4
        """
        r = self.resources.with_defaults(defaults)
        if self.pack > 1 and r.timeout_min is not None:
            r = attrs.evolve(r, timeout_min=r.timeout_min * -(-self.pack // (r.cpus_per_task or 1)))
        return r

    @property
    def throttle(self) -> int | None:
        return self.resources.max_concurrent

    def to_manifest(self) -> dict[str, Any]:
        """JSON-able data that :meth:`from_manifest` turns back into an equal record."""
        return {
            "id": self.id,
            "name": self.name,
            "keys": list(self.keys) if type(self.keys) is not ElementKeys else [],
            **(_compact_entry(self.keys) if type(self.keys) is ElementKeys else {}),
            "resources": self.resources.as_options(),
            "stage": self.stage,
            "chunk": self.chunk,
            "nchunks": self.nchunks,
            "dependencies": [[kind, up] for kind, up in self.dependencies],
            "after": list(self.after),
            **({"pack": self.pack} if self.pack > 1 else {}),
            **({"learned": self.learned.to_json()} if self.learned is not None else {}),
        }

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any]) -> ArrayJob:
        return cls(
            id=entry["id"],
            name=entry["name"],
            keys=_compact_keys(entry["compact"]) if "compact" in entry else tuple(entry["keys"]),
            resources=Resources.from_options(**entry["resources"]),
            stage=int(entry["stage"]),
            chunk=int(entry.get("chunk", 0)),
            nchunks=int(entry.get("nchunks", 1)),
            dependencies=tuple((k, u) for k, u in entry["dependencies"]),
            after=tuple(entry.get("after", ())),
            pack=int(entry.get("pack", 1)),
            learned=Learned.from_json(entry["learned"]) if entry.get("learned") else None,
        )

    def __repr__(self) -> str:
        deps = ", ".join(f"{k}:{u}" for k, u in self.dependencies)
        packed = f" pack={self.pack}" if self.pack > 1 else ""
        return (
            f"ArrayJob({self.id} {self.name}[{self.size}]{packed} stage={self.stage} deps=[{deps}])"
        )


def _compact_entry(keys: ElementKeys) -> dict[str, Any]:
    """A compact map's keys in the manifest: the recipe and the items (JSON)."""
    desc = list(keys.desc)
    if desc[0] == "numpy":
        import base64

        desc[3] = base64.b64encode(desc[3]).decode()
    return {"compact": {"recipe": list(keys.recipe), "items": desc}}


def _compact_keys(entry: Mapping[str, Any]) -> ElementKeys:
    desc = list(entry["items"])
    if desc[0] == "numpy":
        import base64

        desc[3] = base64.b64decode(desc[3])
    elif desc[0] == "range":
        desc = desc[:4]
    return ElementKeys(tuple(entry["recipe"]), tuple(desc))


def stages_of(array_jobs: Iterable[ArrayJob]) -> tuple[tuple[ArrayJob, ...], ...]:
    """Array jobs grouped by stage, in stage order (a live plan and a re-attached run)."""
    by_stage: dict[int, list[ArrayJob]] = {}
    for aj in array_jobs:
        by_stage.setdefault(aj.stage, []).append(aj)
    return tuple(tuple(by_stage[s]) for s in sorted(by_stage))


@attrs.frozen(eq=False)
class Plan:
    """What ``compute`` will submit: array jobs in submission (topological) order.

    ``members`` maps an array job id to the graph's jobs it runs (element order); it is
    the graph side of the plan and is not written to the manifest. ``location`` maps a
    node key to ``(array_job, index)``; ``external`` maps keys that are already computed
    (and referenced by this plan) to the run holding their result.
    """

    array_jobs: tuple[ArrayJob, ...]
    members: Mapping[str, tuple[Job, ...]]
    location: Mapping[str, tuple[ArrayJob, int]]
    external: Mapping[str, str | None]
    max_array_size: int
    cached: frozenset[str] = frozenset()  # keys found in the store, not run again

    @property
    def stages(self) -> tuple[tuple[ArrayJob, ...], ...]:
        return stages_of(self.array_jobs)

    @property
    def nodes(self) -> int:
        return len(self.location)

    def elements(self, array_job: ArrayJob | str) -> tuple[Job, ...]:
        """The graph's jobs that ``array_job`` runs, in element order."""
        return self.members[array_job if isinstance(array_job, str) else array_job.id]

    def task(self, array_job: ArrayJob | str) -> Task[Any]:
        """The task every element of ``array_job`` calls."""
        return self.elements(array_job)[0].task

    def _repr_html_(self) -> str:
        """Notebook display: one row per array job and the jobs picture."""
        from lazyslurm.registry import executor

        return str(executor().plan_html(self))  # pictures live above planning

    def describe(self) -> list[str]:
        """One line per array job, for printing."""
        lines = []
        for aj in self.array_jobs:
            deps = ", ".join(f"{k} {u}" for k, u in aj.dependencies) or "none"
            res = " ".join(f"{k}={v}" for k, v in aj.resources.describe().items())
            chunk = f" chunk {aj.chunk + 1}/{aj.nchunks}" if aj.nchunks > 1 else ""
            packed = ""
            if aj.pack > 1:
                per = aj.effective().timeout_min
                limit = f", time {per}min each" if per else ""
                packed = f" packed {aj.pack} per Slurm element ({aj.slurm_size}{limit})"
            lines.append(
                f"{aj.id}: {aj.name} x{aj.size}{packed}{chunk} (stage {aj.stage}) {res} "
                f"after: {deps}"
            )
        return lines

    def to_networkx(self) -> Any:
        """The plan as a ``networkx.DiGraph``: one node per array job (attributes: name,
        size, stage, chunk, resources, throttle), one edge per dependency (attributes:
        ``kind`` = afterok/aftercorr, ``ordering`` = True for ``.after`` edges)."""
        import networkx as nx

        g = nx.DiGraph()
        for aj in self.array_jobs:
            g.add_node(
                aj.id,
                name=aj.name,
                size=aj.size,
                pack=aj.pack,
                stage=aj.stage,
                chunk=aj.chunk,
                nchunks=aj.nchunks,
                resources=aj.resources.as_options(),
                throttle=aj.throttle,
            )
            for kind, up in aj.dependencies:
                g.add_edge(up, aj.id, kind=kind, ordering=up in aj.after)
        return g


class Chunk(Sequence[Job]):
    """The elements of an array job that runs items ``start:stop`` of a compact map
    (:class:`~lazyslurm.graph.core.ArrayNode`): a sequence of jobs made when read."""

    __slots__ = ("node", "start", "stop")

    def __init__(self, node: ArrayNode, start: int, stop: int) -> None:
        self.node, self.start, self.stop = node, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return tuple(self)[index]
        n = len(self)
        if not -n <= index < n:
            raise IndexError(index)
        return self.node.element(self.start + index % n)

    def __iter__(self) -> Iterator[Job]:
        for i in range(self.start, self.stop):
            yield self.node.element(i)

    def keys(self) -> ElementKeys:
        return ElementKeys(self.node.recipe, compact_slice(self.node.desc, self.start, self.stop))


def compact_spans(plan: Plan) -> dict[str, list[str]]:
    """Each compact map's key -> the ids of its array jobs (its chunks), in order."""
    spans: dict[str, list[str]] = {}
    for aj in plan.array_jobs:
        part = plan.members.get(aj.id)
        if type(part) is Chunk:
            spans.setdefault(part.node.key, []).append(aj.id)
    return spans


class Locations(Mapping[str, tuple["ArrayJob", int]]):
    """``Plan.location`` of a plan with compact maps: the other nodes' locations as a
    dict, the compact maps' elements found by key on first use (their keys derived
    then, O(elements) once)."""

    def __init__(self, known: dict[str, tuple[ArrayJob, int]], compact: list[ArrayJob]) -> None:
        self._known = known
        self._compact = compact
        self._more: dict[str, tuple[ArrayJob, int]] | None = None
        self._size = len(known) + sum(aj.size for aj in compact)

    def _all(self) -> dict[str, tuple[ArrayJob, int]]:
        if self._more is None:
            more: dict[str, tuple[ArrayJob, int]] = {}
            for aj in self._compact:
                more.update(zip(aj.keys, zip(repeat(aj), range(aj.size)), strict=True))
            self._more = more
        return self._more

    def __getitem__(self, key: str) -> tuple[ArrayJob, int]:
        found = self._known.get(key)
        if found is None:
            return self._all()[key]
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._known or key in self._all()

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[str]:
        yield from self._known
        yield from self._all()


def _stages(nodes: Sequence[Job], done: Mapping[str, Any]) -> dict[str, int]:
    """Stage of each node: 0 for sources, else one more than its latest dependency."""
    stage: dict[str, int] = {}
    get = stage.get
    for job in nodes:
        deps, order = job.deps, job.order
        if not deps and not order:  # most nodes of a sweep: skip building a tuple
            stage[job.key] = 0
            continue
        s = 0
        for dep in (deps + order) if order else deps:
            ds = get(dep.key)
            if ds is not None and ds >= s:
                s = ds + 1
        stage[job.key] = s
    return stage


AUTO_PACK_TARGET = 128  # pack="auto": at most this many Slurm elements per array job


def pack_size(pack: int | str | None, n: int, max_array_size: int) -> int:
    """Elements per Slurm element for ``n`` elements: ``pack`` as given, or for
    ``"auto"`` enough that they fit one array job of ``max_array_size`` and at most
    :data:`AUTO_PACK_TARGET` Slurm elements (each Slurm element start costs Slurm tens
    of milliseconds of CPU; 128 still spreads over many nodes).

    >>> pack_size(None, 10, 4), pack_size(3, 10, 4), pack_size("auto", 100, 30)
    (1, 3, 4)
    >>> pack_size("auto", 100_000, 1001), pack_size("auto", 1000, 1001)
    (782, 8)
    """
    if pack is None:
        return 1
    if pack == "auto":
        return max(1, -(-n // max_array_size), -(-n // AUTO_PACK_TARGET))
    return int(pack)


def _fit_job_budget(sizes: list[int], packs: list[int], auto: list[bool], budget: int) -> None:
    """Grow the ``pack="auto"`` groups' packs (in place) until the plan's Slurm elements
    (``sum(ceil(size / pack))``) fit ``budget`` (MaxJobCount, MaxSubmitJobs), if they can.

    >>> packs = [1, 8, 8]; _fit_job_budget([50, 1000, 1000], packs, [False, True, True], 100)
    >>> packs, 50 + sum(-(-1000 // k) for k in packs[1:])
    ([1, 40, 40], 100)
    """
    fixed = sum(-(-n // k) for n, k, a in zip(sizes, packs, auto, strict=True) if not a)
    flexible = [i for i, a in enumerate(auto) if a]
    if not flexible:
        return
    left = budget - fixed
    total = sum(-(-sizes[i] // packs[i]) for i in flexible)
    if total <= left:
        return
    share = max(1, left) / total  # every auto group gives up the same fraction
    for i in flexible:
        want = max(1, int(-(-sizes[i] // packs[i]) * share))
        packs[i] = max(packs[i], -(-sizes[i] // want))
    while sum(-(-sizes[i] // packs[i]) for i in flexible) > max(left, len(flexible)):
        i = max(flexible, key=lambda j: -(-sizes[j] // packs[j]))
        packs[i] += max(1, packs[i] // 8)


@gc_paused()  # planning builds O(nodes) objects, none of them cyclic garbage
def make_plan(
    roots: Iterable[Job],
    *,
    done: Mapping[str, str | None] | None = None,
    max_array_size: int = DEFAULT_MAX_ARRAY_SIZE,
    max_jobs: int | None = None,
    packing: bool = True,
    time_cap: Any = None,
    learned: Mapping[str, Learned] | None = None,
) -> Plan:
    """Plan everything ``roots`` need that is not in ``done`` (key -> location of its
    result: the run holding it, see :meth:`ArrayJob.location`).

    Sibling calls of one task with equal resources in the same stage share an array job
    (a Python loop of calls plans like ``task.map``); arrays over ``max_array_size`` are
    split into chunks. Each edge's kind is :func:`~lazyslurm.planning.rules.edge_kind`.
    Dependencies on ``done`` nodes are dropped (their results are read from the store).

    A task's ``pack`` runs that many elements in one Slurm element (``"auto"``:
    :func:`pack_size`, then grown so that the whole plan's Slurm elements fit
    ``max_jobs``, the cluster's MaxJobCount / MaxSubmitJobs), and at most what keeps
    the packed time limit within ``time_cap(resources)`` (the partition's MaxTime, in
    minutes; the Slurm element's time is ``k / cpus_per_task`` times the task's).
    ``packing=False`` (a backend that runs every element alone) plans ``pack=1``.

    A task whose ``mem`` or ``time`` is ``"auto"`` asks what ``learned`` (task name ->
    :class:`~lazyslurm.graph.resources.Learned`, read from its past runs by the caller)
    says, else its fallback; its array jobs record what was learned (``learned``).
    """
    if max_array_size < 1:
        msg = f"max_array_size must be at least 1, got {max_array_size}"
        raise ValueError(msg)
    done = done or {}
    nodes = collect(roots, done)
    stage = _stages(nodes, done)

    # sibling merging: (stage, function, resources) -> elements, in first-seen order.
    # Each distinct (function, name, resources) is numbered once per Task object, so the
    # (attrs) Resources hash runs once per task, not once per node.
    kinds: dict[tuple[str, str, Resources], int] = {}
    kind_of_task: dict[int, int] = {}  # id(Task) -> kind; the tasks outlive this loop
    groups: dict[tuple[int, int], list[Job]] = {}
    for job in nodes:
        if type(job) is ArrayNode:  # a compact map: a group of its own, never merged
            groups[(stage[job.key], -1 - len(groups))] = [job]
            continue
        t = job.task
        kind = kind_of_task.get(id(t))
        if kind is None:
            kind = kinds.setdefault((t.token, t.name, t.resources), len(kinds))
            kind_of_task[id(t)] = kind
        group = groups.get((stage[job.key], kind))
        if group is None:
            groups[(stage[job.key], kind)] = [job]
        else:
            group.append(job)

    # chunking; stage-major order keeps submission order topological
    pending: list[tuple[int, Task[..., Any], Resources, tuple[Job, ...], int, int]] = []
    packs: list[int] = []
    learnt: list[Learned | None] = []
    ordered = sorted(groups.items(), key=lambda kv: kv[0][0])
    # each group's resources (its first-seen task's), learned requests made numbers
    group_res: list[Resources] = []
    group_learned: list[Learned | None] = []
    for _, jobs in ordered:
        t = jobs[0].task
        got = None
        if t.resources.learns:
            got = (learned or {}).get(t.name) or Learned()
            got = attrs.evolve(got, auto=t.resources.learned_options)
        group_res.append(t.resources.resolve(got))
        group_learned.append(got)
    group_packs = []
    sizes = [len(jobs[0]) if type(jobs[0]) is ArrayNode else len(jobs) for _, jobs in ordered]
    for n, res in zip(sizes, group_res, strict=True):
        one = not packing or res.ranks > 1 or res.pack is None
        group_packs.append(1 if one else pack_size(res.pack, n, max_array_size))
    if max_jobs is not None and packing:
        auto = [res.pack == "auto" and res.ranks == 1 for res in group_res]
        _fit_job_budget(sizes, group_packs, auto, max_jobs)
    if time_cap is not None and packing:
        for g, res in enumerate(group_res):
            cap = time_cap(res) if res.pack == "auto" and res.timeout_min else None
            if cap is not None:  # k / cpus turns of the task's time within MaxTime
                most = max(1, cap // res.timeout_min) * (res.cpus_per_task or 1)
                group_packs[g] = min(group_packs[g], most)
    spans: dict[str, list[int]] = {}  # a compact map's key -> its array jobs (chunks)
    for ((s, _), jobs), k, n, res, got in zip(
        ordered, group_packs, sizes, group_res, group_learned, strict=True
    ):
        per_chunk = max_array_size * k
        nchunks = -(-n // per_chunk)
        node = jobs[0] if type(jobs[0]) is ArrayNode else None
        for c in range(nchunks):
            part: Any
            if node is not None:
                spans.setdefault(node.key, []).append(len(pending))
                part = Chunk(node, c * per_chunk, min(n, (c + 1) * per_chunk))
            else:
                part = tuple(jobs[c * per_chunk : (c + 1) * per_chunk])
            pending.append((s, jobs[0].task, res, part, c, nchunks))
            packs.append(k)
            learnt.append(got)

    ids = [f"aj{i}" for i in range(len(pending))]
    where: dict[str, tuple[int, int]] = {}
    keys_of: list[Any] = []
    for i, (_, _, _, part, _, _) in enumerate(pending):
        if type(part) is Chunk:
            keys_of.append(part.keys())
            continue
        keys = list(map(_key, part))
        keys_of.append(keys)
        where.update(zip(keys, zip(repeat(i), range(len(keys))), strict=True))

    external: dict[str, str | None] = {}
    built: list[ArrayJob] = []
    for i, (s, t, res, part, c, nchunks) in enumerate(pending):
        touch: dict[int, dict[int, set[int]]] = {}  # upstream -> element -> its indices
        data_up: set[int] = set()
        whole: set[int] = set()  # upstream chunks of a compact map: needed whole
        # a compact map's elements all wait on the same jobs: its first speaks for all
        members = part if type(part) is not Chunk else (part.node,)
        for idx, job in enumerate(members):
            deps, order = job.deps, job.order
            if not deps and not order:
                continue
            for is_data, deps_of in ((True, deps), (False, order)):
                for dep in deps_of:
                    loc = where.get(dep.key)
                    if loc is None:
                        span = spans.get(dep.key)
                        if span is not None:
                            whole.update(span)
                            if is_data:
                                data_up.update(span)
                            continue
                        external[dep.key] = done.get(dep.key)
                        continue
                    if type(part) is Chunk:
                        whole.add(loc[0])
                        continue
                    touch.setdefault(loc[0], {}).setdefault(idx, set()).add(loc[1])
                    if is_data:
                        data_up.add(loc[0])
        kinds_up = {
            up: (
                edge_kind(len(pending[up][3]), len(part), touch[up])
                if packs[up] == packs[i]  # packed alike: Slurm element j <- j
                else AFTEROK
            )
            for up in touch
        }
        kinds_up.update(dict.fromkeys(whole, AFTEROK))
        built.append(
            ArrayJob(
                id=ids[i],
                name=t.name,
                keys=keys_of[i] if type(keys_of[i]) is ElementKeys else tuple(keys_of[i]),
                resources=res,
                stage=s,
                chunk=c,
                nchunks=nchunks,
                dependencies=tuple((kinds_up[up], ids[up]) for up in sorted(kinds_up)),
                after=tuple(ids[u] for u in sorted(kinds_up) if u not in data_up),
                pack=packs[i],
                learned=learnt[i],
            )
        )
    location: dict[str, tuple[ArrayJob, int]] = {}
    compact: list[ArrayJob] = []
    for aj, keys in zip(built, keys_of, strict=True):
        if type(keys) is ElementKeys:
            compact.append(aj)
            continue
        location.update(zip(keys, zip(repeat(aj), range(len(keys))), strict=True))
    return Plan(
        array_jobs=tuple(built),
        members={ids[i]: p[3] for i, p in enumerate(pending)},
        location=Locations(location, compact) if compact else location,
        external=external,
        max_array_size=max_array_size,
    )
