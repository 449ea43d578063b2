#!/usr/bin/env python3
"""The serving engine's CPU fast paths, measured on the real model in one process: a batched
prefill and a decode step with the model's own forward ("stock"), with linear weights prepacked
for oneDNN ("packed", ``trainer.generation.packed_linear``) and with the Llama-family prefill and
decode forward on top ("packed+fast", ``trainer.generation.fast_forward``), as the server runs it.

Each round runs every variant once, in turn, on the same prompts (``--rows`` rows of 26-131
tokens, as ``bench/serve_throughput.py``'s prompts are): one prefill (``Decoder.prefill``, length
groups as in serving), 2 untimed decode steps, then ``--steps`` timed ones. Time is the thread's CPU
time (``time.thread_time``), so other tenants of a shared machine count less. Prints the median per
variant and the ratios against stock, and checks that every variant generated the same tokens
(in bf16 a variant's rounding may differ: it then says how many rows differ, and fails only in fp32).
The weights load in ``--precision`` (default auto: ``inference.precision``'s rule, as served).

    .venv/bin/python bench/decode_step.py [--rows 16] [--steps 32] [--rounds 5] [--threads 1] [--model DIR]
        [--precision auto|fp32|bf16]
"""
from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("stock", "packed", "packed+fast")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    a = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from foundation.device import dtype_name, model_dtype
    from tools.models.make_tiny_model import model_or_tiny
    from trainer.generation import fast_forward
    from trainer.generation.batch_generate import _Collect
    from trainer.generation.decoder import Decoder
    from trainer.generation.kv_batch import RowBatch
    from trainer.generation.packed_linear import pack_linears, unpack_linears
    from trainer.generation.request import GenRequest
    from trainer.generation.target import decode_target

    torch.set_num_threads(a.threads)
    model_dir = model_or_tiny(a.model, "decode-bench-")
    dtype = model_dtype("cpu", a.precision)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    target = decode_target(model, AutoTokenizer.from_pretrained(model_dir))
    vocab = model.config.vocab_size
    rng = random.Random(0)
    prompts = [[rng.randrange(5, vocab) for _ in range(rng.randint(26, 131))] for _ in range(a.rows)]

    def use(variant: str) -> None:
        unpack_linears(model)
        model.__dict__.pop(fast_forward.ATTR, None)
        if variant != "stock":
            pack_linears(model)
        if variant == "packed+fast":
            if fast_forward.fast_forward_for(model) is None:
                raise SystemExit(f"{model_dir}: the fast forward does not apply to this model")
        else:
            fast_forward.disable(model)

    def run() -> tuple[float, float, list]:
        dec = Decoder()
        reqs = [GenRequest(target, p, 10**6, _Collect(), temperature=0.0) for p in prompts]
        batch = RowBatch(target)
        t = time.thread_time()
        dec.prefill(batch, reqs)
        prefill = time.thread_time() - t
        for _ in range(2):
            dec.decode_step(batch)
        t = time.thread_time()
        for _ in range(a.steps):
            dec.decode_step(batch)
        return prefill, (time.thread_time() - t) / a.steps, [r.generated for r in reqs]

    times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
    tokens: dict[str, list] = {}
    with torch.inference_mode():
        for r in range(a.rounds):
            for v in VARIANTS:
                use(v)
                p, d, toks = run()
                times[v].append((p, d))
                tokens[v] = toks
    print(f"decode_step: rows={a.rows} prompt tokens={sum(map(len, prompts))} steps={a.steps} rounds={a.rounds} "
          f"threads={a.threads} model={Path(model_dir).name} dtype={dtype_name(dtype)}")
    med = {v: (statistics.median(x[0] for x in ts), statistics.median(x[1] for x in ts)) for v, ts in times.items()}
    for v in VARIANTS:
        p, d = med[v]
        print(f"  {v:12s} prefill {p * 1e3:7.1f} ms   decode step {d * 1e3:6.2f} ms   (median of {a.rounds})")
    for v in VARIANTS[1:]:
        print(f"ratio {v}/stock: prefill speed {med['stock'][0] / med[v][0]:.2f}x, "
              f"decode step speed {med['stock'][1] / med[v][1]:.2f}x")
    same = all(tokens[v] == tokens["stock"] for v in VARIANTS)
    differ = {v: sum(x != y for x, y in zip(tokens[v], tokens["stock"])) for v in VARIANTS[1:]}
    print(f"same generated tokens in every variant: {same}" +
          ("" if same else f" (rows differing from stock: {differ})"))
    return 0 if same or dtype != torch.float32 else 1


if __name__ == "__main__":
    sys.exit(main())
