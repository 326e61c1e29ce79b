"""A stand-in Slurm for the backend contract suite: ``SlurmStandIn`` is a ``Shell``.

The real :class:`~lazyslurm.backends.slurm.SlurmBackend` runs over it unchanged: every
script it sends (the probe, ``submit.sh``, each poll, ``scancel``) runs in real ``bash``
through a :class:`~lazyslurm.backends.shell.LocalShell`, with stand-in ``sbatch``,
``scontrol``, ``sacct``, ``squeue`` and ``scancel`` first on ``PATH``. Those commands are
this file run as a script; they keep the queue in ``STATE/queue.json`` (under ``flock``).

What they emulate, in the formats recorded from real Slurm 22.05 (tests/data/slurm_status):

- ``sbatch --parsable [--hold] --array=0-N[%K] --dependency=afterok:ID,aftercorr:ID
  --kill-on-invalid-dep=yes --output=... --error=... -- SCRIPT``: prints the id; refuses an
  array over ``MaxArraySize`` or an unknown ``--partition`` as Slurm does;
- ``scontrol show config | partition -o``, ``scontrol release IDS``;
- ``sacct -X -n -P -j IDS -o JobID,State,ExitCode`` (``accounting=True``) or ``squeue -h
  [-t all] [-j IDS] -o FMT`` (``%i %F %j %T %r``): started elements one row each, pending ones
  collapsed as ``ID_[0-3%2]``; a user's cancel is ``CANCELLED by 0`` in sacct;
- ``scancel ID|ID_i|ID_[...]``: pending elements end CANCELLED, running ones are killed.

The scheduler is :meth:`SlurmStandIn.tick`, run in this process before every script (so
time advances as the backend polls, like slurmctld's scheduling cycle): it reaps finished
elements, applies ``--kill-on-invalid-dep`` with
:func:`lazyslurm.planning.rules.cancelled_by`, and starts every element that
:func:`lazyslurm.planning.rules.ready` allows, up to the array's throttle and
``capacity`` elements at once. Each element runs its job script with ``bash`` in its own
process group, ``SLURM_ARRAY_TASK_ID`` set and stdout/stderr in its ``--output``/``--error``
files; ``max_running`` records the most elements of each array job seen running at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

QUEUE = "queue.json"
PARTITIONS = (("debug", True, "UNLIMITED"), ("short", False, "00:05:00"))
_ELEMENT = 'bash "$1" > "$2" 2> "$3"; echo $? > "$4.tmp" && mv "$4.tmp" "$4"'


# --------------------------------------------------------------------------- the queue


@contextlib.contextmanager
def _queue(state: Path) -> Iterator[dict[str, Any]]:
    """The queue, locked; written back when the block ends without an error."""
    with open(state / "lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = state / QUEUE
        data = json.loads(path.read_text()) if path.exists() else {"next": 101, "jobs": {}}
        yield data
        tmp = state / f".{QUEUE}.tmp"
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


def _ranges(indices: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    parts: list[str] = []
    start = prev = None
    for i in [*indices, None]:
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    return ",".join(parts)


def _indices(spec: str, size: int) -> list[int]:
    out: list[int] = []
    for part in spec.strip("[]").split("%")[0].split(","):
        if "-" in part:
            lo, hi = part.split("-")
            out.extend(range(int(lo), int(hi) + 1))
        elif part.isdigit():
            out.append(int(part))
    return [i for i in out if i < size]


def _targets(jobs: Mapping[str, Any], ids: Sequence[str]) -> list[tuple[str, list[int]]]:
    """``ID``, ``ID_3``, ``ID_[0-2]`` (and comma-separated lists of them) -> elements."""
    out = []
    for arg in ids:
        for one in arg.replace(",", " ").split() if "[" not in arg else [arg]:
            master, sep, rest = one.partition("_")
            if master not in jobs:
                continue
            size = jobs[master]["size"]
            out.append((master, _indices(rest, size) if sep else list(range(size))))
    return out


def _sacct_state(el: Mapping[str, Any]) -> str:
    return "CANCELLED by 0" if el["state"] == "CANCELLED" and el["by_user"] else el["state"]


def _rows(job_id: str, job: Mapping[str, Any], fields: Sequence[str], sacct: bool) -> list[str]:
    """One row per started or ended element, pending ones collapsed (as Slurm prints them)."""
    els = job["elements"]

    def row(el: Mapping[str, Any], ident: str) -> str:
        values = {
            "i": ident,
            "F": job_id,  # the array's job id
            "j": job["name"],
            "T": _sacct_state(el) if sacct else el["state"],
            "r": el["reason"],
            "x": el["exit"],
            # the node: this host for an element that started, none while pending
            "N": "" if el["state"] == "PENDING" else "standin",
        }
        return "|".join(values[f] for f in fields) if sacct else _fmt(fields, values)

    if not job["array"]:
        return [row(els[0], job_id)]
    throttle = f"%{job['throttle']}" if job["throttle"] else ""
    pending = [i for i, el in enumerate(els) if el["state"] == "PENDING"]
    out = [row(el, f"{job_id}_{i}") for i, el in enumerate(els) if el["state"] != "PENDING"]
    if pending:
        first = els[pending[0]]
        out.append(row(first, f"{job_id}_[{_ranges(pending)}{throttle}]"))
    return out


def _fmt(fmt: Sequence[str], values: Mapping[str, str]) -> str:
    return "".join(values.get(part[1:], part) if part.startswith("%") else part for part in fmt)


def _squeue_format(fmt: str) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            out.append(fmt[i : i + 2])
            i += 2
        else:
            out.append(fmt[i])
            i += 1
    return out


def _option(args: Sequence[str], name: str) -> str | None:
    for n, a in enumerate(args):
        if a.startswith(f"{name}="):
            return a.split("=", 1)[1]
        if a == name and n + 1 < len(args):
            return args[n + 1]
    return None


# --------------------------------------------------------------------------- commands


def sbatch(state: Path, config: Mapping[str, Any], args: list[str]) -> int:
    if "--" in args:
        cut = args.index("--")
        opts, script = args[:cut], args[cut + 1]
    else:
        opts, script = args[:-1], args[-1]
    array = _option(opts, "--array")
    throttle = None
    size = 1
    if array is not None:
        spec, _, limit = array.partition("%")
        throttle = int(limit) if limit else None
        size = len(_indices(spec, 10**9))
        if max(_indices(spec, 10**9)) >= config["max_array_size"]:
            print(
                "sbatch: error: Batch job submission failed: Invalid job array specification",
                file=sys.stderr,
            )
            return 1
    partition = _option(opts, "--partition")
    if partition is not None and partition not in {p for p, _, _ in PARTITIONS}:
        print(
            "sbatch: error: Batch job submission failed: Invalid partition name specified",
            file=sys.stderr,
        )
        return 1
    deps: list[list[str]] = []
    for part in (_option(opts, "--dependency") or "").split(","):
        if part:
            kind, *ups = part.split(":")
            deps.extend([kind, up] for up in ups)
    with _queue(state) as q:
        for _, up in deps:
            if up not in q["jobs"]:
                print(
                    "sbatch: error: Batch job submission failed: Job dependency problem",
                    file=sys.stderr,
                )
                return 1
        job_id = str(q["next"])
        q["next"] += 1
        q["jobs"][job_id] = {
            "name": _option(opts, "--job-name") or Path(script).name,
            "array": array is not None,
            "size": size,
            "throttle": throttle,
            "deps": deps,
            "kill": _option(opts, "--kill-on-invalid-dep") == "yes",
            "held": "--hold" in opts,
            "script": script,
            "out": _option(opts, "--output") or _option(opts, "-o") or "slurm-%A_%a.out",
            "err": _option(opts, "--error") or _option(opts, "-e") or "slurm-%A_%a.out",
            "cwd": os.getcwd(),
            "elements": [
                {"state": "PENDING", "reason": "None", "exit": "0:0", "pid": None, "by_user": False}
                for _ in range(size)
            ],
            "max_running": 0,
        }
    print(job_id if "--parsable" in opts else f"Submitted batch job {job_id}")
    return 0


def scontrol(state: Path, config: Mapping[str, Any], args: list[str]) -> int:
    if args[:2] == ["show", "config"]:
        storage = "slurmdbd" if config["accounting"] else "none"
        print("Configuration data as of 2026-01-01T00:00:00")
        print(f"AccountingStorageType   = accounting_storage/{storage}")
        print(f"MaxArraySize            = {config['max_array_size']}")
        return 0
    if args[:2] == ["show", "partition"]:
        for name, default, max_time in PARTITIONS:
            print(
                f"PartitionName={name} AllowGroups=ALL Default={'YES' if default else 'NO'} "
                f"MaxTime={max_time} State=UP"
            )
        return 0
    if args[:1] == ["release"]:
        with _queue(state) as q:
            for job_id, _ in _targets(q["jobs"], args[1:]):
                q["jobs"][job_id]["held"] = False
        return 0
    print(f"scontrol: stand-in does not know {args}", file=sys.stderr)
    return 1


def scancel(state: Path, config: Mapping[str, Any], args: list[str]) -> int:
    with _queue(state) as q:
        for job_id, indices in _targets(q["jobs"], args):
            els = q["jobs"][job_id]["elements"]
            for i in indices:
                el = els[i]
                if el["state"] == "RUNNING" and el["pid"]:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(el["pid"], signal.SIGTERM)
                    el.update(state="CANCELLED", exit="0:15", by_user=True)
                elif el["state"] == "PENDING":
                    el.update(state="CANCELLED", by_user=True)
    return 0


def sacct(state: Path, config: Mapping[str, Any], args: list[str]) -> int:
    if not config["accounting"]:
        print("Slurm accounting storage is disabled", file=sys.stderr)
        return 1
    names = {
        "JobID": "i",
        "State": "T",
        "ExitCode": "x",
        "JobName": "j",
        "Reason": "r",
        "NodeList": "N",
    }
    fields = [names[f] for f in (_option(args, "-o") or "JobID,State,ExitCode").split(",")]
    with _queue(state) as q:
        for job_id, _ in _targets(q["jobs"], [_option(args, "-j") or ""]):
            for line in _rows(job_id, q["jobs"][job_id], fields, sacct=True):
                print(line)
    return 0


def squeue(state: Path, config: Mapping[str, Any], args: list[str]) -> int:
    fmt = _squeue_format(_option(args, "-o") or "%i %j %T %r")
    every = _option(args, "-t") == "all"
    with _queue(state) as q:
        ids = _option(args, "-j")
        chosen = [j for j, _ in _targets(q["jobs"], [ids])] if ids else list(q["jobs"])
        for job_id in chosen:
            job = q["jobs"][job_id]
            if not every:  # only what is still queued or running
                job = {
                    **job,
                    "elements": [
                        el for el in job["elements"] if el["state"] in ("PENDING", "RUNNING")
                    ],
                }
                if not job["elements"]:
                    continue
            for line in _rows(job_id, job, fmt, sacct=False):
                print(line)
    return 0


COMMANDS = {
    "sbatch": sbatch,
    "scontrol": scontrol,
    "scancel": scancel,
    "sacct": sacct,
    "squeue": squeue,
}


def main(command: str, args: list[str]) -> int:
    state = Path(os.environ["LZ_STANDIN_STATE"])
    config = json.loads((state / "config.json").read_text())
    return COMMANDS[command](state, config, args)


# --------------------------------------------------------------------------- the shell


class SlurmStandIn:
    """A :class:`~lazyslurm.backends.shell.Shell` on this host whose Slurm is a stand-in.

    ``root`` holds ``bin/`` (the commands), ``slurm/`` (the queue) and ``home/``.
    ``accounting=False`` plays a cluster without slurmdbd (``sacct`` fails, ``squeue``
    answers). Several instances over one ``root`` share one queue (a re-attaching client).
    """

    local_files = True

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        accounting: bool = True,
        max_array_size: int = 100,
        capacity: int = 4,
    ) -> None:
        from lazyslurm.backends.shell import LocalShell

        self.root = Path(root)
        self.state = self.root / "slurm"
        self.capacity = capacity
        bin_dir = self.root / "bin"
        home = self.root / "home"
        for d in (bin_dir, self.state, home):
            d.mkdir(parents=True, exist_ok=True)
        config = {"accounting": accounting, "max_array_size": max_array_size}
        (self.state / "config.json").write_text(json.dumps(config))
        here = shlex.quote(str(Path(__file__).resolve()))
        for name in COMMANDS:
            exe = bin_dir / name
            exe.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {here} {name} "$@"\n')
            exe.chmod(0o755)
        self._shell = LocalShell(
            env={
                "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
                "LZ_STANDIN_STATE": str(self.state),
                "HOME": str(home),
            }
        )
        self._home = str(home)
        self._procs: dict[tuple[str, int], subprocess.Popen[bytes]] = {}
        self.round_trips = 0

    def __repr__(self) -> str:
        return f"SlurmStandIn({str(self.root)!r})"

    # -- the scheduler
    def tick(self) -> None:
        """One scheduling pass: reap, cancel what can never run, start what may run."""
        from lazyslurm.planning import rules

        word = {
            "PENDING": rules.PENDING,
            "RUNNING": rules.RUNNING,
            "COMPLETED": rules.DONE,
            "CANCELLED": rules.CANCELLED,
        }
        with _queue(self.state) as q:
            jobs = q["jobs"]
            ids = sorted(jobs, key=int)
            for job_id in ids:  # reap
                for i, el in enumerate(jobs[job_id]["elements"]):
                    if el["state"] != "RUNNING":
                        continue
                    rc_file = self.state / f"{job_id}_{i}.rc"
                    if rc_file.exists():
                        rc = int(rc_file.read_text() or 1)
                        code = f"{rc}:0" if rc < 128 else f"0:{rc - 128}"
                        el.update(state="COMPLETED" if rc == 0 else "FAILED", exit=code)
            records = [
                _Record(j, jobs[j]["size"], tuple((k, u) for k, u in jobs[j]["deps"])) for j in ids
            ]
            edges = rules.Edges(records)
            states = [
                [word.get(el["state"], rules.FAILED) for el in jobs[j]["elements"]] for j in ids
            ]

            def pending(m: int) -> list[int]:
                els = jobs[ids[m]]["elements"]
                return [j for j, el in enumerate(els) if el["state"] == "PENDING"]

            for n, row in enumerate(states):  # --kill-on-invalid-dep
                for i, s in enumerate(row):
                    if s not in rules.BAD:
                        continue
                    for d, j in rules.cancelled_by(edges, n, i, pending):
                        el = jobs[ids[d]]["elements"][j]
                        el["reason"] = "DependencyNeverSatisfied"
                        if jobs[ids[d]]["kill"]:
                            el["state"] = "CANCELLED"
                            states[d][j] = rules.CANCELLED
            running = sum(s == rules.RUNNING for row in states for s in row)
            for n, job_id in enumerate(ids):  # start
                job = jobs[job_id]
                if job["held"]:
                    continue
                limit = job["throttle"] or job["size"]
                active = sum(s == rules.RUNNING for s in states[n])
                for i, el in enumerate(job["elements"]):
                    if active >= limit or running >= self.capacity:
                        break
                    if el["state"] != "PENDING" or el["reason"] == "DependencyNeverSatisfied":
                        continue
                    if rules.ready(edges, n, i, states):
                        el.update(state="RUNNING", reason="None", pid=self._start(job_id, job, i))
                        states[n][i] = rules.RUNNING
                        active += 1
                        running += 1
                job["max_running"] = max(job["max_running"], active)
        for key, proc in list(self._procs.items()):  # no zombies
            if proc.poll() is not None:
                del self._procs[key]

    def _start(self, job_id: str, job: Mapping[str, Any], i: int) -> int:
        def path(pattern: str) -> str:
            out = pattern.replace("%%", "\0").replace("%a", str(i)).replace("%A", job_id)
            return out.replace("%j", job_id).replace("\0", "%")

        env = {
            **os.environ,
            **self._shell.env,
            "SLURM_JOB_ID": job_id,
            "SLURM_ARRAY_JOB_ID": job_id,
            "SLURM_ARRAY_TASK_ID": str(i),
            "SLURM_ARRAY_TASK_COUNT": str(job["size"]),
        }
        proc = subprocess.Popen(
            [
                "bash",
                "-c",
                _ELEMENT,
                "element",
                job["script"],
                path(job["out"]),
                path(job["err"]),
                str(self.state / f"{job_id}_{i}.rc"),
            ],
            cwd=job["cwd"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # scancel kills its process group
        )
        self._procs[(job_id, i)] = proc
        return proc.pid

    # -- introspection for tests
    def jobs(self) -> dict[str, Any]:
        """The queue: Slurm job id -> what sbatch was given and each element's state."""
        with _queue(self.state) as q:
            return q["jobs"]

    # -- the Shell protocol
    def run(
        self, script: str, *, input: bytes | None = None, timeout_s: float | None = None
    ) -> Any:
        self.round_trips += 1
        self.tick()
        return self._shell.run(script, input=input, timeout_s=timeout_s)

    def put_files(self, root: str, files: Mapping[str, bytes], *, then: str | None = None) -> Any:
        self.round_trips += 1
        self._shell.put_files(root, files)
        return None if then is None else self.run(then)

    def read_files(self, root: str, paths: Sequence[str]) -> dict[str, bytes]:
        self.round_trips += 1
        return self._shell.read_files(root, paths)

    def home(self) -> str:
        return self._home

    def close(self) -> None:
        """Kill elements still running (a test's teardown); the queue stays on disk."""
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        self._procs.clear()


class _Record:
    """An array job as :mod:`lazyslurm.planning.rules` reads it (Slurm ids, not aj ids)."""

    __slots__ = ("dependencies", "id", "size")

    def __init__(self, id: str, size: int, dependencies: tuple[tuple[str, str], ...]) -> None:
        self.id, self.size, self.dependencies = id, size, dependencies


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
