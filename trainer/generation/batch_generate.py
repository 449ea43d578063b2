"""Synchronous batched generation over a list of prompts (the evaluator's), on the server's engine.

``generate_batch`` runs the same continuous-batching steps as the inference server
(``decoder.Decoder``): rows that finish leave the batch and waiting prompts take their places, so
a short answer never waits for the longest one in its batch, as it does with ``model.generate``
on fixed batches. Greedy unless told otherwise; each row may carry its own logits processors.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable, Sequence

from trainer.generation.decoder import Decoder
from trainer.generation.kv_batch import RowBatch
from trainer.generation.request import GenRequest
from trainer.generation.target import DecodeTarget


class _Collect:
    """A sink that remembers how its row ended."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.error: Exception | None = None

    def delta(self, text: str) -> None:
        pass

    def finish(self, reason: str, usage: dict) -> None:
        self.reason = reason

    def fail(self, error: Exception) -> None:
        self.error = error


def generate_batch(target: DecodeTarget, prompts: Sequence[list[int]], *, max_new_tokens: int,
                   stops: Sequence[str] = (), make_processors: Callable[[], Any] | None = None,
                   max_batch_size: int = 32, refill_fraction: float = 0.25) -> list[dict]:
    """Greedy generations for tokenized ``prompts``, in order: ``{"tokens", "probs", "text",
    "finish_reason", "error"}`` per prompt. ``tokens``: generated ids up to and including the EOS
    or the token that completed a stop string; ``probs``: each one's probability under the
    unprocessed logits; ``text``: ``tokens`` decoded (special tokens skipped, not cut at the stop);
    ``error``: the failure kind (e.g. ``non_finite_logits``) or None.

    ``make_processors()`` gives a fresh processor list per prompt (processors may keep state).
    Waiting prompts join the running batch once ``refill_fraction`` of its rows are free (or it is
    empty): each join costs a prefill forward, so joining a few rows at a time pays less per row."""
    import torch

    decoder = Decoder()
    reqs = []
    for ids in prompts:
        procs = list(make_processors() or []) if make_processors is not None else []
        reqs.append(GenRequest(target, ids, max_new_tokens, _Collect(), temperature=0.0, stop=list(stops),
                               processors=procs, want_probs=True))
    # shortest first: prompts admitted together have similar lengths, so prefill pads little
    waiting = deque(sorted(reqs, key=lambda r: len(r.prompt_ids)))
    batch = RowBatch(target)
    threshold = max(1, int(max_batch_size * refill_fraction))
    with torch.inference_mode():
        while waiting or batch.rows:
            free = max_batch_size - len(batch.rows)
            if waiting and (not batch.rows or (target.supports_merge and free >= min(threshold, len(waiting)))):
                take = [waiting.popleft() for _ in range(min(free, len(waiting)))]
                decoder.prefill(batch, take)
            if batch.rows:
                decoder.decode_step(batch)
    return [_result(target, r) for r in reqs]


def _result(target: DecodeTarget, r: GenRequest) -> dict:
    toks = r.generated + ([r.eos_token] if r.eos_token is not None else [])
    err = r.sink.error
    return {"tokens": toks, "probs": r.probs[:len(toks)],
            "text": target.tokenizer.decode(toks, skip_special_tokens=True),
            "finish_reason": r.sink.reason, "error": getattr(err, "kind", None) if err is not None else None}
