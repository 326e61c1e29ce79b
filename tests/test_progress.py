"""The terminal progress display and Ctrl-C (lazyslurm/progress.py)."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from lazyslurm import Cluster, compute, task
from lazyslurm.backends.base import DONE, FAILED, PENDING, RUNNING, Snapshot
from lazyslurm.progress import RichProgress

REPO = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@task
def inc(x: int) -> int:
    return x + 1


@task
def total(xs: list[int]) -> int:
    return sum(xs)


class FakeRun:
    """What the display reads of a run: id, array jobs and the last snapshot."""

    def __init__(self, run: object, snap: Snapshot) -> None:
        self.id = "r-test"
        self.array_jobs = run.array_jobs  # type: ignore[attr-defined]
        self.last_snapshot = snap


def console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, color_system="standard", width=120), out


def test_one_bar_per_array_job_with_done_running_failed_rate_and_eta(tmp_path) -> None:
    """Each array job gets a bar: done/total, running, failures in red, rate and ETA."""
    from lazyslurm import submit

    with Cluster("sync", workdir=tmp_path):
        run = submit(total(inc.map(range(4))), progress=False)
        run.result()
    aj0, aj1 = (aj.id for aj in run.array_jobs)
    con, out = console()
    display = RichProgress(console=con)
    first = Snapshot({aj0: [DONE, RUNNING, FAILED, PENDING], aj1: [PENDING]})
    display.on_poll(FakeRun(run, first), first)
    time.sleep(0.3)
    last = Snapshot({aj0: [DONE, DONE, FAILED, DONE], aj1: [DONE]})
    fake = FakeRun(run, last)
    display.on_poll(fake, last)
    display.on_done(fake)
    raw = out.getvalue()
    text = ANSI.sub("", raw)
    assert "lazyslurm run r-test" in text
    assert "aj0 inc   ━" in text or re.search(r"aj0 inc\s+━", text)
    assert re.search(r"aj0 inc\s+\S*━\S*\s+3/4\s+0 running\s+1 failed\s+\d+\.\d/(s|min)", text)
    assert re.search(r"aj1 total\s+\S*━\S*\s+1/1\s+0 running", text)
    assert "1/4  1 running  1 failed" in text  # the first frame
    assert re.search(r"\x1b\[1;31m\s*1 failed", raw)  # failures in bold red
    assert re.search(r"\d:\d\d:\d\d", text)  # the ETA column


@task
def fan(n: int) -> list:
    """Returns lazy values: a subgraph planned and submitted where it runs."""
    return [inc(i) for i in range(n)]


def test_a_subgraph_a_task_returned_gets_its_own_bar_indented(tmp_path) -> None:
    """Array jobs that appear while the run goes on (dynamic expansion) get a bar each,
    indented under the one that made them, instead of breaking the display."""
    with Cluster("local", workdir=tmp_path) as c:
        con, out = console()
        display = RichProgress(console=con)
        from lazyslurm import submit

        run = submit(total(fan(3)), cluster=c, progress=False, callbacks=[display])
        assert run.result() == (6,)
    text = ANSI.sub("", out.getvalue())
    assert [aj.id for aj in run.array_jobs] == ["aj0", "aj0_0_aj0", "aj1"]
    assert re.search(r"aj0_0_aj0 {3}inc\s+\S*━\S*\s+3/3", text), text


def test_a_run_that_ends_before_any_poll_prints_the_bars_once(tmp_path, capsys) -> None:
    """Off a terminal with progress=True: the final bars are printed once, at the end."""
    with Cluster("sync", workdir=tmp_path):
        compute(inc.map(range(2)), progress=True)
    err = capsys.readouterr().err
    assert err.count("lazyslurm run") == 1 and "2/2" in err


SCRIPT = """
import sys, time
from pathlib import Path
from lazyslurm import Cluster, compute, task

@task
def slow(i, marks):
    Path(marks, f"started-{{i}}").touch()
    time.sleep(60)
    return i

if sys.argv[3] == "slurm":
    cluster = Cluster("slurm", workdir=sys.argv[2], poll_max_s=0.5)
else:
    cluster = Cluster("local", workdir=sys.argv[2], max_workers=2)
with cluster:
    compute(slow.map([(i, sys.argv[1]) for i in range(5)]), progress={progress})
print("not reached")
"""


def run_and_interrupt(
    tmp_path: Path, progress: bool, tty: bool, backend: str = "local", **env_extra: str
) -> tuple[int, str]:
    """Run SCRIPT, press Ctrl-C once two elements run; return (exit status, output)."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = tmp_path / "interrupt_me.py"
    script.write_text(SCRIPT.format(progress=progress))
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120", "TERM": "xterm", **env_extra}
    if tty:
        master, slave = pty.openpty()
        out_fd: int | None = slave
    else:
        master, out_fd = -1, subprocess.PIPE  # type: ignore[assignment]
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marks), str(tmp_path / "work"), backend],
        stdin=subprocess.DEVNULL,
        stdout=out_fd,
        stderr=out_fd,
        env=env,
    )
    chunks: list[bytes] = []
    try:
        deadline = time.monotonic() + 120
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            if tty and select.select([master], [], [], 0.1)[0]:
                chunks.append(os.read(master, 65536))
            time.sleep(0.05)
        assert len(list(marks.iterdir())) >= 2, "the elements did not start"
        time.sleep(0.5)  # a poll or two: the display is up
        proc.send_signal(signal.SIGINT)
        if tty:
            os.close(slave)
            while True:
                try:
                    ready = select.select([master], [], [], 30)[0]
                    data = os.read(master, 65536) if ready else b""
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                chunks.append(data)
            code = proc.wait(timeout=30)
            return code, b"".join(chunks).decode(errors="replace")
        stdout, stderr = proc.communicate(timeout=30)
        return proc.returncode, (stdout + stderr).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        if tty:
            os.close(master)


def test_ctrl_c_prints_one_line_not_a_traceback(tmp_path) -> None:
    """Ctrl-C in compute(): one line (run, elements cancelled, how to inspect), no traceback."""
    code, output = run_and_interrupt(tmp_path, progress=False, tty=False)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code != 0 and "not reached" not in output
    assert "Traceback" not in output and "threading" not in output, output
    assert len(lines) == 1, output
    assert re.fullmatch(
        r"lazyslurm: interrupted: cancelled run (\S+) \(5 of 5 elements unfinished, 0 done\); "
        r"inspect it: lazyslurm status \1",
        lines[0],
    ), lines[0]


def test_ctrl_c_in_a_terminal_clears_the_bars(tmp_path) -> None:
    """In a terminal the live bars are removed on Ctrl-C: the screen ends with the one line."""
    code, output = run_and_interrupt(tmp_path, progress=True, tty=True)
    assert code != 0
    assert "aj0 slow" in ANSI.sub("", output)  # the bars were shown
    assert "Traceback" not in output, output
    tail = output[output.rindex("lazyslurm: interrupted") :]
    assert "aj0" not in tail and "━" not in tail and "lazyslurm run" not in tail
    before = output[: output.rindex("lazyslurm: interrupted")]
    last_frame = before[before.rindex("aj0") :]
    assert "\x1b[2K" in last_frame or "\x1b[1A" in last_frame  # the frame was erased


def test_interrupted_run_can_be_inspected_afterwards(tmp_path) -> None:
    """The run id in the line attaches: its elements are cancelled, none left running."""
    from lazyslurm import Run

    _, output = run_and_interrupt(tmp_path, progress=False, tty=False)
    run_id = re.search(r"cancelled run (\S+) ", output).group(1)  # type: ignore[union-attr]
    status = Run.attach(run_id, Cluster("local", workdir=tmp_path / "work")).status()
    assert status.counts.get("RUNNING", 0) == 0 and status.counts.get("PENDING", 0) == 0
    assert status.counts.get("CANCELLED", 0) == 5


@pytest.mark.slurm
def test_ctrl_c_on_slurm_cancels_the_array_jobs_and_prints_one_line(cluster_env, tmp_path):
    """On the real Slurm: Ctrl-C scancels the run's array jobs and prints the one line."""
    from lazyslurm import Run

    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    code, output = run_and_interrupt(tmp_path, False, False, "slurm", SLURM_CONF=conf)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1 and "Traceback" not in output, output
    match = re.match(r"lazyslurm: interrupted: cancelled run (\S+) \(5 of 5 elements", lines[0])
    assert match, lines[0]
    cluster = Cluster("slurm", workdir=tmp_path / "work", env={"SLURM_CONF": conf})
    deadline = time.monotonic() + 60
    while True:
        status = Run.attach(match.group(1), cluster).status()
        if status.counts.get("CANCELLED") == 5 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert status.counts == {"CANCELLED": 5}, status


NOTEBOOK_CELL = """
import time
from lazyslurm import Cluster, compute, task

@task
def slow(x):
    time.sleep(0.3)
    return x * 10

with Cluster("local", max_workers=2, workdir={workdir!r}):
    print(compute(slow.map(range(6))))
"""


def test_progress_in_a_notebook_is_one_html_display_updated_in_place(tmp_path, monkeypatch):
    """Executed by nbclient: one display of the bars (HTML), updated to the end; no
    ipywidgets warning, no empty <pre>."""
    nbformat = pytest.importorskip("nbformat", reason="in the test extra")
    nbclient = pytest.importorskip("nbclient", reason="in the test extra")
    pytest.importorskip("ipykernel", reason="in the test extra")
    import json

    kernels = tmp_path / "jupyter" / "kernels" / "lazyslurm-test"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "lazyslurm tests",
                "language": "python",
            }
        )
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(NOTEBOOK_CELL.format(workdir=str(tmp_path / "w"))))
    nb.cells.append(
        nbformat.v4.new_code_cell(  # a Run as a cell's value: its rich display
            "from lazyslurm import submit\n"
            f"with Cluster('sync', workdir={str(tmp_path / 'w')!r}):\n"
            "    run = submit(slow.map([7]), progress=False)\n    run.result()\nrun"
        )
    )
    client = nbclient.NotebookClient(
        nb,
        timeout=300,
        kernel_name="lazyslurm-test",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = nb.cells[0].outputs
    displays = [o for o in outputs if o.output_type == "display_data"]
    assert len(displays) == 1, outputs  # updated in place, not appended per poll
    html = displays[0].data["text/html"]
    plain = displays[0].data["text/plain"]
    assert "lazyslurm run" in plain and "aj0 slow" in plain and "6/6" in plain, plain
    assert "<pre" in html and "6/6" in html and "━" in html
    assert not re.search(r"<pre[^>]*>\s*</pre>", html)
    streams = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "[0, 10, 20, 30, 40, 50]" in streams
    assert "ipywidgets" not in streams and "Traceback" not in streams
    (result,) = [o for o in nb.cells[1].outputs if o.output_type == "execute_result"]
    assert "DONE" in result.data["text/html"] and "<table" in result.data["text/html"]


def test_the_title_says_since_when_the_cluster_is_unreachable():
    """While polls fail, the title says 'cluster unreachable since HH:MM:SS' and why."""
    import time

    from rich.console import Console

    from lazyslurm.backends.base import Snapshot
    from lazyslurm.planning.planner import ArrayJob
    from lazyslurm.progress import RichProgress

    class _Run:
        id = "20260101-000000-abcdef"
        array_jobs = (ArrayJob("aj0", "f", ("k0", "k1")),)

    def rendered(snap: Snapshot) -> str:
        console = Console(record=True, width=300, file=__import__("io").StringIO())
        display = RichProgress(console)
        display._update(_Run(), snap)
        for renderable in display._progress.get_renderables():
            console.print(renderable)
        return " ".join(console.export_text().split())

    since = time.time() - 30
    snap = Snapshot(
        states={"aj0": ["RUNNING", "DONE"]},
        unreachable_since=since,
        unreachable_reason="status query (squeue) failed: Unable to contact slurm controller",
    )
    text = rendered(snap)
    assert f"cluster unreachable since {time.strftime('%H:%M:%S', time.localtime(since))}" in text
    assert "Unable to contact slurm controller" in text
    assert "unreachable" not in rendered(Snapshot(states={"aj0": ["RUNNING", "DONE"]}))


class _AJ:
    def __init__(self, id: str, name: str, size: int, depth: int = 0) -> None:
        self.id, self.name, self.size, self.depth = id, name, size, depth


class _Run:
    id = "20261202-061500-ab12cd"
    array_jobs = (
        _AJ("aj0", "train_model_on_the_whole_imagenet_with_augmentations", 1200),
        _AJ("aj1", "select_best", 1),
        _AJ("aj2", "evaluate_every_checkpoint_on_the_held_out_split", 40, depth=1),
    )
    last_snapshot = Snapshot(
        {
            "aj0": [DONE] * 500 + [RUNNING] * 300 + [FAILED] * 3 + [PENDING] * 397,
            "aj1": [PENDING],
            "aj2": [RUNNING] * 40,
        }
    )


@pytest.mark.parametrize("width", [120, 80, 60])
def test_each_array_job_stays_one_line_on_a_narrow_terminal(width) -> None:
    """At 80 and 60 columns: one line per array job, long names cut with "…", the counts
    whole (nothing wraps, no cell is cut)."""
    out = io.StringIO()
    con = Console(file=out, force_terminal=True, color_system=None, width=width)
    display = RichProgress(console=con)
    display.on_done(_Run())
    lines = ANSI.sub("", out.getvalue()).rstrip("\n").split("\n")
    assert lines[0].startswith("lazyslurm run 20261202-061500-ab12cd")
    assert len(lines) == 4, lines  # the title and one line per array job
    assert all(len(line.rstrip()) <= width for line in lines)
    assert lines[1].startswith("aj0 train_") and "…" in lines[1]
    assert "500/1200  300 running  3 failed" in lines[1]
    assert re.search(r"0/1\s+0 running", lines[2]) and "select_best" in lines[2]
    assert lines[3].startswith("aj2   evaluate") and "0/40    40 running" in lines[3]


def test_off_a_terminal_two_lines_say_the_run_id_and_the_end(tmp_path) -> None:
    """Piped (| cat, nohup, a batch job): one line with the run id when submitted, one
    summary when it ends; nothing when logging already shows lazyslurm's INFO records."""
    script = tmp_path / "piped.py"
    script.write_text(
        "import sys\n"
        "from lazyslurm import Cluster, compute, task\n"
        "@task\n"
        "def inc(x): return x + 1\n"
        "if sys.argv[2] == 'logging':\n"
        "    import logging; logging.basicConfig(level=logging.INFO)\n"
        "with Cluster('local', workdir=sys.argv[1], max_workers=2):\n"
        "    print(compute(inc.map(range(3)))[0])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    plain = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "w"), "plain"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert plain.returncode == 0 and plain.stdout == "[1, 2, 3]\n", plain
    first, last = plain.stderr.splitlines()
    run_id = re.fullmatch(
        r"lazyslurm: submitted run (\S+) \(1 array job, 3 elements\); "
        r"watch it: lazyslurm status \1",
        first,
    )
    assert run_id, first
    assert re.fullmatch(rf"lazyslurm: run {run_id.group(1)} finished in \d+\.\d s: 3 done", last)
    logged = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "w"), "logging"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert logged.returncode == 0 and "lazyslurm: submitted run" not in logged.stderr
    assert "INFO:lazyslurm:submitted run" in logged.stderr, logged.stderr


def test_the_title_says_the_first_run_creates_the_environment():
    """While the first job creates the environment (packaging='wheel'), the bars' title,
    `status`, its text and the notebook's status table say so, with its time."""
    from rich.console import Console

    from lazyslurm.backends.base import Snapshot
    from lazyslurm.execute import RunStatus
    from lazyslurm.notebook import status_html
    from lazyslurm.planning.planner import ArrayJob
    from lazyslurm.progress import RichProgress

    class _Run:
        id = "20260101-000000-abcdef"
        array_jobs = (ArrayJob("aj0", "f", ("k0", "k1")),)

    note = "creating the environment (once): 7 wheels, 12 s"
    console = Console(record=True, width=300, file=__import__("io").StringIO())
    display = RichProgress(console)
    display._update(_Run(), Snapshot(states={"aj0": ["RUNNING", "RUNNING"]}, note=note))
    for renderable in display._progress.get_renderables():
        console.print(renderable)
    assert note in " ".join(console.export_text().split())
    status = RunStatus(_Run.id, "RUNNING", {"RUNNING": 2}, {"aj0": ("f", {"RUNNING": 2})}, note)
    assert note in str(status) and note in status_html(status)
