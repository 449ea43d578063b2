"""Balanced drawing: what item ``j`` of a difficulty stream must be, so that the question's wording
alone predicts nothing.

Why pairs: items ``2m`` and ``2m + 1`` of a stream share one question template (judge: the
conclusion's quantifier and phrasing, e.g. "Does it follow that some X are not Y?"; derive: the
one derive question) and take opposite answers (valid/invalid, or a form/"nothing follows"). So
every even-length prefix of a stream is exactly balanced within each template, and a predictor
that sees only the question with its terms blanked scores exactly chance on it (at most one item
off on an odd length). The template of a pair is drawn with the level's own odds (derive share,
paraphrase share, the four quantifiers alike), so the level's mix of questions is unchanged.

Everything is a pure function of (namespace, difficulty, index): item ``j`` of a stream is the
same whatever the batch's mix or size, and the puzzle drawn for it uses its own RNG
``"<namespace>:<difficulty>:<j>:<attempt>"``.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from syllo.logic import QUANTIFIERS
from syllo.model import LEVELS, PHRASES


@dataclass(frozen=True)
class Target:
    """What a drawn puzzle must be (``make_puzzle`` keyword arguments)."""

    kind: str
    want_valid: bool
    conclusion_q: str | None = None
    conclusion_phrasing: int | None = None

    def kwargs(self) -> dict:
        return {"kind": self.kind, "want_valid": self.want_valid, "conclusion_q": self.conclusion_q,
                "conclusion_phrasing": self.conclusion_phrasing}


def target(namespace: str, difficulty: str, j: int) -> Target:
    """The target of item ``j`` (0-based) of the ``difficulty`` stream in ``namespace``."""
    lv = LEVELS[difficulty]
    m, second = divmod(j, 2)
    rng = random.Random(f"{namespace}:{difficulty}:pair:{m}")
    kind = "derive" if rng.random() < lv.derive_p else "judge"
    first_valid = rng.random() < 0.5
    want_valid = first_valid != bool(second)
    if kind == "derive":
        return Target(kind, want_valid)
    q = rng.choice(QUANTIFIERS)
    variant = rng.randrange(len(PHRASES[q])) if rng.random() < lv.paraphrase_p else 0
    return Target(kind, want_valid, q, variant)


def item_rng(namespace: str, difficulty: str, j: int, attempt: int) -> random.Random:
    return random.Random(f"{namespace}:{difficulty}:{j}:{attempt}")
