"""sbatch flags, job scripts and the submission script: rendered text and shell safety."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from examples import parallelization_patterns as pp
from lazyslurm.backends.slurm.render import job_script, sbatch_flags, submit_script
from lazyslurm.graph.resources import Resources
from lazyslurm.planning import ArrayJob, make_plan
from lazyslurm.store import RunLayout

DATA = Path(__file__).parent / "data"
RUN_ID = "20261124-120000-abcdef"
RUN_DIR = "/home/u/.lazyslurm/runs/" + RUN_ID


def pipeline_jobs() -> list[ArrayJob]:
    p = make_plan([*pp.pipeline_graph().jobs, pp.fan_out_fan_in_graph()])
    return list(p.array_jobs)


def render_all(run_dir: str = RUN_DIR) -> tuple[dict[str, list[str]], str]:
    jobs = pipeline_jobs()
    layout = RunLayout(run_dir)
    flags = {j.id: sbatch_flags(j, run_id=RUN_ID, layout=layout) for j in jobs}
    return flags, submit_script(jobs, run_id=RUN_ID, layout=layout, flags=flags)


def test_submit_script_matches_recorded_file():
    """The submission script for the seed's lazy pipeline + fan-out is the recorded text."""
    _, text = render_all()
    assert text == (DATA / "submit_patterns.sh").read_text()


def test_only_array_jobs_that_could_start_early_are_held():
    """Issue 27: a run of one array job goes in unheld (no ``scontrol release``: one
    controller call less), and so does a last array job that waits for held ones; a last
    one that could start at once stays held until every sbatch has succeeded."""
    layout = RunLayout(RUN_DIR)
    one = [ArrayJob("aj0", "f", ("k0", "k1"))]
    flags = {"aj0": ["--array=0-1"]}
    text = submit_script(one, run_id=RUN_ID, layout=layout, flags=flags)
    assert "--hold" not in text and "scontrol release" not in text
    free = [ArrayJob("aj0", "f", ("k0",)), ArrayJob("aj1", "g", ("k1",))]
    flags = {"aj0": ["--array=0-0"], "aj1": ["--array=0-0"]}
    text = submit_script(free, run_id=RUN_ID, layout=layout, flags=flags)
    assert text.count("--hold") == 2 and 'scontrol release "${ids[@]}"' in text
    chained = [free[0], ArrayJob("aj1", "g", ("k1",), dependencies=(("afterok", "aj0"),))]
    text = submit_script(chained, run_id=RUN_ID, layout=layout, flags=flags)
    assert text.count("--hold") == 1 and 'scontrol release "${ids[@]:0:1}"' in text
    kept = submit_script(one, run_id=RUN_ID, layout=layout, flags={"aj0": []}, release=False)
    assert "--hold" in kept and "scontrol release" not in kept  # a subgraph: released later


def test_job_script_matches_recorded_file():
    """A job script is setup lines then the runner, quoted."""
    job = pipeline_jobs()[0]
    text = job_script(
        job,
        run_id=RUN_ID,
        layout=RunLayout(RUN_DIR),
        python="/opt/venv/bin/python",
        setup=["module load python/3.11", "source /opt/venv/bin/activate"],
    )
    assert text == (DATA / "job_aj0.sh").read_text()


def test_flags_carry_resources_and_defaults():
    """Every resource becomes its sbatch flag; cluster defaults fill unset ones."""
    r = Resources.from_options(
        time="1-00:00:00",
        mem="4G",
        cpus_per_task=8,
        gpus="a100:2",
        gres="shard:1",
        account="acc",
        qos="high",
        nodes=2,
        ntasks=4,
        constraint="ib&v100",
        max_concurrent=3,
        extra_sbatch=["--exclusive"],
    )
    job = ArrayJob("aj3", "train", tuple(f"k{i}" for i in range(10)), r)
    flags = sbatch_flags(
        job, run_id="r", layout=RunLayout("/d"), defaults=Resources(partition="gpu")
    )
    assert flags == [
        "--job-name=lz-r-aj3-train",
        "--array=0-9%3",
        "--output=/d/logs/aj3_%a.out",
        "--error=/d/logs/aj3_%a.err",
        "--kill-on-invalid-dep=yes",
        "--time=1440",
        "--mem=4096M",
        "--cpus-per-task=8",
        "--gpus=a100:2",
        "--gres=shard:1",
        "--partition=gpu",
        "--account=acc",
        "--qos=high",
        "--nodes=2",
        "--ntasks=4",
        "--constraint=ib&v100",
        "--exclusive",
    ]


NASTY = "/tmp/we ird $(touch pwned) `id`; 'q' \"dq\" &|<>*?"


def fake_slurm(tmp_path: Path, fail_on: str | None = None) -> dict[str, str]:
    """sbatch/scontrol/scancel stand-ins that record their argv, one line per call."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    for name in ("sbatch", "scontrol", "scancel"):
        fail = (
            f'case "$*" in *{fail_on}*) '
            'echo "sbatch: error: Invalid partition name specified" >&2; exit 1;; esac'
            if (name == "sbatch" and fail_on)
            else ""
        )
        (bin_dir / name).write_text(
            "#!/bin/bash\n"
            f'printf "%s" {name} >> {shlex.quote(str(log))}\n'
            f'for a in "$@"; do printf " [%s]" "$a" >> {shlex.quote(str(log))}; done\n'
            f"echo >> {shlex.quote(str(log))}\n"
            f"{fail}\n"
            "n=$(wc -l < " + shlex.quote(str(log)) + '); echo "$((100 + n))"\n'
        )
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LOG": str(log)}


def run_submit(
    tmp_path: Path, run_dir: str, fail_on: str | None = None
) -> subprocess.CompletedProcess:
    env = fake_slurm(tmp_path, fail_on)
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    _, text = render_all(run_dir)
    return subprocess.run(["bash", "-c", text], env=env, capture_output=True, text=True)


def test_submit_script_is_safe_with_shell_metacharacters(tmp_path):
    """A run dir full of metacharacters reaches sbatch verbatim and runs nothing."""
    run_dir = str(tmp_path / NASTY.strip("/"))
    res = run_submit(tmp_path, run_dir)
    assert res.returncode == 0, res.stderr
    assert not (Path.cwd() / "pwned").exists() and not (tmp_path / "pwned").exists()
    calls = (tmp_path / "calls.log").read_text().splitlines()
    sbatch = [c for c in calls if c.startswith("sbatch")]
    assert len(sbatch) == 6
    assert f"[--output={run_dir}/logs/aj0_%a.out]" in sbatch[0]
    assert f"[{run_dir}/jobs/aj0.sh]" in sbatch[0]
    assert "[--dependency=aftercorr:101]" in sbatch[2]
    assert calls[-1].startswith("scontrol [release]")
    assert "LAZYSLURM-IDS aj0=101" in res.stdout
    assert (Path(run_dir) / "jobids").read_text().startswith("aj0=101 ")


def test_submit_failure_cancels_what_was_submitted(tmp_path):
    """When one sbatch fails, the script cancels earlier jobs and exits 3 naming the job."""
    res = run_submit(tmp_path, str(tmp_path / "run"), fail_on="stage3_finalize")
    assert res.returncode == 3
    assert "LAZYSLURM-SUBMIT-FAILED aj" in res.stderr
    assert "Invalid partition name" in res.stderr
    calls = (tmp_path / "calls.log").read_text().splitlines()
    cancel = [c for c in calls if c.startswith("scancel")]
    assert (
        len(cancel) == 1
        and cancel[0].count("[") == len([c for c in calls if c.startswith("sbatch")]) - 1
    )
    assert not any(c.startswith("scontrol") for c in calls)


@pytest.mark.parametrize("name", ["aj0", "aj5"])
def test_dependencies_use_ids_already_returned(name):
    """Dependencies reference shell variables set by earlier sbatch calls only."""
    _, text = render_all()
    lines = text.splitlines()
    defined = set()
    for line in lines:
        if line.startswith("out=$(sbatch"):
            for dep in line.split("--dependency=")[1:]:
                for part in dep.split('"')[0].split(","):
                    assert part.split(":${")[1].rstrip("}") in defined
        if "=${out%%;*}" in line:
            defined.add(line.split("=")[0])
    assert name in defined


def test_a_percent_in_the_work_directory_is_escaped_for_slurm():
    """sbatch expands %j etc. in --output: a % in the run directory is doubled there, and
    the runner still gets the real path."""
    job = pipeline_jobs()[0]
    layout = RunLayout("/w/100%done/runs/r")
    flags = sbatch_flags(job, run_id="r", layout=layout)
    assert "--output=/w/100%%done/runs/r/logs/aj0_%a.out" in flags
    text = job_script(job, run_id="r", layout=layout, python="python3")
    assert " /w/100%done/runs/r aj0" in text


# --------------------------------------------------------------------------- many ranks

GPU_SETUP = ["module load cuda/12.2", "source /opt/venv/bin/activate"]


def two_nodes_four_gpus(**extra: object) -> ArrayJob:
    r = Resources.from_options(
        time="02:00:00",
        mem="64G",
        nodes=2,
        ntasks_per_node=4,
        gpus_per_node=4,
        cpus_per_task=8,
        partition="gpu",
        **extra,
    )
    return ArrayJob("aj0", "train", ("k0",), r)


def test_ranks_script_for_two_nodes_of_four_gpus_matches_recorded_file():
    """A 2-node x 4-GPU task runs the runner on every rank with srun, then gathers once."""
    text = job_script(
        two_nodes_four_gpus(),
        run_id=RUN_ID,
        layout=RunLayout(RUN_DIR),
        python="/opt/venv/bin/python",
        setup=GPU_SETUP,
    )
    assert text == (DATA / "job_ranks_2x4gpu.sh").read_text()


def test_ranks_flags_for_two_nodes_of_four_gpus():
    """The task layout and GPUs go to sbatch as Slurm spells them."""
    flags = sbatch_flags(two_nodes_four_gpus(), run_id=RUN_ID, layout=RunLayout(RUN_DIR))
    assert flags[5:] == [
        "--time=120",
        "--mem=65536M",
        "--cpus-per-task=8",
        "--partition=gpu",
        "--nodes=2",
        "--ntasks-per-node=4",
        "--gpus-per-node=4",
    ]


def test_gpus_per_task_goes_to_sbatch_and_srun():
    """Per-task GPUs are asked of sbatch and bound per rank by srun."""
    job = ArrayJob(
        "aj0", "t", ("k0", "k1"), Resources.from_options(ntasks=4, gpus_per_task="a100:1")
    )
    assert "--gpus-per-task=a100:1" in sbatch_flags(job, run_id=RUN_ID, layout=RunLayout(RUN_DIR))
    text = job_script(job, run_id=RUN_ID, layout=RunLayout(RUN_DIR), python="python3")
    assert "srun --kill-on-bad-exit=1 --gpus-per-task=a100:1 python3 -P -m lazyslurm.runner" in text
    assert text.splitlines()[-1] == f"exec python3 -P -m lazyslurm.runner --gather {RUN_DIR} aj0 4"


@pytest.mark.parametrize(
    "options",
    [{}, {"nodes": 2}, {"ntasks": 1}, {"gpus": 2, "gres": "gpu:2"}, {"nodes": 2, "gpus": 8}],
    ids=["plain", "nodes-only", "one-task", "gpus", "nodes-and-gpus"],
)
def test_one_process_script_is_unchanged(options):
    """A one-process task's job script is byte-identical to before: no srun, one exec."""
    job = ArrayJob(
        "aj0", "stage1_preprocess", ("k0", "k1", "k2"), Resources.from_options(**options)
    )
    text = job_script(
        job,
        run_id=RUN_ID,
        layout=RunLayout(RUN_DIR),
        python="/opt/venv/bin/python",
        setup=["module load python/3.11", "source /opt/venv/bin/activate"],
    )
    assert text == (DATA / "job_aj0.sh").read_text()
    assert "srun" not in text


def test_the_submission_counts_its_slurm_commands(tmp_path):
    """The submission script says what it asked Slurm (an ``LZ-CALLS`` line) and appends
    the same to the run's ``calls`` file: every sbatch tried, the release, a cancel."""
    run_dir = tmp_path / "run"
    ok = run_submit(tmp_path, str(run_dir))
    assert "LZ-CALLS sbatch 6 scontrol 1 scancel 0" in ok.stdout.splitlines()
    assert (run_dir / "calls").read_text() == "sbatch 6 scontrol 1 scancel 0\n"
    failed_dir = tmp_path / "failed"
    (tmp_path / "bin").rename(tmp_path / "bin-ok")
    bad = run_submit(tmp_path, str(failed_dir), fail_on="stage3_finalize")
    sbatch, _, cancel = bad.stdout.split("LZ-CALLS ")[1].split()[1::2]
    assert int(sbatch) >= 1 and cancel == "1"
    assert (failed_dir / "calls").read_text().startswith(f"sbatch {sbatch} scontrol 0 scancel 1")


def fake_squeue(tmp_path: Path, listing: str, rc: int = 0) -> dict[str, str]:
    """squeue printing ``listing`` (exit ``rc``) and scancel recording its ids."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "squeue").write_text(
        f"#!/bin/bash\nprintf '%s' {shlex.quote(listing)}\n"
        + (
            "echo 'slurm_load_jobs error: Socket timed out on send/recv operation' >&2\n"
            if rc
            else ""
        )
        + f"exit {rc}\n"
    )
    (bin_dir / "scancel").write_text(f'#!/bin/bash\necho "$*" >> {tmp_path}/scancel.log\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_cancel_by_name_spares_what_it_must_and_counts_its_calls(tmp_path):
    """The cancel script cancels the ids given and every job named ``lz-RUN-PREFIX...``
    (not another run's, not the ``keep`` ones); its squeue and scancel are counted; when
    squeue fails, the given ids are still cancelled and its status is 75."""
    from lazyslurm.backends.slurm.render import cancel_script

    listing = (
        "101 lz-r1-aj0-f\n102 lz-r1-aj1-g\n103 lz-r2-aj0-f\n104 other\n105 lz-r1-aj0_3_aj0-h\n"
    )
    env = fake_squeue(tmp_path, listing)
    calls = tmp_path / "calls"
    script = cancel_script("r1", ["99"], calls_file=str(calls), keep=["102"])
    res = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sorted((tmp_path / "scancel.log").read_text().split()) == ["101", "105", "99"]
    assert (
        "LZ-CALLS squeue 1 scancel 1" in res.stdout and calls.read_text() == "squeue 1 scancel 1\n"
    )
    sub = cancel_script("r1", prefix="aj0_3_")  # a subgraph's own jobs only
    (tmp_path / "scancel.log").unlink()
    subprocess.run(["bash", "-c", sub], env=env, check=True, capture_output=True)
    assert (tmp_path / "scancel.log").read_text().split() == ["105"]
    (tmp_path / "down").mkdir()
    down = fake_squeue(tmp_path / "down", "", rc=1)  # slurmctld did not answer
    res = subprocess.run(
        ["bash", "-c", cancel_script("r1", ["99"])], env=down, capture_output=True, text=True
    )
    assert res.returncode == 75 and "Socket timed out" in res.stderr
    assert (tmp_path / "down" / "scancel.log").read_text().split() == ["99"]
