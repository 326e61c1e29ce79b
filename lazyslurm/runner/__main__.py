"""``python -m lazyslurm.runner RUN_DIR ARRAY_JOB`` (element from $SLURM_ARRAY_TASK_ID)."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    # task output reaches its log file line by line, so job.tail(follow=True) streams it
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if argv == ["--serve"]:
        from lazyslurm.runner import serve

        proto = os.dup(1)
        os.dup2(2, 1)  # stray prints never corrupt the protocol
        serve(sys.stdin, proto)
        return 0
    if len(argv) != 2:
        print("usage: python -m lazyslurm.runner RUN_DIR ARRAY_JOB", file=sys.stderr)
        return 2
    index = os.environ.get("SLURM_ARRAY_TASK_ID")
    if index is None:
        print("lazyslurm.runner: SLURM_ARRAY_TASK_ID is not set", file=sys.stderr)
        return 2
    from lazyslurm.runner import run_element

    return run_element(argv[0], argv[1], int(index))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
