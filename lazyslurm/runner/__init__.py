"""The compute-node entry point: run one array element and store its outcome.

``python -m lazyslurm.runner RUN_DIR ARRAY_JOB`` runs element ``$SLURM_ARRAY_TASK_ID``.
Imports only the standard library, :mod:`lazyslurm.store`, :mod:`lazyslurm.errors` and
cloudpickle (only if a payload needs it): this module starts once per task on every
compute node.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from typing import Any

from lazyslurm.store import (
    FunctionRef,
    MapItem,
    Redirect,
    Ref,
    RefList,
    RunLayout,
    atomic_write,
    decode_outcome,
    dumps,
    encode_outcome,
    read_element,
    read_private,
)

__all__ = ["EXIT_OK", "EXIT_TASK_FAILED", "resolve", "run_element"]

EXIT_OK = 0
EXIT_TASK_FAILED = 1
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
            value = value[step] if kind == "item" else getattr(value, step)
        return value
    if t is RefList:
        return [load(k) for k in obj.keys]
    if t is list:
        return [resolve(x, load) for x in obj]
    if t is tuple:
        return tuple(resolve(x, load) for x in obj)
    if t is dict:
        return {k: resolve(v, load) for k, v in obj.items()}
    if t is set or t is frozenset:
        return t(resolve(x, load) for x in obj)
    return obj


def _loader(paths: RunLayout, external: dict[str, str | None]) -> Any:
    """``load(key)``: an upstream result, verified before it is unpickled (a corrupt or
    foreign record raises CorruptResultError naming that input, its key and path).
    The result of a task that returned a lazy value is a :class:`Redirect`: it is
    followed to the results of the subgraph (docs/dynamic.md)."""
    cache: dict[str, Any] = {}
    here = paths.root.rsplit("/", 1)[-1]

    def read(key: str, run: str | None) -> Any:
        path = paths.result(key, run=None if run == here else run)
        _, payload = decode_outcome(read_private(path), key=key, path=path, run=run or here)
        value = pickle.loads(payload)
        if type(value) is Redirect:
            runs = value.runs
            value = resolve(value.template, lambda k: read(k, runs.get(k)))
        return value

    def load(key: str) -> Any:
        try:
            return cache[key]
        except KeyError:
            pass
        value = cache[key] = read(key, external.get(key))
        return value

    return load


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


def _error_record(exc: BaseException, header: dict[str, Any], key: str) -> bytes:
    record = {
        "type_name": type(exc).__qualname__,
        "module": type(exc).__module__,
        "message": (
            f"the task called sys.exit({exc.code!r}) instead of returning a value"
            if isinstance(exc, SystemExit)
            else str(exc)
        ),
        "traceback": "".join(traceback.format_exception(exc)),
        "task": header.get("task", ""),
        "key": key,
        "exception": None,
    }
    try:
        record["exception"] = dumps(exc)
    except Exception:
        pass
    return dumps(record)


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


def run_element(run_dir: str, array_job: str, index: int) -> int:
    """Run one element; write its result or error record. Returns the process exit code."""
    paths = RunLayout(run_dir)
    header, (key, args, kwargs) = read_element(paths.spec(array_job), index)
    load = _loader(paths, header.get("external", {}))
    writer = _writer(paths.root, array_job, index)
    # where this element runs, for code that asks (a @workflow's context); restored after
    # (the sync backend runs elements in the caller's process)
    saved = os.environ.get(ELEMENT_ENV)
    os.environ[ELEMENT_ENV] = f"{paths.root}\t{array_job}\t{index}\t{key}"
    try:
        return _run(paths, header, key, args, kwargs, load, writer, array_job, index)
    finally:
        if saved is None:
            os.environ.pop(ELEMENT_ENV, None)
        else:
            os.environ[ELEMENT_ENV] = saved


def _run(
    paths: RunLayout,
    header: dict[str, Any],
    key: str,
    args: Any,
    kwargs: Any,
    load: Any,
    writer: str,
    array_job: str,
    index: int,
) -> int:
    attempts = 1 + int(header.get("retries", 0))
    for attempt in range(attempts):
        try:
            func = _load_function(header["func"], header.get("task", ""))
            fargs, fkwargs = call_args(args, kwargs, load)
            result = func(*fargs, **fkwargs)
            if returned_lazy(result):  # plan and submit the subgraph from here
                result = _expand(result, paths, array_job, index, key, header)
            data = dumps(result)
        except (Exception, SystemExit) as exc:  # the task's own failure, or sys.exit()
            inherited = getattr(exc, "error_record", None)  # a subgraph's original error
            if inherited is not None:
                traceback.print_exc()
                record = encode_outcome(inherited, key=key, writer=writer)
                atomic_write(paths.error(key), record)
                return EXIT_TASK_FAILED
            if attempt + 1 < attempts:
                print(f"lazyslurm: attempt {attempt + 1} of {key} failed: {exc!r}", file=sys.stderr)
                continue
            traceback.print_exc()
            record = encode_outcome(_error_record(exc, header, key), key=key, writer=writer)
            atomic_write(paths.error(key), record)
            return EXIT_TASK_FAILED
        atomic_write(paths.result(key), encode_outcome(data, key=key, writer=writer))
        return EXIT_OK
    return EXIT_TASK_FAILED  # pragma: no cover - the loop always returns


def serve(stdin: Any, proto_fd: int) -> None:
    """Worker loop for the local backend: one ``RUN_DIR\\tARRAY_JOB\\tINDEX`` per line.

    Each element's stdout/stderr go to its log files, as under Slurm; the exit code goes
    back on ``proto_fd``.
    """
    saved = os.dup(1), os.dup(2)
    for line in stdin:
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
