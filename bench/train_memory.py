#!/usr/bin/env python3
"""Peak memory of a training job: our engine vs the plain Hugging Face Trainer, same model, same data,
same steps. Each side runs in its own fresh subprocess so the peaks are separate; peak RSS is the
kernel's high-water mark of that process (``VmHWM``) and, on CUDA, ``torch.cuda.max_memory_allocated``.

The data is ``bench/train_throughput.py``'s length-skewed chat set; the baseline is the stock Trainer
with ``DataCollatorForSeq2Seq`` padding (full-vocabulary logits at every position, its default).

    .venv/bin/python bench/train_memory.py [--steps 20] [--batch 8] [--max-length 256]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def child(side: str, model_dir: str, data: str, out: str, a: argparse.Namespace) -> dict:
    """Runs in the subprocess: train one side, return its peaks."""
    import time
    import torch
    from train_throughput import run_engine, run_hf
    from trainer.engine.memory import peak_cuda_bytes, peak_rss_bytes
    from foundation.device import resolve_device, resolve_precision
    a.device = resolve_device(a.device)
    a.precision = resolve_precision(a.precision, a.device)
    a.hf_precision = a.precision
    t0 = time.perf_counter()
    if side == "engine":
        run_engine(Path(model_dir), Path(data), Path(out), a)
    else:
        from transformers import AutoTokenizer
        from trainer.data.tokenization import tokenize_example
        tok = AutoTokenizer.from_pretrained(model_dir)
        feats = []
        for line in Path(data).read_text().splitlines():
            t = tokenize_example(tok, json.loads(line), max_length=a.max_length, loss_on="assistant")
            feats.append({"input_ids": t["input_ids"], "labels": t["labels"],
                          "attention_mask": [1] * len(t["input_ids"])})
        run_hf(Path(model_dir), feats, Path(out), a, grouped=False)
    return {"side": side, "peak_rss_bytes": peak_rss_bytes(), "peak_cuda_bytes": peak_cuda_bytes(),
            "seconds": round(time.perf_counter() - t0, 2), "device": a.device, "torch": torch.__version__}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    ap.add_argument("--child", nargs=4, metavar=("SIDE", "MODEL", "DATA", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(*a.child, a)))
        return 0
    from daemon_common import write_file
    from train_throughput import skewed_dataset
    from transformers import AutoTokenizer
    with tempfile.TemporaryDirectory(prefix="train-mem-") as tmp:
        tmp = Path(tmp)
        model_dir = Path(a.model) if a.model else None
        if model_dir is None:
            from tools.models.make_tiny_model import build
            model_dir = build(tmp / "tiny", seed=0)
        records = skewed_dataset(a.steps * a.batch, a.max_length, a.seed, AutoTokenizer.from_pretrained(model_dir))
        data = tmp / "skewed.jsonl"
        write_file(data, records)
        flags = ["--steps", str(a.steps), "--batch", str(a.batch), "--max-length", str(a.max_length),
                 "--lr", str(a.lr), "--seed", str(a.seed), "--device", a.device, "--precision", a.precision]
        res = {}
        for side in ("engine", "hf_default"):
            p = subprocess.run([sys.executable, __file__, *flags, "--child", side, str(model_dir), str(data),
                                str(tmp / side)], capture_output=True, text=True, check=False)
            if p.returncode != 0:
                sys.stderr.write(p.stderr[-3000:])
                return 1
            res[side] = json.loads(p.stdout.strip().splitlines()[-1])
            r = res[side]
            cuda = "" if r["peak_cuda_bytes"] is None else f" peak_cuda={r['peak_cuda_bytes'] / 2**20:.1f} MiB"
            print(f"{side:10s} peak_rss={r['peak_rss_bytes'] / 2**20:.1f} MiB{cuda} ({r['seconds']} s, "
                  f"{r['device']})", flush=True)
    e, h = res["engine"], res["hf_default"]
    summary = {"peak_rss_ratio_engine_hf": round(e["peak_rss_bytes"] / h["peak_rss_bytes"], 3)}
    if e["peak_cuda_bytes"] and h["peak_cuda_bytes"]:
        summary["peak_cuda_ratio_engine_hf"] = round(e["peak_cuda_bytes"] / h["peak_cuda_bytes"], 3)
    print(f"ratio peak RSS engine/hf_default = {summary['peak_rss_ratio_engine_hf']:.2f}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
