"""Every ```python block of README.md and docs/*.md runs, so the docs cannot drift.

A page's blocks run in order in one fresh interpreter (a page builds on its earlier blocks),
in a temporary directory, with a private work directory and home, on what the blocks
themselves choose (the embedded backends). An HTML comment on the line before a block,
which a reader does not see, says more:

    <!-- needs: slurm -->       the block needs a Slurm cluster (sbatch on this host):
    <!-- needs: ssh -->         or one reached over SSH, or GPUs (``needs: slurm, gpu``);
                                it is skipped here (tests with the real cluster cover it)
    <!-- file: sweep.py -->     the block is a file of the page's project (a module, a
                                pyproject.toml): written to the directory, not run
                                (``file: pyproject.toml, append``: added to its end)

A python block whose first line is ``# NAME.py`` is a script the page runs with
``python NAME.py``: it is written and run so, in a process of its own. If it reads
``sys.argv[1]`` it gets the id of the newest run in the directory's stores (the page
passes the run it just made). One that ends itself with SIGKILL (to show a submitter
that died) may.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)
MARK = re.compile(r"<!--\s*(needs|file):\s*([\w ,./-]+?)\s*-->\s*$")
SCRIPT = re.compile(r"#\s*(\w+\.py)\s*$")
KNOWN_NEEDS = {"slurm", "ssh", "gpu"}

DRIVER = r"""
import glob, json, os, signal, subprocess, sys, traceback

def newest_run():
    dirs = [d for d in glob.glob("**/runs/*", recursive=True) if os.path.isdir(d)]
    dirs += glob.glob(os.path.join(os.environ["LAZYSLURM_WORKDIR"], "runs", "*"))
    return os.path.basename(max(dirs, key=os.path.getmtime)) if dirs else "no-run"

sys.path.insert(0, os.getcwd())  # the page's modules (sweep.py, ...), as for a script
namespace = {"__name__": "__main__"}
for step in json.loads(sys.stdin.read()):
    kind, line, name, code = step
    where = f"{sys.argv[1]}:{line}"
    if kind == "file":
        name, _, mode = name.partition(",")
        with open(name.strip(), "a" if mode.strip() == "append" else "w") as fh:
            fh.write(code)
        continue
    if kind == "script":
        with open(name, "w") as fh:
            fh.write(code)
        argv = [newest_run()] if "sys.argv[1]" in code else []
        proc = subprocess.run([sys.executable, name, *argv], capture_output=True, text=True)
        if proc.returncode != 0 and not (
            proc.returncode == -signal.SIGKILL and "SIGKILL" in code
        ):
            print(f"SCRIPT {name} AT {where} FAILED ({proc.returncode})", file=sys.stderr)
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            sys.exit(1)
        continue
    try:
        exec(compile(code, where, "exec"), namespace)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            print(f"BLOCK AT {where} exited {exc.code!r}", file=sys.stderr)
            sys.exit(1)
    except BaseException:
        print(f"BLOCK AT {where} FAILED", file=sys.stderr)
        traceback.print_exc()
        sys.exit(1)
"""


def fenced_blocks(page: Path) -> list[tuple[int, str, str, str, str]]:
    """``(line, language, code, marker kind, marker value)`` of each fenced block."""
    text = page.read_text()
    out = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        marker = MARK.search(before)
        kind, value = (marker.group(1), marker.group(2)) if marker else ("", "")
        out.append((line, match.group(1), match.group(2), kind, value))
    return out


def steps(page: Path) -> list[tuple[str, int, str, str]]:
    """What the driver does with the page: ``(kind, line, file name, code)``."""
    out = []
    for line, lang, code, kind, value in fenced_blocks(page):
        if kind == "file":
            out.append(("file", line, value, code))
        elif lang != "python" or kind == "needs":
            continue
        elif SCRIPT.match(code.split("\n", 1)[0]):
            out.append(("script", line, SCRIPT.match(code.split("\n", 1)[0]).group(1), code))
        else:
            out.append(("exec", line, "", code))
    return out


def test_the_blocks_are_found_and_markers_read() -> None:
    """The extraction itself: blocks, their line numbers and markers."""
    found = {p.name: fenced_blocks(p) for p in PAGES}
    python = [b for blocks in found.values() for b in blocks if b[1] == "python"]
    assert len(python) > 40
    readme_first = next(b for b in found["README.md"] if b[1] == "python")
    assert readme_first[3:] == ("needs", "slurm")  # its first block runs on Slurm too
    for blocks in found.values():
        for _line, _lang, _code, kind, value in blocks:
            if kind == "needs":
                assert set(re.split(r"[,\s]+", value)) <= KNOWN_NEEDS, value
    assert ("file", "sweep.py") in {(b[3], b[4]) for b in found["runs.md"]}


@pytest.mark.parametrize(
    "page", [p for p in PAGES if any(b[1] == "python" for b in fenced_blocks(p))],
    ids=lambda p: p.name,
)  # fmt: skip
def test_the_python_blocks_of_a_page_run(page: Path, tmp_path: Path) -> None:
    """The page's runnable blocks, in order, in one interpreter (seconds a page)."""
    todo = steps(page)
    if not any(kind != "file" for kind, *_ in todo):
        pytest.skip(f"every python block of {page.name} needs a cluster")
    home = tmp_path / "home"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LAZYSLURM_", "SLURM_"))},
        "PYTHONPATH": str(REPO),
        "HOME": str(home),  # no profile or ~/.lazyslurm of the user's
        "LAZYSLURM_WORKDIR": str(tmp_path / "work"),
        "COLUMNS": "100",
    }
    out = subprocess.run(
        [sys.executable, "-c", DRIVER, page.relative_to(REPO).as_posix()],
        input=json.dumps(todo), capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, f"{page.name}:\n{out.stderr[-5000:]}"
