"""Is the work stuck? Pure decisions over status documents, the monitor's memory and a clock.

Training is stuck when the daemon's heartbeat is fresh, the daemon is training (not paused) and the
lineage's global step has not changed for longer than ``max(step_factor x median step time,
evaluation_budget)``: the evaluation budget is the floor because an in-training evaluation or a
checkpoint save legitimately holds the step still. Not counted: a job still loading (engine status
``starting``: the daemon's own ``daemon.stall_timeout`` covers that), a paused job (the clock starts
again on resume).

An evaluation is stuck when the evaluation daemon's heartbeat is fresh but ``current`` (the
checkpoint it evaluates) has not changed for longer than ``evaluation_budget``.

A process whose heartbeat is stale is not judged here: the watchdog restarts it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from foundation.status_io import parse_iso

MAX_SAMPLES = 64
STEPPING = ("training", "evaluating", "saving")


@dataclass(frozen=True)
class Limits:
    step_factor: float = 10.0
    evaluation_budget: float = 1800.0
    heartbeat_stale_s: float = 300.0
    """Older heartbeats are the watchdog's business (dead or frozen process), not a stuck job."""

    def training_limit(self, median_step_s: float | None) -> float:
        return max(self.step_factor * (median_step_s or 0.0), self.evaluation_budget)


@dataclass
class Stuck:
    kind: str
    """training | evaluation"""
    detail: str
    stalled_s: float
    limit_s: float
    what: dict[str, Any]
    """job_id + step, or checkpoint: what did not progress."""


def _epoch(iso: Any) -> float | None:
    try:
        return parse_iso(iso).timestamp() if isinstance(iso, str) else None
    except ValueError:
        return None


def heartbeat_age(doc: dict, now: float, key: str = "heartbeat_at") -> float | None:
    beat = _epoch(doc.get(key) if key in doc else doc.get("heartbeat_at"))
    return None if beat is None else now - beat


def training_step(doc: dict) -> int | None:
    """The lineage's global step: the engine's ``current_step`` or the daemon's ``daemon_seen_step``
    (the daemon sees every step; the engine writes at logging steps), whichever is further."""
    steps = [doc.get(k) for k in ("current_step", "daemon_seen_step") if isinstance(doc.get(k), int)]
    return max(steps) if steps else None


def training_active(doc: dict, now: float, limits: Limits) -> str | None:
    """None when the step should be moving; else why it is not judged."""
    age = heartbeat_age(doc, now, "daemon_heartbeat_at")
    if age is None or age > limits.heartbeat_stale_s:
        return "training daemon heartbeat stale or missing (the watchdog's business)"
    if doc.get("state") != "training" or not doc.get("job_id"):
        return f"daemon {doc.get('state') or 'not running'}"
    if doc.get("paused") or doc.get("status") == "paused":
        return "paused"
    if doc.get("status") not in STEPPING:
        return f"job {doc.get('status') or 'starting'} (not stepping yet)"
    if training_step(doc) is None:
        return "no global step yet"
    return None


def check_training(doc: dict, track: dict, now: float, limits: Limits,
                   median_step_s: float | None) -> tuple[dict, Stuck | None, dict]:
    """(new track, Stuck or None, what to show). ``track``: {job_id, step, since, samples}."""
    why_not = training_active(doc, now, limits)
    samples = list(track.get("samples") or [])
    if why_not is not None:
        return {"samples": samples}, None, {"active": False, "why": why_not}
    job, step = doc["job_id"], training_step(doc)
    if track.get("job_id") != job or track.get("step") != step or track.get("since") is None:
        samples = (samples + [[now, step, job]])[-MAX_SAMPLES:]
        track = {"job_id": job, "step": step, "since": now, "samples": samples}
    stalled = now - float(track["since"])
    limit = limits.training_limit(median_step_s)
    info = {"active": True, "job_id": job, "step": step, "stalled_s": round(stalled, 1), "limit_s": round(limit, 1)}
    if stalled <= limit:
        return track, None, info
    detail = (f"job {job}: global step {step} unchanged for {stalled:.0f}s (limit {limit:.0f}s = max("
              f"{limits.step_factor:g} x median step {median_step_s or 0:.2f}s, evaluation budget "
              f"{limits.evaluation_budget:.0f}s)) while the daemon's heartbeat is fresh")
    return track, Stuck("training", detail, stalled, limit, {"job_id": job, "step": step}), info


def check_evaluation(doc: dict, track: dict, now: float, limits: Limits) -> tuple[dict, Stuck | None, dict]:
    """``track``: {checkpoint, since}. ``since`` is the evaluation's own ``started_at`` when given."""
    age = heartbeat_age(doc, now)
    current = doc.get("current") if isinstance(doc.get("current"), dict) else None
    if age is None or age > limits.heartbeat_stale_s:
        return {}, None, {"active": False, "why": "evaluation heartbeat stale or missing (the watchdog's business)"}
    if doc.get("state") != "evaluating" or not current or not current.get("checkpoint"):
        return {}, None, {"active": False, "why": f"evaluation daemon {doc.get('state') or 'not running'}"}
    ck = current["checkpoint"]
    if track.get("checkpoint") != ck or track.get("pid") != doc.get("pid"):
        started = _epoch(current.get("started_at"))
        track = {"checkpoint": ck, "pid": doc.get("pid"), "since": started if started is not None else now}
    stalled = now - float(track["since"])
    info = {"active": True, "checkpoint": ck, "stalled_s": round(stalled, 1), "limit_s": limits.evaluation_budget}
    if stalled <= limits.evaluation_budget:
        return track, None, info
    detail = (f"evaluation of {ck} running for {stalled:.0f}s (evaluation budget {limits.evaluation_budget:.0f}s) "
              "while the evaluation daemon's heartbeat is fresh")
    return track, Stuck("evaluation", detail, stalled, limits.evaluation_budget, {"checkpoint": ck}), info
