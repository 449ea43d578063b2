#!/usr/bin/env python3
"""Two checkpoints side by side on the fixed validation suite, per difficulty.

    python3 tools/analysis/compare_models.py A B [--base-dir DIR] [--fresh] [--json]

A and B are checkpoint folders (or any Hugging Face model folders). Each is scored from its newest
evaluation in the model registry on the current suite version; one that has none (or every one,
with ``--fresh``) is evaluated now, in this process, exactly as the automated tests do, and the
result is recorded. The table shows accuracy per difficulty and overall, suite validation loss,
ECE, the composite score (same formula and weights as the comparison engine, with the loss part
normalised between the two), and item-level agreement (both right / only A / only B / both wrong).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


import click


def _load_or_evaluate(db, path: Path, suite, cfg, base: Path, fresh: bool) -> dict:
    from monitoring.evaluation.checkpoints import read_checkpoint_info
    from monitoring.evaluation.local_mode import evaluate_checkpoint
    from monitoring.evaluation.scoring import record_result
    if not fresh and db.get_checkpoint(path) is not None:
        evs = [e for e in db.evaluations_for(path, with_details=True) if e["suite_version"] == suite.version]
        if evs:
            return evs[-1]
    info = read_checkpoint_info(path) or {}
    db.register_checkpoint(path, int(info.get("global_step", 0)), info.get("job_id"), info.get("source_file"))
    res = evaluate_checkpoint(path, suite, cfg, base_dir=base)
    record_result(db, path, suite, res)
    return [e for e in db.evaluations_for(path, with_details=True) if e["suite_version"] == suite.version][-1]


def compare(ev_a: dict, ev_b: dict, weights: dict[str, float]) -> dict:
    """The comparison document of two evaluation rows (``ModelDB.evaluations_for`` form)."""
    from monitoring.evaluation.comparison import rank
    levels = sorted(set(ev_a["by_difficulty"]) | set(ev_b["by_difficulty"]),
                    key=lambda d: (["easy", "medium", "hard", "expert"] + [d]).index(d))
    rows = []
    for d in levels:
        a, b = ev_a["by_difficulty"].get(d, {}), ev_b["by_difficulty"].get(d, {})
        rows.append({"difficulty": d, "a": a.get("accuracy"), "b": b.get("accuracy"), "n": a.get("n") or b.get("n"),
                     "delta": None if a.get("accuracy") is None or b.get("accuracy") is None
                     else b["accuracy"] - a["accuracy"]})
    ranked = {r["checkpoint"]: r for r in rank([ev_a, ev_b], weights)}
    items_a = {it["index"]: it["correct"] for it in ((ev_a.get("details") or {}).get("items") or [])}
    items_b = {it["index"]: it["correct"] for it in ((ev_b.get("details") or {}).get("items") or [])}
    common = set(items_a) & set(items_b)
    agreement = {"both_right": sum(1 for i in common if items_a[i] and items_b[i]),
                 "only_a": sum(1 for i in common if items_a[i] and not items_b[i]),
                 "only_b": sum(1 for i in common if items_b[i] and not items_a[i]),
                 "both_wrong": sum(1 for i in common if not items_a[i] and not items_b[i])}

    def side(ev):
        r = ranked[ev["checkpoint_path"]]
        return {"checkpoint": ev["checkpoint_path"], "global_step": ev["global_step"], "accuracy": ev["accuracy"],
                "validation_loss": ev["validation_loss"], "ece": (ev.get("calibration") or {}).get("ece"),
                "score": r["score"], "n_items": ev["n_items"], "evaluated_at": ev["evaluated_at"]}
    return {"suite_version": ev_a["suite_version"], "a": side(ev_a), "b": side(ev_b), "by_difficulty": rows,
            "agreement": agreement}


def _f(x, n=3):
    return "-" if x is None else f"{x:.{n}f}"


def render_table(doc: dict) -> str:
    a, b = doc["a"], doc["b"]
    lines = [f"suite {doc['suite_version']}",
             f"A = {a['checkpoint']} (step {a['global_step']})",
             f"B = {b['checkpoint']} (step {b['global_step']})",
             "",
             f"{'':<16}{'A':>9}{'B':>9}{'B-A':>9}"]
    for r in doc["by_difficulty"]:
        lines.append(f"{'acc ' + r['difficulty'] + ' (' + str(r['n']) + ')':<16}{_f(r['a']):>9}{_f(r['b']):>9}"
                     f"{(('+' if (r['delta'] or 0) >= 0 else '') + _f(r['delta'])) if r['delta'] is not None else '-':>9}")
    for key, label, n in (("accuracy", "accuracy", 3), ("validation_loss", "val loss", 4), ("ece", "ECE", 3),
                          ("score", "score", 3)):
        d = None if a[key] is None or b[key] is None else b[key] - a[key]
        lines.append(f"{label:<16}{_f(a[key], n):>9}{_f(b[key], n):>9}"
                     f"{(('+' if d >= 0 else '') + _f(d, n)) if d is not None else '-':>9}")
    ag = doc["agreement"]
    lines += ["", f"items: both right {ag['both_right']}, only A {ag['only_a']}, only B {ag['only_b']}, "
                  f"both wrong {ag['both_wrong']}"]
    return "\n".join(lines)


@click.command("compare-models")
@click.argument("a", type=click.Path(exists=True, file_okay=False))
@click.argument("b", type=click.Path(exists=True, file_okay=False))
@click.option("--base-dir", type=click.Path(file_okay=False), default=None, help="Runtime base dir.")
@click.option("--fresh", is_flag=True, help="Evaluate both now even when the registry has results.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def main(a, b, base_dir, fresh, as_json) -> None:
    """Compare checkpoints A and B on the validation suite, per difficulty."""
    from foundation.model_db import ModelDB
    from foundation.paths import Paths
    from syllo.suite import load_suite, resolve_suite_dir
    from trainer.config.loader import ConfigError, load_config
    paths = Paths.from_base(base_dir)
    try:
        cfg = load_config(base_dir=paths.base)
    except ConfigError as e:
        raise click.ClickException(str(e))
    suite = load_suite(resolve_suite_dir(paths.base, cfg.data.validation_dir), max_items=cfg.evaluation.max_items)
    db = ModelDB(paths.model_db, base_dir=paths.base)
    ev_a = _load_or_evaluate(db, Path(a), suite, cfg, paths.base, fresh)
    ev_b = _load_or_evaluate(db, Path(b), suite, cfg, paths.base, fresh)
    ev = cfg.evaluation
    doc = compare(ev_a, ev_b, {"validation_loss": ev.weight_loss, "accuracy": ev.weight_accuracy,
                               "calibration": ev.weight_calibration})
    click.echo(json.dumps(doc, indent=2) if as_json else render_table(doc))

