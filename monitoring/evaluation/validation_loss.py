"""The suite validation loss: the training loss measured on the validation suite.

Each suite record is transformed by the profile (as in training) and tokenized by the data layer's
``tokenize_example`` (labels on assistant tokens); the loss is the token-weighted mean cross
entropy over every labelled token of the suite, one forward pass per batch.
"""
from __future__ import annotations


def suite_validation_loss(model, tok, records: list[dict], *, max_length: int, loss_on: str = "assistant",
                          batch_size: int = 32) -> float | None:
    """Token-weighted mean cross entropy over the labelled (assistant) tokens of ``records``
    (already transformed by the profile); None when no record has a labelled token."""
    import torch
    import torch.nn.functional as F

    from trainer.data.tokenization import tokenize_example  # imports torch: only when scoring
    device = next(model.parameters()).device
    items = [tokenize_example(tok, r, max_length=max_length, loss_on=loss_on) for r in records]
    items = [it for it in items if any(x != -100 for x in it["labels"][1:])]
    if not items:
        return None
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    total, count = 0.0, 0
    items.sort(key=lambda it: len(it["input_ids"]))
    with torch.no_grad():
        for b in range(0, len(items), batch_size):
            chunk = items[b:b + batch_size]
            L = max(len(it["input_ids"]) for it in chunk)
            ids = torch.full((len(chunk), L), pad, dtype=torch.long)
            lab = torch.full((len(chunk), L), -100, dtype=torch.long)
            att = torch.zeros((len(chunk), L), dtype=torch.long)
            for r, it in enumerate(chunk):
                n = len(it["input_ids"])
                ids[r, :n] = torch.tensor(it["input_ids"])
                lab[r, :n] = torch.tensor(it["labels"])
                att[r, :n] = 1
            logits = model(input_ids=ids.to(device), attention_mask=att.to(device)).logits.float()
            lg = logits[:, :-1].reshape(-1, logits.shape[-1])
            tg = lab[:, 1:].reshape(-1).to(device)
            total += float(F.cross_entropy(lg, tg, ignore_index=-100, reduction="sum"))
            count += int((tg != -100).sum())
    return total / count if count else None
