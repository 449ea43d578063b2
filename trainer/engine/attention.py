"""Attention in fp32 inside CPU bf16 autocast (training and its evaluation loss).

Why: under CPU bf16 autocast ``scaled_dot_product_attention`` runs the CPU flash-attention kernel in
bf16, and its backward is much slower than the fp32 kernel at chat lengths (measured here on
torch 2.13, fwd + bwd, 8 rows x 4 heads x 64 dims: 2.9 ms against 1.4 ms at 40 tokens, 7.9 against
4.0 at 100, 15.8 against 10.8 at 180, equal from about 220). Llama-shaped models already hand it
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


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kw) -> torch.Tensor:
    """``F.scaled_dot_product_attention``, in fp32 when ``upcast_wanted``."""
    if upcast_wanted(q):
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), **kw)
    return F.scaled_dot_product_attention(q, k, v, **kw)


_stock_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]


def sdpa_fp32_on_cpu(module, query, key, value, attention_mask, **kw):
    """transformers' sdpa attention function, run in fp32 when ``upcast_wanted``."""
    if upcast_wanted(query):
        with torch.autocast("cpu", enabled=False):
            return _stock_sdpa(module, query.float(), key.float(), value.float(), attention_mask, **kw)
    return _stock_sdpa(module, query, key, value, attention_mask, **kw)


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
