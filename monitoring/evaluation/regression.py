#!/usr/bin/env python3
"""Regression monitor: flags a checkpoint that is worse than the best one before it, so the
deployment orchestrator never deploys it.

Rules (thresholds in config ``evaluation``), applied to evaluated checkpoints in global-step order
(ties by creation time), each compared with the best of the checkpoints *before* it:

* ``validation_loss``: flagged when its loss > best earlier loss * ``regression_loss_ratio``
  (1.15: more than 15% above the best so far). The loss is the suite validation loss measured by
  the automated tests; a checkpoint evaluated without one (server mode) falls back to the
  trainer's validation loss recorded with the checkpoint, and is skipped when it has neither.
* ``accuracy``: flagged when its accuracy < best earlier accuracy - ``regression_accuracy_drop``.

"Before" is by global step because a regression means the lineage got worse than it was; the
first checkpoint of a lineage is never flagged. Flags are recomputed from the model registry on
every run, so they are deterministic and survive restarts.

``status/regression_monitoring.json`` (all fields always present):

* ``schema_version``, ``updated_at`` (+ ``pid``, ``heartbeat_at`` when written by a daemon)
* ``suite_version``; ``thresholds``: ``{loss_ratio, accuracy_drop}``
* ``n_checked``: evaluated checkpoints considered
* ``flagged``: sorted list of flagged checkpoint paths (relative to the base dir when inside it),
  the list the deployment orchestrator checks
* ``alerts``: ``[{checkpoint, global_step, metric ("validation_loss" | "accuracy"), value, best,
  best_checkpoint, threshold, message, detected_at}]``; ``threshold`` is the limit that was
  crossed (best * ratio, or best - drop); ``detected_at`` is the evaluation's time
* ``best_so_far``: ``{"validation_loss": {value, checkpoint} | null, "accuracy": {value, checkpoint} | null}``
  over all evaluated checkpoints
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


STATUS_NAME = "regression_monitoring.json"


def _loss_of(e: dict) -> float | None:
    v = e.get("validation_loss")
    return v if v is not None else e.get("train_validation_loss")


def find_regressions(evals: list[dict], loss_ratio: float = 1.15, accuracy_drop: float = 0.10) -> dict:
    """``evals``: the registry's ``latest_evaluations`` rows. Returns ``{flagged, alerts, best_so_far,
    n_checked}`` (see the module docstring)."""
    rows = sorted(evals, key=lambda e: (e["global_step"], e.get("checkpoint_created_at") or "", e["checkpoint_id"]))
    best_loss: tuple[float, str] | None = None
    best_acc: tuple[float, str] | None = None
    alerts: list[dict[str, Any]] = []
    flagged: set[str] = set()
    for e in rows:
        ck = e["checkpoint_path"]
        loss, acc = _loss_of(e), e.get("accuracy")
        if loss is not None and best_loss is not None and loss > best_loss[0] * loss_ratio:
            thr = best_loss[0] * loss_ratio
            alerts.append({"checkpoint": ck, "global_step": e["global_step"], "metric": "validation_loss",
                           "value": loss, "best": best_loss[0], "best_checkpoint": best_loss[1], "threshold": thr,
                           "message": f"validation loss {loss:.4f} is {loss / best_loss[0]:.2f}x the best so far "
                                      f"({best_loss[0]:.4f} at {best_loss[1]}); limit {loss_ratio:.2f}x",
                           "detected_at": e["evaluated_at"]})
            flagged.add(ck)
        if acc is not None and best_acc is not None and acc < best_acc[0] - accuracy_drop:
            thr = best_acc[0] - accuracy_drop
            alerts.append({"checkpoint": ck, "global_step": e["global_step"], "metric": "accuracy",
                           "value": acc, "best": best_acc[0], "best_checkpoint": best_acc[1], "threshold": thr,
                           "message": f"accuracy {acc:.3f} dropped more than {accuracy_drop:.3f} below the best "
                                      f"so far ({best_acc[0]:.3f} at {best_acc[1]})",
                           "detected_at": e["evaluated_at"]})
            flagged.add(ck)
        if loss is not None and (best_loss is None or loss < best_loss[0]):
            best_loss = (loss, ck)
        if acc is not None and (best_acc is None or acc > best_acc[0]):
            best_acc = (acc, ck)
    return {
        "n_checked": len(rows), "flagged": sorted(flagged), "alerts": alerts,
        "best_so_far": {
            "validation_loss": None if best_loss is None else {"value": best_loss[0], "checkpoint": best_loss[1]},
            "accuracy": None if best_acc is None else {"value": best_acc[0], "checkpoint": best_acc[1]},
        },
    }


def run_once(base_dir=None, config=None, suite_version: str | None = None, daemon: bool = False) -> dict:
    from foundation.model_db import ModelDB
    from foundation.paths import Paths
    from foundation.status_io import write_status
    from monitoring.evaluation.calibration import _default_suite_version
    from trainer.config.loader import load_config
    paths = Paths.from_base(base_dir)
    cfg = config if config is not None else load_config(base_dir=paths.base)
    ev = cfg.evaluation
    if suite_version is None:
        suite_version = _default_suite_version(paths)
    db = ModelDB(paths.model_db, base_dir=paths.base)
    res = find_regressions(db.latest_evaluations(suite_version), ev.regression_loss_ratio, ev.regression_accuracy_drop)
    payload = {"suite_version": suite_version,
               "thresholds": {"loss_ratio": ev.regression_loss_ratio, "accuracy_drop": ev.regression_accuracy_drop},
               **res}
    return write_status(paths.status_file(STATUS_NAME), payload, daemon=daemon)

