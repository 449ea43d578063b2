"""The serving forward (a prefill of new rows, or one decode step) of a Llama-family model as a
plain loop over its modules.

Why: at decode every row feeds one token, so the model's arithmetic is small and transformers'
generic forward (module hooks, the mask builder, the attention dispatch, output dataclasses)
costs about as much as the arithmetic (``bench/decode_step.py``, 16 rows, one CPU thread: the
decode step 1.10x-1.26x faster with this forward than with the model's, both with packed linears;
the prefill 1.02x). This forward runs the same layers by
calling the model's own modules' ``forward`` (norms, linears, with their prepacked weights, the
rotary module) and its ``apply_rotary_pos_emb``, with the same SDPA kernel (at one query the query
heads of a KV head are packed as its query rows, as transformers does), and writes keys/values
through the batch's cache layers, so ``kv_batch.merge``/``compact`` see the cache they always saw.
Only the last position's logits are computed.

Which models: ``llama``, ``mistral``, ``qwen2`` and ``qwen3`` (SmolLM2 is a Llama) on the CPU,
with full attention in every layer, SiLU MLPs and the standard module layout. It checks itself
once per model against the model's own forward (a prefill of two rows of different lengths, then
one decode step); any other model, or one that fails the check, keeps the model's own forward.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

from foundation.device import same_numbers

log = logging.getLogger("trainer.generation")

MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3")
ATTR = "_ct_fast_forward"


def fast_forward_for(model: Any, check: Any = None) -> "FastForward | None":
    """The model's checked ``FastForward``, built once and kept on the model; None when the
    model is not supported or failed its check. ``check(step, model) -> bool`` replaces the
    self-check (tests)."""
    cached = model.__dict__.get(ATTR)
    if cached is not None:
        return cached or None
    step = None
    why = _unsupported(model)
    if why is None:
        try:
            step = FastForward(model)
        except (AttributeError, TypeError) as e:  # a variant of the layout this step does not know
            why = f"{type(e).__name__}: {e}"
    if step is not None:
        if not (check or _agrees_with_model)(step, model):
            log.warning("fast forward disagrees with the model's forward; using the model's forward")
            step = None
    else:
        log.info("fast forward not used: %s", why)
    model.__dict__[ATTR] = step or False
    return step


def disable(model: Any) -> None:
    """Use the model's own forward at prefill and decode (benchmarks, tests)."""
    model.__dict__[ATTR] = False


def _unsupported(model: Any) -> str | None:
    import torch
    from torch import nn

    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in MODEL_TYPES:
        return f"model type {getattr(cfg, 'model_type', None)!r} is not one of {', '.join(MODEL_TYPES)}"
    inner = getattr(model, "model", None)
    if inner is None or not all(hasattr(inner, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "not the standard decoder layout"
    if not isinstance(getattr(model, "lm_head", None), nn.Linear) or model.lm_head.weight.device.type != "cpu":
        return "not on the CPU"
    if model.lm_head.weight.dtype not in (torch.float32, torch.bfloat16):
        return f"dtype {model.lm_head.weight.dtype}"
    if getattr(cfg, "hidden_act", "silu") != "silu" or getattr(cfg, "pretraining_tp", 1) not in (None, 1):
        return "activation or tensor-parallel layout"
    if any(t != "full_attention" for t in (getattr(cfg, "layer_types", None) or [])):
        return "layers with sliding-window attention"
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return "sliding-window attention"
    for layer in inner.layers:
        a, m = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        names = [(a, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")] + \
                [(m, n) for n in ("gate_proj", "up_proj", "down_proj")]
        if a is None or m is None or not all(type(getattr(o, n, None)) is nn.Linear for o, n in names):
            return "attention or MLP modules of another kind (adapters, quantized layers)"
    return None


class FastForward:
    """``step(ids [B,L], attn [B,T], pos [B,L], cache) -> logits [B,V]`` for each row's next token."""

    def __init__(self, model: Any):
        inner = model.model
        cfg = model.config
        first = inner.layers[0].self_attn
        self.rope = sys.modules[type(first).__module__].apply_rotary_pos_emb
        self.embed = inner.embed_tokens
        self.rotary = inner.rotary_emb
        self.norm = inner.norm
        self.head = model.lm_head
        self.layers = inner.layers
        self.head_dim = first.head_dim
        self.heads = cfg.num_attention_heads
        self.kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.scaling = first.scaling

    def step(self, ids: Any, attn: Any, pos: Any, cache: Any) -> Any:
        """Logits ``[B, V]`` at the last position of ``ids [B, L]`` (``attn [B, T]`` covers the
        cached columns and these, ``pos [B, L]``). L = 1 is a decode step; L > 1 a prefill (left
        padding in ``attn``, causal within the new tokens)."""
        import torch
        import torch.nn.functional as F

        B, L = ids.shape
        hd, hq, hkv = self.head_dim, self.heads, self.kv_heads
        h = self.embed(ids)
        cos, sin = self.rotary(h, pos)
        # additive (0 / -inf) masks rather than boolean: the CPU kernel takes them as they are
        if L == 1:
            mask = torch.zeros(attn.shape, dtype=h.dtype, device=h.device).masked_fill_(attn == 0, float("-inf"))
            mask = mask[:, None, None, :]
        else:
            T = attn.shape[1]
            col = torch.arange(T, device=h.device)
            row = torch.arange(T - L, T, device=h.device)[:, None]
            allowed = (attn.bool()[:, None, :] & (col <= row)) | (col == row)  # a padding query sees itself
            mask = torch.zeros(allowed.shape, dtype=h.dtype, device=h.device).masked_fill_(~allowed, float("-inf"))
            mask = mask[:, None]
        # modules' own ``forward`` (their arithmetic, the packed linears) without the call machinery
        for i, layer in enumerate(self.layers):
            a, m = layer.self_attn, layer.mlp
            x = layer.input_layernorm.forward(h)
            q = a.q_proj.forward(x).view(B, L, hq, hd)
            k = a.k_proj.forward(x).view(B, L, hkv, hd)
            v = a.v_proj.forward(x).view(B, L, hkv, hd).transpose(1, 2)
            if hasattr(a, "q_norm"):
                q, k = a.q_norm.forward(q), a.k_norm.forward(k)
            q, k = self.rope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
            keys, values = cache.layers[i].update(k, v)
            if L == 1:  # the query heads of a KV head become that head's query rows (no K/V repeat)
                o = F.scaled_dot_product_attention(q.reshape(B, hkv, hq // hkv, hd), keys, values,
                                                   attn_mask=mask, scale=self.scaling)
            else:
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=self.scaling,
                                                   enable_gqa=hq != hkv).transpose(1, 2)
            h = h + a.o_proj.forward(o.reshape(B, L, hq * hd))
            x = layer.post_attention_layernorm.forward(h)
            h = h + m.down_proj.forward(F.silu(m.gate_proj.forward(x)) * m.up_proj.forward(x))
        return self.head.forward(self.norm.forward(h[:, -1]))


def _agrees_with_model(step: FastForward, model: Any) -> bool:
    """A prefill of two left-padded rows and one decode step, both ways."""
    import torch

    from trainer.generation.kv_batch import new_cache
    from trainer.generation.target import cache_kwarg_name

    dev = model.lm_head.weight.device
    vocab = model.lm_head.weight.shape[0]
    g = torch.Generator().manual_seed(0)
    lengths = (5, 9)
    T = max(lengths)
    ids = torch.randint(0, vocab, (2, T), generator=g).to(dev)
    attn = torch.tensor([[0] * (T - n) + [1] * n for n in lengths], device=dev)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    nxt = torch.randint(0, vocab, (2, 1), generator=g).to(dev)
    attn2 = torch.cat([attn, torch.ones((2, 1), dtype=attn.dtype, device=dev)], 1)
    pos2 = attn.sum(-1, keepdim=True)
    kw = cache_kwarg_name(model)
    try:
        with torch.inference_mode():
            outs = []
            for fast in (False, True):
                cache = new_cache(model)
                if fast:
                    first = step.step(ids, attn, pos, cache).float()
                    outs.append(torch.cat([first, step.step(nxt, attn2, pos2, cache).float()]))
                else:
                    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, **{kw: cache})
                    first = out.logits[:, -1].float()
                    out = model(input_ids=nxt, attention_mask=attn2, position_ids=pos2, use_cache=True, **{kw: cache})
                    outs.append(torch.cat([first, out.logits[:, -1].float()]))
    except Exception as e:  # noqa: BLE001 - any failure means "not this model"
        log.warning("fast forward failed its check: %s: %s", type(e).__name__, e)
        return False
    want, got = outs
    return same_numbers(got, want, exact=model.lm_head.weight.dtype == torch.float32)[0]
