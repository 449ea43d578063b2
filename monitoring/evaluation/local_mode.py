"""Mode ``local``: load a checkpoint in this process and score it on the validation suite.

1. the checkpoint's model and tokenizer (``loading``); the profile is the one recorded in its
   ``checkpoint_info.json``, else config ``profile.name``;
2. each suite item rendered for the profile (``syllo.puzzles.rerender_record``, then
   ``profile.prepare_messages`` with the profile's system prompt and the chat template with a
   generation prompt);
3. greedy, batched generation under the profile's logits processors (``generate``);
4. exact-match scoring (``scoring``), each answer's confidence (``confidence``), and the suite
   validation loss (``validation_loss``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from foundation.atomic_io import read_json
from foundation.device import dtype_name, model_dtype, resolve_device
from foundation.paths import Paths
from monitoring.evaluation.checkpoints import CHECKPOINT_INFO
from monitoring.evaluation.confidence import answer_confidence
from monitoring.evaluation.generate import generate_answers
from monitoring.evaluation.loading import load_checkpoint, load_profile
from monitoring.evaluation.scoring import last_user_text, prompt_and_expected, render_for_profile, score
from monitoring.evaluation.validation_loss import suite_validation_loss
from trainer.profiles.generation import profile_stop_strings


def evaluate_model(model, tok, suite, profile, *, profile_name: str, system_prompt: str | None,
                   max_new_tokens: int, batch_size: int, max_length: int, loss_on: str = "assistant") -> dict:
    """Score a loaded model on ``suite`` (see the module docstring). Returns the result dict."""
    t0 = time.monotonic()
    prompts, expected, users, transformed = [], [], [], []
    for item in suite.items:
        rec = render_for_profile(item, profile_name)
        msgs, exp = prompt_and_expected(rec)
        gen_msgs = profile.prepare_messages(msgs, index=item.index, system_prompt=system_prompt)
        prompts.append(tok.apply_chat_template(gen_msgs, tokenize=False, add_generation_prompt=True))
        expected.append(exp)
        users.append(last_user_text(msgs))
        transformed.append(profile.transform_example(rec, item.index, system_prompt))
    gens = generate_answers(model, tok, prompts, max_new_tokens=max_new_tokens,
                            stop_sequences=profile_stop_strings(profile),
                            make_processors=lambda: profile.build_logits_processors(tok), batch_size=batch_size)
    texts = [g["text"] for g in gens]
    confs = [answer_confidence(tok, profile, g["tokens"], g["probs"], profile.extract_answer(g["text"]))
             for g in gens]
    res = score(suite.items, profile, texts, expected, users, confs)
    res["validation_loss"] = suite_validation_loss(model, tok, transformed, max_length=max_length, loss_on=loss_on,
                                                   batch_size=batch_size)
    res["duration_s"] = round(time.monotonic() - t0, 3)
    return res


def evaluation_device(cfg, device: str | None = None) -> str:
    """The concrete device a local evaluation runs on (``device``, else ``evaluation.device``)."""
    return resolve_device(device or cfg.evaluation.device, key="evaluation.device")


def evaluation_dtype(cfg, device: str | None = None) -> str:
    """The dtype a local evaluation loads checkpoints in (``inference.precision`` on the evaluation
    device), named as results record it (``details.dtype``): the one value both the record and the
    daemon's "evaluated in another dtype" check use."""
    return dtype_name(model_dtype(evaluation_device(cfg, device), cfg.inference.precision))


def evaluate_checkpoint(folder: str | os.PathLike, suite, cfg, *, device: str | None = None,
                        base_dir: str | os.PathLike | None = None) -> dict:
    """Load a checkpoint folder and score it on ``suite`` with the config's evaluation settings."""
    paths = Paths.from_base(base_dir)
    folder = Path(folder)
    info = read_json(folder / CHECKPOINT_INFO) or {}
    profile_name = info.get("profile") or cfg.profile.name
    options = cfg.profile.options if profile_name == cfg.profile.name else {}
    profile = load_profile(profile_name, options)
    system_prompt = profile.render_system_prompt(cfg.profile.system_prompt or None)
    dev = evaluation_device(cfg, device)
    model, tok = load_checkpoint(folder, dev, fallback_tokenizer=str(paths.resolve(cfg.model.model_path)),
                                 precision=cfg.inference.precision)
    try:
        res = evaluate_model(model, tok, suite, profile, profile_name=profile_name, system_prompt=system_prompt,
                             max_new_tokens=cfg.evaluation.max_new_tokens, batch_size=cfg.evaluation.batch_size,
                             max_length=cfg.data.max_length, loss_on=cfg.data.loss_on)
    finally:
        del model
        if dev.startswith("cuda"):
            import torch
            torch.cuda.empty_cache()
    res.update({"profile": profile_name, "device": dev, "dtype": evaluation_dtype(cfg, dev), "mode": "local"})
    return res
