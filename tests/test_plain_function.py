"""A task's function by value travels as plain data when it can (issue 27): its code
object, names, defaults and the modules and plain values it names. Reading it on the
node then needs neither cloudpickle nor ``_pickle`` (~3 ms per element)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

from lazyslurm import Cluster, compute, task
from lazyslurm.planning.encode import encode_run
from lazyslurm.planning.planner import make_plan
from lazyslurm.store import INSIDE, RunLayout, atomic_write, read_element, read_header

REPO = Path(__file__).resolve().parent.parent
SCALE = 3


def helper(x):
    return x + 1


def lite(x, k=2, *, power=1):
    """Uses a module, a plain global and a nested function."""

    def inner(y):
        return y * SCALE

    return inner(math.floor(x)) ** power + k + len(time.strftime("%Y"))


def needs_helper(x):
    return helper(x)


def closure(n):
    def f(x):
        return x + n

    return f


def _header(fn, tmp_path, name="aj0"):
    t = task(fn)
    plan = make_plan([t(1)])
    files = encode_run(plan, run_id="r", outputs=[], by_value=True)
    paths = RunLayout(tmp_path / "r")
    paths.make_dirs()
    atomic_write(paths.spec(name), files[INSIDE.spec(name)])
    return files[INSIDE.spec(name)], read_element(paths.spec(name), 0)[0], paths


def test_a_plain_function_travels_without_pickle(tmp_path):
    data, header, _ = _header(lite, tmp_path)
    assert b"cloudpickle" not in data and b"func_lite" in data
    fn = header["func"]
    assert fn is not lite and fn(4.5, power=2) == lite(4.5, power=2)
    assert fn.__name__ == "lite" and fn.__qualname__ == "lite"
    assert fn.__doc__ == lite.__doc__


def test_functions_plain_data_cannot_say_are_cloudpickled(tmp_path):
    for fn in (needs_helper, closure(3), lambda x: helper(x)):
        data, header, _ = _header(fn, tmp_path)
        assert b"cloudpickle" in data and b"func_lite" not in data
        assert header["func"](1) == fn(1)


def test_the_runner_reads_a_plain_function_without_pickle(tmp_path):
    _, _, paths = _header(lite, tmp_path)
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "0"}
    res = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            str(REPO / "lazyslurm/runner/__main__.py"),
            paths.root,
            "aj0",
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    mods = {ln.split("|")[-1].strip() for ln in res.stderr.splitlines() if "import time" in ln}
    assert "_pickle" not in mods and "cloudpickle" not in mods
    key = task(lite)(1).key
    assert os.path.exists(paths.result(key)) and not os.listdir(paths.errors_dir)
    # the header alone (what a Slurm element reads first) carries the function too
    assert read_header(paths.spec("aj0"))["func"](4.5, power=2) == lite(4.5, power=2)


def test_a_plain_function_by_value_on_the_local_backend(tmp_path):
    with Cluster("local", workdir=tmp_path) as cl:
        assert compute(task(lite).map([1, 2]), cluster=cl) == ([lite(1), lite(2)],)
