"""Daemon logging: ``logs/<name>.log`` rotated at UTC midnight, kept ``keep_days`` days.

Why here and not ``logging.basicConfig``: a daemon runs for weeks, so the file must rotate
daily, and the same format is wanted whether it runs in the foreground (also to stderr) or
detached (file only).
"""
from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s"


def setup_logging(logs_dir: str | Path, name: str, *, keep_days: int = 14, to_stderr: bool = True,
                  level: int = logging.INFO) -> logging.Logger:
    logs_dir = Path(logs_dir)
    logs_dir.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(name)
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter(FORMAT)
    fh = logging.handlers.TimedRotatingFileHandler(logs_dir / f"{name}.log", when="midnight", utc=True,
                                                   backupCount=keep_days, encoding="utf-8")
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
