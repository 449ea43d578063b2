"""The training engine: one job = train the model on one file, continuing the lineage.

Lifecycle (torchtune style, one readable file): setup (config, tokenizer, profile, data, model)
-> train (HF Trainer, our length-grouped batches, global-step-aware LR schedule, step-boundary
control) -> save (complete checkpoints by rename, final export) -> result.

Checkpoints: HF writes ``<output>/checkpoint-<local>/`` (weights, optimizer, scheduler, RNG,
trainer state); only after every file is on disk do we write ``checkpoint_info.json`` and rename
the folder to ``step-<global:08d>``. So a ``step-*`` folder is complete by construction, and a
``checkpoint-*`` folder left by a killed process is never chosen for resume (it is deleted).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback,
                          TrainingArguments)

from foundation.atomic_io import atomic_write_json, read_json
from foundation.model_files import model_files
from foundation.status_io import utc_now_iso
from foundation.time_estimator import TimeEstimator
from trainer.config.loader import validate_dict
from trainer.config.schema import Config
from trainer.engine.job import JobControl, JobResult, TrainJob
from trainer.engine.status_writer import StatusWriter

STEP_DIR_RE = re.compile(r"^step-(\d{8,})$")
CHECKPOINT_INFO = "checkpoint_info.json"
JOB_META = "job_meta.json"


class NanLossError(RuntimeError):
    """Training loss became NaN or infinite."""


class DataError(ValueError):
    """The dataset is not trainable; ``report`` is the validator's report dict."""

    def __init__(self, message: str, report: dict | None = None):
        super().__init__(message)
        self.report = report or {}


# ----------------------------------------------------------------------------- helpers
def resolve_precision(precision: str, device: str) -> str:
    """auto: bf16 on CUDA that supports it, else fp32 (CPU)."""
    if precision != "auto":
        return precision
    if device == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_dtype(precision: str) -> torch.dtype:
    # fp16 trains with a scaler over fp32 master weights, so the model loads in fp32;
    # bf16 loads in bf16 (half the memory; the optimizer runs in bf16 like Axolotl's default).
    return torch.bfloat16 if precision == "bf16" else torch.float32


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders (step-<global>), oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = STEP_DIR_RE.match(p.name)
        if m and p.is_dir() and (p / CHECKPOINT_INFO).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    cps = complete_checkpoints(output_dir)
    return cps[-1] if cps else None


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            try:
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass


def lr_lambda_factory(kind: str, warmup_steps: int, global_start: int, num_training_steps: int):
    """LR multiplier as a function of the job-local step. Warm-up is counted on the GLOBAL step,
    so it happens once per lineage and never restarts for each new file."""

    def warm(local: int) -> float:
        g = global_start + local
        if warmup_steps > 0 and g < warmup_steps:
            return (g + 1) / (warmup_steps + 1)
        return 1.0

    def fn(local: int) -> float:
        w = warm(local)
        if kind in ("constant", "constant_with_warmup"):
            return w if kind == "constant_with_warmup" else 1.0
        progress = min(1.0, local / max(1, num_training_steps))
        if kind == "cosine":
            return w * 0.5 * (1.0 + math.cos(math.pi * progress))
        if kind == "linear":
            return w * max(0.0, 1.0 - progress)
        raise ValueError(f"unknown lr_scheduler {kind!r}")
    return fn


# ----------------------------------------------------------------------------- trainer
class _ContinuousTrainer(Trainer):
    """HF Trainer with our batches, our LR schedule, token counting and step-named checkpoints."""

    def __init__(self, *a, engine_state: "_JobState", batch_sampler, collator, **kw):
        super().__init__(*a, **kw)
        self._job = engine_state
        self._batch_sampler = batch_sampler
        self._collator = collator

    def get_train_dataloader(self):
        from torch.utils.data import DataLoader
        dl = DataLoader(self.train_dataset, batch_sampler=self._batch_sampler, collate_fn=self._collator,
                        num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(dl)

    def get_eval_dataloader(self, eval_dataset=None):
        from torch.utils.data import DataLoader
        from trainer.data.batching import LengthGroupedBatchSampler
        ds = eval_dataset if eval_dataset is not None else self.eval_dataset
        sampler = LengthGroupedBatchSampler(list(ds.lengths), self.args.per_device_eval_batch_size,
                                            seed=0, shuffle=False)
        dl = DataLoader(ds, batch_sampler=sampler, collate_fn=self._collator)
        return self.accelerator.prepare(dl)

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        if self.lr_scheduler is None:
            optimizer = optimizer or self.optimizer
            fn = lr_lambda_factory(self._job.cfg.training.lr_scheduler, self._job.cfg.training.warmup_steps,
                                   self._job.global_start, num_training_steps)
            self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
            self._created_lr_scheduler = True
        return self.lr_scheduler

    def training_step(self, model, inputs, num_items_in_batch=None):
        mask = inputs.get("attention_mask")
        if mask is not None:
            self._job.tokens += int(mask.sum())
            self._job.padded_tokens += int(mask.numel())
        return super().training_step(model, inputs, num_items_in_batch)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        local = self.state.global_step
        src = Path(self.args.output_dir) / f"checkpoint-{local}"
        # Every rank writes its own RNG state into the folder: rename only once all are done.
        self.accelerator.wait_for_everyone()
        if not self.is_world_process_zero():
            return
        global_step = self._job.global_start + local
        dst = Path(self.args.output_dir) / f"step-{global_step:08d}"
        model_dir = "."
        if self._job.cfg.training.method == "lora":
            # Evaluators and the server need full weights: a merged copy beside the adapter.
            _export_merged_lora(self.model, src / "merged", self.processing_class)
            model_dir = "merged"
        info = {
            "global_step": global_step, "local_step": local, "job_id": self._job.job.job_id,
            "source_file": self._job.job.source_file, "complete": True, "created_at": utc_now_iso(),
            "train_loss": self._job.last_loss, "validation_loss": self._job.validation_loss,
            "method": self._job.cfg.training.method, "model_dir": model_dir,
            "base_model": self._job.cfg.model.base_model, "profile": self._job.cfg.profile.name,
        }
        atomic_write_json(src / CHECKPOINT_INFO, info)
        _fsync_tree(src)
        if dst.exists():  # a re-save of the same step (e.g. end of file right after a periodic save)
            shutil.rmtree(dst)
        os.replace(src, dst)
        self._rotate(keep=self._job.cfg.training.save_total_limit)

    def _rotate(self, keep: int) -> None:
        cps = complete_checkpoints(self.args.output_dir)
        for old in cps[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)


def _export_merged_lora(model, out: Path, tokenizer) -> None:
    import copy
    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)


@dataclasses.dataclass
class _JobState:
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


class _EngineCallback(TrainerCallback):
    """Status writes, NaN detection, and step-boundary control (pause/stop/skip)."""

    def __init__(self, st: _JobState, control: JobControl, status: StatusWriter, is_main: bool):
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

    def _write(self, state, status: str, **extra) -> None:
        if not self.is_main:
            return
        local = state.global_step
        elapsed = max(1e-6, time.monotonic() - self.t0)
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
            "eta_seconds": None if self.eta.eta_seconds(local) is None else round(self.eta.eta_seconds(local), 1),
            "started_at": self.started_at,
        }
        fields.update(extra)
        self.status.write(fields)

    def on_train_begin(self, args, state, control, **kw):
        self.eta = TimeEstimator(total_steps=state.max_steps)
        self.eta.update(state.global_step)
        self.st.file_total_steps = state.max_steps
        self.tokens0 = self.st.tokens
        self._write(state, "training")

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
            self._write(state, "paused")
            after = self.ctl.wait_resume()
            if after in ("stop", "skip"):
                self.st.stopped_reason = after
                control.should_training_stop = True
            else:
                self._write(state, "training")
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
        self._write(state, "training")
        return control


# ----------------------------------------------------------------------------- engine
class TrainerEngine:
    """``TrainerEngine(config).run_job(job, control)`` — the API the daemon calls."""

    def __init__(self, config: Config | dict | None = None):
        if config is None:
            config = Config()
        elif isinstance(config, dict):
            config = validate_dict(config, "job config")
        self.config = config

    # -- setup
    def _load_tokenizer(self, model_path: str):
        tok = AutoTokenizer.from_pretrained(model_path, trust_remote_code=self.config.model.trust_remote_code)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        return tok

    def build_train_dataset(self, dataset: str, tokenizer, cfg: Config):
        """Validate the file's structure, apply the profile, tokenize once.

        The validator runs without the tokenizer: token lengths are measured by ``build_dataset``
        on the records as trained (profile and system prompt included), which also applies
        ``data.overlong_policy``; its errors are reported with the file's line number."""
        from trainer.data.validator import validate_file
        from trainer.data.tokenization import DatasetError, build_dataset
        from trainer.profiles import get_profile
        profile = get_profile(cfg.profile.name, cfg.profile.options)
        report = validate_file(dataset, tokenizer=None, max_length=cfg.data.max_length,
                               overlong_policy=cfg.data.overlong_policy,
                               drop_duplicates=cfg.data.drop_duplicates,
                               max_line_bytes=cfg.data.max_line_bytes, profile=profile)
        if not report.ok:
            raise DataError(f"{dataset}: not trainable: {report.summary()}", report.to_dict())
        system_prompt = profile.render_system_prompt(cfg.profile.system_prompt or None)
        # Plain-text records are language-modelling data: no chat framing, no profile.
        records = [ex if "text" in ex else profile.transform_example(ex, i, system_prompt)
                   for i, ex in enumerate(report.examples)]
        try:
            ds = build_dataset(tokenizer, records, max_length=cfg.data.max_length, loss_on=cfg.data.loss_on,
                               overlong_policy=cfg.data.overlong_policy)
        except DatasetError as e:
            line = report.example_lines[e.index] if e.index is not None else None
            err = {"line": line, "field": "messages", "reason": e.reason, "message": e.message}
            raise DataError(f"{dataset}:{line}: {e.reason}: {e.message}",
                            {**report.to_dict(), "ok": False, "errors": [err]}) from e
        if len(ds) == 0:
            raise DataError(f"{dataset}: no trainable example after tokenization", report.to_dict())
        return ds

    def _eval_records(self, job: TrainJob, cfg: Config) -> list[dict]:
        from syllo.puzzles import rerender_record
        from trainer.data.records import normalize_record
        from trainer.profiles import get_profile
        folder = Path(job.eval_dir or cfg.data.validation_dir)
        if not folder.is_absolute() and job.config.get("_base_dir"):
            folder = Path(job.config["_base_dir"]) / folder
        if not folder.is_dir():
            return []
        profile = get_profile(cfg.profile.name, cfg.profile.options)
        system_prompt = profile.render_system_prompt(cfg.profile.system_prompt or None)
        recs: list[dict] = []
        for f in sorted(folder.glob("*.jsonl")):
            with open(f, encoding="utf-8") as fh:
                for line in fh:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        rec = normalize_record(json.loads(line))
                        # Suite items are stored in plain form; render them for the active profile.
                        rec = rerender_record(rec, cfg.profile.name, index=len(recs))
                        recs.append(rec if "text" in rec else
                                    profile.transform_example(rec, len(recs), system_prompt))
                    except (ValueError, TypeError):
                        continue  # the suite is validated when generated; a bad line is not eval data
                    if len(recs) >= cfg.data.max_eval_examples:
                        return recs
        return recs

    def _load_model(self, model_path: str, cfg: Config, precision: str):
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=load_dtype(precision),
                                                     trust_remote_code=cfg.model.trust_remote_code)
        if cfg.training.gradient_checkpointing:
            model.gradient_checkpointing_enable()
            model.config.use_cache = False
        if cfg.training.method == "lora":
            from peft import LoraConfig as PeftLoraConfig, get_peft_model
            lc = cfg.training.lora
            model = get_peft_model(model, PeftLoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout,
                                                         target_modules=list(lc.target_modules),
                                                         task_type="CAUSAL_LM"))
        return model

    # -- run
    def run_job(self, job: TrainJob, control: JobControl | None = None, *, standalone: bool = False) -> JobResult:
        from trainer.data.batching import LengthGroupedBatchSampler, PadCollator
        from trainer.data.tokenization import build_dataset

        control = control or JobControl()
        t_start = time.time()
        cfg = validate_dict({k: v for k, v in job.config.items() if not k.startswith("_")}, "job config") \
            if job.config else self.config
        out = Path(job.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        job.job_id = job.job_id or out.name

        # The job's global start is fixed the first time it runs: a resumed job keeps it.
        meta = read_json(out / JOB_META) or {}
        if "global_step_start" in meta:
            global_start = int(meta["global_step_start"])
        else:
            global_start = int(job.global_step_start)
            atomic_write_json(out / JOB_META, {"global_step_start": global_start, "job_id": job.job_id,
                                               "dataset": job.dataset, "created_at": utc_now_iso()})

        # Leftovers of a killed save are incomplete by definition.
        for stale in out.glob("checkpoint-*"):
            shutil.rmtree(stale, ignore_errors=True)
        resume_from = latest_complete_checkpoint(out) if job.resume else None

        if resume_from is not None:
            done = self._finished_checkpoint(resume_from)
            if done is not None:
                # Killed between the last checkpoint and the export: the file is fully trained.
                # Export from that checkpoint instead of training a step past the plan.
                return self._result_from_checkpoint(job, out, resume_from, done, global_start, t_start)

        device = resolve_device(cfg.training.device)
        precision = resolve_precision(cfg.training.precision, device)
        model_path = job.model_path or cfg.model.model_path
        tokenizer = self._load_tokenizer(model_path)
        train_ds = self.build_train_dataset(job.dataset, tokenizer, cfg)
        eval_recs = self._eval_records(job, cfg)
        eval_ds = build_dataset(tokenizer, eval_recs, max_length=cfg.data.max_length, loss_on=cfg.data.loss_on,
                                overlong_policy="truncate") if eval_recs else None

        model = self._load_model(model_path, cfg, precision)
        tr = cfg.training
        args = TrainingArguments(
            output_dir=str(out),
            per_device_train_batch_size=tr.per_device_batch_size,
            per_device_eval_batch_size=tr.per_device_batch_size,
            gradient_accumulation_steps=tr.gradient_accumulation_steps,
            learning_rate=tr.learning_rate,
            weight_decay=tr.weight_decay,
            max_grad_norm=tr.max_grad_norm if tr.max_grad_norm > 0 else 1e9,
            num_train_epochs=tr.num_epochs,
            max_steps=tr.max_steps if tr.max_steps > 0 else -1,
            logging_steps=tr.logging_steps,
            logging_nan_inf_filter=False,
            save_strategy="steps",
            save_steps=tr.save_steps,
            save_total_limit=None,  # we rotate complete step-* folders ourselves
            eval_strategy="steps" if (eval_ds is not None and tr.eval_steps > 0) else "no",
            eval_steps=tr.eval_steps if tr.eval_steps > 0 else None,
            report_to="none",
            seed=tr.seed,
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            use_cpu=device == "cpu",
            disable_tqdm=True,
            remove_unused_columns=False,
            dataloader_num_workers=tr.dataloader_num_workers,
        )
        st = _JobState(job=job, cfg=cfg, global_start=global_start)
        rank = int(os.environ.get("RANK", "0"))
        # Length-grouped batches (little padding); the longest batch goes first so an out-of-memory
        # batch size fails at step 1, not hours into a file. group_size=1 gives plain random batches.
        sampler = LengthGroupedBatchSampler(list(train_ds.lengths), tr.per_device_batch_size, seed=tr.seed,
                                            shuffle=True, group_size=64 if tr.group_by_length else 1,
                                            longest_first=tr.group_by_length)
        collator = PadCollator(tokenizer.pad_token_id)
        status = StatusWriter(job.status_file or None, standalone=standalone)
        cb = _EngineCallback(st, control, status, is_main=(rank == 0))
        trainer = _ContinuousTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                     processing_class=tokenizer, data_collator=collator,
                                     callbacks=[cb], engine_state=st, batch_sampler=sampler, collator=collator)
        t_train = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        train_seconds = time.perf_counter() - t_train
        local_end = trainer.state.global_step

        final_dir = ""
        if st.stopped_reason is None:
            # End of file: a checkpoint at the last step (unless the periodic save just wrote it)
            # and the exported model the daemon swaps into models/current_model/.
            if eval_ds is not None and (tr.eval_steps <= 0 or local_end % tr.eval_steps != 0):
                metrics = trainer.evaluate()
                st.validation_loss = float(metrics.get("eval_loss", float("nan")))
            last = latest_complete_checkpoint(out)
            if last is None or int(STEP_DIR_RE.match(last.name).group(1)) != global_start + local_end:
                trainer._save_checkpoint(trainer.model, None)
            if trainer.is_world_process_zero():
                final_dir = str(self._export_final(trainer, out, cfg))
        elif st.stopped_reason == "stop":
            last = latest_complete_checkpoint(out)
            if last is None or int(STEP_DIR_RE.match(last.name).group(1)) != global_start + local_end:
                trainer._save_checkpoint(trainer.model, None)

        duration = time.time() - t_start
        # Steps of this job across resumes = global end - the job's global start.
        result = JobResult(
            ok=True, job_id=job.job_id, global_step_start=global_start,
            global_step_end=global_start + local_end, steps=local_end, tokens=st.tokens,
            train_loss_first=st.first_loss, train_loss_last=st.last_loss, validation_loss=st.validation_loss,
            duration_s=round(duration, 3), tokens_per_sec=round(st.tokens / max(duration, 1e-6), 2),
            checkpoints=[str(p) for p in complete_checkpoints(out)], final_model_dir=final_dir,
            stopped_reason=st.stopped_reason, resumed_from=str(resume_from) if resume_from else None,
            metrics={"train_seconds": round(train_seconds, 3),
                     "pad_share": round(1 - st.tokens / st.padded_tokens, 4) if st.padded_tokens else None,
                     "precision": precision, "device": device, "examples": len(train_ds),
                     "file_total_steps": st.file_total_steps},
        )
        if rank == 0:
            cb._write(trainer.state, "completed" if st.stopped_reason is None else
                      ("stopped" if st.stopped_reason == "stop" else "skipped"))
        return result

    @staticmethod
    def _finished_checkpoint(cp: Path) -> dict | None:
        """The checkpoint's trainer state when it is at (or past) the job's last step, else None."""
        state = read_json(cp / "trainer_state.json") or {}
        max_steps, step = state.get("max_steps"), state.get("global_step")
        if isinstance(max_steps, int) and isinstance(step, int) and max_steps > 0 and step >= max_steps:
            return state
        return None

    def _result_from_checkpoint(self, job: TrainJob, out: Path, cp: Path, state: dict, global_start: int,
                                t_start: float) -> JobResult:
        info = read_json(cp / CHECKPOINT_INFO) or {}
        final = out / "final"
        if not (final / "config.json").is_file():
            tmp = out / "final.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            src = cp / str(info.get("model_dir") or ".")
            for f in model_files(src, skip={CHECKPOINT_INFO}):  # as save_pretrained writes it
                shutil.copy2(f, tmp / f.name)
            _fsync_tree(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        losses = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
        local = int(state["global_step"])
        return JobResult(ok=True, job_id=job.job_id, global_step_start=global_start,
                         global_step_end=global_start + local, steps=local, tokens=0,
                         train_loss_first=losses[0] if losses else None,
                         train_loss_last=info.get("train_loss", losses[-1] if losses else None),
                         validation_loss=info.get("validation_loss"),
                         duration_s=round(time.time() - t_start, 3),
                         checkpoints=[str(p) for p in complete_checkpoints(out)], final_model_dir=str(final),
                         resumed_from=str(cp), metrics={"finished_from_checkpoint": True})

    def _export_final(self, trainer: Trainer, out: Path, cfg: Config) -> Path:
        final = out / "final"
        tmp = out / "final.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        model = trainer.model
        if cfg.training.method == "lora":
            model = model.merge_and_unload()
        model.save_pretrained(tmp)
        trainer.processing_class.save_pretrained(tmp)
        _fsync_tree(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return final
