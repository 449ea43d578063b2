"""The training loss computed on label positions only.

Why: with assistant-only loss about half of a chat batch's positions have no target, yet a stock
causal LM projects every position onto the whole vocabulary (a ``batch x length x vocab`` logits
tensor, its log-softmax and their gradients). Profiling the engine on the tiny model showed the
step is all forward/backward compute (Trainer, callbacks, collation and status writes together
under 2%), and the LM head plus its loss was the largest piece we could remove without changing
the result. Transformers 5 lets the model itself slice before its head: ``logits_to_keep`` given as
a boolean ``(batch, length)`` mask returns logits of shape ``(n_true, vocab)`` (the model's own
forward, so PEFT, DDP wrapping and model-specific logit scaling all still apply). The loss is
the same token-level cross-entropy the model computes (sum over label tokens / ``num_items_in_batch``,
or the mean without it), so training results do not change; on large vocabularies it also removes
the biggest activation of the step (e.g. 8 x 512 x 151k fp32 logits = 2.5 GB).

More savings with the same result: the columns after the batch's last label position are not
computed (nothing before them depends on them); a right-padded batch goes in WITHOUT its ``attention_mask``
(causal attention never lets a real token see the padding after it, and padding has no labels), so
sdpa takes its causal path: no mask to build, expand and apply in every layer (CUDA kernels also
skip the masked half of the scores); and an optional ``LastLayerPruner`` runs the last decoder layer at the
label positions only (see ``trainer.engine.last_layer``). On a large vocabulary the head and the loss
run in blocks that never hold the whole logits tensor (``trainer.engine.chunked_ce``).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from trainer.data.tokenization import IGNORE_INDEX
from trainer.engine.chunked_ce import head_as_identity, linear_cross_entropy_sum, use_chunked_head
from trainer.engine.last_layer import unwrap_lm
from trainer.engine.shapes import LENGTH_MULTIPLE, QUERY_MULTIPLE, fill_rows, round_up



def next_labels(labels: torch.Tensor) -> torch.Tensor:
    """``(batch, length)``: at position i the label i+1, the one position i predicts
    (``IGNORE_INDEX`` at the last position, which predicts nothing)."""
    following = torch.full_like(labels, IGNORE_INDEX)
    following[:, :-1] = labels[:, 1:]
    return following


def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(keep, targets): ``keep`` is the boolean ``(batch, length)`` mask of positions whose NEXT
    label is a target (position i predicts label i+1), ``targets`` those labels in row-major order."""
    following = next_labels(labels)
    keep = following != IGNORE_INDEX
    return keep, following[keep]


def right_padding_only(mask: torch.Tensor, labels: torch.Tensor) -> bool:
    """True when every row of the 2-D ``mask`` is ones then zeros and no padded position has a label:
    then the mask changes nothing a causal LM computes at the positions that have labels."""
    if mask.ndim != 2:
        return False
    m = mask.bool()
    return bool((m[:, 1:] <= m[:, :-1]).all()) and bool((labels[~m] == IGNORE_INDEX).all())


def _without_trailing_columns(fwd: dict, keep: torch.Tensor, multiple: int | None = None) -> tuple[dict, torch.Tensor]:
    """Drops the columns after the batch's last label position (the kept width rounded up to
    ``multiple``): in a causal LM nothing at or before it depends on them (typically each chat's
    closing ``<|im_end|>`` and newline, and padding)."""
    cols = keep.any(0).nonzero()
    length = keep.shape[1]
    if not len(cols) or round_up(int(cols[-1]) + 1, multiple) >= length:
        return fwd, keep
    width = round_up(int(cols[-1]) + 1, multiple)
    crop = {k: v[:, :width] if torch.is_tensor(v) and v.ndim == 2 and v.shape[1] == length else v
            for k, v in fwd.items()}
    return crop, keep[:, :width]


def chunk_rows_for(lm, label_tokens: int, logits_budget_bytes: int | None) -> int | None:
    """Rows per LM-head block when the full fp32 logits of ``label_tokens`` rows would exceed
    ``logits_budget_bytes`` and the model's head can be chunked; None: one full logits tensor."""
    if not logits_budget_bytes or not use_chunked_head(lm):
        return None
    row_bytes = 4 * lm.lm_head.weight.shape[0]
    if label_tokens * row_bytes <= logits_budget_bytes:
        return None
    return max(1, logits_budget_bytes // row_bytes)


def label_only_loss(model, inputs: dict, num_items_in_batch=None, pruner=None,
                    logits_budget_bytes: int | None = None, buckets: bool = False) -> torch.Tensor | None:
    """The causal-LM loss of ``inputs`` with logits only at label positions, or None when the
    model does not honour a boolean ``logits_to_keep`` (the caller then uses the model's own loss).
    ``pruner``: a ``trainer.engine.last_layer.LastLayerPruner`` attached to ``model``, or None.
    ``logits_budget_bytes``: above this size the logits are never built whole; the head and the loss
    run in blocks (``trainer.engine.chunked_ce``). ``buckets``: round the shapes the step computes
    (``trainer.engine.shapes``); same loss."""
    labels = inputs["labels"]
    keep, targets = label_positions(labels)
    n_targets = targets.numel()
    fwd = {k: v for k, v in inputs.items() if k != "labels"}
    if fwd.get("attention_mask") is not None and right_padding_only(fwd["attention_mask"], labels):
        del fwd["attention_mask"]
    fwd, keep = _without_trailing_columns(fwd, keep, LENGTH_MULTIPLE if buckets else None)
    if buckets and n_targets:
        # Target-less fillers round the head's rows up; their targets are IGNORE_INDEX (no loss, no gradient).
        keep = fill_rows(keep)
        targets = next_labels(labels)[:, :keep.shape[1]][keep]
    lm = unwrap_lm(model)
    chunk = chunk_rows_for(lm, targets.numel(), logits_budget_bytes)

    def run(rows=None):
        """The model's output at label positions (of ``rows`` only, when given)."""
        args, k = fwd, keep
        if rows is not None:
            args = {n: v[rows] if torch.is_tensor(v) and v.ndim and v.shape[0] == keep.shape[0] else v
                    for n, v in fwd.items()}
            k = keep[rows]
        # No KV cache in training: it is never read, and a cache disables packed-sequence masking.
        with head_as_identity(lm) if chunk else contextlib.nullcontext():
            out = model(**args, logits_to_keep=k, use_cache=False)
        return out["logits"] if isinstance(out, dict) else out[0]

    prune = (pruner is not None and "attention_mask" not in fwd and "position_ids" not in fwd
             and pruner.usable(model) and bool(keep.any()))
    if prune and not pruner.verified:
        # The check runs on the two rows with the most labels (cheap, and rows of different label
        # counts exercise the padded query slots).
        rows = keep.sum(1).argsort(descending=True)[:2]
        prune = pruner.verify(lambda: run(rows), keep[rows])
    with pruner.at(keep, QUERY_MULTIPLE if buckets else None) if prune else contextlib.nullcontext():
        out = run()  # logits at label positions, or (chunked) the hidden states there
    if out.ndim != 2 or out.shape[0] != targets.shape[0]:
        return None
    if chunk:
        loss = linear_cross_entropy_sum(out, lm.lm_head.weight, targets, chunk)
    else:
        loss = F.cross_entropy(out.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
    if num_items_in_batch is None:
        return loss / n_targets if n_targets else loss
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch
