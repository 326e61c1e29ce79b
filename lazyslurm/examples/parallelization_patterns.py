"""The seed's parallelization patterns on lazyslurm, as the seed writes them and fully lazy.

The seed-style functions below are the tutorial's code with only the imports changed
(``from lazyslurm import task, Cluster``). Each ``*_lazy`` variant builds the whole
graph first and runs it with one ``compute()``: every stage is submitted at once, chained
by Slurm dependencies (the pipeline element-wise, with ``aftercorr``).

    python -m lazyslurm.examples.parallelization_patterns --pattern all   # embedded default
    python -m lazyslurm.examples.parallelization_patterns --backend slurm --partition debug
    python -m lazyslurm.examples.parallelization_patterns --hostname HOST --username ME
    python -m lazyslurm.examples.parallelization_patterns --hostname HOST --username ME \
        --partition debug --pattern all --packaging container \
        --packaging-registry registry:5000/patterns --packaging-platform linux/amd64 \
        --packaging-tls-verify false

The cluster flags are slurm-sdk's (``Cluster.add_argparse_args``, built by
``Cluster.from_args``), so the seed's command line runs as it is: ``--hostname`` means
SSH. ``--backend`` (local, sync, slurm, ssh) picks a lazyslurm backend by name; without
it and without ``--hostname`` the code runs in local processes. ``--packaging`` picks how
the code reaches the cluster (see docs/packaging.md): over SSH the default ships it by
value, so a cluster account with only Python works.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List  # noqa: UP035 - the seed's own spelling

from lazyslurm import Cluster, compute, plan, task

# --------------------------------------------------------------------------- Pattern 1


@task(time="00:03:00", mem="256M")
def split_dataset(dataset_path: str, num_chunks: int) -> List[Dict[str, Any]]:  # noqa: UP006
    """Split a dataset into chunks for parallel processing."""
    chunks = []
    for i in range(num_chunks):
        chunk = {
            "chunk_id": i,
            "start_idx": i * 100,
            "end_idx": (i + 1) * 100,
            "source": dataset_path,
        }
        chunks.append(chunk)
    return chunks


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def process_chunk(chunk_id: int, start_idx: int, end_idx: int, source: str) -> Dict[str, Any]:  # noqa: UP006
    """Process a single data chunk."""
    import socket
    import time

    hostname = socket.gethostname()
    start_time = time.time()
    num_items = end_idx - start_idx

    return {
        "chunk_id": chunk_id,
        "items_processed": num_items,
        "sum": sum(range(start_idx, end_idx)),
        "processed_on": hostname,
        "processing_time": time.time() - start_time,
    }


@task(time="00:03:00", mem="256M")
def merge_results(results: List[Dict[str, Any]]) -> Dict[str, Any]:  # noqa: UP006
    """Merge results from all chunks."""
    import socket

    total_items = sum(r["items_processed"] for r in results)
    total_sum = sum(r["sum"] for r in results)
    hosts_used = set(r["processed_on"] for r in results)

    return {
        "total_chunks": len(results),
        "total_items": total_items,
        "total_sum": total_sum,
        "hosts_used": list(hosts_used),
        "merged_on": socket.gethostname(),
    }


def fan_out_fan_in(cluster: Cluster) -> Dict[str, Any]:  # noqa: UP006
    """Pattern 1 exactly as the seed writes it."""
    with cluster:
        # Split (fan-out source)
        split_job = split_dataset("large_dataset.csv", num_chunks=5)
        split_job.wait()
        chunks = split_job.get_result()

        # Process in parallel (fan-out)
        process_jobs = process_chunk.after(split_job).map(chunks)
        process_jobs.wait()
        chunk_results = process_jobs.get_results()

        # Merge (fan-in)
        merge_job = merge_results.after(process_jobs)(chunk_results)
        merge_job.wait()
        final = merge_job.get_result()
    return final


def fan_out_fan_in_graph() -> Any:
    """Pattern 1 as one lazy graph: ``nout`` makes the split's result mappable."""
    split_job = split_dataset("large_dataset.csv", num_chunks=5, nout=5)
    return merge_results(process_chunk.map(split_job))


# --------------------------------------------------------------------------- Pattern 2


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def stage1_preprocess(raw_data: str) -> str:
    """Stage 1: Preprocess raw data."""
    return f"preprocessed_{raw_data}"


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def stage2_transform(data: str, transform_type: str) -> str:
    """Stage 2: Apply transformation."""
    return f"{transform_type}({data})"


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def stage3_finalize(transformed: str) -> str:
    """Stage 3: Finalize processing."""
    return f"final_{transformed}"


def pipeline(cluster: Cluster) -> List[str]:  # noqa: UP006
    """Pattern 2 exactly as the seed writes it."""
    with cluster:
        raw_data = ["data_1", "data_2", "data_3"]

        # Stage 1: Preprocess all items in parallel
        stage1_jobs = stage1_preprocess.map(raw_data)
        stage1_jobs.wait()
        preprocessed = stage1_jobs.get_results()  # noqa: F841 - as in the seed

        # Stage 2: Transform in parallel with Job dependencies
        # Pass Job objects directly - SDK tracks dependencies automatically
        transform_configs = [
            {"data": job, "transform_type": f"transform_{i}"} for i, job in enumerate(stage1_jobs)
        ]
        stage2_jobs = stage2_transform.map(transform_configs)
        stage2_jobs.wait()

        # Stage 3: Finalize - pass Job objects directly
        stage3_jobs = stage3_finalize.map(stage2_jobs)
        stage3_jobs.wait()
        final_results = stage3_jobs.get_results()
    return final_results


def pipeline_graph(raw_data: List[str] | None = None) -> Any:  # noqa: UP006
    """Pattern 2 as one lazy graph, chained element-wise (``aftercorr``)."""
    raw_data = raw_data or ["data_1", "data_2", "data_3"]
    stage1_jobs = stage1_preprocess.map(raw_data)
    stage2_jobs = stage2_transform.map(
        [{"data": job, "transform_type": f"transform_{i}"} for i, job in enumerate(stage1_jobs)]
    )
    return stage3_finalize.map(stage2_jobs)


# --------------------------------------------------------------------------- Pattern 3


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def train_model(lr: float, batch_size: int, epochs: int, seed: int) -> Dict[str, Any]:  # noqa: UP006
    """Train a model with specific hyperparameters."""
    import random

    random.seed(seed)
    accuracy = 0.5 + (lr * 10) * random.random()

    return {
        "lr": lr,
        "batch_size": batch_size,
        "epochs": epochs,
        "seed": seed,
        "accuracy": accuracy,
    }


@task(time="00:03:00", mem="256M")
def select_best_model(results: List[Dict[str, Any]]) -> Dict[str, Any]:  # noqa: UP006
    """Select the best model from hyperparameter sweep."""
    return max(results, key=lambda r: r["accuracy"])


def sweep_configs() -> List[Dict[str, Any]]:  # noqa: UP006
    learning_rates = [0.001, 0.01, 0.1]
    batch_sizes = [32, 64]
    epochs = 10
    seeds = [0, 1]
    return [
        {"lr": lr, "batch_size": bs, "epochs": epochs, "seed": seed}
        for lr in learning_rates
        for bs in batch_sizes
        for seed in seeds
    ]


def parameter_sweep(cluster: Cluster) -> Dict[str, Any]:  # noqa: UP006
    """Pattern 3 exactly as the seed writes it."""
    with cluster:
        # Generate hyperparameter grid
        learning_rates = [0.001, 0.01, 0.1]
        batch_sizes = [32, 64]
        epochs = 10
        seeds = [0, 1]

        configs = [
            {"lr": lr, "batch_size": bs, "epochs": epochs, "seed": seed}
            for lr in learning_rates
            for bs in batch_sizes
            for seed in seeds
        ]

        # Train all configurations in parallel
        train_jobs = train_model.map(configs)
        train_jobs.wait()
        results = train_jobs.get_results()

        # Select best model
        best_job = select_best_model.after(train_jobs)(results)
        best_job.wait()
        best = best_job.get_result()

        print(f"Best: lr={best['lr']}, bs={best['batch_size']}, acc={best['accuracy']:.3f}")
    return best


def parameter_sweep_graph() -> Any:
    """Pattern 3 as one lazy graph."""
    return select_best_model(train_model.map(sweep_configs()))


# --------------------------------------------------------------------------- command line

PATTERNS = {
    "fan-out-fan-in": (fan_out_fan_in, fan_out_fan_in_graph),
    "pipeline": (pipeline, pipeline_graph),
    "parameter-sweep": (parameter_sweep, parameter_sweep_graph),
}


def command(name: str) -> str:
    """How to run example ``name`` from where these examples are: ``python -m
    lazyslurm.examples.NAME`` once installed, ``python -m examples.NAME`` in a checkout."""
    return f"python -m {__package__ or 'lazyslurm.examples'}.{name}"


def described(doc: str | None) -> str:
    """An example's docstring, for ``--help``, with commands that work from here (the
    docstrings name the installed package; a checkout's copy is ``examples``)."""
    here = __package__ or "lazyslurm.examples"
    return (doc or "").replace("python -m lazyslurm.examples.", f"python -m {here}.")


def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """The example's argument parser: its command and its docstring, kept as written."""
    return argparse.ArgumentParser(
        prog=command(name),
        description=described(doc),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def make_parser() -> argparse.ArgumentParser:
    p = parser("parallelization_patterns", __doc__)
    p.add_argument("--pattern", choices=["all", *PATTERNS], default="all")
    p.add_argument(
        "--style",
        choices=["both", "seed", "lazy"],
        default="both",
        help="seed: as the tutorial writes it (.wait() per stage); lazy: one compute()",
    )
    add_cluster_arguments(p)
    return p


def add_cluster_arguments(p: argparse.ArgumentParser) -> None:
    """The flags that say where to run (shared by the examples): slurm-sdk's
    (``Cluster.add_argparse_args``), and this example's ``--backend`` and extras."""
    Cluster.add_argparse_args(p, backend_flag=False)
    p.add_argument(
        "--backend",
        choices=["local", "sync", "slurm", "ssh"],
        default=None,
        help="lazyslurm's backend (default: ssh with --hostname, else local processes)",
    )
    p.add_argument("--workdir", default=None, help="run directories (default ~/.lazyslurm)")
    p.add_argument("--python", help="interpreter on the cluster (slurm/ssh)")
    p.add_argument(
        "--setup",
        action="append",
        default=None,
        metavar="LINE",
        help="shell line run before the runner on the cluster (repeatable)",
    )
    p.add_argument(
        "--packaging-runtime",
        default=None,
        choices=["podman", "pyxis", "apptainer"],
        help="container: how jobs run the image (default podman)",
    )
    p.add_argument(
        "--packaging-base-image",
        default=None,
        help="container: base image of the generated Dockerfile",
    )


# this example's own flags, given to Cluster.from_args as lazyslurm options
EXTRA_FLAGS = ("workdir", "python", "setup", "packaging_runtime", "packaging_base_image")


def backend_of(args: argparse.Namespace) -> str:
    """``--backend``, else ``ssh`` when ``--hostname`` is given (as the seed's command
    line), else the embedded local processes."""
    return args.backend or ("ssh" if args.hostname else "local")


def make_cluster(args: argparse.Namespace) -> Cluster:
    backend = backend_of(args)
    if backend in ("local", "sync"):  # no cluster: the code runs right here
        return Cluster(backend, workdir=args.workdir)
    extra = {n: getattr(args, n) for n in EXTRA_FLAGS if getattr(args, n) is not None}
    return Cluster.from_args(args, backend=backend, **extra)


def unused_flags(args: argparse.Namespace) -> list[str]:
    """The cluster flags given that an embedded backend does not use."""
    if backend_of(args) not in ("local", "sync"):
        return []
    defaults = vars(make_parser().parse_args([]))
    return [
        f"--{name.replace('_', '-')}"
        for name, value in vars(args).items()
        if name not in ("backend", "workdir", "pattern", "style") and value != defaults[name]
    ]


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    unused = unused_flags(args)
    if unused:
        print(f"note: {', '.join(unused)} accepted but not used with --backend {backend_of(args)}")
    names = list(PATTERNS) if args.pattern == "all" else [args.pattern]
    for name in names:
        seed_style, graph = PATTERNS[name]
        if args.style in ("both", "seed"):
            t0 = time.perf_counter()
            result = seed_style(make_cluster(args))
            print(f"[{name}, seed style, {time.perf_counter() - t0:.2f} s] {result}")
        if args.style in ("both", "lazy"):
            expr = graph()
            # a fresh session: the seed-style run's results would otherwise be reused
            with make_cluster(args):
                print(f"[{name}, lazy] plan:")
                for line in plan(expr).describe():
                    print(f"    {line}")
                t0 = time.perf_counter()
                (result,) = compute(expr)
            print(f"[{name}, lazy, {time.perf_counter() - t0:.2f} s] {result}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
