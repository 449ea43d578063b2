"""Backups, named versions, daily snapshots, LoRA consolidation, and the previous model kept by the
current_model swap (management/, core/daemon/model_swap.py). Real folders, the real tiny model, real peft."""
from __future__ import annotations

import json
import os
import shutil
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.daemon import model_swap
from core.daemon.model_swap import PREVIOUS_NAME, install_model, read_lineage, recover
from foundation.paths import Paths
from management.backup_manager import BackupError, create_backup, list_backups, prune_backups, restore_backup
from management.daily_snapshot import days_to_keep, snapshot_days, take_snapshot
from management.model_versioner import VersionError, list_versions, restore_version, save_version, version_group


def _weights(paths: Paths) -> bytes:
    return (paths.current_model / "model.safetensors").read_bytes()


@pytest.fixture
def paths(tmp_path, tiny_model_dir) -> Paths:
    paths = Paths(tmp_path / "base").ensure()
    paths.config_file.write_text(json.dumps({"training": {"learning_rate": 0.001}}))
    install_model(paths, tiny_model_dir, {"global_step": 10, "job_id": "j1"})
    return paths


def _other_model(src: Path, dst: Path) -> Path:
    """A second valid model folder whose weights differ (one byte of padding in the header)."""
    shutil.copytree(src, dst)
    raw = (dst / "model.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    header.setdefault("__metadata__", {})["variant"] = "b"
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    (dst / "model.safetensors").write_bytes(len(h).to_bytes(8, "little") + h + raw[8 + n:])
    return dst


def test_backup_and_restore_model_and_config(paths, tmp_path, tiny_model_dir):
    before = _weights(paths)
    b = create_backup(paths, "before a risky thing")
    assert (b / "current_model" / "model.safetensors").stat().st_ino == \
        (paths.current_model / "model.safetensors").stat().st_ino, "a backup is hard links"
    install_model(paths, _other_model(tiny_model_dir, tmp_path / "b"), {"global_step": 20, "job_id": "j2"})
    paths.config_file.write_text(json.dumps({"training": {"learning_rate": 0.5}}))
    assert _weights(paths) != before
    out = restore_backup(paths, b.name)
    assert out["restored"] == ["current_model", "config.json"]
    assert _weights(paths) == before and read_lineage(paths.current_model)["global_step"] == 10
    assert json.loads(paths.config_file.read_text())["training"]["learning_rate"] == 0.001
    saved = Path(out["previous_saved_as"])  # what the restore replaced was backed up first
    assert read_json_step(saved) == 20
    assert len(list_backups(paths)) == 2
    assert prune_backups(paths, 1) == [b.name] and [x["name"] for x in list_backups(paths)] == [saved.name]
    with pytest.raises(BackupError):
        restore_backup(paths, "../etc")


def read_json_step(backup: Path) -> int:
    return json.loads((backup / "backup.json").read_text())["global_step"]


def test_versions_save_list_restore(paths, tmp_path, tiny_model_dir):
    before = _weights(paths)
    r = CliRunner().invoke(version_group, ["save", "release-1", "--note", "first", "--base-dir", str(paths.base)])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["global_step"] == 10
    install_model(paths, _other_model(tiny_model_dir, tmp_path / "b"), {"global_step": 20, "job_id": "j2"})
    assert [v["name"] for v in list_versions(paths)] == ["release-1"]
    restore_version(paths, "release-1")
    assert _weights(paths) == before and not (paths.current_model / "version.json").exists()
    assert (paths.models / "versions" / "release-1" / "version.json").is_file()
    with pytest.raises(VersionError):
        save_version(paths, "release-1")
    r = CliRunner().invoke(version_group, ["save", "../x", "--base-dir", str(paths.base)])
    assert r.exit_code == 1 and "version name" in r.output
    r = CliRunner().invoke(version_group, ["restore", "nope", "--base-dir", str(paths.base)])
    assert r.exit_code == 1 and "no version 'nope'" in r.output


def test_daily_snapshot_once_a_day_and_kept_by_policy(paths):
    day = 86400.0
    t0 = datetime(2025, 3, 3, 12, tzinfo=timezone.utc).timestamp()  # a Monday
    first = take_snapshot(paths, 3, 2, clock=lambda: t0)
    assert first["created"] and not take_snapshot(paths, 3, 2, clock=lambda: t0 + 60)["created"]
    for i in range(1, 30):
        take_snapshot(paths, 3, 2, clock=lambda i=i: t0 + i * day)
    kept = snapshot_days(paths)
    # the newest 3 days, plus the oldest day of each of the 2 ISO weeks before them
    assert kept == [date(2025, 3, 17), date(2025, 3, 24), date(2025, 3, 30), date(2025, 3, 31), date(2025, 4, 1)]
    assert days_to_keep([date(2025, 3, d) for d in range(1, 15)], 2, 1) == \
        {date(2025, 3, 14), date(2025, 3, 13), date(2025, 3, 10)}


def test_swap_keeps_the_previous_model_until_the_next_succeeds(paths, tmp_path, tiny_model_dir):
    first = _weights(paths)
    b = _other_model(tiny_model_dir, tmp_path / "b")
    install_model(paths, b, {"global_step": 20, "job_id": "j2"})
    prev = paths.models / PREVIOUS_NAME
    assert (prev / "model.safetensors").read_bytes() == first and read_lineage(prev)["global_step"] == 10
    second = _weights(paths)
    broken = tmp_path / "broken"
    shutil.copytree(b, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 4)
    with pytest.raises(model_swap.ModelDirError):
        install_model(paths, broken, {"global_step": 30, "job_id": "j3"})
    assert read_lineage(prev)["global_step"] == 10 and _weights(paths) == second
    install_model(paths, tiny_model_dir, {"global_step": 30, "job_id": "j3"})
    assert read_lineage(prev)["global_step"] == 20


def test_swap_recovery_from_every_interrupted_state(paths, tmp_path, tiny_model_dir):
    install_model(paths, _other_model(tiny_model_dir, tmp_path / "b"), {"global_step": 20, "job_id": "j2"})
    prev = paths.models / PREVIOUS_NAME
    # 1. crashed after the exchange, before the displaced model became the previous one
    displaced = paths.models / f"{model_swap.STAGING_PREFIX}1-1"
    shutil.copytree(paths.current_model, displaced)
    install_model(paths, tiny_model_dir, {"global_step": 30, "job_id": "j3"})  # current: step 30, prev: 20
    shutil.rmtree(displaced)
    os.rename(prev, displaced)  # as if the exchange displaced it and the process died
    recover(paths)
    assert read_lineage(prev)["global_step"] == 20 and not list(paths.models.glob(".current_model*"))
    # 2. crashed between the two renames of keep_previous: older previous in the trash, displaced in .old
    os.rename(prev, paths.models / f"{model_swap.PREVIOUS_TRASH}1-1")
    shutil.copytree(paths.current_model, paths.models / model_swap.OLD_NAME)
    recover(paths)
    assert read_lineage(prev)["global_step"] == 30 and not list(paths.models.glob(".current_model*"))
    # 3. crashed with current renamed aside (no exchange): the old one comes back as current
    os.rename(paths.current_model, paths.models / model_swap.OLD_NAME)
    recover(paths)
    assert read_lineage(paths.current_model)["global_step"] == 30
    # 4. an incomplete staging folder (copy in progress) is removed, the previous stays
    (paths.models / f"{model_swap.STAGING_PREFIX}2-2").mkdir()
    recover(paths)
    assert read_lineage(prev)["global_step"] == 30 and not list(paths.models.glob(".current_model*"))


@pytest.mark.slow
def test_consolidate_merges_a_real_lora_adapter(tmp_path, tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from management.consolidate_model import ConsolidateError, consolidate, consolidate_command
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # B starts at zero (a no-op adapter): make the merge matter
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        expected = peft_model(ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(ids).logits
    assert not torch.allclose(expected, plain, atol=1e-4)
    out = consolidate(adapter, tmp_path / "merged", base_model=tiny_model_dir)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert (out / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected, atol=1e-4)
    with pytest.raises(ConsolidateError):
        consolidate(adapter, out, base_model=tiny_model_dir)  # never overwrites
    r = CliRunner().invoke(consolidate_command, [str(tiny_model_dir), str(tmp_path / "x")])
    assert r.exit_code == 1 and "not a PEFT adapter folder" in r.output
