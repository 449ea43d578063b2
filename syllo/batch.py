"""Drawing batches of puzzles: balanced, deterministic per item, never a puzzle to exclude.

``draw_items`` draws the first ``n`` items of one difficulty stream (``syllo.balance``: item ``j``
is a function of (namespace, difficulty, j) only); ``generate_batch`` draws every difficulty of a
mix and renders the records. An item whose puzzle is excluded (a fingerprint of the validation
suite, of the persistent record of what was already emitted, or a duplicate within the batch) is
re-drawn for the same target, so the answer balance survives the exclusions.

``patterns`` narrows a batch to puzzles whose metadata matches (for the adversarial miner's "more
of the failing patterns"): a mapping ``{metadata key: value or collection of allowed values}``,
e.g. ``{"pattern": ["two_negatives", "too_strong"], "n_premises": 3}``, or a callable
``meta -> bool``. Keys are those of ``render_record``'s metadata (``pattern``, ``kind``, ``valid``,
``n_premises``, ``n_terms``, ``chain_length``, ``template``, ``premise_forms``, ...). A filter can
ask for puzzles that are all of one answer (an invalid pattern is always invalid), so balance is
then best effort: the balanced target is tried first, then only its answer (the filter may fix the
template), then a free draw (``_relaxed``).
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any, Callable, Iterable, Mapping

from syllo.balance import item_rng, target
from syllo.construction import make_puzzle
from syllo.model import DIFFICULTIES, Puzzle
from syllo.parsing import key_fingerprint
from syllo.puzzles import canonical_key_of, puzzle_from_metadata, render_record

PatternFilter = Mapping[str, Any] | Callable[[dict], bool] | None
NAMESPACE = "syllo-batch"
TARGET_ATTEMPTS = 40
MAX_ATTEMPTS = 2000
PROFILES = ("plain", "emoji_think", "regime3")


def _allowed(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, Collection) and not isinstance(wanted, (str, bytes, Mapping)):
        return value in wanted
    return value == wanted


def matches(meta: dict, patterns: PatternFilter) -> bool:
    """True when a record's metadata passes the filter (None passes everything)."""
    if patterns is None:
        return True
    if callable(patterns):
        return bool(patterns(meta))
    return all(_allowed(meta.get(k), v) for k, v in patterns.items())


def validate_patterns(patterns: PatternFilter) -> None:
    if patterns is None or callable(patterns):
        return
    if not isinstance(patterns, Mapping) or not patterns:
        raise ValueError(f"patterns must be a non-empty mapping or a callable, got {patterns!r}")
    if "difficulty" in patterns:
        raise ValueError("patterns: choose difficulties with the mix, not the filter")


def fingerprint(pz: Puzzle) -> str:
    return key_fingerprint(canonical_key_of(pz))


def record_fingerprint(rec: dict) -> str | None:
    """The fingerprint of a generated record (from its metadata), or None for a non-syllo record."""
    meta = rec.get("metadata") if isinstance(rec, dict) else None
    if not isinstance(meta, dict) or meta.get("source") != "syllo":
        return None
    try:
        return fingerprint(puzzle_from_metadata(meta))
    except ValueError:
        return None


def _relaxed(tgt, attempt: int, filtered: bool) -> dict:
    """The target, relaxed step by step when a filter rejects it: first the whole target, then
    only its answer (the template may be what the filter fixes), then nothing."""
    if not filtered or attempt < TARGET_ATTEMPTS:
        return tgt.kwargs()
    if attempt < 2 * TARGET_ATTEMPTS:
        return {"want_valid": tgt.want_valid}
    return {}


def draw_items(seed: int | str, difficulty: str, n: int, *, namespace: str = NAMESPACE,
               exclude: Collection[str] = frozenset(), seen: set[str] | None = None,
               patterns: PatternFilter = None, max_attempts: int = MAX_ATTEMPTS) -> list[Puzzle]:
    """The first ``n`` items of the ``difficulty`` stream of ``(namespace, seed)``. ``exclude``:
    fingerprints never to emit; ``seen``: fingerprints already in this batch (updated)."""
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown difficulty {difficulty!r}; expected one of {', '.join(DIFFICULTIES)}")
    validate_patterns(patterns)
    ns = f"{namespace}:{seed}"
    seen = set() if seen is None else seen
    out: list[Puzzle] = []
    for j in range(n):
        tgt = target(ns, difficulty, j)
        for attempt in range(max_attempts):
            rng = item_rng(ns, difficulty, j, attempt)
            pz = make_puzzle(rng, difficulty, **_relaxed(tgt, attempt, patterns is not None))
            fp = fingerprint(pz)
            if fp in seen or fp in exclude:
                continue
            if patterns is not None and not matches(render_record(pz)["metadata"], patterns):
                continue
            break
        else:
            why = "matching the pattern filter" if patterns is not None else "not excluded"
            raise RuntimeError(f"{difficulty} item {j}: no puzzle {why} after {max_attempts} draws "
                               f"(filter {patterns!r})")
        seen.add(fp)
        out.append(pz)
    return out


def generate_batch(count: int, mix: dict[str, float] | str, seed: int = 0, profile: str = "plain",
                   exclude: Collection[str] | None = None, on_item: Callable[[int], None] | None = None,
                   patterns: PatternFilter = None, max_attempts: int = MAX_ATTEMPTS) -> list[dict]:
    """``count`` records at the difficulty ``mix`` (exact counts by largest remainder; order
    shuffled by the seed). ``exclude``: fingerprints (``syllo.suite.validation_fingerprints``, a
    ``FingerprintRecord``'s) that must not appear; ``patterns``: metadata filter (module doc);
    ``max_attempts``: draws per item before giving up (RuntimeError)."""
    import random

    from syllo.mix import allocate, parse_mix
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if isinstance(mix, str):
        mix = parse_mix(mix)
    alloc = allocate(count, mix)
    exclude = exclude if exclude is not None else frozenset()
    seen: set[str] = set()
    puzzles: list[Puzzle] = []
    done = 0
    for difficulty in DIFFICULTIES:
        n = alloc.get(difficulty, 0)
        if not n:
            continue
        for pz in draw_items(seed, difficulty, n, exclude=exclude, seen=seen, patterns=patterns,
                             max_attempts=max_attempts):
            puzzles.append(pz)
            if on_item:
                on_item(done)
            done += 1
    random.Random(f"{NAMESPACE}:{seed}:order").shuffle(puzzles)
    return [render_record(pz, profile, index=i, seed=seed) for i, pz in enumerate(puzzles)]


def fingerprints_of_records(records: Iterable[dict]) -> set[str]:
    return {fp for fp in map(record_fingerprint, records) if fp is not None}
