"""configure_logging: a rich (or plain) handler on the root logger (slurm-sdk's), never at
import."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from rich.logging import RichHandler

from lazyslurm import Cluster, task
from lazyslurm.errors import InvalidOptionError
from lazyslurm.logging import configure_logging, remove_handler


@pytest.fixture
def restore():
    logger = logging.getLogger()
    level = logger.level
    yield logger
    remove_handler()
    logger.setLevel(level)


def ours(logger: logging.Logger) -> list[logging.Handler]:
    return [h for h in logger.handlers if getattr(h, "_lazyslurm_handler", False)]


def test_importing_lazyslurm_configures_no_logging():
    """Importing the package and lazyslurm.logging adds no handler and sets no level."""
    code = (
        "import logging, lazyslurm, lazyslurm.logging, lazyslurm.execute\n"
        "log = logging.getLogger('lazyslurm')\n"
        "assert log.handlers == [] and log.level == logging.NOTSET, log.handlers\n"
        "assert logging.getLogger().handlers == []\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rich_handler_on_the_root_logger(restore):
    """use_rich=True installs one RichHandler at the level; calling again replaces it."""
    log = configure_logging(level="DEBUG")
    assert log is logging.getLogger()
    assert [type(h) for h in ours(log)] == [RichHandler] and log.level == logging.DEBUG
    configure_logging(level=logging.WARNING)
    assert len(ours(log)) == 1 and log.level == logging.WARNING


def test_a_programs_own_records_show_as_with_slurm_sdk():
    """As slurm-sdk's configure_logging: the root logger is configured, so the program's
    own `logging.getLogger(__name__).info(...)` prints (it printed nothing)."""
    code = (
        "import logging\n"
        "from lazyslurm.logging import configure_logging\n"
        "configure_logging(use_rich=False)\n"
        "logging.getLogger('my.script').info('my own record')\n"
        "logging.getLogger('paramiko.transport').info('chatter')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "INFO my.script: my own record" in out.stderr, out.stderr
    assert "chatter" not in out.stderr


def test_plain_handler_shows_run_messages(restore, tmp_path, capsys):
    """use_rich=False logs lazyslurm's run messages to stderr."""

    @task
    def one() -> int:
        return 1

    configure_logging(level="INFO", use_rich=False)
    with Cluster("sync", workdir=tmp_path):
        one().compute()
    err = capsys.readouterr().err
    assert "INFO lazyslurm: submitted run" in err and "finished" in err


def test_user_handlers_are_left_alone(restore):
    """Only the handler configure_logging installed is replaced or removed."""
    mine = logging.NullHandler()
    restore.addHandler(mine)
    try:
        configure_logging(use_rich=False)
        assert mine in restore.handlers
        remove_handler()
        assert mine in restore.handlers and not ours(restore)
    finally:
        restore.removeHandler(mine)


def test_unknown_level_is_a_clear_error():
    """A level name logging does not know raises naming the accepted ones."""
    with pytest.raises(InvalidOptionError, match="DEBUG, INFO"):
        configure_logging(level="LOUD")
