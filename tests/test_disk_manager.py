"""The disk manager (management/auto_disk_manager.py) on a small file system that really fills up (a
tmpfs mounted for the test, unmounted at teardown): it frees space by retention and old logs, pauses
training with reason disk_low when that is not enough, and resumes once space is back; with a real
training daemon on the tiny model, training stops at a checkpoint and goes on after the space is freed."""
from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from bad_inputs.daemon_harness import start_daemon, status, update_config, wait_for
from conftest import chat_records, write_jsonl
from foundation.atomic_io import atomic_write_json
from foundation.paths import Paths
from management.auto_disk_manager import DiskManager, disk_command
from trainer.config.loader import load_config

MIB = 2 ** 20


@pytest.fixture
def small_fs(tmp_path):
    """A real file system of ``size`` MiB (tmpfs; we run as root in CI)."""
    mounted = []

    def mount(size_mib: int) -> Path:
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(d)], check=True)
        mounted.append(d)
        return d
    yield mount
    for d in mounted:
        if subprocess.run(["umount", str(d)]).returncode != 0:
            subprocess.run(["umount", "-l", str(d)], check=True)


def _disk_config(base: Path, low: float, pause: float, resume: float) -> None:
    gib = 1024.0
    update_config(base, {"disk": {"low_free_gb": low / gib, "pause_free_gb": pause / gib,
                                  "resume_free_gb": resume / gib, "compress_logs_after_days": 1,
                                  "delete_logs_after_days": 30}})


def _ckpt(paths: Paths, job: str, step: int, mib: int) -> Path:
    d = paths.checkpoints / job / f"step-{step:08d}"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(os.urandom(mib * MIB))
    atomic_write_json(d / "checkpoint_info.json", {"global_step": step, "complete": True})
    return d


def _free(p: Path) -> int:
    return os.statvfs(p).f_bavail * os.statvfs(p).f_frsize


def _leftovers(base: Path) -> list[str]:
    """Anything half-written or half-deleted."""
    return [str(p) for p in base.rglob("*") if p.name.startswith((".deleting-", "checkpoint-"))
            or (p.name.startswith(".") and ".tmp" in p.name)]


def test_fills_up_cleans_pauses_and_resumes(small_fs):
    fs = small_fs(64)
    paths = Paths(fs / "base").ensure()
    paths.config_file.write_text("{}")
    _disk_config(paths.base, low=30, pause=20, resume=25)
    olds = [_ckpt(paths, "old", s, 6) for s in (100, 200, 300)]
    (paths.checkpoints / "old" / "final").mkdir()
    (paths.checkpoints / "old" / "final" / "config.json").write_text("{}")
    atomic_write_json(paths.current_model / "lineage.json", {"job_id": "old", "global_step": 300})
    rotated = paths.logs / "training_daemon.log.2020-01-01"
    rotated.write_text("a log line that compresses well\n" * 60000)
    os.utime(rotated, (time.time() - 3 * 86400,) * 2)
    live = paths.logs / "training_daemon.log"
    live.write_text("live\n")
    filler = fs / "filler.bin"
    with open(filler, "wb") as f:  # the disk really fills: all but 4 MiB
        f.write(b"\1" * (_free(fs) - 4 * MIB))
    assert _free(fs) < 5 * MIB

    mgr = DiskManager(paths, load_config(base_dir=paths.base))
    doc = mgr.check_once()
    deleted = {a["path"] for a in doc["actions"] if a["action"] == "deleted_checkpoint"}
    assert deleted == {f"models/checkpoints/old/step-{s:08d}" for s in (100, 200)}, "oldest unprotected first"
    assert olds[2].is_dir(), "current_model's checkpoint is protected"
    assert (paths.logs / "training_daemon.log.2020-01-01.gz").is_file() and not rotated.exists()
    assert gzip.decompress((paths.logs / "training_daemon.log.2020-01-01.gz").read_bytes()).startswith(b"a log line")
    assert live.read_text() == "live\n", "a live log is never touched"
    flag = json.loads((paths.control / ".pause").read_text())
    assert flag["reason"] == "disk_low" and flag["by"] == "auto_disk_manager"
    disk = json.loads(paths.status_file("disk").read_text())
    assert disk["state"] == "paused" and disk["free_bytes"] < 20 * MIB and disk["pid"] == os.getpid()
    assert _leftovers(paths.base) == []
    assert mgr.check_once()["actions"] == [], "paused already: nothing more to do"

    filler.unlink()  # space is back
    doc = mgr.check_once()
    assert [a["action"] for a in doc["actions"]] == ["resumed"]
    assert not (paths.control / ".pause").exists()
    assert json.loads((paths.control / ".resume").read_text())["by"] == "auto_disk_manager"
    assert doc["state"] == "ok"


def test_a_person_s_pause_is_never_lifted_and_the_cli(small_fs):
    fs = small_fs(16)
    paths = Paths(fs / "base").ensure()
    paths.config_file.write_text("{}")
    _disk_config(paths.base, low=2, pause=1, resume=1.5)
    atomic_write_json(paths.control / ".pause", {"reason": "lunch break", "by": "training_controller"})
    r = CliRunner().invoke(disk_command, ["--base-dir", str(paths.base), "--once", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["state"] == "ok" and out["actions"] == [] and out["total_bytes"] <= 16 * MIB
    assert json.loads((paths.control / ".pause").read_text())["reason"] == "lunch break"
    assert not (paths.control / ".resume").exists()
    r = CliRunner().invoke(disk_command, ["--base-dir", str(paths.base), "--bogus"])
    assert r.exit_code == 2 and "No such option" in r.output
    _disk_config(paths.base, low=2, pause=3, resume=2)  # resume not above pause: refused
    r = CliRunner().invoke(disk_command, ["--base-dir", str(paths.base), "--once"])
    assert r.exit_code == 1 and "disk.resume_free_gb" in r.output


@pytest.mark.slow
def test_a_real_training_daemon_pauses_on_disk_low_and_resumes(small_fs, tiny_model_dir, reaper):
    fs = small_fs(192)
    paths = Paths(fs / "base").ensure()
    paths.config_file.write_text(json.dumps({
        "model": {"model_path": str(tiny_model_dir), "base_model": str(tiny_model_dir)},
        "data": {"max_length": 128}}))
    update_config(paths.base, {"training": {"max_steps": 100000, "save_steps": 100000, "eval_steps": 0,
                                            "per_device_batch_size": 2, "logging_steps": 1},
                               "daemon": {"heartbeat_interval": 0.5, "file_stable_seconds": 0.2}})
    _disk_config(paths.base, low=100, pause=80, resume=90)  # a pause leaves room for its checkpoint (~45 MiB)
    proc = start_daemon(reaper, paths.base)
    write_jsonl(paths.inbox / "big.jsonl", chat_records(40, seed=3))
    wait_for(lambda: (status(paths.base).get("step_in_file") or 0) >= 2, 240, "training", proc=proc)
    filler = fs / "filler.bin"
    with open(filler, "wb") as f:
        f.write(b"\1" * (_free(fs) - 70 * MIB))

    mgr = DiskManager(paths, load_config(base_dir=paths.base))
    assert mgr.check_once()["state"] == "paused"
    st = wait_for(lambda: (lambda s: s if s.get("state") == s.get("status") == "paused" else None)(status(paths.base)),
                  120, "the trainer paused at a checkpoint", proc=proc)
    assert st["pause_reason"] == "disk_low"
    job_dir = next(paths.checkpoints.iterdir())
    steps = sorted(job_dir.glob("step-*"))
    assert steps and all((s / "checkpoint_info.json").is_file() for s in steps), "paused at a complete checkpoint"
    assert _leftovers(paths.base) == []
    paused_at = st["current_step"]

    filler.unlink()
    assert mgr.check_once()["state"] == "ok"
    wait_for(lambda: (status(paths.base).get("current_step") or 0) > paused_at + 1, 120, "training again", proc=proc)
    assert proc.poll() is None and not (paths.control / ".pause").exists()
