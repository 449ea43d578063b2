"""Syllo puzzle *patterns* and the leak-proof way the miner and the self-correction loop make and
queue new puzzles of a pattern.

A pattern is what a failure is grouped by, read from a puzzle's metadata:

* ``difficulty``      the level (easy .. expert);
* ``premise_forms``   the quantifiers of the premises (``all+all+some_not``: syllo's ``premise_forms``);
* ``question_form``   ``judge:<quantifier of the conclusion>`` or ``derive``;
* ``n_terms``         how many terms the premises mention (chain + distractors).

New puzzles of a pattern come from ``syllo.batch.generate_batch`` with a metadata filter (the one
generator the data generation automation uses too); when no puzzle of the exact pattern turns up,
the term count, then the premise forms are relaxed. Leak guard and no repeats: the exclusion set is
the validation suite's fingerprints (the base dir's and the repository's) plus the persistent record
of everything generated into the base dir (``data/generated/.fingerprints``), and what is written
here is added to that record; every file is checked once more with ``contains_validation_items``
before it is written, so no suite item reaches ``data/`` or the queue.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable

from foundation.atomic_io import atomic_write_bytes
from foundation.paths import Paths
from syllo.suite import REPO_SUITE_DIR, contains_validation_items, validation_fingerprints

PATTERN_FIELDS = ("difficulty", "premise_forms", "question_form", "n_terms")


def pattern_of(meta: dict) -> dict:
    """The pattern of a syllo record's metadata (missing parts read "?")."""
    concl = meta.get("conclusion")
    if meta.get("kind") == "derive":
        question = "derive"
    elif isinstance(concl, (list, tuple)) and concl:
        question = f"judge:{concl[0]}"
    else:
        question = "judge:?"
    forms = meta.get("premise_forms")
    if not isinstance(forms, str):
        prem = meta.get("premises")
        forms = "+".join(sorted(str(x[0]) for x in prem if x)) if isinstance(prem, list) else "?"
    n_terms = meta.get("n_terms")
    return {"difficulty": str(meta.get("difficulty", "?")), "premise_forms": forms,
            "question_form": question, "n_terms": int(n_terms) if isinstance(n_terms, int) else None}


def pattern_key(p: dict) -> str:
    """``medium|all+all+no|judge:no|4``: stable, readable, usable as a JSON key."""
    return "|".join("?" if p.get(k) is None else str(p.get(k)) for k in PATTERN_FIELDS)


def parse_key(key: str) -> dict:
    parts = (key.split("|") + ["?"] * 4)[:4]
    n = parts[3]
    return {"difficulty": parts[0], "premise_forms": parts[1], "question_form": parts[2],
            "n_terms": int(n) if n.isdigit() else None}


def suite_fingerprints(paths: Paths, cfg) -> set[str]:
    """Fingerprints of every suite item, archived versions included (``validation_fingerprints``
    reads the sub-folders too): the base dir's validation folder and the repository's suite."""
    return validation_fingerprints(paths.resolve(cfg.data.validation_dir)) | validation_fingerprints(REPO_SUITE_DIR)


def generated_record(paths: Paths):
    from syllo.fingerprint_record import FingerprintRecord
    return FingerprintRecord.for_base(paths.base)


def _filter(want: dict, fields: tuple[str, ...]):
    def ok(meta: dict) -> bool:
        got = pattern_of(meta)
        return all(got[k] == want.get(k) for k in fields)
    return ok


def records_like(want: dict, n: int, seed: str, exclude: set[str], profile: str) -> list[dict]:
    """``n`` new records of pattern ``want`` (relaxing n_terms, then premise_forms, when the exact
    pattern cannot be drawn); [] when even the question form cannot be had at that level."""
    from syllo.batch import generate_batch
    from syllo.model import DIFFICULTIES
    if want.get("difficulty") not in DIFFICULTIES or n <= 0:
        return []
    strict = PATTERN_FIELDS[1:] if want.get("n_terms") is not None else PATTERN_FIELDS[1:3]
    for fields in (strict, ("premise_forms", "question_form"), ("question_form",)):
        try:
            return generate_batch(n, {want["difficulty"]: 1.0}, seed=f"{seed}:{len(fields)}",
                                  profile=training_profile(profile), exclude=exclude,
                                  patterns=_filter(want, fields))
        except RuntimeError:
            continue
    return []


def with_replay(records: list[dict], ratio: float, seed: str, exclude: set[str], profile: str,
                finish=None) -> list[dict]:
    """``records`` plus ``ratio`` times as many fresh puzzles of the same difficulties, answers
    balanced (``generate_batch``), interleaved in a seeded order. A failing pattern's examples
    often share one answer; replayed balanced items keep training on them from teaching "always
    answer X". ``finish(record)`` renders a replay record like the targeted ones (e.g. a rationale)."""
    import random
    from collections import Counter

    from syllo.batch import fingerprints_of_records, generate_batch
    by_level = Counter(r["metadata"]["difficulty"] for r in records)
    n = round(len(records) * ratio)
    if n <= 0 or not by_level:
        return list(records)
    mix = {lv: c / len(records) for lv, c in by_level.items()}
    fresh = generate_batch(n, mix, seed=f"{seed}:replay", profile=training_profile(profile),
                           exclude=exclude | fingerprints_of_records(records))
    for rec in fresh:
        rec["metadata"]["source_kind"] = "replay"
        if finish is not None:
            finish(rec)
    out = list(records) + fresh
    random.Random(f"{seed}:order").shuffle(out)
    return out


def probe_records(n: int, levels: list[str], seed: str, exclude: set[str]) -> list[dict]:
    """``n`` new plain records spread evenly over ``levels``, answers balanced within each level."""
    from syllo.batch import generate_batch
    from syllo.model import DIFFICULTIES
    levels = [lv for lv in levels if lv in DIFFICULTIES] or ["easy"]
    return generate_batch(n, {lv: 1.0 / len(levels) for lv in levels}, seed=seed, profile="plain", exclude=exclude)


def training_profile(profile_name: str) -> str:
    """The profile a training record is rendered for: regime3 needs its own answer form; emoji_think
    records are plain ones (the engine adds the frame at training time)."""
    return "regime3" if profile_name == "regime3" else "plain"


def check_no_leak(records: list[dict], exclude: set[str], what: str) -> None:
    """Refuse to write ``records`` when any holds a suite item (the last guard before a file)."""
    hits = contains_validation_items(records, exclude)
    if hits:
        raise RuntimeError(f"{what}: records {hits[:5]} match validation-suite items; nothing written")


def write_records(path: Path, records: Iterable[dict]) -> Path:
    """A JSONL file written atomically (temp file + rename in the same folder)."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    atomic_write_bytes(path, data)
    return path


def unique_name(prefix: str, clock=time.time) -> str:
    """``<prefix>-<UTC time>-<random>.jsonl``: never the name of an earlier file."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(clock()))}-{os.urandom(3).hex()}.jsonl"


def queue_copy(src: Path, paths: Paths, priority: str = "high") -> Path:
    """Put a copy of ``src`` into ``inbox/<priority>/`` atomically: it is written as a hidden temp
    file (which the inbox watcher ignores) and renamed, so the daemon never sees half a file; the
    daemon then validates it like any other file."""
    folder = paths.inbox / priority if priority in ("high", "low") else paths.inbox
    dst = folder / src.name
    n = 2
    while dst.exists():
        dst = folder / f"{src.stem}-{n}{src.suffix}"
        n += 1
    atomic_write_bytes(dst, src.read_bytes())
    return dst


def remember(paths: Paths, records: list[dict]) -> int:
    """Add the records' fingerprints to the base dir's record of generated puzzles (so no later batch
    of any generator repeats them)."""
    from syllo.batch import fingerprints_of_records
    return generated_record(paths).add(fingerprints_of_records(records))
