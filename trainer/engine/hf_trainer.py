"""The HF Trainer subclass: our length-grouped (or packed) batches, a global-step-aware LR schedule,
the loss on label positions only (``loss``, ``last_layer``), token counting, and step-named complete checkpoints."""
from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
from transformers import Trainer

from trainer.engine.attention import cpu_bf16_attention
from trainer.engine.callbacks import JobState
from trainer.engine.checkpoints import export_merged_lora, seal_checkpoint
from trainer.engine.last_layer import LastLayerPruner
from trainer.engine.loss import label_only_loss


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


class ContinuousTrainer(Trainer):
    """HF Trainer with our batches, our LR schedule, token counting and step-named checkpoints."""

    def __init__(self, *a, engine_state: JobState, batch_sampler, collator, shape_buckets: bool = False, **kw):
        super().__init__(*a, **kw)
        self._job = engine_state
        self._batch_sampler = batch_sampler
        self._collator = collator
        # Label-position logits (see trainer.engine.loss); switched off for good the first time the
        # model ignores a boolean ``logits_to_keep`` (older remote-code models).
        self._label_only = True
        # The last decoder layer at label positions only (Llama-shaped models; see trainer.engine.last_layer).
        self._pruner = LastLayerPruner.attach(self.model) if engine_state.cfg.training.prune_last_layer else None
        self._logits_budget = engine_state.cfg.training.logits_budget_mb * 2**20
        # Shape buckets (trainer.engine.shapes): decided by the engine, which pads its batches to the same grid.
        self._buckets = shape_buckets
        # The attention kernel under bf16 autocast on a CPU (see trainer.engine.attention).
        self._cpu_attention = (engine_state.cfg.training.cpu_attention
                               if self.args.bf16 and self.args.device.type == "cpu" else None)

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
        else:  # a packed row: no padding at all
            self._job.tokens += int(inputs["input_ids"].numel())
            self._job.padded_tokens += int(inputs["input_ids"].numel())
        return super().training_step(model, inputs, num_items_in_batch)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # The backward follows the graph this forward builds: the same attention way there too.
        with cpu_bf16_attention(self._cpu_attention) if self._cpu_attention else contextlib.nullcontext():
            return self._compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _compute_loss(self, model, inputs, return_outputs, num_items_in_batch):
        # Same loss as the model's own (sum / num_items_in_batch when the model takes loss kwargs,
        # else the mean), computed from label-position logits only. Evaluation only needs the loss
        # (prediction_loss_only); anything that wants the outputs takes the stock path.
        usable = (self._label_only and "labels" in inputs and self.label_smoother is None
                  and self.compute_loss_func is None and (not return_outputs or self.args.prediction_loss_only))
        if usable:
            n_items = num_items_in_batch if self.model_accepts_loss_kwargs else None
            loss = label_only_loss(model, inputs, n_items, self._pruner, self._logits_budget, self._buckets)
            if loss is not None:
                if self.args.average_tokens_across_devices and n_items is not None:
                    loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss does (DDP mean)
                return (loss, {}) if return_outputs else loss
            self._label_only = False
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        local = self.state.global_step
        src = Path(self.args.output_dir) / f"checkpoint-{local}"
        # Every rank writes its own RNG state into the folder: rename only once all are done.
        self.accelerator.wait_for_everyone()
        if not self.is_world_process_zero():
            return
        job, cfg = self._job, self._job.cfg
        model_dir = "."
        if cfg.training.method == "lora":
            # Evaluators and the server need full weights: a merged copy beside the adapter.
            export_merged_lora(self.model, src / "merged", self.processing_class)
            model_dir = "merged"
        info = {
            "local_step": local, "job_id": job.job.job_id, "source_file": job.job.source_file,
            "train_loss": job.last_loss, "validation_loss": job.validation_loss,
            "method": cfg.training.method, "model_dir": model_dir,
            "base_model": cfg.model.base_model, "profile": cfg.profile.name,
        }
        seal_checkpoint(src, job.global_start + local, info, keep=cfg.training.save_total_limit)

    def save_final_checkpoint(self) -> None:
        """A checkpoint at the current step (the Trainer's own save, sealed like every other)."""
        self._save_checkpoint(self.model, None)
