"""What the decode loop needs to know about a model: ``DecodeTarget``.

The server's ``LoadedModel`` carries the same attributes (plus what it reports); the evaluator
builds one with ``decode_target`` from a model and tokenizer it loaded itself.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from trainer.profiles.generation import eos_token_ids


@dataclass(frozen=True)
class DecodeTarget:
    model: Any
    tokenizer: Any
    eos_ids: frozenset
    pad_id: int
    cache_kwarg: str       # the forward's name for the KV cache argument
    supports_merge: bool   # rows may join a running batch (see ``supports_row_merge``)


def decode_target(model: Any, tokenizer: Any) -> DecodeTarget:
    eos = eos_token_ids(model, tokenizer)
    return DecodeTarget(model=model, tokenizer=tokenizer, eos_ids=frozenset(eos),
                        pad_id=pad_token_id(tokenizer, eos), cache_kwarg=cache_kwarg_name(model),
                        supports_merge=supports_row_merge(model))


def pad_token_id(tokenizer: Any, eos: list[int]) -> int:
    """The tokenizer's pad id, else the smallest EOS id, else 0 (padding is masked out anyway)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        pad = min(eos) if eos else 0
    return int(pad)


def cache_kwarg_name(model: Any) -> str:
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def supports_row_merge(model: Any) -> bool:
    """True when every cache layer is a plain DynamicLayer: rows can then be padded and merged
    into a running batch (continuous batching). Sliding-window or linear-attention layers cannot,
    and the decode loop falls back to admitting new rows only between batches."""
    try:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer
        cache = DynamicCache(config=model.config)
        return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)
    except Exception:  # noqa: BLE001 - any surprise means "do not merge"
        return False
