"""Lazy nodes: Task, Job, JobArray, JobView and their keys (lazyslurm.graph.core)."""

from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, NamedTuple

import cloudpickle
import pytest
from hypothesis import given, settings
from strategies import plain_values

import lazyslurm
from lazyslurm.context import JobContext
from lazyslurm.errors import (
    DaskCollectionError,
    HiddenLazyValueError,
    LazyValueError,
    OptionTypeError,
    TaskArgumentsError,
    UnexpectedKeywordError,
    UnknownLengthError,
)
from lazyslurm.graph import Job, JobArray, JobView, Resources, Task, function_token, task
from lazyslurm.graph.core import safe_repr
from lazyslurm.store import MapItem, Ref, RefList

REPO = Path(lazyslurm.__file__).resolve().parent.parent


@task
def f(*args: Any, **kwargs: Any) -> Any:
    return args, kwargs


@task(mem="1G")
def g(*args: Any, **kwargs: Any) -> Any:
    return args, kwargs


impure = f.options(pure=False)


def run_python(code: str, **env: str) -> str:
    """Run ``code`` in a fresh interpreter with the repository importable; its stdout."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        check=True,
        cwd=env.get("CWD"),
    )
    return out.stdout


# --------------------------------------------------------------------------- laziness


def test_building_submits_nothing(tmp_path: Path) -> None:
    """Calls, .map and .after build a graph without loading compute/backends or writing."""
    out = run_python(
        """
        import os, sys
        from lazyslurm import task
        @task
        def inc(x): return x + 1
        a = inc(1)
        arr = inc.map(range(3))
        b = inc.after(arr).map(arr)
        c = inc([a, *b])
        bad = [m for m in sys.modules if m.startswith(("lazyslurm.execute",
               "lazyslurm.backends", "lazyslurm.cluster", "lazyslurm.planning"))]
        print(bad, os.listdir("."))
        """,
        CWD=str(tmp_path),
        LAZYSLURM_WORKDIR=str(tmp_path / "work"),
    )
    assert out.strip() == "[] []"


def test_calls_return_jobs_and_maps_return_job_arrays() -> None:
    """Calling a task returns a Job; task.map returns a JobArray of element Jobs."""
    j = f(1)
    arr = f.map([1, 2])
    assert type(j) is Job and type(arr) is JobArray
    assert all(type(x) is Job for x in arr)
    assert j.task is f and j.args == (1,) and j.kwargs == {} and j.deps == () and j.nout is None


def test_jobs_are_immutable() -> None:
    """Setting an attribute, an item or deleting an item of a lazy value raises TypeError."""
    j = f(1)
    for obj in (j, f.map([1]), j[0]):
        with pytest.raises(TypeError, match="immutable"):
            obj.x = 1
        with pytest.raises(TypeError, match="immutable"):
            obj[0] = 1
        with pytest.raises(TypeError, match="immutable"):
            del obj[0]
    j.kwargs["x"] = 1  # a copy: the job is unchanged
    assert j.kwargs == {}


def test_jobs_are_hashable_and_equal_by_key() -> None:
    """Jobs hash and compare by key: building the same call twice gives equal jobs."""
    a, b = f(1, k="v"), f(1, k="v")
    assert a is not b and a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != f(2)
    arr1, arr2 = f.map([1, 2]), f.map([1, 2])
    assert arr1 == arr2 and hash(arr1) == hash(arr2)
    assert a[0] == b[0] and hash(a[0]) == hash(b[0]) and a[0] != a[1]


@pytest.mark.parametrize("make", [lambda: f(1), lambda: f.map([1]), lambda: f(1)[0]])
def test_truth_value_is_refused(make: Any) -> None:
    """bool() of a Job, JobArray or JobView raises TypeError, as dask's Delayed does."""
    with pytest.raises(TypeError, match="truth value"):
        bool(make())


def test_a_task_is_not_an_argument() -> None:
    """Passing a Task itself as an argument raises TypeError."""
    with pytest.raises(TypeError, match="cannot use"):
        f(g)


# --------------------------------------------------------------------------- keys


@settings(max_examples=150, deadline=None)
@given(plain_values(), plain_values())
def test_keys_are_deterministic_and_follow_arguments(a: Any, b: Any) -> None:
    """Same arguments (even a copy) give the same key; different arguments another one."""
    assert f(a).key == f(copy.deepcopy(a)).key
    assert (f(a).key == f(b).key) == (repr(a) == repr(b))
    assert f(a).key != g(a).key
    assert f(x=a).key != f(a).key


def test_key_starts_with_the_task_name() -> None:
    """A key reads NAME-HASH."""
    assert f(1).key.startswith("f-")
    assert task(lambda x: x)(1).key.startswith("lambda-")


def test_key_changes_with_argument_types_and_structure() -> None:
    """1, 1.0, True and "1" differ; so do [1, 2] vs [[1], 2], set vs frozenset, arg order."""
    keys = [
        f(1).key,
        f(1.0).key,
        f(True).key,
        f("1").key,
        f([1, 2]).key,
        f([[1], 2]).key,
        f((1, 2)).key,
        f({1, 2}).key,
        f(frozenset({1, 2})).key,
        f(2, 1).key,
        f(1, 2).key,
        f(a=1, b=2).key,
        f(a=2, b=1).key,
        f({"a": 1}).key,
        f(a=1).key,
    ]
    assert len(set(keys)) == len(keys)
    assert f({3, 1, 2}).key == f({2, 3, 1}).key
    assert f(a=1, b=2).key == f(b=2, a=1).key


def _defined(source: str) -> Any:
    namespace: dict[str, Any] = {"__name__": "user_module"}
    exec(textwrap.dedent(source), namespace)
    return namespace["work"]


def test_key_changes_when_the_functions_code_changes() -> None:
    """Editing a function's body, constants or defaults changes the key; same code, same key."""
    v1 = _defined("def work(x):\n    return x + 1\n")
    v1_again = _defined("def work(x):\n    return x + 1\n")
    v2 = _defined("def work(x):\n    return x + 2\n")
    v3 = _defined("def work(x):\n    return x - 1\n")
    v4 = _defined("def work(x, y=1):\n    return x + y\n")
    v5 = _defined("def work(x, y=2):\n    return x + y\n")
    v6 = _defined("def work(x):\n    def inner():\n        return x * 3\n    return inner()\n")
    v7 = _defined("def work(x):\n    def inner():\n        return x * 4\n    return inner()\n")
    keys = [task(fn)(1).key for fn in (v1, v2, v3, v4, v5, v6, v7)]
    assert len(set(keys)) == len(keys)
    assert task(v1)(1).key == task(v1_again)(1).key
    assert function_token(v1) == function_token(v1_again) != function_token(v2)


def test_key_changes_with_closure_values() -> None:
    """Tasks made by one factory differ by their captured values (so do their keys)."""

    def make(k: int) -> Task[int]:
        return task(lambda x: x + k)

    assert make(1)(5).key != make(2)(5).key
    assert make(1)(5).key == make(1)(5).key


class Scaler:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    def scale(self, x: int) -> int:
        return x * self.factor


def test_key_changes_with_the_bound_methods_instance() -> None:
    """task(obj.method) keys differ between instances with different state."""
    assert task(Scaler(2).scale)(1).key != task(Scaler(3).scale)(1).key
    assert task(Scaler(2).scale)(1).key == task(Scaler(2).scale)(1).key


def test_options_keep_the_key_pure_false_gives_fresh_keys() -> None:
    """Resources do not change a key; pure=False gives a fresh key on every call and map."""
    assert f.options(mem="8G")(1).key == f(1).key
    assert impure(1).key != impure(1).key
    assert impure.map([1, 1])[0].key != impure.map([1, 1])[1].key
    assert task(pure=False)(f.unwrapped)(1).key != f(1).key


def test_after_is_part_of_the_key() -> None:
    """f.after(a)(x) is a different node from f(x); the same .after gives the same key."""
    a = g(0)
    assert f.after(a)(1).key != f(1).key
    assert f.after(a)(1).key == f.after(a)(1).key
    assert f.after(a).map([1])[0].key != f.map([1])[0].key
    assert f.after(a)(1).key != f.after(g(9))(1).key


def test_keys_are_stable_across_interpreters(tmp_path: Path) -> None:
    """The same call gives the same key in two interpreters with different hash seeds."""
    (tmp_path / "stable_mod.py").write_text(
        textwrap.dedent(
            """
            from lazyslurm.graph import task

            @task
            def work(*args, **kwargs):
                return args

            KEY = work(1, "s", [1.5, None], {"b": {"x", "y", "z"}}, k=(b"x", True)).key
            """
        )
    )
    code = "import stable_mod; print(stable_mod.KEY)"
    env = {"PYTHONPATH": f"{REPO}{os.pathsep}{tmp_path}"}
    k1 = run_python(code, PYTHONHASHSEED="1", **env)
    k2 = run_python(code, PYTHONHASHSEED="2", **env)
    assert k1 == k2 and k1.startswith("work-")


def test_map_keys_equal_call_keys() -> None:
    """f.map([x])[0] is the same node as f(x) for each item form."""
    arr = f.map([1, (1, 2), {"a": 1}, [1, 2]])
    assert arr.keys == (f(1).key, f(1, 2).key, f(a=1).key, f([1, 2]).key)


# --------------------------------------------------------------------------- map items


def test_map_item_rules() -> None:
    """A dict item is kwargs, a tuple positional args, anything else the single argument."""
    d, t, s, lst, none = f.map([{"x": 1, "y": 2}, (1, 2), "s", [1, 2], None])
    assert (d.args, d.kwargs) == ((), {"x": 1, "y": 2})
    assert (t.args, t.kwargs) == ((1, 2), {})
    assert (s.args, lst.args, none.args) == (("s",), ([1, 2],), (None,))


def test_map_accepts_any_iterable() -> None:
    """map takes ranges and generators as well as lists; an empty iterable gives no jobs."""
    assert f.map(range(3)).keys == f.map(x for x in range(3)).keys == f.map([0, 1, 2]).keys
    assert len(f.map([])) == 0


def test_map_items_holding_jobs_depend_on_them() -> None:
    """Jobs inside dict or tuple items become deps and Ref placeholders (seed pipeline)."""
    a = f(1)
    d, t = f.map([{"data": a, "k": 1}, (a, 2)])
    assert d.kwargs == {"data": Ref(a.key), "k": 1} and d.deps == (a,)
    assert t.args == (Ref(a.key), 2) and t.deps == (a,)


def test_map_over_a_job_array_is_element_wise() -> None:
    """g.map(arr): element i takes element i of arr (unpacked at run time by the same rule)."""
    arr = f.map([1, 2, 3])
    out = g.map(arr)
    assert len(out) == 3
    for src, job in zip(arr, out, strict=True):
        assert job.deps == (src,)
        assert job.args == (MapItem(Ref(src.key)),) and job.kwargs == {}
    assert g.map(list(arr)).keys == out.keys  # a list of jobs maps the same way
    assert g.map(arr).keys != g(arr).key  # and differs from a fan-in


def test_map_over_a_slice_is_element_wise_over_the_slice() -> None:
    """arr[1:] is a JobArray; mapping over it pairs with its elements."""
    arr = f.map(range(4))
    assert [j.deps for j in g.map(arr[1:])] == [(x,) for x in arr.jobs[1:]]


# --------------------------------------------------------------------------- jobs as args


def test_jobs_nested_in_containers_are_dependencies() -> None:
    """Jobs in lists, tuples, dicts, sets and frozensets (nested) are deps and Refs."""
    a, b, c, d, e = (f(i) for i in range(5))
    j = g([a, (b, {"k": c})], s={d}, fs=frozenset({e}), plain=[1, 2])
    assert set(j.deps) == {a, b, c, d, e} and len(j.deps) == 5
    assert j.args == ([Ref(a.key), (Ref(b.key), {"k": Ref(c.key)})],)
    assert j.kwargs["s"] == {Ref(d.key)} and type(j.kwargs["s"]) is set
    assert j.kwargs["fs"] == frozenset({Ref(e.key)}) and type(j.kwargs["fs"]) is frozenset
    assert j.kwargs["plain"] == [1, 2]


def test_containers_without_jobs_are_kept_as_is() -> None:
    """Arguments holding no lazy value are stored unchanged (not copied)."""
    data = {"big": list(range(10))}
    assert f(data).args[0] is data


def test_repeated_dependencies_are_listed_once() -> None:
    """f(a, [a], {"k": a}) depends on a once."""
    a = g(1)
    assert f(a, [a], {"k": a}).deps == (a,)


def test_job_array_argument_is_a_fan_in() -> None:
    """A JobArray argument becomes RefList(keys) and depends on every element."""
    arr = f.map(range(3))
    j = g(arr)
    assert j.args == (RefList(arr.keys),)
    assert j.deps == arr.jobs


def test_large_fan_in_builds_in_linear_time() -> None:
    """A fan-in over 50,000 jobs builds fast (dask's grows quadratically)."""
    arr = f.map(range(50_000))
    start = time.perf_counter()
    j = g(arr)
    k = g(list(arr))
    assert time.perf_counter() - start < 2.0
    assert len(j.deps) == len(k.deps) == 50_000


# --------------------------------------------------------------------------- views


def test_indexing_and_attributes_give_views() -> None:
    """job[i], job["k"] and job.attr return JobViews (chainable), never Jobs."""
    a = f(1)
    v = a["k"][0].attr
    assert type(a[0]) is type(a["k"]) is type(a.attr) is type(v) is JobView
    assert not isinstance(v, Job)
    assert v.base is a and v.path == (("item", "k"), ("item", 0), ("attr", "attr"))
    assert repr(v) == f"JobView({a.key}['k'][0].attr)"


def test_private_attributes_are_not_views() -> None:
    """job._x raises AttributeError (so copy/pickle protocols are not fooled)."""
    with pytest.raises(AttributeError):
        _ = f(1)._missing
    with pytest.raises(AttributeError):
        _ = f(1)[0]._missing


def test_views_as_arguments_depend_on_the_base_job() -> None:
    """A view argument is Ref(base key, path) and a dependency on the base only."""
    a = f(1)
    j = g(a[0], x=a.attr)
    assert j.deps == (a,)
    assert j.args == (Ref(a.key, (("item", 0),)),)
    assert j.kwargs == {"x": Ref(a.key, (("attr", "attr"),))}
    assert g(a[0]).key != g(a[1]).key != g(a).key


def test_after_accepts_jobs_arrays_and_views() -> None:
    """.after(job, array, view) orders after the job, every element, and the view's base."""
    a, b = f(1), f(2)
    arr = f.map([3, 4])
    bound = g.after(a, arr, b[0])
    assert isinstance(bound, Task) and bound is not g
    j = bound(5)
    assert j.order == (a, *arr.jobs, b) and j.deps == ()
    assert g.after(a).after(b)(5).order == (a, b)
    assert all(x.order == (a,) for x in g.after(a).map([1, 2]))
    with pytest.raises(TypeError, match="after"):
        g.after(5)


# --------------------------------------------------------------------------- nout & length


def test_nout_allows_iteration_len_and_mapping() -> None:
    """A job called with nout=N iterates to N views, has len N, and maps element-wise."""
    a = f(1, nout=3)
    views = list(a)
    assert len(a) == 3 and a.nout == 3
    assert [v.path for v in views] == [(("item", i),) for i in range(3)]
    arr = g.map(a)
    assert len(arr) == 3
    assert [j.args for j in arr] == [(MapItem(Ref(a.key, (("item", i),))),) for i in range(3)]
    assert all(j.deps == (a,) for j in arr)
    assert f(1, nout=3).key == a.key
    assert len(g.map(f(1, nout=0))) == 0


@pytest.mark.parametrize("nout", [-1, 1.5, "3", True])
def test_bad_nout_is_rejected(nout: Any) -> None:
    """nout must be a non-negative int."""
    with pytest.raises(OptionTypeError, match="nout"):
        f(1, nout=nout)


def test_mapping_over_unknown_length_is_one_dynamic_job() -> None:
    """Mapping over a Job (or view) without nout gives one Job that maps where the value is
    known; its key follows the task and the producer."""
    a = f(1)
    for src in (a, a[0]):
        m = g.map(src)
        assert isinstance(m, Job) and m.deps == (a,)
        assert m.task.name == "g_map" and m.key == g.map(src).key
    assert g.map(a).key != f.map(a).key and g.map(a).key != g.map(f(2)).key


def test_len_and_iter_of_unknown_length_raise_type_error() -> None:
    """len() and iter() of a Job without nout, or of any view, raise a TypeError."""
    a = f(1)
    for obj in (a, a[0]):
        with pytest.raises(UnknownLengthError):
            len(obj)
        with pytest.raises(UnknownLengthError):
            iter(obj)
    with pytest.raises(TypeError, match="nout="):
        list(a)


# --------------------------------------------------------------------------- JobArray


def test_job_array_is_a_sequence_of_jobs() -> None:
    """len, iteration, indexing, slicing and keys of a JobArray."""
    arr = f.map(range(4))
    assert len(arr) == 4 and list(arr) == list(arr.jobs)
    assert arr[1] == f(1) and arr[-1] == f(3)
    assert type(arr[1:3]) is JobArray and arr[1:3].jobs == arr.jobs[1:3]
    assert arr.keys == tuple(j.key for j in arr)
    assert repr(arr) == "JobArray(f[4])" and repr(f.map([])) == "JobArray(empty[0])"


# --------------------------------------------------------------------------- Task


def test_task_pickles_by_function_resources_and_token() -> None:
    """A Task survives (cloud)pickling with its function, resources, purity and token."""
    t = pickle.loads(cloudpickle.dumps(g))
    assert t.unwrapped(1) == g.unwrapped(1) and t.resources == g.resources
    assert t.token == g.token and t(1).key == g(1).key


def test_task_names_are_safe() -> None:
    """A task's name keeps letters, digits and _ only (it names Slurm jobs and files)."""
    assert task(lambda x: x).name == "lambda"
    assert repr(f) == "Task(f)"


def test_function_token_of_callables_without_code() -> None:
    """Builtins and callable objects get a token too (stable for the same object)."""
    assert function_token(len) == function_token(len) != function_token(abs)
    assert task(len)([1]).key == task(len)([1]).key


def test_an_open_file_argument_is_refused_with_the_fix(tmp_path) -> None:
    """An open file is not shipped as a silent snapshot: refused, saying to pass a path."""
    from lazyslurm.errors import InvalidArgumentError

    @task
    def count(fh):
        return len(fh.read())

    path = tmp_path / "data.txt"
    path.write_text("abc")
    with open(path) as fh, pytest.raises(InvalidArgumentError, match="pass its path"):
        count(fh)
    with open(path, "rb") as fh, pytest.raises(ValueError, match="open file"):
        count.map([fh])


def test_a_recursive_argument_names_the_argument() -> None:
    """A list that contains itself gets a clear error naming it, not a RecursionError."""
    from lazyslurm.errors import InvalidArgumentError

    @task
    def f(a, b=None):
        return a

    loop: list = [1]
    loop.append(loop)
    with pytest.raises(InvalidArgumentError, match="argument 'b' of task 'f' contains itself"):
        f(1, b=loop)


def test_long_string_and_bytes_arguments_are_hashed_into_keys() -> None:
    """A large str/bytes argument enters the key as a digest (not a 4x repr), still
    telling values apart; short ones keep their plain form."""

    @task
    def f(x):
        return x

    big = b"\x00" * 100_000
    assert f(big).key == f(bytes(big)).key != f(big + b"1").key
    assert f("a" * 5000).key != f("a" * 5001).key
    assert f("short").key == f("short").key != f("shorT").key


def test_gather_all_is_part_of_the_key_other_resources_are_not():
    """gather="all" changes the result's shape, so it changes the key; mem does not."""

    @task(ntasks=2)
    def ranked(x):
        return x

    assert ranked.options(gather="all")(1).key != ranked(1).key
    assert ranked.options(mem="1G")(1).key == ranked(1).key
    assert ranked.options(gather="rank0")(1).key == ranked(1).key


# --------------------------------------------------------------------------- issue 10


class Pair(NamedTuple):
    left: object
    right: object = 0


@dataclasses.dataclass(frozen=True)
class FrozenBox:
    item: object


def test_namedtuples_and_dataclasses_are_walked_for_dependencies() -> None:
    """A Job inside a namedtuple or dataclass is a dependency; without one the key is as before."""
    a = f(1)
    assert f(Pair(a)).deps == (a,) and f(FrozenBox([a])).deps == (a,)
    assert f(Pair(1)).key == f(Pair(1)).key and f(Pair(1)).deps == ()
    assert f(Pair(a)).key != f(Pair(f(2))).key
    assert f(FrozenBox(a)).key != f(FrozenBox(f(2))).key


def test_generators_and_iterators_are_walked_like_lists() -> None:
    """A generator or builtin iterator argument is consumed and stands for the list of its items."""
    a, b = f(1), f(2)
    assert f(x for x in (a, b)).deps == (a, b)
    assert f(iter([a, b])).key == f([a, b]).key == f(x for x in [a, b]).key
    assert f(map(f, [1, 2])).deps == (a, b)


def test_a_lazy_slice_bound_is_a_dependency() -> None:
    """job[:n] with a lazy n depends on n; a JobArray's slice bounds must be concrete."""
    data, n = f([1, 2, 3]), f(2)
    view = data[:n]
    assert isinstance(view, JobView) and set(f(view).deps) == {data, n}
    assert set(f(data[n]).deps) == {data, n}
    assert f(data[:n]).key != f(data[: f(1)]).key
    with pytest.raises(LazyValueError, match="slice"):
        f.map([1, 2])[:n]


def test_a_lazy_dict_key_is_refused_clearly() -> None:
    """A Job, JobView or JobArray used as a dict key raises LazyValueError saying what to do."""
    a = f(1)
    for key in (a, a["k"]):
        with pytest.raises(LazyValueError, match="dict key"):
            f({key: 1})


class Holder:
    def __init__(self, job: object) -> None:
        self.job = job


def test_a_job_hidden_in_an_opaque_object_is_refused_when_built() -> None:
    """A Job kept inside an object lazyslurm cannot look into raises HiddenLazyValueError."""
    for hidden in (f(1), f.map([1]), f(1)["k"]):
        with pytest.raises(HiddenLazyValueError, match="hidden"):
            f(Holder(hidden))


def test_jobs_arrays_and_views_pickle_and_come_back_equal() -> None:
    """Job, JobArray and JobView survive pickle and cloudpickle with their keys and deps."""
    a = f(1)
    job, arr, view = f(a), f.map([1, 2]), a.items()[0]
    for dumps in (pickle.dumps, cloudpickle.dumps):
        j2, arr2, v2 = pickle.loads(dumps((job, arr, view)))
        assert j2 == job and j2.deps == (a,) and arr2 == arr and v2 == view
        assert j2.task.name == job.task.name


def test_a_deep_pipeline_pickles_without_recursion() -> None:
    """Pickling a 3,000-step chain works (the graph is written as a flat table)."""
    job = f(0)
    for _ in range(3000):
        job = f(job)
    back = pickle.loads(pickle.dumps(job))
    assert back == job and back.deps[0] == job.deps[0]


class BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("repr is broken")


def test_error_messages_survive_objects_whose_repr_raises() -> None:
    """safe_repr never raises; error paths use it for user objects."""
    text = safe_repr(BadRepr())
    assert "BadRepr" in text and "repr failed" in text
    with pytest.raises(OptionTypeError, match="BadRepr"):
        Task(BadRepr(), Resources())  # not callable: named without calling its repr


class MethodScaler:
    def __init__(self, k: int) -> None:
        self.k = k

    @task(mem="1G")
    def scale(self, x: int) -> int:
        return self.k * x


def test_task_on_a_method_binds_self() -> None:
    """@task on a method: obj.method(x) passes obj as self, and the instance is in the key."""
    job = MethodScaler(3).scale(2)
    assert job.task.unwrapped(2) == 6 and job.task.resources.mem_mb == 1024
    assert job.key == MethodScaler(3).scale(2).key != MethodScaler(4).scale(2).key
    assert isinstance(MethodScaler.scale, Task)


def body(x: int, y: int = 0) -> int:
    return x + y


def test_names_label_plans_without_changing_keys() -> None:
    """@task(name=...) and map(..., name=...) change the label only, never the key."""
    named = task(name="readable-name")(body)
    assert named.name == "readable-name" and named(1).key == task(body)(1).key
    arr = f.map([1, 2], name="stage.one")
    assert arr[0].task.name == "stage.one" and arr.keys == f.map([1, 2]).keys
    with pytest.raises(OptionTypeError, match="name="):
        task(name="has space")(body)


def test_an_unknown_keyword_is_refused_when_the_job_is_built() -> None:
    """A keyword the function does not accept raises at call or map time, naming it."""
    with pytest.raises(UnexpectedKeywordError, match=r"'colour'.*accepts: x, y"):
        task(body)(1, colour=2)
    with pytest.raises(UnexpectedKeywordError, match="'z'"):
        task(body).map([{"x": 1, "z": 2}])
    assert task(lambda **kw: kw)(anything=1).kwargs == {"anything": 1}


def two(a: int, b: int) -> int:
    return a + b


def flexible(a: int, /, b: int = 1, *rest: int, c: int, d: int = 2) -> int:
    return a


def positional_only_and_kwargs(a: int, /, **kw: int) -> int:
    return a


def with_context(x: int, job: JobContext) -> int:  # the runner fills `job` in
    return x


def with_named_job(x: int, *, job: Any) -> int:
    return x


class Model:
    @task
    def fit(self, x: int) -> int:
        return x


def test_a_wrong_positional_arity_is_refused_when_the_job_is_built() -> None:
    """Too many or too few positional arguments, or one given twice, raise
    TaskArgumentsError (a TypeError) at call time, naming the signature: not on the node."""
    t = task(two)
    with pytest.raises(TaskArgumentsError, match=r"got 3 positional.*at most 2: two\(a"):
        t(1, 2, 3)
    with pytest.raises(TypeError, match="missing the required argument 'b'"):
        t(1)
    with pytest.raises(TaskArgumentsError, match="missing the required arguments 'a', 'b'"):
        t()
    with pytest.raises(TaskArgumentsError, match="multiple values for the argument 'a'"):
        t(1, a=2)
    assert t(1, 2).args == (1, 2) and t(1, b=2).kwargs == {"b": 2}
    assert t(b=1, a=2).kwargs == {"a": 2, "b": 1}
    with pytest.raises(TaskArgumentsError, match="argument but its function takes none"):
        task(lambda: 1)(1)
    with pytest.raises(TaskArgumentsError, match="at most 1"):
        Model().fit(1, 2)  # a task on a method: self is bound
    assert Model().fit(1).args == (1,)
    assert issubclass(UnexpectedKeywordError, TaskArgumentsError)


def test_arity_minds_defaults_varargs_keyword_and_positional_only() -> None:
    """Defaults may be left out, *args takes any number, a required keyword-only argument
    must be given, a positional-only one cannot come by keyword (with **kwargs it goes
    there instead)."""
    t = task(flexible)
    assert t(1, c=3).args == (1,) and t(1, 2, 3, 4, 5, c=3, d=4).args == (1, 2, 3, 4, 5)
    with pytest.raises(TaskArgumentsError, match="missing the required argument 'c'"):
        t(1, 2)
    with pytest.raises(TaskArgumentsError, match="missing the required argument 'a'"):
        t(c=3)
    with pytest.raises(UnexpectedKeywordError, match="'a'"):
        t(a=1, c=3)
    p = task(positional_only_and_kwargs)
    assert p(1, a=2).kwargs == {"a": 2}  # into **kw, as Python binds it
    with pytest.raises(TaskArgumentsError, match="missing the required argument 'a'"):
        p(a=2)
    assert task(max)(1, 2, 3).args == (1, 2, 3)  # no signature to read: not checked


def test_the_context_parameter_is_never_required_of_the_call() -> None:
    """The JobContext parameter (annotated, or named `job`) is filled in by the runner:
    leaving it out is fine, and passing it is too; one more argument is not."""
    c = task(with_context)
    assert c(1).args == (1,) and c(1, None).args == (1, None)
    with pytest.raises(TaskArgumentsError, match="got 3 positional"):
        c(1, None, 2)
    assert task(with_named_job)(1).args == (1,)
    with pytest.raises(TaskArgumentsError, match="missing the required argument 'x'"):
        task(with_named_job)()


def test_map_items_of_the_wrong_shape_are_refused_when_built() -> None:
    """A map's tuple, dict or single items are bound like calls, naming the item; lazy
    items (unpacked at run time) are not known yet and pass."""
    t = task(two)
    assert len(t.map([(1, 2), (3, 4)])) == 2
    with pytest.raises(TaskArgumentsError, match=r"\(map item 1\) got 3 positional"):
        t.map([(1, 2), (1, 2, 3)])
    with pytest.raises(TaskArgumentsError, match=r"\(map item 0\) is missing.*'b'"):
        t.map([1, 2])
    with pytest.raises(TaskArgumentsError, match=r"\(map item 0\) is missing.*'b'"):
        t.map([{"a": 1}])
    with pytest.raises(UnexpectedKeywordError, match=r"\(map item 1\).*'z'"):
        t.map([{"a": 1, "b": 2}, {"z": 1}])
    pairs = task(lambda n: [(i, i) for i in range(n)])
    assert len(t.map(f.map([1, 2]))) == 2  # items of a JobArray: known at run time
    assert len(t.map(pairs(2).with_nout(2))) == 2
    assert isinstance(t.map(pairs(2)), Job)  # unknown length: mapped on the node
    assert len(task(with_context).map([1, 2])) == 2  # the context is filled in


def test_map_max_concurrent_and_aliases() -> None:
    """map(max_concurrent=N) throttles; with_options is options; sbatch_options is a dict
    of the task's options (as slurm-sdk's)."""
    arr = f.map([1, 2, 3], max_concurrent=2)
    assert arr[0].task.resources.max_concurrent == 2 and arr.keys == f.map([1, 2, 3]).keys
    t = f.with_options(mem="2G", ntasks_per_node=4, exclusive=True)
    assert t.resources == f.options(mem="2G", ntasks_per_node=4, exclusive=True).resources
    assert t.sbatch_options == {"mem": 2048, "ntasks_per_node": 4, "exclusive": True}
    assert t.sbatch_options["mem"] == 2048


def test_dask_collections_are_refused_with_what_to_do() -> None:
    """A dask Delayed given to a task, a map or compute is refused; dask.compute(job) too."""
    dask = pytest.importorskip("dask")
    d = dask.delayed(sum)([1, 2])
    for build in (lambda: f(d), lambda: f([d]), lambda: f.map([d]), lambda: f.map(d)):
        with pytest.raises(DaskCollectionError, match=r"dask\.compute"):
            build()
    with pytest.raises(DaskCollectionError, match=r"lazyslurm\.compute"):
        dask.compute(f(1))
    with pytest.raises(DaskCollectionError):
        dask.delayed(sum)([f(1)])


@pytest.mark.parametrize("mapping", [{"a": 1, "b": 2}, {}], ids=["dict", "empty"])
def test_map_over_a_mapping_is_refused_with_the_three_ways_out(mapping: dict) -> None:
    """task.map(a_dict) raises (it would map over the keys) naming .items(), .values(), a list."""
    from lazyslurm.errors import MapOverMappingError

    with pytest.raises(TypeError) as info:
        f.map(mapping)
    assert isinstance(info.value, MapOverMappingError)
    msg = str(info.value)
    assert "f.map(d.items())" in msg and "f.map(d.values())" in msg and "list of dicts" in msg


def test_map_over_items_values_and_a_list_of_dicts_still_works() -> None:
    """The three suggested forms build one job per pair, value, or keyword dict."""
    d = {"a": 1, "b": 2}
    assert [j.args for j in f.map(d.items())] == [("a", 1), ("b", 2)]
    assert [j.args for j in f.map(d.values())] == [(1,), (2,)]
    assert [j.kwargs for j in f.map([d])] == [d]


def test_with_nout_is_nout_in_the_spelling_checkers_accept() -> None:
    """job.with_nout(N) is the same node as f(..., nout=N): same key, known length N."""
    job = f(1).with_nout(3)
    assert job == f(1, nout=3) and len(job) == 3 and job.nout == 3
    with pytest.raises(OptionTypeError):
        f(1).with_nout(-1)
