#!/usr/bin/env python3
"""Memory and time of the LM head + loss on a large vocabulary: whole logits (``F.cross_entropy`` over
``hidden @ weight.T``, what a stock causal LM does at the label positions) vs the engine's blocks
(``trainer.engine.chunked_ce``, the size ``training.logits_budget_mb`` gives), forward and backward.

Each side runs in its own fresh subprocess; the figure is the rise of the process's peak RSS
(``VmHWM``) over what it held once the inputs existed, and the seconds of one forward + backward
after a warm-up. Defaults are Qwen3-0.6B's head (hidden 1,024, vocabulary 151,936) and 4 x 1,024
label tokens; both sides' loss and gradients are compared, so the saving is at equal results.

    .venv/bin/python bench/loss_memory.py [--rows 4096] [--hidden 1024] [--vocab 151936] [--budget-mb 256]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child(side: str, a: argparse.Namespace) -> dict:
    import time
    import torch
    import torch.nn.functional as F
    sys.path.insert(0, str(ROOT))
    from trainer.engine.chunked_ce import linear_cross_entropy_sum
    from trainer.engine.memory import peak_rss_bytes
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(a.rows, a.hidden, generator=g).mul_(0.05).requires_grad_()
    weight = torch.randn(a.vocab, a.hidden, generator=g).mul_(0.05).requires_grad_()
    targets = torch.randint(0, a.vocab, (a.rows,), generator=g)
    chunk = max(1, a.budget_mb * 2**20 // (4 * a.vocab))

    def step():
        if side == "whole":
            loss = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
        else:
            loss = linear_cross_entropy_sum(hidden, weight, targets, chunk)
        gh, gw = torch.autograd.grad(loss, (hidden, weight))
        return loss.item(), gh, gw

    base = peak_rss_bytes()
    loss, gh, gw = step()
    rise = peak_rss_bytes() - base
    t = time.perf_counter()
    step()
    secs = time.perf_counter() - t
    return {"side": side, "rise_bytes": rise, "seconds": round(secs, 3), "loss": loss,
            "grad_h_sum": float(gh.double().abs().sum()), "grad_w_sum": float(gw.double().abs().sum()),
            "chunk_rows": chunk}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=4096, help="label tokens in the step")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--budget-mb", type=int, default=256, help="training.logits_budget_mb")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a)))
        return 0
    res = {}
    for side in ("whole", "chunked"):
        cmd = [sys.executable, __file__, "--child", side, "--rows", str(a.rows), "--hidden", str(a.hidden),
               "--vocab", str(a.vocab), "--budget-mb", str(a.budget_mb)]
        res[side] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        r = res[side]
        print(f"{side:8s} peak RSS rise={r['rise_bytes'] / 2**20:.0f} MiB  seconds={r['seconds']:.2f}  "
              f"loss={r['loss']:.3f}  chunk_rows={r['chunk_rows'] if side == 'chunked' else a.rows}", flush=True)
    w, c = res["whole"], res["chunked"]
    same = (abs(w["loss"] - c["loss"]) <= 1e-4 * abs(w["loss"])
            and abs(w["grad_h_sum"] - c["grad_h_sum"]) <= 1e-3 * w["grad_h_sum"]
            and abs(w["grad_w_sum"] - c["grad_w_sum"]) <= 1e-3 * w["grad_w_sum"])
    print(f"ratio peak RSS rise whole/chunked = {w['rise_bytes'] / max(c['rise_bytes'], 1):.2f}; "
          f"time chunked/whole = {c['seconds'] / w['seconds']:.2f}; same loss and gradients: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
