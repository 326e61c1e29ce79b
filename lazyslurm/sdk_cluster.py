"""slurm-sdk's ways of building a :class:`~lazyslurm.cluster.Cluster`, translated.

A program written for slurm-sdk builds its cluster with ``Cluster.add_argparse_args``
and ``Cluster.from_args``, with constructor keywords such as ``default_partition`` and
``default_packaging_registry``, or with ``Cluster.from_file``. This module turns each of
them into lazyslurm's own options (``docs/coming-from.md`` has the table). A spelling
lazyslurm has no behaviour for raises :class:`~lazyslurm.errors.ClusterConfigError`
naming it and what to use instead: it is never dropped, nor run as something else.

>>> translate({"default_partition": "debug", "job_base_dir": "~/jobs"})
{'partition': 'debug', 'workdir': '~/jobs'}
>>> backend_of_type("local")  # slurm-sdk's "local": sbatch on this host
'slurm'
"""

from __future__ import annotations

import argparse
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypedDict

from lazyslurm.errors import ClusterConfigError

__all__ = [
    "SdkClusterOptions",
    "add_argparse_args",
    "backend_of_type",
    "file_options",
    "is_sdk_keyword",
    "options_from_args",
    "translate",
]

# slurm-sdk's backend_type -> lazyslurm's backend ("local" there is sbatch on this host)
_BACKEND_TYPES = {"ssh": "ssh", "local": "slurm"}

# plain renames: slurm-sdk's keyword -> lazyslurm's option of the same meaning
_RENAMED = {
    "default_account": "account",
    "default_partition": "partition",
    "job_base_dir": "workdir",
    # paramiko's wait for the server's banner: lazyslurm's connect timeout bounds it
    "banner_timeout": "connect_timeout_s",
    "ssh_key_path": "key_filename",  # from_file's name of the key
    "default_packaging_registry": "packaging_registry",
    "default_packaging_platform": "packaging_platform",
    "default_packaging_tls_verify": "packaging_tls_verify",
    "default_packaging_dockerfile": "packaging_dockerfile",
    # slurm-sdk's container "runtime" is the tool that builds and pushes the image
    "default_packaging_runtime": "packaging_builder",
    "default_packaging_base_image": "packaging_base_image",
}

# slurm-sdk spellings lazyslurm has no behaviour for: what to do instead
_REFUSED = {
    "password": "lazyslurm does not log in with a password: give key_filename= (a private "
    "key), or use your ssh agent or an OpenSSH master (transport='openssh')",
    "default_packaging_python_version": "lazyslurm does not install a Python on the cluster: "
    "give python='python3.X', the interpreter there",
    "default_packaging_build_tool": "lazyslurm's wheel packaging picks its own build tool: "
    "leave it out",
    "default_packaging_mounts": "give the runtime's own arguments with packaging_run_args, "
    "e.g. ['--volume=SRC:DST'] (podman) or ['--container-mounts=SRC:DST'] (pyxis)",
    "default_packaging_srun_args": "with packaging_runtime='pyxis', packaging_run_args are "
    "the arguments of srun",
    "default_packaging_modules": "give setup=['module load NAME'], shell lines run before "
    "each task",
    "default_packaging_image": "lazyslurm builds the image itself and tags it by its content: "
    "give packaging_dockerfile= or packaging_base_image= instead of a prebuilt image",
    "default_packaging_name": "lazyslurm names the image after packaging_registry and tags "
    "it by its content",
    "default_packaging_tag": "lazyslurm tags the image by its content",
    "default_packaging_python_executable": "the image's python3 runs the tasks",
    "default_packaging_no_cache": "lazyslurm reuses an image by its content hash",
}

_SDK_ONLY = {"default_packaging", *_RENAMED, *_REFUSED}


class SdkClusterOptions(TypedDict, total=False):
    """slurm-sdk's keywords of ``Cluster(...)`` that lazyslurm translates (for type
    checkers; :func:`translate` says what each becomes)."""

    default_packaging: str
    default_account: str
    default_partition: str
    job_base_dir: str
    banner_timeout: float
    ssh_key_path: str
    default_packaging_registry: str
    default_packaging_platform: str
    default_packaging_tls_verify: bool | str
    default_packaging_dockerfile: str
    default_packaging_context: str
    default_packaging_push: bool
    default_packaging_runtime: str
    default_packaging_base_image: str
    default_packaging_build_args: Mapping[str, str]


def is_sdk_keyword(name: str) -> bool:
    """Whether ``name`` is one of slurm-sdk's keywords (never one of lazyslurm's)."""
    return name in _SDK_ONLY or name.startswith("default_packaging_")


def backend_of_type(backend_type: str) -> str:
    """lazyslurm's backend for slurm-sdk's ``backend_type``: ``"ssh"`` is ``"ssh"``,
    ``"local"`` (sbatch on this host) is ``"slurm"``; lazyslurm's other names stay."""
    return _BACKEND_TYPES.get(backend_type, backend_type)


def _packaging_mode(value: object) -> str | None:
    """lazyslurm's ``packaging`` for slurm-sdk's ``default_packaging`` (None: the default)."""
    if value is None or value == "" or value == "auto":
        return None
    if value == "none":  # nothing shipped: the cluster's environment as it is
        return "inherit"
    if value in ("inherit", "by-value", "wheel", "container"):
        return str(value)
    if isinstance(value, str) and (value.startswith("container:") or "/" in value):
        msg = (
            f"default_packaging={value!r}: running a prebuilt image is not supported; "
            "lazyslurm builds the image itself: give default_packaging='container' with "
            "default_packaging_dockerfile=... (or packaging_base_image=...)"
        )
        raise ClusterConfigError(msg)
    msg = (
        f"default_packaging={value!r}: give 'auto', 'none', 'wheel' or 'container' "
        "(or lazyslurm's 'inherit', 'by-value')"
    )
    raise ClusterConfigError(msg)


def translate(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with slurm-sdk's keywords replaced by lazyslurm's options; lazyslurm's
    own pass through (``Cluster`` checks them). A keyword with no lazyslurm behaviour, or
    two spellings of one option with different values, raises ClusterConfigError."""
    out: dict[str, Any] = {}
    came_from: dict[str, str] = {}

    def put(name: str, value: Any, source: str) -> None:
        if name in out and out[name] != value:
            msg = (
                f"{came_from[name]}={out[name]!r} and {source}={value!r} both set "
                f"lazyslurm's {name}: give one"
            )
            raise ClusterConfigError(msg)
        out[name] = value
        came_from[name] = source

    dockerfile = options.get("default_packaging_dockerfile") or options.get("packaging_dockerfile")
    for name, value in options.items():
        if not is_sdk_keyword(name):
            put(name, value, name)
        elif value is None:
            continue
        elif name in _REFUSED:
            raise ClusterConfigError(f"{name}= is not supported: {_REFUSED[name]}")
        elif name == "default_packaging":
            mode = _packaging_mode(value)
            if mode is not None:
                put("packaging", mode, name)
        elif name in _RENAMED:
            put(_RENAMED[name], value, name)
        elif name == "default_packaging_push":
            if value is False or str(value).lower() in ("false", "no", "0"):
                msg = (
                    "default_packaging_push=False is not supported: lazyslurm always pushes "
                    "the image to packaging_registry, where the nodes pull it from"
                )
                raise ClusterConfigError(msg)
        elif name == "default_packaging_context":
            _check_context(value, dockerfile)
        elif name == "default_packaging_build_args":
            if not isinstance(value, Mapping):
                msg = f"default_packaging_build_args must be a dict, got {value!r}"
                raise ClusterConfigError(msg)
            put("packaging_build_args", [f"--build-arg={k}={v}" for k, v in value.items()], name)
        else:
            lazy = "packaging_" + name.removeprefix("default_packaging_")
            msg = (
                f"{name}= is not a slurm-sdk option lazyslurm knows; lazyslurm's "
                f"packaging options are packaging_registry, packaging_platform, "
                f"packaging_tls_verify, packaging_dockerfile, packaging_builder, ... "
                f"(see docs/packaging.md; did you mean {lazy}?)"
            )
            raise ClusterConfigError(msg)
    return out


def _check_context(value: object, dockerfile: object) -> None:
    """slurm-sdk's build context: lazyslurm builds in the Dockerfile's directory."""
    where = Path(str(dockerfile)).resolve().parent if dockerfile else None
    if where is not None and Path(str(value)).resolve() == where:
        return
    msg = (
        f"default_packaging_context={value!r} is not supported: lazyslurm builds with the "
        "Dockerfile's directory as the build context"
        + (f" ({where})" if where else " (give default_packaging_dockerfile=...)")
    )
    raise ClusterConfigError(msg)


# --------------------------------------------------------------------------- argparse


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes"):
        return True
    if low in ("0", "false", "no"):
        return False
    msg = f"expected true or false, got {text!r}"
    raise argparse.ArgumentTypeError(msg)


def add_argparse_args(parser: argparse.ArgumentParser, *, backend_flag: bool = True) -> None:
    """Add slurm-sdk's cluster flags to ``parser`` (``Cluster.add_argparse_args``).

    slurm-sdk's flags: ``--hostname --port --banner-timeout --username --password
    --backend --job-base-dir --account --partition --packaging --packaging-registry
    --packaging-platform --packaging-tls-verify``; lazyslurm adds ``--key-filename`` and
    ``--known-hosts``. Where slurm-sdk's default only repeats what happens anyway (port
    22, user $USER) the default here is None, so ssh_config's ``Port`` and ``User`` of the
    host still apply. ``backend_flag=False`` leaves ``--backend`` to the caller.
    """
    parser.add_argument("--hostname", help="login node of the Slurm cluster (ssh)")
    parser.add_argument(
        "--port", type=int, default=None, help="SSH port (default: ssh_config's, else 22)"
    )
    parser.add_argument(
        "--banner-timeout", type=float, default=None,
        help="seconds to wait for the SSH connection (lazyslurm's connect_timeout_s)",
    )  # fmt: skip
    parser.add_argument("--username", help="SSH user (default: ssh_config's, else $USER)")
    parser.add_argument("--password", help="not supported: lazyslurm logs in with keys")
    parser.add_argument("--key-filename", help="SSH private key file")
    parser.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    if backend_flag:
        parser.add_argument(
            "--backend", choices=["ssh", "local", "slurm"], default=None,
            help="ssh (with --hostname), or local: sbatch on this host (also 'slurm'); "
            "default: ssh with --hostname, else this host's Slurm",
        )  # fmt: skip
    parser.add_argument(
        "--job-base-dir", help="run directories on the cluster (default ~/.lazyslurm)"
    )
    parser.add_argument("--account", help="default Slurm account of the tasks")
    parser.add_argument("--partition", help="default Slurm partition of the tasks")
    parser.add_argument(
        "--packaging", default="auto",
        help="how code reaches the cluster: auto, none, wheel, container (or lazyslurm's "
        "inherit, by-value); default auto",
    )  # fmt: skip
    parser.add_argument(
        "--packaging-registry", help="container: image repository, e.g. registry:5000/name"
    )
    parser.add_argument(
        "--packaging-platform", default=None,
        help="container: build platform (default for from_args: linux/amd64)",
    )  # fmt: skip
    parser.add_argument(
        "--packaging-tls-verify", type=_bool, default=None,
        help="container: verify TLS to the registry (default true)",
    )  # fmt: skip


# the attribute of an argparse namespace -> slurm-sdk's Cluster keyword
_FROM_ARGS = {
    "hostname": "hostname",
    "port": "port",
    "username": "username",
    "password": "password",
    "banner_timeout": "banner_timeout",
    "key_filename": "key_filename",
    "known_hosts": "known_hosts",
    "job_base_dir": "job_base_dir",
    "account": "default_account",
    "partition": "default_partition",
    "packaging": "default_packaging",
    "packaging_registry": "default_packaging_registry",
    "packaging_platform": "default_packaging_platform",
    "packaging_tls_verify": "default_packaging_tls_verify",
}

_SDK_PLATFORM = "linux/amd64"  # slurm-sdk's default build platform from the command line


def options_from_args(
    args: argparse.Namespace, overrides: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The backend and options of ``Cluster.from_args(args, **overrides)``.

    The flags of :func:`add_argparse_args` found on ``args`` (others are not read), then
    ``overrides`` over them (slurm-sdk's keywords or lazyslurm's options). The backend:
    ``backend=``/``backend_type=`` of ``overrides``, else ``--backend``, else ``ssh`` with
    ``--hostname``, else Slurm on this host when ``sbatch`` is on the PATH; otherwise
    ClusterConfigError says what to give.
    """
    from_args: dict[str, Any] = {}
    for attr, keyword in _FROM_ARGS.items():
        value = getattr(args, attr, None)
        if value is not None:
            from_args[keyword] = value
    overrides = dict(overrides)
    backend = overrides.pop("backend", None)
    backend_type = overrides.pop("backend_type", None)
    if backend is not None and backend_type is not None:
        msg = "from_args(backend=..., backend_type=...): give one of them"
        raise ClusterConfigError(msg)
    if backend is None and backend_type is not None:
        backend = backend_of_type(str(backend_type))
    flag = getattr(args, "backend", None) if backend is None else None
    if backend is None and flag is not None:
        backend = backend_of_type(str(flag))
    options = translate(from_args)
    options.update(translate(overrides))  # the caller's keywords win, as in slurm-sdk
    if backend is None:
        if options.get("hostname"):
            backend = "ssh"
        elif shutil.which("sbatch"):
            backend = "slurm"
        else:
            msg = (
                "no --hostname given and no sbatch on this host's PATH: give --hostname "
                "LOGIN_NODE (sbatch over SSH), or run on a login node (--backend local)"
            )
            raise ClusterConfigError(msg)
    if backend == "ssh" and not options.get("hostname"):
        raise ClusterConfigError("--backend ssh needs --hostname (the cluster's login node)")
    if backend != "ssh":
        given = [
            f"--{a.replace('_', '-')}" for a in ("hostname", "port", "username",
                                                  "banner_timeout", "key_filename",
                                                  "known_hosts")
            if getattr(args, a, None) is not None
        ]  # fmt: skip
        if given:
            msg = f"{', '.join(given)} only apply to backend 'ssh', not {backend!r}"
            raise ClusterConfigError(msg)
    from lazyslurm.backends.registry import get

    if (
        "packaging_platform" not in options
        and "packaging_platform" in get(backend).option_names()
        and options.get("packaging") == "container"
    ):
        options["packaging_platform"] = _SDK_PLATFORM
    return backend, options


# --------------------------------------------------------------------------- files

# the keys of slurm-sdk's flat configuration file (Cluster.from_file) besides "backend"
_FILE_KEYS = (
    "hostname", "username", "password", "ssh_key_path", "job_base_dir",
    "default_packaging", "default_account", "default_partition",
)  # fmt: skip


def file_options(
    path: str | os.PathLike[str], overrides: Mapping[str, Any]
) -> tuple[str, dict[str, Any]]:
    """The backend and options of ``Cluster.from_file(path, **overrides)``: slurm-sdk's
    flat TOML file (``backend = "ssh"``, ``hostname``, ``username``, ``ssh_key_path``,
    ``job_base_dir``, ``default_packaging``, ``default_account``, ``default_partition``);
    lazyslurm's own options may be keys too. An unknown key raises, naming the file."""
    import tomllib

    file = Path(path).expanduser()
    if not file.is_file():
        msg = f"configuration file not found: {file}"
        raise ClusterConfigError(msg)
    try:
        with open(file, "rb") as fh:
            data = tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        msg = f"{file}: invalid TOML: {exc}"
        raise ClusterConfigError(msg) from exc
    overrides = dict(overrides)
    backend = overrides.pop("backend", None)  # lazyslurm's name wins, then slurm-sdk's
    backend_type = overrides.pop("backend_type", None) or data.pop("backend", "ssh")
    data.pop("backend", None)
    from lazyslurm.options import all_options

    known = set(all_options())
    for key in data:
        if key not in _FILE_KEYS and key not in known and not is_sdk_keyword(key):
            msg = (
                f"{file}: unknown key {key!r} (slurm-sdk's keys: backend, "
                f"{', '.join(_FILE_KEYS)}; or any lazyslurm Cluster option)"
            )
            raise ClusterConfigError(msg)
    try:
        options = translate(data)
    except ClusterConfigError as exc:
        raise ClusterConfigError(f"{file}: {exc}") from None
    options.update(translate(overrides))
    return backend or backend_of_type(str(backend_type)), options
