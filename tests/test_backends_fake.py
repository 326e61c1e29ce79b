"""The public fake backend, and through it every Slurm end state -> error type."""

from __future__ import annotations

import pytest

from lazyslurm import Cluster, compute, submit, task
from lazyslurm.backends.fake import FakeBackend
from lazyslurm.errors import (
    ElementCancelledError,
    ElementFailedError,
    ElementOutOfMemoryError,
    ElementTimeoutError,
    NodeFailError,
)


@task
def ident(x):
    return x


@task
def total(xs):
    return sum(xs)


@pytest.mark.parametrize(
    ("state", "error", "builtin"),
    [
        ("TIMEOUT", ElementTimeoutError, TimeoutError),
        ("DEADLINE", ElementTimeoutError, TimeoutError),
        ("OUT_OF_MEMORY", ElementOutOfMemoryError, MemoryError),
        ("NODE_FAIL", NodeFailError, RuntimeError),
        ("BOOT_FAIL", NodeFailError, RuntimeError),
        ("PREEMPTED", NodeFailError, RuntimeError),
        ("CANCELLED", ElementCancelledError, RuntimeError),
        ("SOMETHING_NEW", ElementFailedError, RuntimeError),
    ],
)
def test_every_end_state_maps_to_its_error(tmp_path, state, error, builtin):
    """Each Slurm end state raises its error type, with job id, index, state, exit code."""
    bad = ident(2)
    fake = FakeBackend(tmp_path, states={bad.key: state})
    arr = ident.map([1, 2, 3])
    with Cluster(fake), pytest.raises(error) as info:
        compute(total(arr))
    err = info.value
    assert isinstance(err, builtin)
    assert (err.state, err.array_index, err.key, err.exit_code) == (state, 1, bad.key, "0:15")
    assert err.job_id == "fake0" and f"ended {state}" in str(err)
    assert "dependent task" in str(err)  # total() was cancelled because of it


def test_fake_records_submissions_and_polls(tmp_path):
    """The fake records each submission's array jobs and counts polls."""
    fake = FakeBackend(tmp_path)
    with Cluster(fake):
        run = submit(total(ident.map(range(4))))
        assert run.result() == (6,)
    ((run_id, ajs),) = fake.started
    assert run_id == run.id and [(aj.name, aj.size) for aj in ajs] == [("ident", 4), ("total", 1)]
    assert fake.polls >= 1
