"""Does a checkpoint resume? (``safety/verify_checkpoint_resume.py CHECKPOINT``)

1. Load the checkpoint's weights and recompute the loss on a fixed batch of its source data (the
   first ``n_examples`` examples of the job's file, found through ``job_meta.json``, or
   ``--dataset``): the weights must give the loss recorded at save time (``train_loss`` in
   checkpoint_info.json, else the last ``loss`` of trainer_state.json) within the tolerance.
2. Resume through the real engine (``TrainerEngine.run_job`` with resume, the daemon's path) from a
   scratch copy of the checkpoint for exactly one more optimizer step, with the saved optimizer,
   scheduler and RNG state: it must resume (not start over), end one step later, and give a finite
   loss within the same tolerance of the recorded one.

The recorded loss is a training-window loss (other batches, weights one update earlier), so the
tolerance is relative and generous by default (``rtol`` 0.25, ``atol`` 0.1): it separates a
checkpoint that resumes from one whose weights or optimizer state are wrong (random, zeroed, from
another model), not one decimal from the next.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation.atomic_io import atomic_write_json, read_json
from foundation.paths import PRIORITIES, Paths

INFO, META = "checkpoint_info.json", "job_meta.json"


class ResumeCheckError(Exception):
    """The check cannot run (missing files, no data): exit 2 with this message."""


@dataclass
class ResumeReport:
    checkpoint: str
    global_step: int
    dataset: str
    recorded_loss: float
    recorded_from: str
    fixed_batch_loss: float
    resumed_step_loss: float | None
    resumed_to_step: int | None
    tolerance: float
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def recorded_loss(cp: Path, info: dict) -> tuple[float, str]:
    if isinstance(info.get("train_loss"), (int, float)):
        return float(info["train_loss"]), "checkpoint_info.json train_loss"
    state = read_json(cp / "trainer_state.json") or {}
    losses = [e["loss"] for e in state.get("log_history") or [] if isinstance(e.get("loss"), (int, float))]
    if losses:
        return float(losses[-1]), "trainer_state.json log_history"
    raise ResumeCheckError(f"{cp}: no loss recorded at save time (checkpoint_info.json train_loss, "
                           "trainer_state.json log_history)")


def find_dataset(paths: Paths, cp: Path, given: str | None) -> Path:
    if given:
        p = Path(given)
        if not p.is_file():
            raise ResumeCheckError(f"dataset {p} does not exist")
        return p
    meta = read_json(cp.parent / META) or {}
    recorded = meta.get("dataset")
    if not recorded:
        raise ResumeCheckError(f"{cp.parent / META} names no source dataset; give one with --dataset FILE")
    candidates = [Path(recorded)] + [paths.queue / q / Path(recorded).name
                                     for q in ("recently_completed", "processing", *PRIORITIES, "failed")]
    for c in candidates:
        if c.is_file():
            return c
    raise ResumeCheckError(f"the checkpoint's source data {recorded} is gone (not in queue/ either); "
                           "give the file with --dataset FILE")


def fixed_batch_loss(model_dir: Path, dataset: Path, cfg, n_examples: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.data.batching import PadCollator
    from trainer.engine.job_data import build_train_dataset
    tok = AutoTokenizer.from_pretrained(model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ds = build_train_dataset(str(dataset), tok, cfg)
    batch = PadCollator(tok.pad_token_id)([ds[i] for i in range(min(n_examples, len(ds)))])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        return float(model(**batch).loss)


def resume_one_step(cp: Path, dataset: Path, cfg_dict: dict, global_step: int) -> tuple[float | None, int, str | None]:
    """Resume from a scratch copy of ``cp`` for one more step; (loss, global step end, resumed_from)."""
    from trainer.engine.engine import TrainerEngine
    from trainer.engine.job import TrainJob
    meta = read_json(cp.parent / META) or {}
    start = int(meta.get("global_step_start", 0))
    local = global_step - start
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in cfg_dict.items()}
    cfg["training"].update(max_steps=local + 1, save_steps=10 ** 9, eval_steps=0, logging_steps=1, num_processes=1)
    tmp = Path(tempfile.mkdtemp(prefix="resume-check-"))
    try:
        out = tmp / "job"
        out.mkdir()
        shutil.copytree(cp, out / cp.name)
        # The copy's plan ends one step later: a checkpoint at its job's last step would otherwise
        # be taken as finished (the engine exports it without training).
        state = read_json(out / cp.name / "trainer_state.json") or {}
        state["max_steps"] = local + 1
        atomic_write_json(out / cp.name / "trainer_state.json", state)
        if (cp.parent / META).is_file():
            shutil.copy2(cp.parent / META, out / META)
        job = TrainJob(dataset=str(dataset), output_dir=str(out), model_path=str(cp), job_id="resume-check",
                       config=cfg, global_step_start=start, resume=True, eval_dir=str(tmp / "no-eval"))
        res = TrainerEngine().run_job(job)
        return res.train_loss_last, res.global_step_end, res.resumed_from
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def verify(checkpoint: str | Path, base_dir: str | Path | None = None, dataset: str | None = None,
           n_examples: int = 8, rtol: float = 0.25, atol: float = 0.1, train_step: bool = True) -> ResumeReport:
    from trainer.config.loader import config_to_dict, load_config
    cp = Path(checkpoint).resolve()
    info = read_json(cp / INFO)
    if not isinstance(info, dict):
        raise ResumeCheckError(f"{cp} is not a complete checkpoint (no readable {INFO})")
    if info.get("method", "full") != "full":
        raise ResumeCheckError(f"{cp}: method {info.get('method')!r}: only full fine-tuning checkpoints are "
                               "checked (a LoRA adapter resumes through peft)")
    paths = Paths.from_base(base_dir)
    cfg = load_config(base_dir=paths.base)
    data = find_dataset(paths, cp, dataset)
    rec, rec_from = recorded_loss(cp, info)
    step = int(info.get("global_step") or 0)
    tol = atol + rtol * abs(rec)
    before = fixed_batch_loss(cp / str(info.get("model_dir") or "."), data, cfg, n_examples)
    report = ResumeReport(str(cp), step, str(data), rec, rec_from, before, None, None, tol)
    if not math.isfinite(before) or abs(before - rec) > tol:
        report.problems.append(f"the loaded weights give loss {before:.4f} on the fixed batch, not the "
                               f"{rec:.4f} recorded at save time (tolerance {tol:.4f})")
    if train_step:
        loss, end, resumed_from = resume_one_step(cp, data, config_to_dict(cfg), step)
        report.resumed_step_loss, report.resumed_to_step = loss, end
        if not resumed_from:
            report.problems.append("the engine did not resume from the checkpoint (it started over)")
        if end != step + 1:
            report.problems.append(f"the resumed run ended at global step {end}, expected {step + 1}")
        if loss is None or not math.isfinite(loss) or abs(loss - rec) > tol:
            report.problems.append(f"the resumed step's loss {loss} is not within {tol:.4f} of the recorded {rec:.4f}")
    return report
