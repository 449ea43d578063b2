"""Attention in fp32 inside CPU bf16 autocast (training and its evaluation loss).

Why: under CPU bf16 autocast ``scaled_dot_product_attention`` runs the CPU flash-attention kernel in
bf16, and its backward is much slower than the fp32 kernel at chat lengths (``bench/cpu_attention.py``
on this 2-core CPU, fwd + bwd, 8 rows x 4 heads x 64 dims, bf16 against cast up to fp32: 2.35x at 40
tokens, 1.80x at 100, 1.31x at 180, 1.08x at 256; full engine steps on the same batches 1.11x).
Llama-shaped models already hand it
fp32 queries and keys (``q_norm``/``k_norm`` and rotary run in fp32 under autocast), so running it in
fp32 also saves their casts; only the values are cast up. The result is more precise, never less:
the matrix multiplies around it stay bf16. On CUDA (fast bf16 kernels) and without autocast nothing
changes.

How: ``fp32_cpu_attention()`` swaps transformers' ``"sdpa"`` attention function
(``ALL_ATTENTION_FUNCTIONS``, looked up by every model at each forward) for ``sdpa_fp32_on_cpu``
while active, and restores it after; ``scaled_dot_product_attention`` is the same rule for our own
attention call (``trainer.engine.last_layer``).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def upcast_wanted(t: torch.Tensor) -> bool:
    """True on CPU inside bf16 autocast: there the fp32 attention kernel is the faster one."""
    return (t.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def _attend(attend, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """``attend(q, k, v)``, with fp32 inputs and autocast off when ``upcast_wanted``."""
    if not upcast_wanted(q):
        return attend(q, k, v)
    with torch.autocast("cpu", enabled=False):
        return attend(q.float(), k.float(), v.float())


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, in fp32 when ``upcast_wanted``."""
    return _attend(lambda *qkv: F.scaled_dot_product_attention(*qkv, **kw), q, k, v)


_stock_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]


def sdpa_fp32_on_cpu(module, query, key, value, attention_mask, **kw):
    """transformers' sdpa attention function, run in fp32 when ``upcast_wanted``."""
    return _attend(lambda *qkv: _stock_sdpa(module, *qkv, attention_mask, **kw), query, key, value)


@contextlib.contextmanager
def fp32_cpu_attention(enabled: bool = True):
    """While active (and ``enabled``), models using ``attn_implementation="sdpa"`` attend in fp32
    under CPU bf16 autocast."""
    if not enabled:
        yield
        return
    previous = ALL_ATTENTION_FUNCTIONS["sdpa"]
    ALL_ATTENTION_FUNCTIONS["sdpa"] = sdpa_fp32_on_cpu
    try:
        yield
    finally:
        ALL_ATTENTION_FUNCTIONS["sdpa"] = previous
