"""The crash detector on real files: failed jobs, watchdog exits, hangs, trainer-log tracebacks;
classification, counts, merging one crash seen twice, bounded history, advice, and the CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from foundation.status_io import utc_now_iso
from safety.crash.classify import ADVICE
from safety.crash.report import CrashDetector
from tests.bad_inputs.daemon_harness import child_env

REPO = Path(__file__).resolve().parents[1]

OOM_TB = """Traceback (most recent call last):
  File "/repo/core/daemon/trainer_child.py", line 340, in _run_one
    result = _run_in_process(job_doc, ctl, chan)
  File "/repo/trainer/engine/engine.py", line 150, in run_job
    trainer.train()
torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB
"""
CHAINED_TB = """Traceback (most recent call last):
  File "a.py", line 1, in f
    open(p)
FileNotFoundError: [Errno 2] No such file or directory: 'x'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "a.py", line 3, in g
    f()
RuntimeError: could not read the shard
"""


def _fail(base: Path, name: str, **doc) -> None:
    (base / "queue" / "failed" / name).write_text("{}\n")
    (base / "queue" / "failed" / name.replace(".jsonl", ".error.json")).write_text(
        json.dumps({"file": name, "failed_at": utc_now_iso(), **doc}))


def test_failed_jobs_classified_counted_once_with_advice(base_dir):
    _fail(base_dir, "a.jsonl", reason="nan_loss", message="training loss is nan at global step 7")
    _fail(base_dir, "b.jsonl", reason="data_error", message="b.jsonl:3: bad record")
    _fail(base_dir, "c.jsonl", reason="other", message="KeyError: 'x'", traceback="Traceback ...\nKeyError: 'x'\n")
    _fail(base_dir, "d.jsonl", reason="skipped", message="skipped by request")
    _fail(base_dir, "e.jsonl", reason="disk_full", message="No space left on device")
    det = CrashDetector(base_dir)
    new = det.scan_once()
    assert sorted(i["kind"] for i in new) == ["data_error", "disk_full", "exception", "nan_loss"]
    assert all(i["advice"] == ADVICE[i["kind"]] for i in new)
    assert CrashDetector(base_dir).scan_once() == [], "a second scan (a new process too) counts nothing twice"
    doc = json.loads((base_dir / "status" / "crash_report.json").read_text())
    assert doc["total"] == 4 and doc["counts"]["nan_loss"] == 1 and doc["counts"]["oom"] == 0
    assert set(doc["advice"]) == {"nan_loss", "data_error", "exception", "disk_full"}
    assert doc["last"]["data_error"][0]["subject"] == "queue/failed/b.jsonl"


def test_watchdog_exits_hangs_and_trainer_tracebacks(base_dir):
    now = utc_now_iso()
    programs = {
        "inference_server": {"state": "BACKOFF", "restarts": 1, "last_exit": {"code": None, "signal": "SIGKILL",
                             "reason": "killed by SIGKILL", "at": now}, "last_log_lines": ["serving"]},
        "automated_testing": {"state": "RUNNING", "restarts": 2, "last_exit": {"code": 1, "signal": None,
                              "reason": "exited with code 1", "at": now},
                              "last_log_lines": OOM_TB.replace("torch.OutOfMemoryError: CUDA out of memory. "
                                                              "Tried to allocate 2.00 GiB",
                                                              "MemoryError").splitlines()},
        "deployment_orchestrator": {"state": "RUNNING", "restarts": 1, "last_exit": {
            "code": None, "signal": "SIGTERM", "reason": "hung (heartbeat 400s old); stopped by the watchdog", "at": now}},
        "training_daemon": {"state": "STOPPED", "last_exit": {"code": 0, "signal": None, "reason": "exited with code 0",
                                                              "at": now}},
    }
    (base_dir / "status" / "watchdog.json").write_text(json.dumps({"programs": programs}))
    log = base_dir / "logs" / "trainer_child.log"
    cut = CHAINED_TB.index("Traceback (most recent call last):\n  File \"a.py\", line 3")
    log.write_text("starting\n" + OOM_TB + "trainer child: ready\n" + CHAINED_TB[:cut + 40])
    det = CrashDetector(base_dir)
    kinds = sorted((i["source"], i["kind"]) for i in det.scan_once())
    assert kinds == [("trainer_log", "oom"), ("watchdog", "hang"), ("watchdog", "killed"), ("watchdog", "oom")]
    # the rest of the chained traceback arrives: it is read once, whole, as one crash
    with open(log, "a") as f:
        f.write(CHAINED_TB[cut + 40:] + "more output\n")
    new = det.scan_once()
    assert [(i["kind"], i["message"]) for i in new] == [("exception", "RuntimeError: could not read the shard")]
    assert "FileNotFoundError" in new[0]["traceback"]
    assert det.scan_once() == []


def test_one_crash_seen_twice_counts_once(base_dir):
    # the trainer's traceback in its log, then the daemon's failed record with the same exception
    (base_dir / "logs" / "trainer_child.log").write_text(OOM_TB)
    det = CrashDetector(base_dir)
    assert [i["kind"] for i in det.scan_once()] == ["oom"]
    _fail(base_dir, "big.jsonl", reason="oom", message="CUDA out of memory", traceback=OOM_TB)
    assert det.scan_once() == []
    doc = json.loads((base_dir / "status" / "crash_report.json").read_text())
    assert doc["counts"]["oom"] == 1 and doc["recent"][0]["sources"] == ["trainer_log", "failed"]
    assert doc["recent"][0]["subject"] == "queue/failed/big.jsonl"
    # a hang the anti-stuck monitor killed, and the watchdog's SIGKILL exit of that program
    now = utc_now_iso()
    (base_dir / "status" / "anti_stuck.json").write_text(json.dumps({"events": [
        {"at": now, "kind": "evaluation", "detail": "evaluation of step-10 running for 2000s", "target":
         "automated_testing", "pid": 4242, "killed": "process group", "stacks_file": "logs/stuck_x.txt"}]}))
    (base_dir / "status" / "watchdog.json").write_text(json.dumps({"programs": {"automated_testing": {
        "state": "BACKOFF", "restarts": 1,
        "last_exit": {"code": None, "signal": "SIGKILL", "reason": "killed by SIGKILL", "at": now}}}}))
    new = det.scan_once()
    assert [(i["kind"], i["source"]) for i in new] == [("hang", "stuck")]
    doc = json.loads((base_dir / "status" / "crash_report.json").read_text())
    assert doc["counts"]["hang"] == 1 and doc["counts"]["killed"] == 0
    assert doc["recent"][0]["sources"] == ["stuck", "watchdog"]


def test_history_is_bounded(base_dir):
    from safety.crash import report
    for i in range(report.RECENT + 5):
        _fail(base_dir, f"f{i:02d}.jsonl", reason="nan_loss", message=f"nan {i}")
    CrashDetector(base_dir).scan_once()
    doc = json.loads((base_dir / "status" / "crash_report.json").read_text())
    assert doc["counts"]["nan_loss"] == report.RECENT + 5
    assert len(doc["recent"]) == report.RECENT and len(doc["last"]["nan_loss"]) == report.LAST_PER_KIND


def test_cli_once_json_show_and_bad_arguments(base_dir, tmp_path):
    _fail(base_dir, "a.jsonl", reason="hang", message="no optimizer step for 1800s; killed")
    cmd = [sys.executable, str(REPO / "safety" / "crash_detector.py")]
    r = subprocess.run(cmd + ["--once", "--json", "--base-dir", str(base_dir)], capture_output=True, text=True,
                       timeout=60, env=child_env(), cwd=str(REPO))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["hang"] == 1
    r = subprocess.run([sys.executable, "-m", "management.cli", "crashes", "show", "--base-dir", str(base_dir)],
                       capture_output=True, text=True, timeout=60, env=child_env(), cwd=str(REPO))
    assert r.returncode == 0 and "crashes: 1 in total (hang 1)" in r.stdout and "what to do about hang" in r.stdout
    r = subprocess.run(cmd + ["--interval", "0", "--base-dir", str(base_dir)], capture_output=True, text=True,
                       timeout=60, env=child_env(), cwd=str(REPO))
    assert r.returncode == 2 and "--interval" in r.stderr
    r = subprocess.run(cmd + ["--once", "--base-dir", str(tmp_path / "nowhere")], capture_output=True, text=True,
                       timeout=60, env=child_env(), cwd=str(REPO))
    assert r.returncode == 2 and str(tmp_path / "nowhere") in r.stderr
