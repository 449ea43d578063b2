"""The real daemon (own process, real inotify, real trainer child on the tiny model) against the
bad-input corpus, a second daemon, and a status reader polling the whole time; the good file
trains with ``training.num_processes = 2`` (accelerate launch, CPU DDP)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bad_inputs.corpus import make_corpus, make_ignored
from bad_inputs.daemon_harness import (DAEMON, REPO, StatusPoller, child_env, queue_names, start_daemon, status,
                                       update_config, wait_for)
from conftest import chat_records, write_jsonl

pytestmark = pytest.mark.slow


def test_bad_inputs_quarantined_good_file_trained_second_daemon_refused(base_dir, reaper):
    base = base_dir
    # The good file trains through `accelerate launch` with two CPU processes (gloo DDP): the
    # multi-process path of the trainer child (the single-process path is the chaos/control tests').
    update_config(base, {"training": {"max_steps": 4, "save_steps": 2, "eval_steps": 0, "num_processes": 2,
                                      "device": "cpu", "per_device_batch_size": 2},
                         "data": {"max_line_bytes": 4096},
                         "daemon": {"heartbeat_interval": 0.5, "file_stable_seconds": 0.3}})
    suite = (REPO / "data" / "validation" / "syllo_validation_v2.jsonl").read_text().splitlines()
    (base / "data" / "validation" / "suite.jsonl").write_text("\n".join(suite[:4]) + "\n")

    with StatusPoller(base) as poller:
        proc = start_daemon(reaper, base)
        wait_for(lambda: status(base).get("state") == "idle", 60, "daemon idle", proc=proc)
        daemon_pid = status(base)["pid"]
        assert (base / ".pids" / "training_daemon.pid").read_text().strip() == str(daemon_pid)

        # A second daemon on the same base dir is refused, naming the running PID.
        second = subprocess.run([sys.executable, str(DAEMON), "start", "--base-dir", str(base)],
                                capture_output=True, text=True, timeout=60, env=child_env())
        assert second.returncode == 1
        assert f"pid {daemon_pid}" in second.stderr

        expected = make_corpus(base / "inbox", base, validation_line=suite[1])
        assert len(expected) >= 15
        ignored = make_ignored(base / "inbox")
        write_jsonl(base / "inbox" / "high" / "good.jsonl", chat_records(24, seed=5))

        wait_for(lambda: "good.jsonl" in queue_names(base, "recently_completed"), 240, "good.jsonl trained",
                 interval=0.2, proc=proc)
        wait_for(lambda: all(n in queue_names(base, "failed") for n in expected), 30, "all bad inputs quarantined",
                 proc=proc)
        # the file is moved before the state goes back to idle: wait for the state, do not race it
        st = wait_for(lambda: status(base).get("state") == "idle" and status(base), 30, "idle after good.jsonl",
                      proc=proc)
        assert st["pid"] == daemon_pid, "the daemon must stay up"

    assert poller.reads > 50 and not poller.bad, poller.bad[:3]

    failed = base / "queue" / "failed"
    for name, (reason, line_reason, lines) in expected.items():
        side = failed / ((name[:-6] if name.endswith(".jsonl") else name) + ".error.json")
        err = json.loads(side.read_text())
        assert err["reason"] == reason, (name, err)
        assert err["file"] == name and err["failed_at"] and err["message"]
        assert name in err["message"] or err["original_name"] == name
        if line_reason:
            assert err["errors"][0]["reason"] == line_reason, (name, err["errors"])
            assert err["line_numbers"] == lines, (name, err)
    # the symlinks were moved as links (their targets untouched), the directory as a directory
    assert os.path.islink(failed / "escape_link.jsonl") and Path("/etc/hostname").exists()
    assert (failed / "a_directory" / "inner.jsonl").is_file()
    assert (base / "data" / "generated" / "inside.jsonl").is_file()
    # in-progress names are never taken
    assert sorted(n for n in os.listdir(base / "inbox") if n not in ("high", "low", "normal")) == sorted(ignored)

    res = json.loads((base / "queue" / "recently_completed" / "good.result.json").read_text())
    assert res["status"] == "completed" and res["priority"] == "high" and res["tokens"] > 0
    assert res["steps"] == 4 and res["global_step_start"] == 0 and res["global_step_end"] == 4
    assert Path(res["checkpoint"]).name == "step-00000004" and Path(res["checkpoint"]).is_dir()
    lineage = json.loads((base / "models" / "current_model" / "lineage.json").read_text())
    assert lineage["global_step"] == 4 and lineage["source_file"] == "good.jsonl"
    assert (base / "models" / "current_model" / "model.safetensors").is_file()

    # checkpoints are registered in the model registry with the file that produced them
    from foundation.model_db import ModelDB
    db = ModelDB(base / "models" / "model_db.sqlite")
    ckpts = {Path(c["path"]).name: c for c in db.list_checkpoints()}
    assert {"step-00000002", "step-00000004"} <= set(ckpts)
    assert ckpts["step-00000004"]["source_file"] == "good.jsonl"
    files = db.list_files()
    assert [f["status"] for f in files if f["source_file"] == "good.jsonl"] == ["completed"]

    # SIGTERM: clean exit 0, status says stopped, lock released
    proc.terminate()
    assert proc.wait(60) == 0
    assert status(base)["state"] == "stopped"
    assert not (base / ".pids" / "training_daemon.pid").exists()
    log = (base / "logs" / "training_daemon.log").read_text()
    assert "rejected fifo.jsonl" in log and "good.jsonl -> queue/recently_completed/good.jsonl" in log
