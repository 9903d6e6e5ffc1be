"""Logging and progress bars for the commands: one line per event, on stderr, in the standard ``logging`` module.

    2026-01-31 12:00:03 vm:4121 INFO populated oracle.OracleStats animal_id=sim0 session=1 scan_idx=1 in 0.4 s
    2026-01-31 12:00:09 vm:4121 WARNING classifier.TrainedClassifier task=digits ...: make interrupted: database
    unreachable (OperationalError: (2003, "Can't connect to MySQL server on '127.0.0.1' ...")); retry in 4 s

(one line each in the log; the second wrapped here): time, host:pid, level, then the table, the key (in full, as
``neural-reg delete`` and ``neural-reg export`` take it) and what happened. Every key a ``populate`` or a
``worker`` computes gets its "populated" line with its duration: what a lab reads in a Slurm or compose log.

The level: ``neural-reg --log-level DEBUG|INFO|WARNING|ERROR`` (default INFO, or ``NEURALREG_LOG_LEVEL``).
Progress bars (DataJoint's per-table bar, the training bars) are drawn only on a terminal (``sys.stderr.isatty()``)
and never with ``neural-reg --no-progress`` or ``NEURALREG_PROGRESS=0``: a redirected log has no ``\\r`` and no
escape codes. Code that draws a bar asks :func:`progress_enabled`.

Library use (tests, notebooks) configures nothing: the ``neural_reg`` loggers then follow the application's own
logging configuration.
"""

from __future__ import annotations

import logging
import os
import platform
import sys

FORMAT = "%(asctime)s {host}:%(process)d %(levelname)s %(message)s"
DATEFMT = "%Y-%m-%d %H:%M:%S"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_progress: bool | None = None  # None: on a terminal only; False: never (--no-progress); True: always


def default_level() -> str:
    """NEURALREG_LOG_LEVEL, else INFO."""
    return os.environ.get("NEURALREG_LOG_LEVEL", "INFO").upper()


def setup(level: int | str | None = None, stream=None) -> logging.Logger:
    """Send the ``neural_reg`` loggers' records to ``stream`` (stderr), one line each (idempotent: a second call
    sets the level and the stream of the same handler). ``level`` None: :func:`default_level`."""
    logger = logging.getLogger("neural_reg")
    level = default_level() if level is None else level
    logger.setLevel(level if isinstance(level, int) else str(level).upper())
    handler = next((h for h in logger.handlers if getattr(h, "_neural_reg", False)), None)
    if handler is None:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT.format(host=platform.node()), DATEFMT))
        handler._neural_reg = True
        logger.addHandler(handler)
        logger.propagate = False
    else:
        with handler.lock:  # not setStream: it flushes the old stream, which may be closed (a test's capture)
            handler.stream = stream or sys.stderr
    return logger


def set_progress(enabled: bool | None) -> None:
    """None: bars on a terminal only (the default); False: never (``--no-progress``); True: always."""
    global _progress
    _progress = enabled


def progress_enabled() -> bool:
    """Whether to draw progress bars: never after ``set_progress(False)`` (``--no-progress``) or with
    ``NEURALREG_PROGRESS=0``; otherwise only when stderr is a terminal (a Slurm or compose log gets none)."""
    if _progress is not None:
        return _progress
    if os.environ.get("NEURALREG_PROGRESS", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream
        return False


def format_key(key: dict) -> str:
    """A key in full as attr=value pairs: 'animal_id=sim0 session=1 scan_idx=1' (what delete / export take)."""
    return " ".join(f"{k}={v}" for k, v in dict(key).items())


def log_populated(logger: logging.Logger, table: str, key: dict, seconds: float) -> None:
    """The one line of a computed key: 'populated TABLE KEY in N s'."""
    logger.info("populated %s %s in %.1f s", table, format_key(key), seconds)


def log_failed(logger: logging.Logger, table: str, key: dict, seconds: float, error) -> None:
    """The one line of a failed key: 'failed TABLE KEY after N s: Error: message'."""
    message = error if isinstance(error, str) else (f"{type(error).__name__}: {error}" if str(error)
                                                    else type(error).__name__)
    logger.warning("failed %s %s after %.1f s: %s", table, format_key(key), seconds, message.splitlines()[0]
                   if message else message)
