#!/usr/bin/env python3
"""Comparison engine: one composite score per evaluated checkpoint, all of them ranked, best first,
into ``status/model_comparisons.json`` (what the deployment orchestrator deploys from).

Score (weights in config ``evaluation``: ``weight_loss`` 0.4, ``weight_accuracy`` 0.5,
``weight_calibration`` 0.1 by default)::

    loss_score        = min validation loss over the ranked checkpoints / this checkpoint's loss
                        (1.0 for the lowest loss, 0.5 for twice the lowest, ...)
    accuracy          = exact-match accuracy on the suite (0..1)
    calibration_score = 1 - ECE (0..1)
    score = (w_l * loss_score + w_a * accuracy + w_c * calibration_score) / (w_l + w_a + w_c)

Every part lies in [0, 1], so the score does too. A part a checkpoint lacks (e.g. no loss in
server mode) is left out and the remaining weights are renormalised, so checkpoints evaluated
either way stay comparable. Why a ratio to the best loss rather than min-max scaling: with two
checkpoints min-max maps them to exactly 0 and 1 whatever their gap; a ratio keeps a small gap
small. Ties break towards the higher global step (the newer model). Only checkpoints whose folder
still exists are ranked (training prunes old ones; they cannot be deployed).

``status/model_comparisons.json`` (all fields always present):

* ``schema_version``, ``updated_at`` (+ ``pid``, ``heartbeat_at`` when written by a daemon)
* ``suite_version``; ``weights``: ``{validation_loss, accuracy, calibration}``; ``score_formula`` (text)
* ``n_ranked``
* ``ranking``: best first, ``[{rank (1 = best), checkpoint, global_step, job_id, source_file, score,
  parts: {validation_loss, loss_score, accuracy, ece, calibration_score}, by_difficulty, n_items,
  evaluated_at, flagged}]``; ``flagged`` is true when the regression monitor's rules flag it
* ``best``: ``ranking[0]`` or null; ``best_deployable``: the best entry that is not flagged, or null

Checkpoint paths are relative to the base dir when inside it.
"""
from __future__ import annotations

import sys
from pathlib import Path


STATUS_NAME = "model_comparisons.json"
SCORE_FORMULA = ("(w_loss*min_loss/loss + w_acc*accuracy + w_cal*(1-ece)) / (sum of the weights of the parts "
                 "present)")


def rank(evals: list[dict], weights: dict[str, float], flagged: set[str] | None = None) -> list[dict]:
    """Rank ``latest_evaluations`` rows; returns the ranking entries (see the module docstring)."""
    flagged = flagged or set()
    losses = [e["validation_loss"] for e in evals if e.get("validation_loss") is not None and e["validation_loss"] > 0]
    min_loss = min(losses) if losses else None
    entries = []
    for e in evals:
        loss = e.get("validation_loss")
        loss_score = (min_loss / loss) if (min_loss is not None and loss is not None and loss > 0) else None
        acc = e.get("accuracy")
        ece = (e.get("calibration") or {}).get("ece")
        cal_score = None if ece is None else max(0.0, 1.0 - ece)
        parts = [(weights.get("validation_loss", 0.0), loss_score), (weights.get("accuracy", 0.0), acc),
                 (weights.get("calibration", 0.0), cal_score)]
        wsum = sum(w for w, v in parts if v is not None and w > 0)
        score = sum(w * v for w, v in parts if v is not None and w > 0) / wsum if wsum > 0 else None
        entries.append({
            "checkpoint": e["checkpoint_path"], "global_step": e["global_step"], "job_id": e.get("job_id"),
            "source_file": e.get("source_file"), "score": score,
            "parts": {"validation_loss": loss, "loss_score": loss_score, "accuracy": acc, "ece": ece,
                      "calibration_score": cal_score},
            "by_difficulty": e.get("by_difficulty") or {}, "n_items": e.get("n_items"),
            "evaluated_at": e.get("evaluated_at"), "flagged": e["checkpoint_path"] in flagged,
        })
    entries.sort(key=lambda x: (-(x["score"] if x["score"] is not None else -1.0), -x["global_step"], x["checkpoint"]))
    for i, x in enumerate(entries, 1):
        x["rank"] = i
    return [{"rank": x.pop("rank"), **x} for x in entries]


def build_status(db, cfg, suite_version: str | None) -> dict:
    from monitoring.evaluation.regression import find_regressions
    ev = cfg.evaluation
    evals = db.latest_evaluations(suite_version)
    flagged = set(find_regressions(evals, ev.regression_loss_ratio, ev.regression_accuracy_drop)["flagged"])
    present = [e for e in evals if Path(e["abs_path"]).is_dir()]
    weights = {"validation_loss": ev.weight_loss, "accuracy": ev.weight_accuracy, "calibration": ev.weight_calibration}
    ranking = rank(present, weights, flagged)
    return {"suite_version": suite_version, "weights": weights, "score_formula": SCORE_FORMULA,
            "n_ranked": len(ranking), "ranking": ranking, "best": ranking[0] if ranking else None,
            "best_deployable": next((r for r in ranking if not r["flagged"]), None)}


def run_once(base_dir=None, config=None, suite_version: str | None = None, daemon: bool = False) -> dict:
    from foundation.model_db import ModelDB
    from foundation.paths import Paths
    from foundation.status_io import write_status
    from monitoring.evaluation.calibration import _default_suite_version
    from trainer.config.loader import load_config
    paths = Paths.from_base(base_dir)
    cfg = config if config is not None else load_config(base_dir=paths.base)
    if suite_version is None:
        suite_version = _default_suite_version(paths)
    payload = build_status(ModelDB(paths.model_db, base_dir=paths.base), cfg, suite_version)
    return write_status(paths.status_file(STATUS_NAME), payload, daemon=daemon)

