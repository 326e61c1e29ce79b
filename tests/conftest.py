"""Shared fixtures. Hypothesis strategies live in tests/strategies.py."""

from __future__ import annotations

import os
import tempfile

import pytest
from fixtures_cluster import cluster_env  # noqa: F401 - the real test cluster, as a fixture
from fixtures_site import site, site_env  # noqa: F401 - the many-node test site (site.sh)

# tests/typing holds scripts for type checkers (tests/test_typing.py), never to be imported
collect_ignore = ["typing"]


def pytest_configure(config: pytest.Config) -> None:
    # compute() without a cluster uses ~/.lazyslurm: keep test runs out of the home directory
    os.environ.setdefault("LAZYSLURM_WORKDIR", tempfile.mkdtemp(prefix="lazyslurm-tests-"))
    # hypothesis imports libcst to report a failing example; that import warns
    # (mypy_extensions.TypedDict), and filterwarnings=error would turn the warning into an
    # INTERNALERROR that hides the real failure
    config.addinivalue_line(
        "filterwarnings", "ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning"
    )


def pytest_collection_finish(session: pytest.Session) -> None:
    """Runs that take minutes of Slurm's clock start now, with their client gone, and their
    tests attach to them later (tests/test_retries.py: the time-limit retry)."""
    name = "test_a_time_limit_hit_is_retried_with_more_time"
    conf = os.environ.get("LAZYSLURM_TEST_SLURM_CONF", "")
    if not conf or not os.path.isfile(conf) or all(i.name != name for i in session.items):
        return  # the test submits its own run when its turn comes
    import test_retries

    try:
        test_retries.EARLY["timeout"] = test_retries.submit_timeout_run(conf)
    except Exception:
        return


@pytest.fixture(autouse=True)
def _fresh_probe_cache(monkeypatch, tmp_path_factory):
    """Each test probes Slurm afresh: the probe kept across processes (issue 27,
    backends/slurm/probecache.py) would carry one test's cluster facts into the next."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))


@pytest.fixture(params=["local", "sync"])
def cluster(request: pytest.FixtureRequest, tmp_path):
    """An embedded cluster (local process pool, or in-process) in a private work dir."""
    from lazyslurm import Cluster

    c = Cluster(request.param, workdir=tmp_path / "work", max_workers=2)
    with c:
        yield c


@pytest.fixture
def private_home(tmp_path, monkeypatch):
    """A private home directory (no user profiles), no profile selected, no XDG override."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.delenv("LAZYSLURM_PROFILE", raising=False)
    return home
