"""Drawing a syllo puzzle with a computed, certified answer (``make_puzzle``).

Construction: a *chain* of premises linking t0 -> t1 -> ... -> tn is built from a valid pattern
(``VALID_PATTERNS``; e.g. barbara_chain: all t0 t1, all t1 t2, ... |- all t0 tn); a negative is
made by breaking it in a named way (``INVALID_PATTERNS``: a reversed link, two negative or two
particular premises, the existential fallacy, a converse or too-strong conclusion, a gap in the
chain, the negation of what follows). Distractor premises about other terms (or tying a fresh term
to the chain) are then mixed in. Whatever the construction intended, the answer is *computed* by
``syllo.logic`` (exact decision procedure); a candidate is discarded and re-drawn unless the
computed answer is the intended one, the premises are consistent and the distractors do not
change the answer. Every puzzle carries a certificate in ``certificate``: a proof with named
sound rules for each conclusion that follows, a countermodel for each that does not.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

from syllo.logic import QUANTIFIERS, Stmt, countermodel, entails, proof_to_json, prove, satisfiable
from syllo.model import (CHAIN_BREAKING, DIFFICULTIES, LEVELS, NONSENSE_TERMS, NOTHING, PHRASES, REAL_TERMS,
                         VALID_PATTERNS, Puzzle)


class PuzzleRejected(Exception):
    """A drawn candidate does not have the intended answer; draw again."""


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
        base = rng.choice(VALID_PATTERNS)
        prem, concl = _chain(base, t)
        return prem, concl.negated(), base
    raise ValueError(f"unknown invalid pattern {pattern!r}")


# the conclusion's quantifier each pattern can give (to draw a judge puzzle with a wanted question)
VALID_GIVES = {"barbara_chain": ("all",), "celarent_chain": ("no",), "darii_chain": ("some",),
               "ferio_chain": ("some_not",), "baroco_chain": ("some_not",)}
INVALID_GIVES = {"illicit_conversion": ("all", "no", "some"), "two_negatives": ("no",), "two_particulars": ("some",),
                 "existential_fallacy": ("some", "some_not"), "converse_conclusion": ("all", "some_not"),
                 "too_strong": ("all", "no"), "broken_chain": ("all", "no", "some"),
                 "negated_conclusion": ("all", "no", "some", "some_not")}


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


def _patterns_for(lv, want_valid: bool, kind: str, conclusion_q: str | None) -> tuple[str, ...]:
    if want_valid:
        choices = lv.valid_patterns
        gives = VALID_GIVES
    else:
        choices = lv.invalid_patterns
        if kind == "derive":  # only a broken chain leaves nothing to conclude about t0 and tn
            choices = tuple(x for x in choices if x in CHAIN_BREAKING) or choices
        gives = INVALID_GIVES
    if kind == "judge" and conclusion_q is not None:
        choices = tuple(x for x in choices if conclusion_q in gives[x])
    return choices


def _candidate(rng: random.Random, difficulty: str, want_valid: bool, kind: str,
               conclusion_q: str | None = None, conclusion_phrasing: int | None = None) -> Puzzle:
    lv = LEVELS[difficulty]
    choices = _patterns_for(lv, want_valid, kind, conclusion_q)
    n = rng.randint(*lv.chain)
    n_d = rng.randint(*lv.distractors)
    pool = list(NONSENSE_TERMS)
    if rng.random() < lv.real_terms_p:
        pool = list(REAL_TERMS) + pool[: len(REAL_TERMS)]
    words = rng.sample(pool, n + 1 + max(2, n_d + 1))
    t, spare = words[: n + 1], words[n + 1:]
    fresh_for_break = spare[-1]
    pattern = rng.choice(choices)
    if want_valid:
        chain, concl = _chain(pattern, t)
    else:
        chain, concl, _ = _break(pattern, rng, t, fresh_for_break)
    if kind == "judge" and conclusion_q is not None and concl.q != conclusion_q:
        raise PuzzleRejected("not the wanted question")
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
        pz.conclusion_phrasing = conclusion_phrasing if conclusion_phrasing is not None else (
            rng.randrange(len(PHRASES[concl.q])) if rng.random() < lv.paraphrase_p else 0)
        pz.answer = "valid" if want_valid else "invalid"
        pz.certificate = _certify_judge(shown_premises, concl, want_valid)
    else:
        pz.subject, pz.predicate = t[0], t[-1]
        pz.answer = chain_answer.text() if chain_answer is not None else NOTHING
        pz.certificate = _certify_derive(shown_premises, t[0], t[-1], chain_answer)
    return pz


def make_puzzle(rng: random.Random, difficulty: str, want_valid: bool | None = None,
                kind: str | None = None, max_tries: int = 500, *, conclusion_q: str | None = None,
                conclusion_phrasing: int | None = None) -> Puzzle:
    """Draw one puzzle of ``difficulty``; ``want_valid``/``kind`` are drawn when None.
    ``conclusion_q`` / ``conclusion_phrasing`` (judge only) fix the question's quantifier and
    wording, so a caller can balance answers within each question template (``syllo.balance``)."""
    if difficulty not in LEVELS:
        raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {', '.join(DIFFICULTIES)}")
    lv = LEVELS[difficulty]
    if want_valid is None:
        want_valid = rng.random() < 0.5
    if kind is None:
        kind = "derive" if rng.random() < lv.derive_p else "judge"
    if conclusion_q is not None and conclusion_phrasing is not None \
            and not 0 <= conclusion_phrasing < len(PHRASES[conclusion_q]):
        raise ValueError(f"phrasing {conclusion_phrasing} of {conclusion_q!r} does not exist")
    if not _patterns_for(lv, want_valid, kind, conclusion_q):
        raise ValueError(f"no {difficulty} pattern gives a {'valid' if want_valid else 'invalid'} "
                         f"{kind} puzzle with a {conclusion_q!r} conclusion")
    for _ in range(max_tries):
        try:
            return _candidate(rng, difficulty, want_valid, kind, conclusion_q, conclusion_phrasing)
        except PuzzleRejected:
            continue
    raise RuntimeError(f"could not draw a {difficulty} {kind} puzzle (valid={want_valid}) in {max_tries} tries")
