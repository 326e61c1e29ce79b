"""Slurm text for a run: sbatch flags, job scripts and the submission script. Pure.

Every value that reaches a shell is quoted with :func:`shlex.quote`. The submission
script submits every array job ``--hold`` in topological order, with dependencies built
from the ids already returned, cancels everything it submitted if any ``sbatch`` fails,
then releases all jobs at once and prints the id map:

    LAZYSLURM-IDS aj0=101 aj1=102

>>> from lazyslurm.graph.resources import Resources
>>> aj = ArrayJob("aj1", "train", ("k0", "k1", "k2", "k3"), Resources(timeout_min=3),
...               dependencies=(("aftercorr", "aj0"),))
>>> sbatch_flags(aj, run_id="r1", layout=RunLayout("/w/runs/r1"))[:3]
['--job-name=lz-r1-aj1-train', '--array=0-3', '--output=/w/runs/r1/logs/aj1_%a.out']
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from lazyslurm.graph.resources import Resources
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.store import RunLayout

__all__ = [
    "IDS_MARKER",
    "SUBMIT_FAILED_MARKER",
    "job_script",
    "sbatch_flags",
    "submit_script",
]

IDS_MARKER = "LAZYSLURM-IDS"
SUBMIT_FAILED_MARKER = "LAZYSLURM-SUBMIT-FAILED"


def sbatch_flags(
    job: ArrayJob,
    *,
    run_id: str,
    layout: RunLayout,
    defaults: Resources | None = None,
) -> list[str]:
    """sbatch options of one array job (unquoted; dependencies are added at submit time).

    ``defaults`` fills resources the task leaves unset (a cluster-wide partition, ...).
    """
    r = job.resources
    d = defaults or Resources()

    def pick(name: str) -> object:
        value = getattr(r, name)
        return getattr(d, name) if value is None else value

    name = pick("job_name") or job.name
    array = f"0-{job.size - 1}"
    throttle = pick("max_concurrent")
    if throttle:
        array += f"%{throttle}"
    flags = [
        f"--job-name=lz-{run_id}-{job.id}-{name}",
        f"--array={array}",
        f"--output={layout.log_pattern(job.id, 'out')}",
        f"--error={layout.log_pattern(job.id, 'err')}",
        "--kill-on-invalid-dep=yes",
    ]
    simple = (
        ("timeout_min", "--time={}"),
        ("mem_mb", "--mem={}M"),
        ("cpus_per_task", "--cpus-per-task={}"),
        ("gpus", "--gpus={}"),
        ("gres", "--gres={}"),
        ("partition", "--partition={}"),
        ("account", "--account={}"),
        ("qos", "--qos={}"),
        ("nodes", "--nodes={}"),
        ("ntasks", "--ntasks={}"),
        ("constraint", "--constraint={}"),
    )
    for field, form in simple:
        value = pick(field)
        if value is not None:
            flags.append(form.format(value))
    flags.extend(d.extra_sbatch)
    flags.extend(r.extra_sbatch)
    return flags


def job_script(
    job: ArrayJob,
    *,
    run_id: str,
    layout: RunLayout,
    python: str,
    setup: Sequence[str] = (),
) -> str:
    """The batch script of one array job: setup lines, then the runner (element from
    ``$SLURM_ARRAY_TASK_ID``). ``setup`` lines are the user's own shell, used as given.
    """
    lines = [
        "#!/bin/bash",
        f"# lazyslurm run {run_id}, array job {job.id} ({job.name} x{job.size})",
        *setup,
        f"exec {shlex.quote(python)} -m lazyslurm.runner {shlex.quote(layout.root)} "
        f"{shlex.quote(job.id)}",
        "",
    ]
    return "\n".join(lines)


def submit_script(
    jobs: Sequence[ArrayJob],
    *,
    run_id: str,
    layout: RunLayout,
    flags: Mapping[str, Sequence[str]],
    jobids: str | None = None,
    stderr: str | None = None,
) -> str:
    """The one script that submits a whole run, all or nothing.

    ``flags`` maps array job id -> its :func:`sbatch_flags`; the job script of each is
    ``layout.job_script(ID)``. Exit status 3 and a ``LAZYSLURM-SUBMIT-FAILED ID`` line on
    stderr mean nothing of the run is left in the queue. ``jobids``/``stderr`` (paths in
    the run directory) replace ``layout.jobids``/``layout.submit_err``: a subgraph
    submitted from a compute node (docs/dynamic.md) keeps its own.
    """
    q = shlex.quote
    ids_file = jobids or layout.jobids
    err_file = stderr or layout.submit_err

    def rel(path: str) -> str:  # a path of the run, as "$run_dir/..." in the script
        return f'"$run_dir{path[len(layout.root) :]}"'

    out = [
        "#!/bin/bash",
        f"# lazyslurm run {run_id}: submit every array job held, then release them all",
        "set -u",
        f"run_dir={q(layout.root)}",
        "ids=()",
        "fail() {",
        f"  printf '%s %s\\n' {SUBMIT_FAILED_MARKER} \"$1\" >&2",
        f"  cat {rel(err_file)} >&2",
        '  if [ ${#ids[@]} -gt 0 ]; then scancel "${ids[@]}" >&2; fi',
        "  exit 3",
        "}",
    ]
    for job in jobs:
        dep = ",".join(f"{kind}:${{{up}}}" for kind, up in job.dependencies)
        args = " ".join(q(f) for f in ["--parsable", "--hold", *flags[job.id]])
        dep_arg = f' "--dependency={dep}"' if dep else ""
        out += [
            f"out=$(sbatch {args}{dep_arg} -- {rel(layout.job_script(job.id))} "
            f"2>{rel(err_file)}) || fail {q(job.id)}",
            f'{job.id}=${{out%%;*}}; ids+=("${job.id}")',
        ]
    pairs = " ".join(f"{job.id}=${{{job.id}}}" for job in jobs)
    out += [
        f"printf '%s\\n' \"{pairs}\" > {rel(ids_file)}",
        f'scontrol release "${{ids[@]}}" 2>{rel(err_file)} || fail release',
        f'echo "{IDS_MARKER} {pairs}"',
        "",
    ]
    return "\n".join(out)
