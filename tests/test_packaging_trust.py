"""Code planted by another user never runs as you (lazyslurm.backends.packaging): the probe checks
every entry of WORKDIR/code a run uses, jobs check the venv and its lock themselves, and
container jobs run the image digest this client pushed, never a tag anyone could push.

"Another user" is simulated as root: entries are created and chowned to ``nobody``, made
writable by others, or made symbolic links, in the SSH test user's work directory."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from examples import parallelization_patterns as pp
from lazyslurm import Cluster, compute, task
from lazyslurm.backends.packaging import modules, read_code_listing
from lazyslurm.backends.packaging.container import (
    image_name,
    launch_words,
    pyxis_image,
    read_digest,
    record_digest,
)
from lazyslurm.backends.shell import LocalShell, SSHShell
from lazyslurm.cache import list_runs
from lazyslurm.errors import ElementFailedError, UntrustedStoreError
from lazyslurm.store import check_private_dir

OTHER_UID = 65534  # nobody
DIGEST = "sha256:" + "ab" * 32
PROJECT = Path(__file__).parent / "data" / "wheelproj"


# --------------------------------------------------------------------------- pure


def test_a_name_cannot_forge_a_listing_record():
    """Records are NUL-terminated: a planted name holding a newline and a fake record (or
    a fake end of the listing) does not make an entry look private."""
    forged = "x\nd 7 700 ab\0"  # what a name could hold, but for the NUL it cannot
    out = (
        "LZ-CODE-BEGIN 7\nd 7 700 .\0d 9 755 ab\0"
        f"d 9 755 cd\0f 9 644 cd/{forged[:-1]}\nLZ-CODE-END\0d 7 700 ef\0\nLZ-CODE-END\n"
    )
    ok, bad = read_code_listing(out)
    assert ok == {"ef"}
    assert set(bad) == {"ab", "cd", f"cd/{forged[:-1]}\nLZ-CODE-END"}


def test_code_dir_not_private_taints_everything():
    """code/ itself writable by others: no entry under it counts as present."""
    ok, bad = read_code_listing("LZ-CODE-BEGIN 7\nd 7 1777 .\0d 7 700 ab\0\nLZ-CODE-END")
    assert ok == set() and bad == {".": "is writable by others (mode 1777)"}


def test_a_venv_marker_or_bin_that_is_a_link_is_refused_but_bin_python_may_be():
    """Inside a venv, bin/python and lib64 are links the venv tool made; .ready and bin
    must not be links."""
    out = (
        "LZ-CODE-BEGIN 7\nd 7 700 .\0d 7 700 venv-a\0l 7 777 venv-a/lib64\0"
        "l 7 777 venv-a/bin/python\0d 7 700 venv-a/bin\0d 7 700 venv-b\0l 7 777 venv-b/.ready\0"
        "d 7 700 venv-c\0l 7 777 venv-c/bin\0d 7 700 venv-d\0l 9 777 venv-d/bin/python\0"
        "\nLZ-CODE-END"
    )
    ok, bad = read_code_listing(out)
    assert ok == {"venv-a"}
    assert set(bad) == {"venv-b/.ready", "venv-c/bin", "venv-d/bin/python"}


@pytest.mark.parametrize(
    ("runtime", "word"),
    [
        ("podman", f"registry:5000/team/p@{DIGEST}"),
        ("pyxis", f"--container-image=registry:5000#team/p:{DIGEST}"),
        ("apptainer", f"docker://registry:5000/team/p@{DIGEST}"),
    ],
)
def test_digest_references_per_runtime(runtime, word):
    """Each runtime gets the digest in its own form (enroot: the digest where the tag
    goes, which enroot 3 and 4 both read)."""
    _, words = launch_words(runtime, f"registry:5000/team/p@{DIGEST}", workdir="/w")
    assert word in words
    assert pyxis_image(f"localhost/p@{DIGEST}") == f"localhost#p:{DIGEST}"


def test_recorded_digests_are_private_and_keyed_by_tag(tmp_path, monkeypatch):
    """Digests are kept per tag in a private cache; a digest file that is a symbolic link
    (or not ours) is refused, never read."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert read_digest("r:5000/x:abc") is None
    record_digest("r:5000/x:abc", DIGEST)
    assert read_digest("r:5000/x:abc") == DIGEST
    assert read_digest("r:5000/x:abd") is None
    images = tmp_path / "lazyslurm" / "images"
    assert (images.stat().st_mode & 0o777) == 0o700
    (file,) = images.iterdir()
    assert (file.stat().st_mode & 0o777) == 0o600
    file.unlink()
    (tmp_path / "theirs").write_text(f"r:5000/x:abc\n{'sha256:' + 'cd' * 32}\n")
    file.symlink_to(tmp_path / "theirs")
    with pytest.raises(UntrustedStoreError, match="symbolic link"):
        read_digest("r:5000/x:abc")


@pytest.mark.parametrize("condition", ["link", "owner", "mode"])
def test_private_dir_refusal_names_absolute_path_and_condition(tmp_path, monkeypatch, condition):
    """The refusal says which of the three conditions failed, with the absolute path, and
    the fix for that one (chmod only for a directory of your own)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir(mode=0o700)
    if condition == "link":
        (tmp_path / "d").symlink_to(tmp_path / "real")
    else:
        (tmp_path / "d").mkdir(mode=0o700)
    if condition == "owner":
        os.chown(tmp_path / "d", OTHER_UID, OTHER_UID)
    if condition == "mode":
        os.chmod(tmp_path / "d", 0o777)
    with pytest.raises(UntrustedStoreError) as info:
        check_private_dir("d")  # relative: the message names it absolute
    msg = str(info.value)
    assert f"store directory {tmp_path / 'd'} " in msg and info.value.path == str(tmp_path / "d")
    expected = {
        "link": "is a symbolic link",
        "owner": f"is owned by uid {OTHER_UID}, not by you",
        "mode": "is writable by others (mode 777)",
    }[condition]
    assert expected in msg
    assert ("chmod 700" in msg) == (condition == "mode")
    if condition == "owner":
        assert "remove what you do not own" in msg


@pytest.mark.parametrize("condition", ["owner", "mode"])
def test_store_query_refusal_names_the_condition(tmp_path, condition):
    """A store query (runs(), the cache, clean) refuses a directory of runs naming its
    absolute path and which condition failed."""
    runs = tmp_path / "w" / "runs"
    runs.mkdir(parents=True, mode=0o700)
    if condition == "owner":
        os.chown(runs, OTHER_UID, OTHER_UID)
    else:
        os.chmod(runs, 0o777)
    with pytest.raises(UntrustedStoreError) as info:
        list_runs(LocalShell(), str(tmp_path / "w"))
    msg = str(info.value)
    why = {"owner": f"is owned by uid {OTHER_UID}, not by you", "mode": "is writable by others"}
    assert f"the directory of runs {runs} {why[condition]}" in msg
    assert info.value.path == str(runs)


# --------------------------------------------------------------------------- over SSH


@pytest.fixture(scope="module")
def env(cluster_env):
    return cluster_env


def ssh_options(env) -> dict:
    return dict(
        hostname=env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(env["LAZYSLURM_TEST_SSH_PORT"]),
        username=env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
    )


@pytest.fixture
def victim(env):
    """The SSH test user: (uid, gid, a fresh private work directory of theirs)."""
    user = pwd.getpwnam(env["LAZYSLURM_TEST_SSH_USER"])
    top = Path(user.pw_dir) / "lazyslurm-tests"
    workdir = top / f"trust-{uuid.uuid4().hex[:12]}"
    workdir.mkdir(parents=True, mode=0o700)
    os.chown(workdir, user.pw_uid, user.pw_gid)
    yield user.pw_uid, user.pw_gid, workdir
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def marker():
    """A file that planted code would write (as the SSH test user, in /tmp)."""
    path = Path(f"/tmp/lazyslurm-planted-{uuid.uuid4().hex}")
    yield path
    path.unlink(missing_ok=True)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, uid, gid, follow_symlinks=False)


def plant_runtime(code: Path, marker: Path) -> Path:
    """code/RUNTIME_HASH: lazyslurm's own staged files with one line added to the runner."""
    tree = code / modules.runtime_hash()
    for rel, data in modules.runtime_files().items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)
    runner = tree / "lazyslurm" / "runner" / "__main__.py"
    head, future, rest = runner.read_text().partition("from __future__ import annotations\n")
    line = f"open({str(marker)!r}, 'w').write('ran')\n"
    runner.write_text(f"{head}{future}{line}{rest}" if future else line + head)
    return tree


@pytest.mark.slurm
@pytest.mark.parametrize("who", ["tree-not-yours", "code-dir-not-yours", "tree-writable"])
def test_a_planted_runtime_tree_never_runs(env, victim, marker, who):
    """A copy of lazyslurm with one line added to the runner, planted as
    WORKDIR/code/RUNTIME_HASH (the hash is public) by another user while the work directory
    was open, or left writable by others: the run is refused before anything is submitted,
    naming the entry with its absolute path and the condition; the planted line never ran."""
    uid, gid, workdir = victim
    code = workdir / "code"
    code.mkdir(mode=0o700)
    tree = plant_runtime(code, marker)
    if who == "tree-not-yours":
        os.chown(code, uid, gid)
        chown_tree(tree, OTHER_UID, OTHER_UID)
        named, why = tree, f"is owned by uid {OTHER_UID}, not by you (uid {uid})"
    elif who == "code-dir-not-yours":
        chown_tree(code, OTHER_UID, OTHER_UID)
        os.chmod(code, 0o755)
        named, why = code, f"is owned by uid {OTHER_UID}, not by you (uid {uid})"
    else:
        chown_tree(code, uid, gid)
        os.chmod(tree, 0o777)
        named, why = tree, "is writable by others (mode 777)"
    c = Cluster("ssh", workdir=str(workdir), poll_max_s=0.5, **ssh_options(env))
    with c, pytest.raises(UntrustedStoreError) as info:
        backend = c.backend
        compute(pp.stage1_preprocess("a"))
    msg = str(info.value)
    assert f"{named} {why}" in msg and "remove what you do not own" in msg
    assert info.value.path == str(named)
    assert backend.stats["sbatch"] == 0
    assert not marker.exists()


@pytest.mark.slurm
def test_a_runtime_tree_the_probe_did_not_see_is_refused_when_staging(env, victim, marker):
    """An entry the probe did not list (planted after it, or a listing that failed) is
    checked again where the staged copy is moved into place, in the submission's own
    round trip: not private, the run stops before sbatch; the planted line never ran."""
    uid, gid, workdir = victim
    code = workdir / "code"
    code.mkdir(mode=0o700)
    os.chown(code, uid, gid)
    c = Cluster("ssh", workdir=str(workdir), poll_max_s=0.5, **ssh_options(env))
    with c:
        c.backend.max_array_size()  # the probe: nothing in code/ yet
        tree = plant_runtime(code, marker)
        chown_tree(tree, OTHER_UID, OTHER_UID)
        with pytest.raises(UntrustedStoreError) as info:
            compute(pp.stage1_preprocess("a"))
        assert c.backend.stats["sbatch"] == 0
    assert f"{tree} is owned by uid {OTHER_UID}, not by you" in str(info.value)
    assert not list(workdir.glob("runs/*/logs/*.err")) and not marker.exists()


def wheel_cluster(env, workdir: Path) -> Cluster:
    return Cluster(
        "ssh", workdir=str(workdir), poll_max_s=0.5, packaging="wheel",
        packaging_project=str(PROJECT), **ssh_options(env),
    )  # fmt: skip


def venv_name(c: Cluster) -> str:
    """The name of the run's venv (after the probe): code/venv-HASH."""
    packager = c.backend.packager
    c.backend.max_array_size()  # the probe
    return f"venv-{packager.builder('wheel').venv_digest(packager.target.interpreter.version)}"


@task
def shout(text: str) -> str:
    import lzdemo

    return lzdemo.shout(text)


def plant_venv(venv: Path, marker: Path) -> None:
    """A venv of another user: ``.ready`` and a ``bin/python`` that writes the marker."""
    (venv / "bin").mkdir(parents=True)
    (venv / ".ready").write_text("")
    python = venv / "bin" / "python"
    python.write_text(f"#!/bin/sh\necho ran > {marker}\nexit 0\n")
    python.chmod(0o755)
    chown_tree(venv, OTHER_UID, OTHER_UID)


@pytest.mark.slurm
@pytest.mark.parametrize("when", ["before-the-probe", "after-the-probe"])
def test_a_planted_venv_is_never_executed(env, victim, marker, when):
    """WORKDIR/code/venv-HASH with .ready and bin/python planted by another user: seen by
    the probe, the run is refused; planted after it (jobs start later), the job refuses
    to run it. Its python never runs."""
    uid, gid, workdir = victim
    code = workdir / "code"
    code.mkdir(mode=0o700)
    os.chown(code, uid, gid)
    c = wheel_cluster(env, workdir)
    with c:
        venv = code / venv_name(c)  # this session has probed
        plant_venv(venv, marker)
        if when == "after-the-probe":
            with pytest.raises(ElementFailedError, match=f"refused to run the venv {venv}: "):
                compute(shout("x"))
    if when == "before-the-probe":
        c = wheel_cluster(env, workdir)
        with c, pytest.raises(UntrustedStoreError) as info:
            compute(shout("x"))
        assert f"{venv} is owned by uid {OTHER_UID}, not by you" in str(info.value)
        assert "remove what you do not own" in str(info.value)
        assert c.backend.stats["sbatch"] == 0
    assert not marker.exists()


@pytest.mark.slurm
@pytest.mark.parametrize("when", ["before-the-probe", "after-the-probe"])
def test_a_lock_link_never_truncates_its_target(env, victim, when):
    """WORKDIR/code/venv-HASH.lock planted as a symbolic link to a file of yours: seen by
    the probe, the run is refused; planted after it, the job's lock (no O_TRUNC, no link
    followed) refuses it. The file it points to keeps its content."""
    uid, gid, workdir = victim
    code = workdir / "code"
    code.mkdir(mode=0o700)
    os.chown(code, uid, gid)
    precious = workdir / "precious.txt"
    precious.write_text("my thesis\n")
    os.chown(precious, uid, gid)
    c = wheel_cluster(env, workdir)
    with c:
        lock = code / f"{venv_name(c)}.lock"  # this session has probed
        lock.symlink_to(precious)
        os.chown(lock, OTHER_UID, OTHER_UID, follow_symlinks=False)
        if when == "after-the-probe":
            with pytest.raises(ElementFailedError, match=f"refused the venv lock {lock}: "):
                compute(shout("x"))
    if when == "before-the-probe":
        c = wheel_cluster(env, workdir)
        with c, pytest.raises(UntrustedStoreError) as info:
            compute(shout("x"))
        assert f"{lock} is a symbolic link" in str(info.value)
        assert c.backend.stats["sbatch"] == 0
    assert precious.read_text() == "my thesis\n"


@pytest.mark.slurm
def test_put_files_refusal_names_the_absolute_path_and_condition(env, victim):
    """Over SSH, a work directory others can write to: the refusal names its absolute
    path (not ~ or .) and that condition; one of another owner says so (no chmod advice)."""
    uid, _, workdir = victim
    rel = f"~/{workdir.relative_to(pwd.getpwuid(uid).pw_dir)}"
    opts = ssh_options(env)
    with SSHShell(opts.pop("hostname"), **opts) as shell:
        os.chmod(workdir, 0o777)
        with pytest.raises(UntrustedStoreError) as info:
            shell.put_files(rel, {"a": b"1"})
        msg = str(info.value)
        assert f"store directory {workdir} on " in msg and info.value.path == str(workdir)
        assert "is writable by others (mode 777)" in msg and f"chmod 700 {workdir}" in msg
        os.chmod(workdir, 0o700)
        (workdir / "runs").mkdir()
        os.chown(workdir / "runs", OTHER_UID, OTHER_UID)
        with pytest.raises(UntrustedStoreError) as info:
            shell.put_files(rel, {"runs/x": b"1"})
        msg = str(info.value)
        assert f"store directory {workdir}/runs on " in msg
        assert f"is owned by uid {OTHER_UID}, not by you (uid {uid})" in msg
        assert "remove what you do not own" in msg and "chmod 700" not in msg


# --------------------------------------------------------------------------- containers


@pytest.fixture(scope="module")
def cenv(cluster_env):
    if "LAZYSLURM_TEST_REGISTRY" not in cluster_env or shutil.which("podman") is None:
        pytest.skip("container test infrastructure not available (tests/cluster/containers.sh)")
    return cluster_env


@pytest.fixture
def podman_env(cenv, monkeypatch, tmp_path):
    """podman on this machine and in jobs uses the test configuration; the recorded
    digests live in this test's own cache."""
    conf = {
        "CONTAINERS_CONF": cenv["LAZYSLURM_TEST_CONTAINERS_CONF"],
        "CONTAINERS_STORAGE_CONF": cenv["LAZYSLURM_TEST_CONTAINERS_STORAGE_CONF"],
    }
    for k, v in conf.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return {"SLURM_CONF": cenv["LAZYSLURM_TEST_SLURM_CONF"], **conf}


def container_cluster(cenv, podman_env, workdir: Path, label: str) -> Cluster:
    return Cluster(
        "slurm",
        workdir=workdir,
        env=podman_env,
        poll_max_s=0.5,
        packaging="container",
        packaging_registry=f"{cenv['LAZYSLURM_TEST_REGISTRY']}/lazyslurm-tests",
        packaging_tls_verify=False,
        packaging_base_image=cenv["LAZYSLURM_TEST_BASE_IMAGE"],
        packaging_build_args=[f"--label=lazyslurm-test={label}"],
    )


@pytest.mark.slurm
def test_an_image_pushed_first_under_our_tag_never_runs(cenv, podman_env, tmp_path):
    """Another image pushed under the tag this client computes (a hash anyone can
    compute): lazyslurm builds and pushes its own, and the job runs the digest of that
    push, not the tag. A second session reuses the recorded digest (no build)."""
    label = uuid.uuid4().hex  # content no earlier run had
    c = container_cluster(cenv, podman_env, tmp_path / "work", label)
    builder = c.backend.packager.builder("container")
    tag = f"{image_name(builder.options.registry)}:{builder.content_hash()}"
    planted = tmp_path / "planted"
    (planted / "lazyslurm" / "runner").mkdir(parents=True)
    (planted / "lazyslurm" / "__init__.py").write_text("")
    (planted / "lazyslurm" / "runner" / "__init__.py").write_text("")
    (planted / "lazyslurm" / "runner" / "__main__.py").write_text(
        "import sys\nopen(sys.argv[1] + '/PLANTED', 'w').write('ran')\n"
    )
    (planted / "Dockerfile").write_text(
        f"FROM {cenv['LAZYSLURM_TEST_BASE_IMAGE']}\nCOPY lazyslurm /opt/planted/lazyslurm\n"
        "ENV PYTHONPATH=/opt/planted\n"
    )
    podman = ["podman"]
    subprocess.run([*podman, "build", "--isolation=chroot", "-q", "-t", tag, str(planted)],
                   check=True, capture_output=True)  # fmt: skip
    subprocess.run([*podman, "push", "--tls-verify=false", tag], check=True, capture_output=True)
    try:
        with c:
            assert compute(pp.stage1_preprocess("a")) == ("preprocessed_a",)
            assert builder.stats == {"builds": 1, "pushes": 1, "registry_checks": 1}
        digest = read_digest(tag)
        assert digest is not None
        script = next((tmp_path / "work" / "runs").glob("*/jobs/aj0.sh")).read_text()
        assert f"{tag.rpartition(':')[0]}@{digest}" in script and f" {tag} " not in script
        assert not list((tmp_path / "work").glob("runs/*/PLANTED"))
        again = container_cluster(cenv, podman_env, tmp_path / "work", label)
        with again:
            assert compute(pp.stage3_finalize("b")) == ("final_b",)
            second = again.backend.packager.builders["container"]
            assert second.stats == {"builds": 0, "pushes": 0, "registry_checks": 1}
    finally:
        subprocess.run([*podman, "rmi", "-f", tag], capture_output=True)
