"""One generation's state, and the sink its output goes to.

A request is bound to the model it was prepared for (``target``: anything with the attributes of
``trainer.generation.target.DecodeTarget``; the server's ``LoadedModel`` has them too). That binding
is what lets the server hot-swap models while requests in flight finish on the old one.
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Protocol

from trainer.generation.text_stream import TextStream


class GenerationError(Exception):
    """A row that could not be generated (``kind``: ``generation_failed``, ``non_finite_logits``...)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message


class Sink(Protocol):
    """Where a request's output goes. Called from the thread that runs the decode loop."""

    def delta(self, text: str) -> None: ...
    def finish(self, reason: str, usage: dict) -> None: ...
    def fail(self, error: Exception) -> None: ...


_ids = itertools.count(1)


class GenRequest:
    """One request's generation state (owned by the decode loop once submitted).

    ``want_probs``: record each generated token's probability under the unprocessed logits
    (``probs``, one per token of ``generated`` plus the EOS that ended it, if any)."""

    def __init__(self, engine: Any, prompt_ids: list[int], max_tokens: int, sink: Sink, *,
                 temperature: float = 1.0, top_p: float = 1.0, stop: list[str] | None = None,
                 seed: int | None = None, presence_penalty: float = 0.0, frequency_penalty: float = 0.0,
                 logit_bias: dict[int, float] | None = None, processors: list | None = None,
                 want_probs: bool = False, clock: Callable[[], float] = time.monotonic):
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
        self.want_probs = want_probs
        self.text = TextStream(engine.tokenizer, stop or [])
        self.generated: list[int] = []
        self.probs: list[float] = []
        self.next_prob = 0.0        # set by sampling for ``want_probs`` rows, recorded on delivery
        self.eos_token: int | None = None  # the EOS id that ended the row, if one did
        self.enqueued_at = clock()
        self.first_token_at: float | None = None
        self.done = False
        self.cancelled = False
        self.generator = None  # torch.Generator, made lazily on the model's device

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0 or self.top_p <= 0.0

    def cancel(self) -> None:
        """Called from another thread (client went away); the decode loop drops the row next step."""
        self.cancelled = True
