"""The run directory: its layout, placeholders, and atomic reads and writes.

Imported by the runner on every compute node: it depends only on the standard library,
:mod:`lazyslurm.errors` and, only when a payload was pickled by value, cloudpickle (plain
:mod:`pickle` reads what cloudpickle writes and imports it on demand).

Layout of one run (``WORKDIR/runs/RUN_ID``, mode 0700), known only to :class:`RunLayout`::

    manifest.json          the plan as data: one record per array job (written by the client)
    summary.json           id, created, label, task count (for listing runs)
    outputs.pkl            what compute() returns, with placeholders (for re-attach)
    jobids                 Slurm job id of each array job (written at submission)
    submit.sh, submit.err  the all-or-nothing submission script and its stderr (Slurm)
    client.pid             host and pid of the owner of a local run, until it ends
    cancel.request         another process asks that owner to cancel (local runs)
    specs/AJ.spec          one per array job: function + per-element arguments (indexed)
    jobs/AJ.sh             one batch script per array job (Slurm)
    results/KEY.pkl        one per finished node, written atomically
    errors/KEY.pkl         one per failed node: exception, type name, traceback text
    logs/AJ_INDEX.out|err  stdout/stderr of one element
    shared/                a directory every element and rank may write to (JobContext)
    ranks/KEY/             a multi-rank element's per-rank outcomes, until gathered
    dynamic/AJ.INDEX.json  a subgraph a task returned (dynamic expansion): its array jobs,
                           Slurm ids, and the dependencies it added (docs/dynamic.md)

Results are addressed by node key; a reference to a node finished in an earlier run
names that run (``external`` in the spec header).
"""

from __future__ import annotations

import binascii
import io
import json
import os
import pickle
import stat
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from lazyslurm.errors import CorruptResultError, UntrustedStoreError

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "ElementSpec",
    "MapItem",
    "Rebuild",
    "Redirect",
    "Ref",
    "RefList",
    "Restore",
    "RunLayout",
    "atomic_write",
    "check_private_dir",
    "decode_outcome",
    "encode_outcome",
    "read_element",
    "read_pickle",
    "read_private",
    "template_keys",
    "write_spec",
]

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
    """

    __slots__ = ("root",)

    RUNS = "runs"  # under the work directory: one directory per run
    SUBDIRS = ("specs", "jobs", "results", "errors", "logs", "dynamic")
    OUTCOME_DIRS = ("results", "errors")
    SUFFIX = ".pkl"  # of result and error files, named by node key
    # shell (grep/find) patterns over outcome files, for the one-command listings
    OUTCOME_GREP = "[.]pkl$"
    RESULTS_FIND = "./*/results/*.pkl"  # from WORKDIR/runs: every result of every run
    # a line of that find, as a regex pattern (compiled by the client: the runner never
    # needs re): groups are the run id and the node key
    RESULT_PATH = r"^\./([^/]+)/results/([^/]+)\.pkl$"
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
    def submit_script(self) -> str:
        return self._at("submit.sh")

    @property
    def submit_err(self) -> str:
        return self._at("submit.err")

    def spec(self, array_job: str) -> str:
        return self._at(f"specs/{array_job}.spec")

    def job_script(self, array_job: str) -> str:
        return self._at(f"jobs/{array_job}.sh")

    def result(self, key: str, run: str | None = None) -> str:
        root = self.root if run is None else f"{self.root.rsplit('/', 1)[0]}/{run}"
        return f"{root}/results/{key}{self.SUFFIX}"

    def error(self, key: str) -> str:
        return self._at(f"errors/{key}{self.SUFFIX}")

    def dynamic_record(self, array_job: str, index: int) -> str:
        """The subgraph element ``index`` of ``array_job`` returned (dynamic expansion)."""
        return self._at(f"dynamic/{array_job}.{index}.json")

    @property
    def dynamic_dir(self) -> str:
        return self._at("dynamic")

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


def check_private_dir(path: str | os.PathLike[str]) -> None:
    """Refuse a store directory that another user could write into: a symlink, one owned
    by someone else, or one that is group- or world-writable.

    Planting a file there (a forged result, a spec) would make us unpickle or run it.
    """
    path = os.fspath(path)
    st = os.lstat(path)
    why = ""
    if stat.S_ISLNK(st.st_mode):
        why = "is a symbolic link"
    elif not stat.S_ISDIR(st.st_mode):
        return  # not a directory at all: creating or writing into it fails on its own
    elif st.st_uid != os.getuid():
        why = f"is owned by uid {st.st_uid}, not by you (uid {os.getuid()})"
    elif st.st_mode & 0o022:
        why = f"is writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    if why:
        msg = (
            f"store directory {path} {why}: another user could plant results there that "
            f"lazyslurm would unpickle. Use a private work directory (workdir=... or "
            f"$LAZYSLURM_WORKDIR), or make this one yours and private: `chmod 700 {path}`"
        )
        raise UntrustedStoreError(msg, path=path)


def read_private(path: str | os.PathLike[str]) -> bytes:
    """Read a store file, checked on the open file: a regular file owned by this user,
    never through a symbolic link (:class:`~lazyslurm.errors.UntrustedStoreError`)."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symbolic link
            msg = f"store file {path} is a symbolic link: refused (not written by lazyslurm)"
            raise UntrustedStoreError(msg, path=path) from exc
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IsADirectoryError(21, "not a regular file", path)
        if st.st_uid != os.getuid():
            msg = (
                f"store file {path} is owned by uid {st.st_uid}, not by you (uid "
                f"{os.getuid()}): refused; use a private work directory"
            )
            raise UntrustedStoreError(msg, path=path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- outcome records
# results/KEY.pkl and errors/KEY.pkl: a header the client verifies before unpickling
# (magic, payload length, CRC-32, the node key, and the element that wrote it).

OUTCOME_MAGIC = b"LZOUT1\n"
_OUTCOME_HEAD = struct.Struct("<QIH")  # payload length, crc32 of the payload, text length


def encode_outcome(payload: bytes, *, key: str, writer: str) -> bytes:
    """A verifiable outcome record around ``payload`` (a pickle).

    >>> data = encode_outcome(b"x", key="f-1", writer="r1/aj0/0")
    >>> decode_outcome(data, key="f-1", path="p", run="r1")
    ('r1/aj0/0', b'x')
    """
    text = f"{key}\n{writer}".encode()
    head = _OUTCOME_HEAD.pack(len(payload), binascii.crc32(payload), len(text))
    return OUTCOME_MAGIC + head + text + payload


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

    def bad(why: str) -> CorruptResultError:
        msg = f"the outcome record of node {key} ({path}) {why}: it was not unpickled"
        return CorruptResultError(msg, key=key, path=path)

    start = len(OUTCOME_MAGIC) + _OUTCOME_HEAD.size
    if not data.startswith(OUTCOME_MAGIC):
        raise bad("has no lazyslurm header")
    if len(data) < start:
        raise bad("is truncated")
    length, crc, tlen = _OUTCOME_HEAD.unpack_from(data, len(OUTCOME_MAGIC))
    payload = data[start + tlen :]
    if len(payload) != length:
        raise bad(f"is truncated ({len(payload)} of {length} bytes)")
    if binascii.crc32(payload) != crc:
        raise bad("fails its checksum")
    rec_key, _, writer = data[start : start + tlen].decode(errors="replace").partition("\n")
    if rec_key != key:
        raise bad(f"is the record of node {rec_key}")
    if run is not None and not writer.startswith(f"{run}/"):
        raise bad(f"was written by {writer}, not by run {run}")
    return writer, payload


INSIDE = RunLayout("")  # paths relative to the run directory (files staged into it)


def default_workdir() -> Path:
    """Where runs are kept by default: ``$LAZYSLURM_WORKDIR`` or ``~/.lazyslurm``."""
    from pathlib import Path  # client side only: the runner never asks

    return Path(os.environ.get("LAZYSLURM_WORKDIR") or Path.home() / ".lazyslurm")


def atomic_write(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to a private (0600) temporary file beside ``path``, then rename it
    into place. (os only: tempfile and pathlib cost the runner milliseconds per task.)"""
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
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
    """Unpickle an outcome record (verified first) or another store file we wrote."""
    path = os.fspath(path)
    data = read_private(path)
    if data.startswith(OUTCOME_MAGIC):
        name = os.path.basename(path)
        data = decode_outcome(data, key=name[: -len(RunLayout.SUFFIX)], path=path)[1]
    return pickle.loads(data)


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
    """Read the header and element ``index`` of a spec file (ours: checked on the open file)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if os.fstat(fd).st_uid != os.getuid():
        os.close(fd)
        msg = f"spec file {path} is not owned by you: refused"
        raise UntrustedStoreError(msg, path=os.fspath(path))
    with os.fdopen(fd, "rb") as fh:
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
