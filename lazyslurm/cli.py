"""The ``lazyslurm`` command: list, inspect, cancel, draw and clean runs in a cluster's store.

::

    lazyslurm runs                          runs in the store, newest first
    lazyslurm status RUN                    element counts per array job; exit 1 if it failed
    lazyslurm logs RUN NODE [--stderr] [--tail N]
    lazyslurm cancel RUN
    lazyslurm viz RUN -o run.svg [--level tasks|jobs]
    lazyslurm clean --older-than 7d [--dry-run] [--force]
                                            runs idle for 7 days, unless still running
    lazyslurm clean --code --older-than 7d [--dry-run]
                                            code and environments no run used for 7 days
    lazyslurm preview SCRIPT.py:NAME [--no-start] [--cache]
                                            jobs, worst-case cost and start of a graph
    lazyslurm usage RUN [--json]            requested vs used memory, CPU, time per task
    lazyslurm usage --disk                  what the work directory holds: runs, code, venvs
    lazyslurm profiles                      the cluster profiles, and the file each is from
    lazyslurm watch RUN                     live progress bars until the run ends
    lazyslurm dashboard [RUN] [--port N]    a live web page of the runs (127.0.0.1, token)

Every command takes ``--cluster PROFILE``, before or after the command name (default:
``$LAZYSLURM_PROFILE``, else the embedded local cluster and its work directory,
``$LAZYSLURM_WORKDIR`` or ``~/.lazyslurm``). ``runs``, ``status``, ``profiles``, ``logs``,
``preview`` and ``usage`` take ``--json``.
Also ``python -m lazyslurm``.

``preview`` takes ``PATH.py:NAME`` (a script, run with ``__name__`` set to
``"__lazyslurm_preview__"``, so its ``if __name__ == "__main__":`` block does not run) or
``package.module:NAME`` (imported); ``NAME`` is a lazy value (a ``Job``, ``JobArray``, or a
list, tuple or dict of them) or a function taking no arguments that returns one.

Exit codes: 0 ok (also ``usage`` on a cluster without accounting: the runner's figures);
1 ``status`` of a run that failed or was cancelled; 2 usage errors and errors (unknown
run, bad profile, backend failure, a run whose manifest is damaged, ``clean`` keeping
Slurm runs because ``squeue`` failed), reported in one line.

This module imports only the standard library at import time: each command imports what
it needs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lazyslurm.cluster import Cluster
    from lazyslurm.execute import Run

__all__ = ["main"]

PROG = "lazyslurm"
EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_ERROR = 2
MAX_FAILURES_SHOWN = 10
_COUNT_COLUMNS = ("DONE", "RUNNING", "PENDING", "FAILED", "CANCELLED")


# --------------------------------------------------------------------------- output helpers


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Plain text columns, two spaces apart; columns in ``right`` are right-aligned."""
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        parts = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


# --------------------------------------------------------------------------- cluster


def _open_cluster(args: argparse.Namespace) -> tuple[Cluster, bool]:
    """The cluster to use, and whether this command owns it (and closes it)."""
    from lazyslurm.cluster import Cluster
    from lazyslurm.profiles import PROFILE_ENV

    name = args.cluster or os.environ.get(PROFILE_ENV) or None
    if name is not None:
        return Cluster.from_profile(name), True
    # a command is a session of its own (called in a process, main() sees the
    # environment of now, not that of the process's first default cluster)
    return Cluster("local"), True


def _attach(args: argparse.Namespace, cluster: Cluster) -> Run:
    from lazyslurm.execute import Run

    return Run.attach(args.run, cluster)


# --------------------------------------------------------------------------- commands


def _print_json(data: Any) -> None:
    import json

    print(json.dumps(data, indent=2, sort_keys=False))


def cmd_runs(args: argparse.Namespace, cluster: Cluster) -> int:
    from lazyslurm.execute import runs

    items = runs(cluster)
    if args.json:
        _print_json(
            [
                {
                    "id": r.id,
                    "started": r.started.isoformat(timespec="seconds"),
                    "state": r.state,
                    "tasks": r.tasks,
                    "done": r.done,
                    "failed": r.failed,
                    "label": r.label,
                    "backend": r.backend,
                    "problem": r.problem or None,
                }
                for r in items
            ]
        )
        return EXIT_OK
    if not items:
        print(f"no runs in {cluster.backend.workdir}")
        return EXIT_OK
    rows = [
        (r.id, r.started.strftime("%Y-%m-%d %H:%M:%S"), r.state, r.tasks, r.done, r.failed, r.label)
        for r in items
    ]
    print(
        _table(
            ("RUN", "STARTED", "STATE", "TASKS", "DONE", "FAILED", "LABEL"), rows, right=(3, 4, 5)
        )
    )
    corrupt = [r for r in items if r.problem]
    if corrupt:
        print(
            f"CORRUPT: {len(corrupt)} run(s) whose description is missing or damaged (their "
            f"results stay usable by cache=True; `{PROG} status RUN` says more):"
        )
        for r in corrupt:
            print(f"  {r.id}: {r.problem}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, cluster: Cluster) -> int:
    from lazyslurm.backends.base import CANCELLED, DONE, FAILED, PENDING, RUNNING

    run = _attach(args, cluster)
    status = run.status()
    code = EXIT_RUN_FAILED if status.state in (FAILED, CANCELLED) else EXIT_OK
    if args.json:
        _print_json(_status_json(run, status))
        return code
    total = sum(status.counts.values())
    print(f"run {status.run_id}: {status.state}, {status.counts.get(DONE, 0)}/{total} done")
    if status.note:
        print(status.note)
    calls = run.controller_calls
    if calls is not None:  # every Slurm command made for the run (docs/reliability.md)
        from lazyslurm.execute import calls_summary

        print(f"controller calls: {calls_summary(calls)}")
    order = (DONE, RUNNING, PENDING, FAILED, CANCELLED)
    indent = {aj.id: "  " * aj.depth for aj in run.array_jobs}  # a subgraph: under its maker
    rows = [
        (aj, indent.get(aj, "") + name, sum(counts.values()), *(counts.get(s, 0) for s in order))
        for aj, (name, counts) in status.array_jobs.items()
    ]
    if rows:
        print(
            _table(
                ("ARRAY JOB", "TASK", "ELEMENTS", *_COUNT_COLUMNS),
                rows,
                right=range(2, 3 + len(order)),
            )
        )
    _print_failures(run)
    return code


def _failed_elements(run: Run, limit: int) -> tuple[list[tuple[str, str, str]], int]:
    """Up to ``limit`` failed elements of the last poll as (element, node key, error), one
    transfer for their error records; and how many failed in all."""
    from lazyslurm.backends.base import FAILED
    from lazyslurm.store import RunLayout

    snap = run.last_snapshot
    if snap is None:
        return [], 0
    failed = [
        (aj, i, key)
        for aj in run.array_jobs
        for i, (key, state) in enumerate(zip(aj.keys, snap.states.get(aj.id, ()), strict=False))
        if state == FAILED
    ]
    if not failed:
        return [], 0
    shown = failed[:limit]
    layout = RunLayout.of(run.id)
    paths = {key: layout.error(key) for _, _, key in shown}
    records = run.cluster.backend.read_files(list(paths.values()))
    rows = [
        (
            f"{aj.id}:{i}",
            key,
            _failure_text(records.get(paths[key]), key, snap.failures.get((aj.id, i))),
        )
        for aj, i, key in shown
    ]
    return rows, len(failed)


def _status_json(run: Run, status: Any) -> dict[str, Any]:
    rows, n_failed = _failed_elements(run, MAX_FAILURES_SHOWN)
    return {
        "run": status.run_id,
        "state": status.state,
        "counts": status.counts,
        "array_jobs": [
            {"id": aj, "task": name, "elements": sum(counts.values()), "counts": counts}
            for aj, (name, counts) in status.array_jobs.items()
        ],
        "failed": n_failed,
        "failures": [{"element": e, "node": k, "error": text} for e, k, text in rows],
        "note": status.note,
        "controller_calls": run.controller_calls,
    }


def _print_failures(run: Run) -> None:
    """The failed elements of the last poll, with their error (one transfer)."""
    rows, n_failed = _failed_elements(run, MAX_FAILURES_SHOWN)
    if not rows:
        return
    print(f"failed ({n_failed}):")
    for line in _table(("ELEMENT", "NODE", "ERROR"), rows).splitlines():
        print(f"  {line}")
    if n_failed > len(rows):
        print(f"  ... and {n_failed - len(rows)} more")
    print(f"see a log with: {PROG} logs {run.id} {rows[0][1]} --stderr")


def _failure_text(record: bytes | None, key: str, failure: Any) -> str:
    """``ValueError: message`` from an error record, else the scheduler's view."""
    if record is not None:
        try:
            from lazyslurm.store import ErrorRecord, decode_outcome

            rec = ErrorRecord.decode(decode_outcome(record, key=key, path=key)[1])
            return f"{rec.type_name}: {_first_line(rec.message)}"
        except Exception:  # a damaged record: fall back on the scheduler's view
            pass
    if failure is None:
        return "failed"
    parts = [failure.state]
    if failure.exit_code:
        parts.append(f"exit code {failure.exit_code}")
    if failure.reason:
        parts.append(failure.reason)
    return " ".join(parts)


def resolve_node(run: Run, node: str) -> str:
    """The node key meant by ``node``: a key, ``ARRAYJOB:INDEX`` or a unique key prefix."""
    keys = [key for aj in run.array_jobs for key in aj.keys]
    if node in keys:
        return node
    head, sep, tail = node.rpartition(":")
    by_id = {aj.id: aj for aj in run.array_jobs}
    if sep and head in by_id:
        aj = by_id[head]
        if not tail.isdigit() or int(tail) >= aj.size:
            msg = (
                f"array job {aj.id} ({aj.name}) of run {run.id} has elements 0-{aj.size - 1}, "
                f"not {tail!r}"
            )
            raise KeyError(msg)
        return aj.keys[int(tail)]
    matches = [key for key in keys if key.startswith(node)]
    if len(matches) == 1:
        return matches[0]
    if matches:
        some = ", ".join(matches[:3]) + (", ..." if len(matches) > 3 else "")
        msg = (
            f"{node!r} matches {len(matches)} nodes of run {run.id} ({some}): give more of "
            "the key, or ARRAYJOB:INDEX"
        )
        raise KeyError(msg)
    jobs = ", ".join(f"{aj.id} {aj.name} [{aj.size}]" for aj in run.array_jobs)
    msg = (
        f"no node {node!r} in run {run.id}: give a node key, a unique prefix of one, or "
        f"ARRAYJOB:INDEX (array jobs: {jobs})"
    )
    raise KeyError(msg)


def _tail(text: str, n: int | None) -> str:
    if n is None:
        return text
    return "".join(text.splitlines(keepends=True)[-n:] if n else [])


def cmd_logs(args: argparse.Namespace, cluster: Cluster) -> int:
    run = _attach(args, cluster)
    key = resolve_node(run, args.node)
    out, err = run.logs(key)
    if args.json:  # both streams, each cut by --tail
        _print_json(
            {"run": run.id, "node": key, "stdout": _tail(out, args.tail),
             "stderr": _tail(err, args.tail)}
        )  # fmt: skip
        return EXIT_OK
    text = _tail(err if args.stderr else out, args.tail)
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    else:
        stream = "stderr" if args.stderr else "stdout"
        print(f"({key}: no {stream} output)", file=sys.stderr)
    return EXIT_OK


def cmd_cancel(args: argparse.Namespace, cluster: Cluster) -> int:
    from lazyslurm.backends.base import PENDING, RUNNING

    run = _attach(args, cluster)
    before = run.status()
    unfinished = before.counts.get(PENDING, 0) + before.counts.get(RUNNING, 0)
    total = sum(before.counts.values())
    if not unfinished:
        print(f"run {run.id} has already ended ({before.state}): nothing to cancel")
        return EXIT_OK
    run.cancel()
    print(f"cancelled run {run.id}: {unfinished} of {total} elements had not finished")
    return EXIT_OK


def cmd_viz(args: argparse.Namespace, cluster: Cluster) -> int:
    from lazyslurm.draw import visualize

    run = _attach(args, cluster)
    run.poll()  # colour by the current states
    path = Path(args.output)
    if not path.suffix:
        path = path.with_name(path.name + ".svg")  # as visualize() does
    visualize(run=run, filename=path, level=args.level)
    print(f"wrote {path}")
    return EXIT_OK


def cmd_watch(args: argparse.Namespace, cluster: Cluster) -> int:
    """Progress bars of a run (attached) until it ends; Ctrl-C stops watching only."""
    import time

    from lazyslurm.backends.base import CANCELLED, FAILED
    from lazyslurm.progress import RichProgress

    run = _attach(args, cluster)
    display = RichProgress()
    delay = cluster.poll_min_s
    try:
        while True:
            before = run.last_snapshot
            snap = run.poll()
            if snap is None or snap.finished:
                break
            display.on_poll(run, snap)
            changed = before is None or before.states != snap.states
            delay = cluster.poll_min_s if changed else min(delay * 1.5, cluster.poll_max_s)
            time.sleep(delay)
    except KeyboardInterrupt:
        display.on_interrupt(run, "")
        print(f"stopped watching run {run.id}; it goes on (lazyslurm status {run.id})")
        return EXIT_OK
    display.on_done(run)
    status = run.status()
    print(f"run {run.id}: {status.state}")
    return EXIT_RUN_FAILED if status.state in (FAILED, CANCELLED) else EXIT_OK


def cmd_dashboard(args: argparse.Namespace, cluster: Cluster) -> int:
    """Serve the live web dashboard of the cluster's runs until Ctrl-C."""
    from lazyslurm.dashboard import serve
    from lazyslurm.execute import Run

    serve(cluster, run_type=Run, run=args.run, port=args.port, open_browser=args.open)
    return EXIT_OK


def cmd_profiles(args: argparse.Namespace, cluster: Cluster | None) -> int:
    """The profiles the current directory sees, the file each is read from, its backend."""
    from lazyslurm.errors import ClusterConfigError
    from lazyslurm.profiles import PROFILE_ENV, available_profiles, load_profile

    found = available_profiles()
    default = os.environ.get(PROFILE_ENV) or None
    rows = []
    data = []
    for name, path in found.items():
        try:
            profile = load_profile(name)
            backend, problem = str(profile.options.get("backend", "local")), ""
        except ClusterConfigError as exc:  # the reason, without the file (a column already)
            text = " ".join(str(exc).split())
            backend, problem = "?", text.split("]: ", 1)[-1].split(" (valid keys:")[0]
        mark = "*" if name == default else ""
        rows.append((f"{name}{mark}", backend, str(path), problem))
        data.append(
            {
                "name": name,
                "backend": backend,
                "file": str(path),
                "default": name == default,
                "error": problem or None,
            }
        )
    if args.json:
        _print_json(data)
        return EXIT_OK
    if not rows:
        print(
            "no cluster profiles: define [tool.lazyslurm.profiles.NAME] in pyproject.toml or "
            "[profiles.NAME] in lazyslurm.toml (or ~/.config/lazyslurm/lazyslurm.toml)"
        )
        return EXIT_OK
    width = 4 if any(r[3] for r in rows) else 3  # the ERROR column only when one has one
    print(_table(("PROFILE", "BACKEND", "FILE", "ERROR")[:width], [r[:width] for r in rows]))
    if default is not None:
        where = "" if default in found else " (not defined: commands will fail)"
        print(f"* ${PROFILE_ENV}={default}{where}")
    return EXIT_OK


def _clean_code(args: argparse.Namespace, cluster: Cluster) -> int:
    import time

    from lazyslurm.backends.packaging.disk import ago, human_kb
    from lazyslurm.cache import clear_code

    done = clear_code(cluster, older_than=args.older_than, dry_run=args.dry_run)
    where = f"{cluster.backend.workdir}/code"
    age = args.older_than
    now = time.time()
    if done.removed:
        verb = "would remove" if args.dry_run else "removed"
        freed = human_kb(sum(u.kb for u in done.removed))
        print(f"{verb} {len(done.removed)} entr(ies) unused for {age} from {where} ({freed}):")
        for u in done.removed:
            print(f"  {u.name:<24} {human_kb(u.kb):>9}  last used {ago(now - u.last_used)} ago"
                  f"  {u.kind}")  # fmt: skip
    elif not done.kept:
        print(f"nothing in {where} unused for {age} ({human_kb(done.total_kb)} held)")
    if done.kept:
        print(f"kept {len(done.kept)} entr(ies) unused for {age} that runs may still need:")
        for unit, why in sorted(done.kept.items()):
            print(f"  {unit}  {why}")
    if done.unchecked:
        print(
            f"{PROG} clean: error: {done.unchecked}; nothing in use was guessed about: retry "
            f"once the Slurm controller answers",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


def cmd_clean(args: argparse.Namespace, cluster: Cluster) -> int:
    from lazyslurm.cache import clear

    if args.code:
        if args.force:
            print(
                f"{PROG} clean: error: --force is for runs; --code never removes code that "
                "queued or running runs use",
                file=sys.stderr,
            )
            return EXIT_ERROR
        return _clean_code(args, cluster)
    removed = clear(cluster, older_than=args.older_than, dry_run=args.dry_run, force=args.force)
    where = cluster.backend.workdir
    age = args.older_than
    if removed:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {len(removed)} run(s) older than {age} from {where}:")
        for run_id in sorted(removed):
            print(f"  {run_id}")
    elif not removed.kept:
        print(f"no runs older than {age} in {where}")
    if removed.kept:
        print(f"kept {len(removed.kept)} run(s) older than {age} that may still be running:")
        for run_id, why in sorted(removed.kept.items()):
            print(f"  {run_id}  {why}")
        print(
            f"  (`{PROG} cancel RUN` stops one; --force removes them without cancelling their jobs)"
        )
    if removed.unchecked:
        print(
            f"{PROG} clean: error: {removed.unchecked}; Slurm runs were kept rather than "
            f"guessed about: retry once the Slurm controller answers, or use --force",
            file=sys.stderr,
        )
        return EXIT_ERROR
    return EXIT_OK


def load_graph(target: str) -> Any:
    """The graph named by ``PATH.py:NAME`` or ``module:NAME`` (called if a function)."""
    import importlib
    import runpy

    from lazyslurm.errors import ClusterConfigError

    source, sep, name = target.rpartition(":")
    if not sep or not source or not name:
        msg = f"{target!r}: give SCRIPT.py:NAME or package.module:NAME"
        raise ClusterConfigError(msg)
    if source.endswith(".py") or os.sep in source:
        path = Path(source)
        if not path.is_file():
            msg = f"{target!r}: no script {path}"
            raise ClusterConfigError(msg)
        sys.path.insert(0, str(path.resolve().parent))  # its own imports, as python would
        try:
            namespace = runpy.run_path(str(path), run_name="__lazyslurm_preview__")
        finally:
            sys.path.pop(0)
    else:
        namespace = vars(importlib.import_module(source))
    if name not in namespace:
        have = sorted(k for k in namespace if not k.startswith("_"))[:12]
        msg = f"{target!r}: {source} defines no {name!r} (it has: {', '.join(have)})"
        raise ClusterConfigError(msg)
    value = namespace[name]
    from lazyslurm.graph.core import Job, JobArray, JobView, Task

    if isinstance(value, Task):
        msg = f"{target!r} is a task, not a graph: name a call of it (or a function making one)"
        raise ClusterConfigError(msg)
    if callable(value) and not isinstance(value, (Job, JobArray, JobView)):
        value = value()
    return value


def _record(obj: Any) -> Any:
    """An attrs record (a preview, a usage) as JSON-able data: its fields, nested records
    as dicts, datetimes as ISO text."""
    import datetime

    import attrs

    def plain(_inst: Any, _field: Any, value: Any) -> Any:
        if isinstance(value, datetime.datetime):
            return value.isoformat(timespec="seconds")
        return value

    return attrs.asdict(obj, value_serializer=plain)


def cmd_preview(args: argparse.Namespace, cluster: Cluster) -> int:
    from lazyslurm.preview import preview

    graph = load_graph(args.target)
    found = preview(graph, cluster=cluster, cache=args.cache or None, start=not args.no_start)
    if args.json:
        _print_json(
            {**_record(found), "total": _record(found.total), "assumed": found.assumptions()}
        )
        return EXIT_OK
    print(found)
    return EXIT_OK


def cmd_usage(args: argparse.Namespace, cluster: Cluster) -> int:
    if args.disk:
        import attrs

        from lazyslurm.cache import disk_usage

        disk = disk_usage(cluster)
        if args.json:
            _print_json(attrs.asdict(disk) | {"code_kb": disk.code_kb})
        else:
            print(disk)
        if args.run is None:
            return EXIT_OK
    if args.run is None:
        print(f"{PROG} usage: error: give a run id, or --disk", file=sys.stderr)
        return EXIT_ERROR
    from lazyslurm.usage import usage

    report = usage(args.run, cluster)
    print(report.json() if args.json else report)
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        msg = f"expected a whole number of lines (0 or more), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _age(text: str) -> str:
    from lazyslurm.cache import parse_age
    from lazyslurm.errors import ClusterConfigError

    try:
        seconds = parse_age(text)
    except ClusterConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    if 0 < seconds < 60:
        # lazyslurm.cache.clear works in whole minutes and treats 0 as "every run"
        msg = f"{text!r}: ages under a minute are not supported (use 1m, or 0s for every run)"
        raise argparse.ArgumentTypeError(msg)
    return text


def build_parser() -> argparse.ArgumentParser:
    from lazyslurm.version import __version__

    cluster_help = (
        "cluster profile from [tool.lazyslurm.profiles.PROFILE] in pyproject.toml or "
        "[profiles.PROFILE] in lazyslurm.toml (default: $LAZYSLURM_PROFILE, else the "
        "embedded local cluster in $LAZYSLURM_WORKDIR or ~/.lazyslurm)"
    )
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: when not given after the command, the value given before it stays
    common.add_argument(
        "--cluster", metavar="PROFILE", default=argparse.SUPPRESS, help=cluster_help
    )
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect and manage lazyslurm runs in a cluster's store.",
        epilog="exit codes: 0 ok, 1 `status` of a failed or cancelled run, 2 errors",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--cluster", metavar="PROFILE", default=None, help=cluster_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Callable[..., int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    json_help = "print JSON instead of a table"
    p = add("runs", cmd_runs, "list the runs in the cluster's store, newest first")
    p.add_argument("--json", action="store_true", help=json_help)

    p = add("status", cmd_status, "element counts of a run, per array job (exit 1 if it failed)")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument("--json", action="store_true", help=json_help)

    p = add("watch", cmd_watch, "live progress bars of a run until it ends (Ctrl-C: stop)")
    p.add_argument("run", metavar="RUN", help="run id")

    p = add("dashboard", cmd_dashboard, "serve a live web page of the runs (Ctrl-C: stop)")
    p.add_argument("run", metavar="RUN", nargs="?", help="open this run first")
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")

    p = add("profiles", cmd_profiles, "list the cluster profiles and the file each is read from")
    p.add_argument("--json", action="store_true", help=json_help)
    p.set_defaults(needs_cluster=False)

    p = add("logs", cmd_logs, "print the stdout (or stderr) of one node of a run")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument(
        "node",
        metavar="NODE",
        help="node key, a prefix unique within the run, or ARRAYJOB:INDEX (e.g. aj1:3)",
    )
    p.add_argument("--stderr", action="store_true", help="print stderr instead of stdout")
    p.add_argument("--tail", metavar="N", type=_non_negative_int, help="only the last N lines")
    p.add_argument("--json", action="store_true", help="print both streams as JSON")

    p = add("cancel", cmd_cancel, "cancel every unfinished element of a run")
    p.add_argument("run", metavar="RUN", help="run id")

    p = add("viz", cmd_viz, "draw a run, coloured by state, to a picture file")
    p.add_argument("run", metavar="RUN", help="run id")
    p.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        required=True,
        help="picture file; its suffix gives the format: svg, png, pdf or dot",
    )
    p.add_argument(
        "--level",
        choices=("tasks", "jobs"),
        default="tasks",
        help="tasks: one node per task or mapped array (default); jobs: one per array job",
    )

    p = add(
        "clean",
        cmd_clean,
        "delete runs (and their cached results) idle for longer than an age; runs that "
        "still have jobs queued or running are kept",
    )
    p.add_argument(
        "--older-than",
        metavar="AGE",
        type=_age,
        required=True,
        help="remove runs in which nothing changed for this long, for example 30m, 12h, "
        "7d or 2w (0s: every run)",
    )
    p.add_argument(
        "--code",
        action="store_true",
        help="remove code instead of runs: lazyslurm runtime trees, project code and "
        "environments (venvs and wheels) of WORKDIR/code that no submission used for that "
        "long, never one a queued or running run uses",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="list what would be removed; remove nothing"
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="also remove old runs that may still be running (Slurm jobs still queued or "
        "running, a live local client, or squeue failing); their jobs are not cancelled",
    )

    p = add(
        "preview",
        cmd_preview,
        "array jobs, worst-case core/GPU-hours and Slurm's expected start of a graph "
        "(submits nothing)",
    )
    p.add_argument(
        "target",
        metavar="SCRIPT.py:NAME",
        help="a script or module and the name of its graph (or of a function returning it)",
    )
    p.add_argument("--no-start", action="store_true", help="do not ask Slurm (sbatch --test-only)")
    p.add_argument(
        "--cache", action="store_true", help="leave out what the cluster's store already holds"
    )
    p.add_argument("--json", action="store_true", help=json_help)

    p = add(
        "usage",
        cmd_usage,
        "what a run used per task: requested vs used memory, CPU and time, core-hours "
        "wasted, warnings (the runner's records, and sacct's where there is accounting); "
        "--disk: what the work directory holds",
    )
    p.add_argument("run", metavar="RUN", nargs="?", help="run id")
    p.add_argument(
        "--disk",
        action="store_true",
        help="what the work directory holds: runs, code trees, environments (venvs and "
        "wheels), with sizes and last use",
    )
    p.add_argument("--json", action="store_true", help=json_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    from lazyslurm.errors import LazySlurmError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    cluster = None
    owned = False
    try:
        if getattr(args, "needs_cluster", True):
            cluster, owned = _open_cluster(args)
        return args.handler(args, cluster)
    except (LazySlurmError, KeyError, OSError) as exc:
        text = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        message = " ".join(str(text).split()) or type(exc).__name__
        print(f"{PROG} {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    finally:
        if cluster is not None and owned:
            cluster.close()
