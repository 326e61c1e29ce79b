"""The run directory: its layout, placeholders, record formats, and atomic reads and writes.

Runner side: every compute node imports this module, so at import time it loads only
``os``, ``stat`` and ``sys`` (loaded by every interpreter start). On the paths that need
them it imports ``marshal`` (built in), ``binascii`` (a C module), ``_pickle`` (a value
that is not plain data), cloudpickle (a payload pickled by value) and
:mod:`lazyslurm.errors` (to raise). No ``typing``, ``pathlib``, ``re``, ``struct``,
``tempfile``, ``json``: each costs start-up time on every task. The job scripts start
the runner by path (``lazyslurm/runner/__main__.py``), which loads this file by path too,
without the package ``__init__``. ``tests/test_layers.py`` holds it to that.

Layout of one run (``WORKDIR/runs/RUN_ID``, mode 0700), known only to :class:`RunLayout`::

    manifest.json          the plan as data: one record per array job (written by the client)
    summary.json           id, created, label, task count (for listing runs)
    outputs.pkl            what compute() returns, with placeholders (for re-attach)
    jobids                 Slurm job id of each array job (written at submission)
    submit.sh, submit.err  the all-or-nothing submission script and its stderr (Slurm)
    code-uses              the entries of WORKDIR/code the run's jobs use (Slurm)
    environment            what a job does before its task starts (creating the
                           environment, once): read by every poll (Slurm)
    client.pid             host and pid of the owner of a local run, until it ends
    cancel.request         another process asks that owner to cancel (local runs)
    specs/AJ.spec          one per array job: function + per-element arguments (indexed)
    jobs/AJ.sh             one batch script per array job (Slurm)
    results/KEY.pkl        one per finished node, written atomically
    results/AJ_J.pack      a packed Slurm element J: the results of its elements, one file
    errors/KEY.pkl         one per failed node: exception, type name, traceback text
                           (each outcome record's header also says what the element
                           used: a usage line, see encode_usage)
    logs/AJ_INDEX.out|err  stdout/stderr of one element (of Slurm element INDEX when packed)
    shared/                a directory every element and rank may write to (JobContext)
    ranks/KEY/             a multi-rank element's per-rank outcomes, until gathered
    dynamic/AJ.INDEX.json  a subgraph a task returned (dynamic expansion): its array jobs,
                           Slurm ids, and the dependencies it added (docs/dynamic.md)
    dynamic/AJ.INDEX.reserved  the tasks and core-hours an expansion holds of the run's
                           limits until its record is written (docs/dynamic.md)

Results are addressed by node key and a *location*: the run holding the result, as
``RUN`` (``results/KEY.pkl``) or ``RUN:AJ_J`` (the record of KEY inside
``results/AJ_J.pack``); see :meth:`RunLayout.result`. A reference to a node finished in
an earlier run names its location (``external`` in the spec header).
"""

from __future__ import annotations

import os
import stat
import sys

TYPE_CHECKING = False  # typing is not imported on compute nodes
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence
    from pathlib import Path
    from typing import Any

__all__ = [
    "INSIDE",
    "OUTCOME_MAGIC",
    "PACK_MAGIC",
    "SPEC_CLOUDPICKLE",
    "SPEC_MAGIC",
    "USAGE_MARK",
    "ElementKeys",
    "ElementSpec",
    "ErrorRecord",
    "FunctionRef",
    "MapItem",
    "Rebuild",
    "Redirect",
    "Ref",
    "RefArray",
    "RefList",
    "Restore",
    "RunLayout",
    "atomic_write",
    "check_private_dir",
    "compact_element",
    "compact_items",
    "compact_size",
    "compact_slice",
    "decode_outcome",
    "decode_result",
    "decode_value",
    "dumps",
    "encode_outcome",
    "encode_pack",
    "encode_spec",
    "encode_usage",
    "encode_value",
    "function_data",
    "loads",
    "log_section",
    "outcome_usage",
    "pack_index",
    "pack_keys",
    "pack_payloads",
    "parse_job_ids",
    "parse_usage",
    "plain_function",
    "read_element",
    "read_header",
    "read_pickle",
    "read_private",
    "record_calls",
    "run_of",
    "spec_size",
    "template_keys",
    "untrusted_fix",
    "untrusted_why",
    "write_spec",
]


class Ref:
    """Placeholder for the result of node ``key``, with an access ``path`` applied.

    ``path`` is a tuple of ``("item", k)`` / ``("attr", name)`` steps (lazy views).
    """

    __slots__ = ("key", "path")

    def __init__(self, key: str, path: tuple[tuple[str, Any], ...] = ()) -> None:
        self.key = key
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ref, (self.key, self.path))

    def __repr__(self) -> str:
        return f"Ref({self.key!r}{', ' + repr(self.path) if self.path else ''})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ref) and (self.key, self.path) == (other.key, other.path)

    def __hash__(self) -> int:
        try:
            return hash((self.key, self.path))
        except TypeError:  # a slice (before Python 3.12) or call arguments in the path
            return hash((self.key, repr(self.path)))


class RefList:
    """Placeholder for the list of results of nodes ``keys`` (a JobArray as argument)."""

    __slots__ = ("keys",)

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys

    def __reduce__(self) -> tuple[Any, ...]:
        return (RefList, (self.keys,))

    def __repr__(self) -> str:
        return f"RefList(<{len(self.keys)} keys>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RefList) and self.keys == other.keys

    def __hash__(self) -> int:
        return hash(self.keys)


class RefArray:
    """Placeholder for the list of results of a compact ``task.map`` (graph.core's
    ``ArrayNode``, node ``key``): one reference for all its elements, however many.
    Where it is, the spec's element says (``where[key] = "span:AJ,AJ,..."``)."""

    __slots__ = ("key",)

    def __init__(self, key: str) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        return (RefArray, (self.key,))

    def __repr__(self) -> str:
        return f"RefArray({self.key!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RefArray) and self.key == other.key

    def __hash__(self) -> int:
        return hash(("RefArray", self.key))


class Rebuild:
    """A namedtuple holding lazy values: ``cls._make(items)`` once they are resolved."""

    __slots__ = ("cls", "items")

    def __init__(self, cls: type, items: list[Any]) -> None:
        self.cls = cls
        self.items = items

    def __reduce__(self) -> tuple[Any, ...]:
        return (Rebuild, (self.cls, self.items))

    def __repr__(self) -> str:
        return f"Rebuild({self.cls.__qualname__}, {self.items!r})"


class Restore:
    """An object (a dataclass) holding lazy values: a shallow copy of ``base`` (which holds
    None there) with ``fields`` set once resolved. No ``__init__`` runs, so custom
    ``__init__`` methods, ``init=False`` fields and frozen classes are kept as they are."""

    __slots__ = ("base", "fields")

    def __init__(self, base: Any, fields: dict[str, Any]) -> None:
        self.base = base
        self.fields = fields

    def __reduce__(self) -> tuple[Any, ...]:
        return (Restore, (self.base, self.fields))

    def __repr__(self) -> str:
        return f"Restore({type(self.base).__qualname__}, {sorted(self.fields)})"


class MapItem:
    """A map item whose value is only known at run time: unpacked when resolved.

    A dict becomes keyword arguments, a tuple positional arguments, anything else the
    single positional argument (the same rule ``task.map`` applies to concrete items).
    """

    __slots__ = ("ref",)

    def __init__(self, ref: Ref) -> None:
        self.ref = ref

    def __reduce__(self) -> tuple[Any, ...]:
        return (MapItem, (self.ref,))

    def __repr__(self) -> str:
        return f"MapItem({self.ref!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MapItem) and self.ref == other.ref

    def __hash__(self) -> int:
        return hash(("MapItem", self.ref))


class Redirect:
    """The result of a task that returned a lazy value (dynamic expansion): its value is
    ``template`` (:class:`Ref`/:class:`RefList` placeholders) resolved against the results
    of the subgraph, which live in run ``runs[key]`` (see docs/dynamic.md)."""

    __slots__ = ("runs", "template")

    def __init__(self, template: Any, runs: dict[str, str]) -> None:
        self.template = template
        self.runs = runs

    def __reduce__(self) -> tuple[Any, ...]:
        return (Redirect, (self.template, self.runs))

    def __repr__(self) -> str:
        return f"Redirect({self.template!r}, {len(self.runs)} keys)"


class FunctionRef:
    """A task's function by import path, for workers that can import the user's code
    (shared file system): tracebacks then show real file names and source lines."""

    __slots__ = ("module", "qualname")

    def __init__(self, module: str, qualname: str) -> None:
        self.module = module
        self.qualname = qualname

    def __reduce__(self) -> tuple[Any, ...]:
        return (FunctionRef, (self.module, self.qualname))

    def load(self) -> Any:
        __import__(self.module)  # no importlib: one module fewer on every task
        obj: Any = sys.modules[self.module]
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return getattr(obj, "unwrapped", obj)  # a Task stands at that name


def template_keys(templates: Iterable[Any]) -> list[str]:
    """Node keys the templates (values with placeholders) refer to, each once: what
    ``compute`` reads, what a dynamic subgraph must produce.

    >>> sorted(template_keys([Ref("a"), {"k": RefList(("b", "a"))}]))
    ['a', 'b']
    """
    keys: list[str] = []
    stack = list(templates)
    while stack:
        obj = stack.pop()
        t = type(obj)
        if t is Ref:
            keys.append(obj.key)
            stack.extend(step for kind, step in obj.path if kind != "attr")  # lazy bounds
        elif t is RefList:
            keys.extend(obj.keys)
        elif t is RefArray:
            keys.append(obj.key)
        elif t in (list, tuple, set, frozenset):
            stack.extend(obj)
        elif t is dict:
            stack.extend(obj.values())
        elif t is slice:
            stack.extend((obj.start, obj.stop, obj.step))
        elif t is Rebuild:
            stack.extend(obj.items)
        elif t is Restore:
            stack.extend(obj.fields.values())
    return list(dict.fromkeys(keys))


class RunLayout:
    """Every path of one run directory: the one place that knows the layout.

    Pure string arithmetic (no I/O but :meth:`make_dirs`), so it serves local paths,
    paths on a cluster over SSH, and paths relative to the work directory alike.

    >>> lay = RunLayout.of("r1", "/w")
    >>> lay.result("f-0a1b"), lay.log("aj0", 3, "err"), lay.result("g-1", run="r0")
    ('/w/runs/r1/results/f-0a1b.pkl', '/w/runs/r1/logs/aj0_3.err', '/w/runs/r0/results/g-1.pkl')
    >>> RunLayout.of("r1").manifest, RunLayout.of("r1", "/w/50%").log_pattern("aj0", "out")
    ('runs/r1/manifest.json', '/w/50%%/runs/r1/logs/aj0_%a.out')
    >>> RunLayout.key_of(".f-1.pkl.tmp"), RunLayout.key_of("f-1.pkl"), INSIDE.spec("aj0")
    (None, 'f-1', 'specs/aj0.spec')
    >>> lay.result("f-1", run="r0:aj2_3"), lay.result("f-1", run=":aj2_3")
    ('/w/runs/r0/results/aj2_3.pack', '/w/runs/r1/results/aj2_3.pack')
    """

    __slots__ = ("root",)

    RUNS = "runs"  # under the work directory: one directory per run
    SUBDIRS = ("specs", "jobs", "results", "errors", "logs", "dynamic")
    OUTCOME_DIRS = ("results", "errors")
    SUFFIX = ".pkl"  # of result and error files, named by node key
    # shell (grep/find) patterns over outcome files, for the one-command listings
    PACK_SUFFIX = ".pack"  # of the one results file of a packed Slurm element
    CANCELLED_SUFFIX = ".cancelled"  # in errors/: an element whose input failed
    PARTIAL_SUFFIX = ".partial"  # results/AJ_J.partial: a pack's records, as they come
    OUTCOME_GREP = "[.]p\\(kl\\|ack\\)$"  # GNU grep: a result, error or pack file
    RESULTS_FIND = "./*/results/*.p*"  # from WORKDIR/runs: every result of every run
    # a line of that find, as a regex pattern (compiled by the client: the runner never
    # needs re): groups are the run id and the node key
    RESULT_PATH = r"^\./([^/]+)/results/([^/]+)\.pkl$"
    PACK_PATH = r"^\./([^/]+)/results/([^/]+_[0-9]+)\.pack$"  # groups: run id, pack name
    # the records a packed Slurm element has written so far (kept if it is killed)
    PARTIAL_PATH = r"^\./([^/]+)/results/([^/]+_[0-9]+\.partial)$"  # run id, file name
    RUN_ID_GLOB = "[0-9]" * 8 + "-" + "[0-9]" * 6 + "-" + "[0-9a-f]" * 6  # find -name

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.fspath(root)

    @classmethod
    def of(cls, run_id: str, workdir: str | os.PathLike[str] = "") -> RunLayout:
        """The run ``run_id`` under ``workdir`` (relative to the work directory if empty)."""
        base = os.fspath(workdir)
        return cls(f"{base}/{cls.RUNS}/{run_id}" if base else f"{cls.RUNS}/{run_id}")

    @staticmethod
    def new_run_id() -> str:
        """A new run id: ``YYYYmmdd-HHMMSS-xxxxxx`` (time, then 24 random bits)."""
        import secrets
        import time

        return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)

    @classmethod
    def runs_dir(cls, workdir: str | os.PathLike[str]) -> str:
        return f"{os.fspath(workdir)}/{cls.RUNS}"

    @classmethod
    def key_of(cls, name: str) -> str | None:
        """The node key of an outcome file name, or None (temporary files, others)."""
        if name.endswith(cls.SUFFIX) and not name.startswith("."):
            return name[: -len(cls.SUFFIX)]
        return None

    def _at(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root else rel

    # -- files of the run
    @property
    def manifest(self) -> str:
        """The plan as data (written by the client)."""
        return self._at("manifest.json")

    @property
    def summary(self) -> str:
        """Id, created, label, task count (small: for listing runs)."""
        return self._at("summary.json")

    @property
    def outputs(self) -> str:
        """What compute() returns, with placeholders (for re-attach)."""
        return self._at("outputs.pkl")

    @property
    def jobids(self) -> str:
        """Slurm job id of each array job (written at submission)."""
        return self._at("jobids")

    @property
    def client_pid(self) -> str:
        """Host and pid of the process running a local run."""
        return self._at("client.pid")

    @property
    def cancel_request(self) -> str:
        """Another process asks the owner of a local run to cancel it."""
        return self._at("cancel.request")

    @property
    def code_uses(self) -> str:
        """The entries of ``WORKDIR/code`` the run's jobs use, one name a line (written at
        submission): ``lazyslurm clean --code`` and the ``code_cache_gb`` cap never remove
        one that a run with jobs still queued or running uses."""
        return self._at("code-uses")

    @property
    def environment(self) -> str:
        """What a job of the run is doing before its task starts, when that takes a while:
        ``creating START_EPOCH WHEELS`` while the first job creates the run's environment,
        then ``created START END WHEELS`` (or ``failed ...``); read by every poll."""
        return self._at("environment")

    @property
    def submit_script(self) -> str:
        return self._at("submit.sh")

    @property
    def feed_plan(self) -> str:
        """A run over the user's submit cap: what is left to submit, in order, and how
        (written at submission; read by each feeder job, docs/reliability.md#submit-caps)."""
        return self._at("feed.json")

    @property
    def feed_stop(self) -> str:
        """Written (under the run's lock) when the run is cancelled: no feeder submits
        anything more."""
        return self._at("feed.stop")

    @property
    def feed_error(self) -> str:
        """Why a feeder job could not submit the rest of the run (Slurm refused it for
        good); read by the client's polls."""
        return self._at("feed.err")

    @property
    def calls(self) -> str:
        """The Slurm commands made for this run, appended by whoever made them (the
        client's scripts, compute nodes): lines of ``KIND N`` pairs (:func:`record_calls`)."""
        return self._at("calls")

    @property
    def submit_err(self) -> str:
        return self._at("submit.err")

    def spec(self, array_job: str) -> str:
        return self._at(f"specs/{array_job}.spec")

    def job_script(self, array_job: str) -> str:
        return self._at(f"jobs/{array_job}.sh")

    @classmethod
    def cancelled_of(cls, name: str) -> str | None:
        """The node key of a cancelled record's file name (:meth:`cancelled`), or None."""
        if name.endswith(cls.CANCELLED_SUFFIX) and not name.startswith("."):
            return name[: -len(cls.CANCELLED_SUFFIX)]
        return None

    @classmethod
    def pack_of(cls, name: str) -> str | None:
        """The pack name (``AJ_J``) of a pack file name, or None."""
        if name.endswith(cls.PACK_SUFFIX) and not name.startswith("."):
            return name[: -len(cls.PACK_SUFFIX)]
        return None

    @staticmethod
    def pack_name(array_job: str, slurm_index: int) -> str:
        """The name of Slurm element ``slurm_index``'s pack of results: ``AJ_J``."""
        return f"{array_job}_{slurm_index}"

    def result(self, key: str, run: str | None = None) -> str:
        """Where the result of ``key`` is: in this run (``run`` None) or at location
        ``run`` (``RUN``, ``RUN:AJ_J`` or ``:AJ_J`` for a pack of this run)."""
        run, _, pack = (run or "").partition(":")
        root = f"{self.root.rsplit('/', 1)[0]}/{run}" if run else self.root
        if pack.endswith(self.PARTIAL_SUFFIX):  # RUN:AJ_J.partial: a killed pack's records
            return f"{root}/results/{pack}"
        if pack:
            return f"{root}/results/{pack}{self.PACK_SUFFIX}"
        return f"{root}/results/{key}{self.SUFFIX}"

    def pack(self, array_job: str, slurm_index: int) -> str:
        """The one results file of packed Slurm element ``slurm_index``."""
        return self._at(f"results/{array_job}_{slurm_index}{self.PACK_SUFFIX}")

    def partial_pack(self, array_job: str, slurm_index: int) -> str:
        """The records packed Slurm element ``slurm_index`` has written so far, appended
        as its elements finish and removed once its pack file is in place: a pack killed
        partway (time limit, node failure, scancel) leaves its finished results there,
        which the cache finds (location ``RUN:AJ_J.partial``)."""
        return self._at(f"results/{array_job}_{slurm_index}{self.PARTIAL_SUFFIX}")

    def error(self, key: str) -> str:
        return self._at(f"errors/{key}{self.SUFFIX}")

    def cancelled(self, key: str) -> str:
        """The record of an element that did not run because an input of it failed
        (in a packed Slurm element, whose pack-mates ran: Slurm could not cancel it)."""
        return self._at(f"errors/{key}{self.CANCELLED_SUFFIX}")

    def dynamic_record(self, array_job: str, index: int) -> str:
        """The subgraph element ``index`` of ``array_job`` returned (dynamic expansion)."""
        return self._at(f"dynamic/{array_job}.{index}.json")

    def dynamic_reservation(self, array_job: str, index: int) -> str:
        """What an expansion of element ``index`` of ``array_job`` holds of the run's
        dynamic limits (tasks, core-hours) from its check until its record is written."""
        return self._at(f"dynamic/{array_job}.{index}.reserved")

    @staticmethod
    def is_dynamic_reservation(name: str) -> bool:
        """Whether a name in ``dynamic/`` is a reservation (:meth:`dynamic_reservation`)."""
        return name.endswith(".reserved") and not name.startswith(".")

    @staticmethod
    def is_dynamic_record(name: str) -> bool:
        """Whether a name in ``dynamic/`` is a record (:meth:`dynamic_record`), not a
        temporary file or the lock."""
        return name.endswith(".json") and not name.startswith(".")

    @property
    def dynamic_dir(self) -> str:
        return self._at("dynamic")

    @property
    def retries_dir(self) -> str:
        """Records of the elements a guard job resubmitted on the cluster (on-cluster
        retries: docs/reliability.md#retries-on-the-cluster)."""
        return self._at("retries")

    def retry_record(self, array_job: str, attempt: int) -> str:
        """What the guard of ``array_job``'s attempt ``attempt`` did (JSON): attempt 2 is
        the first resubmission."""
        return self._at(f"retries/{array_job}.{attempt}.json")

    def guard_script(self, array_job: str) -> str:
        """The batch script of ``array_job``'s guard jobs."""
        return self._at(f"jobs/{array_job}.guard.sh")

    def subgraph_file(self, prefix: str, what: str) -> str:
        """A file of the subgraph whose array job ids start with ``prefix`` (submitted from
        a compute node): ``submit.sh``, ``ids`` (its job ids) or ``err`` (sbatch's words)."""
        return self._at(f"dynamic/{prefix}{what}")

    def log(self, array_job: str, index: int, stream: str) -> str:
        return self._at(f"logs/{array_job}_{index}.{stream}")

    def log_pattern(self, array_job: str, stream: str) -> str:
        """sbatch's ``--output``/``--error`` pattern (a ``%`` in the path is escaped)."""
        return f"{self.root.replace('%', '%%')}/logs/{array_job}_%a.{stream}"

    def subdir(self, name: str) -> str:
        return self._at(name)

    @property
    def shared_dir(self) -> str:
        """A directory every element of the run may write to (JobContext.shared_dir)."""
        return self._at("shared")

    def rank_dir(self, key: str) -> str:
        """Where the ranks of a multi-process element leave their outcomes for the gather."""
        return self._at(f"ranks/{key}")

    RANK_OUTCOMES = ("pkl", "ok", "err")  # a rank's value, its success alone, its error

    def rank_file(self, key: str, rank: int, kind: str) -> str:
        """Rank ``rank``'s outcome of element ``key``: ``pkl`` (its value, when kept),
        ``ok`` (a success whose value is dropped) or ``err`` (its error record)."""
        return f"{self.rank_dir(key)}/{rank}.{kind}"

    @staticmethod
    def rank_file_name(rank: int, kind: str) -> str:
        """The name of :meth:`rank_file` in its directory."""
        return f"{rank}.{kind}"

    def relative(self, path: str) -> str:
        """``path`` (one of this layout's) relative to the run directory.

        >>> lay = RunLayout.of("r1", "/w")
        >>> lay.relative(lay.log("aj0", 3, "err")), lay.relative(lay.pack("aj0", 1))
        ('logs/aj0_3.err', 'results/aj0_1.pack')
        """
        prefix = f"{self.root}/" if self.root else ""
        return path[len(prefix) :] if prefix and path.startswith(prefix) else path

    @property
    def results_dir(self) -> str:
        return self._at(self.OUTCOME_DIRS[0])

    @property
    def errors_dir(self) -> str:
        return self._at(self.OUTCOME_DIRS[1])

    def make_dirs(self) -> None:
        """Create the run directory (0700) and its sub-directories (0700).

        The directory of runs and the run directory must be private to this user
        (:func:`check_private_dir`) if they exist: nothing is written into a directory
        another user could write to.
        """
        parent = self.root.rsplit("/", 1)[0]
        if os.path.lexists(parent):
            check_private_dir(parent)
        else:
            os.makedirs(parent, mode=0o700, exist_ok=True)
            os.chmod(parent, 0o700)  # makedirs' mode is masked by the umask
        try:
            os.mkdir(self.root, 0o700)
        except FileExistsError:
            check_private_dir(self.root)
        os.chmod(self.root, 0o700)
        for sub in self.SUBDIRS:
            path = self._at(sub)
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                check_private_dir(path)
            os.chmod(path, 0o700)


INSIDE = RunLayout("")  # paths relative to the run directory (files staged into it)

SECTION_MARK = "=== lazyslurm element "  # starts an element's part of a packed element's log
PACK_MARK = "=== lazyslurm pack "  # starts the pack's own lines (its runner's, not an element's)


def _next_mark(text: str, at: int) -> int:
    """Where the next element or pack mark starts in ``text`` from ``at`` (-1: none)."""
    marks = [i for i in (text.find(SECTION_MARK, at), text.find(PACK_MARK, at)) if i >= 0]
    return min(marks) if marks else -1


def log_section(text: str, array_job: str, index: int) -> str:
    """Element ``index``'s part of a packed Slurm element's log (the runner marks where
    each element starts); the whole text when it has no marks.

    >>> text = "=== lazyslurm element aj0[4] ===\\na\\n=== lazyslurm element aj0[5] ===\\nb\\n"
    >>> log_section(text, "aj0", 5)
    'b\\n'
    """
    mark = f"{SECTION_MARK}{array_job}[{index}] ===\n"
    start = text.find(mark)
    if start < 0:
        return text if SECTION_MARK not in text else ""
    start += len(mark)
    end = _next_mark(text, start)
    return text[start:] if end < 0 else text[start:end]


def record_calls(path: str | os.PathLike[str], counts: Mapping[str, int]) -> None:
    """Append ``KIND N`` pairs (Slurm commands made for a run: ``srun 4``) to its
    :attr:`RunLayout.calls` file, in one write; never fails (counting must not stop a
    task: an unwritable file is skipped).

    >>> import tempfile
    >>> p = f"{tempfile.mkdtemp()}/calls"
    >>> record_calls(p, {"srun": 4}); record_calls(p, {"scontrol": 1, "x": 0})
    >>> read_private(p).decode()
    'srun 4\\nscontrol 1\\n'
    """
    text = " ".join(f"{k} {n}" for k, n in counts.items() if n)
    if not text:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError:
        return
    try:
        os.write(fd, (text + "\n").encode())
    except OSError:
        pass
    finally:
        os.close(fd)


def parse_job_ids(text: str) -> dict[str, str]:
    """The scheduler's job id of each array job, from ``AJ=ID`` words (the ``jobids`` file
    of a run, and the submission's report of it): the one reader of that form.

    >>> parse_job_ids("aj0=101 aj1=102\\n")
    {'aj0': '101', 'aj1': '102'}
    """
    return dict(word.split("=", 1) for word in text.split() if "=" in word)


def pack_log(text: str, array_job: str, index: int) -> str:
    """Element ``index``'s part of a packed Slurm element's log, then the pack's own lines
    (outside every element's part: before the first element, and after a
    :data:`PACK_MARK` line, where the runner says why the pack could not end well, e.g.
    a full disk); the whole text when it has no marks.

    >>> text = ("=== lazyslurm element aj0[0] ===\\na\\n=== lazyslurm element aj0[1] ===\\nb\\n"
    ...         "=== lazyslurm pack aj0_0 ===\\ndisk full\\n")
    >>> pack_log(text, "aj0", 0)
    'a\\ndisk full\\n'
    """
    if SECTION_MARK not in text:
        return text
    own: list[str] = []
    at, inside = 0, False  # inside an element's part
    while True:
        end = _next_mark(text, at)
        if not inside:
            own.append(text[at:] if end < 0 else text[at:end])
        if end < 0:
            break
        inside = text.startswith(SECTION_MARK, end)
        at = text.find("\n", end) + 1
        if at == 0:
            break
    return log_section(text, array_job, index) + "".join(own)


def run_of(location: str) -> str:
    """The run id of a result location (``RUN`` or ``RUN:AJ_J``).

    >>> run_of("r1:aj0_3"), run_of("r1")
    ('r1', 'r1')
    """
    return location.partition(":")[0]


# --------------------------------------------------------------------------- trust


def _untrusted(msg: str, path: str) -> Exception:
    from lazyslurm.errors import UntrustedStoreError

    return UntrustedStoreError(msg, path=path)


def untrusted_why(kind: str, uid: int, mode: int, *, me: int, link_ok: bool = False) -> str:
    """Why an entry with these ``lstat`` facts is not private to user ``me`` ('' when it
    is): a symbolic link (unless ``link_ok``), another owner, or group- or world-writable.
    ``kind`` is find's ``%y`` letter (``l`` a link, ``d`` a directory, ``f`` a file).

    >>> untrusted_why("d", 65534, 0o755, me=1001)
    'is owned by uid 65534, not by you (uid 1001)'
    >>> untrusted_why("d", 1001, 0o1777, me=1001)
    'is writable by others (mode 1777)'
    >>> untrusted_why("l", 1001, 0o777, me=1001, link_ok=True)
    ''
    """
    if kind == "l" and not link_ok:
        return "is a symbolic link"
    if uid != me:
        return f"is owned by uid {uid}, not by you (uid {me})"
    if kind != "l" and mode & 0o022:
        return f"is writable by others (mode {mode & 0o7777:o})"
    return ""


def untrusted_fix(path: str, why: str) -> str:
    """The fix for an entry that :func:`untrusted_why` refused: ``chmod`` helps only for
    what is yours; what is not yours must go (its contents may already be planted)."""
    import shlex

    q = shlex.quote(path)
    if why.startswith("is writable"):
        return (
            f"make it private (`chmod 700 {q}`) and remove anything in it you do not own "
            f"(`find {q} ! -user $(id -u)` lists it)"
        )
    if why.startswith("is a symbolic link"):
        return (
            f"replace the link {q} by a directory of your own, or use a private work "
            f"directory (workdir=... or $LAZYSLURM_WORKDIR)"
        )
    return (
        f"it is not yours, so chmod cannot help: remove what you do not own (its owner or "
        f"an administrator can: `rm -rf {q}`), or use a private work directory "
        f"(workdir=... or $LAZYSLURM_WORKDIR)"
    )


def check_private_dir(path: str | os.PathLike[str]) -> None:
    """Refuse a store directory that another user could write into: a symlink, one owned
    by someone else, or one that is group- or world-writable. The error names the
    absolute path, which of the three it is, and the fix for that one.

    Planting a file there (a forged result, a spec) would make us unpickle or run it.
    """
    path = os.path.abspath(os.fspath(path))
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        return  # not a directory at all: creating or writing into it fails on its own
    kind = "l" if stat.S_ISLNK(st.st_mode) else "d"
    why = untrusted_why(kind, st.st_uid, stat.S_IMODE(st.st_mode), me=os.getuid())
    if why:
        msg = (
            f"store directory {path} {why}: another user could plant results there that "
            f"lazyslurm would unpickle. Fix: {untrusted_fix(path, why)}"
        )
        raise _untrusted(msg, path)


def _open_private(path: str, what: str = "store file") -> int:
    """An fd on ``path``: a regular file owned by this user, never through a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symbolic link
            msg = f"{what} {path} is a symbolic link: refused (not written by lazyslurm)"
            raise _untrusted(msg, path) from exc
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise IsADirectoryError(21, "not a regular file", path)
    if st.st_uid != os.getuid():
        os.close(fd)
        msg = (
            f"{what} {path} is owned by uid {st.st_uid}, not by you (uid "
            f"{os.getuid()}): refused; use a private work directory"
        )
        raise _untrusted(msg, path)
    return fd


def read_private(path: str | os.PathLike[str]) -> bytes:
    """Read a store file, checked on the open file: a regular file owned by this user,
    never through a symbolic link (:class:`~lazyslurm.errors.UntrustedStoreError`)."""
    path = os.fspath(path)
    fd = _open_private(path)
    try:
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


def default_workdir() -> Path:
    """Where runs are kept by default: ``$LAZYSLURM_WORKDIR`` or ``~/.lazyslurm``."""
    from pathlib import Path  # client side only: the runner never asks

    return Path(os.environ.get("LAZYSLURM_WORKDIR") or Path.home() / ".lazyslurm")


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a private temporary file beside ``path`` (``.NAME.*.tmp``, mode
    0600, never through a symlink), then rename it into place. (os only: tempfile and
    pathlib cost the runner milliseconds per task.)"""
    path = os.fspath(path)
    folder, _, name = path.rpartition("/")
    tmp = f"{folder}/" if folder else ""
    tmp += f".{name}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# --------------------------------------------------------------------------- values


def loads(data: bytes, *, light: bool = False, source: str = "a pickle") -> Any:
    """Unpickle ``data`` (ours: verified or owner-checked before), finding classes in
    ``sys.modules`` first: ``lazyslurm.store.Ref`` then resolves without importing the
    package ``lazyslurm`` (which pickle's own lookup does). ``_pickle`` is imported here,
    only when a value is not plain data.

    ``light``: the data was written by a cloudpickle whose function format
    :data:`_LIGHT_CLOUDPICKLE` rebuilds (the spec flag :data:`SPEC_CLOUDPICKLE_LIGHT`);
    a function pickled by value then loads without importing cloudpickle (~35 ms).
    Anything else it needs (a class by value, ...) imports cloudpickle then; ``source``
    (the file) is named if cloudpickle is missing.

    >>> loads(dumps([Ref("k"), 2]))
    [Ref('k'), 2]
    """
    import _pickle
    import io

    class Unpickler(_pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if module == "cloudpickle.cloudpickle" and sys.modules.get("cloudpickle") is None:
                if light and name in _LIGHT_CLOUDPICKLE:
                    return _LIGHT_CLOUDPICKLE[name]
                _need_cloudpickle(source)
            obj = sys.modules.get(module)
            if obj is None:
                return super().find_class(module, name)
            for part in name.split("."):
                obj = getattr(obj, part)
            return obj

    return Unpickler(io.BytesIO(data)).load()


# ----------------------------------------------------------- functions by value, lightly
# What rebuilds a function that cloudpickle (2.x, 3.x) pickled by value: these six
# helpers are all such a pickle names (a class, an enum or a dynamic module by value
# needs more, and then imports cloudpickle). Written from what the format means (a
# code object, a globals dict, a closure of cells, then the state: __dict__, extra
# globals, cell contents and slots), so that a compute node running a function shipped
# by value does not pay cloudpickle's import (~35 ms, more than the interpreter start).
# tests/test_store.py checks them against cloudpickle's own loader.


def _lz_make_function(code: Any, globals: dict, name: str, argdefs: Any, closure: Any) -> Any:
    globals["__builtins__"] = __builtins__
    return type(_lz_make_function)(code, globals, name, argdefs, closure)


def _lz_builtin_type(name: str) -> Any:
    known = _BUILTIN_TYPES.get(name)
    if known is not None:
        return known
    import types

    return type if name == "ClassType" else getattr(types, name)


def _lz_make_empty_cell() -> Any:
    if False:  # a free variable never assigned: its cell stays empty
        cell = None
    return (lambda: cell).__closure__[0]  # type: ignore[union-attr]


_NO_VALUE = object()


def _lz_make_cell(value: Any = _NO_VALUE) -> Any:
    cell = _lz_make_empty_cell()
    if value is not _NO_VALUE:
        cell.cell_contents = value
    return cell


def _lz_function_setstate(func: Any, state: tuple[dict, dict]) -> None:
    attrs, slots = state
    func.__dict__.update(attrs)
    slots = dict(slots)
    func.__globals__.update(slots.pop("__globals__"))
    func.__globals__["__builtins__"] = __builtins__
    closure = slots.pop("__closure__")
    slots.pop("_cloudpickle_submodules", None)  # kept only so that they were imported
    for mine, theirs in zip(func.__closure__ or (), closure or (), strict=False):
        try:
            mine.cell_contents = theirs.cell_contents
        except ValueError:  # an empty cell
            continue
    for name, value in slots.items():
        setattr(func, name, value)


def _lz_subimport(name: str) -> Any:
    __import__(name)
    return sys.modules[name]


_BUILTIN_TYPES = {
    "CodeType": type(_lz_make_function.__code__),
    "FunctionType": type(_lz_make_function),
    "CellType": type(_lz_make_empty_cell()),
}
_LIGHT_CLOUDPICKLE = {
    "_make_function": _lz_make_function,
    "_builtin_type": _lz_builtin_type,
    "_make_empty_cell": _lz_make_empty_cell,
    "_make_cell": _lz_make_cell,
    "_function_setstate": _lz_function_setstate,
    "subimport": _lz_subimport,
}


def dumps(obj: Any) -> bytes:
    """Pickle with the standard library; fall back to cloudpickle (lambdas, closures, ...,
    and what names ``__main__``: a class of the user's script is a different module where
    the pickle is read, so cloudpickle carries it by value)."""
    import _pickle

    try:
        data = _pickle.dumps(obj, protocol=5)
    except Exception:
        data = b""
    if data and b"__main__" not in data:
        return data
    import cloudpickle

    return cloudpickle.dumps(obj)


# Values (spec elements, results, error records) travel as marshal data when they are
# plain builtin data (exact types: None, bool, int, float, complex, str, bytes and
# tuples, lists, dicts, sets, frozensets of those): reading them on a compute node then
# needs neither ``_pickle`` (whose import pulls functools and collections: ~2 ms per
# task) nor cloudpickle. Anything else is a pickle (always starting with the PROTO
# opcode 0x80, which no marshal stream starts with). Marshal format 4 (Python >= 3.4).

_ATOMS = frozenset({type(None), bool, int, float, complex, str, bytes})
_CONTAINERS = frozenset({tuple, list, set, frozenset})
_PLAIN_LIMIT = 10_000  # bigger values are pickled: the check would cost more than it saves


def _is_plain(obj: Any) -> bool:
    stack, seen = [obj], 0
    while stack:
        seen += 1
        if seen > _PLAIN_LIMIT:
            return False
        x = stack.pop()
        t = type(x)
        if t in _ATOMS:
            continue
        if t in _CONTAINERS:
            stack.extend(x)
        elif t is dict:
            stack.extend(x.keys())
            stack.extend(x.values())
        else:
            return False
    return True


def encode_value(obj: Any) -> bytes:
    """Bytes of a value: marshal for plain builtin data, else a pickle (:func:`dumps`).

    >>> [decode_value(encode_value(v)) for v in (None, {"a": (1, 2.5)}, Ref("k"))]
    [None, {'a': (1, 2.5)}, Ref('k')]
    >>> encode_value(bytearray(b"x"))[:1]  # not plain (marshal would make it bytes)
    b'\\x80'
    """
    if _is_plain(obj):
        import marshal  # built in, loaded by every interpreter start

        return marshal.dumps(obj, 4)
    return dumps(obj)


def decode_value(data: bytes, *, light: bool = False, source: str = "a pickle") -> Any:
    """The value :func:`encode_value` (or a pickle) wrote: only ever called on data that
    was verified (an outcome record) or owner-checked (a spec file) first. ``light`` and
    ``source``: see :func:`loads`."""
    if data[:1] == b"\x80":
        return loads(data, light=light, source=source)
    import marshal

    return marshal.loads(data)


def read_pickle(path: str | os.PathLike[str]) -> Any:
    """Read a value from an outcome record (verified first) or another store file we wrote."""
    path = os.fspath(path)
    data = read_private(path)
    if data.startswith(OUTCOME_MAGIC):
        name = os.path.basename(path)
        data = decode_outcome(data, key=name[: -len(RunLayout.SUFFIX)], path=path)[1]
    return decode_value(data)


# --------------------------------------------------------------------------- error records


class ErrorRecord:
    """What an error file (``errors/KEY.pkl``) holds: a task's failure as plain data (its
    type's name and module, message and traceback text, the task and key, the rank of a
    multi-rank task) and the exception itself, pickled, when it could be (``exception``:
    only unpickled by the client, after the record was verified). Written by the runner,
    read by ``compute``, the dashboard and the CLI; travels as a dict (marshal).

    >>> rec = ErrorRecord("ValueError", "builtins", "bad", "Traceback ...", "f", "f-1")
    >>> ErrorRecord.decode(rec.encode()).message
    'bad'
    """

    __slots__ = ("exception", "key", "message", "module", "rank", "task", "traceback",
                 "type_name")  # fmt: skip

    def __init__(
        self,
        type_name: str,
        module: str,
        message: str,
        traceback: str,
        task: str,
        key: str,
        exception: bytes | None = None,
        rank: int | None = None,
    ) -> None:
        self.type_name = type_name
        self.module = module
        self.message = message
        self.traceback = traceback
        self.task = task
        self.key = key
        self.exception = exception
        self.rank = rank

    def encode(self) -> bytes:
        """The record's bytes (:func:`encode_value` of a dict of its fields)."""
        data = {name: getattr(self, name) for name in self.__slots__}
        if self.rank is None:
            del data["rank"]
        return encode_value(data)

    @classmethod
    def decode(cls, payload: bytes) -> ErrorRecord:
        """The record in a verified outcome payload (fields it lacks are empty)."""
        data = decode_value(payload)
        if type(data) is not dict:
            msg = f"an error record holds a dict, got {type(data).__name__}"
            raise ValueError(msg)
        return cls(
            type_name=str(data.get("type_name", "")),
            module=str(data.get("module", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
            task=str(data.get("task", "")),
            key=str(data.get("key", "")),
            exception=data.get("exception"),
            rank=data.get("rank"),
        )

    def __repr__(self) -> str:
        return f"ErrorRecord({self.type_name}: {self.message[:60]!r}, key={self.key!r})"


# --------------------------------------------------------------------------- outcome records
# results/KEY.pkl and errors/KEY.pkl: a header the client verifies before unpickling
# (magic, payload length, CRC-32, the node key, and the element that wrote it). Little
# endian: payload length (8 bytes), crc32 of the payload (4), length of the text (2).

OUTCOME_MAGIC = b"LZOUT1\n"
_HEAD = len(OUTCOME_MAGIC) + 14


def encode_outcome(payload: bytes, *, key: str, writer: str, usage: str = "") -> bytes:
    """A verifiable outcome record around ``payload`` (:func:`encode_value` bytes).
    ``usage``: what the element used (a :func:`encode_usage` line), kept in the header
    text after the writer (a reader that knows nothing of it sees it as part of the
    writer, which still starts with the run's id).

    >>> data = encode_outcome(b"x", key="f-1", writer="r1/aj0/0")
    >>> decode_outcome(data, key="f-1", path="p", run="r1")
    ('r1/aj0/0', b'x')
    >>> line = encode_usage({"k": "f-1", "w": 1.5})
    >>> data = encode_outcome(b"x", key="f-1", writer="r1/aj0/0", usage=line)
    >>> decode_outcome(data, key="f-1", path="p", run="r1"), outcome_usage(data)
    (('r1/aj0/0', b'x'), {'k': 'f-1', 'w': '1.5'})
    """
    from binascii import crc32

    text = f"{key}\n{writer}\n{usage}\n".encode() if usage else f"{key}\n{writer}".encode()
    head = (
        len(payload).to_bytes(8, "little")
        + crc32(payload).to_bytes(4, "little")
        + len(text).to_bytes(2, "little")
    )
    return b"".join((OUTCOME_MAGIC, head, text, payload))


# --------------------------------------------------------------------------- usage lines
# What an element used, measured by the runner (docs/usage.md): one line of text,
# ``LZUSE1 k=KEY w=WALL_S c=CPU_S m=PEAK_KB ...`` (words without spaces), in the header
# of its outcome record and, for a packed Slurm element, once more in the usage trailer
# at the end of its pack file: a shell reads them with ``head -c`` / ``tail -c``, never
# the results themselves (one command lists them across runs: lazyslurm.usage).
#
#   k   node key          w   wall seconds of the element   c   CPU seconds (user +
#   m   peak RSS, KiB     mb  how m was measured: hwm (the       system, its children
#   s   start (epoch s)       element's own high-water mark),    included)
#   h   host              proc (the process's: an upper bound), wait (its process, seen
#   a   attempt (1: first)    by the parent that reaped it)
#   n   calls (retries)   rm, rc, rt  the request it ran with: MB, CPUs, minutes (when
#   t   task code token       the runner can know it)

USAGE_MARK = "LZUSE1 "
USAGE_TRAILER = b"\nLZUSAGE\n"  # starts a pack file's usage lines (after its records)
USAGE_HEAD_BYTES = 4096  # an outcome record's usage line is within its first bytes


def encode_usage(fields: dict[str, Any]) -> str:
    """One usage line of ``fields`` (None values left out; floats to milliseconds).

    >>> encode_usage({"k": "f-1", "w": 0.12345, "m": 2048, "mb": "hwm", "rm": None})
    'LZUSE1 k=f-1 w=0.123 m=2048 mb=hwm'
    """
    words = []
    for name, value in fields.items():
        if value is None:
            continue
        if type(value) is float:
            value = f"{value:.3f}".rstrip("0").rstrip(".") or "0"
        text = str(value)
        if " " in text or "\n" in text or "=" in name:
            continue  # never a word that would break the line
        words.append(f"{name}={text}")
    return USAGE_MARK + " ".join(words)


def parse_usage(line: str) -> dict[str, str] | None:
    """The fields of a usage line (text values), or None if it is not one.

    >>> parse_usage("LZUSE1 k=f-1 w=0.123 m=2048"), parse_usage("other")
    ({'k': 'f-1', 'w': '0.123', 'm': '2048'}, None)
    """
    if not line.startswith(USAGE_MARK):
        return None
    out = {}
    for word in line[len(USAGE_MARK) :].split():
        name, eq, value = word.partition("=")
        if eq:
            out[name] = value
    return out


def outcome_usage(record: bytes) -> dict[str, str] | None:
    """The usage fields in an outcome record's header (not verified: figures only), or
    None for a record without them (written before usage was recorded, or by a writer
    that measures nothing)."""
    if not record.startswith(OUTCOME_MAGIC) or len(record) < _HEAD:
        return None
    m = len(OUTCOME_MAGIC)
    tlen = int.from_bytes(record[m + 12 : m + 14], "little")
    parts = record[_HEAD : _HEAD + tlen].decode(errors="replace").split("\n")
    return parse_usage(parts[2]) if len(parts) > 2 else None


def _bad_record(key: str, path: str, why: str) -> Exception:
    from lazyslurm.errors import CorruptResultError

    msg = f"the outcome record of node {key} ({path}) {why}: it was not unpickled"
    return CorruptResultError(msg, key=key, path=path)


def decode_outcome(
    data: bytes, *, key: str, path: str, run: str | None = None
) -> tuple[str, bytes]:
    """``(writer, payload)`` of a verified outcome record; else
    :class:`~lazyslurm.errors.CorruptResultError` naming the key and the path. ``run``
    (the run directory it was found in) must be the run that wrote it.

    >>> decode_outcome(b"junk", key="f-1", path="r1/results/f-1.pkl")
    Traceback (most recent call last):
    ...
    lazyslurm.errors.CorruptResultError: the outcome record of node f-1 (r1/results/f-1.pkl) ...
    """
    from binascii import crc32

    m = len(OUTCOME_MAGIC)
    if not data.startswith(OUTCOME_MAGIC):
        raise _bad_record(key, path, "has no lazyslurm header")
    if len(data) < _HEAD:
        raise _bad_record(key, path, "is truncated")
    length = int.from_bytes(data[m : m + 8], "little")
    crc = int.from_bytes(data[m + 8 : m + 12], "little")
    tlen = int.from_bytes(data[m + 12 : m + 14], "little")
    payload = data[_HEAD + tlen :]
    if len(payload) != length:
        raise _bad_record(key, path, f"is truncated ({len(payload)} of {length} bytes)")
    if crc32(payload) != crc:
        raise _bad_record(key, path, "fails its checksum")
    rec_key, _, writer = data[_HEAD : _HEAD + tlen].decode(errors="replace").partition("\n")
    writer = writer.partition("\n")[0]  # a usage line may follow it
    if rec_key != key:
        raise _bad_record(key, path, f"is the record of node {rec_key}")
    if run is not None and not writer.startswith(f"{run}/"):
        raise _bad_record(key, path, f"was written by {writer}, not by run {run}")
    return writer, payload


# --------------------------------------------------------------------------- pack files
# results/AJ_J.pack: the results of the elements of one packed Slurm element, in one
# file (a parallel file system suffers from 100,000 small files). A text line
# ``LZPACK1 COUNT`` (so that a shell can count results with ``head -n1``), then COUNT
# outcome records, each complete with its own header (key, writer, length, CRC-32), in
# element order: each is found by walking the records' headers, and verified alone. After
# the last record, the usage trailer: ``\nLZUSAGE\n`` and the records' usage lines
# (readers of records never reach it; ``tail -c`` reads it alone).

PACK_MAGIC = b"LZPACK1 "


def encode_pack(records: Sequence[bytes]) -> bytes:
    """One pack file of outcome records (:func:`encode_outcome`), then, when they carry
    usage lines, a copy of those lines (:data:`USAGE_TRAILER`): readers of the records
    stop after the last one, and a shell reads the usage with ``tail -c`` alone.

    >>> data = encode_pack([encode_outcome(b"x", key="f-1", writer="r1/aj0/0")])
    >>> pack_keys(data), decode_result(data, key="f-1", path="p", run="r1")
    (['f-1'], ('r1/aj0/0', b'x'))
    >>> u = encode_outcome(b"y", key="f-2", writer="r1/aj0/1", usage="LZUSE1 k=f-2 w=1")
    >>> data = encode_pack([u]); pack_keys(data), data.endswith(b"LZUSAGE\\nLZUSE1 k=f-2 w=1\\n")
    (['f-2'], True)
    """
    lines = []
    for record in records:
        usage = outcome_usage(record)
        if usage is not None:
            lines.append(encode_usage(usage) + "\n")
    trailer = (USAGE_TRAILER + "".join(lines).encode()) if lines else b""
    return b"".join((PACK_MAGIC, str(len(records)).encode(), b"\n", *records, trailer))


PARTIAL_HEAD = PACK_MAGIC + b"*\n"  # a partial pack: records until the end of the file


def _bad_pack(wanted: str, path: str, why: str) -> Exception:
    """A damaged pack file, read for the record of node ``wanted`` (if any)."""
    if wanted:
        return _bad_record(wanted, path, f"is in a pack file that {why}")
    from lazyslurm.errors import CorruptResultError

    msg = f"the pack file {path} {why}: none of its records was unpickled"
    return CorruptResultError(msg, path=path)


def _pack_records(data: bytes, path: str, wanted: str = "") -> Iterable[tuple[str, int, int]]:
    """``(key, start, end)`` of each record of a pack file (headers only are read). A
    partial pack (:data:`PARTIAL_HEAD`) ends where its last whole record does: a record
    cut short by a kill is not one (and each record is verified when read). ``wanted``:
    the key a reader wants from it, named if the pack is damaged."""
    eol = data.find(b"\n")
    if not data.startswith(PACK_MAGIC) or eol < 0:
        raise _bad_pack(wanted, path, "is not a lazyslurm pack file")
    partial = data[: eol + 1] == PARTIAL_HEAD
    count = -1 if partial else int(data[len(PACK_MAGIC) : eol])
    at, m = eol + 1, len(OUTCOME_MAGIC)
    while count != 0 and not (partial and at == len(data)):
        count -= 1
        if data[at : at + m] != OUTCOME_MAGIC or len(data) < at + _HEAD:
            if partial:
                return
            raise _bad_pack(wanted, path, f"is damaged at byte {at}")
        length = int.from_bytes(data[at + m : at + m + 8], "little")
        tlen = int.from_bytes(data[at + m + 12 : at + m + 14], "little")
        text = data[at + _HEAD : at + _HEAD + tlen]
        end = at + _HEAD + tlen + length
        if partial and end > len(data):
            return
        yield text.partition(b"\n")[0].decode(errors="replace"), at, end
        at = end


def pack_keys(data: bytes, path: str = "pack") -> list[str]:
    """The keys of the records of a pack file, in element order."""
    return [key for key, _, _ in _pack_records(data, path)]


def pack_payloads(data: bytes, path: str, run: str | None = None) -> list[bytes]:
    """The payloads of every record of a pack file, in element order, each verified
    (:func:`decode_outcome`): what a fan-in over a whole compact map reads."""
    return [
        decode_outcome(data[start:end], key=key, path=path, run=run)[1]
        for key, start, end in _pack_records(data, path)
    ]


def pack_index(data: bytes, path: str = "pack", wanted: str = "") -> dict[str, tuple[int, int]]:
    """Where each key's record is in a pack file: ``{key: (start, end)}``. Readers of many
    keys of one pack build it once (a fan-in reads every key of every pack). ``wanted``:
    the key read first, named if the pack is damaged."""
    return {key: (start, end) for key, start, end in _pack_records(data, path, wanted)}


def decode_result(
    data: bytes,
    *,
    key: str,
    path: str,
    run: str | None = None,
    indexes: dict[str, dict[str, tuple[int, int]]] | None = None,
) -> tuple[str, bytes]:
    """:func:`decode_outcome` of the record of ``key``: a result file, or its record in
    a pack file (every record of the pack is verified only when it is the one asked).
    ``indexes``: where a caller reading many keys keeps each pack's :func:`pack_index`
    by path, so that a pack's record headers are parsed once, not once per key."""
    if data.startswith(PACK_MAGIC):
        if indexes is None:
            index = pack_index(data, path, key)
        elif path in indexes:
            index = indexes[path]
        else:
            index = indexes[path] = pack_index(data, path, key)
        where = index.get(key)
        if where is None:
            raise _bad_record(key, path, "holds no record of it")
        return decode_outcome(data[where[0] : where[1]], key=key, path=path, run=run)
    return decode_outcome(data, key=key, path=path, run=run)


# --------------------------------------------------------------------------- spec files
# One file per array job: a header blob (function, names, external refs) and one blob per
# element, with an offset table so an element reads only its own arguments: O(1) per
# element instead of unpickling the whole array in every one of N tasks.
#
#   magic (8) | flags (8) | count of blobs (8) | count+1 offsets (8 each) | blobs
#
# All integers little endian. ``flags`` says what reading the payload needs before any of
# it is unpickled (SPEC_CLOUDPICKLE: some blob was written by cloudpickle;
# SPEC_CLOUDPICKLE_LIGHT: by a cloudpickle whose functions :func:`loads` rebuilds lightly).

SPEC_MAGIC = b"LZSPEC2\n"
SPEC_CLOUDPICKLE = 1
SPEC_CLOUDPICKLE_LIGHT = 2
_LIGHT_VERSIONS = ("2", "3")  # cloudpickle majors whose function format we know

ElementSpec = tuple  # (key, args, kwargs[, where]): what one array element runs


def encode_spec(header: dict[str, Any], element_blobs: Sequence[bytes]) -> bytes:
    """Pack a header and already-encoded element blobs (:func:`encode_value`) into one
    spec file. The header is plain data (:func:`encode_value`) when its function goes by
    reference, else cloudpickled (a function by value); ``flags`` records whether
    reading the file needs cloudpickle (a blob refers to it)."""
    func = header.get("func")
    if type(func) is FunctionRef:
        header = {**header, "func": None, "func_ref": (func.module, func.qualname)}
    compact = header.get("compact")
    if compact is not None and _is_plain({**header, "compact": None}):
        import marshal  # the items' description is plain by construction (one pass here)

        header_blob = marshal.dumps(header, 4)
    elif _is_plain(header):
        header_blob = encode_value(header)
    else:
        import cloudpickle  # client side only

        header_blob = cloudpickle.dumps(header, protocol=5)
    blobs = [header_blob, *element_blobs]
    flags = SPEC_CLOUDPICKLE if any(b"cloudpickle" in blob for blob in blobs) else 0
    if flags:
        import cloudpickle  # client side only

        if cloudpickle.__version__.split(".")[0] in _LIGHT_VERSIONS:
            flags |= SPEC_CLOUDPICKLE_LIGHT
    offsets = [0]
    for blob in blobs:
        offsets.append(offsets[-1] + len(blob))
    table = b"".join(o.to_bytes(8, "little") for o in offsets)
    head = SPEC_MAGIC + flags.to_bytes(8, "little") + len(blobs).to_bytes(8, "little")
    return b"".join((head, table, *blobs))


def write_spec(
    path: str | os.PathLike[str], header: dict[str, Any], elements: Iterable[bytes]
) -> None:
    atomic_write(path, encode_spec(header, list(elements)))


def _spec_head(fd: int, path: str) -> tuple[int, int]:
    head = os.pread(fd, 24, 0)
    if head[:8] != SPEC_MAGIC:
        msg = f"{path} is not a lazyslurm spec file (or one of an older lazyslurm)"
        raise ValueError(msg)
    return int.from_bytes(head[8:16], "little"), int.from_bytes(head[16:24], "little")


def spec_size(path: str | os.PathLike[str], header: dict[str, Any] | None = None) -> int:
    """How many elements a spec file holds (``header``: its header, if read already)."""
    if header is not None and "compact" in header:
        return compact_size(header["compact"][1])
    path = os.fspath(path)
    fd = _open_private(path, "spec file")
    try:
        count = _spec_head(fd, path)[1] - 1
    finally:
        os.close(fd)
    if count == 0:  # a header alone: a compact map's holds the items
        try:
            header, _ = read_element(path, -1)
        except IndexError:
            return 0
        return compact_size(header["compact"][1])
    return count


def read_element(
    path: str | os.PathLike[str], index: int, header: dict[str, Any] | None = None
) -> tuple[dict[str, Any], ElementSpec]:
    """Read the header and element ``index`` of a spec file (ours: checked on the open
    file). Three small reads, whatever the size of the array. ``header``: the one an
    earlier call returned for this file (a pack's elements): not decoded again."""
    path = os.fspath(path)
    fd = _open_private(path, "spec file")
    try:
        flags, count = _spec_head(fd, path)
        light = bool(flags & SPEC_CLOUDPICKLE_LIGHT)
        if flags & SPEC_CLOUDPICKLE and not light:
            _need_cloudpickle(path)
        base = 24 + 8 * (count + 1)
        if count == 1:  # a header alone: a compact map's (it holds every element's item)
            if header is None:
                header = _read_header(fd, base, light, path)
            if "compact" in header:
                return _compact_read(header, index, path)
            msg = f"element {index} out of range for {path} (0 elements)"
            raise IndexError(msg)
        if not 0 <= index < count - 1:
            msg = f"element {index} out of range for {path} ({count - 1} elements)"
            raise IndexError(msg)
        ends = os.pread(fd, 16, 24 + 8 * (index + 1))
        e0, e1 = int.from_bytes(ends[:8], "little"), int.from_bytes(ends[8:], "little")
        element = decode_value(_pread_all(fd, e1 - e0, base + e0), light=light, source=path)
        if header is not None:
            return header, element
        header = _read_header(fd, base, light, path)
    finally:
        os.close(fd)
    return header, element


def _read_header(fd: int, base: int, light: bool, path: str) -> dict[str, Any]:
    first = os.pread(fd, 16, 24)
    h0, h1 = int.from_bytes(first[:8], "little"), int.from_bytes(first[8:], "little")
    header = decode_value(_pread_all(fd, h1 - h0, base + h0), light=light, source=path)
    ref = header.pop("func_ref", None)
    if ref is not None:
        header["func"] = FunctionRef(*ref)
    lite = header.pop("func_lite", None)
    if lite is not None:
        header["func"] = plain_function(lite)
    return header


# A function by value whose code needs nothing but modules importable where it runs,
# builtins and plain values travels as plain data (marshal): its code object, names,
# defaults and those globals. Reading it then needs neither cloudpickle nor ``_pickle``
# (whose import pulls functools and collections: ~3 ms per task). Anything else (a
# closure, a global that is a function or class of the user's) is cloudpickled.


def function_data(func: Any, importable: Any) -> tuple | None:
    """The plain description of ``func`` (client side), or None when it needs more than
    plain data can say; ``importable(module)`` tells whether a module a global names
    imports where the task runs."""
    import marshal
    import types

    if type(func) is not types.FunctionType or func.__closure__ or func.__dict__:
        return None
    defaults, kwdefaults = func.__defaults__, func.__kwdefaults__
    if not _is_plain(defaults) or not _is_plain(kwdefaults):
        return None
    names: set[str] = set()
    stack = [func.__code__]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if type(c) is types.CodeType)
    refs: dict[str, tuple[str, Any]] = {}
    glob = func.__globals__
    for name in names:
        if name not in glob:
            continue  # a builtin or an attribute name
        value = glob[name]
        if type(value) is types.ModuleType:
            if not importable(value):
                return None
            refs[name] = ("module", value.__name__)
        elif type(value) in _ATOMS:
            refs[name] = ("value", value)
        else:
            return None
    module = func.__module__ if isinstance(func.__module__, str) else ""
    return (
        marshal.dumps(func.__code__),
        func.__name__,
        func.__qualname__,
        module,
        defaults,
        kwdefaults,
        refs,
    )


def plain_function(data: tuple) -> Any:
    """The function :func:`function_data` described (compute node side)."""
    import marshal

    code, name, qualname, module, defaults, kwdefaults, refs = data
    glob: dict[str, Any] = {"__builtins__": sys.modules["builtins"], "__name__": module}
    for key, (kind, value) in refs.items():
        if kind == "module":
            __import__(value)
            glob[key] = sys.modules[value]
        else:
            glob[key] = value
    func = type(plain_function)(marshal.loads(code), glob, name, defaults)
    func.__kwdefaults__ = kwdefaults
    func.__qualname__ = qualname
    return func


def _compact_read(header: dict[str, Any], index: int, path: str) -> tuple[dict, ElementSpec]:
    """Element ``index`` of a compact map's spec: its item, key and inputs' locations."""
    recipe, desc = header["compact"][0], header["compact"][1]
    if index < 0:  # the header only
        return header, ()
    items = header.get("_items")
    if items is None:  # decoded once per header (a pack's elements share it)
        items = header["_items"] = compact_items(desc)
    if not 0 <= index < len(items):
        msg = f"element {index} out of range for {path} ({len(items)} elements)"
        raise IndexError(msg)
    key, args, kwargs = compact_element(recipe, items[index])
    where = header.get("where")
    return header, ((key, args, kwargs, where) if where else (key, args, kwargs))


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read the header of a spec file alone (ours: checked on the open file): what
    :func:`read_element` returns first, without decoding an element (whose arguments may
    name a module this Python lacks: that element's own failure)."""
    path = os.fspath(path)
    fd = _open_private(path, "spec file")
    try:
        flags, count = _spec_head(fd, path)
        light = bool(flags & SPEC_CLOUDPICKLE_LIGHT)
        if flags & SPEC_CLOUDPICKLE and not light:
            _need_cloudpickle(path)
        return _read_header(fd, 24 + 8 * (count + 1), light, path)
    finally:
        os.close(fd)


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            msg = f"spec file truncated at byte {offset + len(data)}"
            raise ValueError(msg)
        data += more
    return data


def _need_cloudpickle(path: str) -> None:
    """Import cloudpickle for a payload pickled by value, or say what is missing."""
    try:
        import cloudpickle  # noqa: F401
    except ImportError as exc:
        msg = (
            f"{path} holds code pickled by value (cloudpickle), but cloudpickle is "
            f"not importable by {sys.executable} here: install it there "
            f"(`{sys.executable} -m pip install cloudpickle`), or make the task's module "
            f"importable where it runs so that it is shipped by reference"
        )
        raise ImportError(msg) from exc


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    import json  # client side only

    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())


def read_json(path: str | os.PathLike[str]) -> Any:
    import json  # client side only

    with open(path, "rb") as fh:
        return json.load(fh)


# --------------------------------------------------------------------------- compact maps
# A ``task.map`` over a range, a NumPy array or a list of plain configs, kept as one node
# (graph.core's ``ArrayNode``): its items travel as one description, ``desc``, and the
# key of element i is derived from a ``recipe`` when someone asks, here on the client and
# on the compute node alike (the key ``task.map`` gives the same item one by one):
#
#   desc:   ("range", start, stop, step) | ("numpy", dtype, shape, raw bytes) |
#           ("list", [item, ...])   (atoms, or dicts of atoms: keyword arguments)
#   recipe: (name, prefix, after): key = name-sha1(prefix + part(item) + after)[:24]
#
# ``part(item)`` is graph.core's key part of a map item: ``repr`` of an atom (a long str
# or bytes by its hash), ``|k1\x00part(v1)...`` of a dict (sorted), and the pickle hash of
# anything else (a NumPy scalar or row). tests/test_compact.py holds the two to the same
# keys.

_LONG_AT = 4096  # graph.core._LONG_AT


def compact_items(desc: Any) -> Any:
    """The items a compact map's description stands for (a sequence: range, NumPy array
    or list; NumPy is imported only for a NumPy array)."""
    kind = desc[0]
    if kind == "range":
        return range(desc[1], desc[2], desc[3])
    if kind == "numpy":
        import numpy

        return numpy.frombuffer(desc[3], dtype=desc[1]).reshape(desc[2])
    if kind == "list":
        return desc[1]
    msg = f"unknown compact map items {kind!r}"
    raise ValueError(msg)


def compact_size(desc: Any) -> int:
    """How many items ``desc`` holds (without building a NumPy array)."""
    kind = desc[0]
    if kind == "range":
        return len(range(desc[1], desc[2], desc[3]))
    if kind == "numpy":
        return int(desc[2][0]) if desc[2] else 0
    return len(desc[1])


def compact_slice(desc: Any, start: int, stop: int) -> Any:
    """The description of items ``start:stop`` of ``desc`` (a chunk of an array job)."""
    kind = desc[0]
    if kind == "range":
        r = range(desc[1], desc[2], desc[3])[start:stop]
        return ("range", r.start, r.stop, r.step)
    if kind == "numpy":
        shape = list(desc[2])
        row = len(desc[3]) // shape[0] if shape and shape[0] else 0
        stop = min(stop, shape[0]) if shape else 0
        start = min(start, stop)
        return ("numpy", desc[1], [stop - start, *shape[1:]], desc[3][start * row : stop * row])
    return ("list", desc[1][start:stop])


def _sha1(data: bytes) -> Any:
    try:
        import _sha1  # the C module: hashlib's wrapper costs a compute node ~2 ms more

        return _sha1.sha1(data)
    except ImportError:  # a Python built without it
        import hashlib

        return hashlib.sha1(data)


def _atom_part(v: Any) -> str:
    t = type(v)
    if (t is str or t is bytes) and len(v) >= _LONG_AT:
        data = v.encode("utf-8", "surrogatepass") if t is str else v
        return f"{t.__name__}#{len(data)}#{_sha1(data).hexdigest()}"
    return repr(v)


_KEY_ATOMS = frozenset({str, int, float, bool, type(None), bytes, complex})


def item_call(item: Any) -> tuple[tuple[Any, ...], dict[str, Any], str]:
    """``(args, kwargs, key part)`` of one compact map item, as ``task.map`` makes them."""
    t = type(item)
    if t in _KEY_ATOMS:
        return (item,), {}, _atom_part(item)
    if t is dict:
        parts = ["|"]
        for k in sorted(item):
            parts.append(k)
            parts.append(_atom_part(item[k]))
        return (), item, "\x00".join(parts)
    import _pickle

    token = f"{t.__qualname__}:{_sha1(_pickle.dumps(item, protocol=5)).hexdigest()}"
    return (item,), {}, token


def compact_element(recipe: Any, item: Any) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
    """``(key, args, kwargs)`` of the element of a compact map that calls ``item``."""
    args, kwargs, part = item_call(item)
    name, prefix, after = recipe
    h = _sha1(prefix.encode())
    h.update(part.encode())
    if after:
        h.update(after.encode())
    return f"{name}-{h.hexdigest()[:24]}", args, kwargs


class ElementKeys:
    """The keys of a compact map's elements (or of a chunk of them), derived when asked:
    a read-only sequence of str, as a tuple of keys would be. ``index`` and ``in`` build
    a key -> index table on first use (O(n) once)."""

    __slots__ = ("_index", "_items", "desc", "recipe")

    def __init__(self, recipe: Any, desc: Any) -> None:
        self.recipe = tuple(recipe)
        self.desc = desc
        self._items: Any = None
        self._index: dict[str, int] | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (ElementKeys, (self.recipe, self.desc))

    def items(self) -> Any:
        if self._items is None:
            self._items = compact_items(self.desc)
        return self._items

    def __len__(self) -> int:
        return compact_size(self.desc)

    def __getitem__(self, i: Any) -> Any:
        if type(i) is slice:
            start, stop, step = i.indices(len(self))
            if step != 1:
                return tuple(self)[i]
            return ElementKeys(self.recipe, compact_slice(self.desc, start, stop))
        return compact_element(self.recipe, self.items()[i])[0]

    def __iter__(self) -> Any:
        recipe = self.recipe
        for item in self.items():
            yield compact_element(recipe, item)[0]

    def _table(self) -> dict[str, int]:
        if self._index is None:
            self._index = {k: i for i, k in enumerate(self)}
        return self._index

    def index(self, key: str) -> int:
        try:
            return self._table()[key]
        except KeyError:
            msg = f"{key!r} is not in this compact map"
            raise ValueError(msg) from None

    def __contains__(self, key: object) -> bool:
        return key in self._table()

    def __eq__(self, other: object) -> bool:
        if type(other) is ElementKeys:
            return (self.recipe, self.desc) == (other.recipe, other.desc)  # type: ignore[attr-defined]
        if isinstance(other, tuple):
            return tuple(self) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.recipe, self.desc[0], len(self)))

    def __repr__(self) -> str:
        return f"ElementKeys({self.recipe[0]}, {self.desc[0]}, {len(self)} keys)"
