"""Cluster options, declared once per backend (lazyslurm.options, lazyslurm.backends.option)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lazyslurm import Cluster
from lazyslurm.backends.option import Option
from lazyslurm.errors import ClusterConfigError
from lazyslurm.options import OPTIONS, markdown_table, problems

DOCS = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


def test_every_option_is_declared_once_with_type_default_and_help() -> None:
    """Each option has a known type, a help line and the backends that take it."""
    assert len(OPTIONS) == len({o.name for o in OPTIONS.values()})
    for opt in OPTIONS.values():
        assert (opt.help and opt.backends and opt.problem(opt.default) in (None,)) or (
            opt.default is None
        )


def test_the_docs_table_is_the_declaration() -> None:
    """docs/reference.md holds exactly the generated options table."""
    text = DOCS.read_text()
    start = text.index("-->\n", text.index("<!-- options-table")) + 4
    end = text.index("<!-- /options-table -->")
    assert text[start:end] == markdown_table()


@pytest.mark.parametrize(
    ("backend", "options", "words"),
    [
        ("local", {"partition": "debug"}, 'only applies to backend "slurm" or "ssh"'),
        ("slurm", {"port": 22}, 'only applies to backend "ssh"'),
        ("slurm", {"partiton": "x"}, "did you mean 'partition'"),
        ("ssh", {"hostname": "h", "port": "22"}, "must be an integer, got a string ('22')"),
        ("ssh", {"hostname": "h", "connect_timeout_s": 0}, "must be greater than zero"),
        ("slurm", {"status": "scontrol"}, "must be one of auto, sacct, squeue"),
        ("ssh", {}, "'hostname'"),
        ("local", {"max_workers": 0}, "must be greater than zero"),
    ],
)
def test_cluster_refuses_what_the_declarations_refuse(backend, options, words) -> None:
    """Cluster(...) checks options against their declarations before anything starts."""
    assert problems(backend, options)
    with pytest.raises(ClusterConfigError) as err:
        Cluster(backend, **options)
    assert words in str(err.value)


def test_good_options_pass() -> None:
    """Declared options of the right type and backend are accepted, nothing started."""
    c = Cluster("ssh", hostname="h", port=2222, key_filename=[Path("/k")], setup=("a",))
    assert c._backend is None and problems("ssh", {"hostname": "h", "cache": True}) == []


def test_an_option_says_what_is_wrong() -> None:
    """Option.problem names the expected type and what it got."""
    opt = Option("time", "str_or_int", None, "time limit", ("slurm",))
    assert opt.problem(1.5) == "must be a string or an integer, got a float (1.5)"
    assert opt.applies_to("local") == 'only applies to backend "slurm"'
