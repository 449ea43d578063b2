"""A job folder on disk: complete checkpoints, the pinned global start, and the final export.

HF writes ``<output>/checkpoint-<local>/`` (weights, optimizer, scheduler, RNG, trainer state); only
after every file is on disk do we write ``checkpoint_info.json`` and rename the folder to
``step-<global:08d>`` (``seal_checkpoint``). So a ``step-*`` folder is complete by construction, and a
``checkpoint-*`` folder left by a killed process is never chosen for resume (it is deleted).
``final/`` is written as ``final.tmp/`` and renamed, for the same reason.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from foundation.atomic_io import atomic_write_json, read_json
from foundation.model_files import model_files
from foundation.status_io import utc_now_iso

STEP_DIR_RE = re.compile(r"^step-(\d{8,})$")
CHECKPOINT_INFO = "checkpoint_info.json"
JOB_META = "job_meta.json"


def step_dir_name(global_step: int) -> str:
    return f"step-{global_step:08d}"


def complete_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoint folders (step-<global>), oldest first."""
    out = Path(output_dir)
    if not out.is_dir():
        return []
    found = []
    for p in out.iterdir():
        m = STEP_DIR_RE.match(p.name)
        if m and p.is_dir() and (p / CHECKPOINT_INFO).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_complete_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    cps = complete_checkpoints(output_dir)
    return cps[-1] if cps else None


def has_checkpoint_at(output_dir: str | os.PathLike, global_step: int) -> bool:
    """Whether the newest complete checkpoint is at ``global_step`` (so a final save can be skipped)."""
    last = latest_complete_checkpoint(output_dir)
    return last is not None and int(STEP_DIR_RE.match(last.name).group(1)) == global_step


def remove_incomplete(output_dir: str | os.PathLike) -> None:
    """Leftovers of a killed save are incomplete by definition."""
    for stale in Path(output_dir).glob("checkpoint-*"):
        shutil.rmtree(stale, ignore_errors=True)


def pinned_global_start(output_dir: Path, job_id: str, dataset: str, requested: int) -> int:
    """The job's global start step, fixed the first time it runs: a resumed job keeps it."""
    meta = read_json(output_dir / JOB_META) or {}
    if "global_step_start" in meta:
        return int(meta["global_step_start"])
    atomic_write_json(output_dir / JOB_META, {"global_step_start": int(requested), "job_id": job_id,
                                              "dataset": dataset, "created_at": utc_now_iso()})
    return int(requested)


def fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            try:
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError:
                pass


def seal_checkpoint(src: Path, global_step: int, info: dict[str, Any], keep: int) -> Path:
    """Mark the fully written HF folder ``src`` complete and rename it to ``step-<global>``;
    then keep only the newest ``keep`` complete checkpoints (0: keep all)."""
    dst = src.parent / step_dir_name(global_step)
    atomic_write_json(src / CHECKPOINT_INFO, {**info, "global_step": global_step, "complete": True,
                                              "created_at": utc_now_iso()})
    fsync_tree(src)
    if dst.exists():  # a re-save of the same step (e.g. end of file right after a periodic save)
        shutil.rmtree(dst)
    os.replace(src, dst)
    cps = complete_checkpoints(src.parent)
    for old in cps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return dst


def finished_state(cp: Path) -> dict | None:
    """The checkpoint's trainer state when it is at (or past) the job's last step, else None."""
    state = read_json(cp / "trainer_state.json") or {}
    max_steps, step = state.get("max_steps"), state.get("global_step")
    if isinstance(max_steps, int) and isinstance(step, int) and max_steps > 0 and step >= max_steps:
        return state
    return None


def _publish_final(out: Path, fill) -> Path:
    """Write ``final.tmp/`` with ``fill(tmp)``, fsync it, then rename it to ``final/``."""
    final, tmp = out / "final", out / "final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fill(tmp)
    fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


def export_final(out: Path, model, tokenizer, method: str) -> Path:
    """``final/``: the trained model (LoRA merged into full weights) and its tokenizer."""
    if method == "lora":
        model = model.merge_and_unload()

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return _publish_final(out, fill)


def export_final_from_checkpoint(out: Path, cp: Path) -> Path:
    """``final/`` copied from a complete checkpoint's model files (its ``model_dir``), unless a
    final export is already there."""
    final = out / "final"
    if (final / "config.json").is_file():
        return final
    info = read_json(cp / CHECKPOINT_INFO) or {}
    src = cp / str(info.get("model_dir") or ".")

    def fill(tmp: Path) -> None:
        for f in model_files(src, skip={CHECKPOINT_INFO}):  # as save_pretrained writes it
            shutil.copy2(f, tmp / f.name)
    return _publish_final(out, fill)


def export_merged_lora(model, out: Path, tokenizer) -> None:
    """A merged full-weights copy of a LoRA model (evaluators and the server need full weights)."""
    import copy
    merged = copy.deepcopy(model).merge_and_unload()
    merged.save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
