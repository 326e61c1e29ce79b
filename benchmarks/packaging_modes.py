#!/usr/bin/env python
"""What each packaging mode costs: the seed's pipeline (9 elements), first run on a cold
cluster account and later runs with everything warm, in one run of this script.

    source /tmp/lazyslurm-test-cluster/env.sh && python benchmarks/packaging_modes.py

Needs the test cluster (tests/cluster/start.sh, as root: the container mode runs podman in
jobs on this host). The peer is ``inherit`` with lazyslurm copied to the cluster by hand
(what users had to do before): ratios are against its warm run. ``first`` uses a new
workdir (and, for container, an image tag no earlier run had); ``warm`` is a new session
on the same workdir. Printed: wall time of connect + probe + staging + submit + results,
and the client-side build steps.
"""

from __future__ import annotations

import os
import sys
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


def timed(make, expr, expected) -> tuple[float, dict]:
    t0 = time.perf_counter()
    c = make()
    with c:
        (out,) = compute(expr)
        builders = c.backend.packager.builders
        steps = {k: v for b in builders.values() for k, v in getattr(b, "timings", {}).items()}
    assert out == expected, out
    return time.perf_counter() - t0, steps


def main() -> None:
    expected = [f"final_transform_{i}(preprocessed_data_{i + 1})" for i in range(3)]
    loud_in = [f"t{i}" for i in range(9)]
    loud_out = [f"T{i}!" for i in range(9)]
    site = hand_installed_site()
    e = os.environ
    state = Path(e.get("LAZYSLURM_TEST_CLUSTER_DIR", "/tmp/lazyslurm-test-cluster"))
    if "LAZYSLURM_TEST_REGISTRY" not in e and (state / "containers" / "env").is_file():
        for line in (state / "containers" / "env").read_text().splitlines():  # containers.sh
            key, _, value = line.partition("=")
            e.setdefault(key, value)
    import tempfile

    os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="lazyslurm-bench-cache-")  # cold
    rows = []

    def ssh(packaging, wd, expr, want, **kw):
        def make():
            return Cluster("ssh", workdir=wd, poll_max_s=0.5, packaging=packaging,
                           **ssh_options(), **kw)  # fmt: skip

        first = timed(make, expr, want)
        warm = timed(make, expr, want)
        return first, warm

    tag = uuid.uuid4().hex[:8]
    rows.append(("inherit (hand-copied site, peer)", *ssh(
        "inherit", f"~/lazyslurm-bench/inh-{tag}", pp.pipeline_graph(), expected,
        python="/usr/bin/python3", setup=[f"export PYTHONPATH={site}"])))  # fmt: skip
    rows.append(("by-value (nothing installed)", *ssh(
        "by-value", f"~/lazyslurm-bench/bv-{tag}", pp.pipeline_graph(), expected)))
    wheel_project = str(REPO / "tests" / "data" / "wheelproj")
    rows.append(("wheel (project lzdemo + attrs)", *ssh(
        "wheel", f"~/lazyslurm-bench/wh-{tag}", pp.pipeline_graph(), expected,
        packaging_project=wheel_project)))  # fmt: skip
    rows.append(("wheel, 9 calls into the wheel's package", *ssh(
        "wheel", f"~/lazyslurm-bench/wh2-{tag}", loud.map(loud_in), loud_out,
        packaging_project=wheel_project)))  # fmt: skip
    if "LAZYSLURM_TEST_REGISTRY" in e:
        conf = {"CONTAINERS_CONF": e["LAZYSLURM_TEST_CONTAINERS_CONF"],
                "CONTAINERS_STORAGE_CONF": e["LAZYSLURM_TEST_CONTAINERS_STORAGE_CONF"]}
        os.environ.update(conf)
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

        first = timed(make, pp.pipeline_graph(), expected)
        warm = timed(make, pp.pipeline_graph(), expected)
        rows.append(("container (podman run in jobs, Slurm here)", first, warm))
    peer = rows[0][2][0]
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S')} UTC; load average at end: {load}")
    print(f"{'mode':44} {'first s':>8} {'warm s':>7} {'warm/peer':>9}  first-run steps")
    for name, (f, steps), (w, _) in rows:
        detail = ", ".join(f"{k} {v:.2f}" for k, v in steps.items())
        print(f"{name:44} {f:8.2f} {w:7.2f} {w / peer:9.2f}  {detail}")


if __name__ == "__main__":
    main()
