"""Slurm, one folder: the client side (the backend, on this host or over SSH) and the
compute-node side, behind the backend protocol.

==================  =========================================================================
``backend.py``      :class:`SlurmBackend`: probe, submit, poll, cancel, read (one round trip
                    per action over a :class:`~lazyslurm.backends.shell.Shell`)
``render.py``       sbatch flags, job scripts and the submission script (pure text), and the
                    readers of what was rendered (the job-ids line, a job script)
``facts.py``        the one probe of the cluster: partitions, nodes, limits, accounting
``status.py``       sacct/squeue rows -> element states
``accounting.py``   what sacct recorded a run used
``controller.py``   a busy controller: Slurm's transient errors, backoff with jitter, the
                    ``max_rpc_per_min`` token bucket, counting a run's Slurm commands
``node.py``         the compute-node side: submit a subgraph, re-point dependents, the
                    cluster a ``@workflow`` uses from where it runs
``feed.py``         a run over the user's submit cap, fed in by feeder jobs on the cluster
==================  =========================================================================

Nothing outside this folder speaks Slurm (``tests/test_layers.py`` checks that no other
module runs sbatch, squeue, sacct, scontrol or scancel).
"""

from lazyslurm.backends.slurm.backend import SPECS, SlurmBackend, make_slurm_backend
from lazyslurm.backends.slurm.options import STATUS_SOURCES, SlurmOptions

__all__ = ["SPECS", "STATUS_SOURCES", "SlurmBackend", "SlurmOptions", "make_slurm_backend"]
