"""What a running job knows about itself (``JobState``) and the Trainer callback that keeps it:
status writes, NaN detection, and step-boundary control (pause/stop/skip)."""
from __future__ import annotations

import dataclasses
import math
import os
import time

from transformers import TrainerCallback

from foundation.status_io import utc_now_iso
from foundation.time_estimator import TimeEstimator
from trainer.config.schema import Config
from trainer.engine.job import JobControl, TrainJob
from trainer.engine.memory import peaks
from trainer.engine.metrics_log import MetricsLog
from trainer.engine.status_writer import StatusWriter


class NanLossError(RuntimeError):
    """Training loss became NaN or infinite."""


@dataclasses.dataclass
class JobState:
    """Shared by the Trainer subclass (token counts, checkpoint info) and the callback."""

    job: TrainJob
    cfg: Config
    global_start: int
    file_total_steps: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    last_loss: float | None = None
    first_loss: float | None = None
    validation_loss: float | None = None
    stopped_reason: str | None = None
    pause_pending: bool = False


class EngineCallback(TrainerCallback):
    """Status writes, NaN detection, and step-boundary control (pause/stop/skip)."""

    def __init__(self, st: JobState, control: JobControl, status: StatusWriter, is_main: bool):
        self.st = st
        self.ctl = control
        self.status = status
        self.is_main = is_main
        self.eta = TimeEstimator(total_steps=0)
        self.started_at = utc_now_iso()
        self.t0 = time.monotonic()
        self.tokens0 = 0
        self._lr: float | None = None
        self._gap: float | None = None
        # Per-step history for the live monitor (logs/metrics.jsonl; trainer/engine/metrics_log.py).
        self.metrics = MetricsLog.for_status_file(st.job.status_file, st.cfg) if is_main else None

    def write(self, state, status: str, **extra) -> None:
        """One status write (main process only) from the Trainer's ``state``."""
        if not self.is_main:
            return
        local = state.global_step
        elapsed = max(1e-6, time.monotonic() - self.t0)
        eta = self.eta.eta_seconds(local)
        fields = {
            "status": status,
            "current_step": self.st.global_start + local,
            "total_steps": self.st.global_start + state.max_steps,
            "step_in_file": local,
            "file_total_steps": state.max_steps,
            "epoch": round(float(state.epoch or 0.0), 4),
            "loss": self.st.last_loss,
            "learning_rate": self._lr,
            "validation_loss": self.st.validation_loss,
            "val_train_gap": self._gap,
            "tokens_per_sec": round((self.st.tokens - self.tokens0) / elapsed, 2),
            "current_file": self.st.job.source_file or os.path.basename(self.st.job.dataset),
            "job_id": self.st.job.job_id,
            "eta_seconds": None if eta is None else round(eta, 1),
            "started_at": self.started_at,
            **peaks(),  # peak_rss_bytes / peak_cuda_bytes of this job so far (a /proc read)
        }
        fields.update(extra)
        self.status.write(fields)

    def on_train_begin(self, args, state, control, **kw):
        self.eta = TimeEstimator(total_steps=state.max_steps)
        self.eta.update(state.global_step)
        self.st.file_total_steps = state.max_steps
        self.tokens0 = self.st.tokens
        self.write(state, "training")

    def on_step_end(self, args, state, control, **kw):
        self.eta.update(state.global_step)
        action = self.ctl.poll(self.st.global_start + state.global_step)
        if action == "stop":
            self.st.stopped_reason = "stop"
            control.should_save = True
            control.should_training_stop = True
        elif action == "skip":
            self.st.stopped_reason = "skip"
            control.should_save = False
            control.should_training_stop = True
        elif action == "pause":
            self.st.pause_pending = True
            control.should_save = True
        return control

    def on_save(self, args, state, control, **kw):
        if self.st.pause_pending:
            self.st.pause_pending = False
            self.write(state, "paused")
            after = self.ctl.wait_resume()
            if after in ("stop", "skip"):
                self.st.stopped_reason = after
                control.should_training_stop = True
            else:
                self.write(state, "training")
        return control

    def on_log(self, args, state, control, logs=None, **kw):
        logs = logs or {}
        if "loss" in logs:
            loss = float(logs["loss"])
            if not math.isfinite(loss):
                raise NanLossError(f"training loss is {loss} at global step "
                                   f"{self.st.global_start + state.global_step}")
            self.st.last_loss = loss
            if self.st.first_loss is None:
                self.st.first_loss = loss
        if "learning_rate" in logs:
            self._lr = float(logs["learning_rate"])
        if "eval_loss" in logs:
            self.st.validation_loss = float(logs["eval_loss"])
            if self.st.last_loss is not None:
                self._gap = round(self.st.validation_loss - self.st.last_loss, 6)
        if self.metrics is not None:  # live monitor history (trainer/engine/metrics_log.py)
            self.metrics.log(logs, global_step=self.st.global_start + state.global_step,
                             step_in_file=state.global_step, epoch=state.epoch,
                             tokens=self.st.tokens - self.tokens0, elapsed=time.monotonic() - self.t0,
                             job_id=self.st.job.job_id, file=self.st.job.source_file or
                             os.path.basename(self.st.job.dataset), val_train_gap=self._gap)
        self.write(state, "training")
        return control
