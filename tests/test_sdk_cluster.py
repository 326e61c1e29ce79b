"""slurm-sdk's ways of building a Cluster (lazyslurm/sdk_cluster.py): its argparse flags
(``Cluster.add_argparse_args`` / ``Cluster.from_args``), its constructor keywords, its
flat config file (``Cluster.from_file``), and clear refusals of what lazyslurm lacks."""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lazyslurm import Cluster
from lazyslurm.errors import ClusterConfigError
from lazyslurm.examples import parallelization_patterns as pp

REPO = Path(__file__).resolve().parent.parent

# the seed tutorial's command line (parallelization_patterns.md), after the module name
SEED_ARGV = shlex.split(
    "--hostname your-slurm-host --username alice --partition debug --pattern all "
    "--packaging container --packaging-registry registry:5000/patterns "
    "--packaging-platform linux/amd64 --packaging-tls-verify false"
)


def sdk_parser() -> argparse.ArgumentParser:
    """The parser of slurm-sdk's parallelization_patterns example: its own --pattern,
    then the cluster's flags."""
    parser = argparse.ArgumentParser()
    Cluster.add_argparse_args(parser)
    parser.add_argument("--pattern", default="all")
    return parser


# --------------------------------------------------------------------------- argparse


def test_the_seed_command_line_parses():
    args = sdk_parser().parse_args(SEED_ARGV)
    assert (args.hostname, args.username, args.partition, args.pattern) == (
        "your-slurm-host", "alice", "debug", "all",
    )  # fmt: skip
    assert (args.packaging, args.packaging_registry, args.packaging_platform) == (
        "container", "registry:5000/patterns", "linux/amd64",
    )  # fmt: skip
    assert args.packaging_tls_verify is False


def test_every_flag_of_slurm_sdk_is_there():
    """slurm-sdk's add_argparse_args flags, all of them, parse (lazyslurm adds two)."""
    argv = shlex.split(
        "--hostname h --port 2200 --banner-timeout 45 --username u --backend ssh "
        "--job-base-dir /scratch/jobs --account research --partition cpu --packaging wheel "
        "--packaging-registry r:5000/x --packaging-platform linux/arm64 "
        "--packaging-tls-verify true --key-filename /k --known-hosts /kh"
    )
    args = sdk_parser().parse_args(argv)
    assert args.port == 2200 and args.banner_timeout == 45 and args.packaging_tls_verify is True
    with pytest.raises(SystemExit):  # argparse's own error for a bad boolean
        sdk_parser().parse_args(["--packaging-tls-verify", "maybe"])


def test_from_args_gives_the_ssh_cluster_of_the_seed_command_line():
    """--hostname means SSH; the flags become lazyslurm's options (nothing connects)."""
    cluster = Cluster.from_args(sdk_parser().parse_args(SEED_ARGV))
    assert cluster.backend_name == "ssh"
    assert cluster.backend_options == {
        "hostname": "your-slurm-host",
        "username": "alice",
        "partition": "debug",
        "packaging": "container",
        "packaging_registry": "registry:5000/patterns",
        "packaging_platform": "linux/amd64",
        "packaging_tls_verify": False,
    }
    assert cluster.task_defaults.partition == "debug"


def test_from_args_keywords_win_and_take_both_spellings(tmp_path):
    """As in slurm-sdk, from_args' keywords override the flags: slurm-sdk's spellings
    (default_packaging_dockerfile) and lazyslurm's options (callbacks) alike."""
    from lazyslurm.callbacks import LoggerCallback

    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\n")
    args = sdk_parser().parse_args(["--hostname", "h", "--partition", "debug", "--port", "22"])
    cluster = Cluster.from_args(
        args,
        callbacks=[LoggerCallback()],
        default_packaging="container",
        default_packaging_dockerfile=str(dockerfile),
        default_partition="cpu",
        banner_timeout=5,
    )
    opts = cluster.backend_options
    assert opts["packaging"] == "container" and opts["packaging_dockerfile"] == str(dockerfile)
    assert opts["partition"] == "cpu" and opts["port"] == 22 and opts["connect_timeout_s"] == 5
    # slurm-sdk builds for linux/amd64 unless told otherwise
    assert opts["packaging_platform"] == "linux/amd64"
    assert len(cluster.callbacks) == 1


def test_from_args_without_hostname_uses_slurm_here_or_says_what_to_give(tmp_path, monkeypatch):
    args = sdk_parser().parse_args(["--partition", "debug"])
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch
    with pytest.raises(ClusterConfigError, match="no --hostname given and no sbatch"):
        Cluster.from_args(args)
    sbatch = tmp_path / "sbatch"
    sbatch.write_text("#!/bin/sh\nexit 1\n")
    sbatch.chmod(sbatch.stat().st_mode | stat.S_IXUSR)
    assert Cluster.from_args(args).backend_name == "slurm"
    # slurm-sdk's --backend local is sbatch on this host, as is backend_type="local"
    local = sdk_parser().parse_args(["--backend", "local"])
    assert Cluster.from_args(local).backend_name == "slurm"
    assert Cluster(backend_type="local", partition="debug").backend_name == "slurm"


def test_from_args_refuses_what_does_not_fit():
    parse = sdk_parser().parse_args
    with pytest.raises(ClusterConfigError, match="--backend ssh needs --hostname"):
        Cluster.from_args(parse(["--backend", "ssh"]))
    with pytest.raises(ClusterConfigError, match="--hostname, --port only apply to backend 'ssh'"):
        Cluster.from_args(parse(["--backend", "local", "--hostname", "h", "--port", "22"]))
    with pytest.raises(ClusterConfigError, match=r"password= is not supported: .*key_filename"):
        Cluster.from_args(parse(["--hostname", "h", "--password", "secret"]))
    with pytest.raises(ClusterConfigError, match="prebuilt image is not supported"):
        Cluster.from_args(parse(["--hostname", "h", "--packaging", "container:python:3.11"]))
    with pytest.raises(ClusterConfigError, match="default_packaging='zip'"):
        Cluster.from_args(parse(["--hostname", "h", "--packaging", "zip"]))


def test_from_args_reads_only_its_own_flags():
    """An unrelated --workdir of the program's own parser is not taken as a cluster option."""
    parser = sdk_parser()
    parser.add_argument("--workdir", default="/data/mine")
    cluster = Cluster.from_args(parser.parse_args(["--hostname", "h"]))
    assert cluster.workdir is None and "workdir" not in cluster.backend_options


# --------------------------------------------------------------------------- keywords


def test_slurm_sdk_constructor_keywords_become_lazyslurm_options(tmp_path):
    """slurm-sdk's docstring example, with only the import changed."""
    cluster = Cluster(
        backend_type="ssh",
        hostname="hpc.example.edu",
        username="myuser",
        default_packaging="container",
        default_packaging_platform="linux/amd64",
        default_packaging_registry="myregistry.io/myproject/",
        default_packaging_push=True,
        default_account="research",
        default_partition="cpu",
        job_base_dir="/scratch/jobs",
    )
    assert cluster.backend_name == "ssh" and cluster.workdir == "/scratch/jobs"
    assert cluster.task_defaults.account == "research"
    assert cluster.task_defaults.partition == "cpu"
    assert cluster.backend_options["packaging_registry"] == "myregistry.io/myproject/"
    # slurm-sdk's container runtime builds the image: lazyslurm's packaging_builder
    c = Cluster("ssh", hostname="h", default_packaging_runtime="docker")
    assert c.backend_options["packaging_builder"] == "docker"
    # "none": nothing shipped, the cluster's environment as is
    assert Cluster("slurm", default_packaging="none").backend_options["packaging"] == "inherit"
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\n")
    same_dir = Cluster(
        "slurm",
        default_packaging="container",
        default_packaging_dockerfile=str(dockerfile),
        default_packaging_context=str(tmp_path),
        default_packaging_build_args={"PIP_INDEX": "x"},
    )
    assert same_dir.backend_options["packaging_build_args"] == ["--build-arg=PIP_INDEX=x"]


@pytest.mark.parametrize(
    ("keywords", "match"),
    [
        ({"password": "pw"}, "password= is not supported"),
        ({"default_packaging_python_version": "3.11"}, "python='python3.X'"),
        ({"default_packaging_push": False}, "always pushes"),
        ({"default_packaging_mounts": ["/a:/b"]}, "packaging_run_args"),
        ({"default_packaging_srun_args": ["-N1"]}, "pyxis"),
        ({"default_packaging_image": "python:3.11"}, "prebuilt image"),
        ({"default_packaging_context": "/elsewhere"}, "Dockerfile's directory"),
        ({"default_packaging_flavour": "x"}, "did you mean packaging_flavour"),
        ({"default_packaging_runtime": "enroot"}, "packaging_builder"),
        ({"default_partition": "a", "partition": "b"}, "both set lazyslurm's partition"),
        ({"job_base_dir": "/a", "workdir": "/b"}, "both set lazyslurm's workdir"),
    ],
)
def test_unsupported_spellings_are_refused_by_name(keywords, match):
    with pytest.raises(ClusterConfigError, match=match):
        Cluster("ssh", hostname="h", **keywords)


def test_a_slurm_sdk_keyword_on_an_embedded_backend_is_refused():
    """default_partition means partition: the local backend has no partitions."""
    with pytest.raises(ClusterConfigError, match="partition"):
        Cluster("local", default_partition="debug")


def test_from_env_says_what_to_use_instead():
    with pytest.raises(ClusterConfigError, match="from_profile"):
        Cluster.from_env("production")


# --------------------------------------------------------------------------- from_file


def test_from_file_reads_slurm_sdks_flat_file(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            backend = "ssh"
            hostname = "slurm.example.com"
            username = "myuser"
            ssh_key_path = "~/.ssh/id_ed25519"
            job_base_dir = "/scratch/jobs"
            default_packaging = "auto"
            default_account = "my-account"
            default_partition = "compute"
            """
        )
    )
    cluster = Cluster.from_file(path, default_partition="gpu")  # keywords win
    assert cluster.backend_name == "ssh" and cluster.workdir == "/scratch/jobs"
    assert cluster.backend_options == {
        "hostname": "slurm.example.com",
        "username": "myuser",
        "key_filename": "~/.ssh/id_ed25519",
        "account": "my-account",
        "partition": "gpu",
    }
    path.write_text('backend = "local"\npartition = "debug"\n')  # sbatch on this host
    assert Cluster.from_file(path).backend_name == "slurm"
    assert Cluster.from_file(path, backend_type="ssh", hostname="h").backend_name == "ssh"
    path.write_text('backend = "ssh"\nhostname = "h"\nhostnmae = "typo"\n')
    with pytest.raises(ClusterConfigError, match=r"config.toml: unknown key 'hostnmae'"):
        Cluster.from_file(path)
    path.write_text('hostname = "h"\npassword = "pw"\n')
    with pytest.raises(ClusterConfigError, match=r"config.toml: password= is not supported"):
        Cluster.from_file(path)
    with pytest.raises(ClusterConfigError, match="configuration file not found"):
        Cluster.from_file(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- the example


def test_the_example_takes_the_seed_command_line_as_ssh():
    """python -m lazyslurm.examples.parallelization_patterns + the seed's flags: SSH."""
    cluster = pp.make_cluster(pp.make_parser().parse_args(SEED_ARGV))
    assert cluster.backend_name == "ssh"
    assert cluster.backend_options["hostname"] == "your-slurm-host"
    assert cluster.backend_options["packaging_registry"] == "registry:5000/patterns"
    assert pp.unused_flags(pp.make_parser().parse_args(SEED_ARGV)) == []


def test_the_example_without_flags_runs_embedded(tmp_path):
    args = pp.make_parser().parse_args(["--workdir", str(tmp_path)])
    assert pp.make_cluster(args).backend_name == "local" and pp.unused_flags(args) == []
    args = pp.make_parser().parse_args(["--backend", "sync", "--partition", "debug"])
    assert pp.unused_flags(args) == ["--partition"]


# --------------------------------------------------------------------------- end to end

SDK_SCRIPT = '''
"""A slurm-sdk style program: only the imports changed."""
import argparse

from lazyslurm import Cluster, task
from lazyslurm.callbacks import LoggerCallback


@task(time="00:02:00", mem="256M")
def square(x: int) -> int:
    return x * x


def main() -> None:
    parser = argparse.ArgumentParser()
    Cluster.add_argparse_args(parser)
    parser.add_argument("--x", type=int, default=7)
    args = parser.parse_args()
    cluster = Cluster.from_args(args, callbacks=[LoggerCallback()], poll_max_s=0.5)
    with cluster:
        job = cluster.submit(square)(args.x)
        ok = job.wait()
        print("backend", cluster.backend_name, "ok", ok, "result", job.get_result())


if __name__ == "__main__":
    main()
'''


@pytest.mark.slurm
@pytest.mark.ssh
def test_a_slurm_sdk_style_script_runs_over_ssh(cluster_env, tmp_path):
    script = tmp_path / "sdk_style.py"
    script.write_text(SDK_SCRIPT)
    env = cluster_env
    argv = [
        "--hostname", env["LAZYSLURM_TEST_SSH_HOST"],
        "--port", env["LAZYSLURM_TEST_SSH_PORT"],
        "--username", env["LAZYSLURM_TEST_SSH_USER"],
        "--key-filename", env["LAZYSLURM_TEST_SSH_KEY"],
        "--known-hosts", env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
        "--partition", "debug",
        "--x", "9",
    ]  # fmt: skip
    out = subprocess.run(
        [sys.executable, str(script), *argv],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "backend ssh ok True result 81" in out.stdout


def test_a_hostname_alone_means_ssh_as_in_slurm_sdk():
    """slurm-sdk's Cluster(hostname=...) is SSH (its default backend): so is lazyslurm's
    when no backend is named; a named backend that takes no hostname still refuses it."""
    cl = Cluster(hostname="login.example.org", username="me")
    assert cl.backend_name == "ssh"
    assert Cluster().backend_name == "local"
    with pytest.raises(ClusterConfigError, match="hostname"):
        Cluster("local", hostname="login.example.org")
