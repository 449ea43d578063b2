"""Shape buckets: a few distinct matrix shapes per job instead of one per batch (CPU bf16).

Why: on a CPU, bf16 matrix multiplies run in oneDNN, which builds (JIT-compiles) a kernel for every
new shape and caches it. Length-grouped batches give every step a new length, so every step paid
for new kernels for each projection's forward and both backward products, the label-only head and
the attention products. ``bench/shape_buckets.py`` on this 2-core CPU: a 256 -> 768 linear layer,
fwd + bwd, takes 15.66 ms at a never-seen row count against 10.63 ms cached in bf16, 21.72 against
21.64 in fp32 (MKL: no such cost); 60 fresh length-grouped batches train 1.28x-1.53x faster with
buckets (two runs).

How: the batch's length (the collator's padding and the crop after the last label) is rounded up
to a multiple of ``LENGTH_MULTIPLE``; the number of positions whose logits are computed is rounded
up to a multiple of ``ROWS_MULTIPLE`` with positions that have no target (their loss and gradient
are zero); the pruned last layer's queries per row to a multiple of ``QUERY_MULTIPLE``. The loss and
gradients are the same; the extra work is the rounding.
"""
from __future__ import annotations

import torch

LENGTH_MULTIPLE = 16
"""Batch length (tokens per row) rounded up to this."""
ROWS_MULTIPLE = 64
"""Positions whose logits are computed (label positions plus target-less fillers) rounded up to this."""
QUERY_MULTIPLE = 8
"""Queries per row of the pruned last layer rounded up to this."""


def round_up(n: int, multiple: int | None) -> int:
    """``n`` rounded up to a multiple of ``multiple`` (unchanged when ``multiple`` is falsy)."""
    return n if not multiple or n % multiple == 0 else n + multiple - n % multiple


def wanted(enabled: str, device_type: str, bf16: bool) -> bool:
    """Whether ``training.shape_buckets`` (``auto``/``on``/``off``) buckets on this device and
    precision: ``auto`` only on a CPU in bf16, where new shapes cost a kernel build."""
    return enabled == "on" or (enabled == "auto" and device_type == "cpu" and bf16)


def fill_rows(keep: torch.Tensor, multiple: int = ROWS_MULTIPLE) -> torch.Tensor:
    """``keep`` (batch, length) with target-less positions added until its count is a multiple of
    ``multiple`` (or every position is kept). Fillers go round-robin over the rows, each row's
    earliest free positions first, so no row's count grows by more than ``need / batch`` + 1."""
    n = int(keep.sum())
    need = round_up(n, multiple) - n
    if need == 0:
        return keep
    free = ~keep
    rank = free.cumsum(1)  # 1-based rank of each free position within its row
    per_row = -(-need // keep.shape[0])
    cand = free & (rank <= per_row)
    if int(cand.sum()) < need:
        return keep
    rows = torch.arange(keep.shape[0], device=keep.device)[:, None].expand_as(keep)
    order = (rank * keep.shape[0] + rows)[cand]  # rank-major: every row's first free slot, then the second...
    chosen = cand.nonzero()[order.argsort()[:need]]
    out = keep.clone()
    out[chosen[:, 0], chosen[:, 1]] = True
    return out
