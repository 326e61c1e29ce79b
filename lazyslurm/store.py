"""The run directory: its layout, placeholders, and atomic reads and writes.

Imported by the runner on every compute node: it depends only on the standard library,
:mod:`lazyslurm.errors` and, only when a payload was pickled by value, cloudpickle (plain
:mod:`pickle` reads what cloudpickle writes and imports it on demand).

Layout of one run (``WORKDIR/runs/RUN_ID``, mode 0700)::

    manifest.json          the plan as data (written by the client)
    summary.json           id, created, label, task count (for listing runs)
    outputs.pkl            what compute() returns, with placeholders (for re-attach)
    jobids                 Slurm job id of each array job (written at submission)
    specs/AJ.spec          one per array job: function + per-element arguments (indexed)
    results/KEY.pkl        one per finished node, written atomically
    errors/KEY.pkl         one per failed node: exception, type name, traceback text
    logs/AJ_INDEX.out|err  stdout/stderr of one element

Results are addressed by node key; a reference to a node finished in an earlier run
names that run (``external`` in the spec header).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ElementSpec",
    "MapItem",
    "Rebuild",
    "Ref",
    "RefList",
    "Restore",
    "RunPaths",
    "atomic_write",
    "read_element",
    "read_pickle",
    "write_spec",
]

MANIFEST = "manifest.json"
SUMMARY = "summary.json"  # small: id, created, label, task count (for listing runs)
OUTPUTS = "outputs.pkl"  # what compute() returns, with placeholders (for re-attach)
JOBIDS = "jobids"  # array job id -> Slurm job id, written by the submission script
SPEC_MAGIC = b"LZSPEC1\n"


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


ElementSpec = tuple  # (key, args, kwargs): what one array element runs


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
        import importlib

        obj: Any = importlib.import_module(self.module)
        for part in self.qualname.split("."):
            obj = getattr(obj, part)
        return getattr(obj, "unwrapped", obj)  # a Task stands at that name


class RunPaths:
    """Paths inside one run directory. Pure path arithmetic, no I/O.

    >>> p = RunPaths("/w/runs/r1")
    >>> str(p.result("f-0a1b")), str(p.log("aj0", 3, "err"))
    ('/w/runs/r1/results/f-0a1b.pkl', '/w/runs/r1/logs/aj0_3.err')
    >>> str(p.result("g-1", run="r0"))
    '/w/runs/r0/results/g-1.pkl'
    """

    __slots__ = ("root",)

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def spec(self, array_job: str) -> Path:
        return self.root / "specs" / f"{array_job}.spec"

    def result(self, key: str, run: str | None = None) -> Path:
        root = self.root if run is None else self.root.parent / run
        return root / "results" / f"{key}.pkl"

    def error(self, key: str) -> Path:
        return self.root / "errors" / f"{key}.pkl"

    def log(self, array_job: str, index: int, stream: str) -> Path:
        return self.root / "logs" / f"{array_job}_{index}.{stream}"

    def make_dirs(self) -> None:
        """Create the run directory (0700) and its sub-directories."""
        self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        for sub in ("specs", "results", "errors", "logs"):
            (self.root / sub).mkdir(mode=0o700, exist_ok=True)


def default_workdir() -> Path:
    """Where runs are kept by default: ``$LAZYSLURM_WORKDIR`` or ``~/.lazyslurm``."""
    return Path(os.environ.get("LAZYSLURM_WORKDIR") or Path.home() / ".lazyslurm")


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def dumps(obj: Any) -> bytes:
    """Pickle with the standard library; fall back to cloudpickle (lambdas, closures, ...)."""
    try:
        return pickle.dumps(obj, protocol=5)
    except Exception:
        import cloudpickle

        return cloudpickle.dumps(obj)


def read_pickle(path: str | os.PathLike[str]) -> Any:
    with open(path, "rb") as fh:
        return pickle.load(fh)


# --------------------------------------------------------------------------- spec files
# One file per array job: a header blob (function, names, external refs) and one blob per
# element, with an offset table so an element reads only its own arguments: O(1) per
# element instead of unpickling the whole array in every one of N tasks.


def encode_spec(header: dict[str, Any], element_blobs: Sequence[bytes]) -> bytes:
    """Pack a pickled header and already-pickled element blobs into one spec file."""
    import cloudpickle  # client side only: the runner never needs it to read

    header_blob = cloudpickle.dumps(header)
    blobs = [header_blob, *element_blobs]
    offsets = [0]
    for blob in blobs:
        offsets.append(offsets[-1] + len(blob))
    buf = io.BytesIO()
    buf.write(SPEC_MAGIC)
    buf.write(struct.pack("<Q", len(blobs)))
    buf.write(struct.pack(f"<{len(offsets)}Q", *offsets))
    for blob in blobs:
        buf.write(blob)
    return buf.getvalue()


def write_spec(
    path: str | os.PathLike[str], header: dict[str, Any], elements: Iterable[bytes]
) -> None:
    atomic_write(path, encode_spec(header, list(elements)))


def read_element(path: str | os.PathLike[str], index: int) -> tuple[dict[str, Any], ElementSpec]:
    """Read the header and element ``index`` of a spec file."""
    with open(path, "rb") as fh:
        if fh.read(len(SPEC_MAGIC)) != SPEC_MAGIC:
            msg = f"{path} is not a lazyslurm spec file"
            raise ValueError(msg)
        (count,) = struct.unpack("<Q", fh.read(8))
        if not 0 <= index < count - 1:
            msg = f"element {index} out of range for {path} ({count - 1} elements)"
            raise IndexError(msg)
        offsets = struct.unpack(f"<{count + 1}Q", fh.read(8 * (count + 1)))
        base = fh.tell()
        header = pickle.loads(fh.read(offsets[1]))
        fh.seek(base + offsets[index + 1])
        element = pickle.loads(fh.read(offsets[index + 2] - offsets[index + 1]))
    return header, element


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode())


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, "rb") as fh:
        return json.load(fh)
