"""The test site (tests/cluster/site.sh): a real many-node Slurm with preemption, per-user
caps and faults on demand, for tests marked ``site`` (see tests/cluster/README.md).

Fixtures (imported into tests/conftest.py):

- ``site_env`` (session): the ``LAZYSLURM_TEST_SITE_*`` variables. start.sh brings the site
  up with the other clusters (as root; else the environment a root run left is used); if
  the site is not up, site.sh is run once, on demand. Skips when neither works.
- ``site``: a :class:`Site` for one test. Every fault a test caused is undone after it
  (a killed node is started again, a stopped controller resumed or restarted, helper jobs
  cancelled), whatever the test's outcome.

What the site offers (measured on Slurm 22.05.8, 2 shared cores):

==========================  ==========================================================
nodes                       ``site1`` .. ``site4`` (one ``slurmd -N`` each, 8 CPUs),
                            ``SLURMD_NODENAME`` differs, ``hostname`` is this host's
partitions                  ``main`` (default; never preempted), ``low`` (preempted by
                            ``high``: REQUEUE), ``lowcancel`` (preempted: CANCEL),
                            ``high`` (PriorityTier 10)
caps                        QOS ``capped`` (default QOS of root and lsuser):
                            MaxSubmitJobsPerUser=20, MaxJobsPerUser=10 (sbatch says
                            ``QOSMaxSubmitJobPerUserLimit``); QOS ``normal`` is uncapped;
                            account ``capped`` (with ``qos="normal"``): the same caps as an
                            association (``AssocMaxSubmitJobLimit``)
requeue                     ``JobRequeue=1`` (Slurm's default); :meth:`Site.env` with
                            ``requeue=False`` behaves as ``JobRequeue=0``
                            (``SBATCH_NO_REQUEUE=1``: every job ``--no-requeue`` unless it
                            asks ``--requeue``); a requeued job may start again ~10 s later
                            (``cred_expire=10``; Slurm's default is 120 s)
node failure                :meth:`Site.kill_node`: not responding after ~15 s, DOWN after
                            ~30 s (``SlurmdTimeout=10``); its jobs end ``NODE_FAIL`` or are
                            requeued
controller faults           :meth:`Site.controller_fault`: ``"stall"`` (SIGSTOP: clients
                            fail ``Socket timed out on send/recv operation`` after 10 s, and
                            what they sent is applied once it resumes) or ``"down"``
                            (SIGTERM: ``Unable to contact slurm controller (connect
                            failure)`` after ~9 s; ``scontrol release/update`` say
                            ``Unexpected message received``)
==========================  ==========================================================
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from fixtures_cluster import REPO, start_cluster, state_dir

SITE_SH = REPO / "tests" / "cluster" / "site.sh"
UP = ("idle", "mixed", "allocated", "completing")


def _site_env_file() -> Path:
    return state_dir() / "site" / "env"


def _read_env(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep:
            out[name.strip()] = value.strip()
    return out


@functools.cache
def start_site() -> dict[str, str]:
    """The site's ``LAZYSLURM_TEST_SITE_*`` variables, starting it if need be (cached).
    Calls :func:`pytest.skip` with the reason when it cannot be had."""
    env = start_cluster()  # start.sh (as root) brings the site up with the rest
    if "LAZYSLURM_TEST_SITE_CONF" in env and _up(env["LAZYSLURM_TEST_SITE_CONF"]):
        return {k: v for k, v in env.items() if k.startswith("LAZYSLURM_TEST_SITE_")}
    if os.geteuid() != 0:
        if _site_env_file().is_file():
            return _read_env(_site_env_file())
        pytest.skip("the test site is not running; only root can start it (tests/cluster/site.sh)")
    proc = subprocess.run(
        ["bash", str(SITE_SH)], capture_output=True, text=True, timeout=300, check=False
    )
    if proc.returncode != 0 or not _site_env_file().is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
        pytest.skip(f"the test site could not start (site.sh exit {proc.returncode}):\n{tail}")
    return _read_env(_site_env_file())


def _up(conf: str) -> bool:
    """slurmctld of the site answers."""
    try:
        res = subprocess.run(
            ["scontrol", "ping"],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "UP" in res.stdout


class Site:
    """The running test site, for one test: Slurm commands against it, a ``Cluster`` on
    it, and faults on demand (every one undone by :meth:`undo`, which the ``site``
    fixture calls after the test)."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.conf = env["LAZYSLURM_TEST_SITE_CONF"]
        self.nodes = tuple(env["LAZYSLURM_TEST_SITE_NODES"].split(","))
        self.max_submit = int(env.get("LAZYSLURM_TEST_SITE_MAX_SUBMIT", "20"))
        self.max_jobs = int(env.get("LAZYSLURM_TEST_SITE_MAX_JOBS", "10"))
        self.dir = Path(self.conf).parent.parent  # $STATE/site
        self._killed: set[str] = set()
        self._controller: str | None = None  # "stall" or "down" while a fault is on
        self._jobs: list[str] = []  # helper jobs (preemptors) to cancel afterwards
        self._timers: list[threading.Timer] = []
        self._lock = threading.Lock()

    # -- using it
    def env(self, *, requeue: bool = True, **more: str) -> dict[str, str]:
        """Environment for Slurm commands on the site (a ``Cluster``'s ``env=``).
        ``requeue=False``: every job ``--no-requeue`` unless it asks ``--requeue``, as on
        a site with ``JobRequeue=0``."""
        out = {"SLURM_CONF": self.conf, **more}
        if not requeue:
            out["SBATCH_NO_REQUEUE"] = "1"
        return out

    def slurm(
        self, *argv: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run a Slurm command on the site (as this process's user)."""
        return subprocess.run(
            list(argv),
            env={**os.environ, "SLURM_CONF": self.conf},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def cluster(self, workdir: Any, *, requeue: bool = True, **options: Any) -> Any:
        """A ``Cluster("slurm")`` on the site, run directories under ``workdir``."""
        from lazyslurm import Cluster

        env = {**self.env(requeue=requeue), **options.pop("env", {})}
        options.setdefault("poll_max_s", 1.0)
        return Cluster("slurm", workdir=str(workdir), env=env, **options)

    def node_state(self, node: str) -> str:
        """sinfo's state of ``node`` (``idle``, ``allocated*``, ``down*``, ...)."""
        return self.slurm("sinfo", "-h", "-n", node, "-o", "%T", check=False).stdout.strip()

    def wait_node(self, node: str, states: Sequence[str], timeout: float = 90) -> str:
        """Wait until ``node``'s state starts with one of ``states``; the state."""
        deadline = time.monotonic() + timeout
        st = ""
        while time.monotonic() < deadline:
            st = self.node_state(node)
            if st.startswith(tuple(states)):
                return st
            time.sleep(0.5)
        msg = f"node {node} still {st!r} after {timeout} s (wanted {', '.join(states)})"
        raise AssertionError(msg)

    def job_state(self, job_id: str) -> tuple[str, str]:
        """``(state, reason)`` of a job from squeue (``("", "")`` once forgotten)."""
        out = self.slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T|%r", check=False)
        state, _, reason = out.stdout.strip().partition("|")
        return state, reason

    def run_jobs(self, run_id: str) -> list[tuple[str, str, str, str]]:
        """Every job Slurm still knows named after run ``run_id`` (``lz-RUN-...``, also
        subgraphs and what failed tries left): ``(job id, state, reason, nodes)``, one per
        array element or collapsed pending row."""
        out = self.slurm("squeue", "-h", "-t", "all", "-o", "%i|%T|%r|%N|%j", check=False)
        rows = []
        for line in out.stdout.splitlines():
            job, state, reason, nodes, name = (line.split("|", 4) + [""] * 5)[:5]
            if name.startswith(f"lz-{run_id}-"):
                rows.append((job, state, reason, nodes))
        return rows

    def node_of(self, job_id: str) -> str:
        """The node list of a job or element (``""`` while it has none)."""
        out = self.slurm("squeue", "-h", "-t", "all", "-j", job_id, "-o", "%N", check=False)
        return out.stdout.strip()

    # -- faults: nodes
    def _pid(self, path: Path, words: str) -> int | None:
        """The pid in ``path`` if that process lives and its command line has ``words``."""
        try:
            pid = int(path.read_text().strip())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            return None
        return pid if words in cmd else None

    def kill_node(self, node: str, *, jobs: bool = True) -> None:
        """Kill ``node`` as a crash would: its ``slurmd`` (SIGKILL, by its pid file) and,
        with ``jobs``, every process of its jobs (their ``slurmstepd``, found by the
        sockets in the node's spool directory, and their descendants): nothing it ran
        writes anything more. Slurm notices after ``SlurmdTimeout`` (see the module
        docstring). :meth:`restore_node` (or the fixture) starts it again."""
        assert node in self.nodes, f"{node} is not a node of the site ({self.nodes})"
        pid = self._pid(self.dir / "run" / f"slurmd-{node}.pid", f"-N {node}")
        assert pid is not None, f"slurmd of {node} is not running"
        self._killed.add(node)
        doomed = [pid]
        if jobs:
            spool = f"{self.dir}/spool/{node}/"
            out = subprocess.run(["ss", "-xlpn"], capture_output=True, text=True, check=False)
            stepds = {
                int(m)
                for line in out.stdout.splitlines()
                if spool in line
                for m in re.findall(r"pid=(\d+)", line)
            }
            doomed += _descendants(stepds)
        for p in doomed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)

    def restore_node(self, node: str, timeout: float = 60) -> None:
        """Start ``node``'s slurmd again and wait until Slurm uses it (``ReturnToService=2``
        brings a DOWN node back when it registers; a drain is resumed)."""
        if self._pid(self.dir / "run" / f"slurmd-{node}.pid", f"-N {node}") is None:
            subprocess.run(
                ["slurmd", "-f", self.conf, "-N", node],
                env={**os.environ, "SLURM_CONF": self.conf},
                check=True,
                capture_output=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.node_state(node)
            if st in UP:
                break
            if "drain" in st or st in ("down", "fail"):
                self.slurm("scontrol", "update", f"nodename={node}", "state=resume", check=False)
            time.sleep(0.3)
        else:
            msg = f"node {node} did not come back: {self.node_state(node)!r}"
            raise AssertionError(msg)
        self._killed.discard(node)

    # -- faults: the controller
    def _ctld(self) -> int | None:
        return self._pid(self.dir / "run" / "slurmctld.pid", f"slurmctld -f {self.conf}")

    def controller_fault(self, kind: str, seconds: float | None = None) -> None:
        """Make slurmctld ``"stall"`` (SIGSTOP: it accepts connections and answers nothing;
        what clients sent is applied when it resumes) or go ``"down"`` (SIGTERM: every
        client gets "connection refused"). With ``seconds``, it comes back by itself that
        much later (a timer thread: the test's own thread may be inside ``compute()``);
        else at :meth:`controller_back` or after the test."""
        assert kind in ("stall", "down"), kind
        assert self._controller is None, "a controller fault is on already"
        pid = self._ctld()
        assert pid is not None, "slurmctld of the site is not running"
        self._controller = kind
        if kind == "stall":
            os.kill(pid, signal.SIGSTOP)
        else:
            os.kill(pid, signal.SIGTERM)
            _wait_gone(pid)
        if seconds is not None:
            timer = threading.Timer(seconds, self.controller_back)
            timer.daemon = True
            self._timers.append(timer)
            timer.start()

    def controller_back(self) -> None:
        """Undo :meth:`controller_fault`: SIGCONT, or start slurmctld again (its saved
        state keeps every job) and wait until it answers."""
        with self._lock:
            kind, self._controller = self._controller, None
            if kind == "stall":
                pid = self._ctld()
                if pid is not None:
                    os.kill(pid, signal.SIGCONT)
            elif kind == "down":
                if self._ctld() is None:
                    subprocess.run(
                        ["slurmctld", "-f", self.conf],
                        env={**os.environ, "SLURM_CONF": self.conf},
                        check=True,
                        capture_output=True,
                    )
                deadline = time.monotonic() + 60
                while not _up(self.conf) and time.monotonic() < deadline:
                    time.sleep(0.2)

    @contextlib.contextmanager
    def controller_away(self, kind: str) -> Iterator[None]:
        """``with site.controller_away("down"): ...``: the fault for the block's length."""
        self.controller_fault(kind)
        try:
            yield
        finally:
            self.controller_back()

    # -- preemption
    def preempt(self, node: str, *, seconds: float = 5, partition: str = "high") -> str:
        """Submit a job to ``partition`` (``high``) that needs all of ``node``: it preempts
        the ``low`` (REQUEUE) and ``lowcancel`` (CANCEL) jobs there. Its job id."""
        out = self.slurm(
            "sbatch", "--parsable", f"--partition={partition}", f"--nodelist={node}",
            "--exclusive", "--qos=normal", "--job-name=lz-site-preemptor",
            "--output=/dev/null", f"--wrap=sleep {seconds:g}",
        )  # fmt: skip
        job = out.stdout.strip().split(";")[0]
        self._jobs.append(job)
        return job

    # -- after the test
    def undo(self) -> None:
        """Undo every fault of the test: controller back, killed nodes restored, helper
        jobs cancelled."""
        for timer in self._timers:
            timer.cancel()
        self.controller_back()
        for node in sorted(self._killed):
            self.restore_node(node)
        if self._jobs:
            self.slurm("scancel", *self._jobs, check=False)


def _descendants(pids: set[int]) -> list[int]:
    """``pids`` and every process below them (from /proc: parents first)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], sorted(pids)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _wait_gone(pid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.05)


@pytest.fixture(scope="session")
def site_env() -> dict[str, str]:
    """``LAZYSLURM_TEST_SITE_*`` variables of the running test site (tests/cluster/site.sh)."""
    return dict(start_site())


@pytest.fixture
def site(site_env: dict[str, str]) -> Iterator[Site]:
    """The test site, with every fault the test causes undone after it."""
    s = Site(site_env)
    try:
        yield s
    finally:
        s.undo()
