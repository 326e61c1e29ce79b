"""The Slurm part of the probe kept across processes on this host (issue 27): reused
while slurm.conf is unchanged, never from a file or directory that is not private."""

from __future__ import annotations

import os
import shutil

import pytest

from lazyslurm.backends.slurm import probecache
from lazyslurm.backends.slurm.backend import make_slurm_backend


@pytest.fixture
def conf(cluster_env, tmp_path):
    """A copy of the test cluster's slurm.conf (its mtime is ours to change)."""
    copy = tmp_path / "slurm.conf"
    shutil.copy(cluster_env["LAZYSLURM_TEST_SLURM_CONF"], copy)
    return copy


def _backend(tmp_path, conf, **options):
    return make_slurm_backend(
        "slurm", workdir=tmp_path / "work", env={"SLURM_CONF": str(conf)}, **options
    )


@pytest.mark.slurm
def test_a_new_session_reuses_the_probe_until_slurm_conf_changes(tmp_path, conf):
    first = _backend(tmp_path, conf)
    facts = first.facts
    assert "probe_cached" not in first.stats
    files = list(probecache.cache_dir().iterdir())
    assert len(files) == 1
    assert oct(files[0].stat().st_mode & 0o777) == "0o600"
    assert oct(files[0].parent.stat().st_mode & 0o777) == "0o700"

    second = _backend(tmp_path, conf)
    assert second.facts == facts
    assert second.stats.get("probe_cached") == 1
    assert second.workdir == first.workdir and second.status_source == first.status_source

    st = conf.stat()
    os.utime(conf, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # slurm.conf changed
    third = _backend(tmp_path, conf)
    assert third.facts == facts
    assert "probe_cached" not in third.stats

    off = _backend(tmp_path, conf, probe_cache_s=0)
    assert off.facts == facts and "probe_cached" not in off.stats


@pytest.mark.slurm
def test_a_cache_that_is_not_private_or_is_damaged_is_never_used(tmp_path, conf):
    _backend(tmp_path, conf).facts  # noqa: B018
    (kept,) = probecache.cache_dir().iterdir()
    kept.parent.chmod(0o777)  # others could plant facts there
    assert "probe_cached" not in _probed(tmp_path, conf)
    kept.parent.chmod(0o700)
    kept.write_text('{"lines": "MaxArraySize = 1\\n", "conf": null')  # damaged
    assert "probe_cached" not in _probed(tmp_path, conf)
    target = tmp_path / "elsewhere.json"
    target.write_text("{}")
    kept.unlink()
    kept.symlink_to(target)  # a link: refused, not followed
    assert "probe_cached" not in _probed(tmp_path, conf)


def _probed(tmp_path, conf):
    b = _backend(tmp_path, conf)
    b.facts  # noqa: B018
    return b.stats
