"""``python -m lazyslurm.runner RUN_DIR ARRAY_JOB`` (element from $SLURM_ARRAY_TASK_ID).

A multi-process task's job script runs ``--rank RUN_DIR ARRAY_JOB`` on every rank (srun),
then ``--gather RUN_DIR ARRAY_JOB WORLD_SIZE`` once.
"""

from __future__ import annotations

import os
import sys

USAGE = (
    "usage: python -m lazyslurm.runner [--rank] RUN_DIR ARRAY_JOB\n"
    "       python -m lazyslurm.runner --gather RUN_DIR ARRAY_JOB WORLD_SIZE"
)


def main(argv: list[str]) -> int:
    # task output reaches its log file line by line, so job.tail(follow=True) streams it
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if argv == ["--serve"]:
        from lazyslurm.runner import serve

        proto = os.dup(1)
        os.dup2(2, 1)  # stray prints never corrupt the protocol
        serve(sys.stdin, proto)
        return 0
    mode = argv[0] if argv and argv[0] in ("--rank", "--gather") else ""
    args = argv[1:] if mode else argv
    if len(args) != (3 if mode == "--gather" else 2):
        print(USAGE, file=sys.stderr)
        return 2
    index = os.environ.get("SLURM_ARRAY_TASK_ID")
    if index is None:
        print("lazyslurm.runner: SLURM_ARRAY_TASK_ID is not set", file=sys.stderr)
        return 2
    if mode == "--rank":
        from lazyslurm.runner import run_rank

        return run_rank(args[0], args[1], int(index), os.environ)
    if mode == "--gather":
        from lazyslurm.runner import gather

        return gather(args[0], args[1], int(index), int(args[2]))
    from lazyslurm.runner import run_element

    return run_element(args[0], args[1], int(index), env=os.environ)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
