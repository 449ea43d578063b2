"""Greedy, batched generation for the evaluator, with each token's unprocessed probability.

The answers come from the inference server's own engine (``trainer.generation``: continuous
batching, the same stop rules and per-row logits processors), so an answer is generated, and
ends, here as it would when served; finished rows leave the batch and the next suite items take
their places, instead of each fixed batch waiting for its longest answer.
"""
from __future__ import annotations

from typing import Any, Callable


def generate_answers(model, tok, prompts: list[str], *, max_new_tokens: int, stop_sequences: list[str],
                     make_processors: Callable[[], Any], batch_size: int = 32) -> list[dict]:
    """Greedy generations for rendered ``prompts``: ``[{"tokens": [...], "probs": [...], "text": str}]``
    (generated tokens up to and including EOS, their unprocessed probabilities, the decoded text);
    ``batch_size`` rows are decoded together."""
    from trainer.generation.batch_generate import generate_batch
    from trainer.generation.target import decode_target

    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
    return generate_batch(decode_target(model, tok), ids, max_new_tokens=max_new_tokens, stops=stop_sequences,
                          make_processors=make_processors, max_batch_size=batch_size)
