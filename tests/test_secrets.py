"""Secrets: API keys are never echoed (config show, config edit and its backups, the registry's
runs.config_json); key files only their owner can read; a redacted placeholder is never a key."""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from foundation.atomic_io import atomic_write_json
from foundation.secrets import REDACTED, SecretError, is_secret_name, read_secret_file, redact
from trainer.config.editing import edit_config
from trainer.config.keys import resolve_inference_keys, secret_keys
from trainer.config.loader import ConfigError, explain, load_config, validate_dict
from trainer.config.schema import Config

REPO = Path(__file__).resolve().parents[1]
READ_KEY = "read-SECRET-3f9a1c"
ADMIN_KEY = "admin-SECRET-77d2e0"
ENV_KEY = "env-SECRET-c0ffee"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _base_with_keys(tmp_path: Path) -> Path:
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps(
        {"training": {"seed": 1}, "inference": {"api_key": READ_KEY, "admin_api_key": ADMIN_KEY}}))
    os.chmod(base / "config.json", 0o600)
    return base


def _clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("INFERENCE_API_KEY", "INFERENCE_ADMIN_KEY") and not k.startswith("TRAINER__")}
    env.update(extra)
    return env


# ---------------------------------------------------------------- the rule
def test_redact_hides_non_empty_secrets_only():
    data = {"inference": {"api_key": READ_KEY, "admin_api_key": "", "api_key_file": "keys/read", "port": 1},
            "profile": {"options": {"hf_token": "tok", "items": [{"password": "pw", "name": "x"}]}},
            "extra": {"custom": "declared-secret"}}
    out = redact(data, declared=["extra.custom"])
    assert out == {"inference": {"api_key": REDACTED, "admin_api_key": "", "api_key_file": "keys/read", "port": 1},
                   "profile": {"options": {"hf_token": REDACTED, "items": [{"password": REDACTED, "name": "x"}]}},
                   "extra": {"custom": REDACTED}}
    assert data["inference"]["api_key"] == READ_KEY  # a copy; the input is untouched


def test_schema_secrets_and_the_name_rule_agree():
    """model_db cannot see the schema and redacts by name: every field the schema declares secret
    must match the name rule, and every schema field the rule matches must be declared secret."""
    declared = set(secret_keys())
    assert {"inference.api_key", "inference.admin_api_key"} <= declared
    by_name = {k for k, _, _ in explain(Config()) if is_secret_name(k.rsplit(".", 1)[-1])}
    assert by_name == declared
    assert not is_secret_name("api_key_file") and not is_secret_name("default_max_tokens")


def test_secret_type_error_does_not_echo_the_value():
    with pytest.raises(ConfigError) as ei:
        validate_dict({"inference": {"api_key": 123456789}})
    assert "'inference.api_key' must be a string" in str(ei.value) and "123456789" not in str(ei.value)


# ---------------------------------------------------------------- trainctl config show
@pytest.mark.parametrize("flags", [[], ["--json"], ["--explain"], ["--explain", "--json"]])
def test_config_show_never_prints_keys(tmp_path, flags):
    base = _base_with_keys(tmp_path)
    env = _clean_env(TRAINER__INFERENCE__ADMIN_API_KEY=ENV_KEY, INFERENCE_API_KEY=ENV_KEY + "x")
    r = subprocess.run([sys.executable, "-m", "management.cli", "config", "show", "--base-dir", str(base),
                        "--set", "training.seed=5", *flags], capture_output=True, text=True, cwd=REPO, env=env)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    for secret in (READ_KEY, ADMIN_KEY, ENV_KEY):
        assert secret not in out
    if flags == ["--explain"]:
        assert f'inference.api_key = "{REDACTED}"' in out and "inference.api_key_file = \"\"" in out
        assert "training.seed = 5" in out
    else:
        doc = json.loads(r.stdout)
        if "--explain" in flags:
            doc = {row["key"]: row["value"] for row in doc}
            assert doc["inference.api_key"] == doc["inference.admin_api_key"] == REDACTED
            assert doc["training.seed"] == 5
        else:
            assert doc["inference"]["api_key"] == doc["inference"]["admin_api_key"] == REDACTED
            assert doc["training"]["seed"] == 5 and doc["inference"]["port"] == 8765


# ---------------------------------------------------------------- config edit and backups/
def test_config_edit_output_and_backups_have_no_keys(tmp_path):
    base = _base_with_keys(tmp_path)
    edit = [sys.executable, str(REPO / "tools/config/edit_config.py")]
    r = subprocess.run(edit + ["training.seed", "2", "--base-dir", str(base)],
                       capture_output=True, text=True, env=_clean_env())
    assert r.returncode == 0, r.stderr
    r = subprocess.run(edit + ["inference.api_key", "new-SECRET-key", "--base-dir", str(base)],
                       capture_output=True, text=True, env=_clean_env())
    assert r.returncode == 0, r.stderr
    assert "new-SECRET-key" not in r.stdout + r.stderr and READ_KEY not in r.stdout + r.stderr
    assert f"inference.api_key: '{REDACTED}' -> '{REDACTED}'" in r.stdout

    cfg = json.loads((base / "config.json").read_text())
    assert cfg["inference"] == {"api_key": "new-SECRET-key", "admin_api_key": ADMIN_KEY}  # the live file keeps keys
    assert _mode(base / "config.json") == 0o600
    backups = sorted((base / "backups").glob("config-*.json"))
    assert len(backups) == 2
    for b in backups:
        text = b.read_text()
        assert READ_KEY not in text and ADMIN_KEY not in text and "new-SECRET-key" not in text
        assert json.loads(text)["inference"] == {"api_key": REDACTED, "admin_api_key": REDACTED}
        assert _mode(b) == 0o600
    assert json.loads(backups[-1].read_text())["training"]["seed"] == 2  # still a restore point otherwise


def test_restored_backup_placeholder_is_refused_as_a_key(tmp_path):
    base = tmp_path / "b"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"inference": {"api_key": "k1", "admin_api_key": "k2"}}))
    change = edit_config(base / "config.json", "training.seed", 3, backups_dir=base / "backups")
    os.replace(change["backup"], base / "config.json")  # the operator restores the backup
    cfg = load_config(base_dir=base, environ={})
    with pytest.raises(ConfigError) as ei:
        resolve_inference_keys(cfg, base, environ={})
    assert "inference.api_key" in str(ei.value) and "placeholder" in str(ei.value)
    keys = resolve_inference_keys(cfg, base, environ={"INFERENCE_API_KEY": "a", "INFERENCE_ADMIN_KEY": "b"})
    assert (keys.api_key, keys.admin_api_key) == ("a", "b")  # the environment supplies the real keys
    assert repr(keys) == f"InferenceKeys(api_key='{REDACTED}', admin_api_key='{REDACTED}')"  # safe to log


# ---------------------------------------------------------------- model_db runs.config_json
def test_model_db_run_row_has_no_keys(tmp_path):
    """The daemon hands ModelDB.start_run the whole effective config; the row must not keep its keys."""
    from foundation.model_db import ModelDB
    from trainer.config.loader import config_to_dict
    base = _base_with_keys(tmp_path)
    cfg = load_config(base_dir=base, environ={"TRAINER__INFERENCE__ADMIN_API_KEY": ENV_KEY})
    db = ModelDB(base / "models/model_db.sqlite", base_dir=base)
    run_id = db.start_run("tiny-qwen3 daemon", cfg.model.base_model, config_to_dict(cfg))
    db.close()
    with sqlite3.connect(base / "models/model_db.sqlite") as conn:
        (raw,) = conn.execute("SELECT config_json FROM runs WHERE id=?", (run_id,)).fetchone()
    for secret in (READ_KEY, ADMIN_KEY, ENV_KEY):
        assert secret not in raw
    stored = json.loads(raw)
    assert stored["inference"]["api_key"] == stored["inference"]["admin_api_key"] == REDACTED
    assert stored["training"]["seed"] == 1
    assert isinstance(validate_dict(stored), Config)  # a redacted config is still a valid config


def test_model_db_hides_keys_of_rows_written_before_redaction(tmp_path):
    from foundation.model_db import ModelDB
    db = ModelDB(tmp_path / "m.sqlite", base_dir=tmp_path)
    run = db.start_run("r", None, {})
    with sqlite3.connect(tmp_path / "m.sqlite") as conn:  # a row as older code wrote it
        conn.execute("UPDATE runs SET config_json=? WHERE id=?", (json.dumps({"inference": {"api_key": READ_KEY}}), run))
    (row,) = db.list_runs()
    assert READ_KEY not in json.dumps(row) and row["config"]["inference"]["api_key"] == REDACTED
    db.close()


# ---------------------------------------------------------------- key files
def test_key_file_must_be_readable_by_owner_only(tmp_path):
    base = tmp_path / "base"
    (base / "keys").mkdir(parents=True)
    read_file, admin_file = base / "keys/read", base / "keys/admin"
    read_file.write_text(READ_KEY + "\n")
    admin_file.write_text(ADMIN_KEY)
    os.chmod(read_file, 0o644)
    os.chmod(admin_file, 0o600)
    (base / "config.json").write_text(json.dumps(
        {"inference": {"api_key_file": "keys/read", "admin_api_key_file": str(admin_file)}}))
    cfg = load_config(base_dir=base, environ={})
    with pytest.raises(ConfigError) as ei:
        resolve_inference_keys(cfg, base, environ={})
    msg = str(ei.value)
    assert "inference.api_key_file" in msg and str(read_file) in msg and "0644" in msg and "chmod 600" in msg
    assert READ_KEY not in msg

    os.chmod(read_file, 0o600)
    keys = resolve_inference_keys(cfg, base, environ={})
    assert (keys.api_key, keys.admin_api_key) == (READ_KEY, ADMIN_KEY)  # trailing newline stripped
    keys = resolve_inference_keys(cfg, base, environ={"INFERENCE_API_KEY": ENV_KEY})
    assert (keys.api_key, keys.admin_api_key) == (ENV_KEY, ADMIN_KEY)  # the environment overrides the file


@pytest.mark.parametrize("mode, content, fragment", [
    (0o640, "k", "mode 0640"), (0o604, "k", "mode 0604"), (0o600, "  \n", "is empty"), (None, "", "cannot read")])
def test_unusable_key_files_are_refused(tmp_path, mode, content, fragment):
    p = tmp_path / "key"
    if mode is not None:
        p.write_text(content)
        os.chmod(p, mode)
    with pytest.raises(SecretError) as ei:
        read_secret_file(p, "inference.admin_api_key_file")
    assert fragment in str(ei.value) and str(p) in str(ei.value) and "inference.admin_api_key_file" in str(ei.value)


def test_inline_key_and_key_file_together_are_refused():
    with pytest.raises(ConfigError, match="'inference.api_key' and 'inference.api_key_file' are both set"):
        validate_dict({"inference": {"api_key": "x", "api_key_file": "k"}})


# ---------------------------------------------------------------- atomic writes keep the mode
def test_atomic_write_keeps_an_existing_mode_and_makes_new_files_0644(tmp_path):
    p = tmp_path / "c.json"
    atomic_write_json(p, {"a": 1})
    assert _mode(p) == 0o644  # new status files are readable by every local reader
    os.chmod(p, 0o600)
    atomic_write_json(p, {"a": 2})
    assert _mode(p) == 0o600 and json.loads(p.read_text()) == {"a": 2}
    atomic_write_json(tmp_path / "n.json", {}, mode=0o600)
    assert _mode(tmp_path / "n.json") == 0o600

