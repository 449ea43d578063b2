"""Rotating log files for every long-running process: ``logs/<name>.log``, rotated at UTC
midnight, ``keep_days`` days kept (the training daemon's scheme, shared by the sidecars).

Why not ``logging.basicConfig``: a daemon runs for weeks, so its file must rotate, and the same
format is wanted whether it runs in the foreground (also to stderr) or under the watchdog.
``name=None`` configures the root logger (a sidecar whose modules log through their own loggers).
The disk manager compresses and later drops the rotated files (``<name>.log.YYYY-MM-DD``).
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def setup_logging(logs_dir: str | Path, name: str | None, *, keep_days: int = 14, to_stderr: bool = True,
                  level: int | str = logging.INFO, file_name: str | None = None) -> logging.Logger:
    """Log ``name`` (None: the root logger) to ``logs_dir/<file_name or name>.log`` (rotated daily)
    and, when ``to_stderr``, to stderr. Calling it again replaces the handlers."""
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    logger.setLevel(level.upper() if isinstance(level, str) else level)
    if name is not None:
        logger.propagate = False
    close_logging(logger)
    fmt = logging.Formatter(FORMAT)
    fh = logging.handlers.TimedRotatingFileHandler(logs_dir / f"{file_name or name}.log", when="midnight",
                                                   utc=True, backupCount=keep_days, encoding="utf-8")
    fh.setFormatter(fmt)
    logger.addHandler(fh)
    if to_stderr:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        logger.addHandler(sh)
    return logger


def close_logging(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        logger.removeHandler(h)
        try:
            h.close()
        except Exception:  # noqa: BLE001
            pass


def enable_stack_dumps() -> None:
    """On SIGUSR1, write every thread's Python stack to stderr (which the watchdog sends to
    ``logs/<name>.out``): the anti-stuck monitor asks a hung process for its stacks this way.
    Safe to call more than once."""
    import faulthandler
    import signal
    faulthandler.register(signal.SIGUSR1, all_threads=True)
