"""The anti-stuck monitor: the stall rules (pure, with a fake clock), the median step time, stack
dumps of a real stuck process (faulthandler on SIGUSR1, also when SIGSTOPped), the kill of its
process group, and the CLI. The end-to-end hang of a real trainer child is in test_reliability.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from foundation.status_io import utc_now_iso
from safety.anti_stuck.detector import Limits, check_evaluation, check_training
from safety.anti_stuck.progress import median_step_time
from tests.bad_inputs.daemon_harness import child_env
from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
LIMITS = Limits(step_factor=10.0, evaluation_budget=60.0, heartbeat_stale_s=30.0)


def _iso(t: float) -> str:
    return utc_now_iso(lambda: t)


def _train_doc(now: float, step: int, **kw) -> dict:
    return {"pid": 1, "daemon_heartbeat_at": _iso(now), "state": "training", "status": "training",
            "job_id": "j1", "current_step": step, **kw}


def test_training_stuck_only_after_max_of_ten_median_steps_and_the_budget():
    t0 = 1_000_000.0
    track, stuck, info = check_training(_train_doc(t0, 5), {}, t0, LIMITS, 2.0)
    assert stuck is None and info["active"] and track["since"] == t0
    # the step moves: the clock starts again
    track, stuck, _ = check_training(_train_doc(t0 + 50, 6), track, t0 + 50, LIMITS, 2.0)
    assert stuck is None and track["since"] == t0 + 50
    # unchanged for 60 s (the budget floor; 10 x 2 s = 20 s is smaller): not yet; past it: stuck
    track, stuck, _ = check_training(_train_doc(t0 + 110, 6), track, t0 + 110, LIMITS, 2.0)
    assert stuck is None
    track, stuck, _ = check_training(_train_doc(t0 + 111, 6), track, t0 + 111, LIMITS, 2.0)
    assert stuck is not None and stuck.limit_s == 60.0 and stuck.what == {"job_id": "j1", "step": 6}
    assert "global step 6 unchanged for 61s" in stuck.detail
    # slow steps: 10 x 9 s = 90 s is the limit
    _, stuck, info = check_training(_train_doc(t0 + 111, 6), {**track, "since": t0 + 30}, t0 + 111, LIMITS, 9.0)
    assert stuck is None and info["limit_s"] == 90.0


def test_paused_loading_or_stale_heartbeat_is_not_judged():
    t0 = 2_000_000.0
    old = {"job_id": "j1", "step": 6, "since": t0 - 1000}
    for doc, why in [(_train_doc(t0, 6, paused=True), "paused"),
                     (_train_doc(t0, 6, status="starting"), "not stepping"),
                     (_train_doc(t0 - 100, 6), "heartbeat stale"),
                     (_train_doc(t0, 6, state="idle"), "daemon idle")]:
        track, stuck, info = check_training(doc, old, t0, LIMITS, 1.0)
        assert stuck is None and why in info["why"] and "since" not in track
    # after a pause the clock starts again
    track, stuck, _ = check_training(_train_doc(t0, 6), {"samples": []}, t0, LIMITS, 1.0)
    assert stuck is None and track["since"] == t0


def test_evaluation_stuck_on_one_checkpoint_past_the_budget():
    t0 = 3_000_000.0
    doc = {"pid": 7, "heartbeat_at": _iso(t0), "state": "evaluating",
           "current": {"checkpoint": "models/checkpoints/j/step-00000010", "started_at": _iso(t0 - 59)}}
    track, stuck, _ = check_evaluation(doc, {}, t0, LIMITS)
    assert stuck is None
    track, stuck, _ = check_evaluation({**doc, "heartbeat_at": _iso(t0 + 2)}, track, t0 + 2, LIMITS)
    assert stuck is not None and "step-00000010" in stuck.detail and stuck.limit_s == 60.0
    _, stuck, info = check_evaluation({**doc, "state": "idle", "current": None}, track, t0 + 2, LIMITS)
    assert stuck is None and not info["active"]


def test_median_step_time_from_metrics_log_ignores_job_boundaries(tmp_path):
    lines = [{"time": 100.0 + i * 0.5, "global_step": i, "loss": 1.0, "job_id": "a"} for i in range(1, 6)]
    lines += [{"time": 500.0, "global_step": 6, "loss": 1.0, "job_id": "b"},  # next job, much later
              {"time": 501.0, "global_step": 8, "loss": 1.0, "job_id": "b"},
              {"time": 501.5, "global_step": 8, "validation_loss": 1.2, "job_id": "b"}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"broken')
    assert median_step_time(tmp_path) == (0.5, "metrics.jsonl")
    (tmp_path / "metrics.jsonl").unlink()
    assert median_step_time(tmp_path, [[0, 1, "a"], [3, 2, "a"], [4, 4, "a"]]) == (1.75, "status samples")  # median of 3 s and 0.5 s
    assert median_step_time(tmp_path, []) == (None, "none")


STUCK_CHILD = textwrap.dedent("""
    import faulthandler, signal, sys, threading
    if sys.argv[1] == "handler":
        faulthandler.register(signal.SIGUSR1, all_threads=True)
    def stuck_in_a_deadlock():
        print("ready", flush=True)
        threading.Event().wait()
    stuck_in_a_deadlock()
""")


def _stuck_process(reaper, tmp_path: Path, mode: str, name: str = "trainer_child.py") -> tuple[subprocess.Popen, Path]:
    script = tmp_path / name
    script.write_text(STUCK_CHILD)
    log = tmp_path / f"{mode}.log"
    out = open(log, "ab")
    p = reaper.popen([sys.executable, str(script), mode], stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: "ready" in log.read_text(), 30, "stuck child ready", proc=p)
    return p, log


def test_stacks_of_a_stopped_process_via_faulthandler_then_group_kill(reaper, tmp_path):
    from safety.anti_stuck.stacks import catches, dump_stacks, kill_group
    p, log = _stuck_process(reaper, tmp_path, "handler")
    assert catches(p.pid, signal.SIGUSR1)
    os.kill(p.pid, signal.SIGSTOP)
    wait_for(lambda: Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", 10, "stopped")
    out = tmp_path / "logs" / "dump.txt"
    method = dump_stacks(p.pid, out, "test hang", log)
    text = out.read_text()
    assert method == "faulthandler" and "stuck_in_a_deadlock" in text and "SIGCONT sent" in text
    assert "## /proc" in text and "state: " in text
    assert kill_group(p.pid) == "process group"
    assert p.wait(10) == -signal.SIGKILL


def test_no_handler_means_no_sigusr1_and_proc_info_only(reaper, tmp_path):
    from safety.anti_stuck.stacks import dump_stacks, kill_group
    p, log = _stuck_process(reaper, tmp_path, "plain")
    out = tmp_path / "dump.txt"
    assert dump_stacks(p.pid, out, "test", log, wait_s=0.5) in ("proc-only", "py-spy")
    assert p.poll() is None, "SIGUSR1 (default action: terminate) must not be sent without a handler"
    assert "state:" in out.read_text()
    kill_group(p.pid)
    p.wait(10)


def test_monitor_kills_a_stuck_trainer_child_and_records_it(base_dir, reaper, tmp_path):
    from safety.anti_stuck.monitor import AntiStuckMonitor
    p, log = _stuck_process(reaper, tmp_path, "handler")
    (base_dir / "logs" / "trainer_child.log").write_bytes(b"")
    os.replace(log, base_dir / "logs" / "trainer_child.log")  # the child keeps writing to the same inode
    doc = {"pid": os.getpid(), "state": "training", "status": "training", "job_id": "j1", "current_step": 3,
           "trainer_child": {"pid": p.pid, "state": "busy"}}
    status = base_dir / "status" / "training_status.json"

    def beat() -> None:
        status.write_text(json.dumps({**doc, "daemon_heartbeat_at": utc_now_iso()}))

    beat()
    mon = AntiStuckMonitor(base_dir, Limits(step_factor=10, evaluation_budget=0.3, heartbeat_stale_s=30), 0.1)
    assert mon.check_once() == []

    def detected():
        beat()
        return mon.check_once()
    events = wait_for(detected, 30, "the stuck trainer child detected")
    e = events[0]
    assert e["kind"] == "training" and e["pid"] == p.pid and e["killed"] == "process group"
    assert e["stack_method"] == "faulthandler" and "stuck_in_a_deadlock" in Path(e["stacks_file"]).read_text()
    assert Path(e["stacks_file"]).parent == base_dir / "logs"
    assert p.wait(10) == -signal.SIGKILL
    saved = json.loads((base_dir / "status" / "anti_stuck.json").read_text())
    assert saved["detections_total"] == 1 and saved["events"][0]["pid"] == p.pid
    assert saved["training"]["median_source"] in ("status samples", "none")
    beat()
    assert mon.check_once() == [], "the clock starts again after a kill: no second kill at once"


def _cli(*args: str, base: Path | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "safety" / "anti_stuck_monitor.py"), *args]
    if base is not None:
        cmd += ["--base-dir", str(base)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))


def test_cli_once_json_status_and_bad_arguments(base_dir, tmp_path):
    r = _cli("--once", "--json", base=base_dir)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["state"] == "stopped" and doc["training"]["active"] is False and doc["limits"]["step_factor"] == 10.0
    r = subprocess.run([sys.executable, "-m", "management.cli", "stuck"], capture_output=True, text=True,
                       timeout=60, env={**child_env(), "TRAINER_BASE_DIR": str(base_dir)}, cwd=str(REPO))
    assert r.returncode == 0 and "anti-stuck monitor: not running" in r.stdout  # no subcommand: status
    r = subprocess.run([sys.executable, "-m", "management.cli", "stuck", "status", "--base-dir", str(base_dir)],
                       capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))
    assert r.returncode == 0 and "anti-stuck monitor: not running" in r.stdout and "hangs detected: 0" in r.stdout
    r = _cli("--interval", "-1", base=base_dir)
    assert r.returncode == 2 and "--interval" in r.stderr
    r = _cli("--once", base=tmp_path / "nowhere")
    assert r.returncode == 2 and str(tmp_path / "nowhere") in r.stderr
    (base_dir / "config.json").write_text(json.dumps({"watchdog": {"stuck_step_factor": 0}}))
    r = _cli("--once", base=base_dir)
    assert r.returncode == 2 and "watchdog.stuck_step_factor" in r.stderr
