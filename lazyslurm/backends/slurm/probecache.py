"""The Slurm part of the probe, kept across processes on this host (issue 27).

Every new Python process is a new session, and its first ``compute`` paid the probe:
``scontrol show config/partition/node`` and two ``sacctmgr`` calls, 0.2 s of an
80-element run's ~1 s overhead. Those facts change when ``slurm.conf`` does (or an
administrator's ``scontrol update``, or this user's association limits): the probe's
Slurm lines are kept in a private file and reused while

- the same user, host, ``SLURM_CONF`` setting, ``scontrol`` binary and probe text ask;
- the ``slurm.conf`` the controller read (its path is in the probe's output) and the one
  ``$SLURM_CONF`` names have the same inode, size and modification time;
- the file is younger than ``max_age_s`` (the ``probe_cache_s`` cluster option, an hour
  by default: what ``scontrol update`` and ``sacctmgr`` changes may take to be seen;
  0 turns the cache off).

Trust: the directory ``${XDG_CACHE_HOME:-~/.cache}/lazyslurm/probes`` is made 0700 and
must be ours and private (:func:`~lazyslurm.store.check_private_dir`); each file is read
through :func:`~lazyslurm.store.read_private` (ours, a regular file, never through a
link) and written atomically, 0600. The file is parsed as text, never unpickled. Only
local shells use it (over SSH, checking ``slurm.conf`` costs the round trip it saves).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from lazyslurm.store import atomic_write, check_private_dir, read_private

__all__ = ["cache_dir", "load_probe", "save_probe", "slurm_lines"]

_SLURM_PREFIXES = ("LZ-PART ", "LZ-NODE ", "LZ-HOME=", "LZ-MAXSUBMIT=")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lazyslurm" / "probes"


def slurm_lines(stdout: str, config_keys: tuple[str, ...]) -> str:
    """The lines of a probe's output that came from Slurm (not the packaging's)."""
    keys = tuple(f"{k} " for k in config_keys)
    return "".join(
        line + "\n"
        for line in stdout.splitlines()
        if line.startswith(_SLURM_PREFIXES) or line.startswith(keys)
    )


def _conf_path(lines: str) -> str | None:
    for line in lines.splitlines():  # "SLURM_CONF = /etc/slurm/slurm.conf"
        if line.startswith("SLURM_CONF "):
            return line.partition("=")[2].strip() or None
    return None


def _conf_stamp(lines: str, env: Mapping[str, str]) -> list[list[int]] | None:
    """Inode, size and mtime of the slurm.conf the controller read (``SLURM_CONF`` in
    ``scontrol show config``) and of the one this user's commands read (``$SLURM_CONF``),
    or None when one of them cannot be seen (nothing is kept then)."""
    paths = [_conf_path(lines), {**os.environ, **env}.get("SLURM_CONF")]
    stamp = []
    for path in dict.fromkeys(p for p in paths if p):
        try:
            st = os.stat(path)
        except OSError:
            return None
        stamp.append([st.st_ino, st.st_size, st.st_mtime_ns])
    return stamp or None


def _file(env: Mapping[str, str], script: str) -> Path:
    """The cache file of this user, host, Slurm setting and probe text."""
    merged = {**os.environ, **env}
    scontrol = shutil.which("scontrol", path=merged.get("PATH")) or ""
    try:
        st = os.stat(scontrol) if scontrol else None
    except OSError:
        st = None
    ident = [
        os.getuid(),
        socket.gethostname(),
        merged.get("SLURM_CONF", ""),
        scontrol,
        [st.st_ino, st.st_mtime_ns] if st else None,
        hashlib.sha1(script.encode()).hexdigest(),
    ]
    name = hashlib.sha1(json.dumps(ident).encode()).hexdigest()[:24]
    return cache_dir() / f"{name}.json"


def load_probe(env: Mapping[str, str], script: str, max_age_s: float) -> str | None:
    """The Slurm lines kept for this probe, if still valid (else None)."""
    if max_age_s <= 0:
        return None
    path = _file(env, script)
    try:
        check_private_dir(path.parent)
        data = json.loads(read_private(path))
        lines, stamp, at = data["lines"], data["conf"], float(data["at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # none yet, damaged, or not ours (never used then)
    if not 0 <= time.time() - at < max_age_s:
        return None
    if stamp is None or _conf_stamp(lines, env) != stamp:
        return None  # slurm.conf changed (or cannot be seen): probe again
    return str(lines)


def save_probe(env: Mapping[str, str], script: str, lines: str) -> None:
    """Keep ``lines`` (:func:`slurm_lines`) for the next process; silently skipped when
    the cache directory cannot be made private or the slurm.conf read is not visible."""
    stamp = _conf_stamp(lines, env)
    if stamp is None:
        return
    path = _file(env, script)
    try:
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        check_private_dir(path.parent)
        atomic_write(path, json.dumps({"lines": lines, "conf": stamp, "at": time.time()}).encode())
    except OSError:
        return
