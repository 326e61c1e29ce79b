#!/usr/bin/env python
"""What packaging costs, in one run of this script (two scenarios; ``--scenario``):

``datascience`` (issue 26): a project whose pyproject declares numpy and scikit-learn, a
16-configuration sweep (each element fits a small scikit-learn model), over SSH to the
test cluster's ``lsuser`` (who has only Debian's Python). ``packaging="wheel"``: the
first run (new workdir, cold lazyslurm client cache; pip's own download cache may be
warm), a warm run (a new session, nothing changed), a run after a one-line edit of the
project (a comment), then ``--edits`` more edits, each run once; printed: each run's wall
time, how many venvs ``WORKDIR/code`` holds, and the disk the work directory's code takes
after the edits against one environment. Goal: the edit run at most 1.2x the warm run,
with no new venv; disk after 10 edits at most 1.1x one environment. Then the container
equivalent (``slurm`` on this host, podman in jobs, the loopback registry): an image
with the same dependencies from ``packaging_wheelhouse`` (wheels downloaded on the
client, installed offline), first run (build and push), warm run, run after an edit (the
project's code travels by value: no new image).

``modes``: the seed's pipeline (9 elements) in every mode, first and warm, against
``inherit`` with lazyslurm copied to the cluster by hand (the peer).

    source /tmp/lazyslurm-test-cluster/env.sh && python benchmarks/packaging_modes.py

Needs the test cluster (tests/cluster/start.sh, as root: the container runs use podman in
jobs on this host), numpy and scikit-learn on the client (as the project's user has
them: ``pip install numpy scikit-learn``) and pip able to download them (the wheels are kept
in ``~/.cache/lazyslurm-bench/wheelhouse`` for the container scenario; pip caches the
downloads of the wheel scenario). Printed: wall time of connect + probe + staging +
submit + results, and the client-side steps of the first run.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "data" / "wheelproj"))

import lzdemo  # noqa: E402

from examples import parallelization_patterns as pp  # noqa: E402
from lazyslurm import Cluster, compute, task  # noqa: E402
from lazyslurm.backends.shell import SSHShell  # noqa: E402

CONFIGS = [{"alpha": a, "depth": d} for a in (0.01, 0.1, 1.0, 10.0) for d in (2, 3, 4, 5)]
PROJECT = Path(tempfile.gettempdir()) / "lazyslurm-bench-dsproj"
MODEL = '''"""A small model to sweep (the benchmark's project)."""

import numpy as np
from sklearn.datasets import make_regression
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.model_selection import cross_val_score


def fit(cfg):
    x, y = make_regression(n_samples=400, n_features=20, noise=5.0, random_state=0)
    ridge = cross_val_score(Ridge(alpha=cfg["alpha"]), x, y, cv=3).mean()
    trees = GradientBoostingRegressor(max_depth=cfg["depth"], n_estimators=20, random_state=0)
    boosted = cross_val_score(trees, x, y, cv=3).mean()
    return {**cfg, "ridge": float(np.round(ridge, 4)), "boosted": float(np.round(boosted, 4))}
'''


def write_project(root: Path) -> None:
    """The data-science project: numpy and scikit-learn declared, one module."""
    if root.exists():
        shutil.rmtree(root)
    (root / "dsproj").mkdir(parents=True)
    (root / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["flit_core>=3.4"]\nbuild-backend = "flit_core.buildapi"\n'
        '[project]\nname = "dsproj"\nversion = "0.1.0"\ndescription = "sweep"\n'
        'dependencies = ["numpy", "scikit-learn"]\n'
    )
    (root / "dsproj" / "__init__.py").write_text("")
    (root / "dsproj" / "model.py").write_text(MODEL)


def edit_project(root: Path, n: int) -> None:
    """A one-line edit: a comment."""
    with open(root / "dsproj" / "model.py", "a") as f:
        f.write(f"# edit {n}\n")


write_project(PROJECT)
sys.path.insert(0, str(PROJECT))
from dsproj.model import fit  # noqa: E402  (the client imports it from the source tree)


@task
def train(alpha: float, depth: int) -> dict:
    return fit({"alpha": alpha, "depth": depth})


@task
def loud(text: str) -> str:
    return lzdemo.shout(text)


def ssh_options() -> dict:
    e = os.environ
    return dict(
        hostname=e["LAZYSLURM_TEST_SSH_HOST"],
        port=int(e["LAZYSLURM_TEST_SSH_PORT"]),
        username=e["LAZYSLURM_TEST_SSH_USER"],
        key_filename=e["LAZYSLURM_TEST_SSH_KEY"],
        known_hosts=e["LAZYSLURM_TEST_SSH_KNOWN_HOSTS"],
    )


def timed(make, expr, check) -> tuple[float, dict]:
    t0 = time.perf_counter()
    c = make()
    with c:
        (out,) = compute(expr, progress=False)
        builders = c.backend.packager.builders
        steps = {k: v for b in builders.values() for k, v in getattr(b, "timings", {}).items()}
    wall = time.perf_counter() - t0
    check(out)
    return wall, steps


def code_dir(workdir: str) -> Path:
    """WORKDIR/code of the SSH test user, read as root (this script runs as root)."""
    home = Path(pwd.getpwnam(os.environ["LAZYSLURM_TEST_SSH_USER"]).pw_dir)
    return home / workdir.removeprefix("~/") / "code"


def du_kb(path: Path) -> int:
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) if out else 0


def venvs(code: Path) -> list[str]:
    return sorted(p.name for p in code.glob("venv-*") if p.is_dir())


def steps_text(steps: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in steps.items())


# --------------------------------------------------------------------------- data science


def datascience(edits: int, container: bool) -> None:
    def check(out: list) -> None:
        assert len(out) == len(CONFIGS) and all("boosted" in r for r in out), out

    tag = uuid.uuid4().hex[:8]
    workdir = f"~/lazyslurm-bench/ds-{tag}"

    def make():
        return Cluster(
            "ssh", workdir=workdir, poll_max_s=0.5, packaging="wheel",
            packaging_project=str(PROJECT), **ssh_options(),
        )  # fmt: skip

    write_project(PROJECT)
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="lazyslurm-bench-cache-")  # cold
    code = code_dir(workdir)
    rows = []
    first = timed(make, train.map(CONFIGS), check)
    rows.append(("first run (cold client cache, new workdir)", *first, venvs(code)))
    warm = timed(make, train.map(CONFIGS), check)
    rows.append(("warm run (new session, nothing changed)", *warm, venvs(code)))
    edit_project(PROJECT, 1)
    edited = timed(make, train.map(CONFIGS), check)
    rows.append(("after a one-line edit (a comment)", *edited, venvs(code)))
    env_kb = sum(du_kb(code / v) for v in venvs(code))
    # the load of a shared machine drifts: warm and edit runs alternate, medians compared
    warms, edits_s = [warm[0]], [edited[0]]
    for n in range(2, edits + 1):
        warms.append(timed(make, train.map(CONFIGS), check)[0])
        edit_project(PROJECT, n)
        edits_s.append(timed(make, train.map(CONFIGS), check)[0])
    code_kb = du_kb(code)
    client_kb = du_kb(Path(os.environ["XDG_CACHE_HOME"]) / "lazyslurm")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} UTC; load average at end: {load}")
    print(f"# packaging='wheel', numpy + scikit-learn, {len(CONFIGS)} elements over SSH")
    print(f"{'run':44} {'wall s':>7} {'/warm':>6} {'venvs':>5}  steps")
    for name, wall, steps, vs in rows:
        print(f"{name:44} {wall:7.2f} {wall / warm[0]:6.2f} {len(vs):5d}  {steps_text(steps)}")

    def median(xs: list[float]) -> float:
        xs = sorted(xs)
        return (xs[len(xs) // 2] + xs[(len(xs) - 1) // 2]) / 2

    mw, me = median(warms), median(edits_s)
    print(
        f"{edits} edits, alternating with {len(warms)} warm runs: median edit run {me:.2f} s, "
        f"median warm run {mw:.2f} s: {me / mw:.2f}x; venvs after them: {len(venvs(code))}"
    )
    print(f"  warm runs: {' '.join(f'{x:.1f}' for x in warms)}")
    print(f"  edit runs: {' '.join(f'{x:.1f}' for x in edits_s)}")
    print(
        f"disk: WORKDIR/code {code_kb / 1024:.1f} MB after {edits} edits, one environment "
        f"(venv) {env_kb / 1024:.1f} MB: {code_kb / max(env_kb, 1):.3f}x; client cache "
        f"{client_kb / 1024:.1f} MB"
    )
    if container:
        datascience_container(check)


def wheelhouse() -> Path:
    """numpy, scikit-learn and their dependencies as wheels, downloaded on the client once
    (kept for later runs of the benchmark)."""
    where = Path(os.path.expanduser("~/.cache/lazyslurm-bench/wheelhouse"))
    if not list(where.glob("scikit_learn-*.whl")):
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d",
             str(where), "numpy", "scikit-learn"],
            check=True,
        )  # fmt: skip
    return where


def container_env() -> dict[str, str]:
    e = os.environ
    state = Path(e.get("LAZYSLURM_TEST_CLUSTER_DIR", "/tmp/lazyslurm-test-cluster"))
    if "LAZYSLURM_TEST_REGISTRY" not in e and (state / "containers" / "env").is_file():
        for line in (state / "containers" / "env").read_text().splitlines():  # containers.sh
            key, _, value = line.partition("=")
            e.setdefault(key, value)
    if "LAZYSLURM_TEST_REGISTRY" not in e:
        return {}
    conf = {
        "CONTAINERS_CONF": e["LAZYSLURM_TEST_CONTAINERS_CONF"],
        "CONTAINERS_STORAGE_CONF": e["LAZYSLURM_TEST_CONTAINERS_STORAGE_CONF"],
    }
    os.environ.update(conf)
    return conf


def datascience_container(check) -> None:
    conf = container_env()
    if not conf:
        print("(container scenario skipped: no test registry)")
        return
    e = os.environ
    tag = uuid.uuid4().hex[:8]
    wheels = wheelhouse()
    workdir = f"/tmp/lazyslurm-bench-ds-container-{tag}"

    def make():
        return Cluster(
            "slurm", workdir=workdir, poll_max_s=0.5,
            env={"SLURM_CONF": e["LAZYSLURM_TEST_SLURM_CONF"], **conf},
            packaging="container",
            packaging_registry=f"{e['LAZYSLURM_TEST_REGISTRY']}/bench-ds",
            packaging_tls_verify=False,
            packaging_base_image=e["LAZYSLURM_TEST_BASE_IMAGE"],
            packaging_wheelhouse=str(wheels),
            # a first run as on a new machine: no layer of an earlier benchmark reused
            packaging_build_args=[f"--label=bench={tag}", "--no-cache"],
        )  # fmt: skip

    first = timed(make, train.map(CONFIGS), check)
    warm = timed(make, train.map(CONFIGS), check)
    edit_project(PROJECT, 99)
    edited = timed(make, train.map(CONFIGS), check)
    print(f"# container (podman in Slurm jobs on this host), wheelhouse {wheels}")
    print(f"{'run':44} {'wall s':>7} {'/warm':>6}  steps")
    for name, (wall, steps) in (
        ("first run (build with the wheelhouse, push)", first),
        ("warm run (new session)", warm),
        ("after a one-line edit (code by value)", edited),
    ):
        print(f"{name:44} {wall:7.2f} {wall / warm[0]:6.2f}  {steps_text(steps)}")


# --------------------------------------------------------------------------- every mode


def hand_installed_site() -> str:
    """lazyslurm + cloudpickle + attrs copied for the SSH user (the old way)."""
    import attr
    import attrs
    import cloudpickle

    files: dict[str, bytes] = {}
    for pkg in (REPO / "lazyslurm", *(Path(m.__file__).parent for m in (cloudpickle, attr, attrs))):
        for path in pkg.rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts:
                files[f"{pkg.name}/{path.relative_to(pkg)}"] = path.read_bytes()
    opts = ssh_options()
    with SSHShell(opts.pop("hostname"), **opts) as shell:
        shell.put_files("~/lazyslurm-bench-site", files)
        return f"{shell.home()}/lazyslurm-bench-site"


def modes() -> None:
    expected = [f"final_transform_{i}(preprocessed_data_{i + 1})" for i in range(3)]
    loud_in = [f"t{i}" for i in range(9)]
    loud_out = [f"T{i}!" for i in range(9)]
    site = hand_installed_site()
    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="lazyslurm-bench-cache-")  # cold
    rows = []

    def equal(want):
        def check(out):
            assert out == want, out

        return check

    def ssh(packaging, wd, expr, want, **kw):
        def make():
            return Cluster("ssh", workdir=wd, poll_max_s=0.5, packaging=packaging,
                           **ssh_options(), **kw)  # fmt: skip

        return timed(make, expr, equal(want)), timed(make, expr, equal(want))

    tag = uuid.uuid4().hex[:8]
    rows.append(("inherit (hand-copied site, peer)", *ssh(
        "inherit", f"~/lazyslurm-bench/inh-{tag}", pp.pipeline_graph(), expected,
        python="/usr/bin/python3", setup=[f"export PYTHONPATH={site}"])))  # fmt: skip
    rows.append(
        (
            "by-value (nothing installed)",
            *ssh("by-value", f"~/lazyslurm-bench/bv-{tag}", pp.pipeline_graph(), expected),
        )
    )
    wheel_project = str(REPO / "tests" / "data" / "wheelproj")
    rows.append(("wheel (project lzdemo + attrs)", *ssh(
        "wheel", f"~/lazyslurm-bench/wh-{tag}", pp.pipeline_graph(), expected,
        packaging_project=wheel_project)))  # fmt: skip
    rows.append(("wheel, 9 calls into the wheel's package", *ssh(
        "wheel", f"~/lazyslurm-bench/wh2-{tag}", loud.map(loud_in), loud_out,
        packaging_project=wheel_project)))  # fmt: skip
    conf = container_env()
    if conf:
        e = os.environ
        workdir = f"/tmp/lazyslurm-bench-container-{tag}"

        def make():
            return Cluster(
                "slurm", workdir=workdir, poll_max_s=0.5,
                env={"SLURM_CONF": e["LAZYSLURM_TEST_SLURM_CONF"], **conf},
                packaging="container",
                packaging_registry=f"{e['LAZYSLURM_TEST_REGISTRY']}/bench",
                packaging_tls_verify=False,
                packaging_base_image=e["LAZYSLURM_TEST_BASE_IMAGE"],
                packaging_build_args=[f"--label=bench={tag}"],
            )  # fmt: skip

        first = timed(make, pp.pipeline_graph(), equal(expected))
        warm = timed(make, pp.pipeline_graph(), equal(expected))
        rows.append(("container (podman run in jobs, Slurm here)", first, warm))
    peer = rows[0][2][0]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} UTC; load average at end: {load}")
    print(f"{'mode':44} {'first s':>8} {'warm s':>7} {'warm/peer':>9}  first-run steps")
    for name, (f, steps), (w, _) in rows:
        print(f"{name:44} {f:8.2f} {w:7.2f} {w / peer:9.2f}  {steps_text(steps)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=("datascience", "modes", "all"), default="all")
    parser.add_argument("--edits", type=int, default=10, help="edits measured (default 10)")
    parser.add_argument("--no-container", action="store_true", help="skip the container runs")
    args = parser.parse_args(argv)
    if args.scenario in ("datascience", "all"):
        datascience(args.edits, container=not args.no_container)
    if args.scenario in ("modes", "all"):
        modes()


if __name__ == "__main__":
    main()
