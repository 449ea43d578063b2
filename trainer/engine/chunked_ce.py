"""Cross-entropy through the LM head without a ``(label tokens x vocab)`` logits tensor.

Why: even with logits at label positions only (``trainer.engine.loss``), a large vocabulary makes
the logits the biggest tensor of a step: 8 rows x 1,024 assistant tokens x Qwen3's 151,936 entries
is 5 GB in fp32, and its softmax gradient as much again. Here the LM head and the loss run over
``chunk_rows`` label positions at a time; each chunk's gradients (for the hidden states and the head
weight) are computed right away, as Liger Kernel's fused linear cross-entropy does, so only one
``chunk_rows x vocab`` block is ever alive. Same loss and gradients as ``F.cross_entropy`` over the
full logits (sum reduction), same multiplies.

``use_chunked_head(lm)`` tells which models qualify: a plain bias-free ``nn.Linear`` head whose
output the model uses as its logits unchanged (Llama, Qwen2/3, Mistral; not models that scale or
soft-cap logits). ``head_as_identity(lm)`` makes the model's own forward return the (normed) hidden
states where it would return logits, so DDP, PEFT and ``logits_to_keep`` stay on the stock path.
"""
from __future__ import annotations

import contextlib

import torch

from trainer.data.tokenization import IGNORE_INDEX
from trainer.engine.last_layer import LLAMA_SHAPED_TYPES


def use_chunked_head(lm) -> bool:
    head = getattr(lm, "lm_head", None)
    return (getattr(getattr(lm, "config", None), "model_type", None) in LLAMA_SHAPED_TYPES
            and type(head) is torch.nn.Linear and head.bias is None)


@contextlib.contextmanager
def head_as_identity(lm):
    """Inside: ``lm.lm_head`` returns its input (the model's forward yields hidden states)."""
    head = lm.lm_head
    own = head.__dict__.get("forward")  # an instance-level forward someone else set, if any
    head.forward = lambda x: x
    try:
        yield
    finally:
        if own is None:
            del head.forward  # back to the class's forward
        else:
            head.forward = own


class _LinearCrossEntropy(torch.autograd.Function):
    """Sum over rows of ``cross_entropy(hidden @ weight.T, targets)``, ``chunk_rows`` rows at a time."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk_rows: int):
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_w else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        w = weight.to(hidden.dtype)
        for s in range(0, hidden.shape[0], chunk_rows):
            h, t = hidden[s:s + chunk_rows], targets[s:s + chunk_rows]
            logits = (h @ w.t()).float()
            valid = t != IGNORE_INDEX
            tc = torch.where(valid, t, torch.zeros_like(t))
            lse = torch.logsumexp(logits, dim=-1)
            total += ((lse - logits.gather(1, tc[:, None]).squeeze(1)) * valid).sum()
            if want_h or want_w:
                p = torch.exp(logits - lse[:, None])  # softmax, in place of the logits' memory
                del logits
                p[torch.arange(len(t), device=p.device), tc] -= 1.0
                p *= valid[:, None]
                p = p.to(hidden.dtype)
                if want_h:
                    grad_h[s:s + chunk_rows] = p @ w
                if want_w:
                    grad_w += (p.t() @ h).float()
        ctx.save_for_backward(grad_h if want_h else None, grad_w if want_w else None)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None
        gw = (grad_w * grad_out).to(ctx.weight_dtype) if grad_w is not None else None
        return gh, gw, None, None


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             chunk_rows: int = 1024) -> torch.Tensor:
    """``F.cross_entropy(hidden @ weight.T, targets, reduction="sum", ignore_index=-100)`` without the
    full logits. ``hidden``: (rows, hidden); ``weight``: (vocab, hidden); ``targets``: (rows,)."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    return _LinearCrossEntropy.apply(hidden, weight, targets, int(chunk_rows))
