"""The running batch of one model: its rows and their shared KV cache, left-padded so rows of
different lengths sit in one tensor (explicit position ids keep each row's positions right).

``merge`` joins newly prefilled rows onto a running batch (continuous batching); ``compact`` drops
finished rows and trims columns that have become padding for every row. Both need a plain
per-layer KV tensor (``DynamicCache`` layers with ``keys``/``values``).
"""
from __future__ import annotations

from typing import Any

from inference.gen_request import GenRequest


class RowBatch:
    """Rows plus their shared KV cache."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.rows: list[GenRequest] = []
        self.cache = None
        self.attn = None   # LongTensor [B, T]
        self.pos = None    # LongTensor [B]: position of the next input token
        self.last = None   # LongTensor [B]: last sampled token (next input)

    def take(self, other: "RowBatch") -> None:
        """Become ``other`` (this batch has no rows)."""
        self.rows, self.cache, self.attn, self.pos, self.last = other.rows, other.cache, other.attn, other.pos, \
            other.last

    def clear(self) -> None:
        self.rows, self.cache, self.attn, self.pos, self.last = [], None, None, None, None


def merge(a: RowBatch, b: RowBatch) -> None:
    """Append b's rows to a: left-pad the shorter KV cache / mask so both have the same length."""
    import torch
    import torch.nn.functional as F

    ta, tb = a.attn.shape[1], b.attn.shape[1]
    t = max(ta, tb)
    for la, lb in zip(a.cache.layers, b.cache.layers):
        ka, va, kb, vb = la.keys, la.values, lb.keys, lb.values
        if t > ta:
            ka, va = F.pad(ka, (0, 0, t - ta, 0)), F.pad(va, (0, 0, t - ta, 0))
        if t > tb:
            kb, vb = F.pad(kb, (0, 0, t - tb, 0)), F.pad(vb, (0, 0, t - tb, 0))
        la.keys, la.values = torch.cat([ka, kb], 0), torch.cat([va, vb], 0)
    a.attn = torch.cat([F.pad(a.attn, (t - ta, 0)), F.pad(b.attn, (t - tb, 0))], 0)
    a.pos = torch.cat([a.pos, b.pos], 0)
    a.last = torch.cat([a.last, b.last], 0)
    a.rows = a.rows + b.rows


def compact(batch: RowBatch) -> None:
    """Drop finished rows from the cache and trim columns that are padding for every row."""
    import torch

    keep = [i for i, r in enumerate(batch.rows) if not r.done]
    if not keep:
        batch.clear()
        return
    if len(keep) < len(batch.rows):
        idx = torch.tensor(keep, dtype=torch.long, device=batch.attn.device)
        for layer in batch.cache.layers:
            layer.keys = layer.keys.index_select(0, idx)
            layer.values = layer.values.index_select(0, idx)
        batch.attn = batch.attn.index_select(0, idx)
        batch.pos = batch.pos.index_select(0, idx)
        batch.last = batch.last.index_select(0, idx)
        batch.rows = [batch.rows[i] for i in keep]
        used = batch.attn.any(0)
        first = int(used.int().argmax())
        if first > 0:
            for layer in batch.cache.layers:
                layer.keys = layer.keys[..., first:, :]
                layer.values = layer.values[..., first:, :]
            batch.attn = batch.attn[:, first:]
