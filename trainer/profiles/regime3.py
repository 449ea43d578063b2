"""``regime3``: symbolic answers, as one canonical s-expression between markers.

Every assistant turn ends with ``<<ANS_START>> (op a b) <<ANS_END>>``: text before the start marker
(working) is kept, on its own line; nothing may follow the end marker (the model must stop there).
A reply without markers must be exactly one expression, which gets wrapped.

Grammar (whitespace = any Unicode whitespace, between tokens only)::

    answer := list                       -- the answer is always a list form
    list   := "(" op expr+ ")"           -- an operator and at least one argument
    op     := symbol
    expr   := list | atom                -- nesting allowed, at most ``max_depth`` deep
    atom   := number | symbol | string
    number := [+-]? (digits ["." digits*] | "." digits) ([eE] [+-]? digits)?
    symbol := a run of letters, digits, ``_ + - * / < > = ! ? % & | ^ ~ . : ' # @ $`` not starting
              with a digit and not a number (``+``, ``-``, ``>=``, ``x1``, ``all_cats``)
    string := '"' (any char but '"' and '\\', or '\\"', '\\\\')* '"'

Canonical form: ``(op arg1 arg2 ...)`` with exactly one space between items and none inside the
parentheses; symbols (operators included) lower-cased; numbers by value (``+007`` -> ``7``,
``2.50`` -> ``2.5``, ``2.0`` -> ``2``, ``1e3`` -> ``1000``, ``-0`` -> ``0``; at most 64 digits
before the point); strings keep their text exactly, re-escaped. Atoms that contain ``<<`` or ``>>``
are rejected (they would read as markers).

The stop sequence is ``<<ANS_END>>`` and ``postprocess`` KEEPS it (it drops only what follows): the
reply stays self-describing, and ``extract_answer`` can tell a finished answer from a cut-off one.
``extract_answer`` returns the canonical form of the last ``<<ANS_START>>`` before the end marker (a
reply that lacks only the end marker still counts when its expression parses), else None.

Options: ``max_depth`` (int), ``post_stop_base_penalty``, ``post_stop_growth``,
``post_stop_max_penalty``, ``eos_reward`` (numbers >= 0; 0 disables that processor).
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from trainer.profiles import register_profile
from trainer.profiles.base import DataProfile

ANS_START = "<<ANS_START>>"
ANS_END = "<<ANS_END>>"
DEFAULT_MAX_DEPTH = 32
MAX_INT_DIGITS = 64

_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_SYMBOL_CHARS = "_+-*/<>=!?%&|^~.:'#@$"


class SExprError(ValueError):
    """An answer that does not parse; the message says where and why."""


def _is_symbol(tok: str) -> bool:
    return (not tok[0].isdigit()) and all(c.isalnum() or c in _SYMBOL_CHARS for c in tok)


def _canon_number(tok: str) -> str:
    try:
        d = Decimal(tok)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
        raise SExprError(f"bad number {tok!r}")
    if d.is_zero():
        return "0"
    if d.adjusted() >= MAX_INT_DIGITS:
        raise SExprError(f"number {tok!r} is too large (more than {MAX_INT_DIGITS} digits)")
    if d.adjusted() < -MAX_INT_DIGITS:
        raise SExprError(f"number {tok!r} is too small (more than {MAX_INT_DIGITS} leading zeros)")
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def _tokens(text: str):
    """(kind, text, column) tokens; kind is '(' ')' 'atom' or 'string' (text = the canonical form)."""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
        elif c in "()":
            yield c, c, i + 1
            i += 1
        elif c == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\":
                    if j + 1 >= n or text[j + 1] not in '"\\':
                        raise SExprError(f"bad escape in string at column {j + 1} (only \\\" and \\\\)")
                    j += 1
                buf.append(text[j])
                j += 1
            if j >= n:
                raise SExprError(f"unterminated string starting at column {i + 1}")
            body = "".join(buf).replace("\\", "\\\\").replace('"', '\\"')
            yield "string", f'"{body}"', i + 1
            i = j + 1
        else:
            j = i
            while j < n and not text[j].isspace() and text[j] not in '()"':
                j += 1
            yield "atom", text[i:j], i + 1
            i = j


def _atom(tok: str, col: int) -> str:
    if "<<" in tok or ">>" in tok:
        raise SExprError(f"atom {tok!r} at column {col} looks like a marker")
    if _NUMBER_RE.fullmatch(tok):
        return _canon_number(tok)
    if _is_symbol(tok):
        return tok.lower()
    raise SExprError(f"invalid atom {tok!r} at column {col} (not a number, symbol or string)")


def canonicalize(text: str, max_depth: int = DEFAULT_MAX_DEPTH) -> str:
    """The canonical form of the answer expression ``text``; ``SExprError`` says why it does not parse."""
    if not isinstance(text, str) or not text.strip():
        raise SExprError("empty answer")
    toks = list(_tokens(text))
    if toks[0][0] != "(":
        kind, tok, col = toks[0]
        if kind == ")":
            raise SExprError(f"unexpected ')' at column {col}")
        raise SExprError(f"the answer must be a list form '(op arg ...)', got the bare atom {tok!r}")
    # stack of (items, column of "(")
    stack: list[tuple[list[str], int]] = []
    result: str | None = None
    for kind, tok, col in toks:
        if result is not None:
            raise SExprError(f"unexpected text after the expression at column {col}: {tok!r}")
        if kind == "(":
            if len(stack) >= max_depth:
                raise SExprError(f"nesting deeper than {max_depth} at column {col}")
            stack.append(([], col))
            continue
        if kind == ")":
            if not stack:
                raise SExprError(f"unexpected ')' at column {col}")
            items, start = stack.pop()
            if not items:
                raise SExprError(f"empty list '()' at column {start}")
            if len(items) < 2:
                raise SExprError(f"'({items[0]})' at column {start} needs at least one argument")
            form = "(" + " ".join(items) + ")"
            if stack:
                if not stack[-1][0]:
                    raise SExprError(f"operator at column {start} must be a symbol; got the list {form!r}")
                stack[-1][0].append(form)
            else:
                result = form
            continue
        items = stack[-1][0]
        if not items:  # operator position
            if kind == "string" or not (_is_symbol(tok) and not _NUMBER_RE.fullmatch(tok)):
                raise SExprError(f"operator at column {col} must be a symbol; got {tok!r}")
            items.append(_atom(tok, col))
        else:
            items.append(tok if kind == "string" else _atom(tok, col))
    if stack:
        raise SExprError(f"unbalanced parentheses: missing ')' for '(' at column {stack[-1][1]}")
    assert result is not None
    return result


def split_reply(content: str) -> tuple[str, str, str, bool]:
    """``(before, expression text, after, had_markers)`` of an assistant reply; SExprError for marker
    misuse (an end without a start, a start without an end, more than one answer)."""
    starts = content.count(ANS_START)
    ends = content.count(ANS_END)
    if starts == 0 and ends == 0:
        return "", content, "", False
    if starts > 1 or ends > 1:
        raise SExprError(f"more than one {ANS_START}/{ANS_END} pair: a reply holds exactly one answer")
    if starts == 0:
        raise SExprError(f"{ANS_END} without {ANS_START}")
    if ends == 0:
        raise SExprError(f"{ANS_START} without {ANS_END}")
    i = content.index(ANS_START)
    j = content.index(ANS_END)
    if j < i:
        raise SExprError(f"{ANS_END} comes before {ANS_START}")
    return content[:i], content[i + len(ANS_START):j], content[j + len(ANS_END):], True


def wrap(canonical: str) -> str:
    return f"{ANS_START} {canonical} {ANS_END}"


@register_profile
class Regime3Profile(DataProfile):
    name = "regime3"
    description = ("Answers are one canonical s-expression '(op a b)' between <<ANS_START>> and "
                   "<<ANS_END>>; generation stops at <<ANS_END>>.")
    default_system_prompt = ("Answer with one symbolic expression (op a b), written as "
                             "<<ANS_START>> (op a b) <<ANS_END>>. Today's date is {date}.")
    stop_sequences: list[str] = [ANS_END]
    option_defaults = {
        "max_depth": DEFAULT_MAX_DEPTH,
        "post_stop_base_penalty": 10.0,
        "post_stop_growth": 5.0,
        "post_stop_max_penalty": 100.0,
        "eos_reward": 10.0,
    }

    def check_options(self) -> None:
        if not 1 <= self.options["max_depth"] <= 1000:
            raise ValueError(f"profile 'regime3': option 'max_depth' must be 1..1000; "
                             f"got {self.options['max_depth']!r}")
        for key in ("post_stop_base_penalty", "post_stop_growth", "post_stop_max_penalty", "eos_reward"):
            v = self.options[key]
            if not (v >= 0 and v != float("inf")):
                raise ValueError(f"profile 'regime3': option '{key}' must be a finite number >= 0; got {v!r}")

    def canonicalize(self, text: str) -> str:
        return canonicalize(text, self.options["max_depth"])

    def canonical_reply(self, content: str) -> tuple[str, str]:
        """(new reply text, canonical answer); SExprError when the reply cannot be used."""
        before, expr, after, had_markers = split_reply(content)
        if after.strip():
            raise SExprError(f"text after {ANS_END}: {after.strip()[:40]!r} (the reply must end at the marker)")
        try:
            canon = self.canonicalize(expr)
        except SExprError as e:
            if had_markers:
                raise
            raise SExprError(f"no {ANS_START} ... {ANS_END} markers and the whole reply is not one "
                             f"expression: {e}") from None
        head = before.strip()
        return (head + "\n" if head else "") + wrap(canon), canon

    def validate_messages(self, messages: list[dict]) -> list[str]:
        problems = []
        for i, m in enumerate(messages):
            if m["role"] == "assistant":
                try:
                    self.canonical_reply(m["content"])
                except SExprError as e:
                    problems.append(f"messages[{i}] (assistant): answer does not parse: {e}")
        return problems

    def transform_messages(self, messages: list[dict], index: int, metadata: dict) -> list[dict]:
        out, answers = [], []
        for m in messages:
            if m["role"] == "assistant":
                content, canon = self.canonical_reply(m["content"])
                answers.append(canon)
                m = {**m, "content": content}
            out.append(m)
        metadata["regime3"] = {"answers": answers}
        return out

    def postprocess(self, text: str) -> str:
        """Everything up to and INCLUDING the first ``<<ANS_END>>`` (what follows is dropped)."""
        j = text.find(ANS_END)
        return text if j == -1 else text[:j + len(ANS_END)]

    def extract_answer(self, text: str) -> str | None:
        body = self.postprocess(text)
        j = body.find(ANS_END)
        region = body if j == -1 else body[:j]
        i = region.rfind(ANS_START)
        if i == -1:
            return None
        try:
            return self.canonicalize(region[i + len(ANS_START):])
        except SExprError:
            return None

    def normalize_answer(self, answer: str) -> str:
        """The canonical form when ``answer`` (markers allowed) parses; else the base text normalization."""
        text = answer or ""
        try:
            _, expr, after, had = split_reply(text)
            if not had or not after.strip():
                return self.canonicalize(expr)
        except SExprError:
            pass
        return super().normalize_answer(text)

    def build_logits_processors(self, tokenizer: Any):
        from transformers import LogitsProcessorList
        return LogitsProcessorList(self.stop_signal_processors(tokenizer))
