#!/usr/bin/env python3
"""Confidence calibration: does the model's certainty match how often it is right?

Each suite answer gets a confidence from the model's own token probabilities (the automated
tests compute it: the product of the model's probabilities of the generated tokens up to the one
that completes the extracted answer, i.e. the probability of producing that answer; when no answer
could be extracted, the product over every generated token). Answers are put in
``N_BINS`` = 6 equal-width confidence bins over [0, 1] (bin i holds [i/6, (i+1)/6); the last bin
also holds 1.0). For each bin: count, accuracy (share correct) and mean confidence. The expected
calibration error is

    ECE = sum over bins of (count_b / N) * |accuracy_b - mean_confidence_b|

(0 = perfectly calibrated). A well-calibrated checkpoint's confidence can be trusted by the
autonomous data loop to pick what to practise next; the comparison engine gives (1 - ECE) a
small weight in the composite score.

``status/confidence_calibration.json`` (written by ``run_once``; all fields always present):

* ``schema_version``, ``updated_at`` (+ ``pid``, ``heartbeat_at`` when written by a daemon)
* ``suite_version``: the suite the numbers are on; ``n_bins``: 6
* ``latest``: the calibration of the evaluated checkpoint with the highest global step (the
  newest model of the lineage), or null:
  ``{checkpoint, global_step, evaluated_at, n, ece, bins: [{index, lower, upper, count, accuracy,
  mean_confidence}]}`` (``accuracy``/``mean_confidence`` are null for an empty bin; the counts sum
  to ``n``, the number of scored answers)
* ``checkpoints``: ``[{checkpoint, global_step, n, ece}]`` for every evaluated checkpoint, by step

Checkpoint paths are relative to the base dir when inside it.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence


N_BINS = 6
STATUS_NAME = "confidence_calibration.json"


def bin_index(confidence: float, n_bins: int = N_BINS) -> int:
    if not (0.0 <= confidence <= 1.0) or confidence != confidence:
        raise ValueError(f"confidence must be in [0, 1], got {confidence!r}")
    return min(int(confidence * n_bins), n_bins - 1)


def calibrate(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = N_BINS) -> dict:
    """Bins and ECE of a set of (confidence, correct) answers. Returns
    ``{"n", "n_bins", "ece", "bins": [...]}`` (ece is null when n == 0)."""
    if len(confidences) != len(correct):
        raise ValueError(f"{len(confidences)} confidences but {len(correct)} correctness flags")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    counts = [0] * n_bins
    hits = [0] * n_bins
    conf_sum = [0.0] * n_bins
    for c, ok in zip(confidences, correct):
        c = float(c)
        b = bin_index(c, n_bins)
        counts[b] += 1
        hits[b] += 1 if ok else 0
        conf_sum[b] += c
    n = sum(counts)
    bins = []
    ece = 0.0
    for b in range(n_bins):
        acc = hits[b] / counts[b] if counts[b] else None
        mc = conf_sum[b] / counts[b] if counts[b] else None
        if counts[b]:
            ece += counts[b] / n * abs(acc - mc)
        bins.append({"index": b, "lower": b / n_bins, "upper": (b + 1) / n_bins, "count": counts[b],
                     "accuracy": acc, "mean_confidence": mc})
    return {"n": n, "n_bins": n_bins, "ece": ece if n else None, "bins": bins}


def sequence_confidence(token_probs: Sequence[float]) -> float:
    """Probability of a whole token sequence (the product), clamped to [0, 1]."""
    logp = sum(math.log(max(p, 1e-300)) for p in token_probs)
    return float(min(1.0, max(0.0, math.exp(logp))))



def build_status(db, suite_version: str | None) -> dict:
    """The status payload from the model registry's newest evaluations."""
    evals = [e for e in db.latest_evaluations(suite_version) if e.get("calibration")]
    rows = [{"checkpoint": e["checkpoint_path"], "global_step": e["global_step"],
             "n": e["calibration"].get("n"), "ece": e["calibration"].get("ece")} for e in evals]
    latest = None
    if evals:
        e = max(evals, key=lambda e: (e["global_step"], e["evaluated_at"], e["id"]))
        cal = e["calibration"]
        latest = {"checkpoint": e["checkpoint_path"], "global_step": e["global_step"],
                  "evaluated_at": e["evaluated_at"], "n": cal.get("n"), "ece": cal.get("ece"),
                  "bins": cal.get("bins", [])}
    return {"suite_version": suite_version, "n_bins": N_BINS, "latest": latest, "checkpoints": rows}


def run_once(base_dir=None, suite_version: str | None = None, daemon: bool = False) -> dict:
    from foundation.model_db import ModelDB
    from foundation.paths import Paths
    from foundation.status_io import write_status
    paths = Paths.from_base(base_dir)
    if suite_version is None:
        suite_version = _default_suite_version(paths)
    payload = build_status(ModelDB(paths.model_db, base_dir=paths.base), suite_version)
    return write_status(paths.status_file(STATUS_NAME), payload, daemon=daemon)


def _default_suite_version(paths) -> str | None:
    try:
        from syllo.suite import read_manifest, resolve_suite_dir, suite_version_of
        return suite_version_of(read_manifest(resolve_suite_dir(paths.base)))
    except Exception:
        return None

