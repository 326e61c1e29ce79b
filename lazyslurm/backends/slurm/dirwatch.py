"""Waking when a file lands in a local run's outcome directories: Linux inotify.

A local run's client waits between polls until a result or error file lands. Looking at
the directories' modification times every 20 ms notices a landing 10 ms late on average
(and wakes 50 times a second); inotify wakes the waiting client as the rename that
publishes the file happens. :class:`DirWatch` is that, through ``ctypes`` (the standard
library has no binding); where inotify cannot be had (not Linux, ``max_user_instances``
or ``max_user_watches`` reached) :func:`watch_dirs` returns None and the caller keeps
looking at modification times.

>>> import tempfile, os
>>> d = tempfile.mkdtemp()
>>> w = watch_dirs([d])
>>> before = w.wait(0.0)
>>> open(os.path.join(d, ".x.tmp"), "w").close()   # written, not yet published: no wake
>>> w.wait(0.0)
False
>>> os.rename(os.path.join(d, ".x.tmp"), os.path.join(d, "x"))   # published by a rename
>>> before, w.wait(1.0), w.drain(), w.wait(0.0)
(False, True, True, False)
"""

from __future__ import annotations

import ctypes
import os
import select
import sys
from collections.abc import Sequence

__all__ = ["DirWatch", "watch_dirs"]

_IN_MOVED_TO = 0x080
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = 0o2000000
_MASK = _IN_MOVED_TO  # results, errors and packs are published by a rename (atomic_write)


class DirWatch:
    """An inotify descriptor watching a few directories for files created or moved in."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def drain(self) -> bool:
        """Forget the events so far; True if there were any."""
        seen = False
        while self.fd >= 0:
            try:
                if not os.read(self.fd, 65536):
                    break
                seen = True
            except BlockingIOError:
                break
        return seen

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for an event (those already queued count): True if
        one came. The events are left queued (the next :meth:`drain` takes them)."""
        if self.fd < 0:
            return False
        try:
            ready, _, _ = select.select([self.fd], [], [], max(timeout_s, 0.0))
        except InterruptedError:
            return False
        return bool(ready)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def watch_dirs(paths: Sequence[str]) -> DirWatch | None:
    """A :class:`DirWatch` on ``paths``, or None where inotify is not to be had."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    add.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
    fd = init(_IN_NONBLOCK | _IN_CLOEXEC)
    if fd < 0:
        return None  # EMFILE: max_user_instances reached
    for path in paths:
        if add(fd, os.fsencode(path), _MASK) < 0:  # ENOSPC: max_user_watches; ENOENT...
            os.close(fd)
            return None
    return DirWatch(fd)
