"""Penalty schedules: "multiply the penalty by 8 for the first 4 generated tokens, by 2 for the next 8,
then use the baseline".

Written as ``[{"steps": 4, "multiplier": 8.0}, {"steps": 8, "multiplier": 2.0}]`` in config.json
(``profile.options``). Kept free of torch so that a profile can reject a bad schedule when the config
is loaded (fast, in any process), long before a generation runs; ``core/logit_penalty.py`` uses the
parsed form at every step.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

Window = tuple[int, float]
"""(steps, multiplier): one window of a parsed schedule."""

_KEYS = ("steps", "multiplier")


def parse_schedule(schedule: Iterable[Any] | None, where: str = "schedule") -> tuple[Window, ...]:
    """Validate a schedule and return it as ``((steps, multiplier), ...)``; ``None`` or ``[]`` is no schedule.

    Every window needs exactly ``steps`` (an integer >= 1) and ``multiplier`` (a finite number >= 0).
    Errors are ``ValueError`` naming the window (``where[1].steps``) and what is allowed.
    """
    if schedule is None:
        return ()
    if isinstance(schedule, (str, bytes)) or not isinstance(schedule, (list, tuple)):
        raise ValueError(f"{where} must be a list of {{\"steps\": int, \"multiplier\": number}} objects; "
                         f"got {schedule!r}")
    out: list[Window] = []
    for i, win in enumerate(schedule):
        at = f"{where}[{i}]"
        if not isinstance(win, dict):
            raise ValueError(f"{at} must be an object {{\"steps\": int, \"multiplier\": number}}; got {win!r}")
        unknown = sorted(set(win) - set(_KEYS))
        if unknown:
            raise ValueError(f"{at} has unknown key(s) {', '.join(map(repr, unknown))}; "
                             f"valid keys: {', '.join(_KEYS)}")
        missing = [k for k in _KEYS if k not in win]
        if missing:
            raise ValueError(f"{at} is missing {', '.join(map(repr, missing))}")
        steps, mult = win["steps"], win["multiplier"]
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"{at}.steps must be an integer >= 1; got {steps!r}")
        if isinstance(mult, bool) or not isinstance(mult, (int, float)) or not math.isfinite(mult) or mult < 0:
            raise ValueError(f"{at}.multiplier must be a finite number >= 0; got {mult!r}")
        out.append((steps, float(mult)))
    return tuple(out)


def schedule_multiplier(windows: Sequence[Window], step: int) -> float:
    """Multiplier for generated-token index ``step`` (0 = the first generated token); 1.0 after the
    last window (the baseline)."""
    if step < 0:
        raise ValueError(f"step must be >= 0; got {step}")
    end = 0
    for steps, mult in windows:
        end += steps
        if step < end:
            return mult
    return 1.0
