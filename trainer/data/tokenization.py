"""Normalized record -> ``input_ids`` + ``labels`` with an exact assistant-only loss mask.

Why the mask is built this way: the conversation is rendered by the model's own chat template
(``apply_chat_template(..., tokenize=False)``) so training sees exactly the text inference will
see, then tokenized once with character offsets. Each assistant message's content is located in
the rendered string, and the tokens covering that content plus the template's end-of-turn marker
(``<|im_end|>`` for ChatML/Qwen, ``<|eot_id|>`` for Llama 3, ...) get labels; everything else is
-100. The marker is learnt from the template itself by rendering a probe conversation, so any
template works without a table of model families.

Locating content is exact in two steps:

1. Render again with every assistant content replaced by a unique sentinel. When substituting the
   real contents back reproduces the real rendering, the template copies contents verbatim and
   the sentinel positions are the content positions (no searching, no ambiguity).
2. Otherwise (the template transforms contents, e.g. ``| trim`` or Qwen3 moving ``<think>`` blocks)
   search each message's content forward from a cursor that moves past every earlier message.

A token is labelled when its character span overlaps a labelled span, so every character of an
assistant answer is covered by a labelled token even where a tokenizer merges across a boundary.
"""
from __future__ import annotations

import bisect
import logging
import os
import re
import weakref
from typing import Any, Iterable, Sequence

from torch.utils.data import Dataset

from trainer.data.records import is_chat

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
LOSS_ON = ("assistant", "last_assistant", "all")
OVERLONG_POLICIES = ("truncate", "drop", "fail")

_PROBE = [
    {"role": "user", "content": "Probe question one?"},
    {"role": "assistant", "content": "Probe answer one."},
    {"role": "user", "content": "Probe question two?"},
    {"role": "assistant", "content": "Probe answer two."},
]
_marker_cache: "weakref.WeakKeyDictionary[Any, dict[str, str]]" = weakref.WeakKeyDictionary()


class TokenizationError(ValueError):
    """An example the tokenizer/template cannot turn into labelled tokens.
    ``reason``: no_chat_template, slow_tokenizer, template_error, template_mismatch."""

    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")


class DatasetError(ValueError):
    """``build_dataset`` could not build a trainable dataset; ``index`` is the record (0-based)
    at fault, or None for a whole-dataset problem."""

    def __init__(self, reason: str, message: str, index: int | None = None):
        self.reason = reason
        self.index = index
        self.message = message
        where = f"record {index}: " if index is not None else ""
        super().__init__(f"{where}{reason}: {message}")


# ---------------------------------------------------------------- template helpers
def _template_key(tokenizer) -> str:
    tpl = getattr(tokenizer, "chat_template", None)
    return tpl if isinstance(tpl, str) else repr(tpl)


def render_chat(tokenizer, messages: Sequence[dict]) -> str:
    """The conversation as the model's chat template renders it (no generation prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        raise TokenizationError("no_chat_template",
                                f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no chat_template")
    try:
        text = tokenizer.apply_chat_template(list(messages), tokenize=False)
    except Exception as e:  # jinja raises TemplateError / TypeError / ... for conversations it refuses
        raise TokenizationError("template_error", f"chat template refused the conversation: {e}") from e
    if not isinstance(text, str):
        raise TokenizationError("template_error", f"chat template returned {type(text).__name__}, not str")
    return text


def end_of_turn_marker(tokenizer) -> str:
    """The text a template puts right after an assistant message's content (whitespace-stripped
    on the right), e.g. ``<|im_end|>``. Learnt from a probe conversation: the common prefix of
    what follows a middle assistant turn and the final one, so template text that only follows
    the last message (or only precedes the next user turn) is excluded. Cached per tokenizer."""
    key = _template_key(tokenizer)
    try:
        cached = _marker_cache.get(tokenizer)
    except TypeError:
        cached = None
    if cached is not None and key in cached:
        return cached[key]
    marker = ""
    try:
        text = render_chat(tokenizer, _PROBE)
        a1, a2 = _PROBE[1]["content"], _PROBE[3]["content"]
        i1 = text.find(a1)
        i2 = text.find(a2, i1 + len(a1)) if i1 >= 0 else -1
        if i1 >= 0 and i2 >= 0:
            after1, after2 = text[i1 + len(a1):], text[i2 + len(a2):]
            marker = os.path.commonprefix([after1, after2]).rstrip()
        else:
            log.warning("chat template transforms the probe answers; no end-of-turn marker is labelled")
    except TokenizationError as e:
        log.warning("could not probe the chat template for its end-of-turn marker: %s", e)
    try:
        _marker_cache.setdefault(tokenizer, {})[key] = marker
    except TypeError:
        pass
    return marker


def _locate(text: str, content: str, cursor: int) -> tuple[int, int] | None:
    """First occurrence of ``content`` (or of it stripped) at or after ``cursor``."""
    for variant in (content, content.strip()):
        if not variant:
            continue
        pos = text.find(variant, cursor)
        if pos >= 0:
            return pos, pos + len(variant)
    return None


_ANCHOR_CHARS = 24
_WS = re.compile(r"\s*")


def _anchored(text: str, content: str, cursor: int, anchor: str) -> tuple[int, int] | None:
    """The first occurrence of the stripped content at or after ``cursor`` that the template's
    own text (``anchor``, from the sentinel rendering) immediately precedes, possibly with the
    content's leading whitespace in between. This tells whether the template kept or stripped
    the content's edge whitespace, and skips look-alike text elsewhere in the conversation."""
    core = content.strip()
    if not core or not anchor:
        return None
    lead = content[:len(content) - len(content.lstrip())]
    trail = content[len(content.rstrip()):]
    pos = text.find(core, cursor)
    while pos >= 0:
        start = None
        ls = pos - len(lead)
        if lead and ls >= cursor and text.startswith(lead, ls) and text.endswith(anchor, 0, ls):
            start = ls
        elif text.endswith(anchor, 0, pos):
            start = pos
        if start is not None and start >= cursor:
            end = pos + len(core)
            if trail and text.startswith(trail, end):
                end += len(trail)
            return start, end
        pos = text.find(core, pos + 1)
    return None


def _locate_assistant(text: str, content: str, cursor: int, anchor: str = "") -> tuple[int, int] | None:
    loc = _anchored(text, content, cursor, anchor) or _locate(text, content, cursor)
    if loc is not None:
        return loc
    # Templates that split a reasoning block out of the content (Qwen3) render the answer after
    # the last </think>, and the reasoning (re-wrapped in <think>...</think>) only for some turns.
    if "</think>" in content:
        answer = content.split("</think>")[-1].strip()
        loc = _locate(text, answer, cursor) if answer else None
        if loc is not None:
            think = text.rfind("<think>", cursor, loc[0])
            return (think if think >= 0 else loc[0]), loc[1]
    return None


def _skeleton(tokenizer, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]] | None:
    """The conversation rendered with each assistant content replaced by a unique sentinel, and
    the (start, end) of each sentinel in it; None when the template refuses or duplicates one."""
    idx = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    sentinels = {i: f"\ue000{n}\ue001" for n, i in enumerate(idx)}
    probe = [dict(m, content=sentinels[i]) if i in sentinels else dict(m) for i, m in enumerate(messages)]
    try:
        skeleton = render_chat(tokenizer, probe)
    except TokenizationError:
        return None
    where: list[tuple[int, int]] = []
    pos = 0
    for i in idx:
        s = sentinels[i]
        at = skeleton.find(s, pos)
        if at < 0 or skeleton.find(s, at + len(s)) >= 0:
            return None
        where.append((at, at + len(s)))
        pos = at + len(s)
    return skeleton, where


def _spans_by_sentinel(messages: Sequence[dict], text: str, skeleton: str,
                       where: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
    """Content spans when substituting the real contents into the skeleton reproduces the real
    rendering (the template copies contents verbatim); None otherwise."""
    contents = [m["content"] for m in messages if m["role"] == "assistant"]
    pieces: list[str] = []
    spans: list[tuple[int, int]] = []
    pos = out_len = 0
    for (at, after), content in zip(where, contents):
        pieces += [skeleton[pos:at], content]
        out_len += at - pos
        spans.append((out_len, out_len + len(content)))
        out_len += len(content)
        pos = after
    pieces.append(skeleton[pos:])
    return spans if "".join(pieces) == text else None


def _spans_by_search(messages: Sequence[dict], text: str, anchors: Sequence[str] = ()) -> list[tuple[int, int]]:
    """Content spans of the assistant messages found by forward search (step 2); ``anchors[k]``
    is the template text right before assistant message k in the skeleton (may be empty)."""
    cursor = 0
    spans: list[tuple[int, int]] = []
    k = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            loc = _locate(text, m["content"], cursor)
            if loc is not None:
                cursor = loc[1]
            continue
        anchor = anchors[k] if k < len(anchors) else ""
        k += 1
        loc = _locate_assistant(text, m["content"], cursor, anchor)
        if loc is None:
            raise TokenizationError("template_mismatch",
                                    f"assistant message {i} was not found in the rendered chat template")
        spans.append(loc)
        cursor = loc[1]
    return spans


def assistant_spans(tokenizer, messages: Sequence[dict], text: str | None = None
                    ) -> tuple[str, list[tuple[int, int]]]:
    """(rendered text, [(start, end) per assistant message]) where each span covers the content
    plus the end-of-turn marker that follows it (whitespace between them included)."""
    if text is None:
        text = render_chat(tokenizer, messages)
    sk = _skeleton(tokenizer, messages)
    spans = _spans_by_sentinel(messages, text, *sk) if sk is not None else None
    if spans is None:
        anchors: list[str] = []
        if sk is not None:
            skeleton, where = sk
            prev = 0
            for at, after in where:
                anchors.append(skeleton[max(prev, at - _ANCHOR_CHARS):at])
                prev = after
        spans = _spans_by_search(messages, text, anchors)
    marker = end_of_turn_marker(tokenizer)
    out = []
    for start, end in spans:
        if marker:
            gap = _WS.match(text, end).end() - end  # type: ignore[union-attr]
            if text.startswith(marker, end):
                end += len(marker)
            elif text.startswith(marker, end + gap):
                end += gap + len(marker)
        out.append((start, end))
    return text, out


def _label_spans(ids: Sequence[int], offsets: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]) -> list[int]:
    """Labels = ids on tokens whose character span overlaps a labelled span (an empty-span
    token counts when it sits inside one), -100 elsewhere. Offsets of a fast tokenizer are in
    text order, so each span's tokens are found by bisection."""
    labels = [IGNORE_INDEX] * len(ids)
    if not spans:
        return labels
    starts = [o[0] for o in offsets]
    ends = [o[1] for o in offsets]
    for a, b in spans:
        lo = min(bisect.bisect_right(ends, a), bisect.bisect_left(starts, a))
        hi = bisect.bisect_left(starts, b)
        labels[lo:hi] = ids[lo:hi]
    return labels


# ---------------------------------------------------------------- public API
def tokenize_example(tokenizer, record: dict, *, max_length: int, loss_on: str = "assistant",
                     truncate: bool = True) -> dict:
    """Tokenize one normalized record (``trainer.data.records``).

    Returns ``input_ids``, ``labels`` (-100 where no loss), ``length`` (tokens kept),
    ``full_length`` (before truncation), ``overlong`` (full_length > max_length) and
    ``n_labels`` (labelled tokens kept). ``loss_on``: "assistant" (every assistant turn),
    "last_assistant", or "all". Text records get a loss on every token (and an EOS appended when
    the tokenizer has one, so the model learns where a document ends)."""
    if loss_on not in LOSS_ON:
        raise ValueError(f"loss_on must be one of {LOSS_ON}, got {loss_on!r}")
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    if is_chat(record):
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        if loss_on == "all":
            text, spans = render_chat(tokenizer, messages), []
        else:
            text, spans = assistant_spans(tokenizer, messages)
            if loss_on == "last_assistant":
                spans = spans[-1:]
        if not getattr(tokenizer, "is_fast", True):
            raise TokenizationError("slow_tokenizer", "offset mappings need a fast tokenizer")
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = list(ids) if loss_on == "all" else _label_spans(ids, enc["offset_mapping"], spans)
    else:
        ids = list(tokenizer(record["text"], add_special_tokens=True)["input_ids"])
        eos = getattr(tokenizer, "eos_token_id", None)
        if eos is not None and (not ids or ids[-1] != eos):
            ids.append(eos)
        labels = list(ids)
    full = len(ids)
    overlong = full > max_length
    if overlong and truncate:
        ids, labels = ids[:max_length], labels[:max_length]
    return {"input_ids": ids, "labels": labels, "length": len(ids), "full_length": full,
            "overlong": overlong, "n_labels": sum(1 for x in labels if x != IGNORE_INDEX)}


class TokenizedDataset(Dataset):
    """Pre-tokenized examples. ``lengths`` feeds the length-grouped batch sampler;
    ``source_indices[i]`` is the position in the input records of item i; ``skipped`` lists
    ``(record index, reason)`` for records left out (over-long under policy drop, or nothing
    left to learn after truncation)."""

    def __init__(self, items: list[dict], source_indices: list[int] | None = None,
                 skipped: list[tuple[int, str]] | None = None):
        self.items = items
        self.lengths = [len(it["input_ids"]) for it in items]
        self.source_indices = source_indices if source_indices is not None else list(range(len(items)))
        self.skipped = skipped or []

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        return {"input_ids": it["input_ids"], "labels": it["labels"]}

    @property
    def n_tokens(self) -> int:
        return sum(self.lengths)


def build_dataset(tokenizer, records: Iterable[dict], *, max_length: int, loss_on: str = "assistant",
                  overlong_policy: str = "truncate") -> TokenizedDataset:
    """Tokenize normalized records. ``overlong_policy``: truncate (keep the first max_length
    tokens), drop (leave the record out), fail (raise ``DatasetError``). A record whose labels
    are all -100 after truncation is left out (it would teach nothing, and a batch of such rows
    has an undefined loss); check ``len(ds)``: it can be 0. Raises ``DatasetError`` (with the record
    index) for a record the template cannot render and, under policy fail, an over-long one."""
    if overlong_policy not in OVERLONG_POLICIES:
        raise ValueError(f"overlong_policy must be one of {OVERLONG_POLICIES}, got {overlong_policy!r}")
    items: list[dict] = []
    src: list[int] = []
    skipped: list[tuple[int, str]] = []
    for i, rec in enumerate(records):
        try:
            t = tokenize_example(tokenizer, rec, max_length=max_length, loss_on=loss_on, truncate=True)
        except TokenizationError as e:
            raise DatasetError(e.reason, e.message, i) from e
        if t["overlong"]:
            if overlong_policy == "fail":
                raise DatasetError("overlong", f"{t['full_length']} tokens > max_length {max_length}", i)
            if overlong_policy == "drop":
                skipped.append((i, "overlong"))
                continue
        if t["n_labels"] == 0:
            skipped.append((i, "no_labels"))
            continue
        items.append(t)
        src.append(i)
    return TokenizedDataset(items, src, skipped)


def decode_labelled(tokenizer, input_ids: Sequence[int], labels: Sequence[int]) -> list[str]:
    """The labelled tokens decoded as one string per contiguous run (tests and debugging)."""
    runs: list[list[int]] = []
    prev = False
    for tok, lab in zip(input_ids, labels):
        on = lab != IGNORE_INDEX
        if on:
            if not prev:
                runs.append([])
            runs[-1].append(tok)
        prev = on
    return [tokenizer.decode(r, skip_special_tokens=False, clean_up_tokenization_spaces=False) for r in runs]


__all__ = ["IGNORE_INDEX", "LOSS_ON", "TokenizationError", "DatasetError", "render_chat",
           "end_of_turn_marker", "assistant_spans", "tokenize_example", "TokenizedDataset",
           "build_dataset", "decode_labelled"]
