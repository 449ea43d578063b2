"""Does the question's wording alone predict the answer? The wording-only predictor.

The predictor sees only the question line of the prompt with its terms blanked ("Does it follow
that some X are not Y?") and answers the majority answer of that template. It is fitted and scored
on the same records (the most favourable case for it), so on a balanced set it scores chance and
any excess is wording bias a model could learn instead of reasoning.

Answer classes: ``valid``/``invalid`` for a judge question; for a derive question the answer's
form with its terms blanked ("all X are Y", ..., "nothing follows"). Chance is 0.5: every template
has two balanced outcomes (follows / does not), which is what ``syllo.balance`` makes.
"""
from __future__ import annotations

import re
from collections import Counter, defaultdict
from typing import Any, Iterable

from syllo.model import NOTHING
from syllo.parsing import parse_statement
from syllo.rendering import blank_terms

CHANCE = 0.5
_JUDGE = re.compile(r"^\s*question:\s*does it follow that (.+?)\?\s*$", re.I)
_DERIVE = re.compile(r"^\s*question:\s*what follows with ([a-z][a-z\-]*) as subject and ([a-z][a-z\-]*) "
                     r"as predicate\?\s*$", re.I)


def _user_text(record: dict) -> str:
    for m in reversed(record.get("messages") or []):
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return ""


def template_of_text(text: str) -> tuple[str, tuple[str, str]] | None:
    """(the question line with its terms blanked, (subject, predicate)) of a syllo prompt, or None."""
    for line in text.splitlines():
        mj, md = _JUDGE.match(line), _DERIVE.match(line)
        if mj:
            st = parse_statement(mj.group(1))
            if st is None:
                return None
            s, p = st.s, st.p
        elif md:
            s, p = md.group(1).lower(), md.group(2).lower()
        else:
            continue
        return blank_terms(line.strip().removeprefix("Question: "), s, p), (s, p)
    return None


def answer_class(answer: str, terms: tuple[str, str]) -> str:
    a = " ".join(answer.strip().lower().rstrip(".").split())
    if a in ("valid", "invalid", NOTHING):
        return a
    st = parse_statement(a)
    return blank_terms(a, *terms) if st is not None else a


def wording_only_scores(records: Iterable[dict]) -> dict[str, Any]:
    """Per difficulty (and ``all``): ``{accuracy, n, n_templates, chance, excess}`` of the in-sample
    majority-per-template predictor. Records that are not syllo prompts are skipped."""
    cells: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
    for rec in records:
        meta = rec.get("metadata") or {}
        tpl = template_of_text(_user_text(rec))
        if tpl is None or "answer" not in meta:
            continue
        template, terms = tpl
        cls = answer_class(str(meta["answer"]), terms)
        for level in (str(meta.get("difficulty", "unknown")), "all"):
            cells[level][template][cls] += 1
    out: dict[str, Any] = {}
    for level, by_tpl in cells.items():
        n = sum(sum(c.values()) for c in by_tpl.values())
        right = sum(c.most_common(1)[0][1] for c in by_tpl.values())
        acc = right / n
        out[level] = {"accuracy": round(acc, 4), "n": n, "n_templates": len(by_tpl), "chance": CHANCE,
                      "excess": round(acc - CHANCE, 4)}
    return out
