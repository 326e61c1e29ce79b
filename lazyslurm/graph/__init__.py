"""The lazy graph: pure data, knows nothing of Slurm."""

from lazyslurm.graph.core import Job, JobArray, JobView, Task, function_token, task
from lazyslurm.graph.resources import Resources, parse_mem, parse_time
from lazyslurm.graph.traverse import collect

__all__ = [
    "Job",
    "JobArray",
    "JobView",
    "Resources",
    "Task",
    "collect",
    "function_token",
    "parse_mem",
    "parse_time",
    "task",
]
