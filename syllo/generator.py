#!/usr/bin/env python3
"""Generate a batch of syllo puzzles as chat JSONL (see ``syllo/puzzles.py`` for the
puzzles, their difficulty levels and their certificates).

    python3 tools/data/generate_syllo_batch.py --count 1000 \\
        --difficulty easy:0.3,medium:0.5,hard:0.2 --seed 7 --profile plain --output inbox/syllo.jsonl
    trainctl syllo --count 1000 --difficulty hard --output -

Why it is shaped like this:

* Deterministic: item ``i`` is drawn from its own RNG seeded by (seed, i), so the same arguments
  give the same file byte for byte, and a batch can be extended without changing earlier items.
* Exact mix: the difficulty weights are turned into counts by largest remainder (not sampled), so
  ``easy:0.3`` of 1000 is exactly 300 items; their order is shuffled by the seed.
* Never the validation suite: items whose puzzle is in the fixed suite (``data/validation/``) are
  re-drawn, because the training daemon refuses any file that contains one. Duplicates within the
  batch are re-drawn too.
* Written atomically (temp file + rename in the target folder), so a daemon watching ``inbox/``
  never sees half a file.

Each line: ``{"messages": [user, assistant], "metadata": {difficulty, answer, pattern, kind, ...}}``,
rendered for ``--profile`` (``render_record`` documents the three forms).
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Callable, Iterable


import click

PROFILES = ("plain", "emoji_think", "regime3")


class MixError(ValueError):
    """A malformed ``--difficulty`` specification."""


def parse_mix(spec: str) -> dict[str, float]:
    """``"easy:0.3,medium:0.5,hard:0.2"`` or ``"hard"`` -> normalised weights."""
    from syllo.puzzles import DIFFICULTIES
    out: dict[str, float] = {}
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        name, _, w = part.partition(":")
        name = name.strip().lower()
        if name not in DIFFICULTIES:
            raise MixError(f"unknown level {name!r} in {spec!r}; expected {', '.join(DIFFICULTIES)}")
        try:
            weight = float(w) if w else 1.0
        except ValueError:
            raise MixError(f"weight {w!r} of {name!r} is not a number") from None
        if weight < 0 or weight != weight:
            raise MixError(f"weight of {name!r} must be >= 0, got {w}")
        out[name] = out.get(name, 0.0) + weight
    total = sum(out.values())
    if not out or total <= 0:
        raise MixError(f"{spec!r} gives no positive weight")
    return {k: v / total for k, v in out.items()}


def allocate(count: int, mix: dict[str, float]) -> dict[str, int]:
    """Largest-remainder apportionment of ``count`` items to the levels of ``mix``."""
    raw = {k: count * w for k, w in mix.items()}
    alloc = {k: int(v) for k, v in raw.items()}
    rest = count - sum(alloc.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - alloc[k]), k))[:rest]:
        alloc[k] += 1
    return alloc


def generate_batch(count: int, mix: dict[str, float] | str, seed: int = 0, profile: str = "plain",
                   exclude: set[str] | None = None,
                   on_item: Callable[[int], None] | None = None) -> list[dict]:
    """``count`` records. ``exclude``: fingerprints (``syllo_suite.validation_fingerprints``) that
    must not appear."""
    from syllo.puzzles import canonical_key_of, make_puzzle, render_record, user_text
    from syllo.suite import _h, fingerprints_of_text

    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if isinstance(mix, str):
        mix = parse_mix(mix)
    alloc = allocate(count, mix)
    order = [d for d, n in alloc.items() for _ in range(n)]
    random.Random(f"syllo-batch:{seed}:order").shuffle(order)
    exclude = exclude or set()
    seen: set[str] = set()
    out: list[dict] = []
    for i, difficulty in enumerate(order):
        for attempt in range(1000):
            rng = random.Random(f"syllo-batch:{seed}:{i}:{attempt}")
            pz = make_puzzle(rng, difficulty)
            key = canonical_key_of(pz)
            if key in seen:
                continue
            if exclude and ((_h("k:", key) in exclude) or (fingerprints_of_text(user_text(pz)) & exclude)):
                continue
            break
        else:  # pragma: no cover - would need a near-exhausted puzzle space
            raise RuntimeError(f"item {i}: no new {difficulty} puzzle after 1000 draws")
        seen.add(key)
        out.append(render_record(pz, profile, index=i, seed=seed))
        if on_item:
            on_item(i)
    return out


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
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on for >= 500 items on a TTY).")
def syllo_command(count: int, difficulty: str, seed: int, profile: str, output: str, base_dir: str | None,
                  no_exclude_validation: bool, progress: bool | None) -> None:
    """Generate syllogism puzzles with computed answers as chat JSONL."""
    from foundation.paths import Paths
    from syllo.suite import REPO_SUITE_DIR, validation_fingerprints

    try:
        mix = parse_mix(difficulty)
    except MixError as e:
        raise click.BadParameter(str(e), param_hint="--difficulty")
    exclude: set[str] = set()
    if not no_exclude_validation:
        paths = Paths.from_base(base_dir)
        exclude = validation_fingerprints(paths.validation) | validation_fingerprints(REPO_SUITE_DIR)
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
    if output == "-":
        out = sys.stdout
        for r in recs:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
        out.flush()
        return
    path = Path(output)
    if path.suffix != ".jsonl":
        raise click.BadParameter(f"{output}: the output must be a .jsonl file", param_hint="--output")
    write_jsonl_atomic(path, recs)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["metadata"]["difficulty"]] = counts.get(r["metadata"]["difficulty"], 0) + 1
    click.echo(json.dumps({"output": str(path), "count": len(recs), "by_difficulty": counts,
                           "profile": profile, "seed": seed}), err=True)

