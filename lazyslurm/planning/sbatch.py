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

import attrs

from lazyslurm.graph.resources import Resources
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.runner.checkpoint import CHECKPOINT_LEAD_S
from lazyslurm.store import RunLayout

__all__ = [
    "IDS_MARKER",
    "JOB_NAME_PREFIX",
    "SUBMIT_FAILED_MARKER",
    "job_script",
    "ranks_script",
    "sbatch_flags",
    "submit_script",
]

IDS_MARKER = "LAZYSLURM-IDS"
JOB_NAME_PREFIX = "lz-"  # every Slurm job of run R is named lz-R-ARRAYJOB-TASK
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
    array = f"0-{job.slurm_size - 1}"  # packed: one Slurm element per pack
    throttle = pick("max_concurrent")
    if throttle:
        array += f"%{throttle}"
    flags = [
        f"--job-name={JOB_NAME_PREFIX}{run_id}-{job.id}-{name}",
        f"--array={array}",
        f"--output={layout.log_pattern(job.id, 'out')}",
        f"--error={layout.log_pattern(job.id, 'err')}",
        "--kill-on-invalid-dep=yes",
    ]
    if job.pack > 1 and (r.timeout_min or d.timeout_min):  # k elements in turn: k x time
        per = r.timeout_min or d.timeout_min or 0
        r = attrs.evolve(r, timeout_min=per * -(-job.pack // (pick("cpus_per_task") or 1)))
    flags.extend(r.sbatch_flags(d))  # one table of sbatch options: graph/resources.py
    if r.requeue or d.requeue:  # and SIGUSR1 before the time limit: the checkpoint hooks
        flags += ["--requeue", f"--signal=B:USR1@{CHECKPOINT_LEAD_S}"]
    return flags


def job_script(
    job: ArrayJob,
    *,
    run_id: str,
    layout: RunLayout,
    python: str,
    setup: Sequence[str] = (),
    launcher: Sequence[str] = (),
    runner: str | None = None,
) -> str:
    """The batch script of one array job: setup lines, then the runner (element from
    ``$SLURM_ARRAY_TASK_ID``). ``setup`` lines are the user's own shell, used as given;
    ``launcher`` words (quoted here) come before the interpreter, e.g. a container runtime.
    ``runner``, the path of ``lazyslurm/runner/__main__.py`` on the cluster when known, is
    started by path: no ``runpy`` and no package ``__init__`` on every task; else
    ``python -P -m lazyslurm.runner`` (``-P``: the job's working directory, where the
    client was, does not come first on ``sys.path``, where a user's ``types.py`` would
    shadow the standard library; the runner puts it after the standard library).

    A task with more than one rank (:attr:`Resources.ranks`) gets :func:`ranks_script`
    instead; a one-process task's script is unchanged by that feature.
    """
    if job.resources.ranks > 1:
        return ranks_script(
            job, run_id=run_id, layout=layout, python=python, setup=setup, runner=runner
        )
    start = [runner] if runner else ["-P", "-m", "lazyslurm.runner"]
    words = [*launcher, python, *start, layout.root, job.id]
    lines = [
        "#!/bin/bash",
        f"# lazyslurm run {run_id}, array job {job.id} ({job.name} x{job.size})",
        *setup,
        "exec " + " ".join(shlex.quote(w) for w in words),
        "",
    ]
    return "\n".join(lines)


def ranks_script(
    job: ArrayJob,
    *,
    run_id: str,
    layout: RunLayout,
    python: str,
    setup: Sequence[str] = (),
    runner: str | None = None,
) -> str:
    """The batch script of a multi-process task: ``srun`` starts the runner on every rank,
    then one process gathers the ranks' outcomes into the element's result or error
    (the runner by path when ``runner`` is known, as in :func:`job_script`).

    ``srun`` takes the task layout (``--ntasks``, ``--ntasks-per-node``, nodes) and the
    job's GPUs (``gpus``, ``gpus_per_node``, ``gres``: a step gets all of them by default)
    from the allocation. Per-task options are repeated on ``srun``: Slurm 22.05 and later
    no longer pass ``--cpus-per-task`` from sbatch to srun. ``--kill-on-bad-exit=1`` ends
    every rank when one fails, so no rank waits forever at a barrier.
    """
    r = job.resources
    q = shlex.quote
    srun = ["srun", "--kill-on-bad-exit=1"]
    if r.cpus_per_task is not None:
        srun.append(f"--cpus-per-task={r.cpus_per_task}")
    if r.gpus_per_task is not None:
        srun.append(f"--gpus-per-task={q(r.gpus_per_task)}")
    start = f"{q(python)} {q(runner)}" if runner else f"{q(python)} -P -m lazyslurm.runner"
    where = f"{q(layout.root)} {q(job.id)}"
    lines = [
        "#!/bin/bash",
        f"# lazyslurm run {run_id}, array job {job.id} ({job.name} x{job.size}, {r.ranks} ranks)",
        *setup,
        f"{' '.join(srun)} {start} --rank {where}",
        f"exec {start} --gather {where} {r.ranks}",
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
    release: bool = True,
) -> str:
    """The one script that submits a whole run, all or nothing.

    ``flags`` maps array job id -> its :func:`sbatch_flags`; the job script of each is
    ``layout.job_script(ID)``. Exit status 3 and a ``LAZYSLURM-SUBMIT-FAILED ID`` line on
    stderr mean nothing of the run is left in the queue; when the release is what failed,
    that line reads ``LAZYSLURM-SUBMIT-FAILED release aj0=101 aj1=102`` (Slurm's message,
    which follows, names the refused jobs by Slurm id). ``jobids``/``stderr`` (paths in
    the run directory) replace ``layout.jobids``/``layout.submit_err``: a subgraph
    submitted from a compute node (docs/dynamic.md) keeps its own. ``release=False``
    leaves every array job held (a subgraph is released once its dependents wait for it).
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
        f"  printf '%s %s\\n' {SUBMIT_FAILED_MARKER} \"$*\" >&2",
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
    out.append(f"printf '%s\\n' \"{pairs}\" > {rel(ids_file)}")
    if release:
        out.append(f'scontrol release "${{ids[@]}}" 2>{rel(err_file)} || fail release {pairs}')
    out += [f'echo "{IDS_MARKER} {pairs}"', ""]
    return "\n".join(out)
