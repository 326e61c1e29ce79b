"""A local Slurm run's client is woken by inotify when a result lands (issue 27): no
looking at the store's directories 50 times a second between polls."""

from __future__ import annotations

import threading
import time

import pytest

from lazyslurm import Cluster, submit, task
from lazyslurm.backends.slurm import backend as slurm_backend
from lazyslurm.backends.slurm.dirwatch import DirWatch, watch_dirs


@task
def slow(x):
    import time

    time.sleep(3)
    return x


def test_a_watch_wakes_on_a_rename_into_the_directory(tmp_path):
    (tmp_path / "results").mkdir()
    w = watch_dirs([str(tmp_path / "results")])
    assert isinstance(w, DirWatch)
    assert not w.wait(0.05)
    (tmp_path / "tmp").write_text("x")
    threading.Timer(0.1, lambda: (tmp_path / "tmp").rename(tmp_path / "results" / "k")).start()
    assert w.wait(5.0)
    assert w.drain() and not w.wait(0.0)
    w.close()
    assert w.fd == -1 and not w.wait(0.0)


@pytest.mark.slurm
def test_waiting_between_polls_sleeps_on_inotify(cluster_env, tmp_path, monkeypatch):
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    with Cluster("slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf}) as cl:
        run = submit(slow(1), cluster=cl)
        backend = cl.backend
        backend.poll(run.handle)
        watch = backend._watches[run.id]
        assert isinstance(watch.notify, DirWatch)
        looks = []
        real = slurm_backend._dir_stamp
        monkeypatch.setattr(slurm_backend, "_dir_stamp", lambda lay: looks.append(1) or real(lay))
        t0 = time.monotonic()
        backend.wait_for_change(run.handle, 0.5)
        waited = time.monotonic() - t0
        assert len(looks) <= 2, len(looks)  # before: one look every 20 ms
        monkeypatch.setattr(slurm_backend, "_dir_stamp", real)
        assert run.result() == (1,)
        assert watch.notify is False  # the run ended: its descriptor is closed
        assert waited > 0  # (not a timing assertion: the wait ran)
