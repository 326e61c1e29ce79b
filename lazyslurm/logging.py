"""``configure_logging``: logging for a program, as slurm-sdk's helper of that name.

It configures the root logger, as slurm-sdk's does: your own
``logging.getLogger(__name__).info(...)`` records show, next to lazyslurm's. Nothing here
runs at import: lazyslurm never configures logging by itself. Call it once in a program
(not in a library):

>>> import logging as std_logging
>>> root = configure_logging(level="DEBUG", use_rich=False)
>>> root is std_logging.getLogger(), root.level == std_logging.DEBUG, len(root.handlers) >= 1
(True, True, True)
>>> configure_logging(level="INFO", use_rich=False) is root  # replaces its handler
True
>>> remove_handler(); root.setLevel(std_logging.WARNING)
"""

from __future__ import annotations

import logging
from typing import Any

from lazyslurm.errors import InvalidOptionError

__all__ = ["configure_logging", "remove_handler"]

LOGGER = "lazyslurm"
_MARK = "_lazyslurm_handler"  # set on the handler this module installs
_CHATTY = ("paramiko", "paramiko.transport", "paramiko.transport.sftp")  # kept at WARNING


def configure_logging(
    level: int | str = "INFO", *, use_rich: bool = True, **rich_options: Any
) -> logging.Logger:
    """Send the records of every logger (yours and lazyslurm's) at ``level`` and above to
    stderr: one handler on the root logger, which gets ``level``.

    ``use_rich`` uses :class:`rich.logging.RichHandler` (``rich_options`` go to it), else
    a plain :class:`logging.StreamHandler`. Calling it again replaces the handler it
    installed before (handlers of your own stay). paramiko's loggers are kept at WARNING.
    Returns the root logger.
    """
    if isinstance(level, str):
        name = level.upper()
        resolved = logging.getLevelName(name)
        if not isinstance(resolved, int):
            msg = f"unknown logging level {level!r}: use DEBUG, INFO, WARNING, ERROR or an int"
            raise InvalidOptionError(msg)
        level = resolved
    root = logging.getLogger()
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
    root.addHandler(handler)
    root.setLevel(level)
    for name in _CHATTY:
        if logging.getLogger(name).level == logging.NOTSET:
            logging.getLogger(name).setLevel(logging.WARNING)
    return root


def remove_handler() -> None:
    """Remove the handler :func:`configure_logging` installed (if any)."""
    for logger in (logging.getLogger(), logging.getLogger(LOGGER)):
        for h in list(logger.handlers):
            if getattr(h, _MARK, False):
                logger.removeHandler(h)
                h.close()
