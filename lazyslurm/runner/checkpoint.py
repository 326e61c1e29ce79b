"""Checkpoint hooks: a task saves its state when Slurm is about to stop it.

Inside a task submitted with ``requeue=True``, register a function with
:func:`on_checkpoint`. The runner calls it (once) when Slurm signals the element:

- ``SIGTERM``: the element is being preempted, requeued (``scontrol requeue``) or
  cancelled; Slurm kills it ``KillWait`` seconds later. After the hooks the runner exits.
- ``SIGUSR1``: sent a minute before the time limit (the Slurm backend's sbatch
  ``--signal=B:USR1@60``). After the hooks the runner requeues its own element
  (``scontrol requeue``), so it starts again instead of ending TIMEOUT.

The next attempt runs the task from the start: the task finds what its hook saved (at a
path of its own choosing) and resumes. ``SLURM_RESTART_COUNT`` says which attempt it is.

>>> calls = []
>>> on_checkpoint(lambda: calls.append("saved")) is not None
True
>>> _run_hooks(); _run_hooks(); calls
['saved']
>>> clear()

Standard library only: this module is imported by the runner on every compute node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from typing import Any

__all__ = ["clear", "install", "on_checkpoint"]


# per process: the runner runs one element at a time (a list, not class-level state)
_hooks: list[Callable[[], Any]] = []
_done: list[bool] = []
_running: list[bool] = []  # the hooks are running now (a second signal waits for them)
_calls: list[str] = []  # the run's calls file: a requeue is a Slurm command, counted


def on_checkpoint(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Call ``fn()`` when Slurm is about to stop this element (usable as a decorator).

    Only tasks with ``requeue=True`` receive the signals; elsewhere this does nothing.
    """
    _hooks.append(fn)
    return fn


def clear() -> None:
    """Forget the hooks (the runner calls it before each element)."""
    _hooks.clear()
    _done.clear()


def _run_hooks() -> None:
    if _done:
        return
    _done.append(True)
    _running.append(True)
    try:
        for fn in list(_hooks):
            try:
                fn()
            except Exception:  # a failing hook must not keep the element from stopping
                print("lazyslurm: a checkpoint hook raised:", file=sys.stderr)
                traceback.print_exc()
    finally:
        _running.clear()
    sys.stdout.flush()
    sys.stderr.flush()


def _element_id() -> str | None:
    job, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{job}_{index}" if job and index else os.environ.get("SLURM_JOB_ID")


def _on_signal(signum: int, frame: Any) -> None:
    if _running:  # the same signal twice (Slurm's, and a pack's runner passing it on):
        return  # the first call ends the element once the hooks have run
    _run_hooks()
    if signum == signal.SIGUSR1:
        element = _element_id()
        print(f"lazyslurm: time limit near: checkpointed, requeueing {element}", file=sys.stderr)
        if element:
            subprocess.run(["scontrol", "requeue", element], check=False)
            if _calls:
                from lazyslurm.store import record_calls

                record_calls(_calls[0], {"scontrol": 1})
        return  # Slurm's SIGTERM for the requeue follows
    print(f"lazyslurm: stopped by signal {signum} after the checkpoint hooks", file=sys.stderr)
    sys.stderr.flush()
    # die of the signal itself, as without hooks: Slurm records a requeue or a cancel,
    # never a FAILED exit status
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install(calls: str | None = None) -> None:
    """Route SIGTERM and SIGUSR1 to the hooks (the runner, for ``requeue=True`` tasks);
    ``calls``: the run's calls file, where a requeue of its own is counted."""
    _calls[:] = [calls] if calls else []
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGUSR1, _on_signal)
