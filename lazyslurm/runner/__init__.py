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
    Ref,
    RefList,
    RunLayout,
    atomic_write,
    dumps,
    read_element,
)

__all__ = ["EXIT_OK", "EXIT_TASK_FAILED", "resolve", "run_element"]

EXIT_OK = 0
EXIT_TASK_FAILED = 1


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
    cache: dict[str, Any] = {}

    def load(key: str) -> Any:
        try:
            return cache[key]
        except KeyError:
            pass
        with open(paths.result(key, run=external.get(key)), "rb") as fh:
            value = cache[key] = pickle.load(fh)
        return value

    return load


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
        "message": str(exc),
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


def run_element(run_dir: str, array_job: str, index: int) -> int:
    """Run one element; write its result or error file. Returns the process exit code."""
    paths = RunLayout(run_dir)
    header, (key, args, kwargs) = read_element(paths.spec(array_job), index)
    load = _loader(paths, header.get("external", {}))
    func = header["func"]
    if type(func) is FunctionRef:
        func = func.load()
    if header.get("requeue") and os.environ.get("SLURM_JOB_ID"):
        from lazyslurm.runner import checkpoint

        checkpoint.clear()
        checkpoint.install()
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        if restarts != "0":
            print(f"lazyslurm: attempt {int(restarts) + 1} of {key}", file=sys.stderr)
    attempts = 1 + int(header.get("retries", 0))
    for attempt in range(attempts):
        try:
            fargs, fkwargs = call_args(args, kwargs, load)
            result = func(*fargs, **fkwargs)
            data = dumps(result)
        except Exception as exc:  # the task's own failure: recorded, re-raised on the client
            if attempt + 1 < attempts:
                print(f"lazyslurm: attempt {attempt + 1} of {key} failed: {exc!r}", file=sys.stderr)
                continue
            traceback.print_exc()
            atomic_write(paths.error(key), _error_record(exc, header, key))
            return EXIT_TASK_FAILED
        atomic_write(paths.result(key), data)
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
