"""``packaging="container"``: an image per content hash, built and pushed from the client,
run by podman, Pyxis/enroot or Apptainer in the job script.

The image is the project's Dockerfile (``packaging_dockerfile``) or a generated one on
``packaging_base_image``, plus a last layer holding lazyslurm's runner and cloudpickle
(the user's own modules travel by value, as with ``by-value``). Its tag is the content
hash of everything that goes into it: the Dockerfile, the build context as the builder
sends it (``.containerignore`` or ``.dockerignore`` honoured), the base images' content
(the local image's ID, else the registry's digest: a base rebuilt under the same name
makes a new tag), the wheels of ``packaging_wheelhouse``, and the client's Python minor
version, which the image's Python must match for code pickled by value.

``packaging_wheelhouse=DIR`` (wheels downloaded on the client, ``pip download``) is for
sites whose builds cannot reach a package index: the generated Dockerfile installs every
wheel there offline into a venv (``/opt/lazyslurm-venv``, first on ``PATH``); a project's
Dockerfile gets it as the build context ``wheelhouse`` (``RUN --mount=type=bind,
from=wheelhouse,target=/wheelhouse pip install --no-index --find-links /wheelhouse ...``).

Before anything is submitted, the image's ``python3`` is asked whether it imports the
installed modules the run's pickles name (once per image digest, remembered beside it):
a missing one is refused with :class:`~lazyslurm.errors.UnshippableModuleError` naming
how to add it.

Jobs run the image by digest (``NAME@sha256:...``), the one recorded when this client
pushed it, kept per tag in a private cache (``$XDG_CACHE_HOME/lazyslurm/images``). Anyone
can compute a tag and push under it first, so a tag this client has no digest for is never
trusted: it is built and pushed (and its digest recorded). Per session the registry is
asked once per tag whether it still holds the recorded digest; then nothing is built or
pushed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import types
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lazyslurm.backends.packaging.base import Launch, Prepared, pickles
from lazyslurm.backends.packaging.modules import (
    check_python,
    content_hash,
    referenced_modules,
    runtime_files,
    third_party_modules,
)
from lazyslurm.backends.packaging.target import Target
from lazyslurm.errors import (
    ClusterConfigError,
    PackagingError,
    RegistryError,
    UnshippableModuleError,
)
from lazyslurm.store import atomic_write, check_private_dir, read_private

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.planner import ArrayJob

__all__ = [
    "BUILDER",
    "ContainerBuilder",
    "from_images",
    "ignore_patterns",
    "ignored",
    "image_name",
    "launch_words",
    "pyxis_image",
    "read_digest",
    "record_digest",
]

log = logging.getLogger(__name__)
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

_SKIP_DIRS = {".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache", ".ruff_cache"}
_RUNTIME_DIR = "/opt/lazyslurm"
_VENV_DIR = "/opt/lazyslurm-venv"  # packaging_wheelhouse's wheels, in the generated image
_WHEELHOUSE = "wheelhouse"  # the build context of packaging_wheelhouse
_TAIL_LINES = 25
_RUNTIME_PROBES = {
    "podman": "command -v podman",
    "apptainer": "command -v apptainer || command -v singularity",
    "pyxis": "srun --help 2>&1 | grep -q -- --container-image",
}


def image_name(registry: str) -> str:
    """The image repository for ``packaging_registry`` (a bare host gets ``/lazyslurm``).

    >>> image_name("registry:5000/patterns"), image_name("127.0.0.1:5000")
    ('registry:5000/patterns', '127.0.0.1:5000/lazyslurm')
    """
    registry = registry.strip().removeprefix("docker://").rstrip("/")
    return registry if "/" in registry else f"{registry}/lazyslurm"


def pyxis_image(ref: str) -> str:
    """An image reference in enroot's form, ``REGISTRY#NAME:TAG``; a digest reference
    ``NAME@sha256:HEX`` becomes ``REGISTRY#NAME:sha256:HEX``, the form every enroot since
    3.0 reads (its digest goes where the tag would: ``/v2/NAME/manifests/sha256:HEX``;
    ``#NAME@sha256:HEX`` is read only since enroot 4.0).

    >>> pyxis_image("registry:5000/patterns:ab12")
    'registry:5000#patterns:ab12'
    >>> pyxis_image("registry:5000/team/p@sha256:" + "0" * 64)[:39]
    'registry:5000#team/p:sha256:00000000000'
    """
    host, _, rest = ref.partition("/")
    rest = rest.replace("@sha256:", ":sha256:")
    return f"{host}#{rest}" if rest and ("." in host or ":" in host or host == "localhost") else ref


def _images_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = Path(base) / "lazyslurm" / "images"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    check_private_dir(path)  # a digest planted there would pick the image jobs run
    return path


def _digest_file(tag_ref: str) -> Path:
    return _images_dir() / hashlib.sha256(tag_ref.encode()).hexdigest()[:40]


def read_digest(tag_ref: str) -> str | None:
    """The digest this client recorded when it pushed ``tag_ref`` (None if it never did),
    from a private file of the user's cache (``$XDG_CACHE_HOME/lazyslurm/images``)."""
    try:
        text = read_private(_digest_file(tag_ref)).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    lines = text.splitlines()
    if len(lines) == 2 and lines[0] == tag_ref and _DIGEST.fullmatch(lines[1]):
        return lines[1]
    return None


def record_digest(tag_ref: str, digest: str) -> None:
    """Record the digest of the image this client pushed as ``tag_ref``."""
    if not _DIGEST.fullmatch(digest):
        msg = f"not an image digest: {digest!r}"
        raise PackagingError(msg)
    atomic_write(_digest_file(tag_ref), f"{tag_ref}\n{digest}\n".encode())


def launch_words(
    runtime: str,
    ref: str,
    *,
    workdir: str,
    tls_verify: bool = True,
    run_args: Sequence[str] = (),
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(setup lines, launcher words)`` that run ``python3`` inside image ``ref`` in a job,
    with the workdir (run directories, staged code) mounted at the same path."""
    if runtime == "podman":
        words = [
            "podman", "run", "--rm", "--network=host",
            f"--tls-verify={'true' if tls_verify else 'false'}",
            "--env=SLURM_*", f"--volume={workdir}:{workdir}", f"--workdir={workdir}",
            *run_args, ref,
        ]  # fmt: skip
        return (), tuple(words)
    if runtime == "pyxis":
        setup = () if tls_verify else ("export ENROOT_ALLOW_HTTP=yes",)
        words = [
            "srun", "--ntasks=1", f"--container-image={pyxis_image(ref)}",
            f"--container-mounts={workdir}:{workdir}", f"--container-workdir={workdir}",
            *run_args,
        ]  # fmt: skip
        return setup, tuple(words)
    if runtime == "apptainer":
        words = [
            "apptainer", "exec", f"--bind={workdir}:{workdir}", f"--pwd={workdir}",
            *([] if tls_verify else ["--no-https"]), *run_args, f"docker://{ref}",
        ]  # fmt: skip
        return (), tuple(words)
    msg = f"unknown container runtime {runtime!r}"
    raise ClusterConfigError(msg)


# -------------------------------------------------------------------- the build context


def ignore_patterns(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    r"""The rules of ``context``'s ``.containerignore`` (podman reads it first) or
    ``.dockerignore``: ``(excludes, pattern)`` in order, the last one matching a path
    deciding (``!`` re-includes). Docker's syntax: ``*`` and ``?`` within a path
    segment, ``**`` any number of segments, a leading ``/`` ignored; a pattern matching a
    directory matches everything under it.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".dockerignore").write_text("# wheels\nwheelhouse\n**/*.pyc\n!keep.pyc\n")
    >>> rules = ignore_patterns(d)
    >>> [ignored(p, rules) for p in ("wheelhouse/a.whl", "src/m.pyc", "keep.pyc", "src/m.py")]
    [True, True, False, False]
    """
    for name in (".containerignore", ".dockerignore"):
        path = context / name
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            break
    else:
        return []
    rules = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line[1:].strip() if keep else line
        pattern = os.path.normpath(pattern).lstrip("/")
        if pattern in ("", "."):
            continue
        rules.append((not keep, re.compile(_pattern_regex(pattern))))
    return rules


def _pattern_regex(pattern: str) -> str:
    """A ``.dockerignore`` pattern as a regular expression over relative paths."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            i += 2
            if pattern.startswith("/", i):
                i += 1
                out.append("(?:.*/)?")
            else:
                out.append(".*")
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "^" + "".join(out) + "(?:/.*)?$"


def ignored(rel: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether the build leaves the context's file ``rel`` out (see :func:`ignore_patterns`)."""
    out = False
    for excludes, pattern in rules:
        if pattern.match(rel):
            out = excludes
    return out


def from_images(dockerfile: str) -> list[str]:
    r"""The images a Dockerfile builds ``FROM`` (not its own stages, not ``scratch``;
    ``--platform=`` dropped, ``ARG`` defaults substituted where given).

    >>> from_images("ARG V=3.11\nFROM python:${V}-slim AS build\nFROM build\nFROM scratch\n")
    ['python:3.11-slim']
    """
    args: dict[str, str] = {}
    stages: set[str] = set()
    out: list[str] = []
    for raw in dockerfile.splitlines():
        words = raw.strip().split()
        if not words:
            continue
        op = words[0].upper()
        if op == "ARG" and len(words) > 1 and "=" in words[1] and not stages and not out:
            name, _, value = words[1].partition("=")
            args[name] = value.strip("\"'")
        if op != "FROM":
            continue
        rest = [w for w in words[1:] if not w.startswith("--")]
        if not rest:
            continue
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), rest[0])
        if len(rest) >= 3 and rest[1].upper() == "AS":
            stages.add(rest[2].lower())
        if image.lower() in stages or image == "scratch" or image in out:
            continue
        out.append(image)
    return out


def _tail(text: str) -> str:
    return "\n".join(text.strip().splitlines()[-_TAIL_LINES:])


class ContainerBuilder:
    """``container`` for one backend session: builds, pushes and launches images (see the
    module docstring)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.options = target.options
        self.ready: dict[str, str] = {}  # tag -> the digest reference jobs run (session)
        self.runtime_ok: bool | None = None
        self.stats = {"builds": 0, "pushes": 0, "registry_checks": 0}
        self.timings: dict[str, float] = {}
        self._bases: dict[str, str] = {}  # base image -> what identifies its content
        self._importable: dict[str, dict[str, bool]] = {}  # image digest ref -> module -> ok

    # -- the cluster side
    def probe_line(self, workdir: str | None = None) -> str:
        """Whether the cluster has the runtime (the image brings its own Python)."""
        probe = _RUNTIME_PROBES[self.options.runtime]
        return f"( {probe} ) >/dev/null 2>&1 && echo LZ-RUNTIME=ok || echo LZ-RUNTIME=no"

    def read_probe(self, stdout: str) -> None:
        if "LZ-RUNTIME=" in stdout:
            self.runtime_ok = "LZ-RUNTIME=ok" in stdout

    def check_runtime(self, shell: Shell) -> None:
        if self.runtime_ok is None:  # once per connection
            self.read_probe(shell.run(self.probe_line()).stdout)
        if not self.runtime_ok:
            rt = self.options.runtime
            what = {"podman": "podman", "apptainer": "apptainer (or singularity)",
                    "pyxis": "srun --container-image (the Pyxis plugin)"}[rt]  # fmt: skip
            others = ", ".join(r for r in _RUNTIME_PROBES if r != rt)
            msg = (
                f"packaging_runtime={rt!r}, but the cluster has no {what}: choose another "
                f"runtime there ({others}), ask for it to be installed, or use "
                f"packaging='by-value' or 'wheel'; nothing was submitted"
            )
            raise ClusterConfigError(msg)

    def by_value_modules(self, resources: Resources, func: Any) -> list[types.ModuleType]:
        """The user's own modules (the image holds the installed ones)."""
        return self.target.project_modules()

    # -- the client side
    def prepare(
        self,
        shell: Shell,
        workdir: str,
        array_jobs: Sequence[ArrayJob],
        files: Mapping[str, bytes],
        run_dir: str = "",
    ) -> Prepared:
        opts = self.options
        if not opts.registry:
            msg = (
                "packaging='container' needs packaging_registry=... (the image repository "
                "jobs pull from, e.g. 'registry.example.org:5000/myproject')"
            )
            raise ClusterConfigError(msg)
        if not opts.dockerfile and not opts.base_image:
            msg = (
                "packaging='container' needs packaging_base_image=... (an image with Python "
                f"{sys.version_info[0]}.{sys.version_info[1]}) or packaging_dockerfile=..."
            )
            raise ClusterConfigError(msg)
        self.check_runtime(shell)
        ref = self.ensure_image()
        self.check_modules(ref, pickles(array_jobs, files))
        setup, launcher = launch_words(
            opts.runtime, ref, workdir=workdir, tls_verify=opts.tls_verify, run_args=opts.run_args
        )
        launch = Launch("python3", (*self.target.setup, *setup), launcher)
        return Prepared.of(array_jobs, launch)

    def context(self) -> tuple[str, dict[str, bytes], Path | None]:
        """(Dockerfile text, files of the lazyslurm layer, the project's build context).
        With a wheelhouse, the generated Dockerfile installs its wheels offline first."""
        opts = self.options
        files = {f"lazyslurm-runtime/{k}": v for k, v in runtime_files().items()}
        project = Path(opts.dockerfile).resolve().parent if opts.dockerfile else None
        base = "{base}" if opts.dockerfile else self._pinned(opts.base_image)
        lines = [f"FROM {base}"]
        if opts.wheelhouse and not opts.dockerfile:
            mount = f"--mount=type=bind,source={_WHEELHOUSE},target=/tmp/{_WHEELHOUSE}"
            # a bind mount's content is not part of the layer cache's key: the wheels'
            # own hash in the command is (else another wheelhouse reuses the old layer)
            lines += [
                f"RUN {mount} : wheels {self.wheelhouse_hash()} && "
                f"python3 -m venv {_VENV_DIR} && "
                f"{_VENV_DIR}/bin/python -m pip install -q --no-index --no-cache-dir "
                f"--find-links /tmp/{_WHEELHOUSE} /tmp/{_WHEELHOUSE}/*.whl",
                f"ENV PATH={_VENV_DIR}/bin:$PATH",
            ]
        lines += [f"COPY lazyslurm-runtime {_RUNTIME_DIR}", f"ENV PYTHONPATH={_RUNTIME_DIR}"]
        return "\n".join(lines) + "\n", files, project

    def wheelhouse(self) -> Path | None:
        """``packaging_wheelhouse``, checked: a directory of wheels."""
        given = self.options.wheelhouse
        if not given:
            return None
        path = Path(given).expanduser().resolve()
        if not path.is_dir() or not any(path.glob("*.whl")):
            msg = (
                f"packaging_wheelhouse={given!r} is not a directory of wheels: fill it on "
                f"this machine with `pip download -d {given} --only-binary=:all: "
                f"--python-version {sys.version_info[0]}.{sys.version_info[1]} "
                f"--platform manylinux2014_x86_64 PACKAGE...` (the image's platform)"
            )
            raise ClusterConfigError(msg)
        return path

    def wheelhouse_hash(self) -> str:
        """A hash of the wheelhouse's wheels (named by version: names and sizes)."""
        wheels = self.wheelhouse()
        if wheels is None:
            return ""
        listed = sorted((p.name, p.stat().st_size) for p in wheels.glob("*.whl"))
        return content_hash({"wheels": json.dumps(listed).encode()})

    def base_images(self) -> list[str]:
        """The images the build starts from: the project Dockerfile's ``FROM`` images, or
        ``packaging_base_image``."""
        if self.options.dockerfile:
            text = Path(self.options.dockerfile).read_text(encoding="utf-8", errors="replace")
            return from_images(text)
        return [self.options.base_image]

    def base_id(self, image: str) -> str:
        """What identifies ``image``'s content: the local image's ID (``podman image
        inspect``), else the registry's manifest digest (``skopeo inspect``), else its ID
        once pulled; "" when none of these answers (then only its name counts)."""
        if image in self._bases:
            return self._bases[image]
        tool = shutil.which(self.options.builder)
        found = ""
        pull_first = any(a.startswith("--pull") and a != "--pull=never" for a in
                         self.options.build_args)  # fmt: skip
        if tool is not None and not pull_first:
            found = self._inspect(tool, image)
        if not found and shutil.which("skopeo") and not pull_first:
            tls = [] if self.options.tls_verify else ["--tls-verify=false"]
            res = _quiet(["skopeo", "inspect", *tls, "--format", "{{.Digest}}",
                          f"docker://{image}"])  # fmt: skip
            if res and _DIGEST.fullmatch(res):
                found = f"digest {res}"
        if not found and tool is not None:
            tls = [] if self.options.tls_verify or self.options.builder == "docker" else [
                "--tls-verify=false"]  # fmt: skip
            if _quiet([tool, "pull", "-q", *tls, image]) is not None:
                found = self._inspect(tool, image)
        if not found:
            log.warning(
                "cannot tell the content of base image %s (not local, and neither skopeo nor "
                "%s pull reached it): the image tag covers its name only, so a base rebuilt "
                "under that name is not picked up",
                image,
                self.options.builder,
            )
        self._bases[image] = found
        return found

    @staticmethod
    def _inspect(tool: str, image: str) -> str:
        res = _quiet([tool, "image", "inspect", "--format", "{{.Id}}", image])
        return f"id {res}" if res else ""

    def _pinned(self, image: str) -> str:
        """``image`` as the generated Dockerfile names it: by the digest it was resolved
        to when that came from the registry (the build then uses exactly that)."""
        found = self.base_id(image)
        if not found.startswith("digest ") or "@" in image:
            return image
        repo = image.rpartition(":")[0] if ":" in image.rpartition("/")[2] else image
        return f"{repo}@{found.removeprefix('digest ')}"

    def content_hash(self) -> str:
        text, files, project = self.context()
        parts = dict(files)
        parts["Dockerfile"] = text.encode()
        parts["meta"] = json.dumps(
            [self.options.platform, list(self.options.build_args), sys.version_info[:2]]
        ).encode()
        parts["bases"] = "\n".join(f"{b} {self.base_id(b)}" for b in self.base_images()).encode()
        parts["wheelhouse"] = self.wheelhouse_hash().encode()
        if project is not None:
            dockerfile = Path(self.options.dockerfile).resolve()
            parts["project/Dockerfile"] = dockerfile.read_bytes()
            rules = ignore_patterns(project)
            for path in sorted(project.rglob("*")):
                rel = path.relative_to(project)
                if (
                    path.is_file()
                    and not _SKIP_DIRS & set(rel.parts)
                    and not ignored(rel.as_posix(), rules)
                ):
                    parts[f"project/{rel}"] = path.read_bytes()
        return content_hash(parts)

    def ensure_image(self) -> str:
        """The digest reference (``NAME@sha256:...``) jobs run for this content: the one
        this client recorded when it pushed the tag, if the registry still has it; else
        the image is built and pushed, and the digest of that push recorded. A tag this
        client has no digest for is never trusted, whoever pushed it."""
        tag_ref = f"{image_name(self.options.registry)}:{self.content_hash()}"
        if tag_ref in self.ready:
            return self.ready[tag_ref]
        name = tag_ref.rpartition(":")[0]
        digest = read_digest(tag_ref)
        t0 = time.perf_counter()
        # also: is the registry reachable at all (before anything is built)
        exists = self.registry_has(f"{name}@{digest}" if digest else tag_ref)
        self.timings["registry_check_s"] = time.perf_counter() - t0
        if digest is None or not exists:
            if exists:
                log.info(
                    "image tag %s exists in the registry but this client did not push it: "
                    "building and pushing its own (jobs run the digest of that push)",
                    tag_ref,
                )
            t0 = time.perf_counter()
            self.build(tag_ref)
            self.timings["build_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            digest = self.push(tag_ref)
            self.timings["push_s"] = time.perf_counter() - t0
            record_digest(tag_ref, digest)
        self.ready[tag_ref] = f"{name}@{digest}"
        return self.ready[tag_ref]

    def check_modules(self, ref: str, blobs: list[bytes]) -> None:
        """Refuse (:class:`~lazyslurm.errors.UnshippableModuleError`, nothing submitted)
        a run whose pickles name installed modules the image's ``python3`` cannot import:
        asked once per image digest and set of modules (one ``podman run``), remembered
        beside the image's recorded digest. When the image cannot be run here, nothing is
        refused (a task then fails on the node with ``ModuleNotFoundError``)."""
        needed = referenced_modules(blobs, third_party_modules())
        if not needed:
            return
        known = self._importable.setdefault(ref, _read_modules(ref))
        unknown = sorted(needed - set(known))
        if unknown:
            t0 = time.perf_counter()
            found = self._ask_image(ref, unknown)
            self.timings["module_check_s"] = time.perf_counter() - t0
            if found is None:
                return
            known.update((n, n in found) for n in unknown)
            _write_modules(ref, known)
        missing = sorted(n for n in needed if not known.get(n))
        if missing:
            raise self.missing_error(ref, missing)

    def _ask_image(self, ref: str, names: list[str]) -> set[str] | None:
        """Which of ``names`` the image's python3 imports (None: it could not be run)."""
        tool = shutil.which(self.options.builder)
        if tool is None:
            return None
        code = (
            "import importlib.util as u, sys\n"
            "print('LZ-HAVE=' + ','.join(n for n in sys.argv[1:] if u.find_spec(n)))"
        )
        tls = [] if self.options.tls_verify or self.options.builder == "docker" else [
            "--tls-verify=false"]  # fmt: skip
        out = _quiet([tool, "run", "--rm", *tls, "--entrypoint=", ref, "python3", "-c", code,
                      *names], whole=True)  # fmt: skip
        m = re.search(r"^LZ-HAVE=(.*)$", out or "", re.MULTILINE)
        if m is None:
            log.warning("could not ask image %s which modules it imports: not checked", ref)
            return None
        return set(m.group(1).split(",")) - {""}

    def missing_error(self, ref: str, missing: list[str]) -> UnshippableModuleError:
        names = ", ".join(missing)
        versions = []
        for n in missing:
            mod = sys.modules.get(n)
            v = getattr(mod, "__version__", None)
            versions.append(f"{n}=={v}" if isinstance(v, str) else n)
        wheels = self.options.wheelhouse or "wheelhouse"
        msg = (
            f"task code needs module(s) {names} that python3 in the image {ref} cannot "
            f"import (they are installed here, on the client), so nothing was submitted. Add "
            f"them to the image: download their wheels here (`pip download -d {wheels} "
            f"--only-binary=:all: --python-version {sys.version_info[0]}.{sys.version_info[1]}"
            f" --platform manylinux2014_x86_64 {' '.join(versions)}`) and pass "
            f"packaging_wheelhouse={wheels!r} (installed offline into the image), install "
            f"them in your Dockerfile (packaging_dockerfile=...), or use a "
            f"packaging_base_image that has them"
        )
        return UnshippableModuleError(msg)

    def registry_has(self, ref: str) -> bool:
        """Whether the registry holds ``ref``, ``NAME:TAG`` or ``NAME@DIGEST`` (Docker
        registry HTTP API v2)."""
        self.stats["registry_checks"] += 1
        host, _, rest = ref.partition("/")
        if "@" in rest:
            name, _, tag = rest.partition("@")
        else:
            name, _, tag = rest.rpartition(":")
        schemes = ["https"] if self.options.tls_verify else ["https", "http"]
        ctx = ssl.create_default_context()
        if not self.options.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        errors = []
        for scheme in schemes:
            req = urllib.request.Request(
                f"{scheme}://{host}/v2/{name}/manifests/{tag}",
                method="HEAD",
                headers={
                    "Accept": "application/vnd.oci.image.manifest.v1+json, "
                    "application/vnd.docker.distribution.manifest.v2+json, "
                    "application/vnd.oci.image.index.v1+json"
                },
            )
            try:
                with urllib.request.urlopen(req, timeout=10, context=ctx):
                    return True
            except urllib.error.HTTPError as exc:
                # 404: not there; 401/403: asks for credentials (podman push has them)
                return False if exc.code in (401, 403, 404) else _raise_registry(host, exc)
            except (urllib.error.URLError, OSError) as exc:
                errors.append(f"{scheme}: {getattr(exc, 'reason', exc)}")
        msg = (
            f"the container registry {host} cannot be reached ({'; '.join(errors)}): check "
            f"packaging_registry={self.options.registry!r} (host:port/name), that the registry "
            f"runs and this machine can reach it"
            + ("; for a registry without TLS pass packaging_tls_verify=False"
               if self.options.tls_verify else "")
            + "; nothing was built or submitted"
        )  # fmt: skip
        raise RegistryError(msg)

    def _tool(self) -> str:
        builder = self.options.builder
        path = shutil.which(builder)
        if path is None:
            msg = (
                f"packaging='container' builds images with {builder}, which is not installed "
                f"on this machine: install it or pass packaging_builder='podman'/'docker'"
            )
            raise PackagingError(msg)
        return path

    def build(self, ref: str) -> None:
        tool = self._tool()
        text, files, project = self.context()
        opts = self.options
        common = [*(["--isolation=chroot"] if opts.builder == "podman" else [])]
        if opts.platform:
            common.append(f"--platform={opts.platform}")
        common.extend(opts.build_args)
        self.stats["builds"] += 1
        wheels = self.wheelhouse()
        with tempfile.TemporaryDirectory(prefix="lazyslurm-build-") as tmp:
            if project is not None:  # the project's own image first, then our layer on it
                base = f"{image_name(opts.registry)}:project-{self.content_hash()}"
                # ARG LAZYSLURM_WHEELHOUSE in the Dockerfile keys its layer cache by the
                # wheels (a bind mount's content is not part of that key)
                extra = (
                    [f"--build-context={_WHEELHOUSE}={wheels}",
                     f"--build-arg=LAZYSLURM_WHEELHOUSE={self.wheelhouse_hash()}"]
                    if wheels
                    else []
                )  # fmt: skip
                self._run(
                    [tool, "build", *common, *extra, "-t", base, "-f", str(opts.dockerfile),
                     str(project)],
                    "build of the project's Dockerfile",
                )  # fmt: skip
                text = text.replace("{base}", base)
            ctx = Path(tmp)
            (ctx / "Dockerfile").write_text(text)
            for rel, data in files.items():
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                (ctx / rel).write_bytes(data)
            if wheels is not None and project is None:
                (ctx / _WHEELHOUSE).mkdir()
                for whl in wheels.glob("*.whl"):
                    shutil.copy2(whl, ctx / _WHEELHOUSE / whl.name)
            self._run([tool, "build", *common, "-t", ref, str(ctx)], "image build")
        self._check_python(tool, ref)

    def _check_python(self, tool: str, ref: str) -> None:
        """The image's python3 must match this client's minor version (code by value)."""
        out = self._run(
            [tool, "run", "--rm", ref, "python3", "-c",
             "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
            "python3 check in the image",
        )  # fmt: skip
        version = tuple(int(x) for x in out.strip().splitlines()[-1].split("."))
        check_python(version, python="python3", code_by_value=True, where=f"in {ref}")

    def push(self, ref: str) -> str:
        """Push ``ref``; returns the digest of the manifest pushed (``sha256:...``):
        podman's ``--digestfile``, or the digest docker prints."""
        tool = self._tool()
        self.stats["pushes"] += 1
        what = "push (rejected by the registry?)"
        if self.options.builder == "docker":
            # docker reads insecure registries from its daemon configuration
            out = self._run([tool, "push", ref], what)
            found = re.findall(r"digest: (sha256:[0-9a-f]{64})", out)
        else:
            tls = [] if self.options.tls_verify else ["--tls-verify=false"]
            with tempfile.TemporaryDirectory(prefix="lazyslurm-push-") as tmp:
                file = Path(tmp) / "digest"
                out = self._run([tool, "push", *tls, f"--digestfile={file}", ref], what)
                found = _DIGEST.findall(file.read_text()) if file.is_file() else []
        if not found:
            msg = (
                f"container push of {ref} reported no image digest, so jobs could not run "
                f"it by digest; nothing was submitted. Output: {_tail(out)}"
            )
            raise PackagingError(msg)
        return found[-1]

    @staticmethod
    def _run(argv: list[str], what: str) -> str:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        except OSError as exc:
            msg = f"container {what} could not start: {exc}"
            raise PackagingError(msg) from exc
        if proc.returncode != 0:
            cmd = " ".join(shlex.quote(a) for a in argv)
            msg = (
                f"container {what} failed (exit {proc.returncode}): {cmd}\n"
                f"--- last lines ---\n{_tail(proc.stdout + proc.stderr)}\n"
                f"nothing was submitted"
            )
            raise PackagingError(msg)
        return proc.stdout


def _quiet(argv: list[str], *, whole: bool = False) -> str | None:
    """The stripped output of a query command (its last line, or all of it: ``whole``),
    None when it fails or cannot start."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    out = proc.stdout.strip()
    return out if whole else (out.splitlines() or [""])[-1].strip()


def _modules_file(ref: str) -> Path:
    return _images_dir() / (hashlib.sha256(ref.encode()).hexdigest()[:40] + ".modules")


def _read_modules(ref: str) -> dict[str, bool]:
    """What the image ``ref`` (by digest) was found to import, from the private cache."""
    try:
        data = json.loads(read_private(_modules_file(ref)).decode("utf-8", "replace"))
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("ref") != ref:
        return {}
    found = data.get("modules", {})
    return {str(k): bool(v) for k, v in found.items()} if isinstance(found, dict) else {}


def _write_modules(ref: str, known: Mapping[str, bool]) -> None:
    atomic_write(_modules_file(ref), json.dumps({"ref": ref, "modules": dict(known)}).encode())


def _raise_registry(host: str, exc: Exception) -> bool:
    msg = f"the container registry {host} answered with an error: {exc}; nothing was submitted"
    raise RegistryError(msg)


BUILDER = ContainerBuilder
