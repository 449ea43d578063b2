"""The training engine: one job = train the model on one file, continuing the lineage.

Lifecycle: setup (config, tokenizer, data, model) -> train (``hf_trainer.ContinuousTrainer``:
our length-grouped batches, global-step-aware LR schedule; ``callbacks.EngineCallback``:
status and step-boundary control) -> save (complete checkpoints by rename, final export;
``checkpoints``) -> result. The job's data is built in ``job_data``.

``run_job`` raises ``DataError`` for an untrainable file and ``NanLossError`` when the loss stops
being finite (the daemon classifies failures by these names).
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

from foundation.atomic_io import read_json
from foundation.allocator import retain_freed_memory
from foundation.device import load_dtype, resolve_device, resolve_precision
from trainer.config.loader import validate_dict
from trainer.config.schema import Config
from trainer.engine.callbacks import EngineCallback, JobState, NanLossError
from trainer.engine.checkpoints import (CHECKPOINT_INFO, complete_checkpoints, export_final,
                                        export_final_from_checkpoint, finished_state, has_checkpoint_at,
                                        latest_complete_checkpoint, pinned_global_start, remove_incomplete)
from trainer.engine.hf_trainer import ContinuousTrainer
from trainer.engine.job import JobControl, JobResult, TrainJob
from trainer.engine.job_data import DataError, build_eval_dataset, build_train_dataset
from trainer.engine.memory import peaks, reset_peaks
from trainer.engine.status_writer import StatusWriter

__all__ = ["TrainerEngine", "DataError", "NanLossError"]


def _training_args(cfg: Config, out: Path, precision: str, device: str, with_eval: bool) -> TrainingArguments:
    tr = cfg.training
    return TrainingArguments(
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
        eval_strategy="steps" if (with_eval and tr.eval_steps > 0) else "no",
        eval_steps=tr.eval_steps if tr.eval_steps > 0 else None,
        report_to="none",
        seed=tr.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=tr.dataloader_num_workers,
        # Evaluation needs the loss only: never gather every batch's full-vocabulary logits.
        prediction_loss_only=True,
        torch_compile=tr.torch_compile,
    )


def _attn_implementation(device: str, precision: str) -> str | None:
    """flash_attention_2 on CUDA in bf16/fp16 when the flash_attn package is installed (varlen
    kernels: batches are packed, no padding); otherwise the model's default (sdpa)."""
    if device == "cuda" and precision in ("bf16", "fp16") and importlib.util.find_spec("flash_attn"):
        return "flash_attention_2"
    return None


def _saved_at(trainer, out: Path, global_step: int) -> bool:
    """Whether the newest complete checkpoint is at ``global_step``, as rank 0 sees it: rank 0
    seals checkpoints after the others have moved on, so a rank deciding from the disk alone could
    skip a save (a collective) that the others enter."""
    box = [has_checkpoint_at(out, global_step)]
    if trainer.accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list
        broadcast_object_list(box, from_process=0)
    return bool(box[0])


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

    @staticmethod
    def _load_model(model_path: str, cfg: Config, precision: str, device: str):
        attn = _attn_implementation(device, precision)
        dtype = load_dtype(precision, training=True, device=device)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype,
                                                     trust_remote_code=cfg.model.trust_remote_code,
                                                     **({"attn_implementation": attn} if attn else {}))
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
        from trainer.data.batching import LengthGroupedBatchSampler, PackCollator, PadCollator, packing_supported
        from trainer.engine.shapes import LENGTH_MULTIPLE, wanted

        control = control or JobControl()
        t_start = time.time()
        reset_peaks()
        cfg = validate_dict({k: v for k, v in job.config.items() if not k.startswith("_")}, "job config") \
            if job.config else self.config
        out = Path(job.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        job.job_id = job.job_id or out.name
        global_start = pinned_global_start(out, job.job_id, job.dataset, job.global_step_start)
        remove_incomplete(out)
        resume_from = latest_complete_checkpoint(out) if job.resume else None

        if resume_from is not None:
            done = finished_state(resume_from)
            if done is not None:
                # Killed between the last checkpoint and the export: the file is fully trained.
                # Export from that checkpoint instead of training a step past the plan.
                return self._result_from_checkpoint(job, out, resume_from, done, global_start, t_start)

        device = resolve_device(cfg.training.device, key="training.device")
        precision = resolve_precision(cfg.training.precision, device)
        retained = retain_freed_memory() if cfg.training.retain_freed_memory else False
        model_path = job.model_path or cfg.model.model_path
        tokenizer = self._load_tokenizer(model_path)
        train_ds = build_train_dataset(job.dataset, tokenizer, cfg)
        eval_ds = build_eval_dataset(job, cfg, tokenizer)
        model = self._load_model(model_path, cfg, precision, device)
        tr = cfg.training
        args = _training_args(cfg, out, precision, device, with_eval=eval_ds is not None)
        st = JobState(job=job, cfg=cfg, global_start=global_start)
        rank = int(os.environ.get("RANK", "0"))
        # Length-grouped batches (little padding); the longest batch goes first so an out-of-memory
        # batch size fails at step 1, not hours into a file. group_size=1 gives plain random batches.
        sampler = LengthGroupedBatchSampler(list(train_ds.lengths), tr.per_device_batch_size, seed=tr.seed,
                                            shuffle=True, group_size=64 if tr.group_by_length else 1,
                                            longest_first=tr.group_by_length)
        # Varlen attention: one packed row per batch (same examples per step, zero padding).
        packed = packing_supported(getattr(model.config, "_attn_implementation", None))
        # Shape buckets (trainer.engine.shapes): batch lengths on a grid here, the loss's shapes in the trainer.
        buckets = wanted(tr.shape_buckets, device, precision == "bf16")
        collator = (PackCollator() if packed
                    else PadCollator(tokenizer.pad_token_id, pad_to_multiple_of=LENGTH_MULTIPLE if buckets else None))
        status = StatusWriter(job.status_file or None, standalone=standalone)
        cb = EngineCallback(st, control, status, is_main=(rank == 0))
        trainer = ContinuousTrainer(model=model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                    processing_class=tokenizer, data_collator=collator,
                                    callbacks=[cb], engine_state=st, batch_sampler=sampler, collator=collator,
                                    shape_buckets=buckets)
        t_train, cpu_train = time.perf_counter(), time.process_time()
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        train_seconds = time.perf_counter() - t_train
        train_cpu_seconds = time.process_time() - cpu_train  # this process's CPU time (all threads)
        local_end = trainer.state.global_step

        final_dir = ""
        if st.stopped_reason is None:
            # End of file: a checkpoint at the last step (unless the periodic save just wrote it)
            # and the exported model the daemon swaps into models/current_model/.
            if eval_ds is not None and (tr.eval_steps <= 0 or local_end % tr.eval_steps != 0):
                metrics = trainer.evaluate()
                st.validation_loss = float(metrics.get("eval_loss", float("nan")))
            if not _saved_at(trainer, out, global_start + local_end):
                trainer.save_final_checkpoint()
            if trainer.is_world_process_zero():
                final_dir = str(export_final(out, trainer.model, trainer.processing_class, tr.method))
        elif st.stopped_reason == "stop":
            if not _saved_at(trainer, out, global_start + local_end):
                trainer.save_final_checkpoint()

        duration = time.time() - t_start
        # Steps of this job across resumes = global end - the job's global start.
        result = JobResult(
            ok=True, job_id=job.job_id, global_step_start=global_start,
            global_step_end=global_start + local_end, steps=local_end, tokens=st.tokens,
            train_loss_first=st.first_loss, train_loss_last=st.last_loss, validation_loss=st.validation_loss,
            duration_s=round(duration, 3), tokens_per_sec=round(st.tokens / max(duration, 1e-6), 2),
            checkpoints=[str(p) for p in complete_checkpoints(out)], final_model_dir=final_dir,
            stopped_reason=st.stopped_reason, resumed_from=str(resume_from) if resume_from else None,
            metrics={"train_seconds": round(train_seconds, 3), "train_cpu_seconds": round(train_cpu_seconds, 3),
                     "pad_share": round(1 - st.tokens / st.padded_tokens, 4) if st.padded_tokens else None,
                     "precision": precision, "device": device, "examples": len(train_ds),
                     "file_total_steps": st.file_total_steps, "packed": packed,
                     "retained_freed_memory": retained, **peaks()},
        )
        if rank == 0:
            cb.write(trainer.state, "completed" if st.stopped_reason is None else
                     ("stopped" if st.stopped_reason == "stop" else "skipped"))
        return result

    @staticmethod
    def _result_from_checkpoint(job: TrainJob, out: Path, cp: Path, state: dict, global_start: int,
                                t_start: float) -> JobResult:
        """The result of a job whose last checkpoint is already at its last step: export, no training."""
        info = read_json(cp / CHECKPOINT_INFO) or {}
        # One writer of final/ (the ranks of a group launch share the job folder).
        final = export_final_from_checkpoint(out, cp) if int(os.environ.get("RANK", "0")) == 0 else out / "final"
        losses = [h["loss"] for h in state.get("log_history", []) if "loss" in h]
        local = int(state["global_step"])
        return JobResult(ok=True, job_id=job.job_id, global_step_start=global_start,
                         global_step_end=global_start + local, steps=local, tokens=0,
                         train_loss_first=losses[0] if losses else None,
                         train_loss_last=info.get("train_loss", losses[-1] if losses else None),
                         validation_loss=info.get("validation_loss"),
                         duration_s=round(time.time() - t_start, 3),
                         checkpoints=[str(p) for p in complete_checkpoints(out)], final_model_dir=str(final),
                         resumed_from=str(cp), metrics={"finished_from_checkpoint": True, **peaks()})
