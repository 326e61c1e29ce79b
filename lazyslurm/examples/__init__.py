"""Runnable examples, shipped with the package: ``python -m lazyslurm.examples.NAME``.

``hello_world``, ``map_reduce``, ``train_eval`` and ``workflows`` are written in slurm-sdk's
tutorial style, ``parallelization_patterns`` runs the seed's three patterns (seed style
and fully lazy), ``distributed_sum`` is a two-rank task, and ``custom_backend`` is the
one-file backend of docs/backends.md. ``--help`` shows each one's options.
"""
