#!/usr/bin/env python3
"""What bf16 serving costs in quality: the local evaluator's own run
(``monitoring.evaluation.local_mode.evaluate_checkpoint``) on one model with ``inference.precision``
fp32 and then bf16, in one process, on the same suite items.

Each run is what the evaluation daemon does with this repo's config.json (``--profile``,
``--max-new-tokens`` and ``--batch-size`` override it): the model loaded as the server loads it
(packed linears, the fast forward), greedy answers through the batched engine, exact match,
confidence calibration, suite validation loss. Prints each precision's accuracy, validation loss,
ECE and items/s, then how far bf16 is from fp32: the validation loss's relative difference, how many
items' extracted answers differ, and how many items changed correct <-> wrong.

    .venv/bin/python bench/serve_precision.py [--model DIR] [--items 64] [--max-new-tokens 32]
        [--profile plain] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model or checkpoint folder (default: build the tiny model)")
    ap.add_argument("--items", type=int, default=64, help="suite items (from the repo suite)")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--profile", default="plain")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    a = ap.parse_args()
    import torch

    from foundation.device import cpu_has_native_bf16
    from monitoring.evaluation.local_mode import evaluate_checkpoint
    from syllo.suite import REPO_SUITE_DIR, load_suite
    from tools.models.make_tiny_model import model_or_tiny
    from trainer.config.loader import load_config

    torch.set_num_threads(a.threads)
    model_dir = model_or_tiny(a.model, "precision-bench-")
    suite = load_suite(REPO_SUITE_DIR, max_items=a.items)
    print(f"serve_precision: model={model_dir.name} items={len(suite.items)} max_new_tokens={a.max_new_tokens} "
          f"profile={a.profile} threads={a.threads} native_bf16={cpu_has_native_bf16()}", flush=True)
    res = {}
    for precision in ("fp32", "bf16"):
        cfg = load_config(base_dir=REPO, environ={}, overrides={
            "inference.precision": precision, "evaluation.device": "cpu", "profile.name": a.profile,
            "evaluation.max_new_tokens": a.max_new_tokens, "evaluation.batch_size": a.batch_size})
        r = res[precision] = evaluate_checkpoint(model_dir, suite, cfg, base_dir=REPO)
        ece = (r.get("calibration") or {}).get("ece")
        print(f"  {precision}  accuracy {r['accuracy']:.3f}  validation loss {r['validation_loss']:.4f}  "
              f"ECE {ece if ece is None else round(ece, 4)}  {len(suite.items) / r['duration_s']:6.2f} items/s "
              f"({r['duration_s']:.1f}s, {r['dtype']})", flush=True)
    f32, b16 = res["fp32"], res["bf16"]
    answers = sum(x["got"] != y["got"] for x, y in zip(f32["items"], b16["items"]))
    flips = sum(x["correct"] != y["correct"] for x, y in zip(f32["items"], b16["items"]))
    loss_rel = (b16["validation_loss"] - f32["validation_loss"]) / f32["validation_loss"]
    print(f"bf16 against fp32: validation loss {loss_rel * 100:+.2f}%, accuracy {b16['accuracy'] - f32['accuracy']:+.3f}, "
          f"answers differing {answers} of {len(suite.items)}, correct<->wrong flips {flips}; "
          f"speed {f32['duration_s'] / b16['duration_s']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
