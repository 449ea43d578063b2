"""One prompt at a time through transformers' ``model.generate``: the reference the batched engine
is checked against (tests) and measured against (``bench/eval_throughput.py``), with the same end
rules (EOS ids, stop strings in the generated text; ``trainer.profiles.generation``)."""
from __future__ import annotations

from typing import Any, Callable, Sequence

from trainer.profiles.generation import eos_token_ids, find_stop, stop_strings

STOP_WINDOW_TOKENS = 24
"""Only the newest generated tokens are decoded at each step to look for a stop string (the cost
then does not grow with the reply); a stop string spelled in more tokens than this is not seen."""


def stopping_criteria(tok, stops: Sequence[str], prompt_len: int, window: int = STOP_WINDOW_TOKENS):
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


def generate_one(model: Any, tok: Any, prompt_ids: list[int], *, max_new_tokens: int, stops: Sequence[str] = (),
                 make_processors: Callable[[], Any] | None = None) -> dict:
    """Greedy ``model.generate`` on one prompt: ``{"tokens", "probs", "text"}`` as
    ``batch_generate.generate_batch`` returns them (tokens up to and including the EOS)."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    device = next(model.parameters()).device
    eos = eos_token_ids(model, tok)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (min(eos) if eos else 0)
    gcfg = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None,
                            pad_token_id=pad, output_logits=True, return_dict_in_generate=True)
    kw: dict[str, Any] = {}
    procs = list(make_processors() or []) if make_processors is not None else []
    if procs:
        kw["logits_processor"] = LogitsProcessorList(procs)
    if stop_strings(stops):
        kw["stopping_criteria"] = stopping_criteria(tok, stops, len(prompt_ids))
    ids = torch.tensor([prompt_ids], dtype=torch.long, device=device)
    with torch.inference_mode():
        res = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gcfg, **kw)
    toks = res.sequences[0, len(prompt_ids):].tolist()
    logits = torch.stack(list(res.logits), dim=1)[0].float() if res.logits else torch.zeros(0, 1)
    probs = logits.softmax(-1).gather(-1, torch.tensor(toks, dtype=torch.long)[:, None].to(logits.device))
    probs = probs.flatten().tolist()
    for j, t in enumerate(toks):
        if t in eos:
            toks, probs = toks[:j + 1], probs[:j + 1]
            break
    return {"tokens": toks, "probs": probs, "text": tok.decode(toks, skip_special_tokens=True)}
