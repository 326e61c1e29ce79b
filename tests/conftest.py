"""Shared fixtures. Hypothesis strategies live in tests/strategies.py."""

from __future__ import annotations

import os
import tempfile

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # compute() without a cluster uses ~/.lazyslurm: keep test runs out of the home directory
    os.environ.setdefault("LAZYSLURM_WORKDIR", tempfile.mkdtemp(prefix="lazyslurm-tests-"))


@pytest.fixture(params=["local", "sync"])
def cluster(request: pytest.FixtureRequest, tmp_path):
    """An embedded cluster (local process pool, or in-process) in a private work dir."""
    from lazyslurm import Cluster

    c = Cluster(request.param, workdir=tmp_path / "work", max_workers=2)
    with c:
        yield c
