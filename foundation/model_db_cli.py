"""``trainctl models list``: the model registry's checkpoints with their newest evaluation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from foundation.model_db import ModelDB
from foundation.paths import Paths


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


@click.group("models")
def models_group() -> None:
    """The model registry (models/model_db.sqlite): checkpoints, their lineage and scores."""


@models_group.command("list")
@click.option("--base-dir", type=click.Path(file_okay=False), default=None, help="Runtime base dir.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (a list of checkpoint objects).")
@click.option("--suite-version", default=None, help="Show evaluations on this suite version only.")
def list_command(base_dir: str | None, as_json: bool, suite_version: str | None) -> None:
    """List registered checkpoints (by global step) with their newest evaluation."""
    paths = Paths.from_base(base_dir)
    if not paths.model_db.exists():
        if as_json:
            click.echo("[]")
        else:
            click.echo(f"no model registry yet at {paths.model_db}")
        return
    db = ModelDB(paths.model_db, base_dir=paths.base)
    evals = {e["checkpoint_path"]: e for e in db.latest_evaluations(suite_version)}
    out = []
    for c in db.list_checkpoints():
        e = evals.get(c["path"])
        out.append({
            "path": c["path"], "global_step": c["global_step"], "job_id": c["job_id"],
            "source_file": c["source_file"], "train_loss": c["train_loss"],
            "validation_loss": c["validation_loss"], "created_at": c["created_at"],
            "exists": Path(c["abs_path"]).is_dir(),
            "evaluation": None if e is None else {
                "suite_version": e["suite_version"], "accuracy": e["accuracy"],
                "validation_loss": e["validation_loss"], "n_items": e["n_items"],
                "by_difficulty": e["by_difficulty"], "evaluated_at": e["evaluated_at"],
                "ece": (e["calibration"] or {}).get("ece")},
        })
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    if not out:
        click.echo("no checkpoints registered")
        return
    click.echo(f"{'step':>9}  {'train':>7}  {'val':>7}  {'acc':>6}  {'s.val':>7}  path")
    for o in out:
        ev = o["evaluation"] or {}
        click.echo(f"{o['global_step']:>9}  {_fmt(o['train_loss'], 3):>7}  {_fmt(o['validation_loss'], 3):>7}  "
                   f"{_fmt(ev.get('accuracy'), 3):>6}  {_fmt(ev.get('validation_loss'), 3):>7}  {o['path']}"
                   + ("" if o["exists"] else "  (pruned)"))

