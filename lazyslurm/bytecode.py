"""lazyslurm's own compiled modules, kept where Python is told not to write any.

With ``PYTHONDONTWRITEBYTECODE`` set (or ``-B``), Python compiles every module from
source in every process. For lazyslurm that was the largest cost of a small task: the
runner compiles ``store.py`` and ``runner/__init__.py`` (about 25 ms of CPU, against 12 ms
for a whole ``python -c pass``) in every array element, and a client compiles the
package (about 0.12 s) in every process. Then, and only for lazyslurm's own modules,
the compiled code is kept in a private cache instead: ``${XDG_CACHE_HOME:-~/.cache}/
lazyslurm/bytecode/TAG/`` (``TAG``: the interpreter's, e.g. ``cpython-311``), one file per
source file, validated like a ``.pyc`` (the interpreter's magic number, the source's
modification time and size). Nothing is kept for the user's modules, and where bytecode
may be written Python's own ``__pycache__`` is used as usual.

Trust: a cached file is executed, so it is used only when it and its directory are this
user's and writable by no one else, read without following a symbolic link; the
directory is made 0700, each file written 0600 under a temporary name and renamed.
Anything else (no home, a read-only one, a damaged file) falls back to compiling.

Standard library only, and nothing at import time beyond ``os`` and ``sys``: the runner
loads this file by path before anything else of lazyslurm.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

__all__ = ["cache_dir", "code_of", "install"]

_HEAD = 32  # magic (4) + flags (4) + mtime_ns (8) + size (8) + reserved (8)


def cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "lazyslurm", "bytecode", sys.implementation.cache_tag or "none")


def _magic() -> bytes:
    import _frozen_importlib_external as ext  # loaded by every interpreter start

    return bytes(ext.MAGIC_NUMBER)


def _private(st: os.stat_result) -> bool:
    return st.st_uid == os.getuid() and not st.st_mode & 0o022


def _cached_name(path: str) -> str:
    import _sha1  # C: hashlib's wrapper costs a task ~2 ms more

    digest = _sha1.sha1(os.fsencode(path)).hexdigest()[:20]
    return f"{os.path.basename(path)}.{digest}"


def _read(folder: str, name: str) -> bytes | None:
    import stat

    try:
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or not _private(st):
            return None
        fd = os.open(os.path.join(folder, name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or not _private(st):
            return None
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)


def _write(folder: str, name: str, data: bytes) -> None:
    import stat

    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
        if not stat.S_ISDIR(st.st_mode) or not _private(st):
            return
        tmp = os.path.join(folder, f".{name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(folder, name))
    except OSError:
        return


def code_of(path: str) -> CodeType:
    """The code object of source file ``path``: from the private cache when it holds
    this very source's (same magic number, modification time and size), else compiled
    and kept there."""
    import marshal  # built in

    path = os.path.abspath(path)
    st = os.stat(path)
    head = (
        _magic()
        + bytes(4)
        + st.st_mtime_ns.to_bytes(8, "little", signed=True)
        + st.st_size.to_bytes(8, "little")
        + bytes(8)
    )
    folder, name = cache_dir(), _cached_name(path)
    data = _read(folder, name)
    if data is not None and data[:_HEAD] == head:
        try:
            return marshal.loads(memoryview(data)[_HEAD:])
        except (ValueError, EOFError, TypeError):
            pass  # damaged: compiled again below
    with open(path, "rb") as fh:
        source = fh.read()
    code = compile(source, path, "exec", dont_inherit=True)
    _write(folder, name, head + marshal.dumps(code))
    return code


def install(package: str) -> None:
    """Load ``package``'s submodules through :func:`code_of` (call it when
    ``sys.dont_write_bytecode`` is set; once per process)."""
    import _frozen_importlib_external as ext

    class Loader(ext.SourceFileLoader):  # type: ignore[misc, name-defined]
        def get_code(self, fullname: str) -> Any:
            return code_of(self.get_filename(fullname))

    class Finder:
        @staticmethod
        def find_spec(name: str, path: Any = None, target: Any = None) -> Any:
            if not name.startswith(package + "."):
                return None
            spec = ext.PathFinder.find_spec(name, path, target)
            if spec is not None and type(spec.loader) is ext.SourceFileLoader:
                spec.loader = Loader(spec.loader.name, spec.loader.path)
            return spec

    if not any(type(f).__name__ == "Finder" and f.__module__ == __name__ for f in sys.meta_path):
        sys.meta_path.insert(0, Finder())
