"""Where a generation ends: EOS token ids and stop strings, one rule for every generator.

The batched generation engine (``trainer.generation``), the server (``inference.model_loader``), the evaluator
(``monitoring.evaluation``) and the profiles themselves (``DataProfile.postprocess``) all decide
"has this reply ended, and where" with these functions, so the evaluator scores replies cut exactly
as the server cuts them.

Stop strings are matched in decoded TEXT, never in token ids: a tokenizer may spell one stop string
as one token or as several, and split it differently depending on what precedes it. A caller that
sees text arrive in pieces keeps the whole text (or a window long enough for the longest stop) and
asks again; ``partial_stop_len`` says how much of the tail may still grow into a stop string.

Importing this module imports neither torch nor transformers.
"""
from __future__ import annotations

from typing import Any, Iterable


def stop_strings(stops: Iterable[Any] | None) -> list[str]:
    """The usable stop strings of ``stops``: non-empty strings only, in order, without duplicates."""
    out: list[str] = []
    for s in stops or []:
        if isinstance(s, str) and s and s not in out:
            out.append(s)
    return out


def profile_stop_strings(profile: Any) -> list[str]:
    """A profile's stop strings (its ``stop_sequences``: a list, or a callable returning one)."""
    stops = getattr(profile, "stop_sequences", None)
    if callable(stops):
        stops = stops()
    return stop_strings(stops)


def find_stop(text: str, stops: Iterable[str], start: int = 0) -> int:
    """Index in ``text`` where the earliest stop string begins (searching from ``start``), or -1.

    When stop strings overlap (one found inside or across another), the one that begins first wins,
    so the cut keeps as little as possible."""
    cut = -1
    for s in stops:
        if not s:
            continue
        i = text.find(s, start)
        if i >= 0 and (cut < 0 or i < cut):
            cut = i
    return cut


def cut_at_stop(text: str, stops: Iterable[str]) -> str:
    """``text`` up to (not including) its earliest stop string; unchanged when there is none."""
    cut = find_stop(text, stops)
    return text if cut < 0 else text[:cut]


def partial_stop_len(text: str, stops: Iterable[str], start: int = 0) -> int:
    """Length of the longest tail of ``text[start:]`` that is a proper prefix of some stop string:
    text a stream must hold back because the next piece may complete a stop string."""
    stops = [s for s in stops if s]
    longest = max((len(s) for s in stops), default=0)
    for k in range(min(longest - 1, len(text) - start), 0, -1):
        tail = text[-k:]
        if any(s.startswith(tail) for s in stops):
            return k
    return 0


def eos_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The token ids that end a generation: the model's ``generation_config.eos_token_id`` (an int
    or a list; chat models often list several, e.g. end-of-turn and end-of-text), then the
    tokenizer's ``eos_token_id``. Deduplicated, in that order (the first is the preferred pad)."""
    ids: list[int] = []
    gc = getattr(model, "generation_config", None)
    configured = getattr(gc, "eos_token_id", None) if gc is not None else None
    candidates = list(configured) if isinstance(configured, (list, tuple)) else [configured]
    candidates.append(getattr(tokenizer, "eos_token_id", None))
    for x in candidates:
        if isinstance(x, int) and not isinstance(x, bool) and x >= 0 and x not in ids:
            ids.append(int(x))
    return ids
