"""Difficulty mixes: ``"easy:0.3,medium:0.5,hard:0.2"`` parsed, and turned into exact counts."""
from __future__ import annotations

import math
from typing import Any

from syllo.model import DIFFICULTIES


class MixError(ValueError):
    """A malformed ``--difficulty`` specification."""


def parse_mix(spec: str) -> dict[str, float]:
    """``"easy:0.3,medium:0.5,hard:0.2"`` or ``"hard"`` -> normalised weights."""
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
        if not math.isfinite(weight) or weight < 0:
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


def mix_from_mapping(obj: Any) -> dict[str, float]:
    """A mix given as a JSON object ``{"easy": 0.6, ...}`` -> normalised weights (MixError when
    malformed: not an object, unknown level, a weight that is not a number >= 0, none positive)."""
    if not isinstance(obj, dict) or not obj:
        raise MixError(f"a mix is a non-empty object of level: weight, got {obj!r}")
    parts = []
    for k, v in obj.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise MixError(f"weight of {k!r} is not a number: {v!r}")
        parts.append(f"{k}:{float(v)!r}")
    return parse_mix(",".join(parts))
