"""Ctrl-C as a shell sees it: the program dies by SIGINT (status 130) after its one line,
so a shell loop stops; pooled local workers never see the terminal's Ctrl-C; IPython shows
the one line, not a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SWEEP = """
import sys, time
from pathlib import Path
from lazyslurm import Cluster, compute, task

@task
def slow(i, marks):
    Path(marks, f"started-{i}-{time.time()}").touch()
    time.sleep(60)
    return i

with Cluster("local", workdir=sys.argv[2], max_workers=2):
    compute(slow.map([(i, sys.argv[1]) for i in range(3)]), progress=False)
print("not reached")
"""


def _wait_for(marks: Path, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(list(marks.iterdir())) < n:
        assert time.monotonic() < deadline, "the elements did not start"
        time.sleep(0.05)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_ctrl_c_stops_a_shell_loop_and_exits_130(tmp_path) -> None:
    """`for lr in 1 2; do python sweep.py; done` and Ctrl-C (SIGINT to the foreground
    process group, as a terminal sends it): the one line, then the loop stops; Python's
    status as the shell sees it is 130."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "sweep.py"
    script.write_text(SWEEP)
    loop = (
        f"for lr in 1 2; do {sys.executable} {script} {marks} {tmp_path / 'work'}; "
        f'echo "status $?"; done'
    )
    proc = subprocess.Popen(
        ["bash", "-c", loop], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=_env(), start_new_session=True,  # its own process group: the "terminal"'s
    )  # fmt: skip
    try:
        _wait_for(marks, 2)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "status" not in out, out  # bash stopped the loop: the child died by SIGINT
    assert proc.returncode in (-signal.SIGINT, 130), (proc.returncode, out, err)
    assert err.count("lazyslurm: interrupted: cancelled run") == 1, err
    assert "Traceback" not in err, err
    assert len(list(marks.iterdir())) == 2  # the second sweep never started


def test_an_interrupted_program_dies_by_sigint_after_its_exit_functions(tmp_path) -> None:
    """Uncaught RunInterrupted: the line, the program's atexit functions and buffered
    output, then death by SIGINT (status 130 in a shell), as for a plain Ctrl-C."""
    script = tmp_path / "raises.py"
    script.write_text(
        "import atexit\n"
        "from lazyslurm.errors import RunInterrupted\n"
        "from lazyslurm.progress import install_interrupt_hook\n"
        "atexit.register(print, 'atexit ran')\n"
        "print('buffered', end='')\n"
        "install_interrupt_hook()\n"
        "raise RunInterrupted('lazyslurm: interrupted: cancelled run r1', run_id='r1')\n"
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=_env(), timeout=60
    )
    assert out.returncode == -signal.SIGINT, out
    assert out.stdout == "bufferedatexit ran\n"
    assert out.stderr == "lazyslurm: interrupted: cancelled run r1\n"
    shell = subprocess.run(
        ["bash", "-c", f"{sys.executable} {script}; echo $?"],
        capture_output=True, text=True, env=_env(), timeout=60,
    )  # fmt: skip
    assert shell.stdout.splitlines()[-1] == "130"


def test_the_repl_keeps_going_after_the_line(tmp_path) -> None:
    """In an interactive session the line is all: the interpreter goes on."""
    code = (
        "from lazyslurm.errors import RunInterrupted\n"
        "from lazyslurm.progress import install_interrupt_hook\n"
        "install_interrupt_hook()\n"
        "raise RunInterrupted('lazyslurm: interrupted: one line')\n"
        "print('still here')\n"
    )
    out = subprocess.run(
        [sys.executable, "-i", "-q"], input=code, capture_output=True, text=True,
        env=_env(), timeout=60,
    )  # fmt: skip
    assert "lazyslurm: interrupted: one line" in out.stderr
    assert "Traceback" not in out.stderr
    assert "still here" in out.stdout and out.returncode == 0


IDLE = """
import sys, time
from lazyslurm import Cluster, compute, task

@task
def inc(x):
    return x + 1

with Cluster("local", workdir=sys.argv[1], max_workers=2) as c:
    print(compute(inc.map(range(4)))[0], flush=True)
    pids = [w.proc.pid for w in c.backend._workers if w is not None]
    print(" ".join(map(str, pids)), flush=True)
    time.sleep(60)
"""


def test_pooled_workers_do_not_see_the_terminals_ctrl_c(tmp_path) -> None:
    """Ctrl-C at an idle program: the workers are in a session of their own, so only the
    program's own KeyboardInterrupt shows (no worker tracebacks interleaved)."""
    script = tmp_path / "idle.py"
    script.write_text(IDLE)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "work")], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=_env(), start_new_session=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "[1, 2, 3, 4]"
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert pids and all(os.getsid(p) != os.getsid(proc.pid) for p in pids)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert err.count("Traceback") == 1 and "lazyslurm/runner" not in err, err
    deadline = time.monotonic() + 10  # the workers end with their client (end of input)
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_ipython_shows_the_one_line(tmp_path) -> None:
    """IPython (and Jupyter) render RunInterrupted as its one line, no 8-frame traceback."""
    code = (
        "from lazyslurm.errors import RunInterrupted\n"
        "raise RunInterrupted('lazyslurm: interrupted: cancelled run r9 (1 of 1 elements "
        "unfinished, 0 done); inspect it: lazyslurm status r9')"
    )
    out = subprocess.run(
        [sys.executable, "-m", "IPython", "--no-banner", "--colors=NoColor", "-c", code],
        capture_output=True, text=True, env={**_env(), "IPYTHONDIR": str(tmp_path)},
        timeout=120,
    )  # fmt: skip
    text = out.stdout + out.stderr
    assert "lazyslurm: interrupted: cancelled run r9" in text, text
    assert "Traceback" not in text and "Cell In" not in text and "File " not in text, text
