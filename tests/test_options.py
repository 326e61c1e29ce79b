"""Options, declared once: Cluster options per backend (lazyslurm.options,
lazyslurm.backends.option) and task options (lazyslurm.graph.resources), each a typed
keyword whose annotation the runtime checks too."""

from __future__ import annotations

import datetime
import typing
from pathlib import Path

import pytest
from test_typing import mypy

from lazyslurm import Cluster, backends
from lazyslurm.backends.option import Option
from lazyslurm.errors import ClusterConfigError
from lazyslurm.graph.options import declared
from lazyslurm.graph.resources import OPTION_NAMES, TASK_OPTIONS, TaskOptions
from lazyslurm.options import ClusterOptions, all_options, markdown_table, problems

DOCS = Path(__file__).resolve().parent.parent / "docs" / "reference.md"


def test_every_option_is_declared_once_with_type_default_and_help() -> None:
    """Each option has a help line, the backends that take it, and a default of its type."""
    for opt in all_options().values():
        assert opt.help and opt.backends, opt.name
        assert opt.default is None or opt.problem(opt.default) is None, opt.name


def test_the_typed_keywords_are_the_declaration() -> None:
    """ClusterOptions holds every option of every built-in backend, TaskOptions every task
    option the runtime accepts: the same TypedDicts the runtime reads (no second list)."""
    builtin = {"local", "sync", "slurm", "ssh"}
    assert set(declared(ClusterOptions)) == {
        n for n, o in all_options().items() if builtin & set(o.backends)
    }
    assert set(TaskOptions.__annotations__) <= set(TASK_OPTIONS)
    assert set(declared(TaskOptions)) == set(OPTION_NAMES) | {"pure", "name"}


def _sample(tp: object) -> str:
    """Python source of a value of the declared type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        return _sample(args[0])
    if origin is typing.Literal:
        return repr(args[0])
    if tp is str:
        return "'x'"
    if tp is bool:
        return "True"
    if tp is int:
        return "2"
    if tp is float:
        return "1.5"
    if tp is datetime.timedelta:
        return "datetime.timedelta(minutes=5)"
    if origin is not None and "Sequence" in str(origin):
        return f"[{_sample(args[0])}]"
    if origin is not None and "Mapping" in str(origin):
        return "{'A': 'b'}"
    if origin is not None and "Callable" in str(origin):
        return "lambda *a: 'x'"
    if origin is not None and "PathLike" in str(origin):
        return "pathlib.Path('p')"
    return "None"


def test_mypy_strict_accepts_every_option_the_runtime_accepts(tmp_path: Path) -> None:
    """A script passing every Cluster option and every task option, each with a value of
    its declared type, type-checks under mypy --strict (the typed signature is generated
    from the same declaration the runtime checks)."""
    cluster = ", ".join(
        f"{n}={_sample(o.declared.annotation)}"
        for n, o in all_options().items()
        if {"local", "sync", "slurm", "ssh"} & set(o.backends)
    )
    opts = ", ".join(f"{n}={_sample(d.annotation)}" for n, d in TASK_OPTIONS.items() if n != "pack")
    script = tmp_path / "every_option.py"
    script.write_text(
        "import datetime\nimport pathlib\n"
        "from lazyslurm import Cluster, task\n\n"
        f"c = Cluster('ssh', {cluster})\n\n"
        f"@task({opts}, pack=4)\n"
        "def f(x: int) -> int:\n    return x\n\n"
        f"g = f.options({opts})\n"
    )
    out = mypy(script, tmp_path / "cache")
    assert out.returncode == 0, out.stdout + out.stderr


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


def test_an_unknown_backend_is_refused_at_once_with_did_you_mean() -> None:
    """Cluster("slrum") fails when made, naming the closest backend."""
    with pytest.raises(ClusterConfigError, match="did you mean 'slurm'"):
        Cluster("slrum")  # type: ignore[arg-type]


def test_good_options_pass() -> None:
    """Declared options of the right type and backend are accepted, nothing started."""
    c = Cluster("ssh", hostname="h", port=2222, key_filename=[Path("/k")], setup=("a",))
    assert c._backend is None and problems("ssh", {"hostname": "h", "cache": True}) == []


def test_repr_shows_the_options() -> None:
    """repr(Cluster(...)) shows its backend and the options given."""
    assert repr(Cluster("slurm", partition="debug", cache=True)) == (
        "Cluster('slurm', partition='debug', cache=True)"
    )


def test_an_option_says_what_is_wrong() -> None:
    """Option.problem names the expected type and what it got."""
    opt = Option.of("time", str | int, None, "time limit", ("slurm",))
    assert opt.problem(1.5) == "must be a string or an integer, got a float (1.5)"
    assert opt.applies_to("local") == 'only applies to backend "slurm"'


def test_every_builtin_backend_is_registered() -> None:
    """The registry names the four built-in backends, each with a spec."""
    assert {"local", "sync", "slurm", "ssh"} <= set(backends.names())
    assert all(isinstance(s, backends.BackendSpec) for s in backends.specs())
