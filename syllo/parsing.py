"""Reading syllo text back: a statement in any of its phrasings (``parse_statement``), and the
canonical key of a puzzle found in a prompt (``parse_core``; the validation-suite fingerprints
compare these keys)."""
from __future__ import annotations

import hashlib
import re
from typing import Sequence

from syllo.logic import Stmt
from syllo.model import PHRASES


def canonical_key(premises: Sequence[Stmt], question: str) -> str:
    """A puzzle's identity: its premises as a set (order and phrasing do not matter) and its
    question (``judge:<q>|<s>|<p>`` or ``derive:<s>|<p>``)."""
    return "P:" + ";".join(sorted("|".join(st.as_list()) for st in premises)) + "#Q:" + question


def key_fingerprint(key: str) -> str:
    """The fingerprint of a canonical key: ``k:`` + sha256 (the leak guard and the generators'
    record of what they emitted compare these)."""
    return "k:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


_WORD = r"([a-z][a-z\-]*)"
_PARSERS: list[tuple[str, re.Pattern]] = []
for _q, _variants in PHRASES.items():
    for _v in _variants:
        _rx = re.escape(_v.lower()).replace(re.escape("{s}"), _WORD).replace(re.escape("{p}"), _WORD)
        _PARSERS.append((_q, re.compile("^" + _rx + "$")))
# longer, more specific phrasings first ("some x are not y" before "some x are y")
_PARSERS.sort(key=lambda qp: -len(qp[1].pattern))


def parse_statement(text: str) -> Stmt | None:
    t = " ".join(text.strip().rstrip(".?!").lower().split())
    for q, rx in _PARSERS:
        m = rx.match(t)
        if m:
            return Stmt(q, m.group(1), m.group(2))
    return None


_PREMISE_LINE = re.compile(r"^\s*\d+\.\s*(.+?)\s*$")
_JUDGE_Q = re.compile(r"^\s*question:\s*does it follow that (.+?)\?\s*$", re.I)
_DERIVE_Q = re.compile(r"^\s*question:\s*what follows with ([a-z][a-z\-]*) as subject and ([a-z][a-z\-]*) "
                       r"as predicate\?\s*$", re.I)


def parse_core(text: str) -> str | None:
    """The canonical key (as ``canonical_key_of``) of a syllo prompt found in ``text``, or None."""
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.strip().lower() == "premises:")
    except StopIteration:
        return None
    prem: list[Stmt] = []
    q: str | None = None
    for ln in lines[start + 1:]:
        m = _PREMISE_LINE.match(ln)
        if m:
            st = parse_statement(m.group(1))
            if st is None:
                return None
            prem.append(st)
            continue
        mj, md = _JUDGE_Q.match(ln), _DERIVE_Q.match(ln)
        if mj:
            st = parse_statement(mj.group(1))
            if st is None:
                return None
            q = "judge:" + "|".join(st.as_list())
        elif md:
            q = f"derive:{md.group(1).lower()}|{md.group(2).lower()}"
        break
    if not prem or q is None:
        return None
    return canonical_key(prem, q)
