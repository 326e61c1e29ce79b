"""Run one Slurm array element (from ``$SLURM_ARRAY_TASK_ID``): the job scripts' entry.

Two ways to start it, with the same effect:

- ``python /path/to/lazyslurm/runner/__main__.py RUN_DIR ARRAY_JOB`` (what job scripts
  run when the runner's path on the cluster is known): by path, no ``runpy`` and no
  package ``__init__``: :mod:`lazyslurm.store` and :mod:`lazyslurm.runner` are loaded
  from the files beside this one under their own names (so pickles naming
  ``lazyslurm.store.Ref`` find them). Measured in ``benchmarks/task_overhead.py``.
- ``python -P -m lazyslurm.runner RUN_DIR ARRAY_JOB`` (``-P``: the working directory is
  not put first on ``sys.path``, where a user's ``types.py`` would break ``runpy``).

Either way the working directory (the job's: where the client was) goes on ``sys.path``
right after the standard library (:func:`safe_path`): a user's ``token.py`` or
``types.py`` there never shadows the standard library (or the modules the runner
imports from it), while the user's own modules there still import.

A multi-process task's job script runs ``--rank RUN_DIR ARRAY_JOB`` on every rank (srun),
then ``--gather RUN_DIR ARRAY_JOB WORLD_SIZE`` once. ``--serve`` is the local backend's
worker loop.
"""

from __future__ import annotations

import os
import sys

USAGE = (
    "usage: python -m lazyslurm.runner [--rank] RUN_DIR ARRAY_JOB\n"
    "       python -m lazyslurm.runner --gather RUN_DIR ARRAY_JOB WORLD_SIZE"
)


def _load_by_path(name: str, path: str, package: bool = False) -> None:
    """Execute ``path`` as module ``name`` (cached bytecode), skipping parent packages.
    Where Python writes no bytecode (``PYTHONDONTWRITEBYTECODE``), the code comes from
    lazyslurm's own cache (:mod:`lazyslurm.bytecode`, loaded first): compiling these
    two files was most of a small task's cost."""
    import _frozen_importlib as boot
    import _frozen_importlib_external as ext

    where = [os.path.dirname(path)] if package else None
    spec = ext.spec_from_file_location(name, path, submodule_search_locations=where)
    module = boot.module_from_spec(spec)
    cached = sys.modules.get("lazyslurm.bytecode") if sys.dont_write_bytecode else None
    sys.modules[name] = module
    try:
        if cached is not None:
            exec(cached.code_of(path), module.__dict__)
        else:
            spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def safe_path(path: list[str], cwd: str) -> None:
    """Insert ``cwd`` into ``path`` (``sys.path``) right after the standard library's
    entries (before site-packages, so the user's modules there still come before
    installed ones, as they did when it came first).

    >>> std = os.path.dirname(os.__file__)
    >>> p = ["/pp", std, std + "/lib-dynload", "/site"]
    >>> safe_path(p, "/job"); p == ["/pp", std, std + "/lib-dynload", "/job", "/site"]
    True
    """
    std = os.path.dirname(os.__file__)
    major, minor = sys.version_info[:2]
    zipped = os.path.join(os.path.dirname(std), f"python{major}{minor}.zip")
    last = len(path) - 1  # no standard library seen: at the end
    for i, entry in enumerate(path):
        if entry in (std, zipped) or entry.startswith(std + os.sep):
            last = i
    path.insert(last + 1, cwd)


def main(argv: list[str], *, own_process: bool = False) -> int:
    """Run what ``argv`` says; ``own_process``: this is the runner's own process (a pack's
    child ends it as usual, :func:`~lazyslurm.runner.run_slurm_element`)."""
    # task output reaches its log file line by line, so job.tail(follow=True) streams it
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    if argv == ["--serve"]:
        from lazyslurm.runner import serve

        proto = os.dup(1)
        os.dup2(2, 1)  # stray prints never corrupt the protocol
        try:
            serve(sys.stdin, proto)
        except KeyboardInterrupt:  # a signal sent to this worker while idle: quietly
            return 130
        return 0
    mode = argv[0] if argv and argv[0] in ("--rank", "--gather") else ""
    args = argv[1:] if mode else argv
    if len(args) != (3 if mode == "--gather" else 2):
        print(USAGE, file=sys.stderr)
        return 2
    index = os.environ.get("SLURM_ARRAY_TASK_ID")
    if index is None:
        print("lazyslurm.runner: SLURM_ARRAY_TASK_ID is not set", file=sys.stderr)
        return 2
    if mode == "--rank":
        from lazyslurm.runner import run_rank

        return run_rank(args[0], args[1], int(index), os.environ)
    if mode == "--gather":
        from lazyslurm.runner import gather

        return gather(args[0], args[1], int(index), int(args[2]))
    from lazyslurm.runner import run_slurm_element

    return run_slurm_element(args[0], args[1], int(index), env=os.environ, own_process=own_process)


if __name__ == "__main__":
    if not sys.flags.safe_path:  # the runner's directory (by path) or the cwd (-m) came first
        del sys.path[0]
    safe_path(sys.path, os.getcwd())
    if not __package__ and "lazyslurm.runner" not in sys.modules:  # started by path
        here = os.path.dirname(os.path.abspath(__file__))
        if sys.dont_write_bytecode:  # small: compiled; then it serves the two below
            _load_by_path("lazyslurm.bytecode", os.path.join(os.path.dirname(here), "bytecode.py"))
        _load_by_path("lazyslurm.store", os.path.join(os.path.dirname(here), "store.py"))
        _load_by_path("lazyslurm.runner", os.path.join(here, "__init__.py"), package=True)
    import faulthandler  # built in: a segfault's Python traceback goes to the element's log

    from lazyslurm.runner import watch_interrupts

    faulthandler.enable()
    watch_interrupts()  # a task's own KeyboardInterrupt is its failure, a SIGINT stops it
    sys.exit(main(sys.argv[1:], own_process=True))
