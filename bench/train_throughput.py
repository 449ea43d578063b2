#!/usr/bin/env python3
"""Training throughput: our engine vs a plain HF Trainer script, same model, data and steps.

(a) our engine: length-grouped batches, right padding to the batch's longest example;
(b) baseline: HF Trainer with its default (random) sampler and DataCollatorForSeq2Seq padding.

The dataset is length-skewed chat data whose token lengths spread uniformly from short to
max_length. Prints tokens/s of each (non-padding tokens per second of trainer.train()), their
ratio, the pad share of each, and final losses (train loss of the last logging window and the
loss on a held-out set). Target: ratio >= 1.5 with pad share <= 5% and held-out loss within 5%.

    .venv/bin/python bench/train_throughput.py [--steps 60] [--batch 8] [--max-length 512]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def skewed_dataset(n: int, max_length: int, seed: int, tokenizer) -> list[dict]:
    """Chat records whose token lengths (as trained) spread uniformly from 24 to max_length."""
    from trainer.data.tokenization import tokenize_example
    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()

    def make(i: int, k: int, pool: list[str]) -> dict:
        q = " ".join(pool[:k])
        return {"messages": [{"role": "user", "content": f"Echo {i}: {q}"},
                             {"role": "assistant", "content": q}]}

    out = []
    for i in range(n):
        target = rng.randint(24, max_length)
        pool = [rng.choice(words) for _ in range(max_length)]
        lo, hi = 1, max_length  # binary search the word count that gives `target` tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            length = len(tokenize_example(tokenizer, make(i, mid, pool), max_length=10 * max_length)["input_ids"])
            if length <= target:
                lo = mid
            else:
                hi = mid - 1
        out.append(make(i, lo, pool))
    return out


def held_out_loss(model, tokenizer, records, max_length: int) -> float:
    import torch
    from trainer.data.tokenization import tokenize_example
    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for r in records:
            t = tokenize_example(tokenizer, r, max_length=max_length, loss_on="assistant")
            ids = torch.tensor([t["input_ids"]])
            labels = torch.tensor([t["labels"]])
            k = int((labels != -100).sum()) - 1
            if k <= 0:
                continue
            loss = model(input_ids=ids, labels=labels).loss.item()
            tot += loss * k
            n += k
    return tot / max(n, 1)


def run_ours(model_dir, data_path, out_dir, steps, batch, max_length, lr, seed):
    from trainer.config.loader import config_to_dict, validate_dict
    from trainer.engine.engine import TrainerEngine
    from trainer.engine.job import TrainJob
    cfg = config_to_dict(validate_dict({
        "model": {"model_path": str(model_dir)},
        "training": {"max_steps": steps, "per_device_batch_size": batch, "learning_rate": lr, "warmup_steps": 5,
                     "save_steps": steps, "eval_steps": 0, "logging_steps": 5, "seed": seed},
        "data": {"max_length": max_length}}))
    job = TrainJob(dataset=str(data_path), output_dir=str(out_dir), model_path=str(model_dir), config=cfg,
                   eval_dir=str(Path(out_dir) / "no-validation"))
    res = TrainerEngine().run_job(job)
    return {"tokens_per_sec": res.tokens / res.metrics["train_seconds"], "pad_share": res.metrics["pad_share"],
            "train_loss": res.train_loss_last, "final_dir": res.final_model_dir,
            "train_seconds": res.metrics["train_seconds"]}


def run_baseline(model_dir, records, out_dir, steps, batch, max_length, lr, seed):
    """A plain HF Trainer script: default sampler, DataCollatorForSeq2Seq padding."""
    import torch
    from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer,
                              TrainerCallback, TrainingArguments)
    from trainer.data.tokenization import tokenize_example
    tok = AutoTokenizer.from_pretrained(model_dir)
    feats = []
    for r in records:
        t = tokenize_example(tok, r, max_length=max_length, loss_on="assistant")
        feats.append({"input_ids": t["input_ids"], "labels": t["labels"],
                      "attention_mask": [1] * len(t["input_ids"])})
    counts = {"real": 0, "padded": 0}
    inner = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)

    def collate(batch_feats):
        b = inner(batch_feats)
        counts["real"] += int(b["attention_mask"].sum())
        counts["padded"] += int(b["attention_mask"].numel())
        return b

    class Timer(TrainerCallback):
        def on_train_begin(self, *a, **k): self.t0 = time.perf_counter()
        def on_train_end(self, *a, **k): self.t1 = time.perf_counter()
    timer = Timer()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    args = TrainingArguments(output_dir=str(out_dir), per_device_train_batch_size=batch, max_steps=steps,
                             learning_rate=lr, warmup_steps=5, lr_scheduler_type="constant_with_warmup",
                             logging_steps=5, save_strategy="no", report_to="none", seed=seed, use_cpu=True,
                             disable_tqdm=True, remove_unused_columns=False)
    tr = Trainer(model=model, args=args, train_dataset=feats, data_collator=collate, callbacks=[timer])
    tr.train()
    losses = [h["loss"] for h in tr.state.log_history if "loss" in h]
    secs = timer.t1 - timer.t0
    return {"tokens_per_sec": counts["real"] / secs, "pad_share": 1 - counts["real"] / counts["padded"],
            "train_loss": losses[-1], "model": tr.model, "tokenizer": tok, "train_seconds": secs}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--examples", type=int, default=1200)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tests.conftest import write_jsonl
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = Path(a.model) if a.model else None
        if model_dir is None:
            from tools.models.make_tiny_model import build
            model_dir = build(tmp / "tiny", seed=0)
        tok = AutoTokenizer.from_pretrained(model_dir)
        records = skewed_dataset(a.examples, a.max_length, a.seed, tok)
        held = skewed_dataset(64, a.max_length, a.seed + 1, tok)
        data = write_jsonl(tmp / "skewed.jsonl", records)
        ours = run_ours(model_dir, data, tmp / "ours", a.steps, a.batch, a.max_length, a.lr, a.seed)
        print(f"engine done: tokens/s={ours['tokens_per_sec']:.0f} pad_share={ours['pad_share']:.3f}", flush=True)
        base = run_baseline(model_dir, records, tmp / "base", a.steps, a.batch, a.max_length, a.lr, a.seed)
        ours_held = held_out_loss(AutoModelForCausalLM.from_pretrained(ours["final_dir"]), tok, held, a.max_length)
        base_held = held_out_loss(base["model"], tok, held, a.max_length)
    ratio = ours["tokens_per_sec"] / base["tokens_per_sec"]
    print(f"engine    tokens/s={ours['tokens_per_sec']:.0f} pad_share={ours['pad_share']:.3f} "
          f"train_loss={ours['train_loss']:.4f} held_out_loss={ours_held:.4f} train_s={ours['train_seconds']:.1f}")
    print(f"baseline  tokens/s={base['tokens_per_sec']:.0f} pad_share={base['pad_share']:.3f} "
          f"train_loss={base['train_loss']:.4f} held_out_loss={base_held:.4f} train_s={base['train_seconds']:.1f}")
    print(f"ratio tokens/s engine/baseline = {ratio:.2f} (target >= 1.5); "
          f"held-out loss engine/baseline = {ours_held / base_held:.3f} (target within 5%)")
    print(json.dumps({"ratio": round(ratio, 3), "pad_share_engine": round(ours["pad_share"], 4),
                      "pad_share_baseline": round(base["pad_share"], 4),
                      "held_out_loss_ratio": round(ours_held / base_held, 4)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
