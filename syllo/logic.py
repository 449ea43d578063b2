"""The logic under syllo puzzles: categorical statements, a decision procedure, countermodels
and proofs.

Statements are ``Stmt(q, s, p)`` with quantifier ``q`` one of

* ``all``       "All S are P"        (no S outside P)
* ``no``        "No S are P"         (nothing both S and P)
* ``some``      "Some S are P"       (something both S and P)
* ``some_not``  "Some S are not P"   (something S outside P)

Semantics are the modern (Boolean) ones: terms may be empty, so "All S are P" does NOT imply
"Some S are P" (the traditional "existential import" is not assumed; that is why
``existential_fallacy`` puzzles are invalid). An argument is *valid* when its conclusion is true in
every model (a universe and a subset per term) where all premises are true.

Why the decision procedure is exact and cheap: an individual's *type* is the set of terms it
belongs to (a bitmask over the k terms). Universal statements (all/no) forbid types; existential
ones (some/some_not) demand a type. Premises plus the negated conclusion are satisfiable exactly
when every demanded type can be met by a type that no universal forbids, and then one individual
per existential demand is a countermodel. So ``entails`` is a scan over 2^k types (k <= 12 here),
and every "invalid" answer comes with a concrete countermodel, every "valid" one (that the
generator emits) with a proof from the sound rules in ``RULES``. Tests check both certificates
with independent code and brute-force model enumeration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

QUANTIFIERS = ("all", "no", "some", "some_not")
UNIVERSAL = ("all", "no")
NEGATION = {"all": "some_not", "some_not": "all", "no": "some", "some": "no"}
MAX_TERMS = 12


@dataclass(frozen=True, order=True)
class Stmt:
    q: str
    s: str
    p: str

    def __post_init__(self) -> None:
        if self.q not in QUANTIFIERS:
            raise ValueError(f"unknown quantifier {self.q!r}; expected one of {QUANTIFIERS}")

    def negated(self) -> "Stmt":
        return Stmt(NEGATION[self.q], self.s, self.p)

    def as_list(self) -> list[str]:
        return [self.q, self.s, self.p]

    @classmethod
    def from_list(cls, x: Sequence[str]) -> "Stmt":
        if len(x) != 3:
            raise ValueError(f"a statement is [quantifier, subject, predicate], got {x!r}")
        return cls(str(x[0]), str(x[1]), str(x[2]))

    def text(self) -> str:
        """Canonical English, lower case, no final period (the answer form of derive questions)."""
        return {"all": f"all {self.s} are {self.p}", "no": f"no {self.s} are {self.p}",
                "some": f"some {self.s} are {self.p}", "some_not": f"some {self.s} are not {self.p}"}[self.q]


def terms_of(stmts: Iterable[Stmt]) -> list[str]:
    seen: dict[str, None] = {}
    for st in stmts:
        seen.setdefault(st.s)
        seen.setdefault(st.p)
    return list(seen)


# --------------------------------------------------------------------------- semantics
_MASKS: dict[int, tuple[int, list[int]]] = {}


def _term_masks(k: int) -> tuple[int, list[int]]:
    """For k terms: (all types, [types containing term i]) as bitsets over the 2^k types."""
    if k not in _MASKS:
        n = 1 << k
        _MASKS[k] = ((1 << n) - 1, [sum(1 << t for t in range(n) if t >> i & 1) for i in range(k)])
    return _MASKS[k]


def _condition(st: Stmt, idx: dict[str, int], full: int, masks: list[int]) -> int:
    """The types that meet a statement's condition (S and P for no/some, S and not P for
    all/some_not): universals forbid these types, existentials demand one of them."""
    ms, mp = masks[idx[st.s]], masks[idx[st.p]]
    return ms & mp if st.q in ("no", "some") else ms & (full ^ mp)


def find_model(stmts: Sequence[Stmt], terms: Sequence[str] | None = None) -> dict[str, list[int]] | None:
    """A model where every statement holds, as {term: sorted list of individuals}, or None.
    The universe is range(number of existential statements) (possibly empty)."""
    terms = list(terms) if terms is not None else terms_of(stmts)
    if len(terms) > MAX_TERMS:
        raise ValueError(f"{len(terms)} terms; at most {MAX_TERMS} supported")
    idx = {t: i for i, t in enumerate(terms)}
    full, masks = _term_masks(len(terms))
    allowed = full
    for st in stmts:
        if st.q in UNIVERSAL:
            allowed &= ~_condition(st, idx, full, masks)
    model: dict[str, list[int]] = {term: [] for term in terms}
    ind = 0
    for st in stmts:
        if st.q in UNIVERSAL:
            continue
        ok = allowed & _condition(st, idx, full, masks)
        if not ok:
            return None
        t = (ok & -ok).bit_length() - 1  # the lowest admissible type
        for term, i in idx.items():
            if t >> i & 1:
                model[term].append(ind)
        ind += 1
    return model


def satisfiable(stmts: Sequence[Stmt]) -> bool:
    return find_model(stmts) is not None


def countermodel(premises: Sequence[Stmt], conclusion: Stmt) -> dict[str, list[int]] | None:
    """A model of the premises where the conclusion is false, or None when the argument is valid."""
    terms = terms_of([*premises, conclusion])
    return find_model([*premises, conclusion.negated()], terms)


def entails(premises: Sequence[Stmt], conclusion: Stmt) -> bool:
    return countermodel(premises, conclusion) is None


def evaluate(st: Stmt, model: dict[str, Iterable[int]]) -> bool:
    """Truth of a statement in a concrete model {term: individuals} (a missing term is empty)."""
    s, p = set(model.get(st.s, ())), set(model.get(st.p, ()))
    return {"all": s <= p, "no": not (s & p), "some": bool(s & p), "some_not": bool(s - p)}[st.q]


# --------------------------------------------------------------------------- proofs
# Each rule: (name, premise patterns, conclusion pattern) over the variables a, b, c. All are
# valid syllogisms (or conversions) in the modern semantics.
RULES: tuple[tuple[str, tuple[tuple[str, str, str], ...], tuple[str, str, str]], ...] = (
    ("barbara", (("all", "a", "b"), ("all", "b", "c")), ("all", "a", "c")),
    ("celarent", (("all", "a", "b"), ("no", "b", "c")), ("no", "a", "c")),
    ("darii", (("some", "a", "b"), ("all", "b", "c")), ("some", "a", "c")),
    ("ferio", (("some", "a", "b"), ("no", "b", "c")), ("some_not", "a", "c")),
    ("baroco", (("some_not", "a", "b"), ("all", "c", "b")), ("some_not", "a", "c")),
    ("bocardo", (("some_not", "b", "c"), ("all", "b", "a")), ("some_not", "a", "c")),
    ("convert_no", (("no", "a", "b"),), ("no", "b", "a")),
    ("convert_some", (("some", "a", "b"),), ("some", "b", "a")),
)


@dataclass(frozen=True)
class Step:
    stmt: Stmt
    rule: str            # "premise" or a RULES name
    uses: tuple[int, ...]  # indexes of earlier steps


def _bind(pattern: tuple[str, str, str], st: Stmt, env: dict[str, str]) -> dict[str, str] | None:
    if pattern[0] != st.q:
        return None
    out = dict(env)
    for var, val in ((pattern[1], st.s), (pattern[2], st.p)):
        if out.get(var, val) != val:
            return None
        out[var] = val
    return out


def prove(premises: Sequence[Stmt], goal: Stmt, max_facts: int = 5000) -> list[Step] | None:
    """Forward-chain the rules from the premises until ``goal`` appears; return the proof (only
    the steps the goal depends on, premises first, in dependency order), or None. Sound, not
    complete (it never reasons from an empty term or from contradictory premises); the generator
    only emits a "valid" puzzle whose proof this finds."""
    facts: dict[Stmt, Step] = {}
    order: list[Stmt] = []
    for st in premises:
        if st not in facts:
            facts[st] = Step(st, "premise", ())
            order.append(st)
    i = 0
    changed = True
    while goal not in facts and changed and len(order) < max_facts:
        changed = False
        snapshot = list(order)
        for name, pats, concl in RULES:
            if len(pats) == 1:
                for st in snapshot:
                    env = _bind(pats[0], st, {})
                    if env is None:
                        continue
                    new = Stmt(concl[0], env[concl[1]], env[concl[2]])
                    if new not in facts:
                        facts[new] = Step(new, name, (order.index(st),))
                        order.append(new)
                        changed = True
            else:
                for st1 in snapshot:
                    env1 = _bind(pats[0], st1, {})
                    if env1 is None:
                        continue
                    for st2 in snapshot:
                        env2 = _bind(pats[1], st2, env1)
                        if env2 is None:
                            continue
                        new = Stmt(concl[0], env2[concl[1]], env2[concl[2]])
                        if new.s == new.p or new in facts:
                            continue
                        facts[new] = Step(new, name, (order.index(st1), order.index(st2)))
                        order.append(new)
                        changed = True
        i += 1
    if goal not in facts:
        return None
    # keep only what the goal needs, renumbered
    needed: set[int] = set()
    stack = [order.index(goal)]
    while stack:
        j = stack.pop()
        if j in needed:
            continue
        needed.add(j)
        stack.extend(facts[order[j]].uses)
    keep = sorted(needed)
    renum = {old: new for new, old in enumerate(keep)}
    return [Step(order[j], facts[order[j]].rule, tuple(renum[u] for u in facts[order[j]].uses)) for j in keep]


def proof_to_json(steps: Sequence[Step]) -> list[dict]:
    return [{"stmt": s.stmt.as_list(), "rule": s.rule, "uses": list(s.uses)} for s in steps]
