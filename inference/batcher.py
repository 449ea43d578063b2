"""Continuous batching for the server: one background thread decodes every in-flight request together.

The model steps (prefill into a running batch, one decode step for all rows, stop strings, dropping
finished rows) are ``trainer.generation.decoder``, shared with the evaluator. This module is the
server's side of it: the waiting queue (bounded: 429 when full), when to admit waiting requests
into a running batch, one running batch per loaded model, and shutdown.

Hot reload needs nothing special here: a request is bound to the ``LoadedModel`` it was validated
against, and each model has its own batch, so requests in flight finish on the old model while new
ones start on the new model; the old batch disappears when its last row finishes.

Models whose cache is not a plain per-layer KV tensor (sliding window, linear attention) cannot
have rows merged; for them new requests are admitted only when their model's batch is empty.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable

from inference.errors import APIError, RATE_LIMIT, SERVER, UNAVAILABLE
from trainer.generation.decoder import Decoder, prefill_groups
from trainer.generation.kv_batch import RowBatch
from trainer.generation.request import GenRequest

log = logging.getLogger("inference.batcher")

__all__ = ["Batcher", "GenRequest", "prefill_groups"]


def _api_error(kind: str, message: str) -> APIError:
    return APIError(500, message, SERVER, None, kind)


class Batcher:
    def __init__(self, *, max_batch_size: int = 16, max_queue: int = 256, batch_wait_s: float = 0.01,
                 metrics: Any = None, clock: Callable[[], float] = time.monotonic, num_threads: int = 0):
        self.num_threads = num_threads  # torch threads of the decode thread (0: leave torch's default)
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch_wait_s = batch_wait_s
        self.metrics = metrics
        self.clock = clock
        self.decoder = Decoder(metrics=metrics, clock=clock, make_error=_api_error)
        self._waiting: deque[GenRequest] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._batches: dict[int, RowBatch] = {}
        self._thread: threading.Thread | None = None

    @property
    def steps(self) -> int:
        return self.decoder.steps

    @property
    def merges(self) -> int:
        return self.decoder.merges

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
                    for key, batch in list(self._batches.items()):
                        if batch.rows:
                            self.decoder.guarded(batch, self.decoder.decode_step, batch)
                        if not batch.rows:
                            self._batches.pop(key, None)
                except Exception:  # noqa: BLE001 - the loop must survive anything
                    log.exception("batcher loop error")
                    time.sleep(0.01)

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
            self.decoder.guarded(batch, self.decoder.prefill, batch, reqs)
            if not batch.rows:
                self._batches.pop(key, None)
