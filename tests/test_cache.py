"""Results across runs: runs() listing, cache=True reuse, cache.clear."""

from __future__ import annotations

import importlib.util
import textwrap

import pytest

import lazyslurm
from examples import parallelization_patterns as pp
from lazyslurm import Cluster, compute, plan, task
from lazyslurm.cache import parse_age


def session(tmp_path, **kw) -> Cluster:
    """A fresh cluster session on the same store (what a new process would have)."""
    return Cluster("local", workdir=tmp_path / "store", max_workers=2, **kw)


def test_runs_lists_runs_with_state_and_label(tmp_path):
    """runs() lists every run newest first, with state, task count and label."""
    c = session(tmp_path)
    with c:
        lazyslurm.submit(pp.pipeline_graph(), label="pipe").result()
        with pytest.raises(TypeError):
            lazyslurm.submit(pp.train_model(lr="x", batch_size=1, epochs=1, seed=0)).result()
        listed = lazyslurm.runs()
    assert [r.state for r in listed] == ["FAILED", "DONE"]
    assert (listed[1].label, listed[1].tasks, listed[1].done) == ("pipe", 9, 9)
    assert "pipe" in str(listed[1])


def test_cache_reuses_results_of_earlier_sessions(tmp_path):
    """With cache=True a new session resubmits nothing that is already in the store."""
    with session(tmp_path):
        first = compute(pp.parameter_sweep_graph())
    with session(tmp_path, cache=True) as c:
        p = plan(pp.parameter_sweep_graph())
        assert p.array_jobs == () and len(p.cached) == 13
        assert compute(pp.parameter_sweep_graph()) == first
    with session(tmp_path) as c:  # caching is opt-in
        assert len(plan(pp.parameter_sweep_graph(), cluster=c).array_jobs) == 2


def test_changed_argument_resubmits_exactly_that_element(tmp_path):
    """One changed config: one training element and the selection run again."""
    configs = pp.sweep_configs()
    with session(tmp_path):
        compute(pp.select_best_model(pp.train_model.map(configs)))
    configs[3] = {**configs[3], "seed": 7}
    with session(tmp_path, cache=True):
        p = plan(pp.select_best_model(pp.train_model.map(configs)))
        assert [(aj.name, aj.size) for aj in p.array_jobs] == [
            ("train_model", 1),
            ("select_best_model", 1),
        ]
        assert p.array_jobs[1].dependencies[0][0] == "afterok"  # only on the new element
        assert len(p.cached) == 11


def load_task(tmp_path, name: str, body: str):
    """A task named `work` defined in a module file of its own (a new code version)."""
    path = tmp_path / f"{name}.py"
    path.write_text(
        textwrap.dedent(f"""
        from lazyslurm import task

        @task
        def work(x):
            {body}
    """)
    )
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.work


def test_changed_code_changes_the_key_and_resubmits(tmp_path):
    """Editing a task's code gives new keys: the cache does not return stale results."""
    v1 = load_task(tmp_path, "mod_v1", "return x + 1")
    v2 = load_task(tmp_path, "mod_v2", "return x + 2")
    assert v1(1).key != v2(1).key
    with session(tmp_path):
        assert v1(1).compute() == 2
    with session(tmp_path, cache=True):
        assert len(plan(v2(1)).array_jobs) == 1
        assert v2(1).compute() == 3
        assert plan(v1(1)).array_jobs == ()


def test_impure_tasks_are_never_cached(tmp_path):
    """pure=False tasks run again in every session, cache or not."""

    @task(pure=False)
    def now():
        import time

        return time.time()

    with session(tmp_path, cache=True):
        job = now()
        job.compute()
    with session(tmp_path, cache=True):
        assert len(plan(job).array_jobs) == 1


def test_clear_removes_old_runs_and_their_cached_results(tmp_path):
    """cache.clear(older_than=...) deletes run directories; cleared results are gone."""
    with session(tmp_path):
        compute(pp.pipeline_graph())
    c = session(tmp_path, cache=True)
    assert lazyslurm.cache.clear(c, older_than="1d") == []
    removed = lazyslurm.cache.clear(c, older_than=0)
    assert len(removed) == 1 and lazyslurm.runs(c) == []
    assert len(plan(pp.pipeline_graph(), cluster=c).array_jobs) == 3


def test_parse_age_rejects_nonsense():
    """Ages are a timedelta, seconds, or '30m'/'12h'/'7d'/'2w'."""
    assert parse_age("2w") == 14 * 86400
    with pytest.raises(ValueError, match="invalid age"):
        parse_age("soon")


def test_clear_keeps_runs_younger_than_the_age(tmp_path):
    """Ages under a minute are honoured: a fresh run survives clear(older_than='30s')."""
    c = session(tmp_path)
    with c:
        compute(pp.stage1_preprocess("x"))
    assert lazyslurm.cache.clear(c, older_than="30s") == []
    assert len(lazyslurm.runs(c)) == 1


# --------------------------------------------------------------------------- trust


OTHER_UID = 65534  # nobody: "another user" (chown needs root)
needs_root = pytest.mark.skipif(
    __import__("os").geteuid() != 0, reason="planting files as another user needs root"
)


@needs_root
def test_a_result_planted_by_another_user_is_never_found(tmp_path):
    """In a shared work directory, another user's run directory is skipped by the cache,
    and a group-writable directory of runs is refused with the chmod fix."""
    import os

    from lazyslurm.store import RunLayout, encode_outcome

    with session(tmp_path):
        compute(pp.select_best_model(pp.train_model.map(pp.sweep_configs()[:2])))
    victim = pp.train_model(lr=0.5, batch_size=1, epochs=1, seed=1)
    evil = RunLayout.of("20991231-000000-abcdef", tmp_path / "store")
    os.makedirs(evil.results_dir)
    payload = b"cos\nsystem\n(S'touch PWNED'\ntR."  # runs a command when unpickled
    with open(evil.result(victim.key), "wb") as fh:
        fh.write(encode_outcome(payload, key=victim.key, writer="20991231-000000-abcdef/a/0"))
    for path in (evil.root, evil.results_dir, evil.result(victim.key)):
        os.chown(path, OTHER_UID, OTHER_UID)
    with session(tmp_path, cache=True):
        p = plan(victim)
        assert len(p.array_jobs) == 1 and not p.cached  # the planted result is not used
        assert "20991231-000000-abcdef" not in [r.id for r in lazyslurm.runs()]
    os.chmod(tmp_path / "store" / "runs", 0o777)
    with session(tmp_path, cache=True):
        with pytest.raises(lazyslurm.errors.UntrustedStoreError, match="chmod 700"):
            plan(victim)
        with pytest.raises(PermissionError):  # UntrustedStoreError is a PermissionError
            compute(victim)
    assert not os.path.exists("PWNED")


def test_clean_deletes_only_runs(tmp_path):
    """clean removes run directories only: not notes, not look-alikes without a manifest;
    --dry-run removes nothing and says what it would remove."""
    import os

    with session(tmp_path):
        compute(pp.pipeline_graph())
    runs = tmp_path / "store" / "runs"
    (runs / "my-experiment-notes").mkdir()
    (runs / "my-experiment-notes" / "keep.txt").write_text("data")
    (runs / "20200101-000000-aaaaaa").mkdir()  # named like a run, but no manifest
    real = [d for d in os.listdir(runs) if d.startswith("2026") or d.startswith("2027")]
    assert len(real) == 1
    with session(tmp_path) as c:
        assert lazyslurm.cache.clear(c, dry_run=True) == real
        assert sorted(os.listdir(runs)) == sorted([*real, "my-experiment-notes",
                                                   "20200101-000000-aaaaaa"])  # fmt: skip
        assert lazyslurm.cache.clear(c) == real
    assert sorted(os.listdir(runs)) == ["20200101-000000-aaaaaa", "my-experiment-notes"]


def test_clean_refuses_a_symlinked_directory_of_runs(tmp_path):
    """A directory of runs that is a symlink is refused; what it points to is untouched."""
    import os

    elsewhere = tmp_path / "elsewhere"
    with Cluster("local", workdir=elsewhere, max_workers=1):
        compute(pp.pipeline_graph())
    (tmp_path / "store").mkdir()
    os.symlink(elsewhere / "runs", tmp_path / "store" / "runs")
    with session(tmp_path) as c:
        with pytest.raises(lazyslurm.errors.UntrustedStoreError, match="symbolic link"):
            lazyslurm.cache.clear(c)
    assert len(os.listdir(elsewhere / "runs")) == 1
