"""Logging for the long-running commands (worker, populate, jobs): one line per event, on stderr.

    2026-01-31 12:00:03 vm:4121 WARNING classifier.TrainedClassifier {...}: make interrupted: database
    unreachable (OperationalError: (2003, "Can't connect to MySQL server on '127.0.0.1' ...")); retry in 4 s

(one line in the log; wrapped here). Library use (tests, notebooks) configures nothing: the ``neural_reg`` loggers
then follow the application's own logging configuration.
"""

from __future__ import annotations

import logging
import os
import platform
import sys

FORMAT = "%(asctime)s {host}:%(process)d %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"


def setup(level: int | str = logging.INFO, stream=None) -> logging.Logger:
    """Send the ``neural_reg`` loggers' records to stderr, one line each (idempotent)."""
    logger = logging.getLogger("neural_reg")
    level = os.environ.get("NEURALREG_LOG_LEVEL", level)
    logger.setLevel(level if isinstance(level, int) else str(level).upper())
    if not any(getattr(h, "_neural_reg", False) for h in logger.handlers):
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT.format(host=platform.node()), DATEFMT))
        handler._neural_reg = True
        logger.addHandler(handler)
        logger.propagate = False
    return logger
