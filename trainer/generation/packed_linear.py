"""Linear layers of an inference model on the CPU, with their weights prepacked once for oneDNN.

Why: ``F.linear`` on the CPU calls MKL's sgemm, which copies the weight matrix into its blocked
layout on every call. At the row counts of serving (one token per row at decode, a few hundred
at prefill) that copy is a large part of each layer's time, and the weights of a whole model do
not stay in cache between steps. oneDNN's linear with a weight reordered once at load time (what
``torch.compile``'s CPU freezing pass and IPEX do) skips it: ``bench/decode_step.py`` measures a
whole prefill and decode step with and without packing.

Applied by the server's and the evaluator's model loaders (both inference only, so they keep
scoring the same numbers; packing changes only the order of fp32 additions). Each module keeps its
original weight: the state dict, tied embeddings and any call that needs gradients use it.
Nothing is packed when the model is not on the CPU, its dtype is not fp32/bf16, torch has no
oneDNN, the packed copies would take more than ``memory_fraction`` of the available memory, or
the self-check (packed against plain on a random row, for every layer) disagrees.
"""
from __future__ import annotations

import logging
import types
from typing import Any

from foundation.device import same_numbers

log = logging.getLogger("trainer.generation")

PACKED_ATTR = "_ct_packed_weight"


def pack_linears(model: Any, *, memory_fraction: float = 0.25, available_bytes: int | None = None) -> int:
    """Prepack every plain ``nn.Linear`` of ``model`` (on the CPU) for oneDNN; returns how many.

    ``available_bytes``: the memory the packed copies may use a fraction of (default: what psutil
    reports as available now)."""
    import torch
    from torch import nn

    if not _supported(torch):
        log.info("linear weights not prepacked: this torch has no oneDNN linear")
        return 0
    linears = [m for m in model.modules() if type(m) is nn.Linear and m.weight.device.type == "cpu"
               and m.weight.dtype in (torch.float32, torch.bfloat16) and PACKED_ATTR not in m.__dict__]
    if not linears:
        return 0
    need = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    if available_bytes is None:
        import psutil
        available_bytes = psutil.virtual_memory().available
    if need > memory_fraction * available_bytes:
        log.info("linear weights not prepacked: the copies would take %.0f MiB of %.0f MiB available",
                 need / 2**20, available_bytes / 2**20)
        return 0
    with torch.no_grad():
        for m in linears:
            packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach(), None)
            if not _agrees(torch, m, packed):
                log.warning("oneDNN's prepacked linear disagrees with F.linear on %s; serving unpacked",
                            tuple(m.weight.shape))
                unpack_linears(model)
                return 0
            setattr(m, PACKED_ATTR, packed)
            m.forward = types.MethodType(_packed_forward, m)
    return len(linears)


def unpack_linears(model: Any) -> None:
    """Undo ``pack_linears`` (the modules' own forward and weights again)."""
    for m in model.modules():
        if PACKED_ATTR in m.__dict__:
            delattr(m, PACKED_ATTR)
            m.__dict__.pop("forward", None)


def _supported(torch: Any) -> bool:
    mkldnn = getattr(torch.ops, "mkldnn", None)
    return bool(torch.backends.mkldnn.is_available() and mkldnn is not None
                and hasattr(mkldnn, "_reorder_linear_weight") and hasattr(mkldnn, "_linear_pointwise"))


def _agrees(torch: Any, m: Any, packed: Any) -> bool:
    w = m.weight
    x = torch.randn(3, w.shape[1], generator=torch.Generator().manual_seed(0)).to(w.dtype)
    try:
        got = torch.ops.mkldnn._linear_pointwise(x, packed, m.bias, "none", [], "")
    except RuntimeError:
        return False
    return same_numbers(got, torch.nn.functional.linear(x, w, m.bias), exact=w.dtype == torch.float32)[0]


def _packed_forward(self: Any, x: Any) -> Any:
    import torch
    import torch.nn.functional as F

    if torch.is_grad_enabled() or x.dtype != self.weight.dtype or x.device.type != "cpu":
        return F.linear(x, self.weight, self.bias)  # training, autocast or a moved model: the plain path
    if not x.is_contiguous():
        x = x.contiguous()
    return torch.ops.mkldnn._linear_pointwise(x, getattr(self, PACKED_ATTR), self.bias, "none", [], "")
