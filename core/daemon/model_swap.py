"""Replace ``models/current_model/`` atomically, and keep the lineage's global step with it.

Why: every other process (evaluators, the server's deploy path, the next job) reads
current_model/ at any moment, so it must never be half-written or missing. The new weights are
staged beside it (``models/.current_model.new-*``: hard links to the job's exported ``final/``,
copies across file systems), checked (config parses, every safetensors file is complete), and
then swapped in with one ``renameat2(RENAME_EXCHANGE)``. Where the kernel cannot exchange, it is
rename-old-aside / rename-new-in, and ``recover`` repairs an interrupted swap on the next start.

The model it replaced is kept as ``models/current_model.previous/`` (a backup: ``trainctl backup``
and a person can go back to it); the older previous is deleted only after the new swap succeeded.
A crash at any point leaves either the old or the new previous, never neither.

``lineage.json`` inside the model folder records the global step those weights reached, so the
step counter and the weights can never disagree after a crash.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import time
from pathlib import Path

from foundation.atomic_io import atomic_write_json, fsync_dir, read_json
from foundation.fs_tree import link_tree, replace_dir
from foundation.paths import Paths
from core.jobqueue.fs import exchange
from foundation.status_io import utc_now_iso

LINEAGE_FILE = "lineage.json"
STAGING_PREFIX = ".current_model.new-"
OLD_NAME = ".current_model.old"
PREVIOUS_NAME = "current_model.previous"
PREVIOUS_TRASH = ".current_model.previous.deleting-"
HISTORY_KEEP = 100


class ModelDirError(ValueError):
    """A model folder that would not load (missing config, truncated weights ...)."""


def has_weights(d: str | os.PathLike) -> bool:
    d = Path(d)
    return (d / "config.json").is_file() and (any(d.glob("*.safetensors")) or any(d.glob("*.bin")))


def read_lineage(model_dir: str | os.PathLike) -> dict:
    doc = read_json(Path(model_dir) / LINEAGE_FILE)
    return doc if isinstance(doc, dict) else {}


def _check_safetensors(p: Path) -> None:
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ModelDirError(f"{p}: truncated safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or 8 + n > size:
            raise ModelDirError(f"{p}: bad safetensors header length {n} for a {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ModelDirError(f"{p}: unreadable safetensors header: {e}") from None
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        raise ModelDirError(f"{p}: truncated: header says {8 + n + end} bytes, file has {size}")


def verify_model_dir(d: str | os.PathLike) -> None:
    """Cheap structural check that ``from_pretrained`` would load ``d`` (no torch import here:
    the trainer child already loaded it once before reporting success)."""
    d = Path(d)
    cfg = d / "config.json"
    if not cfg.is_file():
        raise ModelDirError(f"{d}: no config.json")
    try:
        json.loads(cfg.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelDirError(f"{cfg}: invalid JSON: {e}") from None
    index = d / "model.safetensors.index.json"
    if index.is_file():
        idx = read_json(index) or {}
        shards = sorted(set((idx.get("weight_map") or {}).values()))
        missing = [s for s in shards if not (d / s).is_file()]
        if missing:
            raise ModelDirError(f"{d}: missing weight shards {missing}")
    files = sorted(d.glob("*.safetensors"))
    if not files:
        raise ModelDirError(f"{d}: no *.safetensors weights")
    for p in files:
        _check_safetensors(p)


def install_model(paths: Paths, src_dir: str | os.PathLike, lineage: dict) -> Path:
    """Make ``src_dir`` the new current model with ``lineage`` (global_step, job_id ...)."""
    src = Path(src_dir)
    current = paths.current_model
    staging = paths.models / f"{STAGING_PREFIX}{os.getpid()}-{time.time_ns()}"
    link_tree(src, staging)
    try:
        if (current / ".gitkeep").exists():
            (staging / ".gitkeep").touch()
        prev = read_lineage(current)
        history = list(prev.get("history", []))
        entry = {k: lineage.get(k) for k in ("global_step", "job_id", "source_file")}
        entry["installed_at"] = utc_now_iso()
        history = (history + [entry])[-HISTORY_KEEP:]
        doc = {**lineage, "installed_at": entry["installed_at"], "history": history}
        atomic_write_json(staging / LINEAGE_FILE, doc)
        verify_model_dir(staging)
        fsync_dir(staging)
        if current.exists():
            if exchange(staging, current):
                displaced = staging  # staging now holds the previous model
            else:
                displaced = paths.models / OLD_NAME
                shutil.rmtree(displaced, ignore_errors=True)
                os.rename(current, displaced)
                os.rename(staging, current)
            fsync_dir(paths.models)
            keep_previous(paths, displaced)
        else:
            os.rename(staging, current)
        fsync_dir(paths.models)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return current


def keep_previous(paths: Paths, displaced: Path) -> None:
    """Make ``displaced`` (the model just replaced) ``models/current_model.previous``. The older
    previous is renamed to a trash name first and removed last, so a crash leaves one of the two."""
    if not has_weights(displaced):  # an empty current_model (a fresh checkout) is no backup
        shutil.rmtree(displaced, ignore_errors=True)
        return
    replace_dir(displaced, paths.models / PREVIOUS_NAME,
                paths.models / f"{PREVIOUS_TRASH}{os.getpid()}-{time.time_ns()}")


def _displaced_by_swap(folder: Path, current: Path) -> bool:
    """Whether a staging folder is the model a finished exchange displaced (complete, and installed
    before the current one), rather than a new model whose swap never happened."""
    if not has_weights(folder) or not has_weights(current):
        return False
    mine, now = read_lineage(folder).get("installed_at"), read_lineage(current).get("installed_at")
    return bool(mine and now and mine < now)


def recover(paths: Paths) -> list[str]:
    """Repair after a crash during ``install_model``; returns what was done (for the log)."""
    done = []
    current = paths.current_model
    old = paths.models / OLD_NAME
    if not current.exists() and old.exists():
        os.rename(old, current)
        done.append(f"restored {current} from {old}")
    elif old.exists():  # the swap finished: the old model becomes the previous one
        keep_previous(paths, old)
        done.append(f"kept {old.name} as {PREVIOUS_NAME}")
    for p in paths.models.glob(STAGING_PREFIX + "*"):
        if current.exists() and _displaced_by_swap(p, current):
            keep_previous(paths, p)
            done.append(f"kept the model displaced by an interrupted swap ({p.name}) as {PREVIOUS_NAME}")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed incomplete staging folder {p.name}")
    if (paths.models / PREVIOUS_NAME).exists():
        for p in paths.models.glob(PREVIOUS_TRASH + "*"):
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name}")
    else:  # crashed between the two renames of keep_previous: the trash is the only backup left
        for p in sorted(paths.models.glob(PREVIOUS_TRASH + "*"))[-1:]:
            os.rename(p, paths.models / PREVIOUS_NAME)
            done.append(f"restored {PREVIOUS_NAME} from {p.name}")
    return done
