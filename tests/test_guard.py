"""A forgotten `with cluster:` is made visible (lazyslurm/guard.py)."""

from __future__ import annotations

import warnings

import pytest

from lazyslurm import Cluster, compute, task
from lazyslurm.errors import ImplicitLocalWarning


@task(partition="debug", gpus=1, time=3)
def on_gpu(x: int) -> int:
    return x + 1


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def sized(x: int) -> int:
    return x * 2


@pytest.fixture(autouse=True)
def no_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LAZYSLURM_PROFILE", raising=False)


def test_slurm_resources_on_the_implicit_local_default_warn_once() -> None:
    """Tasks asking for a partition/GPUs on the implicit default warn once, naming the fix."""
    with pytest.warns(ImplicitLocalWarning) as record:
        assert compute(on_gpu.map([1, 2]), on_gpu(5)) == ([2, 3], 6)
    assert len(record) == 1
    msg = str(record[0].message)
    assert "'on_gpu'" in msg and "partition='debug'" in msg and "gpus='1'" in msg
    assert "with cluster:" in msg and "LAZYSLURM_PROFILE" in msg
    assert record[0].filename == __file__  # points at the user's line, not at lazyslurm


def test_job_compute_warns_at_the_users_line() -> None:
    """job.compute() on the implicit default reports the caller's file."""
    with pytest.warns(ImplicitLocalWarning) as record:
        assert on_gpu(11).compute() == 12
    assert record[0].filename == __file__


def test_plain_sizing_does_not_warn() -> None:
    """time, mem and cpus_per_task (the seed's local sizing) run locally without a word."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute(sized.map([1, 2])) == ([2, 4],)


def test_an_explicit_local_cluster_does_not_warn(tmp_path) -> None:
    """Choosing the local cluster, by argument or with `with`, is on purpose: no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compute(on_gpu(1), cluster=Cluster("sync", workdir=tmp_path)) == (2,)
        with Cluster("sync", workdir=tmp_path):
            assert on_gpu(2).compute() == 3


def test_a_forgotten_with_cluster_is_named_where_it_was_made(tmp_path) -> None:
    """The seed's mistake: Cluster("slurm") made, never entered; plain tasks still warn."""
    cluster = Cluster("slurm", partition="debug", workdir=tmp_path)
    line = _line() - 1  # the line above, where the cluster was made
    with pytest.warns(ImplicitLocalWarning) as record:
        assert compute(sized.map([5, 6])) == ([10, 12],)
    msg = str(record[0].message)
    assert "Cluster('slurm'" in msg and f"made at {__file__}:{line}" in msg
    assert "did you forget `with cluster:`" in msg
    assert record[0].filename == __file__
    del cluster


def _line() -> int:
    import inspect

    frame = inspect.currentframe()
    assert frame is not None and frame.f_back is not None
    return frame.f_back.f_lineno


def test_a_cluster_entered_passed_or_dropped_is_not_forgotten(tmp_path) -> None:
    """Entering it, passing it as cluster=, or dropping it clears the warning."""
    import gc

    def quiet_local_run(x: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert compute(sized(x)) == (2 * x,)

    entered = Cluster("slurm", workdir=tmp_path)
    with entered:
        pass
    quiet_local_run(21)
    passed = Cluster("slurm", workdir=tmp_path)
    from lazyslurm.cluster import resolve_cluster

    assert resolve_cluster(passed) is passed  # what compute(..., cluster=passed) does first
    quiet_local_run(22)
    dropped = Cluster("ssh", hostname="login.example", workdir="~/w")
    del dropped
    gc.collect()
    quiet_local_run(23)
    assert entered.backend_name == passed.backend_name == "slurm"
