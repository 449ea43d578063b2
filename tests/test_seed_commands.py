"""The seed's commands as its users type them: the comparison engine and the deployment orchestrator
looping with ``--interval`` (PID files, one pass, SIGTERM), and the flat config.json keys (accepted with
a note naming the new key, by the loader and by ``edit_config.py batch_size 16``; ``config migrate``)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import REPO
from foundation.single_instance import read_pid
from tests.helpers.waiting import wait_for
from trainer.config.cli import config_group
from trainer.config.loader import ConfigError, load_config


def _run_by_path(reaper, base: Path, script: str, *args: str) -> subprocess.Popen:
    return reaper.popen([sys.executable, str(REPO / script), "--base-dir", str(base), *args],
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=str(base))


@pytest.mark.parametrize("script,pid_name,status_name", [
    ("monitoring/model_comparison_engine.py", "model_comparison", "model_comparisons"),
    ("monitoring/deployment_orchestrator.py", "deployment_orchestrator", "deployment_status"),
])
def test_interval_commands_loop_with_a_pid_file_and_stop_on_sigterm(base_dir, reaper, script, pid_name, status_name):
    status = base_dir / "status" / f"{status_name}.json"
    pid_file = base_dir / ".pids" / f"{pid_name}.pid"
    proc = _run_by_path(reaper, base_dir, script, "--interval", "600")
    wait_for(lambda: read_pid(pid_file) == proc.pid and status.is_file(), 120, f"{pid_name} pid file and a pass",
             proc=proc)
    assert json.loads(status.read_text())["updated_at"]
    second = subprocess.run([sys.executable, str(REPO / script), "--base-dir", str(base_dir), "--interval", "600"],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 1 and "already running" in second.stderr
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)  # the 600 s wait ends at once
    assert proc.returncode == 0, out
    assert not pid_file.exists()


def test_bad_interval_is_refused(base_dir):
    r = subprocess.run([sys.executable, str(REPO / "monitoring/model_comparison_engine.py"), "--base-dir",
                        str(base_dir), "--interval", "soon"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--interval" in r.stderr


FLAT = {"batch_size": 4, "learning_rate": 0.001, "eval_steps": 7, "save_steps": 9, "max_length": 64,
        "poll_interval": 2.5, "model_name": "seed-model", "model_path": "models/x"}


def test_flat_keys_are_accepted_with_a_note(tmp_path, capfd):
    (tmp_path / "config.json").write_text(json.dumps(FLAT))
    cfg = load_config(base_dir=tmp_path)
    t = cfg.training
    assert (t.per_device_batch_size, t.learning_rate, t.eval_steps, t.save_steps) == (4, 0.001, 7, 9)
    assert (cfg.data.max_length, cfg.daemon.poll_interval, cfg.model.model_name, cfg.model.model_path) == \
        (64, 2.5, "seed-model", "models/x")
    err = capfd.readouterr().err
    assert "'batch_size' is now 'training.per_device_batch_size'" in err and "config migrate" in err
    assert len([x for x in err.splitlines() if x.startswith("note:")]) == len(FLAT)
    (tmp_path / "config.json").write_text(json.dumps({"batch_size": 4, "training": {"per_device_batch_size": 8}}))
    with pytest.raises(ConfigError, match="keep only 'training.per_device_batch_size'"):
        load_config(base_dir=tmp_path)


@pytest.mark.parametrize("old, new", [(True, "flash_fp32"), (False, "flash_bf16")])
def test_a_renamed_key_is_moved_with_its_value_translated(tmp_path, capfd, old, new):
    (tmp_path / "config.json").write_text(json.dumps({"training": {"fp32_cpu_attention": old, "seed": 3}}))
    cfg = load_config(base_dir=tmp_path)
    assert cfg.training.cpu_attention == new and cfg.training.seed == 3
    assert "'training.fp32_cpu_attention' is now 'training.cpu_attention'" in capfd.readouterr().err
    r = CliRunner().invoke(config_group, ["migrate", "--base-dir", str(tmp_path)])
    assert r.exit_code == 0 and "training.fp32_cpu_attention -> training.cpu_attention" in r.output, r.output
    assert json.loads((tmp_path / "config.json").read_text()) == {"training": {"cpu_attention": new, "seed": 3}}
    (tmp_path / "config.json").write_text(json.dumps({"training": {"fp32_cpu_attention": old,
                                                                   "cpu_attention": "auto"}}))
    with pytest.raises(ConfigError, match="keep only 'training.cpu_attention'"):
        load_config(base_dir=tmp_path)


def test_edit_config_by_path_takes_a_flat_key(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"batch_size": 4}))
    r = subprocess.run([sys.executable, str(REPO / "tools/config/edit_config.py"), "batch_size", "16",
                        "--base-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "training.per_device_batch_size" in r.stderr and "-> 16" in r.stdout
    assert json.loads((tmp_path / "config.json").read_text()) == {"training": {"per_device_batch_size": 16}}
    assert list((tmp_path / "backups").glob("config-*.json"))


def test_config_migrate_rewrites_after_a_backup(tmp_path):
    original = {"$schema": "x", **FLAT, "profile": {"name": "plain"}}
    (tmp_path / "config.json").write_text(json.dumps(original))
    r = CliRunner().invoke(config_group, ["migrate", "--base-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "batch_size -> training.per_device_batch_size" in r.output
    new = json.loads((tmp_path / "config.json").read_text())
    assert new["training"]["per_device_batch_size"] == 4 and new["model"]["model_name"] == "seed-model"
    assert new["$schema"] == "x" and not set(FLAT) & set(new)
    backups = list((tmp_path / "backups").glob("config-*.json"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == original
    r = CliRunner().invoke(config_group, ["migrate", "--base-dir", str(tmp_path)])
    assert r.exit_code == 0 and "nothing to do" in r.output
    (tmp_path / "config.json").write_text(json.dumps({"batch_size": 0}))
    r = CliRunner().invoke(config_group, ["migrate", "--base-dir", str(tmp_path)])
    assert r.exit_code == 1 and "training.per_device_batch_size" in r.output
    assert json.loads((tmp_path / "config.json").read_text()) == {"batch_size": 0}, "invalid: nothing written"
