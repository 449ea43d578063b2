"""How fast training normally steps: the median seconds per optimizer step.

Source, best first: ``logs/metrics.jsonl`` (one line per Trainer log event with ``time`` and
``global_step``, written by trainer/engine/metrics_log.py), then the monitor's own samples of the
status file's global step (coarser: one sample per check). Only consecutive events of the same job
count, so the gap between two jobs (or a restart) never looks like one slow step.
"""
from __future__ import annotations

import statistics
from pathlib import Path
from typing import Iterable

from foundation.json_lines import iter_json_lines, tail_lines

METRICS_FILE = "metrics.jsonl"
TAIL_BYTES = 256 * 1024
MAX_SAMPLES = 64


def step_times(samples: Iterable[tuple[float, int, str]]) -> list[float]:
    """Seconds per step between consecutive (time, global_step, job) samples of the same job."""
    out, prev = [], None
    for t, step, job in samples:
        if prev is not None and prev[2] == job and step > prev[1] and t > prev[0]:
            out.append((t - prev[0]) / (step - prev[1]))
        prev = (t, step, job)
    return out[-MAX_SAMPLES:]


def from_metrics_log(logs_dir: Path) -> float | None:
    samples = [(float(r["time"]), int(r["global_step"]), str(r.get("job_id") or ""))
               for r in iter_json_lines(tail_lines(logs_dir / METRICS_FILE, TAIL_BYTES))
               if "loss" in r and isinstance(r.get("time"), (int, float)) and isinstance(r.get("global_step"), int)]
    times = step_times(samples)
    return statistics.median(times) if times else None


def median_step_time(logs_dir: Path, own_samples: list[list] | None = None) -> tuple[float | None, str]:
    """(median seconds per step, where it came from: metrics.jsonl | status samples | none)."""
    m = from_metrics_log(logs_dir)
    if m is not None:
        return m, "metrics.jsonl"
    times = step_times((float(t), int(s), str(j)) for t, s, j in (own_samples or []))
    if times:
        return statistics.median(times), "status samples"
    return None, "none"
