"""The examples live in the package, ``lazyslurm/examples/`` (one copy: the wheel ships
them, ``python -m lazyslurm.examples.NAME`` runs one anywhere). This folder keeps a
checkout's ``python -m examples.NAME`` and ``import examples.NAME`` working: its modules
are the package's files."""

import os

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
__path__ = [os.path.join(_REPO, "lazyslurm", "examples")]
