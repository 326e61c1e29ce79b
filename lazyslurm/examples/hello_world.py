"""Hello world in slurm-sdk's tutorial style: submit one task at once, follow its output.

``cluster.submit(task)(...)`` submits the call immediately and returns its Job handle:
``job.id`` is Slurm's job id, ``job.tail(follow=True)`` streams what the job prints
while it runs, and ``job.get_result()`` returns its value.

    python -m lazyslurm.examples.hello_world                       # embedded local backend
    python -m lazyslurm.examples.hello_world --backend slurm --partition debug
    python -m lazyslurm.examples.hello_world --backend ssh --hostname HOST --username ME
"""

from __future__ import annotations

import sys

try:
    from .parallelization_patterns import add_cluster_arguments, make_cluster, parser
except ImportError:  # run as a file: its folder is on sys.path
    from parallelization_patterns import (  # type: ignore[no-redef]
        add_cluster_arguments,
        make_cluster,
        parser,
    )
from lazyslurm import Cluster, task


@task(time="00:01:00", mem="100M")
def hello(name: str, greetings: int = 3) -> str:
    """Say hello a few times, then return a greeting with the host it ran on."""
    import socket
    import time

    for i in range(greetings):
        print(f"hello {name} ({i + 1}/{greetings})")
        time.sleep(0.2)
    return f"Hello, {name}! (from {socket.gethostname()})"


def run(cluster: Cluster, name: str = "world") -> str:
    """Submit one job, print its id and its output as it comes, return its result."""
    with cluster:
        job = cluster.submit(hello)(name)
        print(f"Submitted job {job.id}")

        for line in job.tail(follow=True):
            print(f"  | {line}")

        if not job.wait():
            print(f"Job {job.id} ended {job.get_status()}:\n{job.get_stderr()}")
            raise SystemExit(1)
        result = job.get_result()
        print(result)
    return result


def main(argv: list[str] | None = None) -> int:
    p = parser("hello_world", __doc__)
    p.add_argument("--name", default="world")
    add_cluster_arguments(p)
    args = p.parse_args(argv)
    run(make_cluster(args), args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
