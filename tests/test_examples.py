"""The examples (the seed's patterns and the slurm-sdk-style ones) on the embedded backends."""

from __future__ import annotations

import random

import pytest

from examples import hello_world, map_reduce, train_eval
from examples import parallelization_patterns as pp
from lazyslurm import Cluster, compute, plan

EXPECTED_PIPELINE = [f"final_transform_{i}(preprocessed_data_{i + 1})" for i in range(3)]


def best_of_sweep() -> dict:
    """The sweep's best config, computed directly (same formula, same seeds)."""
    results = []
    for c in pp.sweep_configs():
        random.seed(c["seed"])
        results.append({**c, "accuracy": 0.5 + (c["lr"] * 10) * random.random()})
    return max(results, key=lambda r: r["accuracy"])


@pytest.fixture(params=["local", "sync"])
def fresh(request, tmp_path):
    return Cluster(request.param, workdir=tmp_path, max_workers=2)


def test_fan_out_fan_in_seed_style(fresh):
    """Pattern 1 as written: 5 chunks, 500 items, total sum 124750."""
    final = pp.fan_out_fan_in(fresh)
    assert final["total_chunks"] == 5
    assert final["total_items"] == 500
    assert final["total_sum"] == 124750 == sum(range(500))


def test_fan_out_fan_in_lazy(fresh):
    """Pattern 1 as one graph: split (nout=5) -> 5-element array -> merge, afterok chain."""
    expr = pp.fan_out_fan_in_graph()
    with fresh:
        p = plan(expr)
        assert [(aj.name, aj.size) for aj in p.array_jobs] == [
            ("split_dataset", 1),
            ("process_chunk", 5),
            ("merge_results", 1),
        ]
        assert [k for aj in p.array_jobs for k, _ in aj.dependencies] == ["afterok", "afterok"]
        (final,) = compute(expr)
    assert final["total_sum"] == 124750 and final["total_items"] == 500


def test_pipeline_seed_style(fresh):
    """Pattern 2 as written: Job objects inside map items become dependencies."""
    assert pp.pipeline(fresh) == EXPECTED_PIPELINE


def test_pipeline_lazy_is_elementwise(fresh):
    """Pattern 2 as one graph is chained element-wise (aftercorr) and gives the same values."""
    expr = pp.pipeline_graph()
    with fresh:
        kinds = [[k for k, _ in aj.dependencies] for aj in plan(expr).array_jobs]
        assert kinds == [[], ["aftercorr"], ["aftercorr"]]
        assert expr.compute() == EXPECTED_PIPELINE


def test_parameter_sweep_seed_style(fresh, capsys):
    """Pattern 3 as written: the best config equals the max computed directly."""
    assert pp.parameter_sweep(fresh) == best_of_sweep()
    assert "Best: lr=" in capsys.readouterr().out


def test_parameter_sweep_lazy(fresh):
    """Pattern 3 as one graph: 12 trainings in one array, then the selection."""
    expr = pp.parameter_sweep_graph()
    with fresh:
        assert [(aj.name, aj.size) for aj in plan(expr).array_jobs] == [
            ("train_model", 12),
            ("select_best_model", 1),
        ]
        assert expr.compute() == best_of_sweep()


def test_command_line_runs_all_patterns(tmp_path, capsys):
    """The example's command line accepts the seed's flags and prints results and plans."""
    argv = [
        "--pattern",
        "all",
        "--backend",
        "sync",
        "--workdir",
        str(tmp_path),
        "--packaging",
        "container",
        "--packaging-registry",
        "registry:5000/patterns",
        "--packaging-platform",
        "linux/amd64",
        "--packaging-tls-verify",
        "false",
        "--hostname",
        "h",
        "--username",
        "u",
        "--partition",
        "debug",
    ]
    assert pp.main(argv) == 0
    out = capsys.readouterr().out
    assert "accepted but not used" in out and "--packaging" in out
    assert "'total_sum': 124750" in out
    assert "aftercorr aj0" in out
    assert out.count("final_transform_2(preprocessed_data_3)") == 2


# --------------------------------------------------------------------------- distributed_sum


def test_distributed_sum_on_one_process_backends(fresh):
    """examples/distributed_sum.py locally: each configuration is one rank with the total."""
    from examples import distributed_sum as ds

    results = ds.run(fresh)
    assert [r["total"] for r in results] == [ds.expected_total(**c) for c in ds.CONFIGS]
    assert {r["world_size"] for r in results} == {1}


@pytest.mark.slurm
def test_distributed_sum_on_the_real_slurm_uses_two_ranks(cluster_env, tmp_path):
    """On Slurm, every configuration runs on two ranks; rank 0 returns the total."""
    from examples import distributed_sum as ds

    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    cluster = Cluster("slurm", workdir=tmp_path, env={"SLURM_CONF": conf}, poll_max_s=0.5)
    results = ds.run(cluster)
    assert [r["total"] for r in results] == [ds.expected_total(**c) for c in ds.CONFIGS]
    assert [len(r["partials"]) for r in results] == [2, 2, 2]
    assert all(r["world_size"] == 2 for r in results)
    assert all(a != b for a, b in (r["partials"] for r in results))  # each rank its stride


def test_packaging_flags_reach_the_cluster():
    """--packaging and its options become the Cluster's packaging options (slurm/ssh)."""
    args = pp.make_parser().parse_args(
        [
            "--backend",
            "slurm",
            "--packaging",
            "container",
            "--packaging-registry",
            "registry:5000/patterns",
            "--packaging-platform",
            "linux/amd64",
            "--packaging-tls-verify",
            "false",
        ]
    )
    cluster = pp.make_cluster(args)
    packager = cluster.backend.packager
    assert packager.mode_of(None) == "container"
    opts = packager.options
    assert (opts.registry, opts.platform, opts.tls_verify) == (
        "registry:5000/patterns",
        "linux/amd64",
        False,
    )


# --------------------------------------------------------------------------- slurm-sdk style


def test_hello_world_submits_at_once_and_tails(tmp_path, capsys):
    """hello_world: cluster.submit gives an id at once; tail(follow=True) prints each line."""
    assert hello_world.main(["--workdir", str(tmp_path), "--name", "tests"]) == 0
    out = capsys.readouterr().out
    assert "Submitted job " in out and ":aj0_0" in out
    assert [ln for ln in out.splitlines() if ln.startswith("  | ")] == [
        f"  | hello tests ({i}/3)" for i in (1, 2, 3)
    ]
    assert "Hello, tests!" in out


def test_map_reduce_counts_words(fresh):
    """map_reduce: the reduced counts equal a direct count of the text."""
    expected: dict[str, int] = {}
    for word in " ".join(map_reduce.TEXT).split():
        expected[word] = expected.get(word, 0) + 1
    assert map_reduce.run(fresh) == expected


def test_map_reduce_reports_a_failed_chunk_without_raising(tmp_path, capsys):
    """map_reduce: `if not job.wait()` reports the failed element's id, state and error."""
    assert map_reduce.main(["--workdir", str(tmp_path), "--fail-chunk", "1"]) == 1
    out = capsys.readouterr().out
    assert "map job " in out and ":aj0_1 ended FAILED: ValueError: cannot count" in out


def test_train_eval_overlaps_training_and_baseline_evaluation(fresh):
    """train_eval: one submission for all jobs; the baseline is evaluated while training runs."""
    result = train_eval.run(fresh, lr=0.2, epochs=4)
    assert result["new"]["accuracy"] == round(1 - 0.8**4 / 2, 4)
    assert result["decision"].startswith("keep model-lr0.2")
    assert len(fresh.session.runs()) == 1  # one flush: train, both evaluations and the comparison
    if fresh.backend_name == "local":  # sync runs everything in one thread, in order
        assert result["overlap"] is True
        assert result["baseline"]["started"] < result["model"]["ended"]
