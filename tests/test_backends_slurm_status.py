"""Status parsing of the Slurm backend against output recorded from real Slurm 22.05.

``tests/data/slurm_status/`` holds what the backend's own status commands printed on the
test clusters (recorded by ``tests/data/record_slurm_status.sh``): ``acct_*`` is
``sacct -X -n -P -j IDS -o JobID,State,ExitCode`` on the cluster with slurmdbd,
``noacct_*`` is ``squeue -h -t all -j IDS -o '%i|%T|%r'`` on the one without; ``*.ids``
are the Slurm job ids queried. Scenarios: an array held then throttled, elements that exit
3, dependents of a failure with and without ``--kill-on-invalid-dep``, an element-wise
(aftercorr) dependent, ``scancel`` of a throttled array, a plain job, and all of them in
one query (as one poll of a run asks).
"""

from __future__ import annotations

import shlex
import subprocess
import time
from pathlib import Path

import pytest
from slurm_standin import SlurmStandIn

from lazyslurm.backends.base import CANCELLED, FAILED, PENDING, RUNNING, RunHandle
from lazyslurm.backends.slurm import backend as slurm_backend
from lazyslurm.backends.slurm import status
from lazyslurm.backends.slurm.facts import parse_cluster_facts
from lazyslurm.backends.slurm.status import (
    Row,
    Watch,
    element_state,
    listing,
    parse_array_ids,
    parse_status,
)
from lazyslurm.planning import rules
from lazyslurm.planning.planner import ArrayJob

DATA = Path(__file__).parent / "data" / "slurm_status"


def recorded(name: str) -> tuple[str, list[str]]:
    """The recorded status text of a scenario and the job ids it queried."""
    ids = (DATA / f"{name}.ids").read_text().strip().split(",")
    return (DATA / f"{name}.txt").read_text(), ids


def element_states(name: str, sizes: list[int]) -> list[list[str]]:
    """What the backend makes of each element of the recorded jobs, with no result or
    error file in the store (Slurm's word alone)."""
    text, ids = recorded(name)
    return states_from(text, ids, sizes, squeue=name.startswith("noacct"))


def states_from(text: str, ids: list[str], sizes: list[int], squeue: bool) -> list[list[str]]:
    rows = parse_status(text, squeue=squeue)
    now = 0.0
    watch = Watch()
    out = []
    for n, (job_id, size) in enumerate(zip(ids, sizes, strict=True)):
        aj = ArrayJob(f"aj{n}", "t", tuple(f"k{n}-{i}" for i in range(size)))
        out.append(
            [
                element_state(rows.get((job_id, i)), False, job_id, i, aj, watch, now)[0]
                for i in range(size)
            ]
        )
    return out


BOTH = pytest.mark.parametrize("cluster", ["acct", "noacct"])


# --------------------------------------------------------------------------- parse_status


@BOTH
def test_recorded_end_states_of_an_array(cluster):
    """Elements that exit 3 are FAILED (sacct: exit code 3:0), the others COMPLETED."""
    text, (job,) = recorded(f"{cluster}_mixed")
    rows = parse_status(text, squeue=cluster == "noacct")
    assert [rows[(job, i)].state for i in range(4)] == ["COMPLETED", "FAILED"] * 2
    if cluster == "acct":
        assert [rows[(job, i)].exit_code for i in range(4)] == ["0:0", "3:0"] * 2
    else:
        assert rows[(job, 1)].reason == "NonZeroExitCode" and rows[(job, 0)].reason in ("None", "")
    assert element_states(f"{cluster}_mixed", [4]) == [[RUNNING, FAILED, RUNNING, FAILED]]


def test_sacct_knows_nothing_of_a_held_array():
    """A held array has no sacct row yet: its elements are PENDING (for a grace period)."""
    text, _ = recorded("acct_held")
    assert parse_status(text, squeue=False) == {}
    assert element_states("acct_held", [4]) == [[PENDING] * 4]


def test_squeue_shows_a_held_array_collapsed():
    """squeue prints a held throttled array as one row ``ID_[0-3%2]`` with JobHeldUser."""
    text, (job,) = recorded("noacct_held")
    rows = parse_status(text, squeue=True)
    assert sorted(rows) == [(job, i) for i in range(4)]
    assert {r.state for r in rows.values()} == {"PENDING"}
    assert {r.reason for r in rows.values()} == {"JobHeldUser"}


@BOTH
def test_a_throttled_array_while_it_runs(cluster):
    """Throttle 2: squeue shows two RUNNING and the rest PENDING (JobArrayTaskLimit);
    sacct, lagging, still shows the whole array as one PENDING row."""
    text, (job,) = recorded(f"{cluster}_throttled_running")
    rows = parse_status(text, squeue=cluster == "noacct")
    assert sorted(rows) == [(job, i) for i in range(4)]
    if cluster == "noacct":
        assert [rows[(job, i)].state for i in range(4)] == ["RUNNING"] * 2 + ["PENDING"] * 2
        assert rows[(job, 3)].reason == "JobArrayTaskLimit"
        assert element_states("noacct_throttled_running", [4]) == [[RUNNING] * 2 + [PENDING] * 2]
    else:
        assert {r.state for r in rows.values()} == {"PENDING"}


def test_sacct_lags_behind_finished_elements():
    """Seconds after the end sacct may still list an element RUNNING and omit another:
    the omitted one is PENDING (unlisted grace), never a failure at once."""
    text, (job,) = recorded("acct_completed")
    rows = parse_status(text, squeue=False)
    assert (job, 2) not in rows and rows[(job, 3)].state == "RUNNING"
    assert element_states("acct_completed", [4]) == [[RUNNING, RUNNING, PENDING, RUNNING]]


@BOTH
def test_scancel_of_a_throttled_array(cluster):
    """scancel: sacct says ``CANCELLED by 0`` for the whole array in one row; squeue lists
    the running element and the pending rest. Every element is CANCELLED."""
    text, (job,) = recorded(f"{cluster}_scancelled")
    rows = parse_status(text, squeue=cluster == "noacct")
    assert sorted(rows) == [(job, i) for i in range(3)]
    assert {r.state for r in rows.values()} == {"CANCELLED"}
    assert element_states(f"{cluster}_scancelled", [3]) == [[CANCELLED] * 3]


def test_a_plain_job_is_keyed_without_an_index():
    """A job that is not an array is keyed (id, None), in both formats."""
    for cluster in ("acct", "noacct"):
        text, (job,) = recorded(f"{cluster}_single")
        assert parse_status(text, squeue=cluster == "noacct") == {
            (job, None): Row(
                "COMPLETED", **({"exit_code": "0:0"} if cluster == "acct" else {"reason": ""})
            )
        }


@BOTH
def test_one_query_for_a_whole_run_keeps_every_job_apart(cluster):
    """One status query over nine jobs parses into each job's own elements."""
    text, ids = recorded(f"{cluster}_run")
    rows = parse_status(text, squeue=cluster == "noacct")
    sizes = dict(zip(ids, [4, 4, 2, 3, 3, 3, 3, 3, None], strict=True))
    for job, size in sizes.items():
        mine = sorted(i for (j, i) in rows if j == job)
        if size is None:
            assert mine == [None]
        elif cluster == "acct" and job == ids[0]:  # the lagging one: element 2 unlisted
            assert mine == [0, 1, 3]
        else:
            assert mine == list(range(size)), job


def test_parse_status_skips_steps_blank_and_short_lines():
    """Step rows (``ID.batch``), blank and short lines are not elements."""
    text = "7_0|COMPLETED|0:0\n7_0.batch|COMPLETED|0:0\n\nsacct: warning\n|X|0:0\n"
    assert list(parse_status(text, squeue=False)) == [("7", 0)]


# --------------------------------------------------------------------------- dependencies


@BOTH
def test_dependents_of_a_failure_killed_and_explained(cluster):
    """With --kill-on-invalid-dep the dependents of a failed array end CANCELLED, and
    rules.causes traces each to the failure."""
    states = element_states(f"{cluster}_dependency_killed", [2, 3])
    assert states == [[FAILED, FAILED], [CANCELLED] * 3]
    a = ArrayJob("aj0", "a", ("a0", "a1"))
    b = ArrayJob("aj1", "b", ("b0", "b1", "b2"), dependencies=((rules.AFTEROK, "aj0"),))
    assert rules.causes(rules.Edges([a, b]), states) == {(1, i): (0, 0) for i in range(3)}


@BOTH
def test_dependents_of_a_failure_without_kill_on_invalid_dep(cluster):
    """Without --kill-on-invalid-dep dependents stay PENDING forever: squeue's reason
    DependencyNeverSatisfied makes them CANCELLED; sacct cannot tell (hence the flag)."""
    text, (_, dep) = recorded(f"{cluster}_dependency_never_satisfied")
    rows = parse_status(text, squeue=cluster == "noacct")
    assert {rows[(dep, i)].state for i in range(3)} == {"PENDING"}
    expected = CANCELLED if cluster == "noacct" else PENDING
    states = element_states(f"{cluster}_dependency_never_satisfied", [2, 3])
    assert states == [[FAILED, FAILED], [expected] * 3]


@BOTH
def test_an_elementwise_dependent_loses_only_its_element(cluster):
    """aftercorr: element 1 of the upstream fails, only element 1 downstream is cancelled,
    and rules.causes points it at upstream element 1."""
    states = element_states(f"{cluster}_aftercorr", [3, 3])
    assert states == [[RUNNING, FAILED, RUNNING], [RUNNING, CANCELLED, RUNNING]]
    a = ArrayJob("aj0", "a", ("a0", "a1", "a2"))
    b = ArrayJob("aj1", "b", ("b0", "b1", "b2"), dependencies=((rules.AFTERCORR, "aj0"),))
    assert rules.causes(rules.Edges([a, b]), states) == {(1, 1): (0, 1)}


# --------------------------------------------------------------------------- _element_state


def state_of(row: Row | None, has_error: bool = False, now: float = 0.0, watch=None, **kw) -> tuple:
    aj = ArrayJob("aj0", "t", ("k",))
    return element_state(row, has_error, "42", 0, aj, watch or Watch(), now, **kw)


def test_element_state_maps_active_states():
    """Slurm's active states become PENDING or RUNNING; REQUEUED waits again."""
    for slurm, ours in (
        ("PENDING", PENDING),
        ("REQUEUED", PENDING),
        ("RUNNING", RUNNING),
        ("COMPLETING", RUNNING),
        ("SUSPENDED", RUNNING),
    ):
        assert state_of(Row(slurm)) == (ours, None)


def test_element_state_of_end_states_carries_slurm_word_and_exit_code():
    """TIMEOUT, OUT_OF_MEMORY, NODE_FAIL and unknown words are FAILED with Slurm's word;
    CANCELLED is CANCELLED."""
    for slurm in ("TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "SOMETHING_NEW"):
        state, failure = state_of(Row(slurm, exit_code="0:15"))
        assert state == FAILED
        assert (failure.state, failure.exit_code, failure.job_id) == (slurm, "0:15", "42")
    state, failure = state_of(Row("CANCELLED", exit_code="0:15"))
    assert state == CANCELLED and failure.state == "CANCELLED"


def test_completed_without_a_result_waits_then_fails():
    """COMPLETED with no result file is RUNNING for a grace period (file system lag), then
    FAILED 'completed without a result file'; with an error file it is FAILED at once."""
    watch = Watch()
    assert state_of(Row("COMPLETED", "0:0"), now=100.0, watch=watch) == (RUNNING, None)
    state, failure = state_of(Row("COMPLETED", "0:0"), now=200.0, watch=watch)
    assert state == FAILED and failure.reason == "completed without a result file"
    state, failure = state_of(Row("COMPLETED", "1:0"), has_error=True)
    assert (state, failure.exit_code) == (FAILED, "1:0")


def test_unlisted_element_waits_then_fails_unless_it_left_an_error():
    """An element Slurm does not list is PENDING for a grace period, then asked of the
    other source, then (that one silent too) FAILED UNKNOWN; one with an error file is
    FAILED at once."""
    watch = Watch()
    assert state_of(None, now=100.0, watch=watch) == (PENDING, None)
    assert state_of(None, now=1000.0, watch=watch) == (PENDING, None)
    assert watch.suspects == {"42_0"}
    state, failure = state_of(None, now=1001.0, watch=watch, cross_checked=True)
    assert state == FAILED and failure.state == "UNKNOWN" and "nor" in failure.reason
    assert state_of(None, has_error=True)[0] == FAILED


def test_a_listing_resets_the_unlisted_clock():
    """Listed, then missing for one poll, then listed again (sacct between an array's
    pending row and its element's own row): never a failure, however long the run has
    gone on. The grace counts from the last listing (it counted from the first poll:
    issue 20, healthy sweeps failed after 62 s on a busy queue)."""
    watch = Watch()
    grace = status.UNLISTED_GRACE_S
    assert state_of(None, now=0.0, watch=watch) == (PENDING, None)  # held: no row yet
    assert state_of(Row("PENDING"), now=grace - 0.3, watch=watch) == (PENDING, None)
    assert state_of(None, now=grace + 2.7, watch=watch) == (PENDING, None)  # the gap
    assert watch.suspects == set()  # 3 s of silence: nothing to ask anyone
    assert state_of(Row("RUNNING"), now=grace + 5, watch=watch) == (RUNNING, None)
    assert state_of(None, now=3 * grace, watch=watch) == (PENDING, None)  # another gap
    assert state_of(None, now=4 * grace + 1, watch=watch) == (PENDING, None)  # grace out
    assert watch.suspects == {"42_0"}  # asked of the other source by the next poll


def test_the_other_source_is_asked_before_unknown():
    """Past the grace, the element is UNKNOWN only once a poll asked the other source
    about it (its Slurm id, packed elements by the Slurm element that runs them) and that
    source did not list it either; if it does, the clock starts again."""
    text = "9_[1-3]|PENDING|0:0|Priority\n"  # sacct lists elements 1-3, not 0 nor 4-5
    aj = ArrayJob("aj0", "t", tuple(f"k{i}" for i in range(6)), pack=2)
    handle = RunHandle("r", (aj,), {"aj0": "9"})
    backend = slurm_backend.SlurmBackend.__new__(slurm_backend.SlurmBackend)
    backend.site_requeues = False  # a site with JobRequeue=0 (no probe here)
    watch = Watch()
    grace = status.UNLISTED_GRACE_S
    rows = parse_status(text, squeue=False)
    clock = iter([0.0, grace + 1, grace + 2, grace + 3, 2 * grace + 4, 2 * grace + 5])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(slurm_backend.time, "monotonic", lambda: next(clock))

        def poll(rows=rows, asked=frozenset()):
            return backend._snapshot(handle, rows, set(), set(), watch, asked=asked)

        assert poll().states["aj0"] == [PENDING] * 6
        assert poll().states["aj0"] == [PENDING] * 6  # grace out: suspects, not failures
        assert watch.suspects == {"9_0"}  # elements 0 and 1 run in Slurm element 0
        # the other source (squeue) lists Slurm element 0: its clock starts again
        answer = "\n9_0|RUNNING|None\n-RC=0"
        cross, asked = status.cross_checked(rows, answer, {"9_0"}, "squeue")
        watch.suspects.clear()
        assert poll(cross, asked).states["aj0"] == [RUNNING] * 2 + [PENDING] * 4
        assert poll().states["aj0"] == [PENDING] * 6  # silent again: a new grace
        assert poll().states["aj0"] == [PENDING] * 6
        assert watch.suspects == {"9_0"}
        watch.suspects.clear()
        late = poll(rows, {"9_0"})  # asked, and squeue has no record of it either
    assert late.states["aj0"] == [FAILED] * 2 + [PENDING] * 4
    assert late.failures[("aj0", 0)].state == "UNKNOWN"


def test_pending_never_satisfied_is_cancelled():
    """squeue's PENDING with reason DependencyNeverSatisfied is a cancelled element."""
    state, failure = state_of(Row("PENDING", reason="DependencyNeverSatisfied"))
    assert state == CANCELLED and failure.reason == "DependencyNeverSatisfied"
    assert state_of(Row("PENDING", reason="Dependency")) == (PENDING, None)


# --------------------------------------------------------------------------- ids, partitions


def test_parse_array_ids_of_recorded_forms():
    """Every id form the recordings hold: element, range, range with throttle, plain job."""
    assert parse_array_ids("1002502_[0-2%1]") == ("1002502", [0, 1, 2])
    assert parse_array_ids("1433_[1-2%1]") == ("1433", [1, 2])
    assert parse_array_ids("1002490_3") == ("1002490", [3])
    assert parse_array_ids("1434") == ("1434", None)
    assert parse_array_ids("5_[0,2-3,7]") == ("5", [0, 2, 3, 7])


def test_parse_partitions_of_recorded_scontrol_output():
    """The recorded partitions: debug is the default, short allows 5 minutes."""
    parts = parse_cluster_facts((DATA / "acct_partitions.txt").read_text()).partitions
    assert sorted(parts) == ["debug", "other", "short"]
    assert parts["debug"].default and parts["debug"].max_time_min is None
    assert not parts["short"].default and parts["short"].max_time_min == 5
    empty = parse_cluster_facts("PartitionName=x Default=YES\nLZ-PART Default=YES\n")
    assert empty.partitions == {}


def test_recorded_config_lines_carry_what_the_probe_reads():
    """The probe's two config lines: MaxArraySize, and accounting on one cluster only."""
    acct = (DATA / "acct_config.txt").read_text()
    noacct = (DATA / "noacct_config.txt").read_text()
    assert "MaxArraySize            = 100" in acct and "MaxArraySize" in noacct
    assert "accounting_storage/slurmdbd" in acct and "accounting_storage/none" in noacct


# --------------------------------------------------------------------------- _listing


def test_listing_of_real_ls_output(tmp_path):
    """_listing reads ``ls -1 -f results errors`` as run on a real run directory: keys by
    directory, without '.', '..', '.keep' or temporary files; pack files by name and
    cancelled records (an input failed) apart."""
    for sub, names in (
        ("results", ["f-1.pkl", "g-2.pkl", ".f-3.pkl.abc.tmp", ".keep", "aj0_3.pack"]),
        ("errors", ["h-4.pkl", ".keep", "k-5.cancelled"]),
    ):
        (tmp_path / sub).mkdir()
        for name in names:
            (tmp_path / sub / name).write_bytes(b"")
    out = subprocess.run(
        ["bash", "-c", "echo LZ-FILES && ls -1 -f results errors"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert listing(out.split("LZ-FILES", 1)[1]) == ({"f-1", "g-2", "aj0_3"}, {"h-4"}, {"k-5"})


def test_listing_when_errors_directory_is_missing(tmp_path):
    """With one directory ls prints no header: every key is a result."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a-1.pkl").write_bytes(b"")
    out = subprocess.run(
        ["ls", "-1", "-f", "results"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    assert listing(out) == ({"a-1"}, set(), set())


# --------------------------------------------------------------------------- the stand-in

SCENARIOS = {  # recorded scenario -> sbatch lines for the stand-in, sizes of its jobs
    "mixed": (["--array=0-3 -- $odd_fails"], [4]),
    "dependency_killed": (
        [
            "--array=0-1 -- $fails",
            "--array=0-2 --kill-on-invalid-dep=yes --dependency=afterok:$j0 -- $ok",
        ],
        [2, 3],
    ),
    "dependency_never_satisfied": (
        ["--array=0-1 -- $fails", "--array=0-2 --dependency=afterok:$j0 -- $ok"],
        [2, 3],
    ),
    "aftercorr": (
        [
            "--array=0-2 -- $odd_fails",
            "--array=0-2 --kill-on-invalid-dep=yes --dependency=aftercorr:$j0 -- $ok",
        ],
        [3, 3],
    ),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
@BOTH
def test_the_standin_answers_as_recorded_slurm(tmp_path, cluster, scenario):
    """tests/slurm_standin.py, given the same jobs, reports the states the recorded real
    Slurm output gives (so the contract suite's Slurm leg sees Slurm's words)."""
    lines, sizes = SCENARIOS[scenario]
    standin = SlurmStandIn(tmp_path / "s", accounting=cluster == "acct")
    scripts = {
        "ok": "exit 0",
        "fails": "exit 3",
        "odd_fails": "exit $((SLURM_ARRAY_TASK_ID % 2 * 3))",
    }
    setup = [
        f"{name}={shlex.quote(str(tmp_path / name))}.sh; echo {body!r} > ${name}"
        for name, body in scripts.items()
    ]
    submit = [
        f"j{n}=$(sbatch --parsable --output=/dev/null --error=/dev/null {line})"
        for n, line in enumerate(lines)
    ]
    ids_line = "echo " + ",".join(f"$j{n}" for n in range(len(lines)))
    try:
        res = standin.run("\n".join([*setup, *submit, ids_line]))
        ids = res.stdout.split()[0].split(",")
        status = (
            f"sacct -X -n -P -j {','.join(ids)} -o JobID,State,ExitCode"
            if cluster == "acct"
            else f"squeue -h -t all -j {','.join(ids)} -o '%i|%T|%r'"
        )
        deadline = 100
        while True:
            text = standin.run(status).stdout
            states = states_from(text, ids, sizes, squeue=cluster == "noacct")
            if (
                all(
                    s != PENDING or scenario == "dependency_never_satisfied"
                    for row in states
                    for s in row
                )
                and "RUNNING|" not in text
            ):
                break
            deadline -= 1
            assert deadline, text
            time.sleep(0.05)
    finally:
        standin.close()
    assert states == element_states(f"{cluster}_{scenario}", sizes)


def test_the_environment_note_in_words():
    """The run's environment file, as the polls show it."""
    from lazyslurm.backends.packaging import environment_note

    assert environment_note("creating 100 7", 130) == (
        "creating the environment (once): 7 wheels, 30 s"
    )
    assert environment_note("created 100 160 1", 999) == (
        "created the environment (once): 1 wheel in 60 s"
    )
    assert environment_note("garbage", 1) == "" and environment_note("created 1 x 7", 1) == ""
