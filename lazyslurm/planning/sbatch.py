"""Slurm text for a run: sbatch flags, job scripts and the submission script. Pure.

Every value that reaches a shell is quoted with :func:`shlex.quote`. The submission
script submits every array job ``--hold`` in topological order, with dependencies built
from the ids already returned, cancels everything it submitted if any ``sbatch`` fails,
then releases all jobs at once and prints the id map:

    LAZYSLURM-IDS aj0=101 aj1=102

>>> from lazyslurm.graph.resources import Resources
>>> aj = SbatchJob("aj1", "train", 4, (("aftercorr", "aj0"),), Resources(timeout_min=3))
>>> sbatch_flags(aj, run_id="r1", run_dir="/w/runs/r1")[:3]
['--job-name=lz-r1-aj1-train', '--array=0-3', '--output=/w/runs/r1/logs/aj1_%a.out']
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

import attrs

from lazyslurm.graph.resources import Resources

__all__ = [
    "IDS_MARKER",
    "SUBMIT_FAILED_MARKER",
    "SbatchJob",
    "job_script",
    "sbatch_flags",
    "submit_script",
]

IDS_MARKER = "LAZYSLURM-IDS"
SUBMIT_FAILED_MARKER = "LAZYSLURM-SUBMIT-FAILED"


@attrs.frozen
class SbatchJob:
    """What Slurm needs of one array job."""

    id: str
    name: str
    size: int
    dependencies: tuple[tuple[str, str], ...]  # (kind, upstream array job id)
    resources: Resources


def sbatch_flags(
    job: SbatchJob,
    *,
    run_id: str,
    run_dir: str,
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
        f"--output={run_dir}/logs/{job.id}_%a.out",
        f"--error={run_dir}/logs/{job.id}_%a.err",
        "--kill-on-invalid-dep=yes",
    ]
    flags.extend(r.sbatch_flags(d))  # one table of sbatch options: graph/resources.py
    return flags


def job_script(
    job: SbatchJob,
    *,
    run_id: str,
    run_dir: str,
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
        f"exec {shlex.quote(python)} -m lazyslurm.runner {shlex.quote(run_dir)} "
        f"{shlex.quote(job.id)}",
        "",
    ]
    return "\n".join(lines)


def submit_script(
    jobs: Sequence[SbatchJob],
    *,
    run_id: str,
    run_dir: str,
    flags: Mapping[str, Sequence[str]],
) -> str:
    """The one script that submits a whole run, all or nothing.

    ``flags`` maps array job id -> its :func:`sbatch_flags`; the job script of each is
    ``RUN_DIR/jobs/ID.sh``. Exit status 3 and a ``LAZYSLURM-SUBMIT-FAILED ID`` line on
    stderr mean nothing of the run is left in the queue.
    """
    q = shlex.quote
    out = [
        "#!/bin/bash",
        f"# lazyslurm run {run_id}: submit every array job held, then release them all",
        "set -u",
        f"run_dir={q(run_dir)}",
        "ids=()",
        "fail() {",
        f"  printf '%s %s\\n' {SUBMIT_FAILED_MARKER} \"$1\" >&2",
        '  cat "$run_dir/submit.err" >&2',
        '  if [ ${#ids[@]} -gt 0 ]; then scancel "${ids[@]}" >&2; fi',
        "  exit 3",
        "}",
    ]
    for job in jobs:
        dep = ",".join(f"{kind}:${{{up}}}" for kind, up in job.dependencies)
        args = " ".join(q(f) for f in ["--parsable", "--hold", *flags[job.id]])
        dep_arg = f' "--dependency={dep}"' if dep else ""
        out += [
            f'out=$(sbatch {args}{dep_arg} -- "$run_dir/jobs/{job.id}.sh" '
            f'2>"$run_dir/submit.err") || fail {q(job.id)}',
            f'{job.id}=${{out%%;*}}; ids+=("${job.id}")',
        ]
    pairs = " ".join(f"{job.id}=${{{job.id}}}" for job in jobs)
    out += [
        f'printf \'%s\\n\' "{pairs}" > "$run_dir/jobids"',
        'scontrol release "${ids[@]}" 2>"$run_dir/submit.err" || fail release',
        f'echo "{IDS_MARKER} {pairs}"',
        "",
    ]
    return "\n".join(out)
