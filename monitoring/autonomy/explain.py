"""A short, correct explanation of a syllo answer, rendered from the puzzle's certificate (the
proof ``syllo.logic.prove`` found, or the countermodel ``syllo.logic.countermodel`` built).

Used for correction examples of profiles that reason (emoji_think): a rationale that leads to the
right answer, as in STaR (Zelikman et al., arXiv 2203.14465), except that ours is derived by the
exact logic instead of sampled from the model, so it is never a lucky guess with a wrong argument.
"""
from __future__ import annotations

from syllo.logic import Stmt
from syllo.model import NOTHING
from syllo.puzzles import Puzzle


def _proof_lines(pz: Puzzle, steps: list[dict]) -> list[str]:
    number = {tuple(st.as_list()): i + 1 for i, st in enumerate(pz.premises)}
    refs: list[str] = []
    lines: list[str] = []
    for step in steps:
        st = Stmt.from_list(step["stmt"])
        if step["rule"] == "premise":
            refs.append(f"premise {number.get(tuple(step['stmt']), '?')} ({st.text()})")
            continue
        used = " and ".join(refs[u] for u in step["uses"])
        lines.append(f"From {used}, by {step['rule'].replace('_', ' ')}: {st.text()}.")
        refs.append(f"'{st.text()}'")
    return lines


def _countermodel_line(model: dict, claim: Stmt) -> str:
    members: dict[int, list[str]] = {}
    for term, inds in model.items():
        for i in inds:
            members.setdefault(i, []).append(term)
    parts = [f"thing {i + 1} is among the {' and the '.join(sorted(ts))}" for i, ts in sorted(members.items())]
    empty = sorted(t for t, inds in model.items() if not inds)
    if empty:
        parts.append("there are no " + " and no ".join(empty))
    world = "; ".join(parts) if parts else "nothing exists"
    return f"Counterexample: {world}. Every premise holds there, but '{claim.text()}' is false."


def explanation(pz: Puzzle) -> str:
    """Derivation (valid) or counterexample (invalid / nothing follows) for ``pz``'s answer."""
    cert = pz.certificate or {}
    if pz.kind == "judge":
        assert pz.conclusion is not None
        if "proof" in cert:
            return "\n".join(_proof_lines(pz, cert["proof"]) + ["So the conclusion follows."])
        return _countermodel_line(cert.get("countermodel") or {}, pz.conclusion) + " So it does not follow."
    if pz.answer != NOTHING and "proof" in cert:
        return "\n".join(_proof_lines(pz, cert["proof"]) + [f"So {pz.answer}; no other statement follows."])
    cms = cert.get("countermodels") or {}
    q = next(iter(cms), None)
    lead = f"No statement about {pz.subject} and {pz.predicate} follows: each is false in some situation where the premises hold."
    if q is None:
        return lead
    return lead + " " + _countermodel_line(cms[q], Stmt(q, pz.subject, pz.predicate))


def reasoned_answer(pz: Puzzle) -> str:
    """The assistant turn of a correction for a reasoning profile: the explanation in ``<think>`` tags
    (emoji_think keeps their content inside its frame) and the answer after ``Answer:``."""
    return f"<think>\n{explanation(pz)}\n</think>\nAnswer: {pz.answer}"
