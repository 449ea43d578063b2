#!/usr/bin/env python3
"""Generate a batch of syllo puzzles as chat JSONL (see ``syllo/puzzles.py`` for the
puzzles, their difficulty levels and their certificates).

    python3 tools/data/generate_syllo_batch.py --count 1000 \\
        --difficulty easy:0.3,medium:0.5,hard:0.2 --seed 7 --profile plain --output inbox/syllo.jsonl
    trainctl syllo --count 1000 --difficulty hard --output - [--unique]

Why it is shaped like this:

* Deterministic: item ``j`` of each difficulty is drawn from its own RNG seeded by (seed,
  difficulty, j) (``syllo.balance``), so the same arguments give the same file byte for byte, and
  a batch can be extended without changing earlier items.
* Balanced: within every difficulty and question template the answers are balanced (pairs of
  items share a template and take opposite answers), so the wording alone predicts nothing.
* Exact mix: the difficulty weights are turned into counts by largest remainder (not sampled), so
  ``easy:0.3`` of 1000 is exactly 300 items; their order is shuffled by the seed.
* Never the validation suite: items whose puzzle is in the fixed suite (``data/validation/``) are
  re-drawn, because the training daemon refuses any file that contains one. Duplicates within the
  batch are re-drawn too.
* Never again (``--unique``): the same seed reused with another mix gives the same items of each
  difficulty; ``--unique`` excludes every puzzle recorded in ``<base>/data/generated/.fingerprints``
  (``syllo.fingerprint_record``) and records the new ones, so no batch repeats an earlier one.
  The data generation automation always works this way.
* Written atomically (temp file + rename in the target folder), so a daemon watching ``inbox/``
  never sees half a file.

Each line: ``{"messages": [user, assistant], "metadata": {difficulty, answer, pattern, kind, ...}}``,
rendered for ``--profile`` (``render_record`` documents the three forms).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterable

import click

from syllo.batch import PROFILES, generate_batch
from syllo.mix import MixError, allocate, parse_mix

__all__ = ["PROFILES", "MixError", "parse_mix", "allocate", "generate_batch", "write_jsonl_atomic",
           "syllo_command"]


def write_jsonl_atomic(path: Path, records: Iterable[dict]) -> None:
    from foundation.atomic_io import atomic_write_text
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@click.command("syllo")
@click.option("--count", "-n", type=click.IntRange(min=0), default=100, show_default=True, help="Number of puzzles.")
@click.option("--difficulty", "-d", default="easy:0.3,medium:0.4,hard:0.2,expert:0.1", show_default=True,
              help="A level (easy|medium|hard|expert) or a weighted mix 'easy:0.3,medium:0.5,hard:0.2'.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed + arguments = same file.")
@click.option("--profile", "-p", type=click.Choice(PROFILES), default="plain", show_default=True,
              help="Render for this data profile.")
@click.option("--output", "-o", default="-", show_default=True,
              help="Output .jsonl path ('-' for stdout). Written atomically.")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir (its data/validation/ is excluded).")
@click.option("--no-exclude-validation", is_flag=True, help="Do not re-draw puzzles of the validation suite.")
@click.option("--unique", is_flag=True,
              help="Never emit a puzzle recorded in <base>/data/generated/.fingerprints; record the new ones.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on for >= 500 items on a TTY).")
def syllo_command(count: int, difficulty: str, seed: int, profile: str, output: str, base_dir: str | None,
                  no_exclude_validation: bool, unique: bool, progress: bool | None) -> None:
    """Generate syllogism puzzles with computed answers as chat JSONL."""
    from foundation.paths import Paths
    from syllo.batch import fingerprints_of_records
    from syllo.fingerprint_record import FingerprintRecord
    from syllo.suite import REPO_SUITE_DIR, validation_fingerprints

    try:
        mix = parse_mix(difficulty)
    except MixError as e:
        raise click.BadParameter(str(e), param_hint="--difficulty")
    path = Path(output)
    if output != "-" and path.suffix != ".jsonl":
        raise click.BadParameter(f"{output}: the output must be a .jsonl file", param_hint="--output")
    paths = Paths.from_base(base_dir)
    exclude: set[str] = set()
    if not no_exclude_validation:
        exclude = validation_fingerprints(paths.validation) | validation_fingerprints(REPO_SUITE_DIR)
    record = FingerprintRecord.for_base(paths.base) if unique else None
    if record is not None:
        exclude |= record.load()
    bar = None
    if progress or (progress is None and count >= 500):
        from tqdm import tqdm
        bar = tqdm(total=count, desc="syllo", unit="item", file=sys.stderr,
                   disable=None if progress is None else False)
    try:
        recs = generate_batch(count, mix, seed=seed, profile=profile, exclude=exclude,
                              on_item=(lambda i: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if record is not None:  # before the file is visible: see syllo.fingerprint_record
        record.add(fingerprints_of_records(recs))
    if output == "-":
        out = sys.stdout
        for r in recs:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
        out.flush()
        return
    write_jsonl_atomic(path, recs)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["metadata"]["difficulty"]] = counts.get(r["metadata"]["difficulty"], 0) + 1
    click.echo(json.dumps({"output": str(path), "count": len(recs), "by_difficulty": counts,
                           "profile": profile, "seed": seed}), err=True)

