"""Greedy, batched generation for the evaluator, with each token's unprocessed probability.

A row ends at one of the model's EOS ids or once one of the profile's stop strings appears in its
generated text; both are ``trainer.profiles.generation``'s rule, the one the inference server
uses, so an answer ends here where it would end when served.
"""
from __future__ import annotations

from typing import Any, Callable

from trainer.profiles.generation import eos_token_ids, find_stop, stop_strings

STOP_WINDOW_TOKENS = 24
"""Only the newest generated tokens are decoded at each step to look for a stop string (the cost
then does not grow with the reply); a stop string spelled in more tokens than this is not seen."""


def stopping_criteria(tok, stops: list[str], prompt_len: int, window: int = STOP_WINDOW_TOKENS):
    """An HF ``StoppingCriteriaList`` that ends each row once a stop string appears in the text it
    generated (the prompt, i.e. the first ``prompt_len`` tokens, is ignored)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    stops = stop_strings(stops)

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            gen = input_ids[:, prompt_len:][:, -window:]
            texts = tok.batch_decode(gen, skip_special_tokens=True)
            return torch.tensor([find_stop(t, stops) >= 0 for t in texts], dtype=torch.bool,
                                device=input_ids.device)

    return StoppingCriteriaList([StopOnStrings()])


def generate_answers(model, tok, prompts: list[str], *, max_new_tokens: int, stop_sequences: list[str],
                     make_processors: Callable[[], Any], batch_size: int = 32) -> list[dict]:
    """Greedy generations for ``prompts``: ``[{"tokens": [...], "probs": [...], "text": str}]``
    (generated tokens up to EOS, their unprocessed probabilities, the decoded text)."""
    import torch
    from transformers import GenerationConfig
    device = next(model.parameters()).device
    eos = eos_token_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (eos[0] if eos else 0)
    gcfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None,
                            pad_token_id=pad, output_logits=True, return_dict_in_generate=True)
    old_side = tok.padding_side
    tok.padding_side = "left"
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[dict | None] = [None] * len(prompts)
    try:
        for b in range(0, len(order), batch_size):
            idx = order[b:b + batch_size]
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(device) for k, v in enc.items()}
            plen = enc["input_ids"].shape[1]
            kw: dict[str, Any] = {}
            procs = make_processors()
            if procs is not None and len(procs):
                kw["logits_processor"] = procs
            if stop_sequences:
                kw["stopping_criteria"] = stopping_criteria(tok, stop_sequences, plen)
            with torch.no_grad():
                res = model.generate(**enc, generation_config=gcfg, **kw)
            seqs = res.sequences[:, plen:]
            if res.logits:
                logits = torch.stack(list(res.logits), dim=1).float()
                probs = torch.softmax(logits, dim=-1).gather(-1, seqs[:, : logits.shape[1], None]).squeeze(-1)
            else:
                probs = torch.zeros(seqs.shape, dtype=torch.float32)
            for row, i in enumerate(idx):
                out[i] = _row_result(tok, seqs[row].tolist(), probs[row].tolist(), eos, pad)
    finally:
        tok.padding_side = old_side
    return out  # type: ignore[return-value]


def _row_result(tok, toks: list[int], probs: list[float], eos: list[int], pad: int) -> dict:
    """One row's tokens up to and including its EOS (the EOS decision belongs to the answer), or
    up to its first padding token (rows that ended before the batch did)."""
    n = len(toks)
    for j, t in enumerate(toks):
        if t in eos or t == pad:
            n = j + 1 if t in eos else j
            break
    return {"tokens": toks[:n], "probs": probs[:n], "text": tok.decode(toks[:n], skip_special_tokens=True)}
