"""Two "machines" on this one: the daemon's base dir is machine rank 0, a second base dir that
shares no runtime folder with it runs ``trainctl worker`` as machine rank 1. One job trains under
``accelerate launch --num_machines 2 --machine_rank 0|1`` (torchrun, CPU, gloo); rank 1's launch
is SIGKILLed mid-job (while paused at a checkpoint, so the kill point is exact), the daemon sees the
group fail, restarts it from the last complete checkpoint, the worker joins the new launch, and the
file finishes at its planned global step with every step trained exactly once."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bad_inputs.daemon_harness import REPO, child_env, queue_names, start_daemon, status, update_config, wait_for
from conftest import chat_records, write_jsonl
from core.daemon.control_flags import clear_flag, write_flag
from foundation.json_lines import iter_json_lines
from foundation.paths import Paths

pytestmark = pytest.mark.slow

STEPS = 10


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_pid(worker_base: Path) -> int | None:
    try:
        return int((worker_base / ".pids" / "worker_launch.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def test_two_machine_job_survives_a_killed_rank(base_dir, tmp_path, tiny_model_dir, reaper):
    base = base_dir
    cluster = {"num_machines": 2, "num_processes": 1, "main_process_ip": "127.0.0.1",
               "main_process_port": _free_port(), "job_server_port": _free_port()}
    update_config(base, {"training": {"max_steps": STEPS, "save_steps": 2, "eval_steps": 0, "device": "cpu",
                                      "per_device_batch_size": 2, "logging_steps": 1, **cluster},
                         "daemon": {"heartbeat_interval": 0.5, "file_stable_seconds": 0.3}})
    worker_base = tmp_path / "machine1"
    worker_base.mkdir()
    (worker_base / "config.json").write_text(json.dumps({
        "model": {"model_path": str(tiny_model_dir), "base_model": str(tiny_model_dir)},
        "training": {**cluster, "machine_rank": 1}, "daemon": {"poll_interval": 0.2}}))

    daemon = start_daemon(reaper, base)
    worker = reaper.popen([sys.executable, str(REPO / "core" / "daemon" / "worker.py"), "--base-dir", str(worker_base)],
                          stdout=open(tmp_path / "worker.out", "ab"), stderr=subprocess.STDOUT, env=child_env(),
                          cwd=str(REPO))
    wait_for(lambda: status(base).get("state") == "idle", 90, "daemon idle", proc=daemon)
    write_jsonl(base / "inbox" / "normal" / "mm.jsonl", chat_records(24, seed=7))

    # Both machines train (a step needs both ranks), then pause: rank 0 checkpoints and waits.
    wait_for(lambda: (status(base).get("current_step") or 0) >= 2, 180, "two-machine training", proc=daemon)
    paths = Paths.from_base(base)
    write_flag(paths, "pause", "kill rank 1 at a known step")
    st = wait_for(lambda: status(base).get("status") == "paused" and status(base), 60, "paused", proc=daemon)
    paused_at = st["current_step"]
    assert 2 <= paused_at < STEPS
    assert list((base / "models" / "checkpoints").glob(f"*/step-{paused_at:08d}")), "pause checkpoint"

    # SIGKILL machine 1's whole launch (the accelerate/torchrun agent's group; its rank dies with it).
    launch = wait_for(lambda: _launch_pid(worker_base), 10, "worker launch pid")
    os.killpg(launch, signal.SIGKILL)
    # The daemon sees the group fail and puts the file back at the head of its queue (still paused).
    wait_for(lambda: "mm.jsonl" in queue_names(base, "normal"), 120, "job requeued after the group failed",
             proc=daemon)
    assert worker.poll() is None, "the worker outlives a failed launch"
    write_flag(paths, "resume")
    clear_flag(paths, "pause")

    wait_for(lambda: "mm.jsonl" in queue_names(base, "recently_completed"), 240, "mm.jsonl trained", proc=daemon)
    res = json.loads((base / "queue" / "recently_completed" / "mm.result.json").read_text())
    assert res["restarts"] == 1
    assert res["global_step_start"] == 0 and res["global_step_end"] == STEPS and res["steps"] == STEPS
    assert Path(res["resumed_from"]).name == f"step-{paused_at:08d}"
    final_cp = Path(res["checkpoint"])
    assert final_cp.name == f"step-{STEPS:08d}"
    assert (final_cp / "rng_state_1.pth").is_file(), "rank 1 took part in the resumed launch"
    lineage = json.loads((base / "models" / "current_model" / "lineage.json").read_text())
    assert lineage["global_step"] == STEPS

    # Every global step trained exactly once: the first launch logged 1..paused_at, the restart
    # continued at paused_at + 1 (nothing after the checkpoint was lost, nothing repeated).
    steps = [r["global_step"] for r in iter_json_lines(open(base / "logs" / "metrics.jsonl")) if "loss" in r]
    assert steps == list(range(1, STEPS + 1))
    state = json.loads((final_cp / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, STEPS + 1))
    from foundation.model_db import ModelDB
    registered = sorted(int(Path(c["path"]).name[5:]) for c in ModelDB(paths.model_db).list_checkpoints())
    assert registered == sorted(set(range(2, STEPS + 1, 2)) | {paused_at})

    # Intake, checkpoints, status and deployment stayed on rank 0: machine 1's base dir holds only
    # its config, its logs and its pid files.
    assert sorted(p.name for p in worker_base.iterdir()) == [".pids", "config.json", "logs"]
    assert not [p for p in worker_base.rglob("*") if p.name.startswith(("step-", "checkpoint-"))]
    log = (worker_base / "logs" / "worker.log").read_text()
    assert log.count("joining launch") == 2, log

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    daemon.terminate()
    assert daemon.wait(60) == 0


def test_job_endpoint_requires_the_cluster_token(monkeypatch):
    from core.daemon.job_server import JobServer
    from core.daemon.launch import TOKEN_ENV, cluster_token
    from core.daemon.worker import fetch_job
    port = _free_port()
    url = f"http://127.0.0.1:{port}/job"
    assert fetch_job(url, None, timeout=2) is None  # nothing published between launches
    job = {"job_id": "j1", "dataset": "/data/x.jsonl"}
    with JobServer("127.0.0.1", port, job, token="s3cret") as server:
        assert fetch_job(url, None, timeout=2) is None
        assert fetch_job(url, "wrong", timeout=2) is None
        doc = fetch_job(url, "s3cret", timeout=2)
        assert doc == {"launch_id": server.launch_id, "job": job, "machine_rank": 0}
    assert JobServer("127.0.0.1", port, job, token=None).launch_id != server.launch_id
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    assert cluster_token("127.0.0.1") is None
    with pytest.raises(RuntimeError, match=TOKEN_ENV):
        cluster_token("10.0.0.5")  # reachable from other machines: a token is mandatory
    monkeypatch.setenv(TOKEN_ENV, "t")
    assert cluster_token("10.0.0.5") == "t"


def test_launch_command_per_machine():
    from core.daemon.launch import accelerate_command
    tr = {"num_processes": 2, "num_machines": 3, "main_process_ip": "10.0.0.1", "main_process_port": 29555}
    cmd = accelerate_command(tr, "/j/job.json", machine_rank=2, python="py")
    args = {k: cmd[cmd.index(k) + 1] for k in ("--num_processes", "--num_machines", "--machine_rank",
                                                "--main_process_ip", "--main_process_port", "--max_restarts")}
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"] and cmd[-2:] == ["--job-file", "/j/job.json"]
    assert "--multi_gpu" in cmd  # accelerate's --cpu launcher would start one process only
    assert args == {
        "--num_processes": "6", "--num_machines": "3", "--machine_rank": "2", "--main_process_ip": "10.0.0.1",
        "--main_process_port": "29555", "--max_restarts": "0"}
