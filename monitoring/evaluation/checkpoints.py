"""Checkpoint discovery: which folders under ``models/checkpoints/`` are complete checkpoints.

A complete checkpoint is a folder ``models/checkpoints/<job>/step-<N>/`` holding
``checkpoint_info.json`` with ``"complete": true`` and an integer ``global_step``; a folder without
it is still being written and is ignored. Its weights are in ``model_dir`` ("." or "merged" for LoRA).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from foundation.atomic_io import read_json
from foundation.paths import Paths

CHECKPOINT_INFO = "checkpoint_info.json"


def read_checkpoint_info(folder: str | os.PathLike) -> dict | None:
    """The folder's checkpoint_info.json when it marks a complete checkpoint, else None."""
    info = read_json(Path(folder) / CHECKPOINT_INFO)
    if not isinstance(info, dict) or info.get("complete") is not True:
        return None
    if not isinstance(info.get("global_step"), int):
        return None
    return info


def discover_checkpoints(paths: Paths, db) -> list[str]:
    """Register every complete checkpoint folder under models/checkpoints/ (idempotent).
    Returns the stored paths found."""
    found: list[str] = []
    if not paths.checkpoints.is_dir():
        return found
    for info_file in sorted(paths.checkpoints.glob(f"*/step-*/{CHECKPOINT_INFO}")):
        folder = info_file.parent
        info = read_checkpoint_info(folder)
        if info is None:
            continue
        db.register_checkpoint(folder, info["global_step"], info.get("job_id") or folder.parent.name,
                               info.get("source_file"), train_loss=_num(info.get("train_loss")),
                               validation_loss=_num(info.get("validation_loss")),
                               created_at=info.get("created_at"))
        found.append(db.rel(folder))
    return found


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def model_dir_of(folder: Path) -> Path:
    """The folder holding the checkpoint's weights (its info's ``model_dir``, default the folder)."""
    info = read_json(folder / CHECKPOINT_INFO) or {}
    sub = info.get("model_dir") or "."
    return (folder / sub).resolve() if sub != "." else folder


def is_model_folder(folder: Path) -> bool:
    """True while the checkpoint's weights are there (training prunes old checkpoints)."""
    return (model_dir_of(folder) / "config.json").is_file()
