#!/usr/bin/env python3
"""Attention in fp32 under CPU bf16 autocast (``trainer.engine.attention``, ``training.fp32_cpu_attention``):
what it buys, measured in this one invocation.

1. The kernel: ``scaled_dot_product_attention`` forward + backward, causal, 8 rows x 4 heads x 64
   dims (the tiny model's shape) at several lengths, bf16 as autocast runs it against the same
   inputs cast up to fp32 (milliseconds, median of 20 after a warm-up).
2. Full training steps on the same batches: the engine's loss (label positions only, pruned last
   layer) + backward + clip + fused AdamW under bf16 autocast, with and without
   ``fp32_cpu_attention``, two model copies interleaved round by round so machine noise hits both
   alike; 16 length-grouped batches of 8 from ``bench/train_throughput.py``'s skewed chat data.

    .venv/bin/python bench/cpu_attention.py [--rounds 8] [--lengths 40,100,180,256]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import skewed_dataset, spread  # noqa: E402  (also puts the repo on sys.path)


def kernel_ms(length: int, upcast: bool, n: int = 20) -> float:
    import torch
    import torch.nn.functional as F
    q, k, v = (torch.randn(8, 4, length, 64, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))

    def step():
        if upcast:
            o = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True).to(q.dtype)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o.sum().backward()
    for _ in range(3):
        step()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def batches(model_dir: Path, n_batches: int, size: int, seed: int) -> list[dict]:
    from transformers import AutoTokenizer
    from trainer.data.batching import PadCollator
    from trainer.data.tokenization import tokenize_example
    tok = AutoTokenizer.from_pretrained(model_dir)
    feats = [tokenize_example(tok, r, max_length=256, loss_on="assistant")
             for r in skewed_dataset(n_batches * size, 256, seed, tok)]
    feats.sort(key=lambda f: len(f["input_ids"]))
    out = [PadCollator(tok.pad_token_id)(feats[i:i + size]) for i in range(0, len(feats), size)]
    random.Random(seed).shuffle(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--lengths", default="40,100,180,256")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import tempfile
    import torch
    from transformers import AutoModelForCausalLM
    from tools.models.make_tiny_model import build
    from trainer.engine.attention import fp32_cpu_attention
    from trainer.engine.last_layer import LastLayerPruner
    from trainer.engine.loss import label_only_loss
    torch.set_num_threads(a.threads)
    for length in (int(x) for x in a.lengths.split(",")):
        bf16, fp32 = kernel_ms(length, False), kernel_ms(length, True)
        print(f"kernel fwd+bwd length={length}: bf16 {bf16:.2f} ms, cast up to fp32 {fp32:.2f} ms, "
              f"ratio bf16/fp32 = {bf16 / fp32:.2f}", flush=True)
    with tempfile.TemporaryDirectory(prefix="cpu-attention-") as tmp:
        model_dir = build(Path(tmp) / "tiny", seed=0)
        data = batches(model_dir, 16, 8, seed=0)
        sides = {}
        for name, upcast in (("bf16_attention", False), ("fp32_attention", True)):
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
            sides[name] = (model, LastLayerPruner.attach(model), torch.optim.AdamW(model.parameters(), fused=True),
                           upcast)

        def steps(name: str, some: list[dict]) -> float:
            model, pruner, opt, upcast = sides[name]
            t = time.perf_counter()
            for b in some:
                with fp32_cpu_attention(upcast), torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = label_only_loss(model, b, None, pruner)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)
            return time.perf_counter() - t
        for name in sides:
            steps(name, data[:3])  # warm-up
        secs = {name: [] for name in sides}
        for _ in range(a.rounds):
            for name in sides:
                secs[name].append(steps(name, data))
        med = {name: statistics.median(v) for name, v in secs.items()}
        for name, v in secs.items():
            print(f"steps {name}: {len(data)} batches, seconds {spread(v, '.3f')}")
        print(f"ratio full-step speed fp32_attention/bf16_attention = "
              f"{med['bf16_attention'] / med['fp32_attention']:.3f} ({a.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
