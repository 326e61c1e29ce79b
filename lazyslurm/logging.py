"""``configure_logging``: show lazyslurm's log records, as slurm-sdk's helper of that name.

Nothing here runs at import: lazyslurm never configures logging by itself. Call it once in
a program (not in a library):

>>> import logging as std_logging
>>> log = configure_logging(level="DEBUG", use_rich=False)
>>> log.name, log.level == std_logging.DEBUG, len(log.handlers)
('lazyslurm', True, 1)
>>> configure_logging(level="INFO", use_rich=False) is log and len(log.handlers)  # no pile-up
1
>>> remove_handler(); log.setLevel(std_logging.NOTSET)
"""

from __future__ import annotations

import logging
from typing import Any

from lazyslurm.errors import InvalidOptionError

__all__ = ["configure_logging", "remove_handler"]

LOGGER = "lazyslurm"
_MARK = "_lazyslurm_handler"  # set on the handler this module installs


def configure_logging(
    level: int | str = "INFO", *, use_rich: bool = True, **rich_options: Any
) -> logging.Logger:
    """Send the ``lazyslurm`` loggers' records at ``level`` and above to stderr.

    ``use_rich`` uses :class:`rich.logging.RichHandler` (``rich_options`` go to it), else
    a plain :class:`logging.StreamHandler`. Calling it again replaces the handler it
    installed before. Returns the ``lazyslurm`` logger.
    """
    if isinstance(level, str):
        name = level.upper()
        resolved = logging.getLevelName(name)
        if not isinstance(resolved, int):
            msg = f"unknown logging level {level!r}: use DEBUG, INFO, WARNING, ERROR or an int"
            raise InvalidOptionError(msg)
        level = resolved
    logger = logging.getLogger(LOGGER)
    remove_handler()
    handler: logging.Handler
    if use_rich:
        from rich.logging import RichHandler

        handler = RichHandler(**{"show_path": False, **rich_options})
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(handler, _MARK, True)
    handler.setLevel(level)
    logger.addHandler(handler)
    logger.setLevel(level)
    return logger


def remove_handler() -> None:
    """Remove the handler :func:`configure_logging` installed (if any)."""
    logger = logging.getLogger(LOGGER)
    for h in list(logger.handlers):
        if getattr(h, _MARK, False):
            logger.removeHandler(h)
            h.close()
