"""The last decoder layer run at label positions only (training and evaluation loss).

Why: in a causal LM every position's hidden state feeds later positions through attention in every
layer but the last. After the last layer only the positions whose logits are used matter, and with
assistant-only loss that is about half of a chat batch. So the last layer needs keys and values at
every position (label positions attend to the prompt) but its query projection, attention output,
``o_proj``, MLP and norms only at label positions. Profiling the engine on CPU (torch.profiler, the
tiny model, batch 8, lengths 24..256): matrix multiplies are about 63% of the step and run near the
CPU's peak, so the only way left to go faster is to do fewer of them; this removes
``(q + o + MLP) / layer x non-label share / layers`` of the layer compute (about 11% on the tiny
model's 4 layers, less on deep models) with the same loss and gradients.

How: ``LastLayerPruner.attach(model)`` wraps the last decoder layer's ``forward`` of a Llama-shaped
model (Llama, Qwen2, Qwen3, Mistral: ``input_layernorm -> self_attn(q/k/v/o_proj[, q_norm, k_norm],
rotary) -> post_attention_layernorm -> mlp``, full attention, no dropout) and returns None for any
other model. Inside ``pruner.at(keep)`` that layer gathers each row's label positions (``keep``),
runs attention for those queries against all keys with an explicit causal mask, and scatters the
results back; outside it (and for any call with a cache) the layer is the model's own. The first
use checks the pruned logits against the model's own on the same batch and switches pruning off
for good if they differ (a model that looks Llama-shaped but is not). Only for batches without
left padding (the caller drops ``attention_mask`` for right-padded batches, see ``trainer.engine.loss``),
sdpa or eager attention, and no gradient checkpointing (its recomputation would take the other path).
"""
from __future__ import annotations

import contextlib
import logging
import sys

import torch

from foundation.device import same_numbers
from trainer.engine.attention import scaled_dot_product_attention
from trainer.engine.shapes import round_up

log = logging.getLogger(__name__)

LLAMA_SHAPED_TYPES = ("llama", "qwen2", "qwen3", "mistral")  # also the plain-head models of chunked_ce
SUPPORTED_ATTENTION = ("sdpa", "eager")


def unwrap_lm(model):
    """The ``*ForCausalLM`` under DDP and PEFT wrappers."""
    m = getattr(model, "module", model)  # DDP
    if hasattr(m, "get_base_model"):  # PEFT
        m = m.get_base_model()
    return m


def _unsupported_reason(lm) -> str | None:
    cfg = getattr(lm, "config", None)
    if cfg is None or getattr(cfg, "model_type", None) not in LLAMA_SHAPED_TYPES:
        return f"model type {getattr(cfg, 'model_type', None)!r} not in {LLAMA_SHAPED_TYPES}"
    if getattr(cfg, "_attn_implementation", None) not in SUPPORTED_ATTENTION:
        return f"attention {getattr(cfg, '_attn_implementation', None)!r} not in {SUPPORTED_ATTENTION}"
    layers = getattr(getattr(lm, "model", None), "layers", None)
    if not layers:
        return "no model.layers"
    layer = layers[-1]
    attn = getattr(layer, "self_attn", None)
    needed = [(layer, "input_layernorm"), (layer, "post_attention_layernorm"), (layer, "mlp"),
              (attn, "q_proj"), (attn, "k_proj"), (attn, "v_proj"), (attn, "o_proj"), (attn, "head_dim"),
              (attn, "scaling")]
    if attn is None or any(not hasattr(obj, name) for obj, name in needed):
        return "last layer is not Llama-shaped"
    if getattr(attn, "sliding_window", None) or (getattr(cfg, "layer_types", None) or ["full_attention"])[-1] != "full_attention":
        return "last layer uses sliding-window attention"
    if getattr(attn, "attention_dropout", 0.0):
        return "attention dropout"
    if not callable(getattr(sys.modules.get(type(attn).__module__), "apply_rotary_pos_emb", None)):
        return "no apply_rotary_pos_emb beside the attention class"
    return None


def gather_label_positions(keep: torch.Tensor, multiple: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(idx, valid)``: per row the positions where ``keep`` is True in ascending order, as a
    ``(batch, max_kept)`` index (``max_kept`` rounded up to ``multiple``, at most the length); slots
    past a row's count hold the last position (if kept, its slots compute the same value), and
    ``valid`` marks the real slots."""
    b, length = keep.shape
    counts = keep.sum(1)
    width = min(round_up(max(int(counts.max()), 1), multiple), length)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :width]
    valid = torch.arange(width, device=keep.device)[None, :] < counts[:, None]
    return torch.where(valid, order, torch.full_like(order, length - 1)), valid


class LastLayerPruner:
    """Runs the last decoder layer at label positions only while ``at(keep)`` is active."""

    def __init__(self, lm):
        self.layer = lm.model.layers[-1]
        self.attn = self.layer.self_attn
        self.rope = sys.modules[type(self.attn).__module__].apply_rotary_pos_emb
        self.enabled = True
        self.verified = False
        self.pruned_calls = 0
        self._idx: torch.Tensor | None = None
        self._stock = self.layer.forward
        self.layer.forward = self._forward

    @classmethod
    def attach(cls, model) -> "LastLayerPruner | None":
        lm = unwrap_lm(model)
        reason = _unsupported_reason(lm)
        if reason:
            log.info("last-layer pruning off: %s", reason)
            return None
        return cls(lm)

    def usable(self, model) -> bool:
        lm = unwrap_lm(model)
        name = "is_activation_checkpointing" if hasattr(type(lm), "is_activation_checkpointing") else "is_gradient_checkpointing"
        return self.enabled and not getattr(lm, name, False)

    @contextlib.contextmanager
    def at(self, keep: torch.Tensor, multiple: int | None = None):
        """Inside: the last layer computes only positions where ``keep`` (batch, length) is True
        (queries per row rounded up to ``multiple``)."""
        self._idx = gather_label_positions(keep, multiple)[0]
        try:
            yield
        finally:
            self._idx = None

    def verify(self, run, keep: torch.Tensor) -> bool:
        """Compares ``run()`` (logits at ``keep``) with and without pruning, once; switches pruning
        off if they differ beyond the dtype's rounding."""
        self.verified = True
        with torch.no_grad():
            stock = run().float()
            with self.at(keep):
                pruned = run().float()
        exact = (self.layer.input_layernorm.weight.dtype == torch.float32
                 and not any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda")))
        ok, err = same_numbers(pruned, stock, exact=exact)  # fp32, or bf16/fp16 rounding (autocast or half weights)
        if not ok:
            self.enabled = False
            log.warning("last-layer pruning off: pruned logits differ from the model's own (relative error %.3g)",
                        err)
        return self.enabled

    def _forward(self, hidden_states, *args, **kwargs):
        idx = self._idx
        if idx is None or args or kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None \
                or kwargs.get("position_embeddings") is None:
            return self._stock(hidden_states, *args, **kwargs)
        self.pruned_calls += 1
        return self._pruned(hidden_states, idx, kwargs["position_embeddings"])

    def _pruned(self, hidden: torch.Tensor, idx: torch.Tensor, position_embeddings) -> torch.Tensor:
        layer, attn = self.layer, self.attn
        b, length, width = hidden.shape
        q_len, hd = idx.shape[1], attn.head_dim
        h = layer.input_layernorm(hidden)
        take = idx[:, :, None].expand(b, q_len, width)
        q = attn.q_proj(h.gather(1, take)).view(b, q_len, -1, hd)
        k = attn.k_proj(h).view(b, length, -1, hd)
        if hasattr(attn, "q_norm"):
            q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        v = attn.v_proj(h).view(b, length, -1, hd).transpose(1, 2)
        cos, sin = (t.expand(b, -1, -1) for t in position_embeddings)
        at_q = idx[:, :, None].expand(b, q_len, cos.shape[-1])
        q = self.rope(q, q, cos.gather(1, at_q), sin.gather(1, at_q))[0]
        k = self.rope(k, k, cos, sin)[1]
        rep = q.shape[1] // k.shape[1]
        if rep > 1:  # grouped-query attention: each KV head serves `rep` consecutive query heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        causal = torch.arange(length, device=idx.device)[None, None, :] <= idx[:, :, None]
        out = scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=causal[:, None],
                                           scale=attn.scaling)
        out = attn.o_proj(out.transpose(1, 2).reshape(b, q_len, -1))
        res = hidden.gather(1, take) + out
        res = res + layer.mlp(layer.post_attention_layernorm(res))
        return hidden.scatter(1, take, res.to(hidden.dtype))
