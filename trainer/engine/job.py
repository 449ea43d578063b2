"""The contract between the training daemon and the engine: a job in, a result out.

The daemon builds a ``TrainJob`` per claimed file and calls ``TrainerEngine.run_job(job,
control=...)`` (in a child process). The engine calls ``control.poll(global_step)`` at every
optimizer-step boundary; it never reads control/ itself.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class TrainJob:
    dataset: str
    """Path of the .jsonl file to train on (already validated by the daemon, or validated here)."""
    output_dir: str
    """Job folder. Complete checkpoints are ``<output_dir>/step-<global:08d>/`` (a folder with that
    name is complete by construction: it is renamed into place only after every file is written).
    The final model is exported to ``<output_dir>/final/``."""
    model_path: str = ""
    """Weights to start from (models/current_model/, or the base model the first time). Empty: config model_path."""
    job_id: str = ""
    """Stable id (daemon: derived from the file name and claim time). Empty: output_dir's name."""
    config: dict = field(default_factory=dict)
    """Effective config as a dict (``dataclasses.asdict(Config)``); empty: defaults."""
    global_step_start: int = 0
    """Global step of the lineage when this job starts (continues across files and restarts)."""
    resume: bool = True
    """Resume from the newest complete checkpoint in output_dir when there is one."""
    source_file: str = ""
    """Original file name (for status, results and the model_db)."""
    priority: str = "normal"
    """Queue priority the file came from (status only)."""
    status_file: str = ""
    """Where to write training status; empty: no status file."""
    eval_dir: str = ""
    """Validation suite folder (*.jsonl); empty: config data.validation_dir; missing folder: no eval."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "TrainJob":
        return cls(**json.loads(text))


@dataclass
class JobResult:
    ok: bool
    job_id: str
    global_step_start: int
    global_step_end: int
    steps: int
    """Optimizer steps this job ran in total (across resumes)."""
    tokens: int
    """Non-padding tokens processed (this run of the process)."""
    train_loss_first: float | None = None
    train_loss_last: float | None = None
    validation_loss: float | None = None
    duration_s: float = 0.0
    tokens_per_sec: float = 0.0
    checkpoints: list = field(default_factory=list)
    """Complete checkpoint folders written by this job (step-<global>), oldest first."""
    final_model_dir: str = ""
    """Exported model folder (full weights; LoRA merged), empty when the job stopped early."""
    stopped_reason: str | None = None
    """None when the file was trained to the end; else "stop" / "skip" / "pause"."""
    resumed_from: str | None = None
    error: str | None = None
    error_kind: str | None = None
    """oom / nan_loss / data_error / disk_full / killed / other."""
    metrics: dict = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class JobControl:
    """Step-boundary control. The default never interrupts."""

    def poll(self, global_step: int) -> str | None:
        """Called after every optimizer step: None, or "pause" / "stop" / "skip".

        "pause": the engine writes a checkpoint, then calls ``wait_resume``.
        "stop": the engine writes a checkpoint and returns (stopped_reason "stop").
        "skip": the engine returns at once without saving (stopped_reason "skip").
        """
        return None

    def wait_resume(self) -> str | None:
        """Block while paused. Return None to continue, or "stop" / "skip"."""
        return None
