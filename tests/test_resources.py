"""Task options: parsing, normalisation and validation (lazyslurm.graph.resources)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import mem_strings, time_strings

from lazyslurm.backends.slurm.render import resource_flags
from lazyslurm.errors import InvalidOptionError, LazySlurmError, OptionTypeError
from lazyslurm.graph import Task, task
from lazyslurm.graph.resources import (
    OPTION_NAMES,
    SCHEDULER_OPTIONS,
    TASK_OPTIONS,
    Resources,
    _flag,
    parse_mem,
    parse_time,
)


def body(x: int) -> int:
    return x


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("value", "minutes"),
    [
        ("30:00", 30),  # MM:SS
        ("03:00", 3),
        ("0:30", 1),  # rounded up to a whole minute
        ("90:00", 90),  # MM:SS may exceed an hour
        ("00:03:00", 3),  # HH:MM:SS
        ("01:30:00", 90),
        ("01:30:01", 91),
        ("2-00:00:00", 2880),  # D-HH:MM:SS
        ("1-02:03:04", 1 * 1440 + 2 * 60 + 4),
        ("1-02", 1440 + 120),  # D-HH
        ("1-02:03", 1440 + 123),  # D-HH:MM
        ("45", 45),  # bare minutes, as Slurm reads it
        (" 10:00 ", 10),
        (5, 5),  # int minutes
        (dt.timedelta(hours=2), 120),
        (dt.timedelta(seconds=61), 2),
    ],
)
def test_parse_time_accepts_every_form(value: Any, minutes: int) -> None:
    """parse_time reads MM:SS, HH:MM:SS, D-HH:MM:SS, int minutes and timedelta as minutes."""
    assert parse_time(value) == minutes


@settings(max_examples=150, deadline=None)
@given(time_strings())
def test_parse_time_strings_property(case: tuple[str, int]) -> None:
    """Any well-formed time string parses to its whole minutes, rounded up."""
    text, minutes = case
    assert parse_time(text) == minutes


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10**6))
def test_time_forms_agree(minutes: int) -> None:
    """An int, a timedelta and a D-HH:MM:SS string for the same duration are equal."""
    d, rest = divmod(minutes, 1440)
    h, m = divmod(rest, 60)
    assert (
        parse_time(minutes)
        == parse_time(dt.timedelta(minutes=minutes))
        == parse_time(f"{d}-{h:02d}:{m:02d}:00")
        == minutes
    )


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "",
        "1:2:3:4",
        "10:60",
        "01:60:00",
        "1-01:60:00",
        "x-01:00:00",
        "1-",
        "-5",
        "1:-5",
        "00:00",
        "0-00:00:00",
        0,
        -5,
        dt.timedelta(0),
        dt.timedelta(seconds=-1),
    ],
)
def test_bad_time_values_raise_value_error_naming_option_value_and_forms(value: Any) -> None:
    """A bad time raises a ValueError naming the option, the value and the accepted forms."""
    with pytest.raises(ValueError) as info:
        task(time=value)
    err = info.value
    assert isinstance(err, InvalidOptionError) and isinstance(err, LazySlurmError)
    msg = str(err)
    assert "time=" in msg
    assert f"time={value!r}" in msg
    assert '"MM:SS"' in msg and '"HH:MM:SS"' in msg and '"D-HH:MM:SS"' in msg
    assert "int of minutes" in msg and "timedelta" in msg


@pytest.mark.parametrize("value", [1.5, True, object(), [1], b"10:00"])
def test_wrong_time_types_raise_type_error(value: Any) -> None:
    """A time of the wrong type raises OptionTypeError (a TypeError) naming option and forms."""
    with pytest.raises(TypeError) as info:
        parse_time(value)
    assert isinstance(info.value, OptionTypeError)
    msg = str(info.value)
    assert "time=" in msg and repr(value) in msg and '"MM:SS"' in msg


# --------------------------------------------------------------------------- mem


@pytest.mark.parametrize(
    ("value", "mb"),
    [
        ("256M", 256),
        ("4G", 4096),
        ("4g", 4096),
        ("1.5G", 1536),
        ("100MB", 100),
        ("2GiB", 2048),
        ("1T", 1024 * 1024),
        ("512K", 1),  # rounded up
        (" 8G ", 8192),
        (512, 512),
    ],
)
def test_parse_mem_accepts_every_form(value: Any, mb: int) -> None:
    """parse_mem reads "256M", "4G" (binary units) and an int of megabytes as whole MB."""
    assert parse_mem(value) == mb


@settings(max_examples=150, deadline=None)
@given(mem_strings())
def test_parse_mem_strings_property(case: tuple[str, int]) -> None:
    """Any well-formed memory string parses to its size in megabytes."""
    text, mb = case
    assert parse_mem(text) == mb


@pytest.mark.parametrize("value", ["abc", "", "4X", "G4", "4 G B", "-4G", "0M", "0", "4", 0, -1])
def test_bad_mem_values_raise_value_error_naming_option_value_and_forms(value: Any) -> None:
    """A malformed or non-positive mem raises InvalidOptionError naming option, value, forms."""
    with pytest.raises(ValueError) as info:
        task(mem=value)
    assert isinstance(info.value, InvalidOptionError)
    msg = str(info.value)
    assert f"mem={value!r}" in msg
    assert '"256M"' in msg and '"4G"' in msg and "int of megabytes" in msg


@pytest.mark.parametrize("value", [4.0, True, [256], dt.timedelta(1)])
def test_wrong_mem_types_raise_type_error(value: Any) -> None:
    """A mem of the wrong type raises OptionTypeError naming option, value and forms."""
    with pytest.raises(OptionTypeError) as info:
        task(mem=value)
    msg = str(info.value)
    assert f"mem={value!r}" in msg and '"4G"' in msg


# --------------------------------------------------------------------------- other options


@pytest.mark.parametrize(
    ("option", "value", "exc"),
    [
        ("cpus_per_task", 0, InvalidOptionError),
        ("cpus_per_task", -1, InvalidOptionError),
        ("cpus_per_task", "2", OptionTypeError),
        ("cpus_per_task", True, OptionTypeError),
        ("nodes", 0, InvalidOptionError),
        ("ntasks", 1.0, OptionTypeError),
        ("max_concurrent", 0, InvalidOptionError),
        ("retries", -1, InvalidOptionError),
        ("retries", "1", OptionTypeError),
        ("packaging", "by_value", InvalidOptionError),
        ("packaging", True, OptionTypeError),
        ("gpus", -1, InvalidOptionError),
        ("gpus", "a100:x", InvalidOptionError),
        ("gpus", 1.5, OptionTypeError),
        ("ntasks_per_node", 0, InvalidOptionError),
        ("gpus_per_node", "x:y", InvalidOptionError),
        ("gpus_per_task", 1.0, OptionTypeError),
        ("gather", "first", InvalidOptionError),
        ("gather", 0, OptionTypeError),
        ("partition", "has space", InvalidOptionError),
        ("partition", "", InvalidOptionError),
        ("partition", 3, OptionTypeError),
        ("account", "a;b", InvalidOptionError),
        ("qos", "q\nx", InvalidOptionError),
        ("job_name", "a/b", InvalidOptionError),
        ("gres", "gpu:1\n#SBATCH --x", InvalidOptionError),
        ("gres", "  ", InvalidOptionError),
        ("constraint", ["a"], OptionTypeError),
        ("extra_sbatch", "--exclusive", OptionTypeError),
        ("extra_sbatch", ["exclusive"], InvalidOptionError),
        ("extra_sbatch", ["--x\n--y"], InvalidOptionError),
        ("extra_sbatch", [3], OptionTypeError),
    ],
)
def test_bad_option_values_name_option_value_and_forms(
    option: str, value: Any, exc: type[Exception]
) -> None:
    """Every option rejects bad values with a ValueError/TypeError naming option and value."""
    with pytest.raises(exc) as info:
        task(**{option: value})
    msg = str(info.value)
    assert f"{option}=" in msg
    assert "expected" in msg or "accepted forms" in msg


def test_pure_must_be_a_bool() -> None:
    """pure="yes" raises a TypeError naming the option, the value and the accepted forms."""
    with pytest.raises(OptionTypeError, match=r"pure='yes'.*True or False"):
        task(pure="yes")(body)


def test_unknown_option_names_are_rejected_with_the_known_ones() -> None:
    """A misspelt option raises a TypeError naming it and listing the known options."""
    with pytest.raises(TypeError) as info:
        task(tme="1:00", memory="1G")
    msg = str(info.value)
    assert isinstance(info.value, OptionTypeError)
    assert "memory (did you mean mem='1G'" in msg and "tme (did you mean 'time'?)" in msg
    assert all(name in msg for name in OPTION_NAMES)


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ({"timeout_min": 30}, "did you mean time=30 (submitit's timeout_min; an int is minutes)?"),
        ({"mem_gb": 4}, "did you mean mem='4G'"),
        ({"slurm_partition": "gpu"}, "did you mean partition='gpu'"),
        ({"cpus-per-task": 2}, "did you mean 'cpus_per_task'?"),
        ({"slurm_array_parallelism": 8}, "did you mean max_concurrent=8"),
    ],
)
def test_submitit_and_sbatch_option_names_get_a_did_you_mean(given: dict, hint: str) -> None:
    """submitit's names (timeout_min, mem_gb, slurm_partition...) are answered with ours."""
    with pytest.raises(OptionTypeError) as info:
        task(**given)
    assert hint in str(info.value)


def test_validation_happens_at_decoration_time() -> None:
    """@task(time="abc") raises when the decorator runs, before any function is given."""
    with pytest.raises(InvalidOptionError):
        task(time="abc")


def test_good_options_normalise_to_one_form() -> None:
    """All options land in Resources with units in names; spellings of one value are equal."""
    r = Resources.from_options(
        time="1-00:00:00",
        mem="2G",
        cpus_per_task=4,
        gpus="a100:2",
        gres="gpu:1",
        partition="debug",
        account="acct",
        qos="normal",
        nodes=1,
        ntasks=2,
        constraint="x86&avx",
        job_name="my.job",
        max_concurrent=3,
        extra_sbatch=["--exclusive"],
        retries=2,
        pure=False,
    )
    assert (r.timeout_min, r.mem_mb, r.cpus_per_task, r.gpus) == (1440, 2048, 4, "a100:2")
    assert (r.partition, r.account, r.qos, r.nodes, r.ntasks) == ("debug", "acct", "normal", 1, 2)
    assert (r.constraint, r.job_name, r.max_concurrent, r.retries) == ("x86&avx", "my.job", 3, 2)
    assert r.extra_sbatch == ("--exclusive",)
    assert Resources.from_options(time="60:00", mem="1G") == Resources.from_options(
        time=dt.timedelta(hours=1), mem=1024
    )
    assert Resources.from_options(gpus=2).gpus == "2"
    assert Resources.from_options(time=None, mem=None) == Resources()


def test_resources_are_frozen_and_hashable() -> None:
    """Resources are immutable and usable as dict keys (the planner groups by them)."""
    r = Resources.from_options(mem="1G")
    with pytest.raises(AttributeError):
        r.mem_mb = 2  # type: ignore[misc]
    assert {r: 1}[Resources(mem_mb=1024)] == 1


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "time": st.integers(1, 10_000),
            "mem": st.integers(1, 10**6),
            "cpus_per_task": st.integers(1, 64),
            "gpus": st.integers(0, 8),
            "partition": st.sampled_from(["debug", "gpu"]),
            "max_concurrent": st.integers(1, 10),
            "extra_sbatch": st.lists(st.sampled_from(["--exclusive", "--requeue"]), max_size=2),
            "retries": st.integers(0, 3),
            "ntasks_per_node": st.integers(1, 8),
            "gpus_per_node": st.sampled_from([1, "a100:4"]),
            "gpus_per_task": st.integers(0, 2),
            "gather": st.sampled_from(["rank0", "all"]),
            "packaging": st.sampled_from(["auto", "inherit", "by-value", "wheel", "container"]),
        },
    )
)
def test_as_options_round_trips(options: dict[str, Any]) -> None:
    """Resources.from_options(**r.as_options()) == r."""
    r = Resources.from_options(**options)
    assert Resources.from_options(**r.as_options()) == r


def test_describe_gives_short_labels() -> None:
    """describe() gives short labels for time, mem and cpus."""
    r = Resources.from_options(time="00:03:00", mem="256M", cpus_per_task=1)
    assert dict(r.describe()) == {"time": "3min", "mem": "256M", "cpus": "1"}


# --------------------------------------------------------------------------- Task


def test_task_decorator_forms() -> None:
    """@task, @task() and @task(**options) all make a Task; task(f) too."""
    t1 = task(body)
    t2 = task()(body)
    t3 = task(time=5)(body)
    assert all(isinstance(t, Task) for t in (t1, t2, t3))
    assert t1.resources == t2.resources == Resources()
    assert t3.resources.timeout_min == 5
    assert t1.name == "body" and t1.__name__ == "body" and t1.__wrapped__ is body


def test_task_needs_a_callable() -> None:
    """task(42) raises a TypeError."""
    with pytest.raises(TypeError, match="callable"):
        task(42)  # type: ignore[call-overload]


def test_options_returns_a_new_task_and_leaves_the_original() -> None:
    """task.options(**overrides) returns a new Task with merged, validated options."""
    t = task(time="00:03:00", mem="256M")(body)
    t2 = t.options(mem="1G", cpus_per_task=2)
    assert t2 is not t and isinstance(t2, Task)
    assert t.resources == Resources(timeout_min=3, mem_mb=256)
    assert t2.resources == Resources(timeout_min=3, mem_mb=1024, cpus_per_task=2)
    assert t2.unwrapped is body and t2.token == t.token
    assert t.options(pure=False).pure is False and t.pure is True
    assert t.options(time=None).resources.timeout_min is None


def test_options_validates_overrides() -> None:
    """task.options(time="abc") raises like the decorator; unknown names too."""
    t = task(body)
    with pytest.raises(InvalidOptionError, match="time='abc'"):
        t.options(time="abc")
    with pytest.raises(OptionTypeError, match="unknown task option"):
        t.options(colour="red")


def test_unwrapped_is_the_plain_function() -> None:
    """task.unwrapped is the function itself, callable directly."""
    t = task(mem="1G")(body)
    assert t.unwrapped is body and t.unwrapped(3) == 3


def test_task_is_immutable() -> None:
    """Setting an attribute on a Task raises TypeError pointing at options()."""
    t = task(body)
    with pytest.raises(TypeError, match=r"options\("):
        t.time = 5  # type: ignore[attr-defined]


def test_ranks_counts_the_processes_that_run_the_function() -> None:
    """ranks is ntasks, else nodes x ntasks_per_node, else 1 (nodes alone stay one process)."""
    assert Resources.from_options(ntasks=4).ranks == 4
    assert Resources.from_options(nodes=2, ntasks_per_node=4).ranks == 8
    assert Resources.from_options(ntasks_per_node=2).ranks == 2
    assert Resources.from_options(nodes=3).ranks == 1
    assert Resources().ranks == 1


def test_gather_rank0_is_the_default_spelling() -> None:
    """gather="rank0" normalises to the default, so such tasks share array jobs."""
    assert Resources.from_options(gather="rank0") == Resources()
    assert Resources.from_options(gather="all").gather == "all"


# --------------------------------------------------------------------------- sbatch long options


def test_sbatch_long_options_by_python_name() -> None:
    """ntasks_per_node, gpus_per_task, mem_per_cpu, exclusive, mail_type... become sbatch flags."""
    r = Resources.from_options(
        ntasks_per_node=4,
        gpus_per_task="a100:1",
        gpus_per_node=2,
        mem_per_cpu="2G",
        exclusive=True,
        mail_type=["end", "FAIL"],
        mail_user="me@example.org",
        nice=-5,
        time_min="00:30:00",
        requeue=False,
    )
    assert resource_flags(r) == [  # Resources' own fields first, then the others sorted
        "--ntasks-per-node=4",
        "--gpus-per-node=2",
        "--gpus-per-task=a100:1",
        "--exclusive",
        "--mail-type=END,FAIL",
        "--mail-user=me@example.org",
        "--mem-per-cpu=2048M",
        "--nice=-5",
        "--time-min=30",
    ]
    assert Resources.from_options(**r.as_options()) == r
    assert r == Resources.from_options(
        mem_per_cpu=2048, **{k: v for k, v in r.as_options().items() if k != "mem_per_cpu"}
    )


def test_sbatch_long_options_are_validated() -> None:
    """A bad value of a long option raises naming it; an unknown name lists the known ones."""
    cases = [
        ("ntasks_per_node", 0, InvalidOptionError),
        ("ntasks_per_node", 2.5, OptionTypeError),
        ("mem_per_cpu", "lots", InvalidOptionError),
        ("mail_type", "SOMETIMES", InvalidOptionError),
        ("exclusive", 3, OptionTypeError),
        ("gpus_per_task", "x:y", InvalidOptionError),
        ("reservation", "a b", InvalidOptionError),
        ("comment", "line\nbreak", InvalidOptionError),
    ]
    for name, value, error in cases:
        with pytest.raises(error, match=name):
            Resources.from_options(**{name: value})
    with pytest.raises(OptionTypeError, match="ntasks_per_node"):
        Resources.from_options(ntask_per_node=2)


def test_every_table_option_renders_one_flag() -> None:
    """Each scheduler option is a known option and renders as its --long-flag."""
    samples = {"mail_type": "END", "gpus_per_task": 1, "gpus_per_node": 1, "gpus_per_socket": 1}
    for name in SCHEDULER_OPTIONS:
        assert name in OPTION_NAMES
        if name in samples:
            value: object = samples[name]
        elif TASK_OPTIONS[name].opt.parse in (_flag,):
            value = True
        else:
            value = next(v for v in (1, "x", "1G", "1:00") if _accepts(name, v))
        flags = resource_flags(Resources.from_options(**{name: value}))
        assert len(flags) == 1 and flags[0].startswith(f"--{name.replace('_', '-')}")


def _accepts(name: str, value: object) -> bool:
    try:
        Resources.from_options(**{name: value})
    except (InvalidOptionError, OptionTypeError):
        return False
    return True


def test_cluster_defaults_fill_long_options_the_task_leaves_unset() -> None:
    """A default long option applies unless the task sets its own value."""
    d = Resources.from_options(ntasks_per_node=2, exclusive=True)
    r = Resources.from_options(ntasks_per_node=8)
    assert resource_flags(r.with_defaults(d)) == ["--ntasks-per-node=8", "--exclusive"]
