"""Cluster profiles: named sets of :class:`~lazyslurm.cluster.Cluster` options kept in a file.

A profile is a TOML table whose keys are the ``Cluster`` constructor's options::

    # pyproject.toml                       # or lazyslurm.toml
    [tool.lazyslurm.profiles.hpc]          # [profiles.hpc]
    backend = "ssh"
    hostname = "login.hpc.example.org"
    partition = "cpu"
    time = "01:00:00"
    setup = ["module load python/3.11"]

``Cluster.from_profile("hpc")`` (or ``LAZYSLURM_PROFILE=hpc``) builds that cluster.

Where profiles are read from:

- the *project file*: the nearest ``lazyslurm.toml``, or ``pyproject.toml`` with a
  ``[tool.lazyslurm]`` table, in the current directory or one of its parents (in each
  directory ``lazyslurm.toml`` is looked for first; a ``pyproject.toml`` without
  ``[tool.lazyslurm]`` is passed over, as pytest and ruff do);
- the *user file* ``~/.config/lazyslurm/lazyslurm.toml`` (``$XDG_CONFIG_HOME`` if set),
  for profiles the project file does not define.

Relative paths (``workdir`` of a backend on this host, ``key_filename``, ``known_hosts``,
``ssh_config``, ``control_path``) are relative to the file's directory; ``workdir`` of an
``ssh`` profile is a path on the cluster and is left as written.

Only the profile asked for is validated: an unknown key or a value of the wrong type
raises :class:`~lazyslurm.errors.ClusterConfigError` naming the file, the profile and the
key.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import lazyslurm.backends.registry as backends
from lazyslurm.errors import ClusterConfigError, InvalidOptionError, OptionTypeError
from lazyslurm.graph.options import kind_of as _kind
from lazyslurm.graph.resources import Resources
from lazyslurm.options import all_options, did_you_mean

__all__ = [
    "PROFILE_ENV",
    "Profile",
    "available_profiles",
    "find_project_file",
    "load_profile",
    "user_config_file",
]

PROFILE_ENV = "LAZYSLURM_PROFILE"
PROJECT_FILES = ("lazyslurm.toml", "pyproject.toml")  # in each directory, in this order


# --------------------------------------------------------------------------- files


def user_config_file() -> Path:
    """``~/.config/lazyslurm/lazyslurm.toml`` (under ``$XDG_CONFIG_HOME`` if that is set)."""
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "lazyslurm" / "lazyslurm.toml"


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        msg = f"{path}: invalid TOML: {exc}"
        raise ClusterConfigError(msg) from exc
    except UnicodeDecodeError as exc:  # a binary file, or another encoding
        msg = f"{path}: invalid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise ClusterConfigError(msg) from exc
    except OSError as exc:
        msg = f"{path}: cannot read: {exc.strerror or exc}"
        raise ClusterConfigError(msg) from exc


def _lazyslurm_table(path: Path, data: dict[str, Any]) -> dict[str, Any] | None:
    """lazyslurm's part of a parsed file: all of ``lazyslurm.toml``, or
    ``[tool.lazyslurm]`` of ``pyproject.toml`` (None if it has none)."""
    if path.name != "pyproject.toml":
        return data
    tool = data.get("tool")
    if not isinstance(tool, dict) or "lazyslurm" not in tool:
        return None
    table = tool["lazyslurm"]
    if not isinstance(table, dict):
        msg = f"{path}: tool.lazyslurm must be a table, got {_kind(table)}"
        raise ClusterConfigError(msg)
    return table


def find_project_file(start: str | os.PathLike[str] | None = None) -> Path | None:
    """The nearest ``lazyslurm.toml``, or ``pyproject.toml`` with ``[tool.lazyslurm]``, in
    ``start`` (default: the current directory) or one of its parents."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for directory in (here, *here.parents):
        for name in PROJECT_FILES:
            path = directory / name
            if not path.is_file():
                continue
            if name == "lazyslurm.toml" or _lazyslurm_table(path, _read_toml(path)) is not None:
                return path
    return None


class _Source:
    """The profiles of one file (not yet validated)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prefix = "tool.lazyslurm." if path.name == "pyproject.toml" else ""
        table = _lazyslurm_table(path, _read_toml(path)) or {}
        unknown = sorted(set(table) - {"profiles"})
        if unknown:
            msg = (
                f"{path}: unknown key {self.prefix}{unknown[0]!s}: "
                f"lazyslurm reads only [{self.prefix}profiles.NAME] tables here"
            )
            raise ClusterConfigError(msg)
        profiles = table.get("profiles", {})
        if not isinstance(profiles, dict):
            msg = f"{path}: {self.prefix}profiles must be a table, got {_kind(profiles)}"
            raise ClusterConfigError(msg)
        self.profiles: dict[str, Any] = profiles

    def table_name(self, name: str) -> str:
        quoted = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
        return f"[{self.prefix}profiles.{quoted}]"


def _sources(start: str | os.PathLike[str] | None) -> tuple[list[_Source], list[str]]:
    """The files profiles come from, nearest first, and a description of where we looked."""
    sources: list[_Source] = []
    searched: list[str] = []
    here = Path(start if start is not None else Path.cwd()).resolve()
    project = find_project_file(here)
    if project is not None:
        sources.append(_Source(project))
        searched.append(str(project))
    else:
        searched.append(
            f"no lazyslurm.toml, nor pyproject.toml with [tool.lazyslurm], in {here} or its parents"
        )
    user = user_config_file()
    if user.is_file():
        sources.append(_Source(user))
        searched.append(str(user))
    else:
        searched.append(f"{user} (not found)")
    return sources, searched


def available_profiles(start: str | os.PathLike[str] | None = None) -> dict[str, Path]:
    """Profile name -> the file that defines it (the project file wins over the user file)."""
    out: dict[str, Path] = {}
    for source in _sources(start)[0]:
        for name in source.profiles:
            out.setdefault(name, source.path)
    return out


# --------------------------------------------------------------------------- profiles


class Profile:
    """One validated profile: ``options`` are keyword arguments of ``Cluster(...)``."""

    def __init__(self, name: str, path: Path, table: str, options: dict[str, Any]) -> None:
        self.name = name
        self.path = path
        self.table = table
        self.options = options

    def __repr__(self) -> str:
        return f"Profile({self.name!r}, {str(self.path)!r})"


def load_profile(
    name: str | None = None, *, start: str | os.PathLike[str] | None = None
) -> Profile:
    """Find and validate profile ``name`` (default: ``$LAZYSLURM_PROFILE``).

    ``start`` is the directory the search begins in (default: the current directory).
    """
    name = name or os.environ.get(PROFILE_ENV) or None
    sources, searched = _sources(start)
    if name is None:
        names = sorted({n for s in sources for n in s.profiles})
        have = f" (profiles found: {', '.join(names)})" if names else ""
        msg = (
            'no cluster profile given: pass a name, Cluster.from_profile("NAME"), or set '
            f"the {PROFILE_ENV} environment variable{have}"
        )
        raise ClusterConfigError(msg)
    for source in sources:
        if name in source.profiles:
            return _validate(name, source)
    names = sorted({n for s in sources for n in s.profiles})
    known = f"available profiles: {', '.join(names)}" if names else "no profiles are defined"
    msg = (
        f"unknown cluster profile {name!r}: {known}. Searched: {'; '.join(searched)}. "
        "Define it as [tool.lazyslurm.profiles.NAME] in pyproject.toml or "
        "[profiles.NAME] in lazyslurm.toml"
    )
    raise ClusterConfigError(msg)


def _validate(name: str, source: _Source) -> Profile:
    table = source.table_name(name)
    where = f"{source.path}: cluster profile {name!r} {table}"

    def fail(text: str) -> ClusterConfigError:
        return ClusterConfigError(f"{where}: {text}")

    data = source.profiles[name]
    if not isinstance(data, dict):
        raise fail(f"must be a table of Cluster options, got {_kind(data)}")
    backend = data.get("backend", "local")
    if not isinstance(backend, str):
        raise fail(f"key 'backend' must be a string, got {_kind(backend)} ({backend!r})")
    try:
        spec = backends.get(backend)
    except ClusterConfigError:
        known = ", ".join(backends.names())
        raise fail(f"key 'backend' must be one of {known}, got {backend!r}") from None
    every = {k: o for k, o in all_options().items() if o.profile}
    for key, value in data.items():
        if key == "backend":
            continue
        opt = every.get(key)
        if opt is None:
            known = ", ".join(["backend", *every])
            hint = did_you_mean(key, every, value)
            raise fail(f"unknown key {key!r}{hint} (valid keys: {known})")
        wrong = opt.problem(value)
        if wrong is not None:
            raise fail(f"key {key!r} {wrong}")
    for key in data:
        wrong = None if key == "backend" else every[key].applies_to(backend)
        if wrong is not None:
            raise fail(f"key {key!r} {wrong} (this profile's backend is {backend!r})")
    if "hostname" in spec.option_names() and "hostname" not in data:
        raise fail(f"backend \"{backend}\" needs a 'hostname' key")
    try:
        Resources.defaults_from(data)
    except (InvalidOptionError, OptionTypeError) as exc:
        raise fail(str(exc)) from exc

    options = dict(data)
    base = source.path.parent
    if "workdir" in options and not spec.remote:  # a path on this host
        options["workdir"] = _relative_to(base, options["workdir"])
    for key in ("key_filename", "known_hosts", "ssh_config", "control_path"):
        value = options.get(key)
        if isinstance(value, str):
            options[key] = _relative_to(base, value)
        elif isinstance(value, list):
            options[key] = [_relative_to(base, v) for v in value]
    return Profile(name, source.path, table, options)


def _relative_to(base: Path, value: str) -> str:
    """``value`` as a path: ``~`` and absolute paths as written, others under ``base``."""
    if value.startswith("~") or Path(value).is_absolute():
        return value
    return str(base / value)
