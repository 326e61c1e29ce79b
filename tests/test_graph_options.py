"""Typed option keywords and "did you mean" (lazyslurm/graph/options.py)."""

from __future__ import annotations

import pytest

from lazyslurm import Cluster
from lazyslurm.errors import ClusterConfigError
from lazyslurm.graph.options import ALIASES, declared, suggest
from lazyslurm.graph.resources import OPTION_NAMES, TaskOptions
from lazyslurm.options import ClusterOptions, all_options


def test_task_options_typed_dict_names_every_task_option() -> None:
    """TaskOptions (what checkers and editors see) is the declaration @task reads: every
    option it accepts, and nothing else."""
    assert set(declared(TaskOptions)) == {*OPTION_NAMES, "name"}  # name: a label


def test_cluster_options_typed_dict_names_every_backend_option() -> None:
    """ClusterOptions names exactly the options the backends declare (lazyslurm.options)."""
    builtin = {"local", "sync", "slurm", "ssh"}
    assert set(declared(ClusterOptions)) == {
        n for n, o in all_options().items() if builtin & set(o.backends)
    }


def test_every_alias_points_at_a_real_option() -> None:
    """Each alias names an option of a task, a Cluster or a profile."""
    real = set(OPTION_NAMES) | set(all_options())
    assert {target for target, _, _ in ALIASES.values()} <= real


@pytest.mark.parametrize(
    ("name", "value", "hint"),
    [
        ("timeout_min", 90, "did you mean time=90 (submitit's timeout_min; an int is minutes)?"),
        ("mem_gb", 16, "did you mean mem='16G' (submitit's mem_gb; mem takes units)?"),
        ("slurm_partition", "gpu", "did you mean partition='gpu' (submitit's slurm_partition)?"),
        ("--cpus-per-task", 4, "did you mean 'cpus_per_task'?"),
        ("partiton", "x", "did you mean 'partition'?"),
        ("slurm_additional_parameters", {"exclusive": True}, "did you mean 'extra_sbatch'"),
    ],
)
def test_suggest_answers_aliases_and_misspellings(name: str, value: object, hint: str) -> None:
    """suggest() maps submitit/sbatch spellings to ours (with the value) and near misses."""
    assert suggest(name, OPTION_NAMES, value).startswith(hint)


def test_suggest_is_silent_for_far_names_and_absent_targets() -> None:
    """No hint for an unrelated name, nor for an alias whose target is not allowed here."""
    assert suggest("colour", OPTION_NAMES) == ""
    assert suggest("slurm_setup", OPTION_NAMES) == ""  # setup is a Cluster option


def test_cluster_option_typo_gets_a_did_you_mean() -> None:
    """Cluster("slurm", slurm_partition=...) names our option before anything starts."""
    with pytest.raises(ClusterConfigError, match=r"'slurm_partition'.*did you mean partition="):
        Cluster("slurm", slurm_partition="debug")
    with pytest.raises(ClusterConfigError, match=r"'hostnme'.*did you mean 'hostname'"):
        Cluster("ssh", hostnme="login")
