"""Chaos: three files queued; the daemon and its trainer child are SIGKILLed at 10 seeded random
moments (during start-up/intake, mid-training, right when a file finishes) and restarted each
time. Then a fourth file's trainer child alone is killed under a live daemon. At the end every
file is in recently_completed/ exactly once, nothing is lost or duplicated, the lineage's global
step never went backwards, and models/current_model/ loads."""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import pytest

from bad_inputs.daemon_harness import (child_pid, kill9, pid_gone, queue_names, start_daemon, status,
                                       update_config, wait_for)
from conftest import chat_records, write_jsonl

pytestmark = pytest.mark.slow

SEED = 20240611
KILLS = 10
FILES = ("alpha.jsonl", "beta.jsonl", "gamma.jsonl")
LATE = "delta.jsonl"
STEPS = 6


def _lineage_step(base: Path) -> int:
    try:
        return json.loads((base / "models" / "current_model" / "lineage.json").read_text())["global_step"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


def _done(base: Path) -> int:
    return len(queue_names(base, "recently_completed"))


def test_chaos_sigkill_daemon_and_child(base_dir, reaper):
    base = base_dir
    update_config(base, {"training": {"max_steps": STEPS, "save_steps": 2, "eval_steps": 0,
                                      "per_device_batch_size": 2},
                         "daemon": {"heartbeat_interval": 0.3, "file_stable_seconds": 0.2,
                                    "max_job_restarts": 1000, "stop_timeout": 60}})
    for i, name in enumerate(FILES):
        write_jsonl(base / "inbox" / name, chat_records(16, seed=10 + i))

    rng = random.Random(SEED)
    # Half the kills land in start-up (recovery, intake, child import), the others mid-training or
    # right as a file finishes (the bookkeeping: model swap, registry, move to completed).
    plan = ["early"] * 5 + ["training"] * 3 + ["finishing"] * 2
    rng.shuffle(plan)
    lineage_seen = [0]
    modes = []
    for k in range(KILLS):
        proc = start_daemon(reaper, base)
        mode = plan[k] if _done(base) < len(FILES) else "early"
        try:
            if mode == "early":
                time.sleep(rng.uniform(0.1, 3.0))
            elif mode == "training":
                want = rng.randint(1, STEPS - 1)
                wait_for(lambda: status(base).get("state") == "training" and status(base).get("pid") == proc.pid
                         and (status(base).get("step_in_file") or 0) >= want, 90, "training", interval=0.02)
                time.sleep(rng.uniform(0.0, 0.3))
            else:
                done = _done(base)
                wait_for(lambda: (status(base).get("status") == "completed" and status(base).get("pid") == proc.pid)
                         or _done(base) > done, 90, "a file finishing", interval=0.01)
        except AssertionError:
            mode += "(timeout)"
        victims = [proc.pid, child_pid(base)]
        if rng.random() < 0.5:
            victims.reverse()
        for pid in victims:
            kill9(pid)
        proc.wait(30)
        for pid in victims:
            if pid:
                wait_for(lambda: pid_gone(pid), 30, f"pid {pid} gone")
        modes.append(mode)
        step = _lineage_step(base)
        assert step >= lineage_seen[-1], f"lineage step went backwards: {lineage_seen} -> {step}"
        lineage_seen.append(step)

    assert sum(m in ("training", "finishing") for m in modes) >= 3, modes

    # Last life: a fourth file's trainer child alone is SIGKILLed mid-training; the live daemon
    # classifies it ("killed"), resumes the job from its checkpoint and stays up.
    proc = start_daemon(reaper, base)
    write_jsonl(base / "inbox" / LATE, chat_records(16, seed=20))
    wait_for(lambda: status(base).get("current_file") == LATE and status(base).get("pid") == proc.pid
             and (status(base).get("step_in_file") or 0) >= 3, 300, f"{LATE} training", interval=0.02, proc=proc)
    victim = child_pid(base)
    kill9(victim)
    wait_for(lambda: _done(base) == len(FILES) + 1, 300, "all files completed", interval=0.2, proc=proc)
    wait_for(lambda: status(base).get("state") == "idle", 30, "idle", proc=proc)
    assert child_pid(base) != victim
    late = json.loads((base / "queue" / "recently_completed" / "delta.result.json").read_text())
    assert late["restarts"] == 1 and late["resumed_from"], late
    assert "killed by SIGKILL" in (base / "logs" / "training_daemon.log").read_text()
    proc.terminate()
    assert proc.wait(60) == 0

    # every file exactly once, none lost, none duplicated
    assert queue_names(base, "recently_completed") == sorted((*FILES, LATE))
    for folder in ("high", "normal", "low", "processing", "failed"):
        assert queue_names(base, folder) == [], folder
    assert [n for n in os.listdir(base / "inbox") if n not in ("high", "low", "normal")] == []
    assert list((base / "queue" / ".jobs").glob("*.job.json")) == []

    # the global step never went backwards: each file continues where the previous one ended
    results = sorted((json.loads((base / "queue" / "recently_completed" / f"{Path(n).stem}.result.json").read_text())
                      for n in (*FILES, LATE)), key=lambda r: r["global_step_start"])
    prev_end = 0
    for r in results:
        assert r["global_step_end"] - r["global_step_start"] == STEPS, r
        assert r["global_step_start"] >= prev_end, results
        prev_end = r["global_step_end"]
    final_step = _lineage_step(base)
    assert final_step == prev_end and final_step >= lineage_seen[-1]

    # the model registry saw each file complete exactly once
    from foundation.model_db import ModelDB
    db = ModelDB(base / "models" / "model_db.sqlite")
    done = [f["source_file"] for f in db.list_files() if f["status"] == "completed"]
    assert sorted(done) == sorted((*FILES, LATE)), done

    # models/current_model/ loads
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(base / "models" / "current_model")
    tok = AutoTokenizer.from_pretrained(base / "models" / "current_model")
    assert model.num_parameters() > 0 and tok.eos_token == "<|im_end|>"
    print("chaos modes:", modes, "lineage:", lineage_seen)
