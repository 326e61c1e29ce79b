"""Cluster profiles: where they are found, Cluster.from_profile, LAZYSLURM_PROFILE, errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from lazyslurm import Cluster
from lazyslurm.cluster import default_cluster
from lazyslurm.errors import ClusterConfigError
from lazyslurm.profiles import available_profiles, find_project_file, load_profile


@pytest.fixture(autouse=True)
def home(private_home) -> Path:
    """Every test here runs with a private home (for ~/.config) and no profile selected."""
    return private_home


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """An empty project directory, made the current directory."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def pyproject(root: Path, profiles: str) -> Path:
    header = '[project]\nname = "demo"\n\n'
    return write(root / "pyproject.toml", header + textwrap.dedent(profiles))


# --------------------------------------------------------------------------- finding profiles


def test_a_pyproject_profile_builds_the_cluster(project):
    """[tool.lazyslurm.profiles.NAME] keys become Cluster options; workdir is relative to
    the file's directory."""
    pyproject(
        project,
        """
        [tool.lazyslurm.profiles.dev]
        backend = "local"
        workdir = "work"
        max_workers = 3
        max_array_size = 50
        poll_min_s = 0.1
        poll_max_s = 2
        cache = true
    """,
    )
    c = Cluster.from_profile("dev")
    assert c.backend_name == "local"
    assert c.workdir == project / "work"
    assert (
        c.backend_options["max_workers"],
        c._max_array_size,
        c.poll_min_s,
        c.poll_max_s,
        c.cache,
    ) == (
        3,
        50,
        0.1,
        2,
        True,
    )
    assert c.max_array_size() == 50
    c.close()


def test_max_core_hours_is_a_positive_number_key(project):
    """max_core_hours (the budget) is a profile key: a number > 0 for every backend."""
    write(
        project / "lazyslurm.toml",
        '[profiles.capped]\nbackend = "sync"\nmax_core_hours = 2.5\n'
        '[profiles.zero]\nmax_core_hours = 0\n[profiles.text]\nmax_core_hours = "lots"\n',
    )
    assert Cluster.from_profile("capped").max_core_hours == 2.5
    with pytest.raises(ClusterConfigError, match="'max_core_hours' must be greater than zero"):
        load_profile("zero")
    with pytest.raises(ClusterConfigError, match="'max_core_hours' must be a number"):
        load_profile("text")


def test_lazyslurm_toml_is_read_before_pyproject_in_the_same_directory(project):
    """In one directory lazyslurm.toml comes first (its [profiles.NAME] tables)."""
    pyproject(project, "[tool.lazyslurm.profiles.dev]\nmax_workers = 1\n")
    write(project / "lazyslurm.toml", "[profiles.dev]\nmax_workers = 2\n")
    assert Cluster.from_profile("dev").backend_options["max_workers"] == 2
    assert find_project_file() == project / "lazyslurm.toml"


def test_the_nearest_file_wins_and_a_plain_pyproject_is_passed_over(project, monkeypatch):
    """From a sub-directory the search goes up; a pyproject.toml without [tool.lazyslurm]
    (a sub-package's) does not hide the project's profiles."""
    pyproject(project, "[tool.lazyslurm.profiles.dev]\nmax_workers = 1\n")
    sub = project / "pkg" / "src"
    write(project / "pkg" / "pyproject.toml", '[project]\nname = "pkg"\n')
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)
    assert find_project_file() == project / "pyproject.toml"
    assert Cluster.from_profile("dev").backend_options["max_workers"] == 1

    write(project / "pkg" / "lazyslurm.toml", "[profiles.dev]\nmax_workers = 4\n")
    assert Cluster.from_profile("dev").backend_options["max_workers"] == 4  # nearer


def test_the_user_file_is_a_fallback(project, home, monkeypatch):
    """~/.config/lazyslurm/lazyslurm.toml adds profiles; the project's win on a clash."""
    write(
        home / ".config" / "lazyslurm" / "lazyslurm.toml",
        """
        [profiles.mine]
        max_workers = 5
        [profiles.dev]
        max_workers = 9
    """,
    )
    pyproject(project, "[tool.lazyslurm.profiles.dev]\nmax_workers = 1\n")
    assert Cluster.from_profile("mine").backend_options["max_workers"] == 5
    assert Cluster.from_profile("dev").backend_options["max_workers"] == 1
    assert available_profiles() == {
        "dev": project / "pyproject.toml",
        "mine": home / ".config" / "lazyslurm" / "lazyslurm.toml",
    }
    # without any project file too, and under $XDG_CONFIG_HOME when that is set
    monkeypatch.chdir(home)
    assert Cluster.from_profile("dev").backend_options["max_workers"] == 9
    xdg = home / "xdg"
    write(xdg / "lazyslurm" / "lazyslurm.toml", "[profiles.elsewhere]\nmax_workers = 6\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    assert Cluster.from_profile("elsewhere").backend_options["max_workers"] == 6


def test_overrides_win_over_the_profile(project, tmp_path):
    pyproject(project, '[tool.lazyslurm.profiles.dev]\nmax_workers = 3\nworkdir = "w"\n')
    c = Cluster.from_profile("dev", max_workers=1, workdir=tmp_path / "other")
    assert (c.backend_options["max_workers"], c.workdir) == (1, tmp_path / "other")


def test_slurm_and_ssh_options_reach_the_backend(project):
    """Backend options and the cluster's task defaults, without contacting any cluster."""
    pyproject(
        project,
        """
        [tool.lazyslurm.profiles.hpc]
        backend = "slurm"
        workdir = "/shared/lz"
        python = "/opt/py/bin/python"
        setup = ["module load python", "source venv/bin/activate"]
        env = { SLURM_CONF = "/etc/slurm/slurm.conf" }
        status = "squeue"
        partition = "cpu"
        account = "proj1"
        time = "01:00:00"
        mem = "4G"
        cpus_per_task = 2
        extra_sbatch = ["--exclusive"]

        [tool.lazyslurm.profiles.remote]
        backend = "ssh"
        hostname = "login.example.org"
        port = 2222
        username = "me"
        key_filename = "keys/id_ed25519"
        known_hosts = ["~/.ssh/known_hosts"]
        allow_unknown_hosts = false
        connect_timeout_s = 5
        keepalive_s = 15.5
        workdir = "scratch/lz"
    """,
    )
    hpc = Cluster.from_profile("hpc")
    backend = hpc.backend  # built, not started: nothing runs until it is used
    assert backend.python == "/opt/py/bin/python"
    assert backend.setup[-2:] == ("module load python", "source venv/bin/activate")
    assert backend.shell.env == {"SLURM_CONF": "/etc/slurm/slurm.conf"}
    d = backend.defaults
    assert (d.partition, d.account, d.timeout_min, d.mem_mb, d.cpus_per_task, d.extra_sbatch) == (
        "cpu",
        "proj1",
        60,
        4096,
        2,
        ("--exclusive",),
    )
    remote = Cluster.from_profile("remote")
    assert remote.backend_name == "ssh"
    opts = remote.backend_options
    assert (opts["hostname"], opts["port"], opts["username"]) == ("login.example.org", 2222, "me")
    assert opts["key_filename"] == str(project / "keys" / "id_ed25519")  # relative to the file
    assert opts["known_hosts"] == ["~/.ssh/known_hosts"]
    assert str(remote.workdir) == "scratch/lz"  # a path on the cluster: left as written


def test_lazyslurm_profile_selects_the_default(project, monkeypatch):
    """LAZYSLURM_PROFILE names the profile of from_profile() and of the default cluster."""
    pyproject(
        project,
        """
        [tool.lazyslurm.profiles.a]
        max_workers = 1
        [tool.lazyslurm.profiles.b]
        backend = "sync"
        workdir = "wb"
    """,
    )
    monkeypatch.setenv("LAZYSLURM_PROFILE", "b")
    assert Cluster.from_profile().backend_name == "sync"
    # a name wins over the variable
    assert Cluster.from_profile("a").backend_options["max_workers"] == 1
    default_cluster.cache_clear()
    try:
        c = default_cluster()
        assert (c.backend_name, c.workdir) == ("sync", project / "wb")
    finally:
        default_cluster.cache_clear()


def test_without_a_name_or_the_variable_both_ways_are_explained(project):
    pyproject(project, "[tool.lazyslurm.profiles.dev]\nmax_workers = 1\n")
    with pytest.raises(ClusterConfigError) as err:
        Cluster.from_profile()
    msg = str(err.value)
    assert "LAZYSLURM_PROFILE" in msg and 'from_profile("NAME")' in msg
    assert "dev" in msg  # what there is to choose from


def test_an_unknown_profile_lists_the_profiles_and_the_files_searched(project, home):
    pyproject(
        project,
        """
        [tool.lazyslurm.profiles.dev]
        max_workers = 1
        [tool.lazyslurm.profiles.hpc]
        backend = "slurm"
    """,
    )
    with pytest.raises(ClusterConfigError) as err:
        Cluster.from_profile("gpu")
    msg = str(err.value)
    assert "'gpu'" in msg and "available profiles: dev, hpc" in msg
    assert str(project / "pyproject.toml") in msg
    assert str(home / ".config" / "lazyslurm" / "lazyslurm.toml") in msg


def test_no_project_file_at_all(project):
    with pytest.raises(ClusterConfigError) as err:
        Cluster.from_profile("dev")
    msg = str(err.value)
    assert "no profiles are defined" in msg
    assert f"in {project} or its parents" in msg


# --------------------------------------------------------------------------- bad profile data


def test_an_unknown_key_names_the_file_the_profile_and_the_key(project):
    path = pyproject(project, '[tool.lazyslurm.profiles.hpc]\nbackend = "slurm"\npartiton = "x"\n')
    with pytest.raises(ClusterConfigError) as err:
        Cluster.from_profile("hpc")
    msg = str(err.value)
    assert isinstance(err.value, ValueError)
    assert str(path) in msg
    assert "'hpc'" in msg and "[tool.lazyslurm.profiles.hpc]" in msg
    assert "unknown key 'partiton'" in msg and "did you mean 'partition'" in msg


def test_the_lazyslurm_toml_table_is_named_as_written(project):
    path = write(project / "lazyslurm.toml", '[profiles."big one"]\nworkers = 2\n')
    with pytest.raises(ClusterConfigError) as err:
        load_profile("big one")
    msg = str(err.value)
    assert str(path) in msg and '[profiles."big one"]' in msg and "'workers'" in msg
    assert "did you mean 'max_workers'" in msg


@pytest.mark.parametrize(
    ("lines", "key", "expected", "got"),
    [
        ('max_workers = "4"', "max_workers", "must be an integer", "a string"),
        ("max_workers = 2.5", "max_workers", "must be an integer", "a float"),
        ("max_workers = true", "max_workers", "must be an integer", "a boolean"),
        ('cache = "yes"', "cache", "must be a boolean", "a string"),
        ('poll_min_s = "fast"', "poll_min_s", "must be a number", "a string"),
        ("workdir = 3", "workdir", "must be a string", "an integer"),
        ("backend = 1", "backend", "must be a string", "an integer"),
        (
            'backend = "slurm"\nsetup = "module load x"',
            "setup",
            "must be an array of strings",
            "a string",
        ),
        ('backend = "slurm"\nsetup = ["a", 1]', "setup", "must be an array of strings", "an array"),
        ('backend = "slurm"\nenv = { A = 1 }', "env", "must be a table of strings", "a table"),
        (
            'backend = "slurm"\ntime = 1.5',
            "time",
            "must be a string, an integer or a timedelta",
            "a float",
        ),
        (
            'backend = "slurm"\nextra_sbatch = "--exclusive"',
            "extra_sbatch",
            "must be an array of strings",
            "a string",
        ),
        ('backend = "ssh"\nhostname = "h"\nport = "22"', "port", "must be an integer", "a string"),
        (
            'backend = "ssh"\nhostname = "h"\nallow_unknown_hosts = 1',
            "allow_unknown_hosts",
            "must be a boolean",
            "an integer",
        ),
        (
            'backend = "ssh"\nhostname = "h"\nkey_filename = 7',
            "key_filename",
            "must be a string or an array of strings",
            "an integer",
        ),
        ("workdir = 2024-01-01", "workdir", "must be a string", "a date"),
    ],
)
def test_a_wrong_type_names_the_file_the_key_and_the_expected_type(
    project, lines, key, expected, got
):
    path = pyproject(project, "[tool.lazyslurm.profiles.p]\n" + lines + "\n")
    with pytest.raises(ClusterConfigError) as err:
        Cluster.from_profile("p")
    msg = str(err.value)
    assert str(path) in msg and "[tool.lazyslurm.profiles.p]" in msg
    assert f"key {key!r} {expected}" in msg and f"got {got}" in msg


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        ('backend = "slurmm"', "key 'backend' must be one of local, sync, slurm, ssh"),
        ('backend = "slurm"\nstatus = "scontrol"', "key 'status' must be one of auto, sacct"),
        ("max_workers = 0", "key 'max_workers' must be greater than zero"),
        ("poll_min_s = -1", "key 'poll_min_s' must be greater than zero"),
        ('backend = "slurm"\nmem = "lots"', "invalid mem='lots'"),
        ('backend = "slurm"\npartition = "a b"', "invalid partition='a b'"),
        ('backend = "slurm"\ncpus_per_task = 0', "invalid cpus_per_task=0"),
        ('partition = "cpu"', 'key \'partition\' only applies to backend "slurm" or "ssh"'),
        ('backend = "slurm"\nhostname = "h"', "key 'hostname' only applies to backend \"ssh\""),
        ('backend = "ssh"', "backend \"ssh\" needs a 'hostname' key"),
    ],
)
def test_bad_values_are_reported_with_the_profile(project, lines, words):
    path = pyproject(project, "[tool.lazyslurm.profiles.p]\n" + lines + "\n")
    with pytest.raises(ClusterConfigError) as err:
        Cluster.from_profile("p")
    assert str(path) in str(err.value) and "'p'" in str(err.value)
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[tool.lazyslurm.profiles.p\n", "invalid TOML"),
        ("[tool.lazyslurm]\nprofile = { p = {} }\n", "unknown key tool.lazyslurm.profile"),
        ("[tool.lazyslurm]\nprofiles = 3\n", "tool.lazyslurm.profiles must be a table"),
        ('[tool.lazyslurm.profiles]\np = "local"\n', "must be a table of Cluster options"),
        ("[tool]\nlazyslurm = 1\n", "tool.lazyslurm must be a table"),
    ],
)
def test_a_broken_file_is_named(project, text, words):
    path = write(project / "pyproject.toml", text)
    with pytest.raises(ClusterConfigError) as err:
        Cluster.from_profile("p")
    assert str(path) in str(err.value) and words in str(err.value)


def test_only_the_profile_asked_for_is_validated(project):
    """A broken profile does not stop the others from being used."""
    pyproject(
        project,
        """
        [tool.lazyslurm.profiles.good]
        max_workers = 2
        [tool.lazyslurm.profiles.broken]
        max_workers = "many"
    """,
    )
    assert Cluster.from_profile("good").backend_options["max_workers"] == 2
    with pytest.raises(ClusterConfigError, match="'broken'"):
        Cluster.from_profile("broken")


def test_profile_keys_follow_the_backend_options():
    """Profiles accept exactly the options the backends declare, each for its backends."""
    from lazyslurm import backends
    from lazyslurm.options import all_options

    every = all_options()
    for spec in backends.specs():
        for name in spec.option_names():
            assert spec.name in every[name].backends


def test_a_binary_profile_file_is_a_one_line_error(project):
    """A file that is not UTF-8 text is invalid TOML, named, not a traceback."""
    path = project / "lazyslurm.toml"
    path.write_bytes(b"\xff\xfe\x00binary\x80")
    with pytest.raises(ClusterConfigError, match="not UTF-8") as err:
        Cluster.from_profile("p")
    assert str(path) in str(err.value)


def test_sbatch_long_options_are_profile_defaults(project):
    """A profile may default sbatch long options (ntasks_per_node, exclusive, mail_type)."""
    pyproject(
        project,
        """
        [tool.lazyslurm.profiles.hpc]
        backend = "slurm"
        ntasks_per_node = 2
        exclusive = true
        mail_type = ["END", "FAIL"]
    """,
    )
    c = Cluster.from_profile("hpc")
    assert c.backend_options == {
        "ntasks_per_node": 2,
        "exclusive": True,
        "mail_type": ["END", "FAIL"],
    }
    from lazyslurm.backends.slurm.render import resource_flags

    assert resource_flags(c.task_defaults) == [
        "--ntasks-per-node=2",
        "--exclusive",
        "--mail-type=END,FAIL",
    ]


def test_a_submitit_key_is_answered_with_the_lazyslurm_key(project):
    """A profile key spelt as in submitit (slurm_partition) suggests ours with its value."""
    text = '[tool.lazyslurm.profiles.hpc]\nbackend = "slurm"\nslurm_partition = "gpu"\n'
    pyproject(project, text)
    with pytest.raises(ClusterConfigError) as err:
        Cluster.from_profile("hpc")
    assert "did you mean partition='gpu' (submitit's slurm_partition)?" in str(err.value)
