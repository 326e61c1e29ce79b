"""JobContext: node lists, rank facts from the Slurm environment, injection, keys."""

from __future__ import annotations

import os
import pickle
import stat
from typing import Optional

import pytest

from lazyslurm import Cluster, task
from lazyslurm.context import (
    JobContext,
    expand_hostlist,
    master_port_for,
    tasks_per_node,
)
from lazyslurm.graph.signature import context_parameter
from lazyslurm.planning.planner import make_plan

WHERE = {"run_dir": "/w/runs/r1", "array_job": "aj2", "index": 3, "key": "f-abc"}
TWO_NODES = {
    "SLURM_JOB_ID": "1234",
    "SLURM_ARRAY_JOB_ID": "1230",
    "SLURM_JOB_NODELIST": "gpu[07-08]",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_PROCID": "6",
    "SLURM_LOCALID": "2",
    "SLURM_NODEID": "1",
    "SLURM_NTASKS": "8",
    "SLURM_TASKS_PER_NODE": "4(x2)",
    "SLURM_GPUS_ON_NODE": "4",
}


@pytest.mark.parametrize(
    ("text", "hosts"),
    [
        ("vm", ("vm",)),
        ("n[1-3]", ("n1", "n2", "n3")),
        ("gpu[001-002,010]", ("gpu001", "gpu002", "gpu010")),
        ("a1,b[2-3],c", ("a1", "b2", "b3", "c")),
        ("r[1-2]n[1-2]", ("r1n1", "r1n2", "r2n1", "r2n2")),
        ("", ()),
    ],
)
def test_expand_hostlist_matches_scontrol_show_hostnames(text, hosts):
    """Node lists expand like `scontrol show hostnames`: ranges, padding, lists, products."""
    assert expand_hostlist(text) == hosts


def test_tasks_per_node_expands_repeats():
    """SLURM_TASKS_PER_NODE's "N(xK)" form gives one count per node."""
    assert tasks_per_node("4(x2),3,1") == (4, 4, 3, 1)
    assert tasks_per_node("") == ()


def test_master_port_is_deterministic_per_job_and_in_range():
    """Every rank of a job computes the same port; different jobs get different ones."""
    ports = {master_port_for(str(j)) for j in range(1000, 1100)}
    assert len(ports) == 100 and all(29500 <= p < 49500 for p in ports)
    assert master_port_for(None, "f-1") == master_port_for(None, "f-1")


def test_from_env_reads_one_rank_of_a_two_node_job():
    """A rank's context comes from SLURM_PROCID/LOCALID/NODEID, the node list and GPUs."""
    ctx = JobContext.from_env(TWO_NODES, ranks=True, **WHERE)
    assert (ctx.rank, ctx.local_rank, ctx.node_rank) == (6, 2, 1)
    assert (ctx.world_size, ctx.local_world_size, ctx.num_nodes) == (8, 4, 2)
    assert ctx.hostnames == ("gpu07", "gpu08") and ctx.master_addr == "gpu07"
    assert ctx.master_port == master_port_for("1234") and ctx.gpus_per_node == 4
    assert (ctx.job_id, ctx.array_job_id, ctx.array_task_id) == ("1234", "1230", 3)
    assert ctx.output_path == "/w/runs/r1/results/f-abc.pkl"
    assert ctx.stdout_path == "/w/runs/r1/logs/aj2_3.out"
    assert ctx.stderr_path == "/w/runs/r1/logs/aj2_3.err"
    assert ctx.shared_dir == "/w/runs/r1/shared"


def test_node_name_is_slurms_name_of_this_ranks_node():
    """``node_name`` is ``SLURMD_NODENAME`` (nodes of one host share its hostname), else the
    rank's entry of the node list; a one-process task's is this host's name."""
    ctx = JobContext.from_env({**TWO_NODES, "SLURMD_NODENAME": "site2"}, **WHERE, ranks=True)
    assert ctx.node_name == "site2" and ctx.hostnames == ("gpu07", "gpu08")
    assert JobContext.from_env(TWO_NODES, **WHERE, ranks=True).node_name == "gpu08"
    assert JobContext.local(**WHERE).node_name == JobContext.local(**WHERE).hostnames[0]


def test_torch_distributed_env_has_what_torchrun_sets():
    """torch_distributed_env() gives MASTER_ADDR/PORT, RANK, LOCAL_RANK, WORLD_SIZE, ..."""
    env = JobContext.from_env(TWO_NODES, ranks=True, **WHERE).torch_distributed_env()
    assert env == {
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(master_port_for("1234")),
        "RANK": "6",
        "LOCAL_RANK": "2",
        "WORLD_SIZE": "8",
        "LOCAL_WORLD_SIZE": "4",
        "NODE_RANK": "1",
        "GROUP_RANK": "1",
    }


def test_one_launch_is_rank_zero_of_one_whatever_ntasks_says():
    """Without a launch per rank, the one process is rank 0 of 1."""
    ctx = JobContext.from_env(TWO_NODES, ranks=False, **WHERE)
    assert (ctx.rank, ctx.world_size, ctx.local_world_size) == (0, 1, 1)
    assert ctx.num_nodes == 2 and ctx.job_id == "1234"


def test_master_addr_and_port_already_set_are_kept():
    """MASTER_ADDR/MASTER_PORT set by the user's setup lines win."""
    env = {**TWO_NODES, "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "12345"}
    ctx = JobContext.from_env(env, ranks=True, **WHERE)
    assert (ctx.master_addr, ctx.master_port) == ("10.0.0.1", 12345)


def test_gpu_counts_with_types():
    """GPU counts are read from "N", "TYPE:N" and lists of them."""
    for text, n in (("2", 2), ("a100:4", 4), ("gpu:a100:2,gpu:v100:1", 3)):
        env = {"SLURM_JOB_ID": "1", "SLURM_GPUS_PER_NODE": text}
        assert JobContext.from_env(env, **WHERE).gpus_per_node == n


def test_context_is_read_only_and_pickles():
    """A JobContext cannot be changed and survives pickling (to send it to a subprocess)."""
    ctx = JobContext.local(**WHERE)
    with pytest.raises(AttributeError):
        ctx.rank = 3  # type: ignore[misc]
    again = pickle.loads(pickle.dumps(ctx))
    assert again.as_dict() == ctx.as_dict() and "rank=0/1" in repr(again)


def annotated(x, ctx: JobContext): ...  # a string: this module has future annotations
def annotated_str(x, ctx: JobContext | None = None): ...
def annotated_class(x, ctx): ...


annotated_class.__annotations__ = {"ctx": JobContext}  # as without future annotations


def annotated_optional(x, ctx: Optional[JobContext] = None): ...  # noqa: UP045
def named(x, *, job): ...
def both(job, ctx: JobContext): ...
def neither(x, jobs): ...


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (annotated, ("ctx", 1)),
        (annotated_str, ("ctx", 1)),
        (annotated_class, ("ctx", 1)),
        (annotated_optional, ("ctx", 1)),
        (named, ("job", None)),
        (both, ("ctx", 1)),
        (neither, None),
        (len, None),
    ],
)
def test_context_parameter_by_annotation_or_name(func, expected):
    """The parameter annotated JobContext wins, else one named `job`; position if positional."""
    assert context_parameter(func) == expected


@task
def whoami(x, job: JobContext):
    return x, job.rank, job.world_size, job.job_id, job.shared_dir, job.master_addr


@task
def uses_job(x, job=None):
    return x, job


def test_local_and_sync_backends_inject_one_process_values(cluster):
    """On local and sync, the context is rank 0 of 1, with the run's shared directory."""
    results = whoami.map([1, 2]).compute()
    assert [r[:4] for r in results] == [(1, 0, 1, None), (2, 0, 1, None)]
    shared = results[0][4]
    assert shared.startswith(str(cluster.workdir)) and shared.endswith("/shared")
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o700
    assert results[0][5] == "127.0.0.1"


def test_the_context_is_never_part_of_the_key_or_the_arguments():
    """Keys and shipped arguments hold only what the call passed, not the context."""
    a, b = whoami(1), whoami(1)
    assert a.key == b.key and a.args == (1,) and a.kwargs == {}
    (aj,) = make_plan([a]).array_jobs
    assert list(aj.keys) == [a.key]


def test_a_job_argument_given_by_the_call_is_passed_as_is(tmp_path):
    """A parameter named `job` that the call fills keeps the caller's value."""
    with Cluster("sync", workdir=tmp_path):
        assert uses_job(1, "mine").compute() == (1, "mine")
        assert uses_job(1, job=7).compute() == (1, 7)
        got = uses_job(2).compute()
    assert got[0] == 2 and isinstance(got[1], JobContext)


def refuse(text: str) -> tuple[str, ...]:
    raise ValueError(text)


@pytest.mark.slurm
def test_a_node_list_the_parser_cannot_read_goes_to_scontrol(cluster_env, monkeypatch):
    """Only a node list the pure parser refuses is expanded by `scontrol show hostnames`."""
    monkeypatch.setenv("SLURM_CONF", cluster_env["LAZYSLURM_TEST_SLURM_CONF"])
    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "vm[1-2]"}
    ctx = JobContext.from_env(env, hostnames=refuse, **WHERE)
    assert ctx.hostnames == ("vm1", "vm2")


def test_an_unreadable_node_list_is_kept_whole():
    """A node list neither the parser nor scontrol reads is kept as the one host name."""
    env = {"SLURM_JOB_ID": "5", "SLURM_JOB_NODELIST": "n[a-b]"}
    assert JobContext.from_env(env, **WHERE).hostnames == ("n[a-b]",)


@task(mem="200M", time="00:03:00")
def slurm_whoami(x, job: JobContext):
    mode = stat.S_IMODE(os.stat(job.shared_dir).st_mode)
    return job.as_dict(), mode, os.path.exists(job.stdout_path)


@pytest.mark.slurm
def test_a_one_process_slurm_element_sees_its_own_job(cluster_env, tmp_path):
    """On the real Slurm: the element's job ids, index, host, paths and a 0700 shared dir."""
    conf = cluster_env["LAZYSLURM_TEST_SLURM_CONF"]
    with Cluster("slurm", workdir=tmp_path, env={"SLURM_CONF": conf}, poll_max_s=0.5):
        results = slurm_whoami.map([1, 2]).compute()
    (a, mode_a, out_a), (b, _, _) = results
    assert a["job_id"].isdigit() and a["array_job_id"] == b["array_job_id"]
    assert (a["array_task_id"], b["array_task_id"]) == (0, 1)
    assert (a["rank"], a["world_size"], a["num_nodes"]) == (0, 1, 1)
    assert a["hostnames"] == (a["master_addr"],) and a["master_port"] != b["master_port"]
    assert mode_a == 0o700 and out_a and a["run_dir"].startswith(str(tmp_path))
