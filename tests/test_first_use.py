"""What a newcomer meets first: a cluster named wrong, a backend name where a Cluster goes,
no Slurm where they run, and watching a local run from another terminal."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lazyslurm import Cluster, Run, compute, task
from lazyslurm.errors import ClusterConfigError, NoSlurmError

REPO = Path(__file__).resolve().parent.parent


@task
def inc(x: int) -> int:
    return x + 1


# --------------------------------------------------------------------------- Cluster(...)


def test_a_misspelt_backend_is_refused_at_once_with_did_you_mean() -> None:
    """`Cluster("slrum")` fails when made, not at first use, and names the right one."""
    with pytest.raises(ClusterConfigError, match=r"did you mean 'slurm'"):
        Cluster("slrum")  # type: ignore[arg-type]


def test_the_backend_is_typed_as_a_literal() -> None:
    """Type checkers see the backend names (`BackendName`), so `Cluster("slrum")` is an
    error in the editor too."""
    import typing

    from lazyslurm.cluster import BackendName

    hints = typing.get_type_hints(Cluster.__init__)
    assert set(typing.get_args(BackendName)) == {"local", "sync", "slurm", "ssh"}
    assert BackendName in typing.get_args(hints["backend"])


def test_backend_type_is_slurm_sdks_name_of_backend() -> None:
    """slurm-sdk writes `Cluster(backend_type="ssh", hostname=...)`: the same cluster."""
    c = Cluster(backend_type="ssh", hostname="login.example.org")
    assert c.backend_name == "ssh" and repr(c) == "Cluster('ssh', hostname='login.example.org')"
    with pytest.raises(ClusterConfigError, match="give one of them"):
        Cluster("slurm", backend_type="ssh")
    with pytest.raises(ClusterConfigError, match="did you mean 'slurm'"):
        Cluster(backend_type="slrum")  # type: ignore[arg-type]


def test_repr_shows_the_options() -> None:
    c = Cluster("slurm", partition="debug", poll_max_s=2.0)
    assert repr(c) == "Cluster('slurm', partition='debug', poll_max_s=2.0)"


def test_compute_takes_a_backend_name_as_cluster(tmp_path, monkeypatch) -> None:
    """`compute(..., cluster="sync")` runs there, as `Cluster("sync")` would."""
    monkeypatch.setenv("LAZYSLURM_WORKDIR", str(tmp_path))
    assert compute(inc(1), cluster="sync") == (2,)
    assert inc(2).compute(cluster="sync") == 3
    from lazyslurm import submit

    assert submit(inc(3), cluster="local", progress=False).result() == (4,)


def test_compute_refuses_a_cluster_of_the_wrong_type() -> None:
    """Anything else names what it got and what it takes (no internal AttributeError)."""
    with pytest.raises(TypeError, match=r"cluster= takes a Cluster or a backend name"):
        compute(inc(1), cluster=3)  # type: ignore[call-overload]
    with pytest.raises(ClusterConfigError, match=r"did you mean 'sync'"):
        compute(inc(1), cluster="snyc")  # type: ignore[call-overload]


# --------------------------------------------------------------------------- no Slurm here


def _probe(workdir: Path, timeout_s: float = 600, **env: str) -> str:
    cluster = Cluster("slurm", workdir=workdir, env=env, unreachable_timeout_s=timeout_s)
    with pytest.raises(NoSlurmError) as info:
        cluster.max_array_size()
    return str(info.value)


def test_no_scontrol_on_the_path_says_so_and_what_to_use_instead(tmp_path) -> None:
    """No Slurm commands here: which it is (no scontrol on the PATH), then the fixes."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "mktemp", "id", "sed", "grep", "head", "rm"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    msg = _probe(tmp_path / "w", PATH=str(bin_dir))
    assert msg.startswith("no Slurm on this machine: `scontrol` is not on the PATH"), msg
    assert 'Cluster("ssh", hostname=' in msg and 'Cluster("local")' in msg
    assert "LZ-" not in msg and "\n" not in msg


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="needs Slurm's commands")
def test_slurm_not_configured_says_so_and_what_to_use_instead(tmp_path) -> None:
    """Slurm installed but no usable slurm.conf: says so, quotes scontrol, then the fix."""
    conf = tmp_path / "slurm.conf"
    conf.write_text("")
    msg = _probe(tmp_path / "w", SLURM_CONF=str(conf))
    assert msg.startswith("Slurm is installed on this machine but not configured"), msg
    assert "SLURM_CONF" in msg and 'Cluster("local")' in msg
    assert "LZ-" not in msg and "\n" not in msg


@pytest.mark.slurm
def test_an_unreachable_controller_says_so_and_what_to_do(cluster_env, tmp_path) -> None:
    """slurm.conf read, slurmctld out of reach: says so (not "cannot read the config"),
    once ``unreachable_timeout_s`` of retries (a busy controller is waited for) is over."""
    real = Path(cluster_env["LAZYSLURM_TEST_SLURM_CONF"]).read_text()
    conf = tmp_path / "slurm.conf"  # the test cluster's, with nothing at the port
    conf.write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=9", real))
    msg = _probe(tmp_path / "w", timeout_s=1, SLURM_CONF=str(conf))
    assert msg.startswith("Slurm's controller (slurmctld) cannot be reached"), msg
    assert "scontrol ping" in msg and 'Cluster("local")' in msg


# --------------------------------------------------------------------------- watching


SLOW = """
import sys, time
from pathlib import Path
from lazyslurm import Cluster, compute, task

@task
def slow(i, marks):
    Path(marks, f"started-{i}").touch()
    time.sleep(60)
    return i

with Cluster("local", workdir=sys.argv[2], max_workers=2):
    compute(slow.map([(i, sys.argv[1]) for i in range(4)]))
"""


def test_watching_a_local_run_from_another_process_shows_what_runs(tmp_path) -> None:
    """`lazyslurm watch` / `status` of a local run of another process: the elements its
    workers run are RUNNING (they were shown as pending: "0 running")."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marks), str(tmp_path / "work")],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # off a terminal: the run id comes first
        run_id = re.search(r"submitted run (\S+) ", line).group(1)  # type: ignore[union-attr]
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        status = Run.attach(run_id, Cluster("local", workdir=tmp_path / "work")).status()
        assert status.counts == {"RUNNING": 2, "PENDING": 2}, status
        assert status.state == "RUNNING"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
