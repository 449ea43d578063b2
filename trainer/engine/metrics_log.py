"""Per-step training metrics as JSON lines in ``logs/metrics.jsonl``: the history the live monitor
(``monitoring/servers/live_monitor.py``) draws, which survives a page reload and a restart.

One line per Trainer log event (every ``training.logging_steps`` optimizer steps, plus each
evaluation)::

    {"time": 1712.3, "global_step": 120, "step_in_file": 20, "epoch": 0.4, "loss": 2.31,
     "learning_rate": 5e-05, "grad_norm": 1.2, "tokens_per_sec": 812.0, "job_id": "...", "file": "x.jsonl"}
    {"time": ..., "global_step": 150, ..., "validation_loss": 2.4, "val_train_gap": 0.09}

Why appends and not an atomic rewrite: the file only grows, and a line is written with one
``write`` on an ``O_APPEND`` descriptor, so a reader sees whole lines (a process killed mid-write
leaves at most one broken last line, which readers skip: ``foundation.json_lines``). Rotation is
size-based like ``logging.handlers.RotatingFileHandler`` (``metrics.jsonl`` -> ``.1`` -> ... -> ``.N``,
each step one ``os.replace``), so the disk use is bounded by ``monitoring.metrics_log_max_mb`` x
(``monitoring.metrics_log_backups`` + 1). Only the main training process writes it.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping

FILE_NAME = "metrics.jsonl"
# Trainer log keys copied as they are (HF names on the left, ours on the right).
_TRAIN_KEYS = {"loss": "loss", "learning_rate": "learning_rate", "grad_norm": "grad_norm", "eval_loss": "validation_loss"}


def rotated_paths(path: str | os.PathLike, backups: int) -> list[Path]:
    """``[path.N, ..., path.1, path]``: oldest first (what a reader concatenates)."""
    p = Path(path)
    return [p.with_name(f"{p.name}.{k}") for k in range(backups, 0, -1)] + [p]


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class MetricsLog:
    def __init__(self, path: str | os.PathLike, max_bytes: int = 20 * 2**20, backups: int = 3):
        self.path = Path(path)
        self.max_bytes = max(1, int(max_bytes))
        self.backups = max(0, int(backups))

    @classmethod
    def for_status_file(cls, status_file: str | os.PathLike | None, cfg=None) -> "MetricsLog | None":
        """The log beside a job's status file: ``<base>/status/x.json`` -> ``<base>/logs/metrics.jsonl``.
        None when the job writes no status (then nobody watches it either)."""
        if not status_file:
            return None
        status_dir = Path(status_file).resolve().parent
        if status_dir.name != "status":
            return None
        mon = getattr(cfg, "monitoring", None)
        max_mb = getattr(mon, "metrics_log_max_mb", 20.0)
        backups = getattr(mon, "metrics_log_backups", 3)
        return cls(status_dir.parent / "logs" / FILE_NAME, int(max_mb * 2**20), backups)

    def _rotate(self) -> None:
        if self.backups == 0:
            os.unlink(self.path)
            return
        paths = rotated_paths(self.path, self.backups)  # oldest first
        for older, newer in zip(paths, paths[1:]):
            if newer.exists():
                os.replace(newer, older)

    def append(self, record: Mapping[str, Any]) -> None:
        """Write one line; never raises (a full disk must not stop training: the save path reports it)."""
        line = (json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            try:
                if self.path.stat().st_size + len(line) > self.max_bytes:
                    self._rotate()
            except FileNotFoundError:
                pass
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except (OSError, ValueError):
            pass

    def log(self, logs: Mapping[str, Any], *, global_step: int, step_in_file: int, epoch: float | None,
            tokens: int, elapsed: float, job_id: str = "", file: str = "",
            val_train_gap: float | None = None) -> dict | None:
        """One Trainer ``on_log`` event as a line; None (nothing written) when it holds no metric."""
        rec: dict[str, Any] = {"time": round(time.time(), 3), "global_step": int(global_step),
                               "step_in_file": int(step_in_file),
                               "epoch": None if epoch is None else round(float(epoch), 4)}
        found = False
        for src, dst in _TRAIN_KEYS.items():
            if src in logs:
                rec[dst] = _finite(logs[src])
                found = True
        if not found:
            return None
        if "loss" in logs:
            rec["tokens_per_sec"] = round(tokens / max(elapsed, 1e-6), 2)
        if "eval_loss" in logs and val_train_gap is not None:
            rec["val_train_gap"] = _finite(val_train_gap)
        rec["job_id"], rec["file"] = job_id, file
        self.append(rec)
        return rec
