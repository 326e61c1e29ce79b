"""``python -m lazyslurm``: the ``lazyslurm`` command line (see :mod:`lazyslurm.cli`)."""

from lazyslurm.cli import main

raise SystemExit(main())
