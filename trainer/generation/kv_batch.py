"""The running batch of one model: its rows and their shared KV cache, left-padded so rows of
different lengths sit in one tensor (explicit position ids keep each row's positions right).

``merge`` joins newly prefilled rows onto a running batch (continuous batching); ``compact`` drops
finished rows and trims columns that have become padding for every row. Both need a plain
per-layer KV tensor (``DynamicCache`` layers with ``keys``/``values``).

Why ``SlackLayer``: transformers' ``DynamicLayer`` appends each decode step's key/value column with
``torch.cat``, which copies the whole cache every step (quadratic in the reply length; at long
contexts it was the largest single cost of a step). ``SlackLayer`` keeps spare columns after the
used ones and writes the new column in place; ``keys``/``values`` stay views of the used part, so
everything that reads them (attention, ``merge``, ``compact``) is unchanged.
"""
from __future__ import annotations

from typing import Any

from trainer.generation.request import GenRequest

SLACK_COLUMNS = 64
"""Spare columns allocated beyond the used ones (at least; growth is geometric)."""


def _slack_layer_class():
    from transformers.cache_utils import DynamicLayer

    class SlackLayer(DynamicLayer):
        """A ``DynamicLayer`` that grows into preallocated spare columns instead of concatenating."""

        def update(self, key_states, value_states, *args, **kwargs):
            if not self.is_initialized or self.keys.numel() == 0:
                self.is_initialized, self.device = True, key_states.device
                self.set(key_states, value_states)
                return self.keys, self.values
            n, used = key_states.shape[-2], self.keys.shape[-2]
            if used + n > self._kbuf.shape[-2]:
                self.set(self.keys, self.values, extra=n)
                used = self.keys.shape[-2] - n
            else:
                self.keys = self._kbuf[..., :used + n, :]
                self.values = self._vbuf[..., :used + n, :]
            self.keys[..., used:, :] = key_states
            self.values[..., used:, :] = value_states
            return self.keys, self.values

        def set(self, keys, values, extra: int = 0) -> None:
            """Hold ``keys``/``values`` (copied into fresh buffers with spare columns) plus ``extra``
            columns left for the caller to fill."""
            import torch
            used = keys.shape[-2]
            cap = used + extra + spare_columns(used)
            shape = (*keys.shape[:-2], cap, keys.shape[-1])
            kbuf = torch.empty(shape, dtype=keys.dtype, device=keys.device)
            vbuf = torch.empty(shape, dtype=values.dtype, device=values.device)
            kbuf[..., :used, :] = keys
            vbuf[..., :used, :] = values
            self.adopt(kbuf, vbuf, used + extra)

        def adopt(self, kbuf, vbuf, used: int) -> None:
            """Hold buffers whose first ``used`` columns are the cache (the rest is spare)."""
            self._kbuf, self._vbuf = kbuf, vbuf
            self.keys = kbuf[..., :used, :]
            self.values = vbuf[..., :used, :]

    return SlackLayer


_SLACK = None


def spare_columns(used: int) -> int:
    """Spare columns to allocate beyond ``used`` (at least ``SLACK_COLUMNS``; geometric growth)."""
    return max(SLACK_COLUMNS, used // 2)


def _stack_left_padded(parts: list, t: int, spare: int = 0):
    """One buffer ``[sum of rows, heads, t + spare, dim]`` holding ``parts`` (``[rows, heads, t_i,
    dim]`` each) one after another, each ending at column ``t`` with zeros on its left (masked
    padding; zeros, not garbage, because masked values still meet a 0 weight in attention)."""
    first = parts[0]
    buf = first.new_empty((sum(p.shape[0] for p in parts), *first.shape[1:-2], t + spare, first.shape[-1]))
    r = 0
    for p in parts:
        n, ti = p.shape[0], p.shape[-2]
        if ti < t:
            buf[r:r + n, ..., :t - ti, :].zero_()
        buf[r:r + n, ..., t - ti:t, :] = p
        r += n
    return buf


def new_cache(model: Any):
    """An empty ``DynamicCache`` for ``model`` whose plain layers are ``SlackLayer``s."""
    global _SLACK
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if _SLACK is None:
        _SLACK = _slack_layer_class()
    cache = DynamicCache(config=model.config)
    cache.layers = [_SLACK() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _set(layer: Any, keys, values) -> None:
    if hasattr(layer, "set"):
        layer.set(keys, values)
    else:
        layer.keys, layer.values = keys, values


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
    """Append b's rows to a: left-pad the shorter KV cache / mask so both have the same length.
    Each layer's keys and values are copied once, straight into the merged buffer."""
    import torch
    import torch.nn.functional as F

    ta, tb = a.attn.shape[1], b.attn.shape[1]
    t = max(ta, tb)
    for la, lb in zip(a.cache.layers, b.cache.layers):
        spare = spare_columns(t) if hasattr(la, "adopt") else 0
        kbuf = _stack_left_padded([la.keys, lb.keys], t, spare)
        vbuf = _stack_left_padded([la.values, lb.values], t, spare)
        if spare:
            la.adopt(kbuf, vbuf, t)
        else:
            la.keys, la.values = kbuf, vbuf
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
    if len(keep) == len(batch.rows):
        return
    idx = torch.tensor(keep, dtype=torch.long, device=batch.attn.device)
    batch.attn = batch.attn.index_select(0, idx)
    batch.pos = batch.pos.index_select(0, idx)
    batch.last = batch.last.index_select(0, idx)
    batch.rows = [batch.rows[i] for i in keep]
    first = int(batch.attn.any(0).int().argmax())
    batch.attn = batch.attn[:, first:]
    for layer in batch.cache.layers:
        _set(layer, layer.keys.index_select(0, idx)[..., first:, :], layer.values.index_select(0, idx)[..., first:, :])
