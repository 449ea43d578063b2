"""What a syllo puzzle is: its vocabulary, its difficulty levels and the ``Puzzle`` record.

A puzzle is a list of premises (``Stmt``: all / no / some / some_not over nonsense or everyday
plural nouns) and a question of one of two kinds:

* ``judge``:  "Does it follow that <conclusion>?"  answer ``valid`` or ``invalid``.
* ``derive``: "What follows with S as subject and P as predicate?"  answer the one conclusion
  about S and P that follows, in canonical form ("all S are P", "no S are P", "some S are P",
  "some S are not P"), or ``nothing follows``. A derive puzzle is only emitted when exactly one
  of the four forms follows (or none does), so the answer is unique.

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
the B"). Half the puzzles of every level are negatives (invalid / nothing follows), and the
generator balances answers within every question template (``syllo.balance``), so the question's
wording alone predicts nothing. Semantics are modern (terms may be empty, no existential import;
see ``syllo.logic``), and every prompt says so (``syllo.rendering.READING_NOTE``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from syllo.logic import Stmt

GENERATOR_VERSION = 2

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
NOTHING = "nothing follows"
DIFFICULTIES = ("easy", "medium", "hard", "expert")


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


VALID_PATTERNS = ("barbara_chain", "celarent_chain", "darii_chain", "ferio_chain", "baroco_chain")
INVALID_PATTERNS = ("illicit_conversion", "two_negatives", "two_particulars", "existential_fallacy",
                    "converse_conclusion", "too_strong", "broken_chain", "negated_conclusion")
# the invalid patterns that leave nothing to conclude about the chain's ends (usable for derive)
CHAIN_BREAKING = ("illicit_conversion", "two_negatives", "two_particulars", "broken_chain")
LEVELS: dict[str, Level] = {
    # easy has ferio/baroco so that "some S are not P?" can be valid too (balanced answers per template)
    "easy": Level((2, 2), (0, 0), False, 0.0, 0.0, 0.0, 0.0,
                  ("barbara_chain", "celarent_chain", "darii_chain", "ferio_chain", "baroco_chain"),
                  ("illicit_conversion", "two_negatives", "converse_conclusion", "too_strong")),
    "medium": Level((2, 3), (0, 1), True, 0.25, 0.0, 0.0, 0.2, VALID_PATTERNS,
                    ("illicit_conversion", "two_negatives", "two_particulars", "converse_conclusion",
                     "too_strong", "broken_chain", "negated_conclusion")),
    "hard": Level((3, 4), (1, 2), True, 0.5, 0.3, 0.3, 0.3, VALID_PATTERNS, INVALID_PATTERNS),
    "expert": Level((4, 5), (2, 3), True, 0.5, 0.6, 0.5, 0.3, VALID_PATTERNS, INVALID_PATTERNS),
}


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
