"""Config: precedence, errors that name the key, protected keys, the by-path tools."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.config.editing import ProtectedKeyError, edit_config
from trainer.config.loader import ConfigError, explain, load_config, validate_dict
from trainer.config.schema import Config

REPO = Path(__file__).resolve().parents[1]


def test_defaults_and_shipped_config_are_valid():
    cfg = load_config(REPO / "config.json", environ={})
    assert isinstance(cfg, Config)
    assert cfg.model.model_path == "models/tiny-qwen3"
    # every leaf field is documented
    undocumented = [k for k, _, doc in explain(Config()) if not doc]
    assert undocumented == []


def test_precedence_defaults_file_env_cli(tmp_path):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"training": {"learning_rate": 0.01, "seed": 1, "warmup_steps": 3}}))
    cfg = load_config(f, environ={"TRAINER__TRAINING__SEED": "2", "TRAINER__TRAINING__WARMUP_STEPS": "4"},
                      overrides={"training.warmup_steps": 5})
    assert cfg.training.learning_rate == 0.01   # file over default
    assert cfg.training.seed == 2               # env over file
    assert cfg.training.warmup_steps == 5       # CLI over env
    assert cfg.training.max_grad_norm == 1.0    # default


@pytest.mark.parametrize("data, fragments", [
    ({"trainig": {}}, ["unknown key 'trainig'", "did you mean 'training'"]),
    ({"training": {"learning_rat": 1e-4}}, ["'training.learning_rat'", "did you mean 'training.learning_rate'"]),
    ({"training": {"fp32_cpu_attention": "yes"}},  # no translation for that value: named as unknown
     ["unknown key 'training.fp32_cpu_attention'", "did you mean 'training.cpu_attention'"]),
    ({"training": {"learning_rate": "fast"}}, ["'training.learning_rate'", "must be a number", "'fast'"]),
    ({"training": {"learning_rate": -1}}, ["'training.learning_rate'", "-1", "> 0"]),
    ({"training": {"per_device_batch_size": 0}}, ["'training.per_device_batch_size'", "is 0", ">= 1"]),
    ({"training": {"precision": "bf17"}}, ["'training.precision'", "'bf17'", "'bf16'"]),
    ({"training": {"method": "qlora"}}, ["'training.method'", "allowed: 'full', 'lora'"]),
    ({"data": {"overlong_policy": "cut"}}, ["'data.overlong_policy'", "'truncate', 'drop', 'fail'"]),
    ({"daemon": {"use_polling_observer": "yes"}}, ["'daemon.use_polling_observer'", "boolean"]),
    ({"training": 5}, ["'training' must be an object"]),
    ({"training": {"precision": "fp16", "device": "cpu"}}, ["fp16 needs CUDA"]),
    ({"inference": {"precision": "half"}}, ["'inference.precision'", "'half'", "'bf16'", "'fp32'"]),
    ({"inference": {"precision": "fp16", "device": "cpu"}}, ["'inference.precision' is 'fp16'", "'inference.device'",
                                                            "fp16 needs CUDA"]),
    ({"inference": {"precision": "fp16", "device": "cuda"}},  # the local evaluator loads it too, on the CPU
     ["'inference.precision' is 'fp16'", "'evaluation.device' is 'cpu'"]),
])
def test_errors_name_key_value_and_allowed(data, fragments):
    with pytest.raises(ConfigError) as ei:
        validate_dict(data, "x.json")
    msg = str(ei.value)
    for frag in fragments:
        assert frag in msg, (frag, msg)


def test_fp16_serving_on_cuda_with_the_evaluator_going_through_the_server_is_accepted():
    validate_dict({"inference": {"precision": "fp16", "device": "cuda"}, "evaluation": {"mode": "server"}})


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as ei:
        validate_dict({"training": {"seed": "a", "lr_scheduler": "cosin"}, "bogus": 1})
    assert len(ei.value.problems) == 3


def test_invalid_json_file_names_line(tmp_path):
    f = tmp_path / "config.json"
    f.write_text('{\n  "training": {\n    "seed": 1,\n  }\n}\n')
    with pytest.raises(ConfigError) as ei:
        load_config(f, environ={})
    assert "line 4" in str(ei.value) and str(f) in str(ei.value)


def test_edit_config_validates_backs_up_and_protects(tmp_path):
    f = tmp_path / "config.json"
    f.write_text(json.dumps({"training": {"seed": 1}}))
    backups = tmp_path / "backups"
    change = edit_config(f, "training.learning_rate", 0.003, backups_dir=backups)
    assert json.loads(f.read_text())["training"] == {"seed": 1, "learning_rate": 0.003}
    assert Path(change["backup"]).read_text() == json.dumps({"training": {"seed": 1}})
    with pytest.raises(ConfigError):
        edit_config(f, "training.learning_rat", 1, backups_dir=backups)
    with pytest.raises(ConfigError):
        edit_config(f, "training.seed", "x", backups_dir=backups)
    for key in ("data.max_length", "model.model_name", "model.base_model"):
        with pytest.raises(ProtectedKeyError):
            edit_config(f, key, 64 if key == "data.max_length" else "other", backups_dir=backups)
    edit_config(f, "data.max_length", 64, force=True, backups_dir=backups)
    assert json.loads(f.read_text())["data"]["max_length"] == 64
    assert json.loads(f.read_text())["training"]["learning_rate"] == 0.003  # failed edits wrote nothing


def test_by_path_tools_exit_codes(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"training": {"seed": 3}}))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"training": {"seed": 3, "warmup": 2}}))
    r = subprocess.run([sys.executable, str(REPO / "safety/config_validator.py"), str(good)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([sys.executable, str(REPO / "safety/config_validator.py"), str(bad)],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "training.warmup" in r.stdout and "warmup_steps" in r.stdout

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"data": {"max_length": 256}}))
    edit = [sys.executable, str(REPO / "tools/config/edit_config.py")]
    r = subprocess.run(edit + ["data.max_length", "128", "--base-dir", str(base)], capture_output=True, text=True)
    assert r.returncode == 1 and "protected" in r.stderr
    r = subprocess.run(edit + ["data.max_length", "128", "--force", "--base-dir", str(base)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads((base / "config.json").read_text())["data"]["max_length"] == 128
    assert list((base / "backups").glob("config-*.json"))

    r = subprocess.run([sys.executable, "-m", "management.cli", "config", "show", "--base-dir", str(base),
                        "--set", "training.seed=9"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    shown = json.loads(r.stdout)
    assert shown["data"]["max_length"] == 128 and shown["training"]["seed"] == 9


def test_edit_keeps_the_config_files_mode(tmp_path):
    """A user's chmod 600 on config.json (it may hold API keys) survives every edit."""
    base = tmp_path / "base"
    base.mkdir()
    cfg = base / "config.json"
    cfg.write_text(json.dumps({"training": {"seed": 1}}))
    os.chmod(cfg, 0o600)
    r = subprocess.run([sys.executable, str(REPO / "tools/config/edit_config.py"), "training.learning_rate", "0.0002",
                        "--base-dir", str(base)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert json.loads(cfg.read_text())["training"]["learning_rate"] == 0.0002
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    (backup,) = (base / "backups").glob("config-*.json")
    assert stat.S_IMODE(backup.stat().st_mode) == 0o600
