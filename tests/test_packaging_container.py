"""Container packaging (lazyslurm.backends.packaging.container): rendered job text for Pyxis and
Apptainer against recorded files, and real builds, pushes and podman runs in Slurm jobs
on the test cluster and its loopback registry."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from examples import parallelization_patterns as pp
from lazyslurm import Cluster, compute, task
from lazyslurm.backends.packaging import container
from lazyslurm.backends.packaging.container import launch_words
from lazyslurm.backends.slurm.render import job_script
from lazyslurm.errors import (
    ClusterConfigError,
    PackagingError,
    RegistryError,
    UnshippableModuleError,
)
from lazyslurm.graph.resources import Resources
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.store import RunLayout

DATA = Path(__file__).parent / "data"


def tiny_wheel(where: Path, name: str = "lzdep", version: str = "1.0", suffix: str = "!") -> Path:
    """A pure-Python wheel made by hand (a dependency that needs no index)."""
    import zipfile

    whl = where / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{name}.py", f"SUFFIX = {suffix!r}\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        z.writestr(
            f"{info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        z.writestr(f"{info}/RECORD", "")
    return whl


REF = "registry:5000/patterns@sha256:" + "0123456789abcdef" * 4  # jobs run digests
WORKDIR = "/home/u/.lazyslurm"
RUN_ID = "20261124-120000-abcdef"
EXPECTED_PIPELINE = [f"final_transform_{i}(preprocessed_data_{i + 1})" for i in range(3)]


def rendered(runtime: str) -> str:
    setup, launcher = launch_words(runtime, REF, workdir=WORKDIR, tls_verify=False)
    job = ArrayJob("aj0", "stage1_preprocess", ("k0", "k1", "k2"), Resources())
    return job_script(
        job,
        run_id=RUN_ID,
        layout=RunLayout.of(RUN_ID, WORKDIR),
        python="python3",
        setup=setup,
        launcher=launcher,
    )


@pytest.mark.parametrize("runtime", ["pyxis", "apptainer", "podman"])
def test_job_script_per_runtime_matches_recorded_file(runtime):
    """Each runtime's job script (image by digest, mounts, insecure registry) is as recorded."""
    assert rendered(runtime) == (DATA / f"job_container_{runtime}.sh").read_text()


# --------------------------------------------------------------------------- real


@pytest.fixture(scope="module")
def cenv(cluster_env):
    if "LAZYSLURM_TEST_REGISTRY" not in cluster_env or shutil.which("podman") is None:
        pytest.skip("container test infrastructure not available (tests/cluster/containers.sh)")
    return cluster_env


@pytest.fixture
def podman_env(cenv, monkeypatch):
    """podman on this machine (client builds) and in jobs uses the test configuration."""
    conf = {
        "CONTAINERS_CONF": cenv["LAZYSLURM_TEST_CONTAINERS_CONF"],
        "CONTAINERS_STORAGE_CONF": cenv["LAZYSLURM_TEST_CONTAINERS_STORAGE_CONF"],
    }
    for k, v in conf.items():
        monkeypatch.setenv(k, v)
    return {"SLURM_CONF": cenv["LAZYSLURM_TEST_SLURM_CONF"], **conf}


def container_cluster(cenv, podman_env, tmp_path, **kw) -> Cluster:
    opts = dict(
        packaging="container",
        packaging_registry=f"{cenv['LAZYSLURM_TEST_REGISTRY']}/lazyslurm-tests",
        packaging_tls_verify=False,
        packaging_base_image=cenv["LAZYSLURM_TEST_BASE_IMAGE"],
    )
    opts.update(kw)
    return Cluster("slurm", workdir=tmp_path / "work", env=podman_env, poll_max_s=0.5, **opts)


@pytest.mark.slurm
def test_seed_patterns_in_containers_from_the_command_line(
    cenv, podman_env, tmp_path, capsys, monkeypatch
):
    """The seed's command line with --packaging container: the three patterns run in
    podman inside Slurm jobs, from an image pushed to the loopback registry."""
    monkeypatch.setenv("SLURM_CONF", podman_env["SLURM_CONF"])
    argv = [
        "--backend", "slurm", "--style", "lazy", "--workdir", str(tmp_path),
        "--packaging", "container",
        "--packaging-registry", f"{cenv['LAZYSLURM_TEST_REGISTRY']}/patterns",
        "--packaging-platform", "linux/amd64",
        "--packaging-tls-verify", "false",
        "--packaging-base-image", cenv["LAZYSLURM_TEST_BASE_IMAGE"],
    ]  # fmt: skip
    assert pp.main(argv) == 0
    out = capsys.readouterr().out
    assert "'total_sum': 124750" in out and "'lr': 0.1" in out
    assert "final_transform_2(preprocessed_data_3)" in out
    script = next((tmp_path / "runs").glob("*/jobs/aj0.sh")).read_text()
    assert "exec podman run" in script and "/patterns@sha256:" in script  # run by digest


@pytest.mark.slurm
def test_second_compute_does_not_rebuild(cenv, podman_env, tmp_path):
    """A new image is built and pushed once; a second session finds the tag in the
    registry and neither builds nor pushes."""
    label = [f"--label=lazyslurm-test={uuid.uuid4().hex}"]  # content no earlier run had
    first = container_cluster(cenv, podman_env, tmp_path, packaging_build_args=label)
    with first:
        assert compute(pp.stage1_preprocess("a")) == ("preprocessed_a",)
        built = first.backend.packager.builders["container"]
        assert built.stats == {"builds": 1, "pushes": 1, "registry_checks": 1}
        assert compute(pp.stage3_finalize("b")) == ("final_b",)
        assert built.stats["registry_checks"] == 1  # once per session
    second = container_cluster(cenv, podman_env, tmp_path, packaging_build_args=label)
    with second:
        assert compute(pp.stage1_preprocess("c")) == ("preprocessed_c",)
        again = second.backend.packager.builders["container"]
        assert again.stats == {"builds": 0, "pushes": 0, "registry_checks": 1}


@pytest.mark.slurm
def test_unreachable_registry_is_refused_before_building(cenv, podman_env, tmp_path):
    """A registry nobody answers at: a clear error, nothing built or submitted."""
    c = container_cluster(cenv, podman_env, tmp_path, packaging_registry="127.0.0.1:9/x")
    with c, pytest.raises(RegistryError, match="cannot be reached"):
        backend = c.backend
        compute(pp.stage1_preprocess("x"))
    assert backend.stats["sbatch"] == 0
    assert backend.packager.builders["container"].stats["builds"] == 0


@pytest.fixture
def readonly_registry(cenv, tmp_path):
    """A second real registry, in read-only mode: it refuses every push."""
    port = int(cenv["LAZYSLURM_TEST_REGISTRY"].rsplit(":", 1)[1]) + 1
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
        f"    rootdirectory: {tmp_path}/data\n  maintenance:\n    readonly:\n"
        f"      enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(
        ["docker-registry", "serve", str(config)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(100):
            try:
                import socket

                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


@pytest.mark.slurm
def test_a_rejected_push_is_a_clear_error(cenv, podman_env, tmp_path, readonly_registry):
    """A registry that refuses the push: the error shows the push's last lines; nothing
    is submitted."""
    label = [f"--label=lazyslurm-test={uuid.uuid4().hex}"]
    c = container_cluster(
        cenv, podman_env, tmp_path,
        packaging_registry=f"{readonly_registry}/x", packaging_build_args=label,
    )  # fmt: skip
    with c, pytest.raises(PackagingError) as info:
        backend = c.backend
        compute(pp.stage1_preprocess("x"))
    assert "push" in str(info.value) and "last lines" in str(info.value)
    assert backend.stats["sbatch"] == 0


@pytest.mark.slurm
def test_a_failing_build_shows_the_tail_of_its_log(cenv, podman_env, tmp_path):
    """The project's Dockerfile fails to build: the error shows its last lines."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "Dockerfile").write_text(
        f"FROM {cenv['LAZYSLURM_TEST_BASE_IMAGE']}\nRUN echo broken-step-output && exit 7\n"
    )
    dockerfile = str(project / "Dockerfile")
    c = container_cluster(cenv, podman_env, tmp_path, packaging_dockerfile=dockerfile)
    with c, pytest.raises(PackagingError) as info:
        backend = c.backend
        compute(pp.stage1_preprocess("x"))
    assert "broken-step-output" in str(info.value)
    assert backend.stats["sbatch"] == 0


@pytest.mark.slurm
def test_a_runtime_missing_on_the_cluster_is_refused(cenv, cluster_env):
    """Over SSH, a cluster without apptainer: a clear error before anything is built."""
    opts = dict(
        hostname=cluster_env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(cluster_env["LAZYSLURM_TEST_SSH_PORT"]),
        username=cluster_env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=cluster_env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=cluster_env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
    )
    c = Cluster(
        "ssh", packaging="container", packaging_runtime="apptainer",
        packaging_registry="127.0.0.1:9/x", packaging_base_image="b", **opts,
    )  # fmt: skip
    with c, pytest.raises(ClusterConfigError, match="no apptainer"):
        backend = c.backend
        compute(pp.stage1_preprocess("x"))
    assert backend.stats["sbatch"] == 0


# --------------------------------------------------------------------------- the tag


def test_dockerignore_rules(tmp_path):
    """Docker's .dockerignore syntax: segments, **, a directory covers what is under it,
    a leading / is the context's root, the last matching rule wins; .containerignore
    first."""
    (tmp_path / ".dockerignore").write_text(
        "# comment\nwheelhouse\n**/*.pyc\ndocs/*.md\n/build\n!docs/keep.md\n"
    )
    rules = container.ignore_patterns(tmp_path)
    assert container.ignored("wheelhouse/numpy.whl", rules)
    assert container.ignored("a/b/c.pyc", rules) and container.ignored("c.pyc", rules)
    assert container.ignored("docs/x.md", rules) and not container.ignored("docs/a/x.md", rules)
    assert not container.ignored("docs/keep.md", rules)
    assert container.ignored("build/x", rules) and not container.ignored("src/build.py", rules)
    (tmp_path / ".containerignore").write_text("docs\n")
    rules = container.ignore_patterns(tmp_path)
    assert container.ignored("docs/keep.md", rules)
    assert not container.ignored("wheelhouse/numpy.whl", rules)


def test_from_images_of_a_dockerfile():
    text = "ARG BASE=debian:12\nFROM --platform=linux/amd64 ${BASE} AS b\nFROM b\nRUN x\n"
    assert container.from_images(text) == ["debian:12"]


def user_project(root: Path, base: str) -> Path:
    root.mkdir()
    (root / "Dockerfile").write_text(f"FROM {base}\nCOPY app.py /app/app.py\n")
    (root / "app.py").write_text("print('v1')\n")
    (root / ".dockerignore").write_text("wheelhouse\n*.log\n")
    (root / "wheelhouse").mkdir()
    (root / "wheelhouse" / "big.whl").write_bytes(b"x" * 1000)
    return root / "Dockerfile"


def test_the_tag_honours_dockerignore(cenv, podman_env, tmp_path):
    """What .dockerignore leaves out of the build context does not change the tag (a
    wheelhouse in the project folder); what the build sends does."""
    dockerfile = user_project(tmp_path / "proj", cenv["LAZYSLURM_TEST_BASE_IMAGE"])
    c = container_cluster(cenv, podman_env, tmp_path, packaging_dockerfile=str(dockerfile))
    builder = c.backend.packager.builder("container")
    tag = builder.content_hash()
    (tmp_path / "proj" / "wheelhouse" / "big.whl").write_bytes(b"y" * 2000)
    (tmp_path / "proj" / "build.log").write_text("noise")
    assert builder.content_hash() == tag
    (tmp_path / "proj" / "app.py").write_text("print('v2')\n")
    assert builder.content_hash() != tag


def test_a_base_rebuilt_under_the_same_name_changes_the_tag(cenv, podman_env, tmp_path):
    """The tag covers the base image's content (its ID), not the text FROM NAME: a base
    rebuilt under the same name (another rootfs) gives another tag."""
    base = f"localhost/lazyslurm-test-base-{uuid.uuid4().hex[:8]}:x"
    ctx = tmp_path / "base"
    ctx.mkdir()
    tags = []
    try:
        for content in ("one", "two"):
            (ctx / "Dockerfile").write_text(
                f"FROM {cenv['LAZYSLURM_TEST_BASE_IMAGE']}\nRUN echo {content} > /etc/which\n"
            )
            subprocess.run(["podman", "build", "--isolation=chroot", "-q", "-t", base, str(ctx)],
                           check=True, capture_output=True)  # fmt: skip
            c = container_cluster(cenv, podman_env, tmp_path, packaging_base_image=base)
            tags.append(c.backend.packager.builder("container").content_hash())
    finally:
        subprocess.run(["podman", "rmi", "-f", base], capture_output=True)
    assert tags[0] != tags[1]


def test_a_base_only_in_the_registry_is_pinned_by_digest(cenv, podman_env, tmp_path):
    """A base image that is not local: its digest in the registry (skopeo) goes into the
    tag, and the generated Dockerfile builds FROM it by that digest."""
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    remote = f"{cenv['LAZYSLURM_TEST_REGISTRY']}/lazyslurm-tests-base:{uuid.uuid4().hex[:8]}"
    subprocess.run(["podman", "tag", cenv["LAZYSLURM_TEST_BASE_IMAGE"], remote], check=True)
    subprocess.run(["podman", "push", "-q", "--tls-verify=false", remote], check=True,
                   capture_output=True)  # fmt: skip
    subprocess.run(["podman", "untag", cenv["LAZYSLURM_TEST_BASE_IMAGE"], remote], check=True)
    c = container_cluster(cenv, podman_env, tmp_path, packaging_base_image=remote)
    builder = c.backend.packager.builder("container")
    text, _, _ = builder.context()
    assert builder.base_id(remote).startswith("digest sha256:")
    assert text.startswith(f"FROM {remote.rpartition(':')[0]}@sha256:")


# --------------------------------------------------------------------------- modules


@task
def graph_size(g) -> int:
    return g.number_of_nodes()


@task
def dep_suffix() -> str:
    import lzdep  # installed in the image from the wheelhouse

    return lzdep.SUFFIX


@pytest.mark.slurm
def test_a_module_missing_from_the_image_is_refused_before_submission(
    cenv, podman_env, tmp_path, monkeypatch
):
    """The run's pickles name networkx (installed here), which the base image lacks: a
    typed error naming the module and the fixes (packaging_wheelhouse), nothing submitted;
    the image's answer is remembered (no second podman run)."""
    import networkx as nx

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing remembered yet
    c = container_cluster(cenv, podman_env, tmp_path)
    with c, pytest.raises(UnshippableModuleError) as info:
        backend = c.backend
        compute(graph_size(nx.path_graph(3)))
    msg = str(info.value)
    assert "networkx" in msg and "packaging_wheelhouse" in msg and "nothing was submitted" in msg
    assert backend.stats["sbatch"] == 0
    builder = backend.packager.builders["container"]
    c = container_cluster(cenv, podman_env, tmp_path)
    with c, pytest.raises(UnshippableModuleError):
        again = c.backend.packager.builder("container")
        compute(graph_size(nx.path_graph(3)))
    assert "module_check_s" not in again.timings
    assert "module_check_s" in builder.timings


@pytest.mark.slurm
@pytest.mark.parametrize("how", ["generated", "dockerfile"])
def test_a_wheelhouse_installs_wheels_without_an_index(cenv, podman_env, tmp_path, how):
    """packaging_wheelhouse: wheels from the client installed with --no-index: by the
    generated Dockerfile, or by the project's Dockerfile from the build context
    `wheelhouse`; the task imports the dependency in a Slurm job. Another wheelhouse
    (a new version) makes another image: the layer that installs them is not reused."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny_wheel(wheels)
    kw: dict = {"packaging_wheelhouse": str(wheels)}
    if how == "dockerfile":
        project = tmp_path / "proj"
        project.mkdir()
        (project / "Dockerfile").write_text(
            f"FROM {cenv['LAZYSLURM_TEST_BASE_IMAGE']}\n"
            "ARG LAZYSLURM_WHEELHOUSE\n"
            "RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse python3 -m venv /opt/v "
            "&& /opt/v/bin/python -m pip install -q --no-index --find-links /wheelhouse lzdep\n"
            "ENV PATH=/opt/v/bin:$PATH\n"
        )
        kw["packaging_dockerfile"] = str(project / "Dockerfile")
    c = container_cluster(cenv, podman_env, tmp_path, **kw)
    with c:
        assert compute(dep_suffix()) == ("!",)
    (wheels / "lzdep-1.0-py3-none-any.whl").unlink()
    tiny_wheel(wheels, version="2.0", suffix="?")
    c = container_cluster(cenv, podman_env, tmp_path, **kw)
    with c:
        assert compute(dep_suffix()) == ("?",)
