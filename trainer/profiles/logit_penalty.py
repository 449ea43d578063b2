"""Logits processors that shape generation for the data profiles (trainer/profiles/).

They are Hugging Face ``LogitsProcessor`` subclasses: pass them to
``model.generate(logits_processor=LogitsProcessorList([...]))`` or call them directly with
``(input_ids (batch, seq), scores (batch, vocab))``.

Arithmetic (one rule for every processor): a penalty is SUBTRACTED from the scores and a reward is
ADDED, in logit space. Subtraction lowers every value by the same amount whatever its sign, so negative
logits are handled correctly (HF's RepetitionPenalty divides, which needs a sign special case), ``-inf``
(a token already masked) stays ``-inf``, and the same holds for the log-probabilities beam search passes
in. A negative penalty is a bonus. The input ``scores`` tensor is never modified; a new one is returned.

Generation state. HF calls the processors once per step with the whole sequence so far (prompt +
generated). "Generated-step count" = current length - prompt length, where the prompt length is the
length seen at the first call of a generation (all rows of a batch share it: HF pads the prompts to one
length). A ``_GenerationTracker`` recognises the next step of the same generation (one token longer and
every row extends a row of the previous call; beam search may reorder rows, which is followed) and
treats anything else as a new generation (a repeated call with the very same ids is the same step), so
one processor object can serve many ``generate`` calls; ``reset()`` forces a fresh start.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
from transformers.generation.logits_process import LogitsProcessor

from trainer.profiles.generation import eos_token_ids as generation_eos_ids, find_stop
from trainer.profiles.penalty_schedule import Window, parse_schedule, schedule_multiplier

__all__ = ["TokenPenaltyProcessor", "PostStopPenaltyProcessor", "EOSRewardProcessor",
           "ThinkTagPenaltyProcessor", "StopSignalDetector", "parse_schedule", "schedule_multiplier",
           "token_ids_for_text"]


def _finite(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float(value)


def _id_list(ids: int | Iterable[int], name: str) -> list[int]:
    if isinstance(ids, int) and not isinstance(ids, bool):
        ids = [ids]
    out: list[int] = []
    for t in ids:
        if isinstance(t, bool) or not isinstance(t, int) or t < 0:
            raise ValueError(f"{name} must be non-negative integer token ids; got {t!r}")
        if t not in out:
            out.append(t)
    return out


def _check_vocab(ids: Sequence[int], scores: torch.Tensor, name: str) -> None:
    if ids and max(ids) >= scores.shape[-1]:
        raise ValueError(f"{name}: token id {max(ids)} is outside the vocabulary "
                         f"(scores have {scores.shape[-1]} columns)")


def _eos_ids(eos_token_ids: int | Iterable[int] | None, tokenizer: Any, name: str) -> list[int]:
    if eos_token_ids is None and tokenizer is not None:
        eos_token_ids = generation_eos_ids(None, tokenizer) or None  # processors see no model config
    if eos_token_ids is None:
        raise ValueError(f"{name}: no EOS token id (pass eos_token_ids or a tokenizer with eos_token_id)")
    ids = _id_list(eos_token_ids, f"{name} eos_token_ids")
    if not ids:
        raise ValueError(f"{name}: eos_token_ids is empty")
    return ids


class _GenerationTracker:
    """Prompt length and row identity across the calls of one generation (see the module docstring)."""

    def __init__(self) -> None:
        self.prompt_len = 0
        self._prev: torch.Tensor | None = None

    def reset(self) -> None:
        self._prev = None
        self.prompt_len = 0

    def update(self, input_ids: torch.Tensor) -> torch.Tensor | None:
        """Record this call. Returns, for each row, the index of the previous call's row it extends
        (a LongTensor), or ``None`` when this call starts a new generation."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, seq); got shape {tuple(input_ids.shape)}")
        prev, origin = self._prev, None
        if prev is not None and input_ids.shape == prev.shape and prev.device == input_ids.device \
                and bool((input_ids == prev).all()):
            return torch.arange(input_ids.shape[0])  # the same step again (e.g. called twice)
        if prev is not None and input_ids.shape[1] == prev.shape[1] + 1 and prev.device == input_ids.device:
            head = input_ids[:, :-1]
            if head.shape == prev.shape and bool((head == prev).all()):
                origin = torch.arange(head.shape[0])
            else:  # beam search reorders rows: each row must extend SOME previous row
                match = (head[:, None, :] == prev[None, :, :]).all(-1)  # (batch, prev_batch)
                if bool(match.any(1).all()):
                    origin = match.to(torch.int8).argmax(1).cpu()
        if origin is None:
            self.prompt_len = int(input_ids.shape[1])
        self._prev = input_ids.detach().clone()
        return origin

    def step(self, input_ids: torch.Tensor) -> int:
        """Tokens generated so far (0 at the first call: the token being chosen is the first one)."""
        return int(input_ids.shape[1]) - self.prompt_len


class StopSignalDetector:
    """Finds, per row, when the stop signal appeared in the GENERATED tokens (the prompt is ignored).

    ``stop_sequences`` items: an int (one token), a sequence of ints (those tokens in a row), or a str
    (matched in the decoded text, which needs ``tokenizer``; this is robust to BPE merging, e.g. a run
    of stop emoji that the tokenizer spells as one token or as several). Only the newest tokens are
    looked at each step, so the cost does not grow with the generation's length.
    """

    def __init__(self, stop_sequences: Iterable[int | Sequence[int] | str], tokenizer: Any = None) -> None:
        if isinstance(stop_sequences, (str, int)):
            stop_sequences = [stop_sequences]
        self.token_seqs: list[tuple[int, ...]] = []
        self.strings: list[str] = []
        for item in stop_sequences:
            if isinstance(item, str):
                if not item:
                    raise ValueError("stop sequence must not be an empty string")
                if tokenizer is None:
                    raise ValueError(f"text stop sequence {item!r} needs a tokenizer")
                self.strings.append(item)
            else:
                seq = tuple(_id_list(item, "stop sequence") if isinstance(item, int)
                            else self._seq(item))
                if not seq:
                    raise ValueError("stop sequence must not be empty")
                self.token_seqs.append(seq)
        if not self.token_seqs and not self.strings:
            raise ValueError("no stop sequences given")
        self.tokenizer = tokenizer
        # A string of B UTF-8 bytes spans at most B tokens (each token holds >= 1 byte); +1 for safety.
        self._window = max((len(s.encode("utf-8")) + 1 for s in self.strings), default=0)
        self._tail = max([self._window] + [len(q) for q in self.token_seqs])
        self._tracker = _GenerationTracker()
        self._stop_at: list[int | None] = []

    @staticmethod
    def _seq(item: Sequence[int]) -> list[int]:
        out = []
        for t in item:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise ValueError(f"stop sequence token ids must be non-negative integers; got {t!r}")
            out.append(t)
        return out

    def reset(self) -> None:
        self._tracker.reset()
        self._stop_at = []

    def _stops_now(self, gen: list[int]) -> bool:
        for seq in self.token_seqs:
            if len(gen) >= len(seq) and tuple(gen[-len(seq):]) == seq:
                return True
        if self.strings and gen:
            tail = self.tokenizer.decode(gen[-self._window:], skip_special_tokens=False)
            return find_stop(tail, self.strings) >= 0
        return False

    def update(self, input_ids: torch.Tensor) -> list[int | None]:
        """Per row: tokens generated since the stop signal completed (0 right after it), or None."""
        origin = self._tracker.update(input_ids)
        if origin is None:
            self._stop_at = [None] * input_ids.shape[0]
        else:
            self._stop_at = [self._stop_at[int(o)] for o in origin]
        step = self._tracker.step(input_ids)
        if step > 0 and any(s is None for s in self._stop_at):
            start = max(self._tracker.prompt_len, input_ids.shape[1] - self._tail)
            rows = input_ids[:, start:].tolist()  # only the newest generated tokens can complete a stop
            for r, gen in enumerate(rows):
                if self._stop_at[r] is None and self._stops_now(gen):
                    self._stop_at[r] = step
        return [None if s is None else step - s for s in self._stop_at]


class TokenPenaltyProcessor(LogitsProcessor):
    """Subtract ``penalty`` (times the schedule's multiplier for this step) from the given tokens' scores.

    ``schedule``: ``[{"steps": 4, "multiplier": 8.0}, {"steps": 8, "multiplier": 2.0}]`` = the first 4
    generated tokens get 8 x penalty, the next 8 get 2 x, every later one 1 x (the baseline).
    """

    def __init__(self, token_ids: int | Iterable[int], penalty: float,
                 schedule: list[dict] | tuple[Window, ...] | None = None) -> None:
        self.token_ids = _id_list(token_ids, "token_ids")
        self.penalty = _finite(penalty, "penalty")
        self.schedule: tuple[Window, ...] = parse_schedule(schedule)
        self._tracker = _GenerationTracker()
        self._index: torch.Tensor | None = None

    def reset(self) -> None:
        self._tracker.reset()

    def multiplier(self, step: int) -> float:
        return schedule_multiplier(self.schedule, step)

    def current_penalty(self, step: int) -> float:
        return self.penalty * self.multiplier(step)

    def _ids(self, scores: torch.Tensor) -> torch.Tensor:
        if self._index is None or self._index.device != scores.device:
            self._index = torch.tensor(self.token_ids, dtype=torch.long, device=scores.device)
        return self._index

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        self._tracker.update(input_ids)
        step = self._tracker.step(input_ids)
        out = scores.clone()
        if self.token_ids:
            _check_vocab(self.token_ids, scores, type(self).__name__)
            idx = self._ids(scores)
            out[:, idx] = out[:, idx] - self.current_penalty(step)
        return out


def token_ids_for_text(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, ...]]]:
    """How ``text`` can be generated: (single token ids, multi-token sequences).

    A text that is one vocabulary entry (e.g. an added ``<think>`` token) gives that id only. Otherwise
    the text is encoded as it is and after a space (byte-level BPE spells those differently)."""
    tid = tokenizer.convert_tokens_to_ids(text)
    unk = getattr(tokenizer, "unk_token_id", None)
    if isinstance(tid, int) and tid != unk and tid >= 0:
        return [tid], []
    singles: list[int] = []
    seqs: list[tuple[int, ...]] = []
    for variant in (text, " " + text):
        ids = tuple(tokenizer.encode(variant, add_special_tokens=False))
        if len(ids) == 1:
            if ids[0] not in singles:
                singles.append(ids[0])
        elif ids and ids not in seqs:
            seqs.append(ids)
    return singles, seqs


class ThinkTagPenaltyProcessor(TokenPenaltyProcessor):
    """Penalise generating ``<think>`` (and ``</think>``) tags; the profiles that use it train without them.

    A tag that is one token is penalised directly. A tag the tokenizer spells with several tokens is
    penalised on its LAST token, at the steps where the generated text already ends with the tag's
    other tokens (the earlier tokens, such as ``<``, are far too common to penalise on their own).
    """

    def __init__(self, tokenizer: Any, penalty: float, schedule: list[dict] | None = None,
                 tags: Sequence[str] = ("<think>", "</think>")) -> None:
        singles: list[int] = []
        seqs: list[tuple[int, ...]] = []
        for tag in tags:
            s, q = token_ids_for_text(tokenizer, tag)
            if not s and not q:
                raise ValueError(f"ThinkTagPenaltyProcessor: the tokenizer cannot encode {tag!r}")
            singles += [t for t in s if t not in singles]
            seqs += [x for x in q if x not in seqs]
        super().__init__(singles, penalty, schedule)
        self.tags = tuple(tags)
        self.sequences = seqs

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        out = super().__call__(input_ids, scores)
        if self.sequences:
            step = self._tracker.step(input_ids)
            pen = self.current_penalty(step)
            longest = max(len(q) for q in self.sequences)
            gen_rows = input_ids[:, max(self._tracker.prompt_len, input_ids.shape[1] - longest):].tolist()
            for r, gen in enumerate(gen_rows):
                for seq in self.sequences:
                    need = seq[:-1]
                    if len(gen) >= len(need) and tuple(gen[len(gen) - len(need):]) == need:
                        _check_vocab([seq[-1]], scores, type(self).__name__)
                        out[r, seq[-1]] = out[r, seq[-1]] - pen
        return out


class PostStopPenaltyProcessor(LogitsProcessor):
    """After the stop signal, push every non-EOS token down, harder the longer the model keeps going.

    With ``k`` = tokens generated since the stop signal completed (0 for the first token after it),
    the penalty is ``base_penalty + growth * k`` (linear; capped at ``max_penalty`` when given),
    subtracted from every token except the EOS ids. Rows that have not emitted the stop signal are
    untouched.
    """

    def __init__(self, stop_sequences: Iterable[int | Sequence[int] | str], base_penalty: float,
                 growth: float = 0.0, eos_token_ids: int | Iterable[int] | None = None,
                 tokenizer: Any = None, max_penalty: float | None = None) -> None:
        self.detector = StopSignalDetector(stop_sequences, tokenizer)
        self.base_penalty = _finite(base_penalty, "base_penalty")
        self.growth = _finite(growth, "growth")
        self.max_penalty = None if max_penalty is None else _finite(max_penalty, "max_penalty")
        self.eos_token_ids = _eos_ids(eos_token_ids, tokenizer, type(self).__name__)

    def reset(self) -> None:
        self.detector.reset()

    def penalty_after(self, k: int) -> float:
        p = self.base_penalty + self.growth * k
        return p if self.max_penalty is None else min(p, self.max_penalty)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        since = self.detector.update(input_ids)
        if all(k is None for k in since):
            return scores.clone()
        _check_vocab(self.eos_token_ids, scores, type(self).__name__)
        pen = torch.tensor([0.0 if k is None else self.penalty_after(k) for k in since],
                           dtype=scores.dtype, device=scores.device)
        out = scores - pen[:, None]
        eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=scores.device)
        out[:, eos] = scores[:, eos]
        return out


class EOSRewardProcessor(LogitsProcessor):
    """Add ``reward`` to the EOS token(s) once the stop signal has been emitted.

    ``stop_sequences=None`` rewards EOS at every step (a plain EOS bias)."""

    def __init__(self, eos_token_ids: int | Iterable[int] | None, reward: float,
                 stop_sequences: Iterable[int | Sequence[int] | str] | None = None,
                 tokenizer: Any = None) -> None:
        self.eos_token_ids = _eos_ids(eos_token_ids, tokenizer, type(self).__name__)
        self.reward = _finite(reward, "reward")
        self.detector = None if stop_sequences is None else StopSignalDetector(stop_sequences, tokenizer)

    def reset(self) -> None:
        if self.detector is not None:
            self.detector.reset()

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.detector is None:
            rows = list(range(scores.shape[0]))
        else:
            rows = [r for r, k in enumerate(self.detector.update(input_ids)) if k is not None]
        out = scores.clone()
        if rows:
            _check_vocab(self.eos_token_ids, scores, type(self).__name__)
            eos = torch.tensor(self.eos_token_ids, dtype=torch.long, device=scores.device)
            r = torch.tensor(rows, dtype=torch.long, device=scores.device)
            out[r[:, None], eos[None, :]] = out[r[:, None], eos[None, :]] + self.reward
        return out
