"""What each trained file was worth: the evaluation of the checkpoint before it against the one
after it, per 1,000 trained tokens, and the kinds of data ranked by that value.

    python3 tools/analysis/calculate_data_value.py [--json] [--base-dir DIR]
    trainctl data value

For every file the model_db records as trained (``files`` rows with status ``completed``; the
newest row per job):

* before: the evaluated checkpoint at the file's ``global_step_start`` (the model it started
  from). An older evaluation does not count when another file trained in between.
* after: the evaluated checkpoint with the highest step in (start, end]. When it is not the last
  step, the file's tokens are prorated by steps and the file is marked ``after_partial``.
* Compared on one suite version (the newest both were evaluated on): accuracy overall and by
  difficulty, and validation loss (the suite's; else the trainer's ``checkpoints.validation_loss``
  when both have it, marked ``loss_kind``).
* per 1,000 tokens: accuracy gain and validation-loss drop divided by tokens / 1000.

A value is not computed (``value_computed: false`` and ``reasons``, said plainly) when there is
no evaluation before or after, when the two share no suite version, or when the token count is
unknown; a file trained across a restart (``resumed_from`` set) gets its deltas but no per-token
value, because the engine's token count covers only the last run of the process.

Source classes (``SOURCES``), first rule that matches (``source_rule`` says which):
  1. corrections  the job came from ``queue/corrections/`` (``priority`` in its ``.result.json``)
  2. corrections / adversarial  the file name contains "correction" / "adversarial", or the first
     record's ``metadata.source`` does
  3. generated    ``metadata.source`` is "syllo" or "generated", or the name starts with "syllo" or
     "gen" or contains "generated"
  4. user         everything else
Sources are ranked by token-weighted accuracy gain per 1,000 tokens (sum of gains / sum of
thousands of tokens over the valued files), then by loss drop per 1,000 tokens.

Writes ``status/data_value.json`` atomically (``foundation.status_io.write_status``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from foundation.model_db import ModelDB
from foundation.paths import Paths
from foundation.status_io import write_status

SOURCES = ("user", "generated", "adversarial", "corrections")
STATUS_NAME = "data_value.json"
_GENERATED_SOURCES = ("syllo", "generated", "generator")


def classify_source(name: str, priority: str | None = None, metadata: dict | None = None) -> tuple[str, str]:
    """(source class, the rule that decided); see the module docstring."""
    n = Path(name).name.lower()
    msrc = str((metadata or {}).get("source") or "").lower()
    if priority == "corrections":
        return "corrections", "priority folder corrections"
    for kind, word in (("corrections", "correction"), ("adversarial", "adversarial")):
        if word in n:
            return kind, f"file name contains {word!r}"
        if word in msrc:
            return kind, f"metadata.source {msrc!r}"
    if msrc in _GENERATED_SOURCES:
        return "generated", f"metadata.source {msrc!r}"
    if n.startswith(("syllo", "gen")) or "generated" in n:
        return "generated", "file name of a generated batch"
    return "user", "no generated/adversarial/correction marker"


def _eval_index(db: ModelDB) -> dict[str, dict[str, dict]]:
    """checkpoint path -> suite version -> newest evaluation on it."""
    out: dict[str, dict[str, dict]] = {}
    for v in sorted({e["suite_version"] for e in db.latest_evaluations()}):
        for e in db.latest_evaluations(v):
            out.setdefault(e["checkpoint_path"], {})[v] = e
    return out


def _point(ck: dict, ev: dict | None) -> dict:
    by = {} if ev is None else {k: (v or {}).get("accuracy") for k, v in ev["by_difficulty"].items()}
    return {"checkpoint": ck["path"], "global_step": ck["global_step"],
            "suite_version": None if ev is None else ev["suite_version"],
            "accuracy": None if ev is None else ev["accuracy"],
            "by_difficulty": by,
            "validation_loss": None if ev is None else ev["validation_loss"],
            "trainer_validation_loss": ck.get("validation_loss"),
            "evaluated_at": None if ev is None else ev["evaluated_at"]}


def _per_1k(delta: float | None, k_tokens: float | None) -> float | None:
    return None if delta is None or not k_tokens else round(delta / k_tokens, 6)


def file_value(f: dict, ckpts: list[dict], evals: dict[str, dict[str, dict]], ends: list[int]) -> dict:
    """The value record of one trained file (``f``: a model_db files row)."""
    res = f.get("result") or {}
    start, end = res.get("global_step_start"), res.get("global_step_end")
    out: dict[str, Any] = {"source_file": f["source_file"], "job_id": f["job_id"], "tokens": f["tokens"],
                           "steps": f["steps"], "global_step_start": start, "global_step_end": end,
                           "finished_at": f["finished_at"], "before": None, "after": None, "delta": None,
                           "per_1k_tokens": None, "after_partial": False, "value_computed": False,
                           "reasons": [], "notes": []}
    reasons = out["reasons"]
    if start is None or end is None:
        reasons.append("the model_db row has no global step range")
        return out
    evaluated = [c for c in ckpts if evals.get(c["path"])]
    before = [c for c in evaluated if c["global_step"] <= start]
    b = before[-1] if before else None
    if b is not None and any(b["global_step"] < e <= start for e in ends):
        reasons.append(f"no evaluation of the checkpoint at step {start} (the model this file started from); "
                       f"the newest earlier one, step {b['global_step']}, precedes another file")
        b = None
    elif b is None:
        reasons.append(f"no evaluation before this file (nothing evaluated at or before step {start})")
    after = [c for c in evaluated if start < c["global_step"] <= end]
    a = after[-1] if after else None
    if a is None:
        reasons.append(f"no evaluation after this file (no evaluated checkpoint in steps {start + 1}..{end})")
    resumed = res.get("resumed_from")
    if resumed:
        out["notes"].append(f"trained across a restart (resumed from {resumed}): the token count covers only "
                            "the last run, so no per-token value")
    if b is None or a is None:
        if b is not None:
            out["before"] = _point(b, None)
        if a is not None:
            out["after"] = _point(a, None)
        return out
    common = sorted(set(evals[b["path"]]) & set(evals[a["path"]]))
    vb = evals[b["path"]].get(common[-1]) if common else None
    va = evals[a["path"]].get(common[-1]) if common else None
    out["before"], out["after"] = _point(b, vb), _point(a, va)
    if not common:
        reasons.append(f"before and after were evaluated on different suite versions "
                       f"({', '.join(evals[b['path']])} vs {', '.join(evals[a['path']])})")
        return out
    pb, pa = out["before"], out["after"]
    acc = None if pb["accuracy"] is None or pa["accuracy"] is None else pa["accuracy"] - pb["accuracy"]
    loss_kind, drop = None, None
    for key, kind in (("validation_loss", "suite"), ("trainer_validation_loss", "trainer")):
        if pb[key] is not None and pa[key] is not None:
            loss_kind, drop = kind, pb[key] - pa[key]
            break
    by = {k: pa["by_difficulty"][k] - v for k, v in pb["by_difficulty"].items()
          if v is not None and pa["by_difficulty"].get(k) is not None}
    out["delta"] = {"accuracy": acc, "validation_loss_drop": drop, "loss_kind": loss_kind, "by_difficulty": by}
    if acc is None and drop is None:
        reasons.append("the evaluations carry neither accuracy nor validation loss")
        return out
    tokens = f["tokens"]
    if resumed:
        return out
    if not tokens:
        reasons.append("the model_db has no token count for this file")
        return out
    if a["global_step"] < end and end > start:
        out["after_partial"] = True
        tokens = tokens * (a["global_step"] - start) / (end - start)
        out["notes"].append(f"newest evaluation after it is at step {a['global_step']} of {start + 1}..{end}: "
                            f"tokens prorated to {tokens:.0f}")
    k = tokens / 1000
    out["trained_tokens_counted"] = round(tokens)
    out["per_1k_tokens"] = {"accuracy": _per_1k(acc, k), "validation_loss_drop": _per_1k(drop, k),
                            "by_difficulty": {lvl: _per_1k(d, k) for lvl, d in by.items()}}
    out["value_computed"] = True
    return out


def rank_sources(files: list[dict]) -> list[dict]:
    """One row per source class seen (and every class in ``SOURCES``), ranked best first."""
    rows = []
    for src in sorted({*SOURCES, *(f["source"] for f in files)}):
        mine = [f for f in files if f["source"] == src]
        valued = [f for f in mine if f["value_computed"]]
        k = sum(f["trained_tokens_counted"] for f in valued) / 1000
        acc = [f for f in valued if f["delta"]["accuracy"] is not None]
        loss = [f for f in valued if f["delta"]["validation_loss_drop"] is not None]
        k_acc = sum(f["trained_tokens_counted"] for f in acc) / 1000
        k_loss = sum(f["trained_tokens_counted"] for f in loss) / 1000
        levels = sorted({lvl for f in valued for lvl in f["delta"]["by_difficulty"]})
        by = {}
        for lvl in levels:
            have = [f for f in valued if lvl in f["delta"]["by_difficulty"]]
            kk = sum(f["trained_tokens_counted"] for f in have) / 1000
            by[lvl] = _per_1k(sum(f["delta"]["by_difficulty"][lvl] for f in have), kk)
        rows.append({"source": src, "files": len(mine), "valued_files": len(valued), "trained_tokens": round(k * 1000),
                     "accuracy_gain_per_1k_tokens": _per_1k(sum(f["delta"]["accuracy"] for f in acc), k_acc),
                     "loss_drop_per_1k_tokens": _per_1k(sum(f["delta"]["validation_loss_drop"] for f in loss), k_loss),
                     "by_difficulty_gain_per_1k_tokens": by})

    def key(r: dict) -> tuple:
        a, lo = r["accuracy_gain_per_1k_tokens"], r["loss_drop_per_1k_tokens"]
        return (a is None and lo is None, a is None, -(a or 0.0), -(lo or 0.0), r["source"])
    rows.sort(key=key)
    for i, r in enumerate(rows, 1):
        r["rank"] = i if r["valued_files"] else None
    return rows


def compute_data_value(base_dir: str | Path | None = None) -> dict:
    """The report (see the module docstring); {"files": [], ...} with a note when no registry."""
    from trainer.data.trained_files import completed_results, first_metadata
    paths = Paths.from_base(base_dir)
    if not paths.model_db.exists():
        return {"model_db": str(paths.model_db), "files": [], "sources": rank_sources([]), "n_files": 0,
                "n_valued": 0, "note": "no model registry yet: nothing has been trained"}
    db = ModelDB(paths.model_db, base_dir=paths.base)
    try:
        latest: dict[str, dict] = {}
        for f in db.list_files():
            if f["status"] == "completed":
                latest[f["job_id"] or f"row-{f['id']}"] = f  # ordered by id: the newest row wins
        ckpts = db.list_checkpoints()
        evals = _eval_index(db)
    finally:
        db.close()
    done = completed_results(paths.base)
    ends = sorted(int(f["result"]["global_step_end"]) for f in latest.values()
                  if (f.get("result") or {}).get("global_step_end") is not None)
    out = []
    for f in sorted(latest.values(), key=lambda r: ((r.get("result") or {}).get("global_step_start") or 0, r["id"])):
        doc, data = done.get(str(f["job_id"] or "")) or done.get(f["source_file"]) or ({}, None)
        meta = first_metadata(data) if data is not None else {}
        src, rule = classify_source(f["source_file"], doc.get("priority"), meta)
        out.append({**file_value(f, ckpts, evals, ends), "source": src, "source_rule": rule,
                    "priority": doc.get("priority")})
    return {"model_db": str(paths.model_db), "files": out, "sources": rank_sources(out), "n_files": len(out),
            "n_valued": sum(1 for f in out if f["value_computed"])}


def _fmt(x: float | None, nd: int = 4) -> str:
    return "-" if x is None else f"{x:+.{nd}f}"


def render_text(report: dict) -> str:
    lines = []
    if report.get("note"):
        lines.append(report["note"])
    lines.append(f"{report['n_files']} trained file(s), {report['n_valued']} with a value "
                 "(per 1,000 trained tokens: accuracy gain, validation-loss drop)")
    for f in report["files"]:
        p = f["per_1k_tokens"] or {}
        lines.append(f"  {f['source_file']}  [{f['source']}]  steps {f['global_step_start']}..{f['global_step_end']}  "
                     f"tokens {f['tokens']}  acc/1k {_fmt(p.get('accuracy'))}  "
                     f"loss/1k {_fmt(p.get('validation_loss_drop'))}")
        for why in f["reasons"] + f["notes"]:
            lines.append(f"      {why}")
    lines.append("sources, best first:")
    for r in report["sources"]:
        lines.append(f"  {r['rank'] or '-'}. {r['source']:<12} files {r['files']} (valued {r['valued_files']}), "
                     f"tokens {r['trained_tokens']}, acc/1k {_fmt(r['accuracy_gain_per_1k_tokens'])}, "
                     f"loss/1k {_fmt(r['loss_drop_per_1k_tokens'])}")
    return "\n".join(lines) + "\n"


@click.command("value")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--base-dir", default=None, help="Runtime base dir (model_db, queue/, status/).")
def value_command(as_json: bool, base_dir: str | None) -> None:
    """What each trained file changed (before/after evaluations per 1,000 tokens), sources ranked;
    writes status/data_value.json."""
    report = compute_data_value(base_dir)
    doc = write_status(Paths.from_base(base_dir).status_file(STATUS_NAME), report, daemon=False)
    if as_json:
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(report), nl=False)


__all__ = ["SOURCES", "classify_source", "file_value", "rank_sources", "compute_data_value", "value_command"]
