"""Continuous batching: one background thread decodes every in-flight request together.

Why our own loop instead of ``model.generate``: requests arrive and finish at different times and
each has its own sampling settings, stop sequences and (profile) logits processors. The loop keeps
one running batch per loaded model with a shared KV cache (left-padded rows, explicit position ids),
and at every step:

1. admits waiting requests (prefilled together, then their cache rows are padded and concatenated
   onto the running batch: continuous batching);
2. runs one decode step for the whole batch and samples a token per row with that row's settings;
3. hands each row's new text to its sink and drops finished rows from the cache.

Hot reload needs nothing special here: a request is bound to the ``LoadedModel`` it was validated
against, and each model has its own batch, so requests in flight finish on the old model while new
ones start on the new model; the old batch disappears when its last row finishes.

Models whose cache is not a plain per-layer KV tensor (sliding window, linear attention) cannot
have rows merged; for them new requests are admitted only when their model's batch is empty.

The request type is ``gen_request``, the KV-cache row operations ``kv_batch``, token choice
``sampling``; this module is the scheduling loop.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from inference.errors import APIError, RATE_LIMIT, SERVER, UNAVAILABLE
from inference.gen_request import GenRequest
from inference.kv_batch import RowBatch, compact, merge
from inference.sampling import sample_next_tokens

log = logging.getLogger("inference.batcher")

__all__ = ["Batcher", "GenRequest", "prefill_groups"]


def prefill_groups(lengths: list[int], overhead_tokens: int = 16) -> list[list[int]]:
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


class Batcher:
    def __init__(self, *, max_batch_size: int = 16, max_queue: int = 256, batch_wait_s: float = 0.01,
                 metrics: Any = None, clock: Callable[[], float] = time.monotonic, num_threads: int = 0):
        self.num_threads = num_threads  # torch threads of the decode thread (0: leave torch's default)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self.metrics = metrics
        self.clock = clock
        self._waiting: deque[GenRequest] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._batches: dict[int, RowBatch] = {}
        self._thread: threading.Thread | None = None
        self.steps = 0
        self.merges = 0  # prefilled rows joined into a running batch (continuous batching at work)

    # ------------------------------------------------------------------ public
    def start(self) -> "Batcher":
        self._thread = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        err = APIError(503, "the server is shutting down", UNAVAILABLE, None, "shutting_down")
        with self._cond:
            pending = list(self._waiting)
            self._waiting.clear()
        for r in pending:
            r.sink.fail(err)
        for b in list(self._batches.values()):
            for r in b.rows:
                if not r.done:
                    r.sink.fail(err)
        self._batches.clear()

    def submit(self, req: GenRequest) -> None:
        with self._cond:
            if self._stop.is_set():
                raise APIError(503, "the server is shutting down", UNAVAILABLE, None, "shutting_down")
            if len(self._waiting) >= self.max_queue:
                raise APIError(429, f"the server is busy: {len(self._waiting)} requests are already waiting "
                                    f"(limit {self.max_queue}); retry shortly", RATE_LIMIT, None, "queue_full")
            self._waiting.append(req)
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def active(self) -> int:
        return sum(len(b.rows) for b in list(self._batches.values()))

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        import torch
        if self.num_threads > 0:
            torch.set_num_threads(self.num_threads)  # per thread under OpenMP: set it here
        with torch.inference_mode():
            while not self._stop.is_set():
                try:
                    self._admit()
                    if not self._batches:
                        continue
                    for key, batch in list(self._batches.items()):
                        if batch.rows:
                            self._guarded(batch, self._decode_step, batch)
                        if not batch.rows:
                            self._batches.pop(key, None)
                except Exception:  # noqa: BLE001 - the loop must survive anything
                    log.exception("batcher loop error")
                    time.sleep(0.01)

    def _guarded(self, batch: RowBatch, fn: Callable, *args: Any) -> None:
        """Run a model step; on an exception fail that batch's rows (the server stays up)."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001
            log.exception("generation step failed")
            err = APIError(500, f"generation failed: {type(e).__name__}: {e}", SERVER, None, "generation_failed")
            for r in batch.rows:
                if not r.done:
                    r.done = True
                    r.sink.fail(err)
                    self._count_error("generation_failed")
            batch.rows = []
            batch.cache = None

    def _admit(self) -> None:
        """Move waiting requests into running batches when the batch window allows it."""
        with self._cond:
            while not self._stop.is_set():
                # drop requests whose client went away while they waited
                if any(r.cancelled for r in self._waiting):
                    self._waiting = deque(r for r in self._waiting if not r.cancelled)
                active = self.active
                free = self.max_batch_size - active
                if not self._waiting:
                    if active:
                        return
                    self._cond.wait(0.5)
                    continue
                if free <= 0:
                    return
                age = self.clock() - self._waiting[0].enqueued_at
                if len(self._waiting) >= free or age >= self.batch_wait_s:
                    break
                if active:
                    return  # keep decoding; admit on a later step
                self._cond.wait(max(self.batch_wait_s - age, 0.0005))
            else:
                return
            taken: list[GenRequest] = []
            keep: deque[GenRequest] = deque()
            while self._waiting:
                r = self._waiting.popleft()
                if len(taken) >= free:
                    keep.append(r)
                    continue
                b = self._batches.get(id(r.engine))
                if b is not None and b.rows and not r.engine.supports_merge:
                    keep.append(r)  # cannot join a running batch of this model; wait for it to drain
                    continue
                taken.append(r)
            keep.extend(self._waiting)
            self._waiting = keep
        by_engine: dict[int, list[GenRequest]] = {}
        for r in taken:
            by_engine.setdefault(id(r.engine), []).append(r)
        for key, reqs in by_engine.items():
            batch = self._batches.get(key)
            if batch is None:
                batch = self._batches[key] = RowBatch(reqs[0].engine)
            self._guarded(batch, self._prefill, batch, reqs)
            if not batch.rows:
                self._batches.pop(key, None)

    # ------------------------------------------------------------------ model steps
    def _forward(self, engine: Any, input_ids, attn, pos, cache, last_only: bool):
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

    def _prefill(self, batch: RowBatch, reqs: list[GenRequest]) -> None:
        """Prefill new rows in length groups (little padding), each group joining the batch."""
        for group in prefill_groups([len(r.prompt_ids) for r in reqs]):
            self._prefill_group(batch, [reqs[i] for i in group])

    def _prefill_group(self, batch: RowBatch, reqs: list[GenRequest]) -> None:
        import torch
        from transformers import DynamicCache

        engine = reqs[0].engine
        dev = engine.model.device
        now = self.clock()
        for r in reqs:
            if self.metrics is not None:
                self.metrics.observe_queue_wait(now - r.enqueued_at)
        L = max(len(r.prompt_ids) for r in reqs)
        ids = torch.tensor([[engine.pad_id] * (L - len(r.prompt_ids)) + r.prompt_ids for r in reqs],
                           dtype=torch.long, device=dev)
        attn = torch.tensor([[0] * (L - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in reqs],
                            dtype=torch.long, device=dev)
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=engine.model.config)
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

    def _decode_step(self, batch: RowBatch) -> None:
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

    # ------------------------------------------------------------------ sampling
    def _sample(self, rows: list[GenRequest], logits) -> list[int]:
        toks, bad = sample_next_tokens(rows, logits)
        for i in bad:
            r = rows[i]
            if not r.done:
                r.done = True
                r.sink.fail(APIError(500, "the model produced non-finite logits (NaN/inf weights?)", SERVER,
                                     None, "non_finite_logits"))
                self._count_error("non_finite_logits")
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
            if tok in eos:
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
        usage = {"prompt_tokens": len(r.prompt_ids), "completion_tokens": len(r.generated),
                 "total_tokens": len(r.prompt_ids) + len(r.generated)}
        if self.metrics is not None:
            self.metrics.observe_tokens(len(r.prompt_ids), len(r.generated))
        r.sink.finish(reason, usage)

    def _count_error(self, kind: str) -> None:
        if self.metrics is not None:
            self.metrics.count_error(kind)
