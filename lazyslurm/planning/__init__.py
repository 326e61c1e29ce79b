"""Pure planning: graph -> stages -> array jobs -> dependency kinds -> sbatch text."""

from lazyslurm.planning.planner import (
    AFTERCORR,
    AFTEROK,
    DEFAULT_MAX_ARRAY_SIZE,
    ArrayJob,
    Plan,
    make_plan,
)

__all__ = ["AFTERCORR", "AFTEROK", "DEFAULT_MAX_ARRAY_SIZE", "ArrayJob", "Plan", "make_plan"]
