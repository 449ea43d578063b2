"""One chat completion's generation state, and the sink its output goes to.

A request is bound to the ``LoadedModel`` it was validated against (``engine``): that is what lets
a hot reload swap models while requests in flight finish on the old one.
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Protocol

from inference.errors import APIError
from inference.text_stream import TextStream


class Sink(Protocol):
    """Where a request's output goes. Called from the batcher thread."""

    def delta(self, text: str) -> None: ...
    def finish(self, reason: str, usage: dict) -> None: ...
    def fail(self, error: APIError) -> None: ...


_ids = itertools.count(1)


class GenRequest:
    """One request's generation state (owned by the batcher thread once submitted)."""

    def __init__(self, engine: Any, prompt_ids: list[int], max_tokens: int, sink: Sink, *,
                 temperature: float = 1.0, top_p: float = 1.0, stop: list[str] | None = None,
                 seed: int | None = None, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 logit_bias: dict[int, float] | None = None, processors: list | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.id = next(_ids)
        self.engine = engine
        self.prompt_ids = list(prompt_ids)
        self.max_tokens = int(max_tokens)
        self.sink = sink
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seed = seed
        self.presence_penalty = float(presence_penalty)
        self.frequency_penalty = float(frequency_penalty)
        self.logit_bias = dict(logit_bias or {})
        self.processors = list(processors or [])
        self.text = TextStream(engine.tokenizer, stop or [])
        self.generated: list[int] = []
        self.enqueued_at = clock()
        self.first_token_at: float | None = None
        self.done = False
        self.cancelled = False
        self.generator = None  # torch.Generator, made lazily on the model's device

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_p <= 0.0

    def cancel(self) -> None:
        """Called from another thread (client went away); the batcher drops the row next step."""
        self.cancelled = True
