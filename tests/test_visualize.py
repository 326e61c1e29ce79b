"""visualize(): pictures of the graph (level tasks) and of the plan (level jobs).

Most tests render real SVG with graphviz's ``dot`` and look for text in it.
"""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import graphviz
import pytest

import lazyslurm
from lazyslurm import Cluster, submit, task, visualize
from lazyslurm.errors import (
    GraphvizNotFoundError,
    InvalidOptionError,
    LazySlurmError,
    OptionTypeError,
)

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz dot not installed")
ROOT = Path(lazyslurm.__file__).resolve().parents[1]


@task(time="00:03:00", mem="256M")
def split_dataset(path: str, num_chunks: int) -> list[dict]:
    return [{"chunk_id": i, "source": path} for i in range(num_chunks)]


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def process_chunk(chunk_id: int, source: str) -> int:
    return chunk_id


@task(time="00:03:00", mem="256M")
def merge_results(results: list[int]) -> int:
    return sum(results)


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def stage1(x: str) -> str:
    return f"1({x})"


@task(time="00:03:00", mem="256M", cpus_per_task=1)
def stage2(x: str) -> str:
    return f"2({x})"


@task
def inc(x: int) -> int:
    return x + 1


@task
def add(*xs: int) -> int:
    return sum(xs)


@task
def total(xs: list[int]) -> int:
    return sum(xs)


@task
def fragile(x: int) -> int:
    if x == 3:
        msg = "boom"
        raise ValueError(msg)
    return x


def fan_out():
    split = split_dataset("data.csv", 5, nout=5)
    return merge_results(process_chunk.map(split))


def svg(*exprs, **options) -> str:
    return visualize(*exprs, **options).pipe(format="svg").decode()


def texts(svg_text: str) -> list[str]:
    """The text elements of an SVG, unescaped."""
    found = re.findall(r"<text[^>]*>([^<]*)</text>", svg_text)
    return [t.replace("&#45;", "-").replace("&amp;", "&") for t in found]


def count(svg_text: str, cls: str) -> int:
    return len(re.findall(rf'class="{cls}"', svg_text))


# --------------------------------------------------------------------------- level tasks


@needs_dot
def test_tasks_level_collapses_a_mapped_array_into_one_node():
    """A map is one node named with its index range; single calls show the task name."""
    out = svg(fan_out())
    assert {"split_dataset", "process_chunk [0-4]", "merge_results"} <= set(texts(out))
    assert count(out, "node") == 3
    assert count(out, "edge") == 2


@needs_dot
def test_tasks_level_keeps_a_10000_element_sweep_to_one_node():
    """Ten thousand elements (ten Slurm array chunks) are still one node."""
    sweep = total(inc.map(range(10_000)))
    out = svg(sweep)
    assert "inc [0-9999]" in texts(out)
    assert count(out, "node") == 2
    assert count(out, "edge") == 1


@needs_dot
def test_views_are_not_nodes_and_edges_are_deduplicated():
    """job[i] and job.attr point at their job; many element edges make one edge."""
    split = split_dataset("d", 3, nout=3)
    chunks = process_chunk.map(split)
    out = svg(add(split[0], split.source, total(chunks)))
    assert set(texts(out)) == {"split_dataset", "process_chunk [0-2]", "total", "add"}
    assert count(out, "node") == 4
    # split -> chunks, chunks -> total, total -> add, split -> add (two views, one edge)
    assert count(out, "edge") == 4


@needs_dot
def test_sibling_calls_collapse_like_the_planner_merges_them():
    """A Python loop of calls is planned as one array job, and drawn as one node."""
    out = svg(total([inc(i) for i in range(3)]))
    assert "inc [0-2]" in texts(out)


@needs_dot
def test_tasks_level_draws_ordering_only_edges_dashed():
    """An edge that only orders (task.after) is dashed at level tasks."""
    first = inc(1)
    dot = visualize(inc.after(first)(2))
    assert "style=dashed" in dot.source
    assert count(dot.pipe(format="svg").decode(), "edge") == 1


# --------------------------------------------------------------------------- level jobs


@needs_dot
def test_jobs_level_labels_an_element_wise_pipeline_aftercorr():
    """Element i needing element i of the previous array is an aftercorr edge."""
    out = svg(stage2.map(stage1.map(["a", "b", "c"])), level="jobs")
    words = texts(out)
    assert words.count("aftercorr") == 1
    assert "afterok" not in words
    assert {"stage1 [0-2]", "stage2 [0-2]"} <= set(words)


@needs_dot
def test_jobs_level_labels_a_fan_in_afterok_and_shows_resources():
    """A fan-in waits for the whole array (afterok); nodes show counts and resources."""
    out = svg(fan_out(), level="jobs")
    words = texts(out)
    assert words.count("afterok") == 2
    assert "process_chunk [0-4]" in words
    assert "aj1 · 5 elements" in words
    assert "aj0 · 1 element" in words
    assert "time 3min · mem 256M · cpus 1" in words
    assert "time 3min · mem 256M" in words


@needs_dot
def test_jobs_level_shows_throttle_gpus_and_partition():
    """Throttle (max_concurrent), gpus and partition appear on the array job."""
    big = inc.options(gpus=2, partition="debug", max_concurrent=4, time="1:00:00")
    words = texts(svg(total(big.map(range(12))), level="jobs"))
    assert "time 60min · gpus 2 · partition debug" in words
    assert "throttle 4 at a time" in words
    assert "aj0 · 12 elements" in words


@needs_dot
def test_jobs_level_titles_each_chunk_with_its_own_range(tmp_path):
    """A sweep chunked into several array jobs: each chunk's title shows its own range."""
    with Cluster("sync", workdir=tmp_path, max_array_size=1000):
        words = texts(svg(total(inc.map(range(2500))), level="jobs"))
    assert {"inc [0-999]", "inc [1000-1999]", "inc [2000-2499]"} <= set(words)
    assert "chunk 3/3 (elements 2000-2499)" in words


@needs_dot
def test_jobs_level_labels_ordering_only_dependencies():
    """A dependency from task.after without data is labelled ordering."""
    first = inc(1)
    out = svg(add.after(first)(2), level="jobs")
    assert texts(out).count("ordering") == 1
    assert "afterok" not in texts(out)


def test_jobs_level_draws_stages_as_ranks():
    """Each stage is a rank=same subgraph with a stage label."""
    src = visualize(fan_out(), level="jobs").source
    assert src.count("rank=same") == 3
    for s in range(3):
        assert f'"stage {s}"' in src


@needs_dot
def test_jobs_level_splits_arrays_larger_than_the_cluster_limit(tmp_path):
    """With a cluster's max_array_size, big arrays are drawn as their chunks."""
    cl = Cluster("sync", workdir=tmp_path, max_array_size=4)
    words = texts(svg(total(inc.map(range(10))), level="jobs", cluster=cl))
    assert "chunk 1/3 (elements 0-3)" in words
    assert "chunk 3/3 (elements 8-9)" in words
    assert words.count("afterok") == 3


@needs_dot
def test_jobs_level_cost_annotates_the_worst_case():
    """cost=True adds each array job's worst case (core-hours, GPU-hours) from its limits."""
    gpu = inc.options(gpus=2, time="1:30:00", cpus_per_task=4)
    words = texts(svg(total(gpu.map(range(10))), level="jobs", cost=True))
    assert "worst 60 core-h · 30 GPU-h" in words  # 10 x 4 cpus x 1.5 h; 10 x 2 GPUs x 1.5 h
    assert "worst unbounded core-h" in words  # total has no time limit


def test_cost_of_a_run_and_of_a_re_attached_run(tmp_path):
    """cost=True also annotates a run's array jobs, in its process and re-attached."""
    with Cluster("sync", workdir=tmp_path) as cl:
        run = submit(total(inc.options(time=30).map(range(4))), progress=False)
        run.result()
        assert "worst 2 core-h" in run.visualize(level="jobs", cost=True).source
        attached = lazyslurm.Run.attach(run.id, cl)
        assert "worst 2 core-h" in visualize(run=attached, level="jobs", cost=True).source


def test_cost_needs_the_jobs_level():
    """cost=True at level tasks is refused with the fix."""
    with pytest.raises(InvalidOptionError, match="level='jobs'"):
        visualize(total(inc.map(range(3))), cost=True)


def test_drawing_never_starts_a_backend(tmp_path):
    """visualize reads a cluster's session memory but does not create its backend."""
    cl = Cluster("local", workdir=tmp_path)
    with cl:
        visualize(fan_out(), level="jobs")
        visualize(fan_out(), cluster=cl)
        assert cl._backend is None


def test_a_running_backend_gives_the_array_size_limit(tmp_path):
    """Once the backend exists, its max_array_size is used."""
    cl = Cluster("sync", workdir=tmp_path, max_array_size=5)
    cl.backend  # noqa: B018 - start it
    src = visualize(inc.map(range(10)), level="jobs", cluster=cl).source
    assert "chunk 2/2" in src
    cl.close()


# --------------------------------------------------------------------------- states and cache


@needs_dot
def test_states_colour_nodes_with_counts_and_a_legend():
    """A collapsed node takes its most pressing state and shows the counts."""
    merged = fan_out()
    chunks = merged.deps
    states = {chunks[0]: "DONE", chunks[1]: "done", chunks[2]: "RUNNING", chunks[3]: "FAILED"}
    states[chunks[4].key] = "PENDING"
    states[merged] = "CANCELLED"
    dot = visualize(merged, states=states)
    out = dot.pipe(format="svg").decode()
    words = texts(out)
    assert "2 done · 1 running · 1 pending · 1 failed" in words
    assert "cancelled" in words
    assert "cluster_legend" in dot.source
    for state in ("pending", "running", "done", "failed"):
        assert state in words
    assert 'fill="#ffa8a8"' in out  # failed
    assert 'fill="#ffd8a8"' in out  # cancelled


def test_unknown_states_are_rejected():
    """A state outside PENDING, RUNNING, DONE, FAILED, CANCELLED is an error."""
    job = inc(1)
    with pytest.raises(InvalidOptionError, match="COMPLETED"):
        visualize(job, states={job: "COMPLETED"})
    with pytest.raises(OptionTypeError):
        visualize(job, states=["DONE"])


@needs_dot
def test_cached_nodes_are_greyed_and_labelled_cached():
    """Keys given in cached= are grey and say cached, at both levels."""
    split = split_dataset("d", 3, nout=3)
    chunks = process_chunk.map(split)
    merged = merge_results(chunks)
    out = svg(merged, cached=[split, chunks[0], chunks[1]])
    words = texts(out)
    assert "split_dataset" in words and "cached" in words
    assert "2 cached · 1 to run" in words
    assert 'fill="#e9ecef"' in out
    jobs = svg(merged, level="jobs", cached=[split, chunks[0], chunks[1]])
    words = texts(jobs)
    # one element left to run; the cached ones are inputs read from the store
    assert "process_chunk" in words and "aj0 · 1 element" in words
    assert "process_chunk \N{MULTIPLICATION SIGN}2" in words and "2 cached" in words
    assert 'fill="#e9ecef"' in jobs


@needs_dot
def test_inputs_only_a_cached_node_needs_are_not_needed():
    """An uncomputed node needed only by cached nodes will not run: drawn as not needed."""
    a = inc(1)
    b = inc(a)
    out = svg(total([b]), cached=[b])
    assert "not needed" in texts(out)


@needs_dot
def test_session_results_are_drawn_cached(tmp_path):
    """What the cluster session already computed is cached; the jobs level omits it."""
    with Cluster("sync", workdir=tmp_path) as cl:
        inc.map(range(3)).compute()
        expr = total(inc.map(range(3)))
        words = texts(svg(expr))
        assert "inc [0-2]" in words and "3 cached" in words
        words = texts(svg(expr, level="jobs"))
        assert "inc \N{MULTIPLICATION SIGN}3" in words
        assert not any(w.startswith("inc [") for w in words)
        assert "total" in words
        assert cl.session.computed()


@needs_dot
def test_a_run_is_coloured_by_its_last_poll(tmp_path):
    """run= (or a Run among the arguments) draws the run's plan with its states."""
    with Cluster("sync", workdir=tmp_path):
        run = submit(total(fragile.map(range(5))))
        pending = texts(svg(run=run, level="jobs"))
        assert "5 pending" in pending
        run.wait()
        words = texts(svg(run))
        assert "fragile [0-4]" in words
        assert "4 done · 1 failed" in words
        assert "cancelled" in words  # the fan-in never ran
        words = texts(svg(run, level="jobs"))
        assert "aj0 · 5 elements" in words and "4 done · 1 failed" in words


# --------------------------------------------------------------------------- files and formats


@needs_dot
@pytest.mark.parametrize(
    ("name", "magic"),
    [("pic.svg", b"<svg"), ("pic.png", b"\x89PNG"), ("pic.pdf", b"%PDF"), ("pic.dot", b"digraph")],
)
def test_filename_suffix_chooses_the_format(tmp_path, name, magic):
    """svg, png and pdf are rendered by dot; .dot writes the DOT text."""
    path = tmp_path / name
    dot = visualize(fan_out(), filename=path, level="jobs")
    data = path.read_bytes()
    assert magic in data[:400]
    if name.endswith(".dot"):
        assert data.decode() == dot.source


@needs_dot
def test_format_overrides_the_suffix_and_svg_is_the_default(tmp_path):
    """format= wins over the suffix; a name without suffix gets .svg."""
    visualize(fan_out(), filename=tmp_path / "pic.out", format="png")
    assert (tmp_path / "pic.out").read_bytes().startswith(b"\x89PNG")
    visualize(fan_out(), filename=tmp_path / "pic")
    assert b"<svg" in (tmp_path / "pic.svg").read_bytes()
    assert not (tmp_path / "pic").exists()


def test_unknown_formats_and_options_are_rejected(tmp_path):
    """A suffix or option value graphviz cannot use is a clear error."""
    with pytest.raises(InvalidOptionError, match="suffix"):
        visualize(fan_out(), filename=tmp_path / "pic.xyz")
    with pytest.raises(InvalidOptionError, match="format"):
        visualize(fan_out(), filename=tmp_path / "pic", format="nope")
    with pytest.raises(InvalidOptionError, match="level"):
        visualize(fan_out(), level="slurm")
    with pytest.raises(InvalidOptionError, match="rankdir"):
        visualize(fan_out(), rankdir="up")


def test_rankdir_is_passed_to_graphviz():
    """rankdir sets the layout direction."""
    assert "rankdir=LR" in visualize(fan_out(), rankdir="LR").source


def test_without_dot_the_source_works_and_rendering_says_how_to_install(tmp_path, monkeypatch):
    """No dot on PATH: DOT text and .dot files still work; images raise a clear error."""
    monkeypatch.setenv("PATH", "")
    dot = visualize(fan_out(), level="jobs")
    assert "process_chunk [0-4]" in dot.source
    visualize(fan_out(), filename=tmp_path / "pic.dot")
    assert (tmp_path / "pic.dot").read_text().startswith("digraph")
    with pytest.raises(GraphvizNotFoundError) as info:
        visualize(fan_out(), filename=tmp_path / "pic.svg")
    err = info.value
    assert isinstance(err, RuntimeError) and isinstance(err, LazySlurmError)
    assert isinstance(err.__cause__, graphviz.ExecutableNotFound)
    message = str(err)
    assert "pic.svg" in message and "`dot`" in message
    for how in ("apt-get install graphviz", "conda install graphviz", "brew install graphviz"):
        assert how in message
    assert not (tmp_path / "pic.svg").exists()
    assert str(pickle.loads(pickle.dumps(err))) == message


# --------------------------------------------------------------------------- entry points


@needs_dot
def test_lazy_values_have_a_visualize_method(tmp_path):
    """Job.visualize() and JobArray.visualize() return a Digraph and can write files."""
    arr = inc.map(range(4))
    dot = arr.visualize(filename=tmp_path / "arr.svg")
    assert isinstance(dot, graphviz.Digraph)
    assert "inc [0-3]" in texts((tmp_path / "arr.svg").read_text())
    assert "total" in total(arr).visualize(level="jobs").source
    assert "split_dataset" in split_dataset("d", 2, nout=2)[0].visualize().source


@needs_dot
def test_the_digraph_displays_inline_in_jupyter():
    """The returned Digraph has an SVG mimebundle for notebooks."""
    bundle = visualize(fan_out())._repr_mimebundle_()
    assert "process_chunk [0-4]" in texts(bundle["image/svg+xml"])


def test_visualize_is_exported_and_the_error_listed():
    """lazyslurm.visualize is the function; the new error is in errors.__all__."""
    assert lazyslurm.visualize is visualize
    assert "GraphvizNotFoundError" in lazyslurm.errors.__all__
    assert lazyslurm.errors.__all__ == sorted(lazyslurm.errors.__all__)


def test_importing_lazyslurm_does_not_import_graphviz():
    """graphviz is imported when drawing, not when lazyslurm.draw is imported."""
    code = (
        "import sys, lazyslurm, lazyslurm.draw; "
        "from lazyslurm import visualize; "
        "assert 'graphviz' not in sys.modules, 'graphviz imported'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_nothing_to_draw_gives_an_empty_picture():
    """Plain values have no jobs: the picture is empty, without a legend."""
    src = visualize(1, [2, 3]).source
    assert "->" not in src and "legend" not in src
