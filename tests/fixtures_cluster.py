"""The real test cluster (tests/cluster/start.sh) as a session fixture.

Import ``cluster_env`` into a conftest (or call :func:`start_cluster` from a fixture of
your own: it is cached, so start.sh runs once per session). As root it runs start.sh
(idempotent: ~0.1 s when everything is already up, and it restarts what died); otherwise
it uses the environment a root run left in ``$STATE/env.json``. When neither works, every
test using it is skipped with the reason.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
START = REPO / "tests" / "cluster" / "start.sh"
START_TIMEOUT_S = 600  # includes apt-get install on a fresh machine


def state_dir() -> Path:
    return Path(os.environ.get("LAZYSLURM_TEST_CLUSTER_DIR", "/tmp/lazyslurm-test-cluster"))


@functools.cache
def start_cluster() -> dict[str, str]:
    """Start (or check) the test cluster and return its ``LAZYSLURM_TEST_*`` variables.

    Calls :func:`pytest.skip` with the reason when the cluster cannot be had. Runs start.sh
    at most once per session when it succeeds (the result is cached).
    """
    env_json = state_dir() / "env.json"
    if os.geteuid() != 0:
        if env_json.is_file():
            return _load(env_json)
        pytest.skip(
            f"test cluster not running ({env_json} missing) and only root can start it: "
            f"run `sudo bash {START.relative_to(REPO)}`"
        )
    lock_path = Path(f"{state_dir()}.start.lock")  # beside the state dir: it may not exist yet
    with open(lock_path, "a") as lock:  # parallel sessions (xdist) start it once at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            proc = subprocess.run(
                ["bash", str(START)],
                capture_output=True,
                text=True,
                timeout=START_TIMEOUT_S,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"test cluster could not start: {exc}")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        pytest.skip(f"test cluster could not start (start.sh exit {proc.returncode}):\n{tail}")
    if not env_json.is_file():
        pytest.skip(f"start.sh succeeded but wrote no {env_json}")
    return _load(env_json)


def _load(path: Path) -> dict[str, str]:
    data = json.loads(path.read_text())
    return {str(k): str(v) for k, v in data.items()}


@pytest.fixture(scope="session")
def cluster_env() -> dict[str, str]:
    """``LAZYSLURM_TEST_*`` variables of the running test cluster (see tests/cluster/README.md)."""
    return dict(start_cluster())
