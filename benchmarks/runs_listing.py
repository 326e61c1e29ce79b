"""`lazyslurm runs` over a store of many runs: the one-pass listing against the old loop.

    python benchmarks/runs_listing.py                 # 2,000 runs on this host
    python benchmarks/runs_listing.py --runs 500 --ssh  # also over SSH (test cluster's sshd)

Writes ``--runs`` synthetic finished runs as the store writes them (summary, manifest,
result, error and pack files), then times ``lazyslurm.cache.list_runs`` (one command, a
fixed number of processes) and the listing it replaced (a shell loop running
``ls|grep``, ``head|awk``, ``ls|grep`` and ``tr`` for every run), each ``--reps`` times.
``--ssh`` copies the store to the test cluster's SSH user (``tests/cluster/start.sh``'s
``env.sh`` variables) and times both there too. Prints the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lazyslurm.backends.shell import LocalShell, Shell
from lazyslurm.cache import _run_guarded, list_runs
from lazyslurm.store import INSIDE, RunLayout, encode_outcome, encode_pack


def make_runs(workdir: Path, n: int) -> None:
    """``n`` runs as the store writes them: 0-2 results, a pack of 2 every 5th, an error
    every 7th."""
    start = time.time() - n
    for i in range(n):
        run_id = time.strftime("%Y%m%d-%H%M%S", time.localtime(start + i)) + f"-{i:06x}"
        layout = RunLayout.of(run_id, workdir)
        layout.make_dirs()
        summary = {"run_id": run_id, "created": start + i, "label": f"l{i}", "tasks": 4}
        Path(layout.summary).write_text(json.dumps(summary, sort_keys=True))
        manifest = {**summary, "version": 2, "outputs": [], "external": {}, "array_jobs": []}
        Path(layout.manifest).write_text(json.dumps(manifest, sort_keys=True))
        for k in range(i % 3):
            key = f"f-{i}-{k}"
            Path(layout.result(key)).write_bytes(encode_outcome(b"x", key=key, writer="w"))
        if i % 5 == 0:
            records = [encode_outcome(b"y", key=f"g-{i}-{k}", writer="w") for k in range(2)]
            Path(layout.pack("aj1", 0)).write_bytes(encode_pack(records))
        if i % 7 == 0:
            Path(layout.error(f"h-{i}")).write_bytes(encode_outcome(b"e", key="h", writer="w"))


def old_listing(shell: Shell, workdir: str) -> int:
    """The listing before issue 20 (its shell loop, as it was), returning the run count."""
    grep = shlex.quote(RunLayout.OUTCOME_GREP)
    res_grep = shlex.quote("[.]pkl$")
    body = (
        f'for d in */; do d=${{d%/}}; [ -f "$d/{INSIDE.summary}" ] || continue\n'
        f'  r=$(ls -f "$d/{INSIDE.results_dir}" 2>/dev/null | grep -c {res_grep})\n'
        f'  p=$(head -qn1 "$d/{INSIDE.results_dir}"/*{RunLayout.PACK_SUFFIX} 2>/dev/null'
        " | awk '$1 == \"LZPACK1\" {s += $2} END {print s + 0}'); r=$((r + p))\n"
        f'  e=$(ls -f "$d/{INSIDE.errors_dir}" 2>/dev/null | grep -c {grep})\n'
        f'  printf "LZRUN %s %s %s " "$d" "$r" "$e"; tr -d "\\n" < "$d/{INSIDE.summary}"; echo\n'
        "done\n"
    )
    _, lines = _run_guarded(shell, workdir, body, "list runs")
    return sum(line.startswith("LZRUN ") for line in lines)


def timed(fn, reps: int) -> tuple[float, float]:
    """Median wall time and median CPU time of the processes it ran on this host (what
    a loaded host does not inflate as much; over SSH: the client side only)."""
    import resource

    times, cpus = [], []
    for _ in range(reps):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return statistics.median(times), statistics.median(cpus)


def ssh_shell():
    from lazyslurm.backends.shell import SSHShell

    env = os.environ
    return SSHShell(
        env["LAZYSLURM_TEST_SSH_HOST"],
        port=int(env["LAZYSLURM_TEST_SSH_PORT"]),
        username=env["LAZYSLURM_TEST_SSH_USER"],
        key_filename=env["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=env["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--ssh", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="lazyslurm-runs-bench-") as tmp:
        workdir = Path(tmp) / "work"
        t0 = time.perf_counter()
        make_runs(workdir, args.runs)
        print(f"{args.runs} runs written in {time.perf_counter() - t0:.1f} s")
        places: list[tuple[str, Shell, str]] = [("local", LocalShell(), str(workdir))]
        remote = None
        if args.ssh:
            shell = ssh_shell()
            remote = f"{shell.home()}/lazyslurm-bench/{uuid.uuid4().hex}"
            files = {
                str(p.relative_to(workdir)): p.read_bytes()
                for p in workdir.rglob("*")
                if p.is_file()
            }
            shell.put_files(remote, files)
            places.append(("ssh", shell, remote))
        try:
            for where, shell, root in places:
                assert len(list_runs(shell, root)) == args.runs
                assert old_listing(shell, root) == args.runs
                new, new_cpu = timed(lambda: list_runs(shell, root), args.reps)  # noqa: B023
                old, old_cpu = timed(lambda: old_listing(shell, root), args.reps)  # noqa: B023
                cpu = (
                    f"   (CPU here {old_cpu:.2f} s -> {new_cpu:.3f} s)" if where == "local" else ""
                )
                print(
                    f"{where:6s} old loop {old:7.2f} s   one pass {new:6.3f} s   "
                    f"x{old / new:.0f}{cpu}"
                )
        finally:
            if remote is not None:
                places[-1][1].run(f"rm -rf -- {shlex.quote(remote)}")


if __name__ == "__main__":
    main()
