"""Per-record checks of the data analysis (``trainer.data.analysis``): encoding anomalies,
syllo question templates and answers, and the counting helpers (percentiles, histogram).

Anomaly kinds (``ANOMALY_KINDS``), found in decoded message contents:
  control_char     a C0/C1 control character other than tab, newline, carriage return
  zero_width       U+200B..U+200D, U+2060 or U+FEFF inside text (invisible, splits tokens)
  lone_surrogate   U+D800..U+DFFF (a broken \\ud83d-style escape; not encodable as UTF-8)
  replacement_char U+FFFD (the text went through a lossy decode before it reached us)
  mojibake         UTF-8 read as Latin-1/cp1252 ("Ã©", "â€™"): a heuristic, like ftfy's first test
  bom              a byte order mark at the start of the file (tolerated, but worth knowing)
  crlf             Windows line endings (tolerated)
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Iterable

ANOMALY_KINDS = ("control_char", "zero_width", "lone_surrogate", "replacement_char", "mojibake", "bom", "crlf")
_SUSPECT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]|[\u200b-\u200d\u2060\ufeff]|[\ud800-\udfff]|\ufffd")
_MOJIBAKE = re.compile("Ã[\u0080-\u00bf]|â€|Â[\u00a0-\u00bf]")


def _kind_of(ch: str) -> str:
    o = ord(ch)
    if o == 0xFFFD:
        return "replacement_char"
    if 0xD800 <= o <= 0xDFFF:
        return "lone_surrogate"
    if o in (0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF):
        return "zero_width"
    return "control_char"


def text_anomalies(text: str) -> list[tuple[str, str]]:
    """(kind, detail) for each kind of anomaly in ``text`` (one entry per kind; the detail names
    the first offending character and its offset)."""
    found: dict[str, str] = {}
    for m in _SUSPECT.finditer(text):
        kind = _kind_of(m.group())
        found.setdefault(kind, f"U+{ord(m.group()):04X} at character {m.start()}")
    m = _MOJIBAKE.search(text)
    if m:
        found["mojibake"] = f"{m.group()!r} at character {m.start()}"
    return list(found.items())


def record_texts(record: dict) -> Iterable[tuple[str, str]]:
    """(where, text) of every string a normalized record trains on."""
    if "messages" in record:
        for i, m in enumerate(record["messages"]):
            yield f"messages[{i}].content", m["content"]
    else:
        yield "text", record["text"]


# ---------------------------------------------------------------- syllo
def syllo_template(meta: dict) -> tuple[str, str] | None:
    """(question template, answer class) of a syllo record's metadata, or None when the metadata
    lacks what is needed: the task package's own reading (``syllo.rendering.question_template``,
    ``syllo.analysis.answer_class``), e.g. ("Does it follow that no X are Y?", "invalid").
    Answers that depend on the template are what a model can learn from wording alone."""
    from syllo.analysis import answer_class
    from syllo.puzzles import puzzle_from_metadata
    from syllo.rendering import question_template
    answer = meta.get("answer")
    if not isinstance(answer, str):
        return None
    try:
        pz = puzzle_from_metadata(meta)
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    terms = (pz.conclusion.s, pz.conclusion.p) if pz.kind == "judge" and pz.conclusion else (pz.subject, pz.predicate)
    return question_template(pz), answer_class(answer, terms)


def answer_balance(templates: dict[str, Counter]) -> dict:
    """Per template: n, answers, majority answer and its share; overall: the accuracy of always
    giving each template's majority answer (``wording_guess_accuracy``) next to always giving the
    overall majority answer per question kind (``majority_baseline``). A large gap means the
    wording predicts the answer."""
    rows = []
    total = guess = 0
    for tpl, answers in sorted(templates.items(), key=lambda kv: -sum(kv[1].values())):
        n = sum(answers.values())
        top, top_n = answers.most_common(1)[0]
        rows.append({"template": tpl, "n": n, "answers": dict(answers.most_common()), "majority": top,
                     "majority_share": round(top_n / n, 4)})
        total += n
        guess += top_n
    by_kind: dict[bool, Counter] = {}
    for tpl, answers in templates.items():
        by_kind.setdefault(tpl.startswith("What follows"), Counter()).update(answers)
    base = sum(c.most_common(1)[0][1] for c in by_kind.values())
    return {"templates": rows,
            "wording_guess_accuracy": round(guess / total, 4) if total else None,
            "majority_baseline": round(base / total, 4) if total else None}


# ---------------------------------------------------------------- counting
def percentiles(counts: Counter, qs: Iterable[int] = (50, 90, 95, 99)) -> dict:
    """min, nearest-rank percentiles, max and mean of a Counter of integer values (empty: {})."""
    n = sum(counts.values())
    if not n:
        return {}
    values = sorted(counts)
    out: dict = {"min": values[0]}
    targets = sorted((q, max(1, math.ceil(q / 100 * n))) for q in qs)
    cum, ti = 0, 0
    for v in values:
        cum += counts[v]
        while ti < len(targets) and cum >= targets[ti][1]:
            out[f"p{targets[ti][0]}"] = v
            ti += 1
    out["max"] = values[-1]
    out["mean"] = round(sum(v * c for v, c in counts.items()) / n, 2)
    return out


def histogram(counts: Counter, n_bins: int = 20, upper: int | None = None) -> dict:
    """Equal-width integer bins over [min, min(max, upper)]: ``{"edges": [e0, ..., eN], "counts":
    [...], "overflow": k, "overflow_max": m}``, bin i holding values in [edges[i], edges[i+1]) and
    ``overflow`` counting the values above ``upper`` (so one outlier does not squash the bins)."""
    if not counts:
        return {"edges": [], "counts": [], "overflow": 0, "overflow_max": None}
    lo, hi = min(counts), max(counts)
    top = hi if upper is None else max(lo, min(hi, upper))
    width = max(1, math.ceil((top - lo + 1) / n_bins))
    n = max(1, math.ceil((top - lo + 1) / width))
    edges = [lo + i * width for i in range(n + 1)]
    bins = [0] * n
    overflow = 0
    for v, c in counts.items():
        if v >= edges[-1]:
            overflow += c
        else:
            bins[(v - lo) // width] += c
    return {"edges": edges, "counts": bins, "overflow": overflow, "overflow_max": hi if overflow else None}


__all__ = ["ANOMALY_KINDS", "text_anomalies", "record_texts", "syllo_template", "answer_balance",
           "percentiles", "histogram"]
