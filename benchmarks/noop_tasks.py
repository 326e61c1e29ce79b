"""Trivial functions for the benchmarks, importable on the cluster (``benchmarks.noop_tasks``
with the repository on PYTHONPATH), so that tasks made from them go by reference and
the compute node imports nothing of the user's but this file (stdlib only)."""


def noop(i: int) -> None:
    """Do nothing: the cost measured is everything around the call."""
    return None
