"""pause / resume / skip / stop mid-training through the real controller script (run by path),
observed in the status file; stop -> restart resumes the same job from its checkpoint."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_inputs.daemon_harness import (StatusPoller, controller, heartbeat_wall, queue_names, start_daemon, status, update_config,
                                       wait_for)
from conftest import chat_records, write_jsonl

pytestmark = pytest.mark.slow


def _steps(job_dir: Path) -> list[int]:
    return sorted(int(p.name[5:]) for p in job_dir.glob("step-*"))


def test_pause_resume_skip_stop_and_resume_after_restart(base_dir, reaper):
    base = base_dir
    update_config(base, {"training": {"max_steps": 100000, "save_steps": 100000, "eval_steps": 0,
                                      "per_device_batch_size": 2},
                         "daemon": {"heartbeat_interval": 0.5, "file_stable_seconds": 0.2}})
    with StatusPoller(base) as poller:
        proc = start_daemon(reaper, base)
        write_jsonl(base / "inbox" / "first.jsonl", chat_records(40, seed=1))
        wait_for(lambda: status(base).get("current_file") == "first.jsonl"
                 and (status(base).get("step_in_file") or 0) >= 2, 240, "first.jsonl training", proc=proc)

        # pause: checkpoint at the step boundary, then no progress
        r = controller(base, "pause", "--reason", "lunch break", "--wait", "90", "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["confirmed"] is True
        st = status(base)
        assert st["state"] == "paused" and st["status"] == "paused" and st["pause_reason"] == "lunch break"
        job_dir = Path(base / "models" / "checkpoints" / st["job_id"])
        paused_at = st["current_step"]
        assert _steps(job_dir)[-1] == paused_at, "pause writes a checkpoint first"
        wait_for(lambda: heartbeat_wall(status(base)) > heartbeat_wall(st) + 1.5, 30,
                 "the daemon's heartbeat 1.5 s into the pause", proc=proc)
        assert status(base)["current_step"] == paused_at, "no step while paused"
        human = controller(base, "status")
        assert "paused:   lunch break" in human.stdout and "first.jsonl" in human.stdout

        # resume: steps advance again
        r = controller(base, "resume", "--wait", "60")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: (status(base).get("current_step") or 0) > paused_at + 1, 60, "steps after resume",
                 proc=proc)
        assert status(base)["state"] == "training"

        # skip: the file goes to failed/ with reason skipped and the user's reason
        r = controller(base, "skip", "--reason", "wrong dataset", "--wait", "60")
        assert r.returncode == 0, r.stdout + r.stderr
        wait_for(lambda: "first.jsonl" in queue_names(base, "failed"), 30, "first.jsonl skipped", proc=proc)
        err = json.loads((base / "queue" / "failed" / "first.error.json").read_text())
        assert err["reason"] == "skipped" and err["user_reason"] == "wrong dataset"
        assert "wrong dataset" in err["message"]
        skipped_at = err["global_step"]
        assert not (base / "models" / "current_model" / "lineage.json").exists(), "a skipped file is not merged"

        # stop: checkpoint, file back at the head of its queue, daemon exits 0
        write_jsonl(base / "inbox" / "second.jsonl", chat_records(40, seed=2))
        wait_for(lambda: status(base).get("current_file") == "second.jsonl"
                 and (status(base).get("step_in_file") or 0) >= 2, 120, "second.jsonl training", proc=proc)
        st = status(base)
        assert st["current_step"] > skipped_at, "the global step continues past the skipped file"
        r = controller(base, "stop", "--reason", "maintenance", "--wait", "90")
        assert r.returncode == 0, r.stdout + r.stderr
        assert proc.wait(30) == 0
        assert status(base)["state"] == "stopped"
        assert queue_names(base, "normal") == ["second.jsonl"] and queue_names(base, "processing") == []
        rec = json.loads((base / "queue" / ".jobs" / "second.jsonl.job.json").read_text())
        job2 = Path(rec["output_dir"])
        stopped_at = _steps(job2)[-1]
        local = stopped_at - rec["global_step_start"]
        assert local >= 2

        # restart: the same job resumes from its checkpoint and finishes (max_steps now reachable)
        update_config(base, {"training": {"max_steps": local + 3}})
        proc2 = start_daemon(reaper, base)
        wait_for(lambda: "second.jsonl" in queue_names(base, "recently_completed"), 240, "second.jsonl done",
                 proc=proc2)
        res = json.loads((base / "queue" / "recently_completed" / "second.result.json").read_text())
        assert res["job_id"] == rec["job_id"]
        assert res["resumed_from"] and Path(res["resumed_from"]).name == f"step-{stopped_at:08d}"
        assert res["global_step_start"] == rec["global_step_start"]
        assert res["global_step_end"] == rec["global_step_start"] + local + 3
        lineage = json.loads((base / "models" / "current_model" / "lineage.json").read_text())
        assert lineage["global_step"] == res["global_step_end"]
        proc2.terminate()
        assert proc2.wait(60) == 0
    assert poller.reads > 50 and not poller.bad, poller.bad[:3]
