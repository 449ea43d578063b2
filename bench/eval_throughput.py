#!/usr/bin/env python3
"""Evaluator generation throughput: suite items/s through the shared batched engine
(``monitoring.evaluation.generate`` -> ``trainer.generation``) vs one-by-one ``model.generate`` on
the same items, same model, prompts, stop strings and logits processors. Also checks that both
give the same answers (greedy) and says how many differ.

    .venv/bin/python bench/eval_throughput.py [--items 64] [--max-new-tokens 64] [--batch-size 32]
        [--profile regime3] [--model FOLDER] [--threads 1]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--items", type=int, default=64, help="suite items (from the repo suite)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32, help="rows decoded together by the engine")
    ap.add_argument("--profile", default="regime3")
    ap.add_argument("--model", default=None, help="model folder (default: build the tiny model)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from monitoring.evaluation.generate import generate_answers
    from monitoring.evaluation.scoring import prompt_and_expected, render_for_profile
    from syllo.suite import REPO_SUITE_DIR, load_suite
    from tools.models.make_tiny_model import model_or_tiny
    from trainer.generation.reference import generate_one
    from trainer.profiles import get_profile
    from trainer.profiles.generation import profile_stop_strings

    torch.set_num_threads(a.threads)
    model_dir = model_or_tiny(a.model, "eval-bench-")
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(a.device).eval()
    profile = get_profile(a.profile)
    items = load_suite(REPO_SUITE_DIR, max_items=a.items).items
    prompts = []
    for item in items:
        msgs, _ = prompt_and_expected(render_for_profile(item, a.profile))
        gen = profile.prepare_messages(msgs, index=item.index, system_prompt=profile.render_system_prompt(None))
        prompts.append(tok.apply_chat_template(gen, tokenize=False, add_generation_prompt=True))
    stops = profile_stop_strings(profile)
    procs = lambda: profile.build_logits_processors(tok)  # noqa: E731
    print(f"eval_throughput: model={model_dir.name} items={len(prompts)} max_new_tokens={a.max_new_tokens} "
          f"batch_size={a.batch_size} profile={a.profile} threads={a.threads} device={a.device} "
          f"load={os.getloadavg()[0]:.1f}", flush=True)

    t = time.perf_counter()
    engine = generate_answers(model, tok, prompts, max_new_tokens=a.max_new_tokens, stop_sequences=stops,
                              make_processors=procs, batch_size=a.batch_size)
    t_engine = time.perf_counter() - t
    t = time.perf_counter()
    ones = [generate_one(model, tok, tok(p, add_special_tokens=False)["input_ids"], max_new_tokens=a.max_new_tokens,
                         stops=stops, make_processors=procs) for p in prompts]
    t_one = time.perf_counter() - t
    n = len(prompts)
    differ = sum(e["tokens"] != o["tokens"] for e, o in zip(engine, ones))
    toks = sum(len(e["tokens"]) for e in engine)
    print(f"  engine      {n / t_engine:7.2f} items/s  ({t_engine:.1f}s, {toks} tokens)")
    print(f"  one-by-one  {n / t_one:7.2f} items/s  ({t_one:.1f}s)")
    print(f"ratio engine/one-by-one: {t_one / t_engine:.2f}x; answers differing: {differ} of {n} "
          f"(load {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
