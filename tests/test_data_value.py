"""The data value report on a real SQLite model_db with known before/after evaluations: per-file
values per 1,000 tokens, plain reasons where none can be computed, and the sources ranked."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from foundation.atomic_io import atomic_write_json
from foundation.model_db import ModelDB
from foundation.paths import Paths
from foundation.status_io import read_status
from monitoring.evaluation.data_value import classify_source, compute_data_value
from tests.conftest import REPO, write_jsonl

# (step, suite version, accuracy, easy accuracy, suite validation loss); None: not evaluated
EVALS = {0: ("v1", 0.50, 0.60, 2.0), 10: ("v1", 0.52, 0.63, 1.9), 20: ("v1", 0.60, 0.70, 1.7),
         30: ("v1", 0.64, 0.72, 1.6), 40: ("v1", 0.70, 0.80, 1.5), 50: ("v1", 0.71, 0.80, 1.5),
         70: ("v1", 0.72, 0.81, 1.4), 80: ("v2", 0.70, 0.80, 1.4), 90: ("v2", 0.71, 0.82, 1.3)}
# (name, job, start, end, tokens, extra result keys)
FILES = [("notes.jsonl", "j1", 0, 10, 2000, {}),                       # user: +0.02 over 2k
         ("syllo_batch_1.jsonl", "j2", 10, 20, 1000, {}),              # generated (name): +0.08 over 1k
         ("adversarial_001.jsonl", "j3", 20, 30, 1000, {}),            # adversarial: +0.04 over 1k
         ("fixes.jsonl", "j4", 30, 40, 500, {}),                       # corrections (priority): +0.06 over 0.5k
         ("more.jsonl", "j5", 40, 50, 1000, {"resumed_from": "models/checkpoints/j5/step-45"}),
         ("late.jsonl", "j6", 50, 60, 1000, {}),                       # nothing evaluated at 60
         ("batch.jsonl", "j7", 60, 70, 1000, {}),                      # generated (metadata); no before
         ("drift.jsonl", "j8", 70, 80, 1000, {}),                      # v1 before, v2 after
         ("partial.jsonl", "j9", 80, 100, 2000, {})]                   # user: +0.01, evaluated at 90 of 100


def _ckpt(base_dir, step: int) -> str:
    job = next((j for _n, j, s, e, _t, _x in FILES if s < step <= e), "base")
    return str(base_dir / "models" / "checkpoints" / job / f"step-{step}")


@pytest.fixture
def registry(base_dir):
    db = ModelDB.for_base(base_dir)
    run = db.start_run("test", "tiny")
    for step in sorted({0, *(e for *_a, e, _t, _x in FILES), *EVALS}):
        db.register_checkpoint(_ckpt(base_dir, step), step, None, None, validation_loss=None, run_id=run)
    for step, (ver, acc, easy, loss) in EVALS.items():
        db.record_evaluation(_ckpt(base_dir, step), ver, acc, {"easy": {"accuracy": easy, "n": 10}}, 20,
                             validation_loss=loss)
    for name, job, start, end, tokens, extra in FILES:
        db.record_file(run, name, job, "completed", end - start, tokens,
                       result={"global_step_start": start, "global_step_end": end, **extra})
    db.record_file(run, "broken.jsonl", "jx", "failed", 0, 0, result={})
    paths = Paths.from_base(base_dir)
    # fixes.jsonl came from queue/corrections/; batch.jsonl was renamed on arrival and holds syllo data
    write_jsonl(paths.completed / "fixes.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                                {"role": "assistant", "content": "a"}]}])
    atomic_write_json(paths.completed / "fixes.result.json",
                      {"job_id": "j4", "file": "fixes.jsonl", "original_name": "fixes.jsonl", "priority": "corrections"})
    write_jsonl(paths.completed / "batch-2.jsonl", [{"messages": [{"role": "user", "content": "q"},
                                                                  {"role": "assistant", "content": "a"}],
                                                     "metadata": {"source": "syllo", "difficulty": "easy"}}])
    atomic_write_json(paths.completed / "batch-2.result.json", {"job_id": "j7", "file": "batch-2.jsonl",
                                                                 "original_name": "batch.jsonl", "priority": "normal"})
    db.close()
    return base_dir


def test_classify_source_rules():
    assert classify_source("anything.jsonl", "corrections") == ("corrections", "priority folder corrections")
    assert classify_source("self_correction_3.jsonl")[0] == "corrections"
    assert classify_source("adversarial_12.jsonl", "high", {"source": "syllo"})[0] == "adversarial"
    assert classify_source("x.jsonl", None, {"source": "adversarial_miner"})[0] == "adversarial"
    assert classify_source("x.jsonl", None, {"source": "syllo"}) == ("generated", "metadata.source 'syllo'")
    assert classify_source("syllo_easy_0001.jsonl")[0] == "generated"
    assert classify_source("my_chats.jsonl", "high", {"source": "crm"})[0] == "user"


def test_values_reasons_and_ranking(registry):
    rep = compute_data_value(registry)
    by = {f["source_file"]: f for f in rep["files"]}
    assert [f["source_file"] for f in rep["files"]] == [f[0] for f in FILES]  # broken.jsonl never trained
    assert rep["n_files"] == 9 and rep["n_valued"] == 5

    f = by["notes.jsonl"]
    assert f["value_computed"] and f["source"] == "user"
    assert f["before"]["global_step"] == 0 and f["after"]["global_step"] == 10
    assert f["delta"]["accuracy"] == pytest.approx(0.02)
    assert f["delta"]["validation_loss_drop"] == pytest.approx(0.1) and f["delta"]["loss_kind"] == "suite"
    assert f["per_1k_tokens"]["accuracy"] == pytest.approx(0.01)
    assert f["per_1k_tokens"]["validation_loss_drop"] == pytest.approx(0.05)
    assert f["per_1k_tokens"]["by_difficulty"]["easy"] == pytest.approx(0.015)
    assert by["fixes.jsonl"]["source"] == "corrections" and by["fixes.jsonl"]["priority"] == "corrections"
    assert by["fixes.jsonl"]["per_1k_tokens"]["accuracy"] == pytest.approx(0.12)
    assert by["syllo_batch_1.jsonl"]["per_1k_tokens"]["accuracy"] == pytest.approx(0.08)
    assert by["adversarial_001.jsonl"]["source"] == "adversarial"

    restart = by["more.jsonl"]
    assert not restart["value_computed"] and restart["delta"]["accuracy"] == pytest.approx(0.01)
    assert "trained across a restart" in restart["notes"][0] and restart["per_1k_tokens"] is None
    assert not by["late.jsonl"]["value_computed"]
    assert "no evaluation after this file" in by["late.jsonl"]["reasons"][0]
    b7 = by["batch.jsonl"]
    assert b7["source"] == "generated" and b7["source_rule"] == "metadata.source 'syllo'"
    assert not b7["value_computed"] and "precedes another file" in b7["reasons"][0]
    assert "different suite versions" in by["drift.jsonl"]["reasons"][0]
    part = by["partial.jsonl"]
    assert part["value_computed"] and part["after_partial"] and part["trained_tokens_counted"] == 1000
    assert part["per_1k_tokens"]["accuracy"] == pytest.approx(0.01)

    ranks = [(r["source"], r["rank"]) for r in rep["sources"]]
    assert ranks == [("corrections", 1), ("generated", 2), ("adversarial", 3), ("user", 4)]
    user = next(r for r in rep["sources"] if r["source"] == "user")
    assert user["valued_files"] == 2 and user["files"] == 5 and user["trained_tokens"] == 3000
    assert user["accuracy_gain_per_1k_tokens"] == pytest.approx((0.02 + 0.01) / 3)


def test_cli_writes_status(registry):
    env = {**os.environ, "TRAINER_BASE_DIR": str(registry)}
    p = subprocess.run([sys.executable, str(REPO / "tools/analysis/calculate_data_value.py"), "--json"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [r["source"] for r in out["sources"]][:2] == ["corrections", "generated"]
    doc = read_status(Paths.from_base(registry).status_file("data_value.json"))
    assert doc["schema_version"] == 1 and doc["n_valued"] == 5 and doc["updated_at"]
    p = subprocess.run([sys.executable, "-m", "management.cli", "data", "value"], capture_output=True, text=True,
                       env=env, cwd=str(REPO), timeout=120)
    assert p.returncode == 0, p.stderr
    assert "1. corrections" in p.stdout and "no evaluation after this file" in p.stdout


def test_no_registry_says_so(base_dir):
    rep = compute_data_value(base_dir)
    assert rep["files"] == [] and "no model registry" in rep["note"]
