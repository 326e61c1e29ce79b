"""Plan -> bytes of the run directory's manifest and spec files. Pure: returns bytes.

Serialisation is checked here, at compute time, before anything is submitted: a
function or argument that cannot be pickled raises :class:`SerializationError` naming it.
"""

from __future__ import annotations

import json
import pickle
import sys
import sysconfig
import types
from collections.abc import Mapping
from typing import Any

import cloudpickle

from lazyslurm.errors import SerializationError
from lazyslurm.graph.core import Job, refusing_hidden_jobs, safe_repr
from lazyslurm.planning.planner import Plan
from lazyslurm.store import MANIFEST, OUTPUTS, SUMMARY, FunctionRef, encode_spec

__all__ = ["encode_run", "manifest"]

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
    """The task's import path, when importing it there gives this very task."""
    module, qualname = task.__module__, task.__qualname__
    mod = sys.modules.get(module or "")
    if mod is None or module == "__main__" or "<" in qualname:
        return None
    obj: Any = mod
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
    if obj is not task and getattr(obj, "unwrapped", None) is not task.unwrapped:
        return None
    return FunctionRef(module, qualname)


def _dump_element(job: Job) -> bytes:
    payload = (job.key, job._args, job._kwargs)
    try:
        return pickle.dumps(payload, protocol=5)
    except Exception:
        pass
    try:
        return cloudpickle.dumps(payload)
    except Exception as exc:
        raise _name_unpicklable(job, exc) from exc


def _name_unpicklable(job: Job, exc: Exception) -> SerializationError:
    candidates = [(f"positional argument {i}", a) for i, a in enumerate(job._args)]
    candidates += [(f"keyword argument {k!r}", v) for k, v in job._kwargs.items()]
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


def manifest(plan: Plan, *, run_id: str, outputs: list[str], meta: Mapping[str, Any]) -> dict:
    """The plan as JSON-able data: enough to re-attach, show status and draw it."""
    return {
        "version": 1,
        "run_id": run_id,
        **meta,
        "outputs": outputs,
        "external": dict(plan.external),
        "array_jobs": [
            {
                "id": aj.id,
                "name": aj.name,
                "size": aj.size,
                "stage": aj.stage,
                "chunk": aj.chunk,
                "nchunks": aj.nchunks,
                "throttle": aj.throttle,
                "resources": aj.resources.as_options(),
                "dependencies": [[kind, up.id] for kind, up in aj.dependencies],
                "after": [up.id for up in aj.after],
                "keys": [j.key for j in aj.elements],
            }
            for aj in plan.array_jobs
        ],
    }


def encode_run(
    plan: Plan,
    *,
    run_id: str,
    outputs: list[str],
    meta: Mapping[str, Any] | None = None,
    by_value: bool = False,
    templates: list[Any] | None = None,
) -> dict[str, bytes]:
    """All files of a new run directory, relative path -> bytes.

    ``by_value`` ships the functions' own (non-installed) modules by value, for clusters
    that do not share the client's file system. ``templates`` (what ``compute`` returns,
    with placeholders) are kept so that a re-attached run can give the same result.
    """
    with refusing_hidden_jobs():  # a Job pickled here was hidden from the planner
        return _encode_run(plan, run_id, outputs, meta, by_value, templates)


def _encode_run(
    plan: Plan,
    run_id: str,
    outputs: list[str],
    meta: Mapping[str, Any] | None,
    by_value: bool,
    templates: list[Any] | None,
) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    for aj in plan.array_jobs:
        func = aj.task.unwrapped
        shipped: Any = func if by_value else _by_reference(aj.task) or func
        external = {}
        for job in aj.elements:
            for dep in job._deps:
                if dep.key in plan.external:
                    external[dep.key] = plan.external[dep.key]
        header = {
            "func": shipped,
            "task": aj.name,
            "retries": aj.resources.retries,
            "external": external,
        }
        blobs = [_dump_element(job) for job in aj.elements]
        mods = _by_value_modules(func) if by_value else []
        for mod in mods:
            cloudpickle.register_pickle_by_value(mod)
        try:
            files[f"specs/{aj.id}.spec"] = encode_spec(header, blobs)
        except Exception as exc:
            msg = f"the function of task {aj.name!r} cannot be pickled: {exc}"
            raise SerializationError(msg) from exc
        finally:
            for mod in mods:
                cloudpickle.unregister_pickle_by_value(mod)
    data = manifest(plan, run_id=run_id, outputs=outputs, meta=meta or {})
    files[MANIFEST] = json.dumps(data, sort_keys=True).encode()
    summary = {
        "run_id": run_id,
        **(meta or {}),
        "tasks": plan.nodes,
        "array_jobs": len(plan.array_jobs),
    }
    files[SUMMARY] = json.dumps(summary, sort_keys=True).encode()
    if templates is not None:
        try:
            files[OUTPUTS] = cloudpickle.dumps(templates)
        except Exception as exc:
            msg = f"the values passed to compute/submit cannot be pickled: {exc}"
            raise SerializationError(msg) from exc
    return files
