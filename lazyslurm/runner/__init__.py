"""The compute-node entry point: run one array element and store its outcome.

``python /path/to/lazyslurm/runner/__main__.py RUN_DIR ARRAY_JOB`` (what job scripts run
when the runner's path on the cluster is known) or ``python -m lazyslurm.runner RUN_DIR
ARRAY_JOB`` runs Slurm element ``$SLURM_ARRAY_TASK_ID`` (:func:`run_slurm_element`: one
element, or the ``pack`` elements packed into it). A multi-rank task runs ``--rank`` on
every rank (srun), then ``--gather`` once (:func:`run_rank`, :func:`gather`).

This module starts once per task on every compute node, so on the way to the user's
function it imports only ``os``, ``sys``, ``marshal``, ``time`` (built in) and
:mod:`lazyslurm.store` (loaded by path: no package ``__init__``); ``_pickle`` only for
values that are not plain data, cloudpickle only if the spec file says a payload needs
it, ``traceback`` and :mod:`lazyslurm.errors` only when something fails, ``resource``
(0.2 ms) only when the task ran a child process or there is no ``/proc``.
``tests/test_layers.py`` holds it to that budget.

Every outcome record says what its element used (:func:`_stop_meter`: wall and CPU
time, peak memory, the request it ran with): see docs/usage.md.
"""

from __future__ import annotations

import os
import sys

from lazyslurm.store import (
    PACK_MARK,
    PARTIAL_HEAD,
    SECTION_MARK,
    ErrorRecord,
    FunctionRef,
    MapItem,
    Rebuild,
    Redirect,
    Ref,
    RefArray,
    RefList,
    Restore,
    RunLayout,
    atomic_write,
    decode_result,
    decode_value,
    encode_outcome,
    encode_pack,
    encode_usage,
    encode_value,
    pack_index,
    pack_payloads,
    read_element,
    read_header,
    read_private,
    record_calls,
    run_of,
    spec_size,
)

TYPE_CHECKING = False  # typing is not imported on compute nodes
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "EXIT_OK",
    "EXIT_TASK_FAILED",
    "gather",
    "resolve",
    "run_element",
    "run_rank",
    "run_slurm_element",
]

EXIT_OK = 0
EXIT_TASK_FAILED = 1  # the element failed (or was cancelled) and wrote its record
EXIT_NO_OUTCOME = 3  # an element of a pack that left no record at all
_RECORDED = (EXIT_OK, EXIT_TASK_FAILED)
ELEMENT_ENV = "LAZYSLURM_ELEMENT"  # RUN_DIR \t ARRAY_JOB \t INDEX \t KEY of the running element


def resolve(obj: Any, load: Any) -> Any:
    """Replace placeholders in an argument template by values from ``load(key)``.

    >>> resolve([Ref("a"), {"k": Ref("b", (("item", 0),))}, RefList(("a", "b"))],
    ...         {"a": 1, "b": [2]}.__getitem__)
    [1, {'k': 2}, [1, [2]]]
    """
    t = type(obj)
    if t is Ref:
        value = load(obj.key)
        for kind, step in obj.path:
            if kind == "attr":
                value = getattr(value, step)
            elif kind == "item":
                ts = type(step)
                if ts is slice:
                    step = slice(*(resolve(b, load) for b in (step.start, step.stop, step.step)))
                elif ts is Ref:
                    step = resolve(step, load)
                value = value[step]
            else:  # "call": a method call made lazily, job.method(*args, **kwargs)
                args, kwargs = step
                value = value(*resolve(args, load), **resolve(kwargs, load))
        return value
    if t is Rebuild:
        return obj.cls._make(resolve(obj.items, load))
    if t is Restore:
        import copy

        new = copy.copy(obj.base)
        for name, value in obj.fields.items():
            object.__setattr__(new, name, resolve(value, load))
        return new
    if t is RefList:
        return [load(k) for k in obj.keys]
    if t is RefArray:  # a compact map, as a whole: its location says where (a span)
        return load(obj.key)
    if t is list:
        return [resolve(x, load) for x in obj]
    if t is tuple:
        return tuple(resolve(x, load) for x in obj)
    if t is dict:
        return {k: resolve(v, load) for k, v in obj.items()}
    if t is set or t is frozenset:
        return t(resolve(x, load) for x in obj)
    return obj


def _loader(
    paths: RunLayout, external: dict[str, str | None], where: dict[str, str] | None = None
) -> Any:
    """``load(key)``: an upstream result, verified before it is unpickled (a corrupt or
    foreign record raises CorruptResultError naming that input, its key and path).
    The result of a task that returned a lazy value is a :class:`Redirect`: it is
    followed to the results of the subgraph (docs/dynamic.md).

    ``external`` and ``where`` give a key's location when it is not ``results/KEY.pkl``
    of this run: another run's, or a pack file (``RUN:AJ_J``, ``:AJ_J`` in this run);
    a pack file is read once for all the keys it holds."""
    cache: dict[str, Any] = {}
    files: dict[str, bytes] = {}  # pack files: read once for all the keys they hold
    indexes: dict[str, dict[str, tuple[int, int]]] = {}  # and indexed once
    here = paths.root.rsplit("/", 1)[-1]

    def read(key: str, at: str | None) -> Any:
        if at is not None and at.startswith("span:"):  # a compact map: "span:[RUN:]AJ,AJ"
            run, _, ids = at[5:].rpartition(":")
            where_ = paths if not run else RunLayout(f"{paths.root.rsplit('/', 1)[0]}/{run}")
            return _load_span(where_, ids.split(","), read, run)
        path = paths.result(key, run=None if at == here else at)
        run = run_of(at) if at else ""
        try:
            data = files.get(path)
            if data is None:
                data = read_private(path)
                if at is not None and ":" in at:
                    files[path] = data
            _, payload = decode_result(data, key=key, path=path, run=run or here, indexes=indexes)
        except Exception:
            if run in ("", here) and _failed_here(paths, key):
                raise InputFailed(key) from None
            raise
        value = decode_value(payload)
        if type(value) is Redirect:
            runs = value.runs
            value = resolve(value.template, lambda k: read(k, runs.get(k)))
        return value

    def load(key: str) -> Any:
        try:
            return cache[key]
        except KeyError:
            pass
        value = cache[key] = read(key, (where or {}).get(key) or external.get(key))
        return value

    return load


def _load_span(paths: RunLayout, array_jobs: list[str], read: Any, run: str = "") -> list:
    """The results of a compact map, in element order: the elements of ``array_jobs``
    (its chunks, in this run). A pack file whose records are all there is read in
    record order (no key derived); a pack missing some is read key by key, so that an
    input that failed says so (:class:`InputFailed`)."""
    here = run or paths.root.rsplit("/", 1)[-1]
    values: list = []
    for aj in array_jobs:
        spec = paths.spec(aj)
        header, _ = read_element(spec, -1)
        size = spec_size(spec, header)
        pack = int(header.get("pack", 1))
        if pack == 1:
            at = run or None
            values.extend(read(read_element(spec, i, header)[1][0], at) for i in range(size))
            continue
        for j in range(-(-size // pack)):
            first, n = j * pack, min(pack, size - j * pack)
            path = paths.pack(aj, j)
            try:
                payloads = pack_payloads(read_private(path), path, here)
            except OSError:
                payloads = []
            if len(payloads) != n:  # an element left no result: each by key, to say which
                at = f"{run}:{aj}_{j}"
                values.extend(
                    read(read_element(spec, i, header)[1][0], at) for i in range(first, first + n)
                )
                continue
            for payload in payloads:
                value = decode_value(payload)
                if type(value) is Redirect:
                    runs = value.runs
                    value = resolve(value.template, lambda k, runs=runs: read(k, runs.get(k)))
                values.append(value)
    return values


def _failed_here(paths: RunLayout, key: str) -> bool:
    """Whether node ``key`` of this run failed (or was itself cancelled by a failure)."""
    return os.path.exists(paths.error(key)) or os.path.exists(paths.cancelled(key))


class InputFailed(Exception):
    """An input of this element failed: the element is cancelled, not run (its result is
    missing because its task failed, in a packed Slurm element that went on)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


_LAZY = frozenset({"Job", "JobArray", "JobView"})


def returned_lazy(value: Any) -> bool:
    """Whether a task's value holds a lazy value (a dynamic expansion), without importing
    the graph: only a task that built one has loaded ``lazyslurm.graph.core``.

    >>> returned_lazy([1, {"a": (2, 3)}]), returned_lazy("x")
    (False, False)
    """
    if "lazyslurm.graph.core" not in sys.modules:
        return False
    stack = [value]
    while stack:
        obj = stack.pop()
        t = type(obj)
        if t.__name__ in _LAZY and t.__module__ == "lazyslurm.graph.core":
            return True
        if t is list or t is tuple or t is set or t is frozenset:
            stack.extend(obj)
        elif t is dict:
            stack.extend(obj.values())
    return False


def call_args(args: tuple[Any, ...], kwargs: dict[str, Any], load: Any) -> tuple[tuple, dict]:
    """Resolved positional and keyword arguments of one element."""
    if len(args) == 1 and type(args[0]) is MapItem:
        item = resolve(args[0].ref, load)
        if type(item) is dict:
            return (), item
        if type(item) is tuple:
            return item, {}
        return (item,), {}
    return resolve(args, load), resolve(kwargs, load)


def _safe_str(exc: BaseException) -> str:
    """``str(exc)``, never raising (a user exception whose ``__str__`` is broken)."""
    try:
        return str(exc)
    except Exception as inner:
        return f"<{type(exc).__qualname__}: str() failed with {type(inner).__name__}>"


# A KeyboardInterrupt is the task's failure when the task raised it, not when a SIGINT
# did (Slurm's scancel --signal=INT, a Ctrl-C): the runner's own handler tells them apart
# (watch_interrupts); without it (the sync backend, in the caller's process) every
# KeyboardInterrupt is a real one.
_SIGINT = {"watched": False, "seen": False}


def watch_interrupts() -> None:
    """Route SIGINT through a handler that notes it came, then raises KeyboardInterrupt
    (as Python's own does): the runner's entry point calls it."""
    import _signal

    def on_sigint(signum: int, frame: Any) -> None:
        _SIGINT["seen"] = True
        raise KeyboardInterrupt

    _signal.signal(_signal.SIGINT, on_sigint)
    _SIGINT["watched"], _SIGINT["seen"] = True, False


def _real_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` is a KeyboardInterrupt that a SIGINT raised (not the task)."""
    return isinstance(exc, KeyboardInterrupt) and (_SIGINT["seen"] or not _SIGINT["watched"])


def _message(exc: BaseException) -> str:
    if isinstance(exc, SystemExit):
        return f"the task called sys.exit({exc.code!r}) instead of returning a value"
    text = _safe_str(exc)
    if not isinstance(exc, Exception) and not text:  # KeyboardInterrupt, GeneratorExit
        return "raised by the task itself (no signal came)"
    return text


def _error_record(
    exc: BaseException, header: dict[str, Any], key: str, rank: int | None = None
) -> bytes:
    import traceback

    from lazyslurm.store import dumps

    record = ErrorRecord(
        type_name=type(exc).__qualname__,
        module=type(exc).__module__,
        message=_message(exc),
        traceback="".join(traceback.format_exception(exc)),
        task=header.get("task", ""),
        key=key,
        rank=rank,
    )
    try:
        record.exception = dumps(exc)
    except Exception:
        pass
    return record.encode()


def _writer(run_dir: str, array_job: str, index: int) -> str:
    """Who writes an outcome record: run/array job/element, and the Slurm job if any."""
    env = os.environ
    slurm = env.get("SLURM_ARRAY_JOB_ID")
    where = f"@{slurm}_{env.get('SLURM_ARRAY_TASK_ID', '')}" if slurm else ""
    return f"{run_dir.rsplit('/', 1)[-1]}/{array_job}/{index}{where}"


def _load_function(func: Any, task: str) -> Any:
    """The task's function; a module that cannot be imported here says what to do."""
    if type(func) is not FunctionRef:
        return func
    try:
        return func.load()
    except ImportError as exc:
        msg = (
            f"task {task!r}: its module {func.module!r} is not importable where the task "
            f"runs ({type(exc).__name__}: {exc}); install it there, or ship the code with "
            f"packaging='by-value' (or 'wheel'/'container')"
        )
        raise type(exc)(msg) from exc


def _expand(
    value: Any, paths: RunLayout, array_job: str, index: int, key: str, header: dict[str, Any]
) -> Any:
    """A task returned a lazy value: plan and submit it here (lazyslurm.dynamic)."""
    try:
        from lazyslurm.dynamic import expand
    except ImportError as exc:
        from lazyslurm.errors import DynamicExpansionError

        msg = (
            f"task {header.get('task', '')!r} returned a lazy value, but lazyslurm's planner "
            f"cannot be imported where it ran ({exc}): install lazyslurm with its "
            f"dependencies (attrs, cloudpickle) there, not only the runner modules"
        )
        raise DynamicExpansionError(msg) from exc
    return expand(value, paths, array_job, index, key, header, run_element)


def _execute(
    paths: RunLayout,
    header: dict[str, Any],
    where: tuple[str, int],
    element: tuple[str, tuple, dict],
    make_context: Any,
    one_process: bool,
) -> tuple[Any, BaseException | None]:
    """Call the task (with its retries): ``(pickled result, None)`` or ``(None, error)``.

    ``make_context()`` builds the :class:`~lazyslurm.context.JobContext`; it is called
    only when the function declares one that the call leaves out. ``one_process``: the
    only rank of the element, so ``gather="all"`` makes a list of one value here.
    ``where`` is ``(array_job, index)``: a task that returns a lazy value has it planned
    and submitted from here (:func:`_expand`).
    """
    key, args, kwargs = element[:3]
    load = _loader(paths, header.get("external", {}), element[3] if len(element) > 3 else None)
    wants = header.get("context")
    if header.get("requeue") and os.environ.get("SLURM_JOB_ID"):
        from lazyslurm.runner import checkpoint

        checkpoint.clear()
        checkpoint.install(paths.calls)
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        if restarts != "0":
            print(f"lazyslurm: attempt {int(restarts) + 1} of {key}", file=sys.stderr)
    attempts = 1 + int(header.get("retries", 0))
    for attempt in range(attempts):
        try:
            func = _load_function(header["func"], header.get("task", ""))
            fargs, fkwargs = call_args(args, kwargs, load)
            if wants is not None:
                name, position = wants
                if name not in fkwargs and (position is None or len(fargs) <= position):
                    fkwargs = {**fkwargs, name: make_context()}
            result = func(*fargs, **fkwargs)
            if returned_lazy(result):  # plan and submit the subgraph from here
                result = _expand(result, paths, *where, key, header)
            if one_process and header.get("gather") == "all":
                result = [result]  # a one-process run: the list of its only rank's value
            data = encode_value(result)  # marshal for plain data
        except InputFailed as exc:
            return None, exc  # not this task's failure: never retried
        except BaseException as exc:  # the task's own failure, sys.exit(), KeyboardInterrupt
            if _real_interrupt(exc):  # a SIGINT (scancel --signal=INT): the element stops
                raise
            if getattr(exc, "error_record", None) is not None:
                return None, exc  # a subgraph's original error: not retried here
            if attempt + 1 < attempts:
                print(f"lazyslurm: attempt {attempt + 1} of {key} failed: {exc!r}", file=sys.stderr)
                continue
            return None, exc
        return data, None
    return None, None  # pragma: no cover - the loop always returns


def _unloadable(paths: RunLayout, array_job: str, index: int, exc: ImportError) -> int:
    """An element whose arguments cannot be loaded here: a module they name is missing
    (an image or environment without it). Its error record, under the key the run's
    records give it, makes the client raise the typed error (``ModuleNotFoundError``,
    with the fix) instead of a crash of the element."""
    import json
    import traceback

    traceback.print_exception(exc)
    records = [paths.manifest]
    try:
        names = sorted(os.listdir(paths.dynamic_dir))
    except OSError:
        names = []
    records += [os.path.join(paths.dynamic_dir, n) for n in names if paths.is_dynamic_record(n)]
    for path in records:
        try:
            fields = json.loads(read_private(path))
        except (OSError, ValueError):
            continue
        for entry in fields.get("array_jobs", []) if isinstance(fields, dict) else []:
            if entry.get("id") == array_job and 0 <= index < len(entry.get("keys", [])):
                key = entry["keys"][index]
                error = _error_record(exc, {"task": entry.get("name", "")}, key)
                writer = _writer(paths.root, array_job, index)
                atomic_write(paths.error(key), encode_outcome(error, key=key, writer=writer))
                return EXIT_TASK_FAILED
    raise exc


def _context_maker(
    run_dir: str, array_job: str, index: int, key: str, env: Any, ranks: bool = False
) -> Any:
    def make() -> Any:
        from lazyslurm.context import JobContext

        os.makedirs(RunLayout(run_dir).shared_dir, mode=0o700, exist_ok=True)
        where = {"run_dir": run_dir, "array_job": array_job, "index": index, "key": key}
        if env is None:
            return JobContext.local(**where)
        return JobContext.from_env(env, ranks=ranks, **where)

    return make


# ------------------------------------------------------------------------- usage
# What an element used (docs/usage.md), measured around the call of its task: wall time,
# CPU time (this process's and its reaped children's, from os.times: no import), and
# peak memory. The peak is the process's high-water mark (/proc/self/status VmHWM),
# reset before the element (/proc/self/clear_refs, "5") so that each element of a
# process that runs several (a pack, the local backend's workers) has its own; where
# that cannot be reset, the process's peak so far (an upper bound: mb=proc). A child
# process the task ran and waited for counts when its peak is a new high for this
# process's children (resource.getrusage, imported only then): the largest process
# counts, not their sum (a child's figure starts from its parent's size when it was
# spawned, so adding them would count the parent twice).
ATTEMPT_ENV = "LAZYSLURM_ATTEMPT"  # the attempt number, set by whoever resubmits an element
_CHILDREN = {"kb": 0}  # the highest peak of this process's children seen so far


def _reset_peak() -> bool:
    """Start a new memory high-water mark for this process (Linux >= 4.0)."""
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def _peak_kb() -> int | None:
    """This process's memory high-water mark in KiB (VmHWM), or None without /proc."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _maxrss_kb(who: int) -> int:
    """``getrusage(who).ru_maxrss`` in KiB (bytes on macOS)."""
    import resource

    rss = resource.getrusage(who).ru_maxrss
    return rss // 1024 if sys.platform == "darwin" else rss


def _granted(env: Any) -> dict[str, Any]:
    """The request the element runs with, as far as its environment says: Slurm's memory
    (MB) and CPUs, and the attempt number."""
    out: dict[str, Any] = {}
    cpus = env.get("SLURM_CPUS_PER_TASK") or env.get("SLURM_CPUS_ON_NODE")
    if cpus and cpus.isdigit():
        out["rc"] = int(cpus)
    mem = env.get("SLURM_MEM_PER_NODE")
    per_cpu = env.get("SLURM_MEM_PER_CPU")
    if mem and mem.isdigit():
        out["rm"] = int(mem)
    elif per_cpu and per_cpu.isdigit():
        out["rm"] = int(per_cpu) * out.get("rc", 1)
    start, end = env.get("SLURM_JOB_START_TIME"), env.get("SLURM_JOB_END_TIME")
    if start and end and start.isdigit() and end.isdigit() and int(end) > int(start):
        out["rt"] = -(-(int(end) - int(start)) // 60)
    attempt = env.get(ATTEMPT_ENV) or ""
    restarts = env.get("SLURM_RESTART_COUNT") or ""
    if attempt.isdigit():
        out["a"] = int(attempt)
    elif restarts.isdigit():
        out["a"] = 1 + int(restarts)
    return out


def _start_meter() -> tuple[float, Any, bool]:
    """Before the element: the time, this process's CPU times, and whether its memory
    high-water mark was reset."""
    import time

    return time.time(), os.times(), _reset_peak()


def _stop_meter(meter: tuple[float, Any, bool], key: str, header: dict[str, Any], env: Any) -> str:
    """After the element: its usage line (:func:`~lazyslurm.store.encode_usage`); "" if
    it could not be measured. ``env``: the Slurm job's environment (None: the local and
    sync backends, whose requests Slurm did not grant: the plan says them)."""
    try:
        import time

        start, t0, reset = meter
        t1 = os.times()
        wall = time.time() - start
        children_cpu = (t1.children_user + t1.children_system) - (
            t0.children_user + t0.children_system
        )
        cpu = (t1.user + t1.system) - (t0.user + t0.system) + children_cpu
        peak = _peak_kb() if reset else None
        how = "hwm"
        if peak is None:
            peak, how = _maxrss_kb(0), "proc"  # RUSAGE_SELF: the process's peak so far
        if children_cpu > 0:  # a child was reaped: was its peak a new high?
            kids = _maxrss_kb(-1)  # RUSAGE_CHILDREN (from its start: this process's RSS)
            if kids > _CHILDREN["kb"]:
                _CHILDREN["kb"] = kids
                peak = max(peak, kids)
        fields: dict[str, Any] = {
            "k": key,
            "w": wall,
            "c": max(cpu, 0.0),
            "m": peak,
            "mb": how,
            "s": round(start, 2),
            "h": (env or {}).get("SLURMD_NODENAME") or os.uname().nodename,
            "t": header.get("token"),
        }
        if env is not None:
            fields.update(_granted(env))
        return encode_usage(fields)
    except Exception:  # never fail an element for its figures
        return ""


def _reaped_usage(key: str, rusage: Any, wall: float | None, env: Any) -> str:
    """The usage line of an element whose process ended without its outcome, from the
    ``os.wait4`` figures of that process (its peak since its last element began)."""
    try:
        rss = rusage.ru_maxrss // (1024 if sys.platform == "darwin" else 1)
        fields: dict[str, Any] = {"k": key, "m": rss, "mb": "wait"}
        if wall is not None:
            fields["w"] = wall
            fields["c"] = rusage.ru_utime + rusage.ru_stime
        if env is not None:
            fields.update(_granted(env))
        return encode_usage(fields)
    except Exception:
        return ""


def run_element(
    run_dir: str,
    array_job: str,
    index: int,
    *,
    env: Any = None,
    packed: list[bytes] | None = None,
    header: dict[str, Any] | None = None,
) -> int:
    """Run one element; write its result or error file. Returns the process exit code.

    ``env`` is the Slurm environment of the job (``os.environ`` under Slurm); ``None``
    (the local and sync backends) gives a task's ``JobContext`` one-process values.
    ``packed``: the element runs in a packed Slurm element, its result record is
    appended there (for the pack file) instead of being written alone; ``header``, the
    spec's header its pack read once (the function is not rebuilt per element).
    """
    paths = RunLayout(run_dir)
    try:
        header, element = read_element(paths.spec(array_job), index, header)
    except ImportError as exc:  # its arguments name a module this Python lacks
        return _unloadable(paths, array_job, index, exc)
    key = element[0]
    make = _context_maker(run_dir, array_job, index, key, env)
    # where this element runs, for code that asks (a @workflow's context); restored after
    # (the sync backend runs elements in the caller's process)
    saved = os.environ.get(ELEMENT_ENV)
    os.environ[ELEMENT_ENV] = f"{paths.root}\t{array_job}\t{index}\t{key}"
    meter = _start_meter()
    try:
        data, exc = _execute(paths, header, (array_job, index), element, make, one_process=True)
    finally:
        if saved is None:
            os.environ.pop(ELEMENT_ENV, None)
        else:
            os.environ[ELEMENT_ENV] = saved
    writer = _writer(paths.root, array_job, index)
    if type(exc) is InputFailed:
        print(f"lazyslurm: {key} cancelled: its input {exc.key} failed", file=sys.stderr)
        record = encode_outcome(encode_value(exc.key), key=key, writer=writer)
        atomic_write(paths.cancelled(key), record)
        return EXIT_TASK_FAILED
    usage = _stop_meter(meter, key, header, env)
    if exc is not None:
        import traceback

        traceback.print_exception(exc)
        inherited = getattr(exc, "error_record", None)  # a subgraph's original error
        error = inherited if inherited is not None else _error_record(exc, header, key)
        record = encode_outcome(error, key=key, writer=writer, usage=usage)
        atomic_write(paths.error(key), record)
        return EXIT_TASK_FAILED
    record = encode_outcome(data, key=key, writer=writer, usage=usage)
    if packed is not None:
        packed.append(record)
    else:
        atomic_write(paths.result(key), record)
    return EXIT_OK


def run_slurm_element(
    run_dir: str, array_job: str, slurm_index: int, env: Any = None, *, own_process: bool = False
) -> int:
    """Run Slurm element ``slurm_index`` of an array job: its one element, or, for an
    array job packed ``k`` to a Slurm element, elements ``slurm_index * k`` onwards, one
    after another (``cpus_per_task`` at a time in forked workers when the spec says
    ``workers`` > 1). A failing element does not stop the others: it writes its own
    error record; the results of the pack go to one file (``results/AJ_J.pack``) once
    every element has run. Each element's output starts with a marked line in the log.

    A pack's elements run in forked children (one per element with workers, else one for
    all of them): an element whose process dies without leaving its outcome (a segfault,
    a signal, ``os._exit()``) gets an error record from this process
    (:func:`_record_crash`: :class:`~lazyslurm.errors.ElementCrashedError`), and the
    elements after it run. Only Slurm's own stop (SIGTERM, SIGINT, SIGHUP: ``scancel``,
    the time limit) stops the pack; its finished results stay in ``AJ_J.partial``.

    Exit code: an unpacked element's own; a packed one's is 0 when every element left
    its outcome (a result, an error or a cancelled record), so that Slurm starts its
    dependents: those of a failed element cancel themselves (:class:`InputFailed`),
    the others run. 1 if an element left none, or the pack could not write its results
    (a full disk: said after a :data:`~lazyslurm.store.PACK_MARK` line in the log).

    ``own_process``: this process is the runner's own (``__main__``), so the child that
    ran a sequential pack returns from here and ends as the runner always has (threads
    joined, ``atexit`` hooks run); else (a caller's process) children leave with
    ``os._exit``."""
    spec = RunLayout(run_dir).spec(array_job)
    header = read_header(spec)
    pack = int(header.get("pack", 1))
    if pack == 1:
        return run_element(run_dir, array_job, slurm_index, env=env, header=header)
    first = slurm_index * pack
    members = range(first, min(first + pack, spec_size(spec, header)))
    workers = min(int(header.get("workers", 1)), len(members))
    paths = RunLayout(run_dir)
    job = _Pack(paths, array_job, slurm_index, header, env, own_process)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        job.fd = os.open(paths.partial_pack(array_job, slurm_index), flags, 0o600)
        try:  # a requeued pack starts it again
            job.keep(PARTIAL_HEAD)
            if header.get("requeue"):  # Slurm's checkpoint signals reach this process only
                _forward_checkpoint_signals(job.children)
            if workers > 1:
                records: list[bytes] = []
                code = _run_forked(job, members, workers, records)
                job.finish(records)
                return code
            return _run_sequential(job, members)
        finally:
            os.close(job.fd)
    except OSError as exc:  # the pack's own files: a full disk, a quota, a size limit
        _pack_failed(job, exc)
        return EXIT_TASK_FAILED


class _Pack:
    """One packed Slurm element being run: where its files are, and its partial file."""

    __slots__ = (
        "array_job",
        "children",
        "env",
        "fd",
        "header",
        "own_process",
        "paths",
        "slurm_index",
    )

    def __init__(
        self,
        paths: RunLayout,
        array_job: str,
        slurm_index: int,
        header: dict,
        env: Any,
        own_process: bool,
    ) -> None:
        self.paths, self.array_job, self.slurm_index = paths, array_job, slurm_index
        self.header, self.env, self.own_process = header, env, own_process
        self.fd = -1  # results/AJ_J.partial, open for appending records
        self.children: list[int] = []  # pids of the forked children running now

    def keep(self, record: bytes) -> None:
        """Append ``record`` to the partial file (each as it comes: a kill keeps them)."""
        view = memoryview(record)
        while view:
            view = view[os.write(self.fd, view) :]

    def run(self, index: int, records: list[bytes]) -> int:
        """Run element ``index`` here (its result record appended to ``records``)."""
        return _run_guarded(self.paths.root, self.array_job, index, self.env, self.header, records)

    def finish(self, records: list[bytes]) -> None:
        """Write the pack file of ``records``; the partial file is no longer needed."""
        paths = self.paths
        atomic_write(paths.pack(self.array_job, self.slurm_index), encode_pack(records))
        os.unlink(paths.partial_pack(self.array_job, self.slurm_index))

    def key(self, index: int) -> str:
        return read_element(self.paths.spec(self.array_job), index, self.header)[1][0]

    def has_outcome(self, key: str, kept: Any = ()) -> bool:
        """Whether element ``key`` left its outcome: a result (among ``kept``, the keys of
        the partial file), an error or a cancelled record."""
        if key in kept:
            return True
        return os.path.exists(self.paths.error(key)) or os.path.exists(self.paths.cancelled(key))


def _run_in_turn(job: _Pack, members: range, records: list[bytes]) -> int:
    """Run ``members`` one after another, then write the pack file (``records``: those
    of the elements before, if any)."""
    code = EXIT_OK
    for m in members:
        _section(job.array_job, m)
        mine: list[bytes] = []
        rc = job.run(m, mine)
        if rc == EXIT_NO_OUTCOME and _record_crash(job, m, _NO_OUTCOME):
            rc = EXIT_TASK_FAILED  # its runner failed (traceback above): now it has a record
        if rc not in _RECORDED:
            code = EXIT_TASK_FAILED
        for record in mine:
            job.keep(record)
        records.extend(mine)
    job.finish(records)
    return code


def _run_sequential(job: _Pack, members: range) -> int:
    """Run ``members`` one after another in one forked child, which writes the pack file.

    A child that dies before it is done crashed in the element it was running: the first
    one without an outcome. That element gets its error record here, and a new child runs
    the elements after it (with the records of those before, from the partial file). One
    fork per pack, nothing per element: an element that does not crash costs nothing
    (a pack of one element runs here: it has no mates to keep)."""
    records: list[bytes] = []
    todo = members
    if len(todo) == 1:
        return _run_in_turn(job, todo, records)
    while True:
        r, w = os.pipe()
        pid = _fork(job)
        if pid == 0:  # the child: the elements, then the pack file
            os.close(r)
            code = EXIT_NO_OUTCOME
            try:
                code = _run_in_turn(job, todo, records)
            except BaseException as exc:
                _die_if_interrupted(exc)
                _pack_failed(job, exc)  # the pack's own files (a full disk), not an element
                code = EXIT_TASK_FAILED
            try:
                os.write(w, bytes((code,)))  # done: the parent's sign that nothing crashed
                os.close(w)
            finally:
                if not job.own_process:
                    _flush()
                    os._exit(code)
            return code  # the runner's process ends as usual, with the pack's exit code
        os.close(w)
        job.children.append(pid)
        _, status, rusage = os.wait4(pid, 0)
        job.children.remove(pid)
        os.set_blocking(r, False)  # a grandchild of the task may hold the pipe open
        try:
            done = os.read(r, 1)
        except BlockingIOError:
            done = b""
        os.close(r)
        if done:
            if job.own_process:  # the child ended the elements' process (atexit hooks...):
                _flush()  # this one has nothing to finalize, and would run them twice
                os._exit(done[0])
            return done[0]
        _stop_if_stopped(status, job)
        # the child crashed: in the first element that left no outcome
        partial = job.paths.partial_pack(job.array_job, job.slurm_index)
        data = read_private(partial)
        index = pack_index(data, partial)  # whole records only: one cut short is dropped
        end = max((e for _, e in index.values()), default=len(PARTIAL_HEAD))
        os.ftruncate(job.fd, end)
        os.lseek(job.fd, end, os.SEEK_SET)
        records = [data[s:e] for s, e in index.values()]
        crashed = next((m for m in todo if not job.has_outcome(job.key(m), index)), None)
        if crashed is None:  # every element left its outcome: the end of the pack failed
            how = _how_it_ended(status).replace(" without a result", "")
            print(
                f"{PACK_MARK}{RunLayout.pack_name(job.array_job, job.slurm_index)} ===\n"
                f"lazyslurm: the pack's process {how} after its elements ran, before it "
                f"wrote their results",
                file=sys.stderr,
            )
            return EXIT_TASK_FAILED
        # its peak: the child's, since the crashed element reset it (no time: the child
        # ran the elements before it too)
        usage = _reaped_usage(job.key(crashed), rusage, None, job.env)
        if not _record_crash(job, crashed, _how_it_ended(status), usage):
            return EXIT_TASK_FAILED
        todo = range(crashed + 1, todo.stop)
        if not todo:
            job.finish(records)
            return EXIT_OK


def _fork(job: _Pack) -> int:
    """``os.fork()``, with this process's buffered output written first (not twice); the
    child handles signals as the runner does (not by forwarding them)."""
    _flush()
    pid = os.fork()
    if pid == 0 and job.header.get("requeue"):
        import _signal

        for signum in (_signal.SIGTERM, _signal.SIGUSR1):
            _signal.signal(signum, _signal.SIG_DFL)
    return pid


def _flush() -> None:
    sys.stdout.flush()
    sys.stderr.flush()


def _section(array_job: str, index: int) -> None:
    """The line that starts element ``index``'s part of a packed Slurm element's logs."""
    line = f"{SECTION_MARK}{array_job}[{index}] ===\n"
    sys.stdout.write(line)
    sys.stderr.write(line)


def _run_guarded(
    run_dir: str,
    array_job: str,
    index: int,
    env: Any,
    header: dict[str, Any],
    records: list[bytes],
) -> int:
    try:
        return run_element(run_dir, array_job, index, env=env, packed=records, header=header)
    except Exception:  # its spec could not be read, or its outcome not written
        import traceback

        traceback.print_exc()
        return EXIT_NO_OUTCOME


def _run_forked(job: _Pack, members: range, workers: int, records: list[bytes]) -> int:
    """Run ``members`` in forked children, ``workers`` at a time; each child sends its
    result record back through a pipe (``job.keep(record)`` as it comes, then ``records``
    in element order). A child that ends without its outcome gets an error record here."""
    import select
    import time

    code = EXIT_OK
    todo = list(members)
    running: dict[int, tuple[int, int, list[bytes]]] = {}  # read fd -> (pid, member, chunks)
    born: dict[int, float] = {}  # pid -> when it was forked
    got: dict[int, bytes] = {}
    while todo or running:
        while todo and len(running) < workers:
            m = todo.pop(0)
            r, w = os.pipe()
            pid = _fork(job)
            if pid == 0:  # the child: one element, then leave without cleanup
                rc = EXIT_NO_OUTCOME
                try:
                    os.close(r)
                    _section(job.array_job, m)
                    mine: list[bytes] = []
                    rc = job.run(m, mine)
                    view = memoryview(b"".join(mine))
                    while view:
                        view = view[os.write(w, view) :]
                except BaseException as exc:
                    _die_if_interrupted(exc)
                    import traceback

                    traceback.print_exc()
                finally:
                    _flush()
                    os._exit(rc)
            os.close(w)
            running[r] = (pid, m, [])
            born[pid] = time.time()
            job.children.append(pid)
        ready, _, _ = select.select(list(running), [], [])
        for r in ready:
            chunk = os.read(r, 1 << 20)
            if chunk:
                running[r][2].append(chunk)
                continue
            pid, m, chunks = running.pop(r)
            os.close(r)
            _, status, rusage = os.wait4(pid, 0)
            job.children.remove(pid)
            wall = time.time() - born.pop(pid)
            if chunks and os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_OK:
                got[m] = b"".join(chunks)
                job.keep(got[m])
                continue
            _stop_if_stopped(status, job)
            if os.waitstatus_to_exitcode(status) in _RECORDED and job.has_outcome(job.key(m)):
                continue  # it failed, and said so in its error (or cancelled) record
            usage = _reaped_usage(job.key(m), rusage, wall, job.env)
            if not _record_crash(job, m, _how_it_ended(status), usage):
                code = EXIT_TASK_FAILED
    records.extend(got[m] for m in sorted(got))
    return code


# ------------------------------------------------------------------- crashes and stops
# Slurm stops a job (scancel, its time limit, preemption) with SIGTERM (or SIGINT,
# SIGHUP: scancel --signal) to every process of it: a child that died of one of them was
# stopped, not crashed, and the pack stops too (its finished results stay in the partial
# file, for the next run).
_STOPS = ("SIGTERM", "SIGINT", "SIGHUP")


def _stop_if_stopped(status: int, job: _Pack) -> None:
    """When a child was stopped by Slurm, stop the pack: end the other children, then
    die of the same signal (Slurm records the job as it stopped it)."""
    if not os.WIFSIGNALED(status):
        return
    import _signal

    signum = os.WTERMSIG(status)
    if signum not in [getattr(_signal, name) for name in _STOPS]:
        return
    for pid in job.children:
        try:
            os.kill(pid, signum)
        except OSError:
            pass
    _die_of(signum)


def _die_of(signum: int) -> None:
    import _signal

    _flush()
    _signal.signal(signum, _signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # pragma: no cover - the signal ends the process first


def _die_if_interrupted(exc: BaseException) -> None:
    """A child whose element was stopped by a real SIGINT dies of it (so its parent sees
    a stop, never a crash of that element)."""
    if isinstance(exc, KeyboardInterrupt):
        import _signal

        _die_of(_signal.SIGINT)


def _forward_checkpoint_signals(children: list[int]) -> None:
    """``requeue=True``: Slurm's SIGUSR1 before the time limit goes to this process only
    (``--signal=B:USR1``), its SIGTERM may reach it first: pass both on to the children
    that run the elements (their checkpoint hooks), and wait for them."""
    import _signal

    def forward(signum: int, frame: Any) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except OSError:
                pass

    for signum in (_signal.SIGTERM, _signal.SIGUSR1):
        _signal.signal(signum, forward)


def _how_it_ended(status: int) -> str:
    """How a child ended without its outcome, from its wait status.

    >>> _how_it_ended(11), _how_it_ended(0)
    ('killed by signal 11 (SIGSEGV)', 'exited 0 without a result')
    >>> _how_it_ended(3 << 8)
    'exited with status 3 without a result'
    """
    if os.WIFSIGNALED(status):
        import signal

        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = "unknown"
        why = ": out of memory, or killed by hand" if name == "SIGKILL" else ""
        return f"killed by signal {signum} ({name}{why})"
    code = os.waitstatus_to_exitcode(status)
    return f"exited {'0' if code == 0 else f'with status {code}'} without a result"


def _stderr_tail(job: _Pack, index: int, lines: int = 20) -> str:
    """The last ``lines`` lines element ``index`` left in the pack's stderr log (from its
    mark on), when this process's stderr is that log file; else ``""``."""
    path = job.paths.log(job.array_job, job.slurm_index, "err")
    try:
        sys.stderr.flush()
        st, mine = os.stat(path, follow_symlinks=False), os.fstat(2)
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            return ""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - (1 << 16))
            text = os.pread(fd, size - start, start).decode(errors="replace")
        finally:
            os.close(fd)
    except OSError:
        return ""
    mark = f"{SECTION_MARK}{job.array_job}[{index}] ===\n"
    at = text.rfind(mark)
    if at >= 0:
        text = text[at + len(mark) :]
    return "\n".join(text.splitlines()[-lines:])


_NO_OUTCOME = "left no result, its runner failed (see the traceback in its stderr)"


def _record_crash(job: _Pack, index: int, how: str, usage: str = "") -> bool:
    """Write the error record of element ``index``, whose process ended without leaving
    its outcome (``how``: :func:`_how_it_ended`): an
    :class:`~lazyslurm.errors.ElementCrashedError` saying so, with the element's stderr
    tail and ``usage``, what its process used (:func:`_reaped_usage`). False (and said
    on stderr) if it could not be written."""
    from lazyslurm.errors import ElementCrashedError
    from lazyslurm.store import dumps

    try:
        key = job.key(index)
        tail = _stderr_tail(job, index)
        slurm = os.environ.get("SLURM_ARRAY_JOB_ID", "")
        where = f"Slurm job {slurm}_{job.slurm_index}" if slurm else "its packed Slurm element"
        msg = (
            f"crashed: {how} (element {index} of array job {job.array_job}, "
            f"in {where}); the other elements of its pack ran on"
        )
        exc = ElementCrashedError(
            msg, job_id=slurm, array_index=index, state="CRASHED", stderr_tail=tail, key=key
        )
        record = ErrorRecord(
            type_name="ElementCrashedError",
            module="lazyslurm.errors",
            message=msg,
            traceback=tail,
            task=job.header.get("task", ""),
            key=key,
            exception=dumps(exc),
        )
        writer = _writer(job.paths.root, job.array_job, index)
        data = encode_outcome(record.encode(), key=key, writer=writer, usage=usage)
        atomic_write(job.paths.error(key), data)
    except Exception:
        import traceback

        print(f"lazyslurm: {job.array_job}[{index}] crashed; its error record:", file=sys.stderr)
        traceback.print_exc()
        return False
    print(f"lazyslurm: {job.array_job}[{index}] (key {key}) {msg}", file=sys.stderr)
    return True


def _pack_failed(job: _Pack, exc: BaseException) -> None:
    """Say, in the pack's own part of the log, that it could not run to its end."""
    import traceback

    name = RunLayout.pack_name(job.array_job, job.slurm_index)
    mark = f"{PACK_MARK}{name} ===\n"
    try:
        sys.stdout.write(mark)
        sys.stderr.write(mark)
        if isinstance(exc, OSError):
            print(
                f"lazyslurm: could not write the results of pack {name} "
                f"({type(exc).__name__}: {exc}); the results kept so far are in "
                f"{job.paths.partial_pack(job.array_job, job.slurm_index)} (cache=True "
                f"finds them): free space where the run directory is, then run again",
                file=sys.stderr,
            )
        traceback.print_exception(exc)
        _flush()
    except Exception:  # stderr itself may be on the full disk
        pass


def run_rank(run_dir: str, array_job: str, index: int, env: Any) -> int:
    """Run one rank of a multi-process element (started by ``srun`` on every rank).

    Writes ``ranks/KEY/RANK.pkl`` (the value, when it is kept), ``RANK.ok`` (success
    of a rank whose value is dropped) or ``RANK.err`` (an error record);
    :func:`gather` turns them into the element's outcome once every rank has ended.
    """
    paths = RunLayout(run_dir)
    header, element = read_element(paths.spec(array_job), index)
    key = element[0]
    rank = int(env.get("SLURM_PROCID", "0"))
    make = _context_maker(run_dir, array_job, index, key, env, ranks=True)
    data, exc = _execute(paths, header, (array_job, index), element, make, one_process=False)
    where = paths.rank_dir(key)
    os.makedirs(where, mode=0o700, exist_ok=True)
    if exc is not None:
        import traceback

        traceback.print_exception(exc)
        atomic_write(paths.rank_file(key, rank, "err"), _error_record(exc, header, key, rank))
        return EXIT_TASK_FAILED
    if rank == 0 or header.get("gather") == "all":
        atomic_write(paths.rank_file(key, rank, "pkl"), data)
    else:
        atomic_write(paths.rank_file(key, rank, "ok"), b"")
    return EXIT_OK


def _mtime(path: str) -> int:
    return os.stat(path).st_mtime_ns


def gather(run_dir: str, array_job: str, index: int, world_size: int) -> int:
    """After ``srun``: the element's result from its ranks, or the error of the rank
    that failed first (the message names it). Returns the process exit code."""
    import shutil

    paths = RunLayout(run_dir)
    record_calls(paths.calls, {"srun": world_size})  # srun started one task per rank
    header, element = read_element(paths.spec(array_job), index)
    key = element[0]
    where = paths.rank_dir(key)
    writer = _writer(paths.root, array_job, index)
    names = set(os.listdir(where)) if os.path.isdir(where) else set()
    name = RunLayout.rank_file_name
    errors = [r for r in range(world_size) if name(r, "err") in names]
    try:
        if errors:
            first = min(errors, key=lambda r: (_mtime(paths.rank_file(key, r, "err")), r))
            record = ErrorRecord.decode(read_private(paths.rank_file(key, first, "err")))
            others = f"; {len(errors) - 1} other rank(s) failed too" if len(errors) > 1 else ""
            record.message = f"{record.message} [on rank {first} of {world_size}{others}]"
            data = record.encode()
            atomic_write(paths.error(key), encode_outcome(data, key=key, writer=writer))
            return EXIT_TASK_FAILED
        missing = [
            r
            for r in range(world_size)
            if name(r, "pkl") not in names and name(r, "ok") not in names
        ]
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
            print(
                f"lazyslurm: rank(s) {shown} of {world_size} ended without a result "
                f"(crashed, killed or never started; see the log above)",
                file=sys.stderr,
            )
            return EXIT_TASK_FAILED
        if header.get("gather") == "all":
            values = [
                decode_value(read_private(paths.rank_file(key, r, "pkl")))
                for r in range(world_size)
            ]
            data = encode_value(values)
        else:
            data = read_private(paths.rank_file(key, 0, "pkl"))
        atomic_write(paths.result(key), encode_outcome(data, key=key, writer=writer))
        return EXIT_OK
    finally:
        shutil.rmtree(where, ignore_errors=True)


def serve(stdin: Any, proto_fd: int) -> None:
    """Worker loop for the local backend: one ``RUN_DIR\\tARRAY_JOB\\tINDEX`` per line.

    Each element's stdout/stderr go to its log files, as under Slurm; the exit code goes
    back on ``proto_fd``.
    """
    import traceback

    saved = os.dup(1), os.dup(2)
    for line in stdin:
        _SIGINT["seen"] = False  # a Ctrl-C that stopped the element before is no news
        run_dir, array_job, index_s = line.rstrip("\n").split("\t")
        index = int(index_s)
        paths = RunLayout(run_dir)
        os.environ["SLURM_ARRAY_TASK_ID"] = index_s
        out = os.open(
            paths.log(array_job, index, "out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
        )
        err = os.open(
            paths.log(array_job, index, "err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600
        )
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        try:
            code = run_element(run_dir, array_job, index)
        except BaseException:  # a broken spec or store: report, keep serving
            traceback.print_exc()
            code = 2
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
        try:
            os.write(proto_fd, f"{code}\n".encode())
        except BrokenPipeError:  # the client is gone: nobody to serve
            return
