"""Run directory layout, placeholders, atomic writes and spec files (lazyslurm.store)."""

from __future__ import annotations

import os
import pickle
import re
import stat
import tempfile
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import plain_values

from lazyslurm.store import (
    INSIDE,
    MapItem,
    Ref,
    RefList,
    RunLayout,
    atomic_write,
    encode_spec,
    read_element,
    read_json,
    read_pickle,
    write_json,
    write_spec,
)

# --------------------------------------------------------------------------- placeholders


def test_placeholders_compare_hash_and_pickle_by_value() -> None:
    """Ref, RefList and MapItem are value objects that survive pickling."""
    items = [
        Ref("a"),
        Ref("a", (("item", 0), ("attr", "x"))),
        RefList(("a", "b")),
        MapItem(Ref("a", (("item", 1),))),
    ]
    for obj in items:
        copy = pickle.loads(pickle.dumps(obj))
        assert copy == obj and hash(copy) == hash(obj) and type(copy) is type(obj)
    assert Ref("a") != Ref("b") != Ref("a", (("item", 0),))
    assert RefList(("a",)) != RefList(("a", "b")) and MapItem(Ref("a")) != Ref("a")
    assert repr(Ref("a")) == "Ref('a')" and repr(RefList(("a", "b"))) == "RefList(<2 keys>)"


# --------------------------------------------------------------------------- layout


def test_run_layout() -> None:
    """RunLayout lays out manifest, specs, results, errors and logs; other runs are siblings."""
    p = RunLayout.of("r1", "/w")
    assert p.root == "/w/runs/r1" and RunLayout("/w/runs/r1").manifest == p.manifest
    assert p.manifest == "/w/runs/r1/" + INSIDE.manifest
    assert p.spec("aj2") == "/w/runs/r1/specs/aj2.spec"
    assert p.result("f-0a") == "/w/runs/r1/results/f-0a.pkl"
    assert p.result("f-0a", run="r0") == "/w/runs/r0/results/f-0a.pkl"
    assert p.error("f-0a") == "/w/runs/r1/errors/f-0a.pkl"
    assert p.log("aj0", 7, "out") == "/w/runs/r1/logs/aj0_7.out"
    assert p.log("aj0", 7, "err") == "/w/runs/r1/logs/aj0_7.err"


def test_run_layout_relative_and_patterns() -> None:
    """The same layout gives paths relative to the work directory or to the run, and the
    patterns the shell listings use."""
    rel = RunLayout.of("r1")
    assert (rel.manifest, rel.jobids, rel.log("aj0", 1, "out")) == (
        "runs/r1/manifest.json",
        "runs/r1/jobids",
        "runs/r1/logs/aj0_1.out",
    )
    assert INSIDE.job_script("aj0") == "jobs/aj0.sh" and INSIDE.submit_script == "submit.sh"
    assert re.match(RunLayout.RESULT_PATH, "./r1/results/f-1.pkl").groups() == ("r1", "f-1")
    assert [RunLayout.key_of(n) for n in ("f-1.pkl", ".f-1.pkl.x1.tmp", ".keep")] == [
        "f-1",
        None,
        None,
    ]
    assert RunLayout.of("r1", "/w").log_pattern("aj0", "err") == "/w/runs/r1/logs/aj0_%a.err"


def test_make_dirs_is_private_0700_and_idempotent(tmp_path: Path) -> None:
    """make_dirs creates the run directory and its sub-directories with mode 0700."""
    p = RunLayout.of("r1", tmp_path / "work")
    old = os.umask(0o022)
    try:
        p.make_dirs()
        p.make_dirs()
    finally:
        os.umask(old)
    root = Path(p.root)
    for d in (root, *(root / s for s in ("specs", "results", "errors", "logs"))):
        assert d.is_dir()
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_make_dirs_tightens_an_existing_run_directory(tmp_path: Path) -> None:
    """A run directory that already exists with looser permissions becomes 0700."""
    root = tmp_path / "r1"
    root.mkdir(mode=0o755)
    RunLayout(root).make_dirs()
    assert stat.S_IMODE(root.stat().st_mode) == 0o700


# --------------------------------------------------------------------------- atomic writes


def test_atomic_write_replaces_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """atomic_write writes via a temporary file renamed into place; nothing else remains."""
    target = tmp_path / "results" / "k.pkl"
    target.parent.mkdir()
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert os.listdir(target.parent) == ["k.pkl"]


def test_atomic_write_failure_keeps_old_content_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the rename fails, the old file is untouched and the temporary file is removed."""
    target = tmp_path / "k.pkl"
    target.write_bytes(b"old")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["k.pkl"]


def test_pickle_and_json_helpers_round_trip(tmp_path: Path) -> None:
    """read_pickle reads cloudpickled files; write_json/read_json round-trip."""
    (tmp_path / "r.pkl").write_bytes(cloudpickle.dumps({"a": [1, 2]}))
    assert read_pickle(tmp_path / "r.pkl") == {"a": [1, 2]}
    write_json(tmp_path / "m.json", {"b": 1, "a": [None]})
    assert read_json(tmp_path / "m.json") == {"a": [None], "b": 1}


# --------------------------------------------------------------------------- spec files


def _element(key: str, value: Any) -> bytes:
    return pickle.dumps((key, (value, Ref("up")), {"kw": MapItem(Ref("x"))}), protocol=5)


@settings(max_examples=100, deadline=None)
@given(st.lists(plain_values(max_leaves=4), max_size=8))
def test_spec_round_trip_reads_each_element(values: list[Any]) -> None:
    """encode_spec then read_element(i) gives back the header and exactly element i."""
    header = {"func": len, "task": "t", "retries": 1, "external": {"k": "r0"}}
    blob = encode_spec(header, [_element(f"k{i}", v) for i, v in enumerate(values)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "aj0.spec"
        path.write_bytes(blob)
        check_elements(path, header, values)


def check_elements(path: Path, header: dict[str, Any], values: list[Any]) -> None:
    for i, value in enumerate(values):
        h, (key, args, kwargs) = read_element(path, i)
        assert h == header
        assert key == f"k{i}" and repr(args[0]) == repr(value) and args[1] == Ref("up")
        assert kwargs == {"kw": MapItem(Ref("x"))}


def test_write_spec_and_out_of_range(tmp_path: Path) -> None:
    """write_spec writes atomically; an index outside the array raises IndexError."""
    path = tmp_path / "aj1.spec"
    write_spec(path, {"task": "t"}, (_element(f"k{i}", i) for i in range(3)))
    assert read_element(path, 2)[1][0] == "k2"
    for bad in (-1, 3):
        with pytest.raises(IndexError, match="out of range"):
            read_element(path, bad)
    assert os.listdir(tmp_path) == ["aj1.spec"]


def test_reading_a_non_spec_file_raises(tmp_path: Path) -> None:
    """A file without the spec magic raises ValueError naming it."""
    path = tmp_path / "bogus.spec"
    path.write_bytes(b"not a spec at all")
    with pytest.raises(ValueError, match="not a lazyslurm spec"):
        read_element(path, 0)


def test_empty_spec_has_no_elements(tmp_path: Path) -> None:
    """A spec with only a header has no element 0."""
    path = tmp_path / "e.spec"
    path.write_bytes(encode_spec({"task": "t"}, []))
    with pytest.raises(IndexError):
        read_element(path, 0)


# --------------------------------------------------------------------------- trust


def test_outcome_records_are_verified_before_unpickling() -> None:
    """Garbage, truncation, a flipped byte, another node's record or another run's writer
    each raise CorruptResultError naming the key and the path."""
    from lazyslurm.errors import CorruptResultError
    from lazyslurm.store import decode_outcome, encode_outcome

    good = encode_outcome(pickle.dumps([1, 2]), key="f-1", writer="r1/aj0/3@77_3")
    assert decode_outcome(good, key="f-1", path="p", run="r1") == (
        "r1/aj0/3@77_3",
        pickle.dumps([1, 2]),
    )
    flipped = good[:-2] + bytes([good[-2] ^ 1]) + good[-1:]
    for data, words in [
        (b"\x80\x05K\x03.", "no lazyslurm header"),
        (good[:-3], "truncated"),
        (flipped, "checksum"),
    ]:
        with pytest.raises(CorruptResultError, match=words) as err:
            decode_outcome(data, key="f-1", path="/w/runs/r1/results/f-1.pkl")
        assert err.value.key == "f-1" and "/w/runs/r1/results/f-1.pkl" in str(err.value)
    with pytest.raises(CorruptResultError, match="record of node g-2"):
        decode_outcome(good, key="g-2", path="p")
    with pytest.raises(CorruptResultError, match="not by run r2"):
        decode_outcome(good, key="f-1", path="p", run="r2")


def test_store_files_are_read_only_when_ours_and_never_through_symlinks(tmp_path: Path) -> None:
    """read_private refuses a symlink (checked on open, O_NOFOLLOW) and reads our files."""
    from lazyslurm.errors import UntrustedStoreError
    from lazyslurm.store import read_private

    (tmp_path / "f").write_bytes(b"mine")
    os.symlink(tmp_path / "f", tmp_path / "link")
    assert read_private(tmp_path / "f") == b"mine"
    with pytest.raises(UntrustedStoreError, match="symbolic link"):
        read_private(tmp_path / "link")


def test_a_store_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """make_dirs refuses a directory of runs that is writable by others, or a symlink."""
    from lazyslurm.errors import UntrustedStoreError

    runs = tmp_path / "w" / "runs"
    runs.mkdir(parents=True)
    os.chmod(runs, 0o777)
    with pytest.raises(UntrustedStoreError, match=f"chmod 700 {runs}"):
        RunLayout.of("r1", tmp_path / "w").make_dirs()
    os.chmod(runs, 0o700)
    os.symlink(runs, tmp_path / "w2")
    with pytest.raises(UntrustedStoreError, match="symbolic link"):
        RunLayout(tmp_path / "w2" / "r1").make_dirs()
    RunLayout.of("r1", tmp_path / "w").make_dirs()  # private: fine


def test_make_dirs_corrects_the_modes_of_our_own_directories(tmp_path: Path) -> None:
    """Sub-directories of a run that exist with loose modes are made 0700 again."""
    lay = RunLayout.of("r1", tmp_path)
    lay.make_dirs()
    os.chmod(lay.results_dir, 0o755)
    lay.make_dirs()
    assert stat.S_IMODE(os.stat(lay.results_dir).st_mode) == 0o700


# --------------------------------------------------------------------------- light loader
# Functions pickled by value by cloudpickle load on a compute node without importing it.

_LIGHT_CASES = """
import os, sys
G = 3

def plain(x, y=2, *, z=1):
    "doc"
    return x + G + y + z + len(os.sep)

plain.tag = "t"

def outer():
    n = 5
    def inner(a):
        return a + n + helper(a)
    return inner

def helper(a):
    return a * 2

def fact(n):
    return 1 if n <= 0 else n * fact(n - 1)

def make_empty():
    def g():
        return later
    later = None
    del later
    return g

class Box:
    def __init__(self, v):
        self.v = v
"""


def _light_blobs(tmp_path: Path) -> dict[str, bytes]:
    import types

    mod = types.ModuleType("light_cases")
    exec(compile(_LIGHT_CASES, str(tmp_path / "light_cases.py"), "exec"), mod.__dict__)
    funcs = {
        "plain": mod.plain,
        "inner": mod.outer(),
        "fact": mod.fact,
        "empty": mod.make_empty(),
        "lambda": lambda q: q + 1,
        "box": mod.Box,
    }
    return {name: cloudpickle.dumps(f, protocol=5) for name, f in funcs.items()}


_LOAD_BLOBS = (
    "import pickle, sys\n"
    "from lazyslurm.store import loads\n"
    "b = pickle.load(open('blobs.pkl', 'rb'))\n"
)


def _load_fresh(tmp_path: Path, code: str) -> str:
    """Run ``code`` in a fresh interpreter, after loading the blobs of _light_blobs as
    ``b`` (a dict of name -> cloudpickled object): its output."""
    import subprocess
    import sys

    (tmp_path / "blobs.pkl").write_bytes(pickle.dumps(_light_blobs(tmp_path)))
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", _LOAD_BLOBS + code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_functions_by_value_load_without_cloudpickle(tmp_path: Path) -> None:
    """Plain functions, closures, recursion, attributes, defaults, an empty cell: the
    light loader rebuilds what cloudpickle wrote, and cloudpickle is never imported."""
    code = (
        "f = loads(b['plain'], light=True)\n"
        "empty = loads(b['empty'], light=True)\n"
        "try:\n"
        "    empty()\n"
        "    unbound = 'no error'\n"
        "except NameError as exc:\n"
        "    unbound = type(exc).__name__\n"
        "print(f(1), f.__doc__, f.tag, f.__name__, f.__kwdefaults__, f.__defaults__,"
        " loads(b['inner'], light=True)(1), loads(b['fact'], light=True)(5),"
        " loads(b['lambda'], light=True)(1), unbound, 'cloudpickle' in sys.modules)\n"
    )
    assert _load_fresh(tmp_path, code) == "8 doc t plain {'z': 1} (2,) 8 120 2 NameError False"


def test_what_the_light_loader_does_not_know_imports_cloudpickle(tmp_path: Path) -> None:
    """A class by value needs cloudpickle's own machinery: it is imported then; without
    the light flag (an unknown cloudpickle version) it is imported for a function too."""
    code = (
        "a = 'cloudpickle' in sys.modules\n"
        "box = loads(b['box'], light=True)(4)\n"
        "print(a, box.v, 'cloudpickle' in sys.modules)\n"
    )
    assert _load_fresh(tmp_path, code) == "False 4 True"
    code = "print(loads(b['fact'])(3), 'cloudpickle' in sys.modules)\n"
    assert _load_fresh(tmp_path, code) == "6 True"


def test_spec_files_record_whether_the_light_loader_applies(tmp_path: Path) -> None:
    """The spec's flags say a cloudpickled payload is there, and that its writer's
    cloudpickle is one whose function format the light loader knows."""
    from lazyslurm.store import SPEC_CLOUDPICKLE, SPEC_CLOUDPICKLE_LIGHT

    def flags(data: bytes) -> int:
        return int.from_bytes(data[8:16], "little")

    blob = pickle.dumps(("k", (1,), {}))
    assert flags(encode_spec({"func": None}, [blob])) == 0
    data = encode_spec({"func": lambda x: x}, [blob])
    assert flags(data) == SPEC_CLOUDPICKLE | SPEC_CLOUDPICKLE_LIGHT
    write_spec(tmp_path / "s.spec", {"func": lambda x: x + 1}, [blob])
    header, element = read_element(tmp_path / "s.spec", 0)
    assert header["func"](element[1][0]) == 2


def test_a_spec_that_needs_cloudpickle_where_it_is_missing_names_the_file(tmp_path: Path) -> None:
    """Code the light loader cannot rebuild (a class by value) on a node without
    cloudpickle: the error names the spec file and how to fix it."""
    import subprocess
    import sys
    import types

    mod = types.ModuleType("light_cases")
    exec(compile(_LIGHT_CASES, str(tmp_path / "light_cases.py"), "exec"), mod.__dict__)
    spec = tmp_path / "aj0.spec"
    write_spec(spec, {"func": lambda x: x}, [cloudpickle.dumps(("k", (mod.Box,), {}))])
    code = (
        "import sys\n"
        "sys.modules['cloudpickle'] = None  # not installed here\n"
        "from lazyslurm.store import read_element\n"
        f"read_element({str(spec)!r}, 0)\n"
    )
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert out.returncode != 0
    assert f"{spec} holds code pickled by value (cloudpickle)" in out.stderr
    assert "pip install cloudpickle" in out.stderr
