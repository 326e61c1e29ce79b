"""``packaging="container"``: an image per content hash, built and pushed from the client,
run by podman, Pyxis/enroot or Apptainer in the job script.

The image is the project's Dockerfile (``packaging_dockerfile``) or a generated one on
``packaging_base_image``, plus a last layer holding lazyslurm's runner and cloudpickle
(the user's own modules travel by value, as with ``by-value``). Its tag is the content
hash of everything that goes into it (and the client's Python minor version, which the
image's Python must match for code pickled by value).

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

from lazyslurm.backends.packaging.base import Launch, Prepared
from lazyslurm.backends.packaging.modules import check_python, content_hash, runtime_files
from lazyslurm.backends.packaging.target import Target
from lazyslurm.errors import ClusterConfigError, PackagingError, RegistryError
from lazyslurm.store import atomic_write, check_private_dir, read_private

if TYPE_CHECKING:
    from lazyslurm.backends.shell.base import Shell
    from lazyslurm.graph.resources import Resources
    from lazyslurm.planning.planner import ArrayJob

__all__ = [
    "BUILDER",
    "ContainerBuilder",
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
        setup, launcher = launch_words(
            opts.runtime, ref, workdir=workdir, tls_verify=opts.tls_verify, run_args=opts.run_args
        )
        launch = Launch("python3", (*self.target.setup, *setup), launcher)
        return Prepared.of(array_jobs, launch)

    def context(self) -> tuple[str, dict[str, bytes], Path | None]:
        """(Dockerfile text, files of the lazyslurm layer, the project's build context)."""
        opts = self.options
        files = {f"lazyslurm-runtime/{k}": v for k, v in runtime_files().items()}
        project = Path(opts.dockerfile).resolve().parent if opts.dockerfile else None
        base = "{base}" if opts.dockerfile else opts.base_image
        text = (
            f"FROM {base}\nCOPY lazyslurm-runtime {_RUNTIME_DIR}\nENV PYTHONPATH={_RUNTIME_DIR}\n"
        )
        return text, files, project

    def content_hash(self) -> str:
        text, files, project = self.context()
        parts = dict(files)
        parts["Dockerfile"] = text.encode()
        parts["meta"] = json.dumps(
            [self.options.platform, list(self.options.build_args), sys.version_info[:2]]
        ).encode()
        if project is not None:
            dockerfile = Path(self.options.dockerfile).resolve()
            parts["project/Dockerfile"] = dockerfile.read_bytes()
            for path in sorted(project.rglob("*")):
                rel = path.relative_to(project)
                if path.is_file() and not _SKIP_DIRS & set(rel.parts):
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
        with tempfile.TemporaryDirectory(prefix="lazyslurm-build-") as tmp:
            if project is not None:  # the project's own image first, then our layer on it
                base = f"{image_name(opts.registry)}:project-{self.content_hash()}"
                self._run(
                    [tool, "build", *common, "-t", base, "-f", str(opts.dockerfile), str(project)],
                    "build of the project's Dockerfile",
                )
                text = text.replace("{base}", base)
            ctx = Path(tmp)
            (ctx / "Dockerfile").write_text(text)
            for rel, data in files.items():
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                (ctx / rel).write_bytes(data)
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


def _raise_registry(host: str, exc: Exception) -> bool:
    msg = f"the container registry {host} answered with an error: {exc}; nothing was submitted"
    raise RegistryError(msg)


BUILDER = ContainerBuilder
