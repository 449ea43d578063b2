"""Syllo puzzles: syllogism puzzles with a computed, certified answer, at four difficulty levels,
rendered as chat records for a data profile.

A puzzle is a list of premises (``Stmt``: all / no / some / some_not over nonsense or everyday
plural nouns) and a question of one of two kinds:

* ``judge``:  "Does it follow that <conclusion>?"  answer ``valid`` or ``invalid``.
* ``derive``: "What follows with S as subject and P as predicate?"  answer the one conclusion
  about S and P that follows, in canonical form ("all S are P", "no S are P", "some S are P",
  "some S are not P"), or ``nothing follows``. A derive puzzle is only emitted when exactly one
  of the four forms follows (or none does), so the answer is unique.

Construction: a *chain* of premises linking t0 -> t1 -> ... -> tn is built from a valid pattern
(``VALID_PATTERNS``; e.g. barbara_chain: all t0 t1, all t1 t2, ... |- all t0 tn); a negative is
made by breaking it in a named way (``INVALID_PATTERNS``: a reversed link, two negative or two
particular premises, the existential fallacy, a converse or too-strong conclusion, a gap in the
chain, the negation of what follows). Distractor premises about other terms (or tying a fresh term
to the chain) are then mixed in. Whatever the construction intended, the answer is *computed* by
``syllo_logic`` (exact decision procedure); a candidate is discarded and re-drawn unless the
computed answer is the intended one, the premises are consistent and the distractors do not
change the answer. Every puzzle carries a certificate in ``metadata.certificate``: a proof with
named sound rules for each conclusion that follows, a countermodel for each that does not.

Difficulty levels (``LEVELS``; each knob is recorded in the item's metadata so tests can check
that a level produces what it claims):

=========  ============  ===========  =========  =========  ==========  ==========
level      chain (n)     distractors  shuffled   converted  paraphrase  derive
=========  ============  ===========  =========  =========  ==========  ==========
easy       2             0            no         never      never       never
medium     2..3          0..1         yes        25%        never       never
hard       3..4          1..2         yes        50%        30%         30%
expert     4..5          2..3         yes        50%        60%         50%
=========  ============  ===========  =========  =========  ==========  ==========

``chain`` is the number of premises on the path from subject to predicate; ``converted`` means a
no/some premise is stated in converted order ("No B are A" for no A B), which needs a conversion
step to use; ``paraphrase`` uses alternative phrasings ("Not all A are B", "Each of the A is among
the B"). Half the puzzles of every level are negatives (invalid / nothing follows). Semantics
are modern (terms may be empty; see ``syllo_logic``).
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from syllo.logic import (NEGATION, QUANTIFIERS, Stmt, countermodel, entails, proof_to_json,
                                    prove, satisfiable)

GENERATOR_VERSION = 1

NONSENSE_TERMS = (
    "wugs zorps blickets daxes feps glorbs flims bloops razzies lazzies toves snarks grobs kips mibs "
    "norps plonks quibs slivs tazzes yims zibs dorps frobs gimbles hoxes jibs kellops lurks nubs pilks "
    "quells skells trobs ulks vints wemps yorbs brols cheps").split()
REAL_TERMS = ("cats dogs birds mammals animals reptiles poets artists doctors teachers students robots "
              "machines planets stars fruits apples").split()

PHRASES: dict[str, tuple[str, ...]] = {
    "all": ("All {s} are {p}", "Each of the {s} is among the {p}", "Every one of the {s} is one of the {p}"),
    "no": ("No {s} are {p}", "None of the {s} are {p}"),
    "some": ("Some {s} are {p}", "At least one of the {s} is among the {p}"),
    "some_not": ("Some {s} are not {p}", "Not all {s} are {p}"),
}
JUDGE_INSTRUCTION = "Answer with one word: valid or invalid."
DERIVE_INSTRUCTION = ('Answer with one statement ("all {s} are {p}", "no {s} are {p}", "some {s} are {p}" '
                      'or "some {s} are not {p}") or "nothing follows".')
NOTHING = "nothing follows"
REGIME3_JUDGE_INSTRUCTION = "Answer with one expression: (verdict valid) or (verdict invalid)."
REGIME3_DERIVE_INSTRUCTION = ("Answer with one expression (q {s} {p}) where q is all, no, some or some_not, "
                              "or (none {s} {p}) when nothing follows.")
DIFFICULTIES = ("easy", "medium", "hard", "expert")
PROFILE_NAMES = ("plain", "emoji_think", "regime3")


@dataclass(frozen=True)
class Level:
    chain: tuple[int, int]
    distractors: tuple[int, int]
    shuffle: bool
    convert_p: float
    paraphrase_p: float
    derive_p: float
    real_terms_p: float
    valid_patterns: tuple[str, ...]
    invalid_patterns: tuple[str, ...]


_ALL_VALID = ("barbara_chain", "celarent_chain", "darii_chain", "ferio_chain", "baroco_chain")
_ALL_INVALID = ("illicit_conversion", "two_negatives", "two_particulars", "existential_fallacy",
                "converse_conclusion", "too_strong", "broken_chain", "negated_conclusion")
_CHAIN_BREAKING = ("illicit_conversion", "two_negatives", "two_particulars", "broken_chain")
LEVELS: dict[str, Level] = {
    "easy": Level((2, 2), (0, 0), False, 0.0, 0.0, 0.0, 0.0,
                  ("barbara_chain", "celarent_chain", "darii_chain"),
                  ("illicit_conversion", "two_negatives", "converse_conclusion", "too_strong")),
    "medium": Level((2, 3), (0, 1), True, 0.25, 0.0, 0.0, 0.2, _ALL_VALID,
                    ("illicit_conversion", "two_negatives", "two_particulars", "converse_conclusion",
                     "too_strong", "broken_chain", "negated_conclusion")),
    "hard": Level((3, 4), (1, 2), True, 0.5, 0.3, 0.3, 0.3, _ALL_VALID, _ALL_INVALID),
    "expert": Level((4, 5), (2, 3), True, 0.5, 0.6, 0.5, 0.3, _ALL_VALID, _ALL_INVALID),
}


class PuzzleRejected(Exception):
    """A drawn candidate does not have the intended answer; draw again."""


@dataclass
class Puzzle:
    difficulty: str
    kind: str                      # judge | derive
    pattern: str
    valid: bool                    # judge: conclusion follows; derive: some form follows
    premises: list[Stmt]           # in the order shown
    phrasing: list[int]            # PHRASES variant per premise
    chain_indices: list[int]       # which shown premises form the chain
    distractor_indices: list[int]
    converted_indices: list[int]
    conclusion: Stmt | None        # judge only
    conclusion_phrasing: int = 0
    subject: str = ""              # derive only
    predicate: str = ""
    answer: str = ""               # canonical plain answer
    chain_length: int = 0
    certificate: dict = field(default_factory=dict)

    @property
    def terms(self) -> list[str]:
        seen: dict[str, None] = {}
        for st in self.premises:
            seen.setdefault(st.s)
            seen.setdefault(st.p)
        return list(seen)


# --------------------------------------------------------------------------- construction
def _chain(pattern: str, t: list[str]) -> tuple[list[Stmt], Stmt]:
    """Premises along t0..tn and the conclusion that follows, for a valid pattern."""
    n = len(t) - 1
    links = [Stmt("all", t[i], t[i + 1]) for i in range(n)]
    if pattern == "barbara_chain":
        return links, Stmt("all", t[0], t[n])
    if pattern == "celarent_chain":
        return links[:-1] + [Stmt("no", t[n - 1], t[n])], Stmt("no", t[0], t[n])
    if pattern == "darii_chain":
        return [Stmt("some", t[0], t[1])] + links[1:], Stmt("some", t[0], t[n])
    if pattern == "ferio_chain":
        mid = links[1:-1]
        return [Stmt("some", t[0], t[1])] + mid + [Stmt("no", t[n - 1], t[n])], Stmt("some_not", t[0], t[n])
    if pattern == "baroco_chain":
        return [Stmt("some_not", t[0], t[1])] + [Stmt("all", t[i + 1], t[i]) for i in range(1, n)], \
            Stmt("some_not", t[0], t[n])
    raise ValueError(f"unknown valid pattern {pattern!r}")


def _break(pattern: str, rng: random.Random, t: list[str], fresh: str) -> tuple[list[Stmt], Stmt, str]:
    """An invalid argument made from a valid chain in the named way: (premises, conclusion, base)."""
    n = len(t) - 1
    if pattern == "illicit_conversion":
        base = rng.choice(("barbara_chain", "celarent_chain", "darii_chain"))
        prem, concl = _chain(base, t)
        alls = [i for i, st in enumerate(prem) if st.q == "all"]
        i = rng.choice(alls)
        prem[i] = Stmt("all", prem[i].p, prem[i].s)
        return prem, concl, base
    if pattern == "two_negatives":
        prem, concl = _chain("celarent_chain", t)
        i = rng.randrange(0, n - 1)
        prem[i] = Stmt("no", prem[i].s, prem[i].p)
        return prem, concl, "celarent_chain"
    if pattern == "two_particulars":
        prem, concl = _chain("darii_chain", t)
        i = rng.randrange(1, n)
        prem[i] = Stmt("some", prem[i].s, prem[i].p)
        return prem, concl, "darii_chain"
    if pattern == "existential_fallacy":
        base = rng.choice(("barbara_chain", "celarent_chain"))
        prem, concl = _chain(base, t)
        return prem, Stmt("some" if base == "barbara_chain" else "some_not", t[0], t[n]), base
    if pattern == "converse_conclusion":
        base = rng.choice(("barbara_chain", "baroco_chain"))
        prem, concl = _chain(base, t)
        return prem, Stmt(concl.q, concl.p, concl.s), base
    if pattern == "too_strong":
        base = rng.choice(("darii_chain", "ferio_chain"))
        prem, concl = _chain(base, t)
        return prem, Stmt("all" if base == "darii_chain" else "no", t[0], t[n]), base
    if pattern == "broken_chain":
        base = rng.choice(("barbara_chain", "celarent_chain", "darii_chain"))
        prem, concl = _chain(base, t)
        i = rng.randrange(0, n)
        st = prem[i]
        prem[i] = Stmt(st.q, fresh, st.p) if rng.random() < 0.5 else Stmt(st.q, st.s, fresh)
        return prem, concl, base
    if pattern == "negated_conclusion":
        base = rng.choice(_ALL_VALID)
        prem, concl = _chain(base, t)
        return prem, concl.negated(), base
    raise ValueError(f"unknown invalid pattern {pattern!r}")


def _distractor(rng: random.Random, chain_terms: list[str], fresh: list[str]) -> Stmt:
    q = rng.choice(QUANTIFIERS)
    if rng.random() < 0.5 or len(fresh) < 2:
        a, b = rng.choice(fresh), rng.choice(chain_terms)
        return Stmt(q, a, b) if rng.random() < 0.5 else Stmt(q, b, a)
    a, b = rng.sample(fresh, 2)
    return Stmt(q, a, b)


def _forms(s: str, p: str) -> list[Stmt]:
    return [Stmt(q, s, p) for q in QUANTIFIERS]


def _following_forms(premises: Sequence[Stmt], s: str, p: str) -> list[Stmt]:
    return [f for f in _forms(s, p) if entails(premises, f)]


def _certify_judge(premises: list[Stmt], concl: Stmt, valid: bool) -> dict:
    if valid:
        proof = prove(premises, concl)
        if proof is None:
            raise PuzzleRejected("valid but outside the prover's reach")
        return {"proof": proof_to_json(proof)}
    cm = countermodel(premises, concl)
    assert cm is not None
    return {"countermodel": cm}


def _certify_derive(premises: list[Stmt], s: str, p: str, answer: Stmt | None) -> dict:
    cert: dict[str, Any] = {"countermodels": {}}
    for f in _forms(s, p):
        if answer is not None and f == answer:
            proof = prove(premises, f)
            if proof is None:
                raise PuzzleRejected("answer outside the prover's reach")
            cert["proof"] = proof_to_json(proof)
        else:
            cm = countermodel(premises, f)
            if cm is None:
                raise PuzzleRejected("a second form follows")
            cert["countermodels"][f.q] = cm
    return cert


def _candidate(rng: random.Random, difficulty: str, want_valid: bool, kind: str) -> Puzzle:
    lv = LEVELS[difficulty]
    n = rng.randint(*lv.chain)
    n_d = rng.randint(*lv.distractors)
    pool = list(NONSENSE_TERMS)
    if rng.random() < lv.real_terms_p:
        pool = list(REAL_TERMS) + pool[: len(REAL_TERMS)]
    words = rng.sample(pool, n + 1 + max(2, n_d + 1))
    t, spare = words[: n + 1], words[n + 1:]
    fresh_for_break = spare[-1]
    if want_valid:
        pattern = rng.choice(lv.valid_patterns)
        chain, concl = _chain(pattern, t)
    else:
        choices = lv.invalid_patterns
        if kind == "derive":  # only a broken chain leaves nothing to conclude about t0 and tn
            choices = tuple(x for x in choices if x in _CHAIN_BREAKING) or choices
        pattern = rng.choice(choices)
        chain, concl, _ = _break(pattern, rng, t, fresh_for_break)
    if len(set(chain)) != len(chain) or any(st.s == st.p for st in chain):
        raise PuzzleRejected("degenerate chain")
    if not satisfiable(chain):
        raise PuzzleRejected("inconsistent chain")

    # the answer from the chain alone
    if kind == "judge":
        chain_answer: Any = entails(chain, concl)
    else:
        forms = _following_forms(chain, t[0], t[-1])
        if len(forms) > 1:
            raise PuzzleRejected("several forms follow")
        chain_answer = forms[0] if forms else None
    if kind == "judge" and chain_answer != want_valid:
        raise PuzzleRejected("construction did not give the intended answer")
    if kind == "derive" and (chain_answer is not None) != want_valid:
        raise PuzzleRejected("construction did not give the intended answer")

    # distractors: must leave the answer unchanged and the premises consistent
    used_fresh = [w for w in spare if w != fresh_for_break and all(w not in (st.s, st.p) for st in chain)]
    distractors: list[Stmt] = []
    for _ in range(n_d):
        d = _distractor(rng, t, used_fresh[: max(2, n_d)])
        if d.s == d.p or d in chain or d in distractors:
            raise PuzzleRejected("duplicate distractor")
        distractors.append(d)
    premises = chain + distractors
    if distractors:
        if not satisfiable(premises):
            raise PuzzleRejected("distractors make the premises inconsistent")
        if kind == "judge":
            if entails(premises, concl) != chain_answer:
                raise PuzzleRejected("distractor changes the answer")
        else:
            forms = _following_forms(premises, t[0], t[-1])
            if forms != ([] if chain_answer is None else [chain_answer]):
                raise PuzzleRejected("distractor changes the answer")

    # surface: conversion of symmetric premises, order, phrasing
    shown = list(premises)
    converted: list[int] = []
    for i, st in enumerate(shown):
        if st.q in ("no", "some") and rng.random() < lv.convert_p:
            shown[i] = Stmt(st.q, st.p, st.s)
            converted.append(i)
    order = list(range(len(shown)))
    if lv.shuffle:
        while True:
            rng.shuffle(order)
            if len(order) < 2 or order != sorted(order):
                break
    shown_premises = [shown[i] for i in order]
    pos = {old: new for new, old in enumerate(order)}
    phrasing = [rng.randrange(len(PHRASES[st.q])) if rng.random() < lv.paraphrase_p else 0
                for st in shown_premises]

    pz = Puzzle(difficulty=difficulty, kind=kind, pattern=pattern, valid=want_valid, premises=shown_premises,
                phrasing=phrasing, chain_indices=sorted(pos[i] for i in range(len(chain))),
                distractor_indices=sorted(pos[i] for i in range(len(chain), len(premises))),
                converted_indices=sorted(pos[i] for i in converted), conclusion=None, chain_length=n)
    if kind == "judge":
        pz.conclusion = concl
        pz.conclusion_phrasing = rng.randrange(len(PHRASES[concl.q])) if rng.random() < lv.paraphrase_p else 0
        pz.answer = "valid" if want_valid else "invalid"
        pz.certificate = _certify_judge(shown_premises, concl, want_valid)
    else:
        pz.subject, pz.predicate = t[0], t[-1]
        pz.answer = chain_answer.text() if chain_answer is not None else NOTHING
        pz.certificate = _certify_derive(shown_premises, t[0], t[-1], chain_answer)
    return pz


def make_puzzle(rng: random.Random, difficulty: str, want_valid: bool | None = None,
                kind: str | None = None, max_tries: int = 500) -> Puzzle:
    """Draw one puzzle of ``difficulty``; ``want_valid``/``kind`` are drawn when None."""
    if difficulty not in LEVELS:
        raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {', '.join(DIFFICULTIES)}")
    lv = LEVELS[difficulty]
    if want_valid is None:
        want_valid = rng.random() < 0.5
    if kind is None:
        kind = "derive" if rng.random() < lv.derive_p else "judge"
    for _ in range(max_tries):
        try:
            return _candidate(rng, difficulty, want_valid, kind)
        except PuzzleRejected:
            continue
    raise RuntimeError(f"could not draw a {difficulty} {kind} puzzle (valid={want_valid}) in {max_tries} tries")


# --------------------------------------------------------------------------- rendering
def phrase(st: Stmt, variant: int = 0) -> str:
    return PHRASES[st.q][variant].format(s=st.s, p=st.p)


def question_text(pz: Puzzle) -> str:
    if pz.kind == "judge":
        assert pz.conclusion is not None
        c = phrase(pz.conclusion, pz.conclusion_phrasing)
        return f"Question: Does it follow that {c[0].lower() + c[1:]}?"
    return f"Question: What follows with {pz.subject} as subject and {pz.predicate} as predicate?"


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
    return core_text(pz) + "\n" + instr


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
    prem = sorted("|".join(st.as_list()) for st in pz.premises)
    q = ("judge:" + "|".join(pz.conclusion.as_list())) if pz.kind == "judge" and pz.conclusion \
        else f"derive:{pz.subject}|{pz.predicate}"
    return "P:" + ";".join(prem) + "#Q:" + q


def render_record(pz: Puzzle, profile: str = "plain", index: int = 0, seed: int | None = None) -> dict:
    """One chat record for ``profile``:

    * ``plain``: the prompt, and the bare answer as the assistant turn.
    * ``emoji_think``: the plain record; the profile's own ``transform_example`` (thinking-emoji
      frame on the answer, instructions on the user turn) is applied by the engine at training time
      and by the evaluator when it prompts, so the task package needs no profile code.
    * ``regime3``: a symbolic instruction, and the canonical s-expression answer between markers:
      ``<<ANS_START>> (verdict valid) <<ANS_END>>``, ``<<ANS_START>> (all wugs zorps) <<ANS_END>>``,
      ``<<ANS_START>> (some_not wugs zorps) <<ANS_END>>``, ``<<ANS_START>> (none wugs zorps) <<ANS_END>>``.

    ``metadata.answer`` is always the plain answer; ``metadata.expected`` the profile's form."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILE_NAMES)}")
    meta = {
        "source": "syllo", "generator_version": GENERATOR_VERSION, "id": puzzle_id(pz),
        "difficulty": pz.difficulty, "answer": pz.answer, "pattern": pz.pattern, "kind": pz.kind,
        "valid": pz.valid, "profile": profile, "expected": expected_answer(pz, profile),
        "premises": [st.as_list() for st in pz.premises],
        "phrasing": pz.phrasing, "conclusion": pz.conclusion.as_list() if pz.conclusion else None,
        "conclusion_phrasing": pz.conclusion_phrasing,
        "subject": pz.subject or None, "predicate": pz.predicate or None,
        "chain_length": pz.chain_length, "n_premises": len(pz.premises),
        "chain_indices": pz.chain_indices, "distractor_indices": pz.distractor_indices,
        "n_distractors": len(pz.distractor_indices), "converted_indices": pz.converted_indices,
        "paraphrased": any(pz.phrasing) or bool(pz.conclusion_phrasing), "n_terms": len(pz.terms),
        "shuffled": LEVELS[pz.difficulty].shuffle, "certificate": pz.certificate,
    }
    if seed is not None:
        meta["seed"], meta["index"] = seed, index
    rec = {"messages": [{"role": "user", "content": user_text(pz, profile)},
                        {"role": "assistant", "content": assistant_text(pz, profile)}],
           "metadata": meta}
    return rec


def rerender_record(record: dict, profile: str, index: int = 0) -> dict:
    """A syllo record rendered for another profile (from its metadata); other records unchanged."""
    meta = record.get("metadata") if isinstance(record, dict) else None
    if not isinstance(meta, dict) or meta.get("source") != "syllo" or profile not in PROFILE_NAMES:
        return record
    return render_record(puzzle_from_metadata(meta), profile, index=index, seed=meta.get("seed"))


def puzzle_from_metadata(meta: dict) -> Puzzle:
    """Rebuild a puzzle from a record's metadata (to re-render it for another profile)."""
    try:
        prem = [Stmt.from_list(x) for x in meta["premises"]]
        concl = Stmt.from_list(meta["conclusion"]) if meta.get("conclusion") else None
        return Puzzle(difficulty=meta["difficulty"], kind=meta["kind"], pattern=meta["pattern"],
                      valid=bool(meta["valid"]), premises=prem, phrasing=list(meta["phrasing"]),
                      chain_indices=list(meta.get("chain_indices", [])),
                      distractor_indices=list(meta.get("distractor_indices", [])),
                      converted_indices=list(meta.get("converted_indices", [])), conclusion=concl,
                      conclusion_phrasing=int(meta.get("conclusion_phrasing", 0)),
                      subject=meta.get("subject") or "", predicate=meta.get("predicate") or "",
                      answer=meta["answer"], chain_length=int(meta.get("chain_length", 0)),
                      certificate=meta.get("certificate") or {})
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"not syllo metadata ({type(e).__name__}: {e})") from None


# --------------------------------------------------------------------------- parsing (for fingerprints)
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
    return "P:" + ";".join(sorted("|".join(st.as_list()) for st in prem)) + "#Q:" + q


def normalize_text(text: str) -> str:
    return " ".join(text.lower().split())


def dumps_record(rec: dict) -> str:
    return json.dumps(rec, ensure_ascii=False, sort_keys=False)


__all__ = ["Puzzle", "Level", "LEVELS", "DIFFICULTIES", "make_puzzle", "render_record", "puzzle_from_metadata",
           "parse_statement", "parse_core", "canonical_key_of", "core_text", "user_text", "assistant_text",
           "regime3_answer", "expected_answer", "rerender_record", "NOTHING", "NEGATION"]
