#!/usr/bin/env python3
"""Shape buckets (``trainer.engine.shapes``, ``training.shape_buckets``): what a new matrix shape costs
on this CPU, and what bucketing buys full training steps, measured in this one invocation.

1. The cost of a new shape: a 256 -> 768 linear layer, forward + backward, at a row count it has never
   seen (every call new) against the same row count again (cached), in bf16 autocast and in fp32
   (milliseconds per call, median of blocks of 20).
2. Full steps: the engine's loss (label positions only, pruned last layer, ``training.cpu_attention``
   auto) + backward + clip + fused AdamW under bf16 autocast over ``--batches`` fresh length-grouped
   batches of 8 from ``bench/train_throughput.py``'s skewed chat data, once with buckets and once
   without. oneDNN's kernel cache is per process, so every pass runs in a fresh Python process; the
   two alternate ``--rounds`` times. Prints wall and CPU seconds per pass, the medians, their ratio,
   and the last loss of each side (the same batches and the same loss: they should match).

    .venv/bin/python bench/shape_buckets.py [--batches 60] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import spread  # noqa: E402  (also puts the repo on sys.path)


def linear_ms(rows: list[int], bf16: bool) -> float:
    import torch
    w = torch.randn(768, 256, requires_grad=True)
    times = []
    for m in rows:
        x = torch.randn(m, 256, requires_grad=True)
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = torch.nn.functional.linear(x, w)
        y.float().sum().backward()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def one_pass(model_dir: Path, batches: int, seed: int, buckets: bool) -> dict:
    import torch
    from transformers import AutoModelForCausalLM
    from cpu_attention import batches as make_batches, engine_step
    from foundation.allocator import retain_freed_memory
    from trainer.engine.last_layer import LastLayerPruner
    from trainer.engine.shapes import LENGTH_MULTIPLE
    retain_freed_memory()  # as the engine does
    # the engine's collator pads to the grid when buckets are on
    data = make_batches(model_dir, batches, 8, seed, pad_to_multiple_of=LENGTH_MULTIPLE if buckets else None)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    pruner, opt = LastLayerPruner.attach(model), torch.optim.AdamW(model.parameters(), fused=True)
    t, cpu = time.perf_counter(), time.process_time()
    for b in data:
        loss = engine_step(model, pruner, opt, b, buckets=buckets)
    return {"wall": time.perf_counter() - t, "cpu": time.process_time() - cpu, "loss": float(loss.detach())}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs=2, metavar=("BUCKETS", "MODEL_DIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    if a.one:
        print(json.dumps(one_pass(Path(a.one[1]), a.batches, a.seed, a.one[0] == "on")))
        return 0
    for bf16 in (True, False):
        linear_ms([1120] * 5, bf16)  # warm-up
        new = linear_ms(list(range(3000, 3060)), bf16)
        cached = linear_ms([3030] * 60, bf16)
        print(f"linear 256->768 fwd+bwd {'bf16' if bf16 else 'fp32'}: new row count {new:.2f} ms, "
              f"cached {cached:.2f} ms, new/cached = {new / cached:.2f}", flush=True)
    from tools.models.make_tiny_model import build
    with tempfile.TemporaryDirectory(prefix="shape-buckets-") as tmp:
        model_dir = build(Path(tmp) / "tiny", seed=0)
        runs: dict[str, list[dict]] = {"off": [], "on": []}
        for _ in range(a.rounds):
            for side in runs:
                out = subprocess.run([sys.executable, __file__, "--batches", str(a.batches), "--seed", str(a.seed),
                                      "--threads", str(a.threads), "--one", side, str(model_dir)],
                                     check=True, capture_output=True, text=True).stdout
                runs[side].append(json.loads(out.strip().splitlines()[-1]))
                r = runs[side][-1]
                print(f"  buckets {side:3s} wall {r['wall']:.2f} s, cpu {r['cpu']:.2f} s, last loss {r['loss']:.4f}",
                      flush=True)
    for side, rs in runs.items():
        print(f"buckets {side}: {a.batches} fresh batches, wall {spread([r['wall'] for r in rs], '.2f')}, "
              f"cpu {spread([r['cpu'] for r in rs], '.2f')}")
    med = {s: statistics.median(r["wall"] for r in rs) for s, rs in runs.items()}
    cpu = {s: statistics.median(r["cpu"] for r in rs) for s, rs in runs.items()}
    print(f"ratio full-step speed buckets on/off = {med['off'] / med['on']:.3f}; per CPU-second "
          f"{cpu['off'] / cpu['on']:.3f} ({a.rounds} rounds, each pass a fresh process)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
