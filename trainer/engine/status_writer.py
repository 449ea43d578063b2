"""Writes the trainer's keys of ``status/training_status.json`` at each logging step.

The file is shared with the training daemon (it owns state/queue keys); both merge their keys
with ``foundation.status_io.update_status`` under a lock, and every write is atomic.

Fields written here (documented in ARCHITECTURE.md):
  status            "training" | "evaluating" | "saving" | "paused" | "completed" | "stopped" | "failed"
  current_step      global step of the lineage (continues across files and restarts)
  total_steps       global step this file will end at
  step_in_file      optimizer steps done on the current file
  file_total_steps  optimizer steps the current file takes
  epoch             epoch within the current file (float)
  loss              training loss of the last logging window
  learning_rate     current learning rate
  validation_loss   last loss on the fixed validation suite (null before the first evaluation)
  val_train_gap     validation_loss - loss at that evaluation (overfitting indicator)
  tokens_per_sec    non-padding tokens per second since the job (process) started
  current_file      file being trained
  eta_seconds       estimated seconds until the file is done (EMA of step time)
  started_at        when this job started (ISO 8601 UTC)
  peak_rss_bytes    peak resident memory of the training process during this job
  peak_cuda_bytes   peak CUDA memory allocated by torch during this job (null without CUDA)
  trainer_pid       PID of the training process (``pid`` too when run standalone)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from foundation.status_io import update_status


class StatusWriter:
    def __init__(self, path: str | os.PathLike | None, standalone: bool = False):
        self.path = Path(path) if path else None
        self.standalone = standalone

    def write(self, fields: dict[str, Any]) -> None:
        if self.path is None:
            return
        patch = dict(fields)
        patch["trainer_pid"] = os.getpid()
        if self.standalone:
            patch["pid"] = os.getpid()
        try:
            update_status(self.path, patch, daemon=self.standalone)
        except OSError:
            # A status write must never kill training (disk full is reported by the save path).
            pass
