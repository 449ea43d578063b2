"""Reliability under the real watchdog (scripts/start_all.sh --no-setup on a tmp base with the tiny
model, every program of the default table): each process of the system is SIGKILLed in turn while
training and restarted, and every dropped file is trained to the end (none lost, none failed); a
SIGSTOPped trainer child (a hang: its daemon's heartbeat stays fresh) is detected by the anti-stuck
monitor, its stacks are dumped to logs/, it is killed, and its job resumes from its checkpoint."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bad_inputs.daemon_harness import child_pid, pid_gone, queue_names, status
from tests.conftest import REPO, chat_records, write_jsonl
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow
VICTIMS = ("training_daemon", "inference_server", "automated_testing", "deployment_orchestrator")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(base: Path, rel: str) -> dict:
    try:
        return json.loads((base / rel).read_text())
    except (OSError, ValueError):
        return {}


def _program(base: Path, name: str) -> dict:
    return (_read(base, "status/watchdog.json").get("programs") or {}).get(name) or {}


@pytest.fixture(scope="module")
def system(tmp_path_factory, tiny_model_dir):
    from foundation.paths import Paths
    base = Paths.from_base(tmp_path_factory.mktemp("reliability") / "base").ensure().base
    (base / "config.json").write_text(json.dumps({
        "model": {"model_path": str(tiny_model_dir), "base_model": str(tiny_model_dir)},
        "training": {"per_device_batch_size": 2, "learning_rate": 1e-3, "warmup_steps": 2, "logging_steps": 1,
                     "save_steps": 4, "eval_steps": 0, "max_steps": 24},
        "data": {"max_length": 128},
        # stall_timeout 0: the anti-stuck monitor, not the daemon's own stall check, handles the hang
        "daemon": {"heartbeat_interval": 0.5, "file_stable_seconds": 0.2, "max_job_restarts": 1000,
                   "stall_timeout": 0, "stop_timeout": 60},
        "inference": {"port": _free_port(), "num_threads": 1},
        "evaluation": {"max_items": 2, "max_new_tokens": 4, "batch_size": 2},
        "autonomy": {"datagen_enabled": False},  # only the dropped files are trained here
        "watchdog": {"backoff_initial": 0.5, "evaluation_budget": 20.0, "stuck_check_interval": 0.5,
                     "crash_check_interval": 1.0},
    }))
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    started = subprocess.run(["bash", str(REPO / "scripts/start_all.sh"), "--no-setup", "--base-dir", str(base)],
                             capture_output=True, text=True, env=env, timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        assert {"anti_stuck_monitor", "crash_detector", *VICTIMS} <= set(_read(base, "status/watchdog.json")["programs"])
        yield base
    finally:
        stopped = subprocess.run(["bash", str(REPO / "scripts/stop_all.sh"), "--base-dir", str(base),
                                  "--timeout", "60", "--kill"], capture_output=True, text=True, env=env, timeout=300)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        for pid_file in (base / ".pids").glob("*.pid"):
            pid = int(pid_file.read_text().split()[0])
            wait_for(lambda: pid_gone(pid), 30, f"{pid_file.name}: pid {pid} gone")


def _drop(base: Path, name: str, seed: int) -> None:
    tmp = write_jsonl(base / "data" / "generated" / name, chat_records(32, seed=seed))
    os.replace(tmp, base / "inbox" / name)


def _training(base: Path, min_step: int = 1) -> bool:
    st = status(base)
    return st.get("state") == "training" and st.get("status") == "training" and (st.get("step_in_file") or 0) >= min_step


def test_kill9_each_process_while_training_restarts_it_and_loses_nothing(system):
    base = system
    dropped = []
    for i, name in enumerate(VICTIMS):
        dropped.append(f"kill-{i}-{name}.jsonl")
        _drop(base, dropped[-1], seed=30 + i)
        wait_for(lambda: _training(base, 2), 300, f"training before killing {name}")
        pid = wait_for(lambda: _program(base, name).get("state") == "RUNNING" and _program(base, name).get("pid"),
                       300, f"{name} RUNNING")
        os.kill(pid, signal.SIGKILL)
        new = wait_for(lambda: _program(base, name).get("pid") not in (None, pid)
                       and _program(base, name).get("state") in ("STARTING", "RUNNING")
                       and _program(base, name)["pid"], 120, f"{name} restarted by the watchdog")
        assert new != pid and _program(base, name)["last_exit"]["signal"] == "SIGKILL"
    wait_for(lambda: set(dropped) <= set(queue_names(base, "recently_completed")), 600,
             f"every dropped file completed ({dropped})", interval=0.5)
    assert queue_names(base, "failed") == [] and queue_names(base, "processing") == []
    programs = _read(base, "status/watchdog.json")["programs"]
    assert all(programs[n]["restarts"] >= 1 for n in VICTIMS)
    assert not [n for n, p in programs.items() if p["state"] == "FATAL"], programs
    report = wait_for(lambda: (_read(base, "status/crash_report.json").get("counts") or {}).get("killed", 0) >= 4
                      and _read(base, "status/crash_report.json"), 60, "the crash detector counted the kills")
    assert "killed" in report["advice"]


def test_sigstopped_trainer_child_is_detected_dumped_killed_and_resumed(system):
    base = system
    _drop(base, "hang.jsonl", seed=77)
    wait_for(lambda: status(base).get("current_file") == "hang.jsonl" and _training(base, 6), 300,
             "hang.jsonl training past its first checkpoint")
    child = child_pid(base)
    assert child
    os.kill(child, signal.SIGSTOP)
    event = wait_for(lambda: next((e for e in _read(base, "status/anti_stuck.json").get("events") or []
                                   if e.get("pid") == child), None), 180, "the anti-stuck monitor's detection")
    assert event["kind"] == "training" and event["killed"] == "process group"
    dump = Path(event["stacks_file"])
    assert dump.parent == base / "logs" and event["stack_method"] in ("faulthandler", "py-spy")
    text = dump.read_text()
    assert "SIGCONT sent" in text or event["stack_method"] == "py-spy"
    assert "File " in text and ("trainer" in text or "torch" in text), text[:3000]
    wait_for(lambda: pid_gone(child), 30, "the hung child gone")
    wait_for(lambda: "hang.jsonl" in queue_names(base, "recently_completed"), 300, "hang.jsonl completed",
             interval=0.5)
    result = _read(base, "queue/recently_completed/hang.result.json")
    assert result["restarts"] >= 1 and result["resumed_from"], result
    assert queue_names(base, "failed") == []
    wait_for(lambda: (_read(base, "status/crash_report.json").get("counts") or {}).get("hang", 0) >= 1, 60,
             "the crash detector counted the hang")
