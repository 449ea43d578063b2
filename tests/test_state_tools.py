"""State over time (state_tracker --check), checkpoint resume proof (verify_checkpoint_resume),
`trainctl status` gap verdict and stale heartbeats, the watchdog config section, and the daemon-only
heartbeat key the watchdog reads."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.status_io import utc_now_iso
from tests.bad_inputs.daemon_harness import child_env
from tests.conftest import chat_records, write_jsonl
from tests.helpers.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=child_env(), cwd=str(REPO))


def test_state_tracker_records_and_reports_changes(base_dir):
    tracker = str(REPO / "tools" / "analysis" / "state_tracker.py")
    r = _run(tracker, "--check", "--base-dir", str(base_dir))
    assert r.returncode == 0 and "first check" in r.stdout, r.stderr
    write_jsonl(base_dir / "queue" / "normal" / "a.jsonl", chat_records(2))
    (base_dir / "status" / "training_status.json").write_text(json.dumps({"state": "training", "pid": 999999999}))
    r = _run(tracker, "--check", "--json", "--base-dir", str(base_dir))
    doc = json.loads(r.stdout)
    changed = {c["key"]: (c["before"], c["after"]) for c in doc["changes"]}
    assert changed["queue.normal"] == (0, 1) and changed["status.training_status.state"] == (None, "training")
    assert changed["status.training_status.alive"] == (None, False)
    history = (base_dir / "logs" / "state_history.jsonl").read_text().splitlines()
    assert len(history) == 2 and json.loads(history[-1])["queue"]["normal"] == 1
    r = _run(tracker, "--base-dir", str(base_dir))
    assert "no change since the last check" in r.stdout and "not recorded" in r.stdout
    assert len((base_dir / "logs" / "state_history.jsonl").read_text().splitlines()) == 2
    r = _run(tracker, "--chek")
    assert r.returncode == 2 and "No such option '--chek'" in r.stderr and "--check" in r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_model_dir):
    """One real 20-step job (checkpoints at 10 and 20) whose source file sits in recently_completed/."""
    from foundation.paths import Paths
    from trainer.config.loader import config_to_dict, load_config
    from trainer.engine.engine import TrainerEngine
    from trainer.engine.job import TrainJob
    base = Paths.from_base(tmp_path_factory.mktemp("resume") / "base").ensure().base
    (base / "config.json").write_text(json.dumps({
        "model": {"model_path": str(tiny_model_dir), "base_model": str(tiny_model_dir)},
        "training": {"per_device_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 2, "logging_steps": 1,
                     "save_steps": 10, "eval_steps": 0, "max_steps": 20}, "data": {"max_length": 128}}))
    data = write_jsonl(base / "queue" / "processing" / "train.jsonl", chat_records(64, seed=1))
    cfg = config_to_dict(load_config(base_dir=base, environ={}))
    out = base / "models" / "checkpoints" / "job1"
    TrainerEngine().run_job(TrainJob(dataset=str(data), output_dir=str(out), model_path=str(tiny_model_dir),
                                     config=cfg, job_id="job1"))
    os.replace(data, base / "queue" / "recently_completed" / "train.jsonl")  # as the daemon does
    return base, out


def test_checkpoint_resumes_with_its_recorded_loss(trained, tiny_model_dir):
    base, out = trained
    # the last checkpoint of its job: the resumed step goes one step past the job's plan
    r = _run(str(REPO / "safety" / "verify_checkpoint_resume.py"), str(out / "step-00000020"), "--base-dir", str(base),
             "--json", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)  # only the report on stdout (the Trainer's logs go to stderr)
    assert rep["ok"] and rep["resumed_to_step"] == 21 and rep["dataset"].endswith("recently_completed/train.jsonl")
    assert rep["recorded_from"] == "checkpoint_info.json train_loss"


def test_checkpoint_with_wrong_weights_does_not_resume(trained, tiny_model_dir, tmp_path):
    from safety.resume_check import verify
    base, out = trained
    bad = tmp_path / "job1" / "step-00000010"
    shutil.copytree(out / "step-00000010", bad)
    shutil.copy2(out / "job_meta.json", bad.parent / "job_meta.json")
    shutil.copy2(tiny_model_dir / "model.safetensors", bad / "model.safetensors")  # untrained weights
    rep = verify(bad, base, train_step=False)
    assert not rep.ok and "not the" in rep.problems[0] and rep.fixed_batch_loss > rep.recorded_loss


def test_verify_checkpoint_resume_bad_arguments(trained, tmp_path):
    base, out = trained
    script = str(REPO / "safety" / "verify_checkpoint_resume.py")
    r = _run(script, str(tmp_path / "no-such-step"))
    assert r.returncode == 2 and str(tmp_path / "no-such-step") in r.stderr and "does not exist" in r.stderr
    r = _run(script, str(tmp_path), "--base-dir", str(base))
    assert r.returncode == 2 and "not a complete checkpoint" in r.stderr
    r = _run(script, str(out / "step-00000010"), "--rtol", "-1")
    assert r.returncode == 2 and "--rtol" in r.stderr


def test_trainctl_status_shows_gap_verdict_and_stale_heartbeats(base_dir):
    st = base_dir / "status"
    (st / "training_status.json").write_text(json.dumps({
        "pid": os.getpid(), "heartbeat_at": utc_now_iso(), "daemon_heartbeat_at": utc_now_iso(), "state": "idle",
        "loss": 1.0, "validation_loss": 1.7, "val_train_gap": 0.7}))
    (st / "inference_server.json").write_text(json.dumps({"pid": os.getpid(), "heartbeat_at": "2020-01-01T00:00:00Z"}))
    r = _run("-m", "management.cli", "status", "--base-dir", str(base_dir))
    assert r.returncode == 0, r.stderr
    assert "validation - train = 0.700: overfitting (< 0.3 generalising, 0.3-0.5 watch, > 0.5 overfitting)" in r.stdout
    lines = {ln.split()[1]: ln for ln in r.stdout.splitlines() if ln.startswith("beat:")}
    assert lines["inference_server"].endswith("STALE") and not lines["training_status"].endswith("STALE")
    from core.daemon.controller import gap_verdict
    assert [gap_verdict(g) for g in (0.1, 0.3, 0.5, 0.51, None)] == ["generalising", "watch", "watch", "overfitting", None]
    doc = json.loads(_run("-m", "management.cli", "status", "--json", "--base-dir", str(base_dir)).stdout)
    assert doc["gap_verdict"] == "overfitting" and doc["heartbeats"]["inference_server"]["stale"] is True


def test_watchdog_reads_its_config_section(base_dir, reaper, tmp_path):
    table = tmp_path / "programs.json"
    table.write_text(json.dumps({"programs": [{"name": "sleeper", "argv": ["sleep", "60"]}]}))
    cfg = json.loads((base_dir / "config.json").read_text())
    cfg["watchdog"] = {"backoff_initial": 0.5, "backoff_cap": 7.0, "max_failures": 2, "failure_window": 30.0}
    (base_dir / "config.json").write_text(json.dumps(cfg))
    wd = str(REPO / "safety" / "daemon_watchdog.py")
    r = _run(wd, "run", "--once", "--base-dir", str(base_dir), "--programs", str(table))
    assert r.returncode == 0, r.stderr
    doc = json.loads((base_dir / "status" / "watchdog.json").read_text())
    pid = doc["programs"]["sleeper"]["pid"]
    os.kill(pid, 9)
    assert doc["policy"]["backoff_initial"] == 0.5 and doc["policy"]["max_failures"] == 2
    assert doc["policy"]["backoff_cap"] == 7.0 and doc["policy"]["failure_window"] == 30.0
    cfg["watchdog"] = {"backoff_initial": 10.0, "backoff_cap": 5.0}
    (base_dir / "config.json").write_text(json.dumps(cfg))
    r = _run(wd, "run", "--once", "--base-dir", str(base_dir), "--programs", str(table))
    assert r.returncode == 2 and "backoff_cap" in r.stderr


def test_training_row_reads_the_daemon_only_heartbeat(base_dir, reaper):
    from foundation.paths import Paths
    from safety.supervision.processes import ProcessOps, ProcHandle
    from safety.supervision.programs import default_programs
    spec = next(p for p in default_programs() if p.name == "training_daemon")
    assert spec.heartbeat_key == "daemon_heartbeat_at"
    proc = reaper.popen([sys.executable, "-c", "import time; time.sleep(120)", "core/training_daemon.py"])
    wait_for(lambda: "training_daemon.py" in Path(f"/proc/{proc.pid}/cmdline").read_text(), 10, "started")
    ops = ProcessOps(Paths.from_base(base_dir))
    h = ProcHandle(proc.pid, None, owned=True, started_wall=0.0)
    status = base_dir / "status" / "training_status.json"
    # only the trainer child writes (fresh heartbeat_at), the daemon's own beat is old: hung
    status.write_text(json.dumps({"pid": proc.pid, "heartbeat_at": utc_now_iso(),
                                  "daemon_heartbeat_at": "2020-01-01T00:00:00Z"}))
    obs = ops.probe(spec, h)
    assert obs.healthy is False and "heartbeat" in obs.detail
    status.write_text(json.dumps({"pid": proc.pid, "heartbeat_at": "2020-01-01T00:00:00Z",
                                  "daemon_heartbeat_at": utc_now_iso()}))
    assert ops.probe(spec, h).healthy is True
