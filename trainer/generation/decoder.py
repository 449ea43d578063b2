"""The model steps of continuous batching: prefill new rows into a running batch, decode one token
for every row, hand each row's text to its sink, drop finished rows.

One running batch per model keeps a shared KV cache (left-padded rows, explicit position ids). New
rows are prefilled together in length groups (``prefill_groups``), then their cache rows are
padded and concatenated onto the running batch (``kv_batch.merge``): they join the decode at the
next step instead of waiting for the batch to finish. Token choice is ``sampling``, text and stop
strings ``text_stream``.

Who drives the steps: the server's ``inference.batcher`` (a thread fed by HTTP requests) and
``batch_generate.generate_batch`` (the evaluator's synchronous loop over a list of prompts). Both
call ``prefill`` and ``decode_step`` here, so a reply is generated the same way in both.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from trainer.generation.fast_forward import fast_forward_for
from trainer.generation.kv_batch import RowBatch, compact, merge, new_cache
from trainer.generation.request import GenerationError, GenRequest
from trainer.generation.sampling import sample_next_tokens

log = logging.getLogger("trainer.generation")

PREFILL_OVERHEAD_TOKENS = 32
"""A forward call's fixed cost in prompt tokens (weights streamed once, per-layer Python): on CPU,
the tiny model's empty forward costs about what 30 prompt tokens cost. ``prefill_groups`` trades
it against padding."""


def prefill_groups(lengths: list[int], overhead_tokens: int = PREFILL_OVERHEAD_TOKENS) -> list[list[int]]:
    """Split prompts into groups prefilled together so that padding is cheap.

    A prefill forward costs about (rows x longest prompt) token-forwards plus a fixed per-call
    overhead (``overhead_tokens``). Sorting by length and cutting the sorted list optimally (a small
    dynamic programme) keeps very different lengths out of the same padded tensor. Returns indices
    into ``lengths``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0.0] + [float("inf")] * n   # best[k]: cost of the first k sorted prompts
    cut = [0] * (n + 1)
    for k in range(1, n + 1):
        for j in range(k):  # last group = sorted[j:k], its longest is sorted[k-1]
            c = best[j] + overhead_tokens + (k - j) * lengths[order[k - 1]]
            if c < best[k]:
                best[k], cut[k] = c, j
    groups = []
    k = n
    while k > 0:
        groups.append(order[cut[k]:k])
        k = cut[k]
    return groups[::-1]


class Decoder:
    """Prefill and decode steps on ``RowBatch``es. Call from one thread, inside ``torch.inference_mode``.

    ``make_error(kind, message)`` builds what a failed row's sink receives (the server turns it
    into its API error); ``metrics`` (optional) gets the ``observe_*``/``count_error`` calls."""

    def __init__(self, *, metrics: Any = None, clock: Callable[[], float] = time.monotonic,
                 make_error: Callable[[str, str], Exception] = GenerationError):
        self.metrics = metrics
        self.clock = clock
        self.make_error = make_error
        self.steps = 0
        self.merges = 0  # prefilled rows joined into a running batch (continuous batching at work)

    def guarded(self, batch: RowBatch, fn: Callable, *args: Any) -> None:
        """Run a model step; on an exception fail that batch's rows (the caller stays up)."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            log.exception("generation step failed")
            for r in batch.rows:
                self.fail(r, "generation_failed", f"generation failed: {type(e).__name__}: {e}")
            batch.clear()

    def fail(self, r: GenRequest, kind: str, message: str) -> None:
        if r.done:
            return
        r.done = True
        r.sink.fail(self.make_error(kind, message))
        if self.metrics is not None:
            self.metrics.count_error(kind)

    # ------------------------------------------------------------------ model steps
    def _forward(self, engine: Any, input_ids, attn, pos, cache, last_only: bool):
        """Logits at each row's last position: the fast forward where the model has one
        (``fast_forward``), else the model's own forward."""
        fast = fast_forward_for(engine.model)
        if fast is not None:
            return fast.step(input_ids, attn, pos, cache)
        kwargs = {"input_ids": input_ids, "attention_mask": attn, "position_ids": pos,
                  engine.cache_kwarg: cache, "use_cache": True}
        if last_only:
            kwargs["logits_to_keep"] = 1
        try:
            out = engine.model(**kwargs)
        except TypeError:
            kwargs.pop("logits_to_keep", None)
            out = engine.model(**kwargs)
        return out.logits[:, -1, :]

    def prefill(self, batch: RowBatch, reqs: list[GenRequest]) -> None:
        """Prefill new rows in length groups (little padding), each group joining the batch."""
        for group in prefill_groups([len(r.prompt_ids) for r in reqs]):
            self._prefill_group(batch, [reqs[i] for i in group])

    def _prefill_group(self, batch: RowBatch, reqs: list[GenRequest]) -> None:
        import torch

        engine = reqs[0].engine
        dev = engine.model.device
        now = self.clock()
        if self.metrics is not None:
            for r in reqs:
                self.metrics.observe_queue_wait(now - r.enqueued_at)
        L = max(len(r.prompt_ids) for r in reqs)
        ids = torch.tensor([[engine.pad_id] * (L - len(r.prompt_ids)) + r.prompt_ids for r in reqs],
                           dtype=torch.long, device=dev)
        attn = torch.tensor([[0] * (L - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in reqs],
                            dtype=torch.long, device=dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = new_cache(engine.model)
        t0 = time.perf_counter()
        logits = self._forward(engine, ids, attn, pos, cache, last_only=True)
        if self.metrics is not None:
            self.metrics.observe_prefill(time.perf_counter() - t0)
        toks = self._sample(reqs, logits)
        new = RowBatch(engine)
        new.rows, new.cache, new.attn = list(reqs), cache, attn
        new.pos = attn.sum(-1)
        new.last = torch.tensor(toks, dtype=torch.long, device=dev)
        self._deliver(new, toks)
        compact(new)
        if not new.rows:
            return
        if not batch.rows:
            batch.take(new)
        else:
            merge(batch, new)
            self.merges += 1

    def decode_step(self, batch: RowBatch) -> None:
        """One token for every row of ``batch``."""
        import torch

        engine = batch.engine
        B = len(batch.rows)
        t0 = time.perf_counter()
        attn = torch.cat([batch.attn, torch.ones((B, 1), dtype=batch.attn.dtype, device=batch.attn.device)], 1)
        logits = self._forward(engine, batch.last[:, None], attn, batch.pos[:, None], batch.cache, last_only=False)
        batch.attn = attn
        batch.pos = batch.pos + 1
        toks = self._sample(batch.rows, logits)
        batch.last = torch.tensor(toks, dtype=torch.long, device=batch.attn.device)
        self.steps += 1
        if self.metrics is not None:
            self.metrics.observe_batch(B, time.perf_counter() - t0)
        self._deliver(batch, toks)
        compact(batch)

    # ------------------------------------------------------------------ tokens -> rows
    def _sample(self, rows: list[GenRequest], logits) -> list[int]:
        toks, bad = sample_next_tokens(rows, logits)
        for i in bad:
            self.fail(rows[i], "non_finite_logits", "the model produced non-finite logits (NaN/inf weights?)")
        return toks

    def _deliver(self, batch: RowBatch, toks: list[int]) -> None:
        now = self.clock()
        eos = batch.engine.eos_ids
        for r, tok in zip(batch.rows, toks):
            if r.done:
                continue
            if r.cancelled:
                r.done = True
                continue
            if r.first_token_at is None:
                r.first_token_at = now
                if self.metrics is not None:
                    self.metrics.observe_ttft(now - r.enqueued_at)
            if r.want_probs:
                r.probs.append(r.next_prob)
            if tok in eos:
                r.eos_token = tok
                self._finish(r, "stop")
                continue
            r.generated.append(tok)
            piece = r.text.push(tok)
            if piece:
                r.sink.delta(piece)
            if r.text.stopped:
                self._finish(r, "stop")
            elif len(r.generated) >= r.max_tokens:
                self._finish(r, "length")

    def _finish(self, r: GenRequest, reason: str) -> None:
        piece = r.text.flush()
        if piece:
            r.sink.delta(piece)
        if r.text.stopped:
            reason = "stop"
        r.done = True
        # The end-of-sequence token was generated too (and cost a decode step): it counts, as in
        # vLLM, so a reply that ends at once still reports one completion token.
        n_out = len(r.generated) + (r.eos_token is not None)
        usage = {"prompt_tokens": len(r.prompt_ids), "completion_tokens": n_out,
                 "total_tokens": len(r.prompt_ids) + n_out}
        if self.metrics is not None:
            self.metrics.observe_tokens(len(r.prompt_ids), n_out)
        r.sink.finish(reason, usage)
