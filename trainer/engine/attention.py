"""Attention under bf16 mixed precision on a CPU (training and its evaluation loss): the fastest of
three equal-precision ways, chosen per call (``training.cpu_attention``).

Why: under CPU bf16 autocast ``scaled_dot_product_attention`` runs the CPU flash-attention kernel in
bf16, and its backward is slow at chat lengths. ``bench/cpu_attention.py`` on this 2-core CPU (fwd +
bwd, 8 rows x 4 query / 2 key-value heads x 64 dims, milliseconds) measures three ways:

- ``flash_bf16``: what autocast does by itself.
- ``flash_fp32``: the same kernel on inputs cast up to fp32 (the matrix multiplies around it stay
  bf16). Llama-shaped models already hand it fp32 queries and keys (``q_norm``/``k_norm`` and rotary
  run in fp32 under autocast); only the values are cast up.
- ``math_bf16``: bf16 matrix multiplies (``QK^T`` and ``PV``) with the softmax computed in fp32
  (bf16 in and out, fp32 inside the kernel). This is the arithmetic of transformers' own ``eager``
  attention under bf16.

``math_bf16`` materializes the ``queries x keys`` scores (kept for the backward), so it wins at chat
lengths and loses, and holds much memory, at long ones. ``auto`` takes it while one call's scores
fit in ``MATH_MAX_SCORES_BYTES`` and the stock kernel (``flash_bf16``) beyond.

How: ``cpu_bf16_attention(mode)`` swaps transformers' ``"sdpa"`` attention function
(``ALL_ATTENTION_FUNCTIONS``, looked up by every model at each forward) while active, and restores
it after. ``scaled_dot_product_attention`` applies the same rule to our own attention call
(``trainer.engine.last_layer``); outside the context it is the stock kernel. Outside CPU bf16
autocast (fp32 training, CUDA) every call goes to the stock kernel untouched.
"""
from __future__ import annotations

import contextlib
import contextvars
from functools import lru_cache

import torch
import torch.nn.functional as F
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

MODES = ("auto", "math_bf16", "flash_fp32", "flash_bf16")
MATH_MAX_SCORES_BYTES = 32 * 2**20
"""``auto`` uses ``math_bf16`` while one call's bf16 scores (batch x heads x queries x keys x 2 bytes)
fit in this: 8 rows x 4 heads up to about 720 tokens, where it stops being the fastest
(``bench/cpu_attention.py``)."""

_mode: contextvars.ContextVar[str] = contextvars.ContextVar("cpu_attention_mode", default="flash_bf16")


def cpu_bf16(t: torch.Tensor) -> bool:
    """True on CPU inside bf16 autocast, where this module picks the kernel."""
    return (t.device.type == "cpu" and torch.is_autocast_enabled("cpu")
            and torch.get_autocast_dtype("cpu") == torch.bfloat16)


def way_for(scores: int) -> str:
    """The way a CPU bf16 call with ``scores`` attention scores (batch x heads x queries x keys)
    attends under the active mode."""
    mode = _mode.get()
    if mode == "auto":
        return "math_bf16" if 2 * scores <= MATH_MAX_SCORES_BYTES else "flash_bf16"
    return mode


@lru_cache(maxsize=64)
def _causal_bias(q_len: int, k_len: int, rep: int, device: torch.device) -> torch.Tensor:
    """0 where query i (the last ``q_len`` of ``k_len`` positions) may see key j, -inf elsewhere;
    the ``q_len`` rows tiled ``rep`` times (one block per query head sharing a key-value head)."""
    hidden = torch.ones(q_len, k_len, dtype=torch.bool, device=device).triu(k_len - q_len + 1)
    bias = torch.zeros(q_len, k_len, dtype=torch.bfloat16, device=device).masked_fill_(hidden, float("-inf"))
    return bias.repeat(rep, 1)


def math_bf16_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
                        is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """Attention as bf16 matrix multiplies with the softmax computed in fp32. ``q``: (batch, heads,
    queries, dim); ``k``/``v``: (batch, kv_heads, keys, dim), kv_heads dividing heads (grouped-query:
    query heads ``i * rep .. i * rep + rep - 1`` share key-value head ``i``); ``attn_mask``: boolean
    (True = attend) or additive, broadcastable to (batch, heads, queries, keys). Returns bf16
    (batch, heads, queries, dim)."""
    bf16 = torch.bfloat16
    b, heads, q_len, dim = q.shape
    kv_heads, k_len = k.shape[1], k.shape[2]
    rep = heads // kv_heads
    with torch.autocast("cpu", enabled=False):
        scale = dim ** -0.5 if scale is None else scale
        # The query heads that share a key-value head become one block of rows: one matrix multiply
        # per key-value head, no copies of the keys and values.
        qb = (q * scale).to(bf16, memory_format=torch.contiguous_format).view(b, kv_heads, rep * q_len, dim)
        scores = torch.matmul(qb, k.to(bf16).transpose(-1, -2))
        if is_causal:
            scores.add_(_causal_bias(q_len, k_len, rep, q.device))
        if attn_mask is not None:
            scores = scores.view(b, heads, q_len, k_len)
            scores = (scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                      else scores + attn_mask.to(bf16))
            scores = scores.view(b, kv_heads, rep * q_len, k_len)
        # Softmax of bf16 scores computes in fp32 inside the kernel; only its output is rounded.
        out = torch.matmul(torch.softmax(scores, dim=-1), v.to(bf16))
        return out.view(b, heads, q_len, dim)


def _attend(stock, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask, is_causal: bool, scale):
    """``stock(q, k, v)`` (the kernel as given), or the faster way of the same precision on CPU bf16."""
    if not cpu_bf16(q):
        return stock(q, k, v)
    way = way_for(q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2])
    if way == "math_bf16":
        return math_bf16_attention(q, k, v, attn_mask, is_causal, scale)
    if way == "flash_fp32":
        with torch.autocast("cpu", enabled=False):
            return stock(q.float(), k.float(), v.float())
    return stock(q, k, v)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask=None,
                                 is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` (``k``/``v`` with as many heads as ``q``), by the active
    mode's way on CPU bf16."""
    return _attend(lambda *qkv: F.scaled_dot_product_attention(*qkv, attn_mask=attn_mask, is_causal=is_causal,
                                                               scale=scale),
                   q, k, v, attn_mask, is_causal, scale)


_stock_sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
_STOCK_ONLY = ("softcap", "position_bias", "s_aux", "sinks", "output_attentions")


def sdpa_on_cpu_bf16(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     is_causal=None, **kw):
    """transformers' sdpa attention function, by the active mode's way on CPU bf16 (the stock
    function for dropout or any extra it alone understands)."""
    def stock(q, k, v):
        return _stock_sdpa(module, q, k, v, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal,
                           **kw)
    if dropout or any(kw.get(name) for name in _STOCK_ONLY):
        return stock(query, key, value)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = bool(causal) and attention_mask is None and query.shape[2] > 1
    out = _attend(stock, query, key, value, attention_mask, causal, scaling)
    if isinstance(out, tuple):  # the stock function's (output, weights)
        return out
    return out.transpose(1, 2).contiguous(), None


@contextlib.contextmanager
def cpu_bf16_attention(mode: str = "auto"):
    """While active, attention under CPU bf16 autocast goes ``mode``'s way (one of ``MODES``), for
    models using ``attn_implementation="sdpa"`` and for ``scaled_dot_product_attention``."""
    if mode not in MODES:
        raise ValueError(f"cpu attention mode {mode!r}: expected one of {', '.join(MODES)}")
    token = _mode.set(mode)
    previous = ALL_ATTENTION_FUNCTIONS["sdpa"]
    ALL_ATTENTION_FUNCTIONS["sdpa"] = sdpa_on_cpu_bf16
    try:
        yield
    finally:
        ALL_ATTENTION_FUNCTIONS["sdpa"] = previous
        _mode.reset(token)
