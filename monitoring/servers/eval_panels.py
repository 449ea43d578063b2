"""The live monitor's evaluation panels: per-checkpoint suite accuracy by difficulty with the deployed
one marked, sample generations, regressions, calibration, deployment, and the autonomous loop's
status files (curriculum, adversarial mining, self-correction), which show "unknown" until their
daemons write them.

The model_db is opened read-only (``mode=ro``): the monitor must never migrate, lock or write the
registry that the daemons share. Queries are the registry's own (``ModelDB`` methods).
"""
from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from foundation.model_db import ModelDB
from monitoring.servers.sources import Sources, unknown

MAX_CHECKPOINTS = 12      # newest checkpoints shown
MAX_SAMPLES = 4           # sample generations shown per checkpoint
SAMPLE_DETAILS_FOR = 6    # checkpoints whose evaluation details (samples) are loaded
AUTONOMY_FILES = {"curriculum": "curriculum_optimization", "adversarial": "adversarial_mining",
                  "self_correction": "self_correction"}
_META_KEYS = {"schema_version", "updated_at", "pid", "heartbeat_at"}


class ReadOnlyModelDB(ModelDB):
    """``ModelDB``'s queries on a read-only connection (no migration, no WAL switch, no writes)."""

    def __init__(self, path: str | Path, base_dir: str | Path):
        self.path = Path(path).resolve()
        self.base_dir = Path(base_dir).resolve()
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path.as_uri() + "?mode=ro", uri=True, timeout=5.0)
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn


def _short(text: Any, n: int = 400) -> Any:
    return text[:n] + "…" if isinstance(text, str) and len(text) > n else text


def _samples(details: dict | None) -> list[dict]:
    """A few (prompt, expected, answer) rows from an evaluation's details: failures first (they have
    the prompt), then some correct items."""
    if not isinstance(details, dict):
        return []
    out = [{"prompt": _short(f.get("prompt")), "expected": _short(f.get("expected")),
            "got": _short(f.get("got") if f.get("got") is not None else f.get("raw")), "correct": False,
            "difficulty": f.get("difficulty")}
           for f in (details.get("failures") or [])[: MAX_SAMPLES - 1] if isinstance(f, dict)]
    for it in details.get("items") or []:
        if len(out) >= MAX_SAMPLES:
            break
        if isinstance(it, dict) and it.get("correct"):
            out.append({"prompt": None, "expected": _short(it.get("expected")), "got": _short(it.get("got")),
                        "correct": True, "difficulty": it.get("difficulty")})
    return out


def checkpoints_panel(src: Sources) -> dict:
    db_path = src.paths.model_db
    if not db_path.is_file():
        return unknown("no model registry yet (models/model_db.sqlite)")
    db = ReadOnlyModelDB(db_path, src.paths.base)
    try:
        ckpts = db.list_checkpoints(order="-global_step")[:MAX_CHECKPOINTS]
        evals = {e["checkpoint_path"]: e for e in db.latest_evaluations()}
        dep = src.status("deployment_status") or {}
        deployed = db.rel(dep["current_checkpoint"]) if isinstance(dep.get("current_checkpoint"), str) else None
        reg = src.status("regression_monitoring") or {}
        flagged = {db.rel(p) for p in reg.get("flagged") or [] if isinstance(p, str)}
        comp = src.status("model_comparisons") or {}
        ranks = {db.rel(r["checkpoint"]): r for r in comp.get("ranking") or []
                 if isinstance(r, dict) and isinstance(r.get("checkpoint"), str)}
        rows = []
        for i, c in enumerate(ckpts):
            e = evals.get(c["path"])
            row = {"checkpoint": c["path"], "global_step": c["global_step"], "source_file": c["source_file"],
                   "train_loss": c["train_loss"], "validation_loss": c["validation_loss"],
                   "deployed": c["path"] == deployed, "flagged": c["path"] in flagged,
                   "rank": (ranks.get(c["path"]) or {}).get("rank"),
                   "score": (ranks.get(c["path"]) or {}).get("score"), "evaluated": e is not None}
            if e is not None:
                row.update(accuracy=e["accuracy"], n_items=e["n_items"], suite_version=e["suite_version"],
                           suite_loss=e["validation_loss"], evaluated_at=e["evaluated_at"],
                           ece=(e.get("calibration") or {}).get("ece"),
                           by_difficulty={k: (v or {}).get("accuracy") for k, v in (e["by_difficulty"] or {}).items()
                                          if isinstance(v, dict)})
                if i < SAMPLE_DETAILS_FOR:
                    full = db.evaluations_for(c["path"], with_details=True)
                    row["samples"] = _samples(full[-1].get("details") if full else None)
            rows.append(row)
        return {"checkpoints": rows, "deployed": deployed, "n_flagged": len(flagged)}
    finally:
        db.close()


def regressions_panel(src: Sources) -> dict:
    doc = src.status("regression_monitoring")
    if doc is None:
        return unknown("status/regression_monitoring.json is missing or not valid JSON")
    alerts = [a for a in doc.get("alerts") or [] if isinstance(a, dict)]
    return {"flagged": [p for p in doc.get("flagged") or [] if isinstance(p, str)],
            "alerts": [{k: a.get(k) for k in ("checkpoint", "global_step", "metric", "value", "best", "threshold",
                                              "message")} for a in alerts[-10:]],
            "thresholds": doc.get("thresholds"), "updated_at": doc.get("updated_at")}


def calibration_panel(src: Sources) -> dict:
    doc = src.status("confidence_calibration")
    if doc is None:
        return unknown("status/confidence_calibration.json is missing or not valid JSON")
    latest = doc.get("latest") if isinstance(doc.get("latest"), dict) else {}
    bins = [b for b in latest.get("bins") or [] if isinstance(b, dict)]
    return {"checkpoint": latest.get("checkpoint"), "n": latest.get("n"), "ece": latest.get("ece"),
            "bins": [{k: b.get(k) for k in ("count", "accuracy", "mean_confidence")} for b in bins],
            "updated_at": doc.get("updated_at")}


def deployment_panel(src: Sources) -> dict:
    doc = src.status("deployment_status")
    if doc is None:
        return unknown("status/deployment_status.json is missing or not valid JSON")
    hist = [h for h in doc.get("history") or [] if isinstance(h, dict)][:5]
    return {"state": doc.get("state"), "current_version": doc.get("current_version"),
            "current_checkpoint": doc.get("current_checkpoint"), "last_check": doc.get("last_check"),
            "history": [{k: h.get(k) for k in ("version", "checkpoint", "global_step", "outcome", "finished_at",
                                               "error")} for h in hist]}


def _generic(name: str):
    """A status file whose schema is its daemon's: state, heartbeat, its scalar fields, and its
    number-valued dicts (e.g. a curriculum ``mix``) and their history when present."""
    def panel(src: Sources) -> dict:
        doc = src.status(name)
        if doc is None:
            return unknown(f"status/{name}.json is missing or not valid JSON")
        scalars = {k: v for k, v in doc.items() if k not in _META_KEYS and k != "state"
                   and isinstance(v, (int, float, str, bool)) and not (isinstance(v, str) and len(v) > 120)}
        mixes = {k: v for k, v in doc.items() if isinstance(v, dict) and v
                 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v.values())}
        history = next((v[-20:] for k, v in doc.items() if k in ("history", "mix_history") and isinstance(v, list)),
                       [])
        return {"state": doc.get("state"), "heartbeat_age_s": src.age(doc.get("heartbeat_at")),
                "fields": dict(list(scalars.items())[:12]), "mixes": mixes,
                "history": [h for h in history if isinstance(h, dict)]}
    return panel


PANELS = {"checkpoints": checkpoints_panel, "regressions": regressions_panel, "calibration": calibration_panel,
          "deployment": deployment_panel, **{k: _generic(v) for k, v in AUTONOMY_FILES.items()}}
