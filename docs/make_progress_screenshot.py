"""Capture the terminal progress display through tmux (docs/img/progress-*.txt and .svg).

    PYTHONPATH=. python docs/make_progress_screenshot.py

Runs ``docs/progress_demo.py`` in a detached tmux window of 110x12, captures the pane
half-way (with colours), presses Ctrl-C, captures again. The ``.txt`` files are the plain
text of the pane; the ``.svg`` files are the same capture, colours kept, drawn by rich.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

HERE = Path(__file__).resolve().parent
IMG = HERE / "img"
SESSION = f"lazyslurm-shot-{os.getpid()}"


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], check=True, capture_output=True, text=True).stdout


def capture(name: str, title: str) -> None:
    ansi = tmux("capture-pane", "-p", "-e", "-t", SESSION)
    plain = tmux("capture-pane", "-p", "-t", SESSION)
    lines = plain.rstrip("\n").splitlines()
    (IMG / f"{name}.txt").write_text("\n".join(line.rstrip() for line in lines).rstrip() + "\n")
    console = Console(record=True, width=110, force_terminal=True, file=open(os.devnull, "w"))
    console.print(Text.from_ansi(ansi.rstrip("\n")))
    console.save_svg(str(IMG / f"{name}.svg"), title=title)


def main() -> int:
    work = tempfile.mkdtemp(prefix="lazyslurm-shot-")
    env = f"PYTHONPATH={HERE.parent} TERM=xterm-256color"
    cmd = f"cd {work} && {env} {sys.executable} {HERE / 'progress_demo.py'} {work}/store"
    tmux("new-session", "-d", "-s", SESSION, "-x", "110", "-y", "12", cmd + "; sleep 30")
    try:
        time.sleep(float(os.environ.get("SHOT_AFTER_S", "9")))
        capture("progress-terminal", "python docs/progress_demo.py")
        tmux("send-keys", "-t", SESSION, "C-c")
        time.sleep(3)
        capture("progress-ctrl-c", "python docs/progress_demo.py, then Ctrl-C")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
