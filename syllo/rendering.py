"""Syllo puzzles as text: the prompt (premises, question, instruction) and the answer in each
profile's form (plain words, or regime3's s-expressions between answer markers), plus the puzzle's
identity (``canonical_key_of``, ``puzzle_id``)."""
from __future__ import annotations

import hashlib
import re

from syllo.logic import Stmt
from syllo.model import NOTHING, PHRASES, Puzzle
from syllo.parsing import canonical_key, parse_statement

PROFILE_NAMES = ("plain", "emoji_think", "regime3")
# The logic's reading, in every prompt: without it a pair such as "No grobs are skells." and "Every one
# of the grobs is one of the skells." reads as a contradiction; with it, it says there are no grobs.
READING_NOTE = '"All X are Y" does not imply that any X exist; with "No X are Y" it means there are no X.'
# short on purpose: it is in every prompt, and a small model's context is short
JUDGE_INSTRUCTION = "Answer with one word: valid or invalid."
DERIVE_INSTRUCTION = ('Answer with one statement ("all {s} are {p}", "no {s} are {p}", "some {s} are {p}" '
                      'or "some {s} are not {p}") or "nothing follows".')
REGIME3_JUDGE_INSTRUCTION = "Answer with one expression: (verdict valid) or (verdict invalid)."
REGIME3_DERIVE_INSTRUCTION = ("Answer with one expression (q {s} {p}) where q is all, no, some or some_not, "
                              "or (none {s} {p}) when nothing follows.")


def phrase(st: Stmt, variant: int = 0) -> str:
    return PHRASES[st.q][variant].format(s=st.s, p=st.p)


def question_text(pz: Puzzle) -> str:
    if pz.kind == "judge":
        assert pz.conclusion is not None
        c = phrase(pz.conclusion, pz.conclusion_phrasing)
        return f"Question: Does it follow that {c[0].lower() + c[1:]}?"
    return f"Question: What follows with {pz.subject} as subject and {pz.predicate} as predicate?"


def blank_terms(text: str, s: str, p: str) -> str:
    """``text`` with the whole words ``s`` and ``p`` replaced by X and Y (the question's template)."""
    words = {s: "X", p: "Y"}
    return re.sub(r"[A-Za-z][A-Za-z\-]*", lambda m: words.get(m.group(0), m.group(0)), text)


def question_template(pz: Puzzle) -> str:
    """The question's wording with its terms blanked: "Does it follow that some X are not Y?"."""
    s, p = (pz.conclusion.s, pz.conclusion.p) if pz.kind == "judge" and pz.conclusion else (pz.subject, pz.predicate)
    return blank_terms(question_text(pz).removeprefix("Question: "), s, p)


def core_text(pz: Puzzle) -> str:
    """Premises + question: the part of the prompt that identifies the puzzle."""
    lines = ["Premises:"] + [f"{i}. {phrase(st, v)}." for i, (st, v) in enumerate(zip(pz.premises, pz.phrasing), 1)]
    lines.append(question_text(pz))
    return "\n".join(lines)


def user_text(pz: Puzzle, profile: str = "plain") -> str:
    if profile == "regime3":
        instr = regime3_instruction(pz)
    else:
        instr = JUDGE_INSTRUCTION if pz.kind == "judge" else DERIVE_INSTRUCTION.format(s=pz.subject, p=pz.predicate)
    return core_text(pz) + "\n" + READING_NOTE + "\n" + instr


def regime3_answer(answer: str) -> str:
    """The canonical s-expression of a plain answer (regime3 needs ``(op arg ...)`` with at least
    one argument): ``valid`` -> ``(verdict valid)``, ``invalid`` -> ``(verdict invalid)``,
    ``all wugs are zorps`` -> ``(all wugs zorps)`` (likewise ``no``, ``some``, ``some_not``),
    ``nothing follows`` about S and P -> ``(none S P)``."""
    a = " ".join(answer.strip().lower().rstrip(".").split())
    if a in ("valid", "invalid"):
        return f"(verdict {a})"
    st = parse_statement(a)
    if st is None:
        raise ValueError(f"not a syllo answer: {answer!r}")
    return f"({st.q} {st.s} {st.p})"


def regime3_instruction(pz: Puzzle) -> str:
    if pz.kind == "judge":
        return REGIME3_JUDGE_INSTRUCTION
    return REGIME3_DERIVE_INSTRUCTION.format(s=pz.subject, p=pz.predicate)


def expected_answer(pz: Puzzle, profile: str = "plain") -> str:
    """The answer text for ``profile`` (what the profile's ``normalize_answer`` compares)."""
    if profile == "regime3":
        if pz.answer == NOTHING:
            return f"(none {pz.subject} {pz.predicate})"
        return regime3_answer(pz.answer)
    return pz.answer


def assistant_text(pz: Puzzle, profile: str = "plain") -> str:
    if profile == "regime3":
        return f"<<ANS_START>> {expected_answer(pz, profile)} <<ANS_END>>"
    return pz.answer


def puzzle_id(pz: Puzzle) -> str:
    return hashlib.sha256(canonical_key_of(pz).encode()).hexdigest()[:16]


def canonical_key_of(pz: Puzzle) -> str:
    q = ("judge:" + "|".join(pz.conclusion.as_list())) if pz.kind == "judge" and pz.conclusion \
        else f"derive:{pz.subject}|{pz.predicate}"
    return canonical_key(pz.premises, q)


def normalize_text(text: str) -> str:
    return " ".join(text.lower().split())
