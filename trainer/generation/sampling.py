"""Next-token choice for a batch of rows, each with its own settings: profile logits processors,
``logit_bias``, presence/frequency penalties, then greedy or temperature + top-p sampling (a
per-request ``seed`` gets its own generator, so its output does not depend on the other rows).

Rows that ask for it (``want_probs``, the evaluator's confidence) also get the chosen token's
probability under the model's own logits, before any processor or penalty changed them."""
from __future__ import annotations

from typing import Sequence

from trainer.generation.request import GenRequest


def sample_next_tokens(rows: Sequence[GenRequest], logits) -> tuple[list[int], list[int]]:
    """``(token per row, indices of rows whose logits were not finite)``. ``logits``: [B, V] for the
    last position. Non-finite rows still get a token (from zeroed logits); the caller fails them."""
    import torch

    logits = logits.float()
    finite = torch.isfinite(logits).all(-1)
    bad: list[int] = []
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten().tolist()
        logits = torch.nan_to_num(logits, nan=0.0, posinf=0.0, neginf=0.0)
    raw_rows = [i for i, r in enumerate(rows) if r.want_probs]
    raw = logits[raw_rows].softmax(-1) if raw_rows else None  # a copy: processors below edit ``logits``
    for i, r in enumerate(rows):
        if r.processors:
            ids = torch.tensor([r.prompt_ids + r.generated], dtype=torch.long, device=logits.device)
            row = logits[i:i + 1]
            for proc in r.processors:
                row = proc(ids, row)
            logits[i] = row[0]
        if r.logit_bias:
            keys = torch.tensor(list(r.logit_bias), dtype=torch.long, device=logits.device)
            logits[i, keys] += torch.tensor(list(r.logit_bias.values()), device=logits.device)
        if (r.presence_penalty or r.frequency_penalty) and r.generated:
            counts = torch.bincount(torch.tensor(r.generated, device=logits.device),
                                    minlength=logits.shape[-1])[: logits.shape[-1]].float()
            logits[i] -= r.frequency_penalty * counts + r.presence_penalty * (counts > 0).float()
    out = logits.argmax(-1)
    sampled = [i for i, r in enumerate(rows) if not r.greedy]
    if sampled:
        idx = torch.tensor(sampled, dtype=torch.long, device=logits.device)
        temps = torch.tensor([rows[i].temperature for i in sampled], device=logits.device)
        sub = logits.index_select(0, idx) / temps[:, None]
        top_ps = torch.tensor([rows[i].top_p for i in sampled], device=logits.device)
        if bool((top_ps < 1.0).any()):
            srt, order = sub.sort(-1, descending=True)
            probs = srt.softmax(-1)
            cum = probs.cumsum(-1)
            drop = (cum - probs) > top_ps[:, None]
            srt = srt.masked_fill(drop, float("-inf"))
            sub = torch.full_like(sub, float("-inf")).scatter(-1, order, srt)
        probs = sub.softmax(-1)
        shared = []
        for j, i in enumerate(sampled):
            r = rows[i]
            if r.seed is not None:
                if r.generator is None:
                    r.generator = torch.Generator(device=logits.device)
                    r.generator.manual_seed(int(r.seed) % (2**63))
                out[i] = torch.multinomial(probs[j], 1, generator=r.generator)[0]
            else:
                shared.append(j)
        if shared:
            sel = torch.tensor(shared, dtype=torch.long, device=logits.device)
            picks = torch.multinomial(probs.index_select(0, sel), 1).flatten()
            out[idx.index_select(0, sel)] = picks
    toks = out.tolist()
    if raw is not None:
        picked = raw.gather(-1, out[raw_rows][:, None]).flatten().tolist()
        for i, p in zip(raw_rows, picked):
            rows[i].next_prob = p
    return toks, bad
