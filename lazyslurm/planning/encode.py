"""Plan -> bytes of the run directory's manifest and spec files. Pure: returns bytes.

Serialisation is checked here, at compute time, before anything is submitted: a
function or argument that cannot be pickled raises :class:`SerializationError` naming it.
"""

from __future__ import annotations

import json
import sys
import sysconfig
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import cloudpickle

from lazyslurm.errors import CorruptRunError, SerializationError
from lazyslurm.graph.core import ArrayNode, Job, refusing_hidden_jobs, safe_repr
from lazyslurm.graph.signature import context_parameter
from lazyslurm.planning.planner import ArrayJob, Plan, compact_spans
from lazyslurm.store import (
    INSIDE,
    ElementKeys,
    FunctionRef,
    encode_spec,
    encode_value,
    function_data,
)

__all__ = ["encode_run", "manifest", "read_manifest"]

_STDLIB_PREFIXES = tuple(
    {
        sysconfig.get_paths()["stdlib"],
        sysconfig.get_paths()["purelib"],
        sysconfig.get_paths()["platlib"],
    }
)


def _by_value_modules(func: Any) -> list[types.ModuleType]:
    """User modules (not installed, not stdlib) that must travel by value."""
    name = getattr(func, "__module__", None)
    mod = sys.modules.get(name or "")
    if mod is None or name == "__main__" or name.split(".")[0] == "lazyslurm":
        return []
    path = getattr(mod, "__file__", None) or ""
    if not path or path.startswith(_STDLIB_PREFIXES):
        return []
    return [mod]


def _by_reference(task: Any) -> FunctionRef | None:
    """The task's import path, when importing it there gives this very task (or its very
    function: ``task(module.f)`` of a plain importable function goes by reference too)."""
    module, qualname = task.__module__, task.__qualname__
    mod = sys.modules.get(module or "")
    if mod is None or module == "__main__" or "<" in qualname:
        return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is task or obj is task.unwrapped:
        return FunctionRef(module, qualname)
    if getattr(obj, "unwrapped", None) is not task.unwrapped:
        return None
    return FunctionRef(module, qualname)


def _importer(by_value: Sequence[types.ModuleType]) -> Callable[[types.ModuleType], bool]:
    """Whether a module a function's global names imports where the task runs: built
    in, or from the standard library or site-packages, and not shipped by value."""
    shipped = {m.__name__ for m in by_value}

    def importable(mod: types.ModuleType) -> bool:
        name = mod.__name__
        if name == "__main__" or name in shipped or name.split(".")[0] in shipped:
            return False
        path = getattr(mod, "__file__", None)
        return path is None or path.startswith(_STDLIB_PREFIXES)

    return importable


def _dump_element(job: Job, where: dict[str, str] | None = None) -> bytes:
    """One element: ``(key, args, kwargs)``, and the locations of its inputs kept in
    pack files (``{key: ":AJ_J"}`` in this run, ``"RUN:AJ_J"`` in another) if any."""
    payload: tuple = (job.key, job.args, job.kwargs)
    if where:
        payload = (*payload, where)
    try:
        return encode_value(payload)  # marshal for plain data: no pickle on the node
    except Exception:
        pass
    try:
        return cloudpickle.dumps(payload)
    except Exception as exc:
        raise _name_unpicklable(job, exc) from exc


def _name_unpicklable(job: Job, exc: Exception) -> SerializationError:
    candidates = [(f"positional argument {i}", a) for i, a in enumerate(job.args)]
    candidates += [(f"keyword argument {k!r}", v) for k, v in job.kwargs.items()]
    for label, value in candidates:
        try:
            cloudpickle.dumps(value)
        except Exception as inner:
            msg = (
                f"{label} of task {job.task.name!r} (key {job.key}) cannot be pickled: "
                f"{type(value).__name__} value {_short(value)} ({inner})"
            )
            return SerializationError(msg)
    msg = f"the arguments of task {job.task.name!r} (key {job.key}) cannot be pickled: {exc}"
    return SerializationError(msg)


def _short(value: Any) -> str:
    return safe_repr(value, 60)  # never raises, even for a user object whose repr does


_HERE: Any = object()  # a key computed by this plan (not in plan.external)


def manifest(plan: Plan, *, run_id: str, outputs: list[str], meta: Mapping[str, Any]) -> dict:
    """The plan as JSON-able data: enough to re-attach, show status and draw it."""
    return {
        "version": 2,
        "run_id": run_id,
        **meta,
        "outputs": outputs,
        "external": dict(plan.external),
        "array_jobs": [aj.to_manifest() for aj in plan.array_jobs],
    }


def read_manifest(
    data: bytes, *, run: str = "", path: str = ""
) -> tuple[dict[str, Any], tuple[ArrayJob, ...]]:
    """The manifest's fields and its array jobs, as written by :func:`manifest`.

    A truncated or damaged manifest raises :class:`CorruptRunError` naming ``path``.
    """
    try:
        fields = json.loads(data)
        return fields, tuple(ArrayJob.from_manifest(e) for e in fields["array_jobs"])
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        what = "empty" if not data.strip() else f"damaged ({type(exc).__name__}: {exc})"
        where = path or "manifest.json"
        folder = where.rpartition("/")[0] or "the run directory"
        msg = (
            f"the manifest of run {run or '?'} ({where}, {len(data)} bytes) is {what}, "
            f"truncated perhaps by a full disk or an interrupted copy: the run cannot be shown "
            f"or re-attached (its results stay usable by cache=True); once its jobs have "
            f"ended, remove it: rm -r {folder}"
        )
        raise CorruptRunError(msg, run=run, path=where) from exc


def encode_run(
    plan: Plan,
    *,
    run_id: str,
    outputs: list[str],
    meta: Mapping[str, Any] | None = None,
    by_value: bool = False,
    templates: list[Any] | None = None,
    modules_by_value: Callable[[Any, Any], Sequence[types.ModuleType]] | None = None,
) -> dict[str, bytes]:
    """All files of a new run directory, relative path -> bytes.

    ``by_value`` ships the functions' own (non-installed) modules by value, for clusters
    that do not share the client's file system; ``modules_by_value(resources, func)``,
    when given, says which modules instead (the backend's packaging mode).
    ``templates`` (what ``compute`` returns, with placeholders) are kept so that a
    re-attached run can give the same result.
    """
    with refusing_hidden_jobs():  # a Job pickled here was hidden from the planner
        return _encode_run(plan, run_id, outputs, meta, by_value, templates, modules_by_value)


def _encode_run(
    plan: Plan,
    run_id: str,
    outputs: list[str],
    meta: Mapping[str, Any] | None,
    by_value: bool,
    templates: list[Any] | None,
    modules_by_value: Callable[[Any, Any], Sequence[types.ModuleType]] | None,
) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    spans = compact_spans(plan)  # a compact map's key -> its array jobs, in order
    for aj in plan.array_jobs:
        task, elements = plan.task(aj), plan.elements(aj)
        func = task.unwrapped
        shipped: Any = func if by_value else _by_reference(task) or func
        external = {}
        wheres: list[dict[str, str] | None] = []
        compact = type(aj.keys) is ElementKeys
        for job in () if compact else elements:
            where: dict[str, str] | None = None
            for dep in job.deps:
                if type(dep) is ArrayNode:  # a compact map, whole: its chunks, in order
                    where = where or {}
                    ids = spans.get(dep.key)
                    if ids is not None:
                        where[dep.key] = "span:" + ",".join(ids)
                    else:  # finished in an earlier run: "RUN:span=AJ,AJ"
                        run, _, ids_at = (plan.external.get(dep.key) or "").partition(":span=")
                        where[dep.key] = f"span:{run}:{ids_at}"
                    continue
                at = plan.external.get(dep.key, _HERE)
                if at is not _HERE:
                    if at is not None and ":" in at:  # in a pack file of an earlier run
                        where = where or {}
                        where[dep.key] = at
                    else:
                        external[dep.key] = at
                    continue
                up, i = plan.location[dep.key]
                if up.pack > 1:  # in a pack file of this run
                    where = where or {}
                    where[dep.key] = ":" + up.location(i, "").partition(":")[2]
            wheres.append(where)
        if not by_value:
            mods = []
        elif modules_by_value is not None:
            mods = list(modules_by_value(aj.resources, func))
        else:
            mods = _by_value_modules(func)
        # a function by value that plain data can describe travels as such (the node
        # then reads its spec without _pickle or cloudpickle)
        lite = function_data(func, _importer(mods)) if shipped is func else None
        header = {
            "func": None if lite is not None else shipped,
            **({"func_lite": lite} if lite is not None else {}),
            "task": aj.name,
            "token": task.token[:12],  # the code's identity, in its usage records
            "retries": aj.resources.retries,
            "requeue": aj.resources.requeue,
            "external": external,
        }
        if aj.pack > 1:
            header["pack"] = aj.pack
            header["workers"] = aj.resources.cpus_per_task or 1
        wants = context_parameter(func)
        if wants is not None:
            header["context"] = wants  # the runner fills it with a JobContext
        if aj.resources.gather is not None:
            header["gather"] = aj.resources.gather
        if compact:  # the items' description, not one blob per element
            header["compact"] = (aj.keys.recipe, aj.keys.desc)  # type: ignore[attr-defined]
            blobs: list[bytes] = []
        else:
            blobs = [_dump_element(job, w) for job, w in zip(elements, wheres, strict=True)]
        for mod in mods:
            cloudpickle.register_pickle_by_value(mod)
        try:
            files[INSIDE.spec(aj.id)] = encode_spec(header, blobs)
        except Exception as exc:
            msg = f"the function of task {aj.name!r} cannot be pickled: {exc}"
            raise SerializationError(msg) from exc
        finally:
            for mod in mods:
                cloudpickle.unregister_pickle_by_value(mod)
    data = manifest(plan, run_id=run_id, outputs=outputs, meta=meta or {})
    files[INSIDE.manifest] = json.dumps(data, sort_keys=True).encode()
    summary = {
        "run_id": run_id,
        **(meta or {}),
        "tasks": plan.nodes,
        "array_jobs": len(plan.array_jobs),
    }
    files[INSIDE.summary] = json.dumps(summary, sort_keys=True).encode()
    if templates is not None:
        try:
            files[INSIDE.outputs] = cloudpickle.dumps(templates)
        except Exception as exc:
            msg = f"the values passed to compute/submit cannot be pickled: {exc}"
            raise SerializationError(msg) from exc
    return files
