"""One global step counter across files and restarts.

The lineage's step lives in ``models/current_model/lineage.json`` (written by the model swap);
a high-water mark in ``queue/.jobs/lineage_state.json`` remembers steps of jobs that were killed,
skipped or failed after they wrote checkpoints, so a step number is never reused.
"""
from __future__ import annotations

from typing import Callable

from core.daemon.model_swap import read_lineage
from core.jobqueue.store import QueueStore
from foundation.atomic_io import atomic_write_json, read_json
from foundation.paths import Paths
from foundation.status_io import utc_now_iso

LINEAGE_STATE = "lineage_state.json"


def lineage_state(store: QueueStore) -> dict:
    return read_json(store.jobs_dir / LINEAGE_STATE) or {}


def bump_high_water(store: QueueStore, step: int | None, clock: Callable[[], float]) -> None:
    if step is None:
        return
    if int(step) > int(lineage_state(store).get("high_water", 0)):
        atomic_write_json(store.jobs_dir / LINEAGE_STATE, {"high_water": int(step), "updated_at": utc_now_iso(clock)})


def current_global_step(paths: Paths) -> int:
    """The global step of ``models/current_model/``."""
    return int(read_lineage(paths.current_model).get("global_step") or 0)


def next_global_start(paths: Paths, store: QueueStore) -> int:
    """Never reuse a step: the max of the current model's step, the recorded high-water mark
    and every complete checkpoint's step."""
    best = max(current_global_step(paths), int(lineage_state(store).get("high_water", 0)))
    try:
        for job_dir in paths.checkpoints.iterdir():
            for p in job_dir.glob("step-*"):
                if p.name[5:].isdigit():
                    best = max(best, int(p.name[5:]))
    except FileNotFoundError:
        pass
    return best
