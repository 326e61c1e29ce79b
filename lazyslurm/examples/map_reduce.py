"""Map-reduce in slurm-sdk's tutorial style, with error handling by ``if not job.wait():``.

Each chunk of text is counted by one element of an array job (map); one more job adds
the counts up (reduce). ``wait()`` returns True or False, so a failed chunk is reported
with its Slurm id, state and stderr instead of raising in the middle of the program.

    python -m lazyslurm.examples.map_reduce                        # embedded local backend
    python -m lazyslurm.examples.map_reduce --fail-chunk 2         # see the error handling
    python -m lazyslurm.examples.map_reduce --backend slurm --partition debug
"""

from __future__ import annotations

import sys
from typing import Dict, List  # noqa: UP035 - slurm-sdk tutorials' own spelling

try:
    from .parallelization_patterns import add_cluster_arguments, make_cluster, parser
except ImportError:  # run as a file: its folder is on sys.path
    from parallelization_patterns import (  # type: ignore[no-redef]
        add_cluster_arguments,
        make_cluster,
        parser,
    )
from lazyslurm import Cluster, task

TEXT = [
    "the quick brown fox jumps over the lazy dog",
    "the dog sleeps and the fox runs",
    "a lazy graph of tasks runs on slurm",
    "slurm runs the array jobs the graph asks for",
]


@task(time="00:03:00", mem="256M")
def count_words(chunk: str) -> Dict[str, int]:  # noqa: UP006
    """Map: count the words of one chunk."""
    if "FAIL" in chunk:
        raise ValueError(f"cannot count a chunk that says FAIL: {chunk!r}")
    counts: Dict[str, int] = {}  # noqa: UP006
    for word in chunk.split():
        counts[word] = counts.get(word, 0) + 1
    return counts


@task(time="00:03:00", mem="256M")
def merge_counts(partials: List[Dict[str, int]]) -> Dict[str, int]:  # noqa: UP006
    """Reduce: add the counts of every chunk."""
    total: Dict[str, int] = {}  # noqa: UP006
    for counts in partials:
        for word, n in counts.items():
            total[word] = total.get(word, 0) + n
    return dict(sorted(total.items(), key=lambda kv: (-kv[1], kv[0])))


def run(cluster: Cluster, chunks: List[str] | None = None) -> Dict[str, int] | None:  # noqa: UP006
    """Map, check, reduce, check. Returns the word counts, or None if a job failed."""
    chunks = chunks if chunks is not None else TEXT
    with cluster:
        # Map: one array element per chunk
        map_jobs = count_words.map(chunks)
        if not map_jobs.wait():
            for job in map_jobs:
                if not job.is_successful():
                    err = job.get_stderr().strip().splitlines()
                    print(f"map job {job.id} ended {job.get_status()}: {err[-1] if err else ''}")
            return None

        # Reduce: the array as an argument is the list of its results
        reduce_job = merge_counts(map_jobs)
        if not reduce_job.wait():
            print(f"reduce job {reduce_job.id} ended {reduce_job.get_status()}")
            return None
        counts = reduce_job.get_result()
    top = ", ".join(f"{w}={n}" for w, n in list(counts.items())[:5])
    print(f"{len(chunks)} chunks, {sum(counts.values())} words; most frequent: {top}")
    return counts


def main(argv: list[str] | None = None) -> int:
    p = parser("map_reduce", __doc__)
    p.add_argument("--fail-chunk", type=int, default=None, help="make this chunk fail")
    add_cluster_arguments(p)
    args = p.parse_args(argv)
    chunks = list(TEXT)
    if args.fail_chunk is not None:
        chunks[args.fail_chunk] = "FAIL " + chunks[args.fail_chunk]
    return 0 if run(make_cluster(args), chunks) is not None else 1


if __name__ == "__main__":
    sys.exit(main())
