"""Padding-efficient batches: a length-grouped batch sampler, a right-padding collator and, for
varlen attention (CUDA flash attention), a packing collator.

Why: chat data is length-skewed; random batches pad every row to the batch's longest one, so a
third or more of the compute goes to padding. Grouping similar lengths removes most of it. We
group inside "mega-chunks" of ``group_size`` batches drawn at random (the HF Trainer /
``group_by_length`` idea), then shuffle the batch order, so there is no long-to-short curriculum
and batch composition still changes from epoch to epoch on large files.

Determinism: the order is a pure function of (seed, epoch, lengths), identical in every DDP
process, which is what accelerate's ``BatchSamplerShard`` needs when it deals batch i to process
i % world_size. The one incomplete batch (when ``drop_last`` is False) is always yielded last,
because ``BatchSamplerShard`` treats a short batch as the end of the data.
"""
from __future__ import annotations

import math
import random
from typing import Iterable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

from trainer.data.tokenization import IGNORE_INDEX


class _EpochSampler(Sampler[int]):
    """The flat index order of the owning batch sampler. Exposed as ``.sampler`` because
    accelerate's ``DataLoaderShard.set_epoch`` reaches ``batch_sampler.batch_sampler.sampler``
    (and not the batch sampler itself) when it wraps it for DDP."""

    def __init__(self, owner: "LengthGroupedBatchSampler"):
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        for batch in self._owner:
            yield from batch

    def __len__(self) -> int:
        return sum(len(b) for b in self._owner.batches())


class LengthGroupedBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices, every index once per epoch (minus the incomplete batch
    when ``drop_last``). Use as ``DataLoader(ds, batch_sampler=..., collate_fn=PadCollator(...))``.

    ``group_size``: batches per mega-chunk. Pad share on uniformly spread lengths is about
    1 / group_size (64 -> ~2%); a larger value pads less but mixes less. With ``shuffle=False``
    the indices are sorted longest-first and batched in that order (evaluation).
    ``longest_first`` puts the batch with the longest example first, so an out-of-memory batch
    shows up at the first step instead of in the middle of a file."""

    def __init__(self, lengths: Sequence[int], batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool = False, group_size: int = 64, longest_first: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.lengths = [int(x) for x in lengths]
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.group_size = group_size
        self.longest_first = longest_first
        self.epoch = 0
        self.sampler = _EpochSampler(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches()

    def batches(self, epoch: int | None = None) -> list[list[int]]:
        """The batches of one epoch (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        n, bs = len(self.lengths), self.batch_size
        lengths = self.lengths
        if not self.shuffle:
            order = sorted(range(n), key=lambda i: -lengths[i])
            out = [order[i:i + bs] for i in range(0, n, bs)]
            return out[:-1] if self.drop_last and out and len(out[-1]) < bs else out
        # A seeded private RNG: same batches in every process, independent of global RNG state.
        rng = random.Random(self.seed * 1_000_003 + epoch)
        perm = list(range(n))
        rng.shuffle(perm)
        chunk = bs * self.group_size  # a multiple of bs: only the final chunk can leave a short batch
        full: list[list[int]] = []
        partial: list[int] = []
        for c in range(0, n, chunk):
            # Stable sort after a shuffle: equal lengths stay in random order.
            part = sorted(perm[c:c + chunk], key=lambda i: -lengths[i])
            for b in range(0, len(part), bs):
                batch = part[b:b + bs]
                if len(batch) == bs:
                    full.append(batch)
                else:
                    partial = batch
        rng.shuffle(full)
        if self.longest_first and full:
            k = max(range(len(full)), key=lambda j: max(lengths[i] for i in full[j]))
            full.insert(0, full.pop(k))
        if partial and not self.drop_last:
            full.append(partial)
        return full


class PadCollator:
    """Right-pads ``input_ids`` (with ``pad_token_id``), ``labels`` (with -100) and builds
    ``attention_mask`` to the longest row of the batch (rounded up to ``pad_to_multiple_of``,
    which tensor cores like). Other keys are ignored. Returns int64 tensors."""

    def __init__(self, pad_token_id: int, label_pad_id: int = IGNORE_INDEX, pad_to_multiple_of: int | None = None):
        if pad_token_id is None:
            raise ValueError("pad_token_id is None: set tokenizer.pad_token (e.g. to the EOS token)")
        self.pad_token_id = int(pad_token_id)
        self.label_pad_id = int(label_pad_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("empty batch")
        rows = [_as_list(f["input_ids"]) for f in features]
        labels = [_as_list(f["labels"]) if "labels" in f else list(r) for f, r in zip(features, rows)]
        width = max(len(r) for r in rows)
        m = self.pad_to_multiple_of
        if m and width % m:
            width += m - width % m
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        lab = torch.full((len(rows), width), self.label_pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for k, (r, l) in enumerate(zip(rows, labels)):
            if len(l) != len(r):
                raise ValueError(f"row {k}: {len(r)} input_ids but {len(l)} labels")
            ids[k, :len(r)] = torch.tensor(r, dtype=torch.long)
            lab[k, :len(l)] = torch.tensor(l, dtype=torch.long)
            mask[k, :len(r)] = 1
        return {"input_ids": ids, "labels": lab, "attention_mask": mask}


class PackCollator:
    """Packs a batch's examples into ONE row, without padding: ``input_ids`` and ``labels`` of shape
    ``(1, total_tokens)`` and ``position_ids`` restarting at 0 for each example, no ``attention_mask``
    (what ``transformers.DataCollatorWithFlattening`` produces). The first label of every example is
    -100, so no example learns to predict the next one's first token.

    Only for attention implementations that keep packed examples apart from ``position_ids``:
    flash_attention_2/3 (varlen kernels: no padding and no wasted attention work) and
    flex_attention (block mask). Transformers 5 also builds a block-diagonal mask for sdpa/eager
    when ``attention_mask`` is None, which is correct but materialises a ``total x total`` mask: on
    those the engine keeps length-grouped padding instead (see ``packing_supported``)."""

    def __init__(self, label_pad_id: int = IGNORE_INDEX):
        self.label_pad_id = int(label_pad_id)

    def __call__(self, features: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("empty batch")
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        for k, f in enumerate(features):
            r = _as_list(f["input_ids"])
            lab = _as_list(f["labels"]) if "labels" in f else list(r)
            if len(lab) != len(r):
                raise ValueError(f"row {k}: {len(r)} input_ids but {len(lab)} labels")
            if not r:
                continue
            ids.extend(r)
            labels.append(self.label_pad_id)
            labels.extend(lab[1:])
            pos.extend(range(len(r)))
        as_row = lambda xs: torch.tensor([xs], dtype=torch.long)  # noqa: E731
        return {"input_ids": as_row(ids), "labels": as_row(labels), "position_ids": as_row(pos)}


PACKING_ATTENTION = ("flash_attention_2", "flash_attention_3", "flex_attention")


def packing_supported(attn_implementation: str | None) -> bool:
    """Whether one packed row per batch (``PackCollator``) is both correct and cheap for this
    attention implementation (``model.config._attn_implementation``)."""
    return bool(attn_implementation) and any(attn_implementation.endswith(a) for a in PACKING_ATTENTION)


def _as_list(x) -> list[int]:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def pad_share(batches_of_lengths: Iterable[Sequence[int]], pad_to_multiple_of: int | None = None) -> float:
    """Padding tokens / processed tokens (rows x padded width) over the given batches."""
    pad = total = 0
    for b in batches_of_lengths:
        if not len(b):
            continue
        width = max(b)
        if pad_to_multiple_of and width % pad_to_multiple_of:
            width += pad_to_multiple_of - width % pad_to_multiple_of
        total += width * len(b)
        pad += width * len(b) - sum(b)
    return pad / total if total else 0.0


def random_batches(n: int, batch_size: int, seed: int = 0) -> list[list[int]]:
    """Plain shuffled batches (the baseline that benchmarks compare against)."""
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]
