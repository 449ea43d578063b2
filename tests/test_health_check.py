"""The comprehensive health check on a tmp base dir: processes are the test process itself (its own
PID, fresh heartbeats in real status files) and, for the inference check, a real server."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from foundation.status_io import utc_now_iso, write_status
from helpers.inference_server import ServerProcess, deploy_version, free_port

REPO = Path(__file__).resolve().parents[1]
LENIENT = ["--disk-warn-gb", "0", "--disk-crit-gb", "0", "--mem-warn-pct", "0"]  # not this machine's resources


def run_health(base: Path, *args: str, script: str = "safety/comprehensive_health_check.py") -> subprocess.CompletedProcess:
    cmd = ["bash", str(REPO / script)] if script.endswith(".sh") else [sys.executable, str(REPO / script)]
    return subprocess.run([*cmd, "--base-dir", str(base), *LENIENT, *args], capture_output=True, text=True,
                          timeout=120, cwd=str(REPO), env={**os.environ, "PYTHON": sys.executable})


def fake_process(base: Path, name: str, status: str | None, **fields) -> None:
    """``name`` is "running" as this very test process: its PID file and a fresh heartbeat."""
    (base / ".pids" / f"{name}.pid").write_text(f"{os.getpid()}\n")
    if status:
        write_status(base / "status" / f"{status}.json", fields)


def fake_system(base: Path, programs: list[str]) -> None:
    fake_process(base, "watchdog", "watchdog", state="running",
                 programs={p: {"state": "RUNNING", "pid": os.getpid()} for p in programs})
    if "training_daemon" in programs:
        fake_process(base, "training_daemon", "training_status", state="idle", daemon_pid=os.getpid())
    if "automated_testing" in programs:
        fake_process(base, "automated_testing", "automated_testing", state="idle")
    if "deployment_orchestrator" in programs:
        fake_process(base, "deployment_orchestrator", "deployment_status", state="idle")


def findings(r: subprocess.CompletedProcess) -> dict[str, dict]:
    return {f["check"]: f for f in json.loads(r.stdout)["findings"]}


def test_healthy_system_with_a_real_server_then_version_mismatch(base_dir, tiny_model_dir):
    port = free_port()
    cfg = json.loads((base_dir / "config.json").read_text())
    cfg["inference"] = {"port": port}
    (base_dir / "config.json").write_text(json.dumps(cfg))
    deploy_version(tiny_model_dir, base_dir, "v1", make_current=True)
    fake_system(base_dir, ["training_daemon", "inference_server", "automated_testing", "deployment_orchestrator"])
    with ServerProcess(base_dir, port=port) as server:
        assert server.wait_ready()["version"] == "v1"
        r = run_health(base_dir, "--json")
        assert r.returncode == 0, r.stdout + r.stderr
        doc = json.loads(r.stdout)
        assert set(doc) == {"schema_version", "checked_at", "base_dir", "status", "exit_code", "counts", "findings"}
        assert doc["status"] == "healthy" and doc["exit_code"] == 0 and doc["counts"]["ok"] == len(doc["findings"])
        for f in doc["findings"]:
            assert set(f) == {"check", "level", "message", "action", "details"}
        got = findings(r)
        assert "serving 'v1' (the deployed version)" in got["inference.health"]["message"]
        assert got["process.inference_server"]["details"]["pid"] == server.proc.pid
        assert "headers parse" in got["model.current"]["message"]
        for name in ("watchdog", "training_daemon", "automated_testing", "deployment_orchestrator"):
            assert got[f"process.{name}"]["level"] == "ok"

        text = run_health(base_dir, script="scripts/check_health.sh")
        assert text.returncode == 0 and text.stdout.startswith("health: HEALTHY")

        # a new version made current without a reload: served != deployed
        deploy_version(tiny_model_dir, base_dir, "v2", make_current=True)
        r = run_health(base_dir, "--json")
        assert r.returncode == 1, r.stdout
        f = findings(r)["inference.version"]
        assert f["level"] == "degraded" and f["details"] == {"served": "v1", "deployed": "v2"} and f["action"]


def test_stale_heartbeat_and_stuck_queue_are_degraded(base_dir):
    fake_system(base_dir, ["training_daemon"])
    r = run_health(base_dir, "--json", "--deep")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "every tensor finite" in findings(r)["model.current"]["message"]

    st = json.loads((base_dir / "status" / "training_status.json").read_text())
    st["heartbeat_at"] = utc_now_iso(lambda: __import__("time").time() - 600)
    (base_dir / "status" / "training_status.json").write_text(json.dumps(st))
    r = run_health(base_dir)
    assert r.returncode == 1 and r.stdout.startswith("health: DEGRADED")
    assert "heartbeat in status/training_status.json is 600s old" in r.stdout and "logs/training_daemon.out" in r.stdout

    fake_system(base_dir, ["training_daemon"])
    (base_dir / "queue" / "processing" / "job.jsonl").write_text("{}\n")
    r = run_health(base_dir, "--json")
    f = findings(r)["queue.processing"]
    assert r.returncode == 1 and f["level"] == "degraded" and f["details"]["files"] == ["job.jsonl"]
    assert "is not training (state idle)" in f["message"] and "head of their queue" in f["action"]
    fake_process(base_dir, "training_daemon", "training_status", state="training")
    assert run_health(base_dir).returncode == 0


def test_broken_status_file_config_model_and_dead_daemon_exit_2(base_dir):
    fake_system(base_dir, ["training_daemon"])
    (base_dir / "status" / "automated_testing.json").write_text('{"schema_version": 1, "updated_')
    r = run_health(base_dir, "--json")
    assert r.returncode == 2
    f = findings(r)["status_file.automated_testing"]
    assert f["level"] == "broken" and "does not parse" in f["message"] and "move it aside" in f["action"]
    os.remove(base_dir / "status" / "automated_testing.json")
    assert run_health(base_dir).returncode == 0

    good = (base_dir / "config.json").read_text()
    (base_dir / "config.json").write_text(json.dumps({"training": {"learning_rate": "fast"}}))
    r = run_health(base_dir, "--json")
    f = findings(r)["config"]
    assert r.returncode == 2 and f["level"] == "broken" and "training.learning_rate" in f["message"]
    (base_dir / "config.json").write_text(good)

    current = base_dir / "models" / "current_model"
    current.mkdir(exist_ok=True)
    (current / "config.json").write_text("{}")
    (current / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00not json")
    r = run_health(base_dir, "--json")
    f = findings(r)["model.current"]
    assert r.returncode == 2 and "does not parse as safetensors" in f["message"] and "backups/" in f["action"]
    shutil.rmtree(current)

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (base_dir / ".pids" / "training_daemon.pid").write_text(dead.stdout)
    r = run_health(base_dir, "--json")
    f = findings(r)["process.training_daemon"]
    assert r.returncode == 2 and "not running" in f["message"] and "the watchdog restarts it" in f["action"]


def test_fatal_program_is_broken_and_bad_arguments_are_refused(base_dir):
    fake_system(base_dir, ["training_daemon"])
    doc = json.loads((base_dir / "status" / "watchdog.json").read_text())
    doc["programs"]["training_daemon"] = {"state": "FATAL", "fatal_reason": "5 failed starts within 600s",
                                          "last_log_lines": ["ValueError: boom"]}
    doc["programs"]["my_sidecar"] = {"state": "FATAL", "fatal_reason": "5 failed starts within 600s"}  # a custom row
    (base_dir / "status" / "watchdog.json").write_text(json.dumps(doc))
    r = run_health(base_dir, "--json")
    f = findings(r)["process.training_daemon"]
    assert r.returncode == 2 and "trainctl watchdog reset training_daemon" in f["action"] and "boom" in f["action"]
    assert findings(r)["process.my_sidecar"]["level"] == "broken"

    r = run_health(base_dir, "--stale-after", "zero")
    assert r.returncode == 2 and "Invalid value for '--stale-after'" in r.stderr
    r = run_health(base_dir / "nowhere")
    assert r.returncode == 2 and "does not exist" in r.stderr
