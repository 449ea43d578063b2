#!/usr/bin/env python3
"""Training throughput: our engine vs two stock Hugging Face Trainer set-ups, same model, same data,
same steps, same device and (by default) precision, measured in this one invocation.

  engine      our engine (``trainer.engine``): length-grouped batches, right padding per batch
  hf_default  plain ``transformers.Trainer``: default random sampler, DataCollatorForSeq2Seq padding
  hf_grouped  the same Trainer with Hugging Face's own best stock setting,
              ``TrainingArguments(train_sampling_strategy="group_by_length")`` (LengthGroupedSampler)

The dataset is length-skewed chat data whose token lengths spread uniformly from short to
``--max-length``; by default it holds exactly ``steps x batch`` examples, so every side trains on the
same real tokens once and only the batching (hence padding) differs. Device and precision are
resolved once (``foundation.device``: ``--device``/``--precision``, default auto) and given to all
three sides (``--hf-precision fp32`` instead gives the baselines the Trainer's own CPU default, to
measure what the engine's "auto" buys a user over a stock script). The sides run interleaved (engine, hf_default, hf_grouped, engine, ...) ``--repeats``
times so machine noise hits all of them alike.

Throughput = real (non-padding) tokens / wall seconds of ``trainer.train()``, tokens counted the same
way on every side (attention-mask sum in ``training_step``). Every side writes one checkpoint, at
its last step, inside ``train()`` (the engine always checkpoints the end of a file; the baselines
get ``save_steps=steps``), so all three do the same work. Hugging Face's
sampler groups within mega-batches of ``min(50, examples // (4 x batch))`` batches, so it groups
less on small files than on large ones (try ``--examples``). Prints per side the median and spread (min-max) of tokens/s, the pad share
and the held-out loss (fp32, 64 held-out examples; so "at equal loss" can be checked), then the
ratios engine/hf_default and engine/hf_grouped (of the medians). It also prints tokens per CPU-second
of the training process (``time.process_time`` around ``train()``, every side alike): on a shared
machine wall time mostly measures the neighbours, CPU time much less so. Each side's minor page faults
(``getrusage``) are printed too: ``--retain-freed-memory off`` shows the engine with glibc's malloc
defaults. Every measurement (one side, one repeat) runs in a fresh Python process, as a user's
training script would: no side inherits another's allocator settings, threads or leftovers (in one
shared process the Trainer baselines slowed down repeat after repeat). ``--profile N`` prints the top N operators (torch.profiler, self CPU time)
of the engine's first repeat: where a step's time goes.

    .venv/bin/python bench/train_throughput.py [--steps 20] [--batch 8] [--max-length 256] [--repeats 3]
                                               [--retain-freed-memory on|off] [--profile 25]
                                               [--cpu-attention auto|math_bf16|flash_fp32|flash_bf16]
                                               [--shape-buckets auto|on|off]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from daemon_common import write_file  # noqa: E402  (also puts the repo on sys.path)

SIDES = ("engine", "hf_default", "hf_grouped")


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


def held_out_loss(model, tokenizer, records, max_length: int, device: str) -> float:
    """Token-weighted loss on the assistant tokens of ``records``, in fp32 on ``device``."""
    import torch
    from trainer.data.tokenization import tokenize_example
    model = model.float().to(device).eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for r in records:
            t = tokenize_example(tokenizer, r, max_length=max_length, loss_on="assistant")
            ids = torch.tensor([t["input_ids"]], device=device)
            labels = torch.tensor([t["labels"]], device=device)
            k = int((labels != -100).sum()) - 1
            if k <= 0:
                continue
            tot += model(input_ids=ids, labels=labels).loss.item() * k
            n += k
    return tot / max(n, 1)


def run_engine(model_dir: Path, data_path: Path, out_dir: Path, a: argparse.Namespace) -> dict:
    from trainer.config.loader import config_to_dict, validate_dict
    from trainer.engine.engine import TrainerEngine
    from trainer.engine.job import TrainJob
    cfg = config_to_dict(validate_dict({
        "model": {"model_path": str(model_dir)},
        # one checkpoint, at the last step (inside train(): the cost of a file's end-of-file save)
        "training": {"max_steps": a.steps, "per_device_batch_size": a.batch, "learning_rate": a.lr,
                     "warmup_steps": 5, "lr_scheduler": "constant_with_warmup", "save_steps": a.steps,
                     "eval_steps": 0, "logging_steps": 5, "seed": a.seed, "device": a.device,
                     "precision": a.precision, "retain_freed_memory": a.retain_freed_memory == "on",
                     "cpu_attention": a.cpu_attention, "shape_buckets": a.shape_buckets},
        "data": {"max_length": a.max_length}}))
    job = TrainJob(dataset=str(data_path), output_dir=str(out_dir), model_path=str(model_dir), config=cfg,
                   eval_dir=str(out_dir / "no-validation"))
    res = TrainerEngine().run_job(job)
    secs = res.metrics["train_seconds"]
    if res.metrics.get("device") != a.device or res.metrics.get("precision") != a.precision:
        raise RuntimeError(f"engine ran on {res.metrics.get('device')}/{res.metrics.get('precision')}, "
                           f"asked for {a.device}/{a.precision}")
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(res.final_model_dir)
    return {"tokens_per_sec": res.tokens / secs, "pad_share": res.metrics["pad_share"], "model": model,
            "train_seconds": secs, "steps": res.steps,
            "tokens_per_cpu_sec": res.tokens / res.metrics["train_cpu_seconds"]}


def run_hf(model_dir: Path, feats: list[dict], out_dir: Path, a: argparse.Namespace, grouped: bool) -> dict:
    """A plain HF Trainer script; ``grouped`` switches on ``train_sampling_strategy="group_by_length"``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments
    from foundation.device import load_dtype
    counts = {"real": 0, "padded": 0}

    class CountingTrainer(Trainer):
        """Counts tokens exactly as the engine does (mask of each trained batch); nothing else changes."""

        def training_step(self, model, inputs, num_items_in_batch=None):
            mask = inputs["attention_mask"]
            counts["real"] += int(mask.sum())
            counts["padded"] += int(mask.numel())
            return super().training_step(model, inputs, num_items_in_batch)

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=load_dtype(a.hf_precision, training=True,
                                                                           device=a.device))
    args = TrainingArguments(output_dir=str(out_dir), per_device_train_batch_size=a.batch, max_steps=a.steps,
                             learning_rate=a.lr, warmup_steps=5, lr_scheduler_type="constant_with_warmup",
                             logging_steps=5, save_strategy="steps", save_steps=a.steps, report_to="none",
                             seed=a.seed,
                             use_cpu=a.device == "cpu", bf16=a.hf_precision == "bf16", fp16=a.hf_precision == "fp16",
                             disable_tqdm=True, remove_unused_columns=False,
                             train_sampling_strategy="group_by_length" if grouped else "random")
    tr = CountingTrainer(model=model, args=args, train_dataset=feats,
                         data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    t0, c0 = time.perf_counter(), time.process_time()
    tr.train()
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"tokens_per_sec": counts["real"] / secs, "pad_share": 1 - counts["real"] / counts["padded"],
            "model": tr.model, "train_seconds": secs, "steps": tr.state.global_step,
            "tokens_per_cpu_sec": counts["real"] / cpu}


def spread(xs: list[float], fmt: str = ".0f") -> str:
    return f"median={statistics.median(xs):{fmt}} [{min(xs):{fmt}}-{max(xs):{fmt}}]"


def measure(a: argparse.Namespace, side: str, rep: int, work: Path) -> dict:
    """One side's one repeat, in this (fresh) process: trains, then scores the held-out set."""
    import torch
    from transformers import AutoTokenizer
    model_dir = Path(a.model) if a.model else work / "tiny"
    tok = AutoTokenizer.from_pretrained(model_dir)
    held = json.loads((work / "held_out.json").read_text())
    out = work / f"{side}-{rep}"
    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    profiling = side == "engine" and rep == 0 and a.profile > 0
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) if profiling \
            else contextlib.nullcontext() as prof:
        if side == "engine":
            r = run_engine(model_dir, work / "skewed.jsonl", out, a)
        else:
            feats = json.loads((work / "feats.json").read_text())
            r = run_hf(model_dir, feats, out, a, grouped=side == "hf_grouped")
    r["minor_faults"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0
    if profiling:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=a.profile), flush=True)
    if r["steps"] != a.steps:
        raise RuntimeError(f"{side} ran {r['steps']} steps, expected {a.steps}")
    r["held_out_loss"] = held_out_loss(r.pop("model"), tok, held, a.max_length, a.device)
    return r


def prepare(a: argparse.Namespace, work: Path) -> int:
    """The model (unless given), the training data (as a JSONL file for the engine and as tokenized
    features for the Trainer) and the held-out set, written once for every measurement."""
    from transformers import AutoTokenizer
    from trainer.data.tokenization import tokenize_example
    model_dir = Path(a.model) if a.model else None
    if model_dir is None:
        from tools.models.make_tiny_model import build
        model_dir = build(work / "tiny", seed=0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    n_examples = a.examples or a.steps * a.batch
    records = skewed_dataset(n_examples, a.max_length, a.seed, tok)
    write_file(work / "skewed.jsonl", records)
    (work / "held_out.json").write_text(json.dumps(skewed_dataset(64, a.max_length, a.seed + 1, tok)))
    feats = []
    for r in records:
        t = tokenize_example(tok, r, max_length=a.max_length, loss_on="assistant")
        feats.append({"input_ids": t["input_ids"], "labels": t["labels"],
                      "attention_mask": [1] * len(t["input_ids"])})
    (work / "feats.json").write_text(json.dumps(feats))
    return n_examples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--examples", type=int, default=0, help="training examples (default: steps x batch)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (resolved once, used by all sides)")
    ap.add_argument("--precision", default="auto", help="auto | fp32 | bf16 | fp16 (resolved once, as training "
                    "resolves it: auto is bf16 mixed precision on a CPU with native bf16)")
    ap.add_argument("--hf-precision", default="same",
                    help="the Trainer baselines' precision: same (as the engine, default) | fp32 | bf16 | fp16")
    ap.add_argument("--retain-freed-memory", default="on", choices=["on", "off"],
                    help="the engine's training.retain_freed_memory")
    ap.add_argument("--cpu-attention", default="auto", choices=["auto", "math_bf16", "flash_fp32", "flash_bf16"],
                    help="the engine's training.cpu_attention (bf16 on a CPU)")
    ap.add_argument("--shape-buckets", default="auto", choices=["auto", "on", "off"],
                    help="the engine's training.shape_buckets")
    ap.add_argument("--profile", type=int, default=0, help="print the engine's top N operators (first repeat)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    ap.add_argument("--one", nargs=3, metavar=("SIDE", "REPEAT", "WORKDIR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    import torch
    from foundation.device import resolve_device, resolve_precision
    a.device = resolve_device(a.device)
    a.precision = resolve_precision(a.precision, a.device)
    a.hf_precision = a.precision if a.hf_precision == "same" else a.hf_precision
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.one:  # a child: one measurement, its result as a JSON file
        side, rep, work = a.one[0], int(a.one[1]), Path(a.one[2])
        r = measure(a, side, rep, work)
        (work / f"result-{side}-{rep}.json").write_text(json.dumps(r))
        return 0
    results: dict[str, list[dict]] = {s: [] for s in SIDES}
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        work = Path(tmp)
        n_examples = prepare(a, work)
        print(f"train_throughput: device={a.device} precision={a.precision} hf_precision={a.hf_precision} steps={a.steps} batch={a.batch} "
              f"max_length={a.max_length} examples={n_examples} repeats={a.repeats} "
              f"torch_threads={torch.get_num_threads()} (each measurement in a fresh process)", flush=True)
        for rep in range(a.repeats):
            for side in SIDES:
                subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", side, str(rep), str(work)],
                               check=True)
                r = json.loads((work / f"result-{side}-{rep}.json").read_text())
                results[side].append(r)
                print(f"  repeat {rep} {side:10s} tokens/s={r['tokens_per_sec']:.0f} pad_share={r['pad_share']:.3f} "
                      f"held_out_loss={r['held_out_loss']:.4f} train_s={r['train_seconds']:.2f} "
                      f"tokens/cpu_s={r['tokens_per_cpu_sec']:.0f} minor_faults={r['minor_faults']}", flush=True)
    med = {s: statistics.median(r["tokens_per_sec"] for r in results[s]) for s in SIDES}
    cpu_med = {s: statistics.median(r["tokens_per_cpu_sec"] for r in results[s]) for s in SIDES}
    loss = {s: statistics.median(r["held_out_loss"] for r in results[s]) for s in SIDES}
    for s in SIDES:
        rs = results[s]
        print(f"{s:10s} tokens/s {spread([r['tokens_per_sec'] for r in rs])} "
              f"pad_share={statistics.median(r['pad_share'] for r in rs):.3f} "
              f"held_out_loss {spread([r['held_out_loss'] for r in rs], '.4f')}")
    summary = {"device": a.device, "precision": a.precision, "hf_precision": a.hf_precision}
    for base in ("hf_default", "hf_grouped"):
        ratio, lratio = med["engine"] / med[base], loss["engine"] / loss[base]
        cratio = cpu_med["engine"] / cpu_med[base]
        print(f"ratio tokens/s engine/{base} = {ratio:.2f}; per CPU-second {cratio:.2f}; "
              f"held-out loss engine/{base} = {lratio:.3f}")
        summary[f"ratio_engine_{base}"] = round(ratio, 3)
        summary[f"cpu_ratio_engine_{base}"] = round(cratio, 3)
        summary[f"held_out_loss_ratio_engine_{base}"] = round(lratio, 4)
    summary.update({f"pad_share_{s}": round(statistics.median(r["pad_share"] for r in results[s]), 4) for s in SIDES})
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
