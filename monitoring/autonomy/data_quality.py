"""Quality checks of training data, line by line: what the self-correction loop flags.

* ``wrong_answer``: a syllo puzzle whose answer is computable (the prompt is parsed back with
  ``syllo.parsing.parse_core``, so it does not trust the record's metadata) and whose assistant
  answer differs from the one ``syllo.logic`` computes. A derive question where several statements
  follow (or the premises contradict) has no single right answer and is not judged.
* ``duplicate``: the same conversation as an earlier line (exact, after JSON normalisation).
* ``format_drift``: not a JSON object, a record the configured profile rejects
  (``DataProfile.validate_example``), or a syllo record rendered for another profile than the
  one training uses.
"""
from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Iterable, Iterator

from foundation.json_lines import numbered_json_lines
from syllo.logic import QUANTIFIERS, Stmt, entails
from syllo.model import NOTHING
from syllo.parsing import parse_core

_SEXPR = re.compile(r"\(\s*(verdict|all|no|some|some_not|none)\s+([a-z][a-z\-]*)(?:\s+([a-z][a-z\-]*))?\s*\)")


def computed_answer(prompt: str) -> str | None:
    """The right plain answer of the syllo puzzle in ``prompt`` (None when there is none or several)."""
    key = parse_core(prompt)
    if key is None:
        return None
    prem_part, _, question = key[2:].partition("#Q:")
    try:
        premises = [Stmt(*x.split("|")) for x in prem_part.split(";") if x]
        if question.startswith("judge:"):
            return "valid" if entails(premises, Stmt(*question[6:].split("|"))) else "invalid"
        s, p = question[7:].split("|")
        forms = [Stmt(q, s, p) for q in QUANTIFIERS if entails(premises, Stmt(q, s, p))]
    except (ValueError, TypeError):  # malformed key, or more terms than the decision procedure takes
        return None
    if not forms:
        return NOTHING
    return forms[0].text() if len(forms) == 1 else None


def plain_form(answer: str | None) -> str | None:
    """A regime3 s-expression answer in plain words; other answers unchanged."""
    if answer is None:
        return None
    m = _SEXPR.search(answer)
    if not m:
        return answer
    op, a, b = m.groups()
    if op == "verdict":
        return a
    if op == "none":
        return NOTHING
    return Stmt(op, a, b or "").text() if b else answer


def _last(messages: list, role: str) -> str | None:
    return next((m.get("content") for m in reversed(messages)
                 if isinstance(m, dict) and m.get("role") == role and isinstance(m.get("content"), str)), None)


def check_records(lines: Iterable[str], profile: Any, accepted_profiles: set[str]) -> Iterator[dict]:
    """Flags for the JSONL ``lines``: ``{"line", "reason", "detail", "record"}`` (1-based lines)."""
    seen: dict[str, int] = {}
    for lineno, line, rec, error in numbered_json_lines(lines):
        if error is not None:
            yield {"line": lineno, "reason": "format_drift", "detail": f"not JSON: {error}", "record": line[:2000]}
            continue
        if not isinstance(rec, dict):
            yield {"line": lineno, "reason": "format_drift", "detail": "not a JSON object", "record": rec}
            continue
        digest = hashlib.sha256(json.dumps(rec.get("messages", rec), sort_keys=True,
                                           ensure_ascii=False).encode()).hexdigest()
        if digest in seen:
            yield {"line": lineno, "reason": "duplicate", "detail": f"same conversation as line {seen[digest]}",
                   "record": rec}
            continue
        seen[digest] = lineno
        problems = profile.validate_example(rec)
        meta = rec.get("metadata") if isinstance(rec.get("metadata"), dict) else {}
        if meta.get("source") == "syllo" and meta.get("profile") not in (None, *accepted_profiles):
            problems = [*problems, f"rendered for profile {meta.get('profile')!r}; training uses "
                                   f"{sorted(accepted_profiles)}"]
        if problems:
            yield {"line": lineno, "reason": "format_drift", "detail": "; ".join(problems), "record": rec}
            continue
        msgs = rec.get("messages") if isinstance(rec.get("messages"), list) else []
        prompt, reply = _last(msgs, "user"), _last(msgs, "assistant")
        if prompt is None or reply is None:
            continue
        right = computed_answer(prompt)
        if right is None:
            continue
        raw = profile.extract_answer(reply)
        got = plain_form(profile.normalize_answer(plain_form(raw))) if raw is not None else None
        if got != profile.normalize_answer(right):
            yield {"line": lineno, "reason": "wrong_answer",
                   "detail": f"answered {got!r}, the premises give {right!r}",
                   "answered": got, "computed": right, "record": rec}
