"""Slurm text for a run: sbatch flags, job scripts and the submission script, and the
readers of what was rendered (the submission's report, a job script). Pure.

Every value that reaches a shell is quoted with :func:`shlex.quote`. The submission
script submits every array job ``--hold`` in topological order, with dependencies built
from the ids already returned, cancels everything it submitted if any ``sbatch`` fails,
then releases all jobs at once and prints the id map:

    LAZYSLURM-IDS aj0=101 aj1=102

>>> from lazyslurm.graph.resources import FLAGS, Resources
>>> aj = ArrayJob("aj1", "train", ("k0", "k1", "k2", "k3"), Resources(timeout_min=3),
...               dependencies=(("aftercorr", "aj0"),))
>>> sbatch_flags(aj, run_id="r1", layout=RunLayout("/w/runs/r1"))[:3]
['--job-name=lz-r1-aj1-train', '--array=0-3', '--output=/w/runs/r1/logs/aj1_%a.out']
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

import attrs

from lazyslurm.backends.packaging.base import Launch
from lazyslurm.backends.slurm.controller import count_script
from lazyslurm.errors import SubmissionError
from lazyslurm.graph.resources import FLAGS, Resources
from lazyslurm.planning.planner import ArrayJob
from lazyslurm.store import INSIDE, RunLayout, parse_job_ids

__all__ = [
    "CHECKPOINT_LEAD_S",
    "IDS_MARKER",
    "JOB_NAME_PREFIX",
    "SUBMIT_FAILED_MARKER",
    "Submission",
    "cancel_script",
    "guard_flags",
    "guard_script",
    "job_script",
    "live_runs_script",
    "ranks_script",
    "read_job_script",
    "read_submitted",
    "resource_flags",
    "sbatch_flags",
    "submission",
    "submission_error",
    "submit_script",
]

GUARD = "guard"  # jobids: AJ.guard=ID; job name lz-RUN-AJ-guard
GUARD_TIME_MIN = 10  # a guard lists outcomes, asks Slurm, resubmits: seconds, but a busy
GUARD_MEM = "256M"  # controller may make it wait (unreachable_timeout_s)
CHECKPOINT_LEAD_S = 60  # --signal: SIGUSR1 this long before the time limit (checkpoint hooks)

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
    r = job.effective(defaults)  # the cluster's defaults filled in, the packed time
    name = r.job_name or job.name
    array = f"0-{job.slurm_size - 1}"  # packed: one Slurm element per pack
    throttle = r.max_concurrent
    if throttle:
        array += f"%{throttle}"
    flags = [
        f"--job-name={JOB_NAME_PREFIX}{run_id}-{job.id}-{name}",
        f"--array={array}",
        f"--output={layout.log_pattern(job.id, 'out')}",
        f"--error={layout.log_pattern(job.id, 'err')}",
        "--kill-on-invalid-dep=yes",
    ]
    flags.extend(resource_flags(r))
    if r.requeue:  # and SIGUSR1 before the time limit: the checkpoint hooks
        flags += ["--requeue", f"--signal=B:USR1@{CHECKPOINT_LEAD_S}"]
    return flags


def guard_flags(job: ArrayJob, *, run_id: str, layout: RunLayout,
                defaults: Resources | None = None) -> list[str]:  # fmt: skip
    """sbatch options of the guard job of an array job whose task retries on the cluster
    (:attr:`Resources.guarded`): one CPU for a few minutes, in the task's partition,
    account and QOS; its log is ``logs/AJ.guard_JOBID.out``. It waits ``afterany`` for the
    job it guards (added at submit time) and runs :mod:`lazyslurm.backends.slurm.retry`.

    >>> aj = ArrayJob("aj1", "f", ("k",), Resources(retries=2, partition="p"))
    >>> guard_flags(aj, run_id="r1", layout=RunLayout("/w/runs/r1"))[:2]
    ['--job-name=lz-r1-aj1-guard', '--output=/w/runs/r1/logs/aj1.guard_%j.out']
    """
    r = job.effective(defaults)
    log = f"{layout.root.replace('%', '%%')}/logs/{job.id}.{GUARD}_%j.out"
    flags = [
        f"--job-name={JOB_NAME_PREFIX}{run_id}-{job.id}-{GUARD}",
        f"--output={log}",
        f"--error={log}",
        "--ntasks=1",
        "--cpus-per-task=1",
        f"--mem={GUARD_MEM}",
        # never more than the task's own limit: within the partition's MaxTime
        f"--time={min(GUARD_TIME_MIN, r.timeout_min or GUARD_TIME_MIN)}",
    ]
    flags += [f"--{name}={value}" for name in ("partition", "account", "qos")
              if (value := getattr(r, name)) is not None]  # fmt: skip
    flags += [f"--{name}={value}" for name, value in r.scheduler if name == "clusters"]
    return flags


def guard_script(job: ArrayJob, *, run_id: str, layout: RunLayout, start: Launch) -> str:
    """The batch script of an array job's guard jobs: the job's setup lines, then
    ``python -P -m lazyslurm.backends.slurm.retry RUN_DIR ARRAY_JOB WATCHED ATTEMPT``
    (``sbatch ... -- SCRIPT WATCHED ATTEMPT``: the Slurm job it guards and which attempt
    that is). When the runner is started by path, its package's directory goes on
    ``PYTHONPATH``."""
    q = shlex.quote
    lines = [
        "#!/bin/bash",
        f"# lazyslurm run {run_id}: guard of array job {job.id} ({job.name}): on-cluster retries",
        *start.setup,
    ]
    if start.runner and start.runner.endswith(_RUNNER_BY_PATH):
        root = start.runner[: -len(_RUNNER_BY_PATH)].rstrip("/") or "/"
        lines.append(f'export PYTHONPATH={q(root)}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    words = [*start.launcher, start.python, "-P", "-m", "lazyslurm.backends.slurm.retry",
             layout.root, job.id]  # fmt: skip
    lines += ["exec " + " ".join(q(w) for w in words) + ' "$@"', ""]
    return "\n".join(lines)


def resource_flags(r: Resources) -> list[str]:
    """The sbatch flags of resources (without the per-run ones: --array, --output, ...):
    each task option declared as a flag (``graph.resources.FLAGS``), then each scheduler
    option, every one as its ``--long-option`` (the Python name with ``-`` for ``_``:
    ``cpus_per_task`` -> ``--cpus-per-task``, ``mem_per_cpu`` -> ``--mem-per-cpu``; a
    field in megabytes, ``mem_mb``, is written ``--mem=4096M``), then the raw flags.

    >>> resource_flags(Resources.from_options(time=5, mem_per_cpu="1G", exclusive=True))
    ['--time=5', '--exclusive', '--mem-per-cpu=1024M']
    """
    flags = [
        f"--{name.replace('_', '-')}={value}{'M' if field.endswith('_mb') else ''}"
        for name, field in FLAGS
        if (value := getattr(r, field)) is not None
    ]
    for name, arg in r.scheduler:
        flag = name.replace("_", "-")
        flags.append(f"--{flag}={arg}" if arg else f"--{flag}")
    flags.extend(r.extra_sbatch)
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
    guards: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """The one script that submits a whole run, all or nothing.

    Every array job is submitted held and released once all are in (one that started
    before a later ``sbatch`` failed could not be taken back), except the last when it
    cannot start early: the run's only one (nothing follows it), or one that waits for
    held ones. That spares a run of one array job the ``scontrol release``, and the
    last stage of a pipeline its part of it.

    ``flags`` maps array job id -> its :func:`sbatch_flags`; the job script of each is
    ``layout.job_script(ID)``. Exit status 3 and a ``LAZYSLURM-SUBMIT-FAILED ID`` line on
    stderr mean nothing of the run is left in the queue; when the release is what failed,
    that line reads ``LAZYSLURM-SUBMIT-FAILED release aj0=101 aj1=102`` (Slurm's message,
    which follows, names the refused jobs by Slurm id). ``jobids``/``stderr`` (paths in
    the run directory) replace ``layout.jobids``/``layout.submit_err``: a subgraph
    submitted from a compute node (docs/dynamic.md) keeps its own. ``release=False``
    leaves every array job held (a subgraph is released once its dependents wait for it).

    ``guards`` maps the id of an array job that retries on the cluster to its
    :func:`guard_flags`: right after it, its guard job is submitted (held, ``afterany``
    on it, script ``layout.guard_script(ID)``), and its dependents wait ``afterok`` for
    the guard instead of for it (element-wise ``aftercorr`` is given up for it). The
    guard's id is reported as ``ID.guard=GUARD_ID``.
    """
    q = shlex.quote
    guards = guards or {}
    ids_file = jobids or layout.jobids
    err_file = stderr or layout.submit_err

    def rel(path: str) -> str:  # a path of the run, as "$run_dir/..." in the script
        return f'"$run_dir{path[len(layout.root) :]}"'

    calls = "sbatch $lz_sb scontrol $lz_sc scancel $lz_cc"  # what it asked Slurm
    out = [
        "#!/bin/bash",
        f"# lazyslurm run {run_id}: submit the array jobs held, then release them",
        "set -u",
        f"run_dir={q(layout.root)}",
        "ids=()",
        "lz_sb=0 lz_sc=0 lz_cc=0",
        f"trap '{count_script(None, calls)}; echo \"{calls}\" >> {rel(layout.calls)}' EXIT",
        "fail() {",
        f"  printf '%s %s\\n' {SUBMIT_FAILED_MARKER} \"$*\" >&2",
        f"  cat {rel(err_file)} >&2",
        '  if [ ${#ids[@]} -gt 0 ]; then lz_cc=1; scancel "${ids[@]}" >&2; fi',
        "  exit 3",
        "}",
    ]
    last_free = release and not guards and (len(jobs) == 1 or bool(jobs[-1].dependencies))

    def on(kind: str, up: str) -> str:  # a guarded job's dependents wait for its guard
        return f"afterok:${{{up}_g}}" if up in guards else f"{kind}:${{{up}}}"

    for n, job in enumerate(jobs):
        dep = ",".join(dict.fromkeys(on(kind, up) for kind, up in job.dependencies))
        hold = [] if last_free and n == len(jobs) - 1 else ["--hold"]
        args = " ".join(q(f) for f in ["--parsable", *hold, *flags[job.id]])
        dep_arg = f' "--dependency={dep}"' if dep else ""
        out += [
            "lz_sb=$((lz_sb + 1))",
            f"out=$(sbatch {args}{dep_arg} -- {rel(layout.job_script(job.id))} "
            f"2>{rel(err_file)}) || fail {q(job.id)}",
            f'{job.id}=${{out%%;*}}; ids+=("${job.id}")',
        ]
        if job.id in guards:
            gargs = " ".join(q(f) for f in ["--parsable", "--hold", *guards[job.id]])
            out += [
                "lz_sb=$((lz_sb + 1))",
                f'out=$(sbatch {gargs} "--dependency=afterany:${{{job.id}}}" -- '
                f'{rel(layout.guard_script(job.id))} "${{{job.id}}}" 1 2>{rel(err_file)}) '
                f"|| fail {q(job.id)}",
                f'{job.id}_g=${{out%%;*}}; ids+=("${job.id}_g")',
            ]
    pairs = " ".join(
        f"{job.id}=${{{job.id}}}"
        + (f" {job.id}.{GUARD}=${{{job.id}_g}}" if job.id in guards else "")
        for job in jobs
    )
    out.append(f"printf '%s\\n' \"{pairs}\" > {rel(ids_file)}")
    held = len(jobs) - 1 if last_free else len(jobs) + len(guards)
    if release and held:
        which = '"${ids[@]}"' if not last_free else f'"${{ids[@]:0:{held}}}"'
        out.append(f"lz_sc=1; scontrol release {which} 2>{rel(err_file)} || fail release {pairs}")
    out += [f'echo "{IDS_MARKER} {pairs}"', ""]
    return "\n".join(out)


def cancel_script(
    run_id: str,
    ids: Sequence[str] = (),
    *,
    calls_file: str | None = None,
    prefix: str = "",
    keep: Sequence[str] = (),
) -> str:
    r"""One ``scancel`` of ``ids`` and of every job of this user whose name starts with
    ``lz-RUN_ID-PREFIX``: a run's own jobs and the subgraphs its tasks submitted from
    compute nodes (same prefix), whether or not a poll has read their records yet; and
    the held jobs an interrupted submission left; but not the jobs ``keep`` (ids). Its
    calls are counted
    (:func:`~lazyslurm.backends.slurm.controller.count_script`). When squeue fails, the
    ``ids`` are still cancelled, and the script's last status is 75 (Slurm's words are on
    stderr).

    >>> s = cancel_script("r1", ["101", "102"])
    >>> "lz_q=$(squeue -h -u" in s, "lz-r1-*) echo" in s, "printf '%s\n' 101 102;" in s
    (True, True, True)
    >>> "xargs -r scancel" in s
    True
    """
    q = shlex.quote
    known = f"printf '%s\n' {' '.join(q(i) for i in ids)}; " if ids else ""
    pattern = q(f"{JOB_NAME_PREFIX}{run_id}-{prefix}")
    spare = "".join(f"{q(k)}) ;; " for k in keep)  # a case branch per id kept
    return (
        "lz_rc=0; lz_q=$(squeue -h -u \"$(id -un)\" -o '%F %j') || lz_rc=75\n"
        f"lz_ids=$({{ {known}printf '%s\\n' \"$lz_q\" | while read -r id name; "
        f'do case "$id" in {spare}*) case "$name" in {pattern}*) echo "$id";; esac;; esac; '
        "done; } | sort -u)\n"
        'lz_cc=0; if [ -n "$lz_ids" ]; then lz_cc=1; '
        "printf '%s\\n' \"$lz_ids\" | xargs -r scancel; fi\n"
        f"{count_script(calls_file, 'squeue 1 scancel $lz_cc')}\n"
        "(exit $lz_rc)"
    )


def live_runs_script() -> str:
    """A script that prints the run id of every job of this user that Slurm still holds
    (from the job names, ``lz-RUN-...``: one ``squeue``), and fails when squeue does.

    >>> "squeue -h -u" in live_runs_script()
    True
    """
    name_re = f"^{JOB_NAME_PREFIX}{RunLayout.RUN_ID_GLOB}-"  # the glob's classes are ERE too
    return (
        "lz_names=$(squeue -h -u \"$(id -un)\" -o '%j') || exit 1; "
        "printf '%s\\n' \"$lz_names\" | "
        f"awk 'match($0, /{name_re}/) {{ print substr($0, {len(JOB_NAME_PREFIX) + 1}, "
        f"RLENGTH - {len(JOB_NAME_PREFIX) + 1}) }}' | sort -u"
    )


@attrs.frozen
class Submission:
    """What submitting some array jobs takes: each one's flags, the files to stage (job
    scripts and the submission script, paths relative to the run directory) and the
    command that runs the submission there."""

    flags: Mapping[str, Sequence[str]]
    files: Mapping[str, bytes]
    command: str


def submission(
    array_jobs: Sequence[ArrayJob],
    *,
    run_id: str,
    layout: RunLayout,
    defaults: Resources | None,
    launches: Mapping[str, Launch],
    jobids: str | None = None,
    stderr: str | None = None,
    release: bool = True,
    name: str = "",
) -> Submission:
    """Everything to submit ``array_jobs`` all or nothing (the one way a plan reaches
    Slurm: from the client, and from a compute node for a subgraph). ``launches`` says how
    each array job starts its runner; ``name`` prefixes the submission script's name (a
    subgraph's own, beside the run's)."""
    flags = {
        aj.id: sbatch_flags(aj, run_id=run_id, layout=layout, defaults=defaults)
        for aj in array_jobs
    }
    files: dict[str, bytes] = {}
    for aj in array_jobs:
        start = launches[aj.id]
        files[INSIDE.job_script(aj.id)] = job_script(
            aj,
            run_id=run_id,
            layout=layout,
            python=start.python,
            setup=start.setup,
            launcher=start.launcher,
            runner=None if start.launcher else start.runner,
        ).encode()
    guards = {
        aj.id: guard_flags(aj, run_id=run_id, layout=layout, defaults=defaults)
        for aj in array_jobs
        if aj.resources.guarded
    }
    for aj_id in guards:
        aj = next(a for a in array_jobs if a.id == aj_id)
        files[INSIDE.guard_script(aj_id)] = guard_script(
            aj, run_id=run_id, layout=layout, start=launches[aj_id]
        ).encode()
    script = submit_script(
        array_jobs,
        run_id=run_id,
        layout=layout,
        flags=flags,
        jobids=jobids,
        stderr=stderr,
        release=release,
        guards=guards,
    )
    rel = INSIDE.subgraph_file(name, "submit.sh") if name else INSIDE.submit_script
    files[rel] = script.encode()
    return Submission(flags, files, f"bash {shlex.quote(f'{layout.root}/{rel}')}")


def read_submitted(
    returncode: int,
    stdout: str,
    stderr: str,
    flags: Mapping[str, Sequence[str]],
    array_jobs: Sequence[ArrayJob] = (),
) -> dict[str, str]:
    """The Slurm job id of each array job, from what the submission script printed; a
    refused submission raises :class:`~lazyslurm.errors.SubmissionError` naming the array
    job, Slurm's words and its options."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(IDS_MARKER + " ")), None)
    if returncode != 0 or line is None:
        raise submission_error(stdout, stderr, flags, array_jobs)
    return parse_job_ids(line[len(IDS_MARKER) :])


_RUNNER_BY_PATH = "lazyslurm/runner/__main__.py"  # how a job script names the runner's file


def read_job_script(text: str) -> Launch:
    """How a job script (:func:`job_script`, :func:`ranks_script`) starts its runner: the
    interpreter, launcher words (a container runtime), setup lines and the runner's path
    (None: ``-m lazyslurm.runner``). What a subgraph's jobs and a workflow's inner cluster
    inherit. The last line that starts the runner is the ``exec`` one (a multi-rank
    script's ``--gather``: ``srun`` is the line before).

    >>> aj = ArrayJob("aj0", "f", ("k",))
    >>> text = job_script(aj, run_id="r", layout=RunLayout("/w/runs/r"), python="/p/python",
    ...                   setup=["module load x"], runner="/c/lazyslurm/runner/__main__.py")
    >>> start = read_job_script(text)
    >>> start.python, start.setup, start.launcher, start.runner
    ('/p/python', ('module load x',), (), '/c/lazyslurm/runner/__main__.py')
    """
    lines = text.splitlines()

    def starts_runner(line: str) -> bool:  # -m lazyslurm.runner, or its __main__.py by path
        return "-m lazyslurm.runner" in line or _RUNNER_BY_PATH in line

    starts = [ln for ln in lines[2:] if starts_runner(ln)]
    words = shlex.split(starts[-1].removeprefix("exec "))
    at = next(
        i
        for i in range(1, len(words))
        if words[i : i + 2] == ["-m", "lazyslurm.runner"] or words[i].endswith(_RUNNER_BY_PATH)
    )
    if words[at] == "-m" and words[at - 1] == "-P":  # python -P -m lazyslurm.runner
        at -= 1
    setup = tuple(ln for ln in lines[2:] if not starts_runner(ln))
    runner = words[at] if words[at].endswith(_RUNNER_BY_PATH) else None
    return Launch(words[at - 1], setup, tuple(words[: at - 1]), runner)


def submission_error(
    stdout: str,
    stderr: str,
    flags: Mapping[str, Sequence[str]],
    array_jobs: Sequence[ArrayJob] = (),
) -> SubmissionError:
    """The error for a refused submission: which array job, Slurm's words, its options.

    A job can be refused by ``sbatch`` (the marker line names its array job) or only when
    the held jobs are released (``scontrol release`` names the refused Slurm job ids, which
    the marker line maps back to array jobs).
    """
    m = re.search(rf"^{SUBMIT_FAILED_MARKER} (\S+)(.*)$", stderr, re.MULTILINE)
    which = m.group(1) if m else "?"
    slurm_msg = stderr[m.end() :].strip() if m else (stderr or stdout).strip()
    slurm_msg = slurm_msg or "(Slurm printed nothing)"
    names = {aj.id: aj.name for aj in array_jobs}
    refused = [which]
    step = "submission"
    if which == "release" and m is not None:
        step = "release"
        by_slurm_id = {sid: aj for aj, sid in parse_job_ids(m.group(2)).items()}
        said = re.findall(r"^(\d+)(?:_\S*)?:", slurm_msg, re.MULTILINE)
        refused = list(dict.fromkeys(by_slurm_id[s] for s in said if s in by_slurm_id))
        refused = refused or ["?"]
    lines = []
    for aj_id in refused:
        label = f"array job {aj_id}" + (f" ({names[aj_id]})" if aj_id in names else "")
        opts = " ".join(flags.get(aj_id, [])) or "(unknown)"
        lines.append(f"{label}, options: {opts}")
    where = "at release of the held jobs" if step == "release" else "at submission"
    msg = (
        f"Slurm refused {lines[0].split(',')[0]} {where}: {slurm_msg}\n"
        + "\n".join(lines)
        + "\nevery job of this run already submitted was cancelled; nothing is left in the "
        "queue. Change the options above (or the task's resources) and submit again"
    )
    return SubmissionError(msg)
