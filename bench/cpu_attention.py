#!/usr/bin/env python3
"""Attention under CPU bf16 autocast (``trainer.engine.attention``, ``training.cpu_attention``): the
three ways, measured in this one invocation.

  flash_bf16  the CPU flash-attention kernel in bf16 (what autocast does by itself)
  flash_fp32  the same kernel on inputs cast up to fp32
  math_bf16   bf16 matrix multiplies with the softmax computed in fp32 (transformers' eager arithmetic)

1. The kernel: transformers' attention function as the engine runs it (``sdpa_on_cpu_bf16``), forward +
   backward, causal, 8 rows x 4 query / 2 key-value heads x 64 dims (the tiny model's shape), fp32
   queries and keys and bf16 values as a Llama-shaped layer hands them over, at several lengths
   (milliseconds, median of 20 after a warm-up); plus each way's mean absolute error against an fp64
   reference at 140 tokens (forward).
2. Full training steps on the same batches: the engine's loss (label positions only, pruned last
   layer) + backward + clip + fused AdamW under bf16 autocast, one model copy per way, interleaved
   round by round so machine noise hits all alike; 16 length-grouped batches of 8 from
   ``bench/train_throughput.py``'s skewed chat data. Prints each way's seconds and the mean loss of
   its last round (the copies train on the same batches, so equal precision shows as equal loss).

    .venv/bin/python bench/cpu_attention.py [--rounds 8] [--lengths 40,100,180,256,512]
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


WAYS = ("flash_bf16", "flash_fp32", "math_bf16")  # the fixed ways of training.cpu_attention ("auto" picks one)


def _inputs(length: int, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(8, 4, length, 64, generator=g)
    k = torch.randn(8, 2, length, 64, generator=g)
    v = torch.randn(8, 2, length, 64, generator=g).to(torch.bfloat16)
    return q, k, v


def _attend(way: str, q, k, v):
    import types
    import torch
    from trainer.engine.attention import cpu_bf16_attention, sdpa_on_cpu_bf16
    module = types.SimpleNamespace(num_key_value_groups=q.shape[1] // k.shape[1], is_causal=True)
    with cpu_bf16_attention(way), torch.autocast("cpu", dtype=torch.bfloat16):
        return sdpa_on_cpu_bf16(module, q, k, v, None, scaling=q.shape[-1] ** -0.5)[0]


def kernel_ms(length: int, way: str, n: int = 20) -> float:
    q, k, v = (t.requires_grad_() for t in _inputs(length))

    def step():
        _attend(way, q, k, v).float().sum().backward()
    for _ in range(3):
        step()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def kernel_error(length: int, way: str) -> float:
    import torch.nn.functional as F
    q, k, v = _inputs(length, seed=1)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True, enable_gqa=True)
    return float((_attend(way, q, k, v).double().transpose(1, 2) - ref).abs().mean())


def engine_step(model, pruner, opt, batch: dict, way: str = "auto", buckets: bool = False):
    """One training step as the engine runs it on a CPU in bf16: the label-only loss (pruned last
    layer, ``way`` attention, shape ``buckets``) + backward + clip + fused AdamW. Returns the loss."""
    import torch
    from trainer.engine.attention import cpu_bf16_attention
    from trainer.engine.loss import label_only_loss
    with cpu_bf16_attention(way), torch.autocast("cpu", dtype=torch.bfloat16):
        loss = label_only_loss(model, batch, None, pruner, buckets=buckets)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


def batches(model_dir: Path, n_batches: int, size: int, seed: int, pad_to_multiple_of: int | None = None) -> list[dict]:
    from transformers import AutoTokenizer
    from trainer.data.batching import PadCollator
    from trainer.data.tokenization import tokenize_example
    tok = AutoTokenizer.from_pretrained(model_dir)
    feats = [tokenize_example(tok, r, max_length=256, loss_on="assistant")
             for r in skewed_dataset(n_batches * size, 256, seed, tok)]
    feats.sort(key=lambda f: len(f["input_ids"]))
    collate = PadCollator(tok.pad_token_id, pad_to_multiple_of=pad_to_multiple_of)
    out = [collate(feats[i:i + size]) for i in range(0, len(feats), size)]
    random.Random(seed).shuffle(out)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--lengths", default="40,100,180,256,512")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import tempfile
    import torch
    from transformers import AutoModelForCausalLM
    from tools.models.make_tiny_model import build
    from trainer.engine.last_layer import LastLayerPruner
    torch.set_num_threads(a.threads)
    for length in (int(x) for x in a.lengths.split(",")):
        ms = {way: kernel_ms(length, way) for way in WAYS}
        print(f"kernel fwd+bwd length={length}: " + ", ".join(f"{w} {t:.2f} ms" for w, t in ms.items())
              + f"; flash_fp32/math_bf16 = {ms['flash_fp32'] / ms['math_bf16']:.2f}", flush=True)
    print("kernel mean abs error vs fp64, length=140: "
          + ", ".join(f"{w} {kernel_error(140, w):.2e}" for w in WAYS), flush=True)
    with tempfile.TemporaryDirectory(prefix="cpu-attention-") as tmp:
        model_dir = build(Path(tmp) / "tiny", seed=0)
        data = batches(model_dir, 16, 8, seed=0)
        sides = {}
        for way in WAYS:
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
            sides[way] = (model, LastLayerPruner.attach(model), torch.optim.AdamW(model.parameters(), fused=True))

        def steps(way: str, some: list[dict]) -> tuple[float, float]:
            model, pruner, opt = sides[way]
            t, losses = time.perf_counter(), []
            for b in some:
                losses.append(engine_step(model, pruner, opt, b, way))
            return time.perf_counter() - t, float(torch.stack(losses).mean())
        for way in sides:
            steps(way, data[:3])  # warm-up
        secs, last_loss = {way: [] for way in sides}, {}
        for _ in range(a.rounds):
            for way in sides:
                took, last_loss[way] = steps(way, data)
                secs[way].append(took)
        med = {way: statistics.median(v) for way, v in secs.items()}
        for way, v in secs.items():
            print(f"steps {way}: {len(data)} batches, seconds {spread(v, '.3f')}, "
                  f"mean loss of the last round {last_loss[way]:.4f}")
        print(f"ratio full-step speed math_bf16/flash_bf16 = {med['flash_bf16'] / med['math_bf16']:.3f}, "
              f"math_bf16/flash_fp32 = {med['flash_fp32'] / med['math_bf16']:.3f}, "
              f"flash_fp32/flash_bf16 = {med['flash_bf16'] / med['flash_fp32']:.3f} ({a.rounds} rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
