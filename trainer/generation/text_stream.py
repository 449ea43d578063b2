"""Turn generated token ids into text pieces, one token at a time, and cut at stop sequences.

Why a class of its own: streaming must never hand out text that later turns out to be the start
of a stop sequence (it is stripped from the reply), nor half of a multi-byte character. So the
stream decodes incrementally (the prefix/read offset trick: decode a small window, keep only what
grew) and holds back any suffix that could still become a stop sequence. Where a stop sequence
begins, and how much of the tail may still become one, is ``trainer.profiles.generation``'s rule
(the evaluator cuts its replies with the same functions).
"""
from __future__ import annotations

from typing import Any, Callable

from trainer.profiles.generation import find_stop, partial_stop_len, stop_strings


def plain_decoder(tokenizer: Any) -> Callable[[list[int]], str]:
    """``ids -> text`` with special tokens skipped and no clean-up of spaces. For transformers' stock
    fast tokenizer that is exactly one call of its Rust tokenizer, made directly (a step decodes two
    windows per row, and transformers' Python wrapper around the call costs more than the call); any other
    tokenizer, or one that overrides how it decodes, goes through its own ``decode``."""
    try:
        from transformers.tokenization_utils_base import PreTrainedTokenizerBase
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError:  # pragma: no cover - another transformers layout
        TokenizersBackend = PreTrainedTokenizerBase = None
    cls = type(tokenizer)
    rust = getattr(tokenizer, "_tokenizer", None)
    if (TokenizersBackend is not None and rust is not None and isinstance(tokenizer, TokenizersBackend)
            and cls.decode is PreTrainedTokenizerBase.decode and cls._decode is TokenizersBackend._decode):
        return lambda ids: rust.decode(ids, skip_special_tokens=True)
    return lambda ids: tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)


class TextStream:
    def __init__(self, tokenizer: Any, stops: list[str] | tuple[str, ...] = ()):
        self.tokenizer = tokenizer
        self._decode = plain_decoder(tokenizer)
        self.stops = stop_strings(stops)
        self.ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""          # decoded text so far (complete characters only)
        self.emitted = 0        # chars of ``text`` already handed out
        self.stopped = False

    def _grow(self, final: bool = False) -> None:
        prefix = self._decode(self.ids[self._prefix_offset:self._read_offset])
        new = self._decode(self.ids[self._prefix_offset:])
        if len(new) > len(prefix) and (final or not new.endswith("\ufffd")):
            self.text += new[len(prefix):]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self.ids)

    def _take(self, final: bool) -> str:
        """Text that is safe to hand out now; sets ``stopped`` when a stop sequence appeared."""
        if self.stopped:
            return ""
        cut = find_stop(self.text, self.stops, self.emitted)
        if cut >= 0:
            piece = self.text[self.emitted:cut]
            self.emitted = cut
            self.stopped = True
            return piece
        safe = len(self.text)
        if not final:
            safe -= partial_stop_len(self.text, self.stops, self.emitted)
        piece = self.text[self.emitted:safe]
        self.emitted = safe
        return piece

    def push(self, token_id: int) -> str:
        """Add one token; return the text piece that may be sent now."""
        self.ids.append(int(token_id))
        self._grow()
        return self._take(final=False)

    def flush(self) -> str:
        """At the end of generation: everything not yet handed out (up to a stop sequence)."""
        self._grow(final=True)
        return self._take(final=True)

    @property
    def output(self) -> str:
        return self.text[:self.emitted]
