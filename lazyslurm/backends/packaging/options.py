"""How code and environment reach the cluster: the packaging options, declared once."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Annotated, Literal, TypedDict

from lazyslurm.errors import OptionTypeError
from lazyslurm.graph.options import Opt
from lazyslurm.graph.resources import PACKAGING_MODES, PackagingMode

__all__ = ["IMAGE_BUILDERS", "RUNTIMES", "ImageBuilder", "PackagingOptions", "Runtime"]


Runtime = Literal["podman", "pyxis", "apptainer"]
ImageBuilder = Literal["podman", "docker"]
RUNTIMES: tuple[str, ...] = typing.get_args(Runtime)
IMAGE_BUILDERS: tuple[str, ...] = typing.get_args(ImageBuilder)


def _tls(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    msg = f"{name} must be a bool (or 'true'/'false'), got {value!r}"
    raise OptionTypeError(msg)


def _one_line(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\n" in value:
        msg = f"{name} must be a non-empty one-line string, got {value!r}"
        raise OptionTypeError(msg)
    return value


def _non_negative(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        msg = f"{name} must be a number of GB, 0 or more, got {value!r}"
        raise OptionTypeError(msg)
    return float(value)


_MODE_HELP = f"mode: {', '.join(PACKAGING_MODES[:-1])} or {PACKAGING_MODES[-1]}"


class PackagingOptions(TypedDict, total=False):
    """How code and environment get to the cluster (``slurm`` and ``ssh`` backends)."""

    packaging: Annotated[PackagingMode, Opt(_MODE_HELP, default="auto")]
    packaging_registry: Annotated[
        str, Opt("container: image repository (registry:5000/name)", parse=_one_line)
    ]
    packaging_platform: Annotated[
        str, Opt("container: build platform, e.g. linux/amd64", parse=_one_line)
    ]
    packaging_tls_verify: Annotated[
        bool | str, Opt("container: verify TLS to the registry", default=True, parse=_tls)
    ]
    packaging_runtime: Annotated[
        Runtime, Opt("container: podman, pyxis or apptainer", default="podman")
    ]
    packaging_base_image: Annotated[
        str, Opt("container: base of the generated Dockerfile", parse=_one_line)
    ]
    packaging_dockerfile: Annotated[
        str, Opt("container: the project's Dockerfile instead", parse=_one_line)
    ]
    packaging_builder: Annotated[ImageBuilder, Opt("container: podman or docker", default="podman")]
    packaging_project: Annotated[
        str, Opt("wheel/container: project dir (default: nearest)", parse=_one_line)
    ]
    packaging_build_args: Annotated[
        Sequence[str], Opt("container: extra arguments to the build", default=())
    ]
    packaging_run_args: Annotated[
        Sequence[str], Opt("container: extra arguments to `podman run`", default=())
    ]
    packaging_wheelhouse: Annotated[
        str,
        Opt(
            "container: a directory of wheels (pip download) installed offline into the "
            "image, or given to your Dockerfile as build context `wheelhouse`",
            parse=_one_line,
        ),
    ]
    code_cache_gb: Annotated[
        float,
        Opt(
            "WORKDIR/code cap: least recently used code and environments over it are "
            "removed at submission (0: no cap)",
            default=20.0,
            parse=_non_negative,
        ),
    ]
