#!/usr/bin/env python3
"""What bf16 serving costs in quality: the evaluator's own scoring of one model loaded in fp32 and
in bf16 (``inference.precision``), in one process, on the same suite items.

For each precision the model is loaded as the local evaluator loads it
(``monitoring.evaluation.loading.load_checkpoint``: packed linears, the fast forward) and scored by
``monitoring.evaluation.local_mode.evaluate_model`` (greedy answers through the batched engine,
exact match, confidence calibration, suite validation loss). Prints each precision's accuracy,
validation loss, ECE and items/s, then how far bf16 is from fp32: the validation loss's relative
difference, how many items' extracted answers differ, and how many items changed correct <-> wrong.

    .venv/bin/python bench/serve_precision.py [--model DIR] [--items 64] [--max-new-tokens 32]
        [--profile plain] [--threads 1]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


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
    from monitoring.evaluation.loading import load_checkpoint
    from monitoring.evaluation.local_mode import evaluate_model
    from syllo.suite import REPO_SUITE_DIR, load_suite
    from tools.models.make_tiny_model import model_or_tiny
    from trainer.profiles import get_profile

    torch.set_num_threads(a.threads)
    model_dir = model_or_tiny(a.model, "precision-bench-")
    suite = load_suite(REPO_SUITE_DIR, max_items=a.items)
    profile = get_profile(a.profile)
    print(f"serve_precision: model={model_dir.name} items={len(suite.items)} max_new_tokens={a.max_new_tokens} "
          f"profile={a.profile} threads={a.threads} native_bf16={cpu_has_native_bf16()}", flush=True)
    res = {}
    for precision in ("fp32", "bf16"):
        model, tok = load_checkpoint(model_dir, "cpu", precision=precision)
        t = time.perf_counter()
        r = evaluate_model(model, tok, suite, profile, profile_name=a.profile,
                           system_prompt=profile.render_system_prompt(None), max_new_tokens=a.max_new_tokens,
                           batch_size=a.batch_size, max_length=1024)
        r["seconds"] = time.perf_counter() - t
        res[precision] = r
        ece = (r.get("calibration") or {}).get("ece")
        print(f"  {precision}  accuracy {r['accuracy']:.3f}  validation loss {r['validation_loss']:.4f}  "
              f"ECE {ece if ece is None else round(ece, 4)}  {len(suite.items) / r['seconds']:6.2f} items/s "
              f"({r['seconds']:.1f}s)", flush=True)
        del model
    f32, b16 = res["fp32"], res["bf16"]
    answers = sum(x["got"] != y["got"] for x, y in zip(f32["items"], b16["items"]))
    flips = sum(x["correct"] != y["correct"] for x, y in zip(f32["items"], b16["items"]))
    loss_rel = (b16["validation_loss"] - f32["validation_loss"]) / f32["validation_loss"]
    print(f"bf16 against fp32: validation loss {loss_rel * 100:+.2f}%, accuracy {b16['accuracy'] - f32['accuracy']:+.3f}, "
          f"answers differing {answers} of {len(suite.items)}, correct<->wrong flips {flips}; "
          f"speed {f32['seconds'] / b16['seconds']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
