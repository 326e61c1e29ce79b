"""configure_logging: a rich (or plain) handler on the lazyslurm loggers, never at import."""

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
    logger = logging.getLogger("lazyslurm")
    level = logger.level
    yield logger
    remove_handler()
    logger.setLevel(level)


def test_importing_lazyslurm_configures_no_logging():
    """Importing the package and lazyslurm.logging adds no handler and sets no level."""
    code = (
        "import logging, lazyslurm, lazyslurm.logging, lazyslurm.execute\n"
        "log = logging.getLogger('lazyslurm')\n"
        "assert log.handlers == [] and log.level == logging.NOTSET, log.handlers\n"
        "assert logging.getLogger().handlers == []\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rich_handler_on_the_lazyslurm_logger(restore):
    """use_rich=True installs one RichHandler at the level; calling again replaces it."""
    log = configure_logging(level="DEBUG")
    assert [type(h) for h in log.handlers] == [RichHandler] and log.level == logging.DEBUG
    configure_logging(level=logging.WARNING)
    assert len(log.handlers) == 1 and log.level == logging.WARNING


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
        remove_handler()
        assert restore.handlers == [mine]
    finally:
        restore.removeHandler(mine)


def test_unknown_level_is_a_clear_error():
    """A level name logging does not know raises naming the accepted ones."""
    with pytest.raises(InvalidOptionError, match="DEBUG, INFO"):
        configure_logging(level="LOUD")
