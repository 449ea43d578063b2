"""The controller and daemon command lines: run by path, through trainctl, and the start/stop
scripts (detached daemon, PID file, clean stop)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bad_inputs.daemon_harness import child_env, controller, pid_gone, queue_names, status, wait_for

REPO = Path(__file__).resolve().parents[1]


def test_flags_written_by_path_and_status_without_daemon(base_dir):
    r = controller(base_dir, "pause", "--reason", "disk check", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["flag"] == "pause" and doc["daemon_running"] is False
    flag = json.loads((base_dir / "control" / ".pause").read_text())
    assert flag["reason"] == "disk check" and flag["created_at"].endswith("Z")

    r = controller(base_dir, "resume")
    assert r.returncode == 0 and "not running" in r.stdout
    assert not (base_dir / "control" / ".pause").exists(), "resume clears .pause even with no daemon"
    assert (base_dir / "control" / ".resume").exists()

    r = controller(base_dir, "skip", "--reason", "x")
    assert r.returncode == 0 and "stale flag is ignored" in r.stdout

    r = controller(base_dir, "status")
    assert r.returncode == 0 and "not running" in r.stdout and "queue:" in r.stdout
    r = controller(base_dir, "status", "--json")
    assert json.loads(r.stdout)["state"] == "stopped"


def test_trainctl_lists_commands_without_importing_torch(base_dir):
    code = ("import sys; from click.testing import CliRunner; from management.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); print(r.output); "
            "r = CliRunner().invoke(main, ['queue', 'status', '--json', '--base-dir', sys.argv[1]]); print(r.output); "
            "print('TORCH' if 'torch' in sys.modules else 'NO_TORCH')")
    out = subprocess.run([sys.executable, "-c", code, str(base_dir)], capture_output=True, text=True, timeout=60,
                         cwd=str(REPO))
    assert out.returncode == 0, out.stderr
    for name in ("daemon", "queue", "pause", "resume", "stop", "skip", "status"):
        assert f"  {name} " in out.stdout
    assert out.stdout.strip().endswith("NO_TORCH")


def test_start_all_demo_then_stop_all(base_dir, reaper):
    env = child_env()
    r = subprocess.run(["bash", str(REPO / "scripts" / "start_all.sh"), "--base-dir", str(base_dir), "--demo",
                        "--training-only", "--no-setup"],
                       capture_output=True, text=True, timeout=120, env=env)
    try:
        assert r.returncode == 0, r.stdout + r.stderr
        assert "training daemon started (pid" in r.stdout and "demo: dropped inbox/demo-" in r.stdout
        pid = int((base_dir / ".pids" / "training_daemon.pid").read_text())
        # the demo file is validated and queued (or already claimed)
        wait_for(lambda: queue_names(base_dir, "normal") or queue_names(base_dir, "processing")
                 or queue_names(base_dir, "recently_completed"), 60, "demo file queued")
        again = subprocess.run(["bash", str(REPO / "scripts" / "start_all.sh"), "--base-dir", str(base_dir),
                                "--training-only", "--no-setup"],
                               capture_output=True, text=True, timeout=60, env=env)
        assert again.returncode == 0 and "already running" in again.stdout
        st = subprocess.run([sys.executable, str(REPO / "core" / "training_daemon.py"), "status", "--json",
                             "--base-dir", str(base_dir)], capture_output=True, text=True, timeout=60)
        assert json.loads(st.stdout)["running"] is True and json.loads(st.stdout)["pid"] == pid
    finally:
        r2 = subprocess.run(["bash", str(REPO / "scripts" / "stop_all.sh"), "--base-dir", str(base_dir),
                             "--timeout", "120", "--kill"], capture_output=True, text=True, timeout=180, env=env)
    assert r2.returncode == 0 and "stopped" in r2.stdout, r2.stdout + r2.stderr
    wait_for(lambda: pid_gone(pid), 10, "daemon gone")
    assert json.loads((base_dir / "status" / "training_status.json").read_text())["state"] == "stopped"
    # nothing lost: the demo file is queued again (stopped mid-job) or trained
    names = (queue_names(base_dir, "normal") + queue_names(base_dir, "recently_completed"))
    assert len(names) == 1 and names[0].startswith("demo-") and queue_names(base_dir, "processing") == []


def test_daemon_by_path_without_subcommand_runs_in_foreground(base_dir, reaper):
    """The seed's ``nohup python3 core/training_daemon.py --base-dir . > logs/training_output.log 2>&1 &``:
    no subcommand means start, in the foreground, until SIGTERM."""
    env = child_env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # python3: this venv's
    log = base_dir / "logs" / "training_output.log"
    with open(log, "wb") as out:
        proc = reaper.popen(["python3", "core/training_daemon.py", "--base-dir", str(base_dir)],
                            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    wait_for(lambda: status(base_dir).get("pid") == proc.pid and status(base_dir).get("state") == "idle", 90,
             "the daemon's status heartbeat: idle", proc=proc)
    assert (base_dir / ".pids" / "training_daemon.pid").read_text().strip() == str(proc.pid)
    # --base-dir before the subcommand applies to it too
    st = subprocess.run(["python3", "core/training_daemon.py", "--base-dir", str(base_dir), "status", "--json"],
                        capture_output=True, text=True, timeout=60, env=env, cwd=str(REPO))
    assert st.returncode == 0, st.stderr
    assert json.loads(st.stdout)["pid"] == proc.pid and json.loads(st.stdout)["state"] == "idle"

    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(60) == 0
    assert status(base_dir)["state"] == "stopped"
    assert not (base_dir / ".pids" / "training_daemon.pid").exists()
    assert "training daemon starting" in log.read_text()
