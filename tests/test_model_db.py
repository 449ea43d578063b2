"""Model registry: schema migration, idempotent registration, relative paths, evaluations, and
real concurrent writers/readers in separate processes."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.model_db import SCHEMA_VERSION, ModelDB, ModelDBError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path) -> ModelDB:
    (tmp_path / "models").mkdir()
    return ModelDB(tmp_path / "models" / "model_db.sqlite")


def test_schema_wal_and_migration_version(db, tmp_path):
    assert db.base_dir == tmp_path.resolve()
    assert db.schema_version() == SCHEMA_VERSION >= 1
    conn = sqlite3.connect(db.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "files", "checkpoints", "evaluations"} <= tables
    conn.close()
    # reopening does not migrate again; a newer schema is refused with the file named
    again = ModelDB(db.path)
    assert again.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(db.path)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    with pytest.raises(ModelDBError, match="model_db.sqlite"):
        ModelDB(db.path)


def test_register_is_idempotent_and_paths_are_relative(db, tmp_path):
    ck = tmp_path / "models" / "checkpoints" / "job1" / "step-00000010"
    i1 = db.register_checkpoint(ck, 10, "job1", "a.jsonl", train_loss=None, validation_loss=None)
    i2 = db.register_checkpoint(str(ck), 10, "job1", "a.jsonl", train_loss=1.5, validation_loss=2.0)
    i3 = db.register_checkpoint("models/checkpoints/job1/step-00000010", 10, "job1", "a.jsonl", train_loss=None)
    assert i1 == i2 == i3
    row = db.get_checkpoint(ck)
    assert row["path"] == "models/checkpoints/job1/step-00000010"
    assert Path(row["abs_path"]) == ck
    assert row["train_loss"] == 1.5 and row["validation_loss"] == 2.0  # filled in, never nulled
    outside = tmp_path.parent / "elsewhere" / "ck"
    db.register_checkpoint(outside, 5, None, None, train_loss=float("nan"))
    assert db.get_checkpoint(outside)["path"] == str(outside.resolve())
    assert db.get_checkpoint(outside)["train_loss"] is None  # NaN is not stored as a number
    assert [c["global_step"] for c in db.list_checkpoints()] == [5, 10]
    assert [c["global_step"] for c in db.list_checkpoints(order="-global_step")] == [10, 5]
    with pytest.raises(ValueError, match="unknown order"):
        db.list_checkpoints(order="path; DROP TABLE checkpoints")


def test_runs_files_and_evaluations(db, tmp_path):
    run = db.start_run("lineage", "models/tiny-qwen3", {"training": {"learning_rate": 1e-3}})
    db.record_file(run, "a.jsonl", "job1", "completed", steps=10, tokens=1234, started_at="t0", finished_at="t1",
                   result={"ok": True})
    assert db.list_runs()[0]["config"]["training"]["learning_rate"] == 1e-3
    assert db.list_files("job1")[0]["result"] == {"ok": True}

    a = tmp_path / "models/checkpoints/j/step-00000001"
    b = tmp_path / "models/checkpoints/j/step-00000002"
    db.register_checkpoint(a, 1, "j", "a.jsonl", run_id=run)
    db.register_checkpoint(b, 2, "j", "a.jsonl", run_id=run)
    with pytest.raises(KeyError, match="not registered"):
        db.record_evaluation(tmp_path / "nope", "syllo-v1", 0.5, {}, 10)
    assert [c["global_step"] for c in db.unevaluated_checkpoints("syllo-v1")] == [1, 2]
    db.record_evaluation(a, "syllo-v1", 0.25, {"easy": {"accuracy": 0.25, "n": 4}}, 4, validation_loss=3.0,
                         calibration={"ece": 0.1}, details={"failures": [1, 2, 3]})
    db.record_evaluation(a, "syllo-v1", 0.5, {"easy": {"accuracy": 0.5, "n": 4}}, 4, validation_loss=2.5)
    db.record_evaluation(b, "syllo-v0", 0.75, {}, 4)
    assert [c["global_step"] for c in db.unevaluated_checkpoints("syllo-v1")] == [2]
    latest = db.latest_evaluations("syllo-v1")
    assert len(latest) == 1 and latest[0]["accuracy"] == 0.5 and latest[0]["validation_loss"] == 2.5
    assert latest[0]["checkpoint_path"] == "models/checkpoints/j/step-00000001"
    assert latest[0]["by_difficulty"]["easy"]["n"] == 4
    assert {e["suite_version"] for e in db.latest_evaluations()} == {"syllo-v1", "syllo-v0"}
    hist = db.evaluations_for(a)
    assert [e["accuracy"] for e in hist] == [0.25, 0.5] and hist[0]["details"] == {"failures": [1, 2, 3]}



def test_checkpoints_whose_newest_local_evaluation_used_another_dtype(db, tmp_path):
    ck = {n: tmp_path / f"models/checkpoints/j/step-{n:08d}" for n in (1, 2, 3, 4, 5)}
    for n, path in ck.items():
        db.register_checkpoint(path, n, "j", "a.jsonl")
    db.record_evaluation(ck[1], "v", 0.5, {}, 4, details={"mode": "local", "dtype": "float32"})
    db.record_evaluation(ck[2], "v", 0.5, {}, 4, details={"mode": "local", "dtype": "bfloat16"})
    db.record_evaluation(ck[3], "v", 0.5, {}, 4, details={"mode": "local"})  # from before dtypes were kept
    db.record_evaluation(ck[4], "v", 0.5, {}, 4, details={"mode": "server"})  # the server's own numbers
    db.record_evaluation(ck[5], "v", 0.5, {}, 4, details={"mode": "local", "dtype": "float32"})
    db.record_evaluation(ck[5], "v", 0.6, {}, 4, details={"mode": "local", "dtype": "bfloat16"})  # re-evaluated
    db.record_evaluation(ck[2], "other", 0.5, {}, 4, details={"mode": "local", "dtype": "float32"})
    other = db.checkpoints_evaluated_in_other_dtype("v", "local", "bfloat16", order="-global_step")
    assert [c["global_step"] for c in other] == [3, 1]
    assert [c["global_step"] for c in db.checkpoints_evaluated_in_other_dtype("v", "local", "float32")] == [2, 3, 5]
    assert db.checkpoints_evaluated_in_other_dtype("none-yet", "local", "float32") == []


_WORKER = r"""
import sys, json
sys.path.insert(0, {repo!r})
from foundation.model_db import ModelDB
db = ModelDB({path!r})
w = int(sys.argv[1])
for i in range(40):
    p = f"models/checkpoints/w{{w}}/step-{{i:08d}}"
    db.register_checkpoint(p, i, f"w{{w}}", "f.jsonl", train_loss=float(i))
    db.register_checkpoint(p, i, f"w{{w}}", "f.jsonl")  # idempotent under contention
    db.record_evaluation(p, "v", i / 40, {{"easy": {{"accuracy": i / 40}}}}, 10, validation_loss=1.0 + i)
    if i % 10 == 0:
        db.record_file(None, f"w{{w}}-{{i}}.jsonl", f"w{{w}}", "completed", steps=i)
print("ok")
"""

_READER = r"""
import sys, time
sys.path.insert(0, {repo!r})
from foundation.model_db import ModelDB
db = ModelDB({path!r})
n = 0
deadline = time.time() + 60
while time.time() < deadline:
    cks = db.list_checkpoints()
    evs = db.latest_evaluations("v")
    assert all(e["checkpoint_path"].startswith("models/checkpoints/w") for e in evs)
    n += 1
    if len(evs) == 160:
        break
print("reads", n, len(evs))
"""


def test_concurrent_processes_write_and_read(tmp_path):
    """Four writer processes and a polling reader on one fresh file (migration races included)."""
    (tmp_path / "models").mkdir()
    path = str(tmp_path / "models" / "model_db.sqlite")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER.format(repo=str(REPO), path=path), str(w)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for w in range(4)]
    reader = subprocess.Popen([sys.executable, "-c", _READER.format(repo=str(REPO), path=path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        outs = [p.communicate(timeout=120) for p in procs]
        rout = reader.communicate(timeout=120)
    finally:
        for p in (*procs, reader):
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0 and out.strip() == "ok", err
    assert reader.returncode == 0, rout[1]
    db = ModelDB(path)
    assert len(db.list_checkpoints()) == 160
    assert len(db.latest_evaluations("v")) == 160
    assert len(db.list_files()) == 16


def test_models_list_cli(tmp_path):
    base = tmp_path / "base"
    (base / "models").mkdir(parents=True)
    db = ModelDB(base / "models" / "model_db.sqlite")
    ck = base / "models/checkpoints/j/step-00000003"
    ck.mkdir(parents=True)
    db.register_checkpoint(ck, 3, "j", "x.jsonl", train_loss=0.5)
    db.record_evaluation(ck, "syllo-v1", 0.4, {"easy": {"accuracy": 0.4, "n": 5}}, 5, validation_loss=1.25,
                         calibration={"ece": 0.05})
    out = subprocess.run([sys.executable, str(REPO / "core" / "model_db.py"), "list", "--json", "--base-dir", str(base)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows[0]["path"] == "models/checkpoints/j/step-00000003" and rows[0]["exists"] is True
    assert rows[0]["evaluation"]["accuracy"] == 0.4 and rows[0]["evaluation"]["ece"] == 0.05
    human = subprocess.run([sys.executable, str(REPO / "management" / "cli.py"), "models", "list",
                            "--base-dir", str(base)], capture_output=True, text=True, timeout=60)
    assert human.returncode == 0, human.stderr
    assert "models/checkpoints/j/step-00000003" in human.stdout and "0.400" in human.stdout
