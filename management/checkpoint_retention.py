"""Checkpoint retention: which folders under ``models/checkpoints/`` may go, and deleting them safely.

A policy in the manner of Orbax's ``CheckpointManager`` (config section ``retention``):

* keep the newest ``keep_latest`` complete checkpoints (by global step, compared as numbers:
  ``step-9000`` is older than ``step-00010000`` whatever the padding), the ``keep_best`` best by
  composite score (``status/model_comparisons.json``'s ranking; an entry naming a folder that no
  longer exists is skipped, so a stale "best" pointer never keeps nothing and never deletes
  anything), and every checkpoint whose global step is a multiple of ``keep_every_steps``;
* never delete a *protected* folder, whatever the policy or the disk budget says:
  the deployed checkpoint (``models/deployed/current`` -> its ``deploy_info.json``), the next
  deployment candidate (the ranking's ``best_deployable``: the orchestrator may be copying it), the
  checkpoint and ``final/`` export ``current_model`` came from (its ``lineage.json``), and for every job
  that may still resume (a job record in an active queue folder, or a job folder with no ``final/``
  export yet) its newest *complete* checkpoint and its ``final/``;
* only complete ``step-*`` folders (with ``checkpoint_info.json``) count and are ever deleted: a
  folder still being written (``checkpoint-*``, ``final.tmp``) is not a replacement, so the previous
  checkpoint stays until the new one is sealed;
* ``max_checkpoint_gb`` (a disk budget): over it, folders the policy would keep go too, oldest first;
  protected ones never (the disk manager asks for more room the same way: ``free_bytes``).

Deleting renames the folder to ``.deleting-<name>-...`` first (one atomic rename), then removes it:
a crash mid-delete leaves a dot-folder that no reader takes for a checkpoint, swept on the next run.
The model_db row stays, marked deleted (metrics are never lost).

The decision (:func:`plan`) is a pure function of an inventory, so the property test drives it
with random histories; :func:`run_retention` is inventory + plan + apply.
"""
from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from foundation.atomic_io import atomic_write_json, read_json
from foundation.fs_tree import DELETING_PREFIX, remove_tree
from foundation.paths import PRIORITIES, Paths

FINAL_DELETED = ".final-deleted.json"  # left in a job folder whose final/ export retention deleted

STEP_RE = re.compile(r"^step-(\d+)$")
CHECKPOINT_INFO = "checkpoint_info.json"
ACTIVE_FOLDERS = (*PRIORITIES, "processing")
GIB = 1024 ** 3


@dataclass(frozen=True)
class Policy:
    keep_latest: int = 3
    keep_best: int = 2
    keep_every_steps: int = 0
    budget_bytes: int = 0
    """0: no budget."""

    @classmethod
    def from_config(cls, cfg: Any) -> "Policy":
        r = cfg.retention
        return cls(r.keep_latest, r.keep_best, r.keep_every_steps, int(r.max_checkpoint_gb * GIB))


@dataclass(frozen=True)
class Item:
    """One deletable folder: a complete checkpoint (``kind="step"``) or a job's ``final/`` export."""
    rel: str
    """Path relative to the base dir, as the model_db and the status files name it."""
    job: str
    global_step: int
    size: int
    kind: str = "step"


@dataclass
class Plan:
    keep: dict[str, list[str]] = field(default_factory=dict)
    """rel -> why it stays (protected reasons start with "protected:")."""
    delete: list[tuple[Item, str]] = field(default_factory=list)
    total_bytes: int = 0
    bytes_after: int = 0

    def to_dict(self) -> dict:
        return {"keep": self.keep, "total_bytes": self.total_bytes, "bytes_after": self.bytes_after,
                "delete": [{"path": i.rel, "global_step": i.global_step, "kind": i.kind, "bytes": i.size,
                            "reason": why} for i, why in self.delete]}


# ------------------------------------------------------------------ inventory
def step_of(name: str) -> int | None:
    m = STEP_RE.match(name)
    return int(m.group(1)) if m else None


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def is_complete(folder: Path) -> bool:
    info = read_json(folder / CHECKPOINT_INFO)
    return isinstance(info, dict) and info.get("complete", True) is not False


def complete_steps(job_dir: Path) -> list[tuple[int, Path]]:
    """(global step, folder) of the job's complete checkpoints, oldest first (numeric order)."""
    out = []
    if job_dir.is_dir():
        for p in job_dir.iterdir():
            step = step_of(p.name)
            if step is not None and p.is_dir() and is_complete(p):
                out.append((step, p))
    return sorted(out)


def inventory(paths: Paths) -> list[Item]:
    """Every complete checkpoint and final export under models/checkpoints/."""
    items: list[Item] = []
    root = paths.checkpoints
    if not root.is_dir():
        return items
    for job_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        steps = complete_steps(job_dir)
        for step, p in steps:
            items.append(Item(_rel(paths, p), job_dir.name, step, folder_bytes(p)))
        final = job_dir / "final"
        if (final / "config.json").is_file():
            last = steps[-1][0] if steps else 0
            items.append(Item(_rel(paths, final), job_dir.name, last, folder_bytes(final), "final"))
    return items


def _rel(paths: Paths, p: Path) -> str:
    return p.relative_to(paths.base).as_posix()


# ------------------------------------------------------------------ what must never go
def unfinished_jobs(paths: Paths) -> set[str]:
    """Jobs that may still resume: a job record whose data file is in an active queue folder, or a
    job folder with no ``final/`` export (a running or interrupted job, whatever its record says)."""
    jobs: set[str] = set()
    jobs_dir = paths.queue / ".jobs"
    if jobs_dir.is_dir():
        for rec_file in jobs_dir.glob("*.job.json"):
            name = rec_file.name[: -len(".job.json")]
            if not any((paths.queue / f / name).exists() for f in ACTIVE_FOLDERS):
                continue
            rec = read_json(rec_file) or {}
            if rec.get("output_dir"):
                jobs.add(Path(rec["output_dir"]).name)
            elif rec.get("job_id"):
                jobs.add(str(rec["job_id"]))
    if paths.checkpoints.is_dir():
        for job_dir in paths.checkpoints.iterdir():
            if (job_dir.is_dir() and not job_dir.name.startswith(".") and not (job_dir / "final").is_dir()
                    and not (job_dir / FINAL_DELETED).exists()):
                jobs.add(job_dir.name)
    return jobs


def _norm(paths: Paths, p: str | None) -> str | None:
    if not p:
        return None
    q = Path(p)
    if q.is_absolute():
        try:
            return q.resolve().relative_to(paths.base).as_posix()
        except ValueError:
            return None
    return Path(os.path.normpath(q)).as_posix()


def protected(paths: Paths, items: Iterable[Item]) -> dict[str, str]:
    """rel -> why it must never be deleted (see the module docstring)."""
    items = list(items)
    out: dict[str, str] = {}
    current = (read_text(paths.deployed / "current") or "").strip()
    if current:
        info = read_json(paths.deployed / current / "deploy_info.json") or {}
        rel = _norm(paths, info.get("checkpoint"))
        if rel:
            out[rel] = f"deployed (version {current})"
    comparisons = read_json(paths.status / "model_comparisons.json") or {}
    cand = _norm(paths, (comparisons.get("best_deployable") or {}).get("checkpoint"))
    if cand:
        out.setdefault(cand, "next deployment candidate")
    lineage = read_json(paths.current_model / "lineage.json") or {}
    if lineage.get("job_id") is not None:
        job, step = str(lineage["job_id"]), lineage.get("global_step")
        for i in items:
            if i.job == job and (i.kind == "final" or i.global_step == step):
                out.setdefault(i.rel, "current_model came from it")
    live = unfinished_jobs(paths)
    newest: dict[str, Item] = {}
    for i in items:
        if i.job in live:
            if i.kind == "final":
                out.setdefault(i.rel, "export of a job not yet finished")
            elif i.job not in newest or i.global_step > newest[i.job].global_step:
                newest[i.job] = i
    for i in newest.values():
        out.setdefault(i.rel, "resume point of a job not yet finished")
    return out


def read_text(p: Path) -> str | None:
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def best_ranked(paths: Paths) -> list[str]:
    """Checkpoints best first (status/model_comparisons.json); [] when there is no ranking yet."""
    doc = read_json(paths.status / "model_comparisons.json") or {}
    ranking = doc.get("ranking") if isinstance(doc, dict) else None
    out = []
    for r in ranking if isinstance(ranking, list) else []:
        rel = _norm(paths, r.get("checkpoint")) if isinstance(r, dict) else None
        if rel:
            out.append(rel)
    return out


# ------------------------------------------------------------------ the decision
def plan(items: list[Item], protect: dict[str, str], ranking: list[str], policy: Policy,
         free_bytes: int = 0) -> Plan:
    """What to delete and why. ``free_bytes``: delete more (oldest unprotected first) until at least
    this much is freed (the disk manager's request)."""
    p = Plan(total_bytes=sum(i.size for i in items))
    keep: dict[str, list[str]] = {i.rel: [f"protected: {protect[i.rel]}"] for i in items if i.rel in protect}
    steps = sorted((i for i in items if i.kind == "step"), key=lambda i: (i.global_step, i.job, i.rel))
    for i in steps[::-1][:policy.keep_latest]:
        keep.setdefault(i.rel, []).append(f"latest {policy.keep_latest}")
    present = {i.rel for i in steps}
    best = [r for r in dict.fromkeys(ranking) if r in present][:policy.keep_best]  # stale entries skipped
    for n, rel in enumerate(best, 1):
        keep.setdefault(rel, []).append(f"best #{n}")
    if policy.keep_every_steps > 0:
        for i in steps:
            if i.global_step % policy.keep_every_steps == 0:
                keep.setdefault(i.rel, []).append(f"every {policy.keep_every_steps} steps")
    order = sorted(items, key=lambda i: (i.global_step, i.kind != "final", i.rel))  # oldest first
    remaining = p.total_bytes
    for i in order:
        if i.rel not in keep:
            why = ("final export of a finished job (current_model holds the weights)" if i.kind == "final"
                   else _not_kept(policy))
            p.delete.append((i, why))
            remaining -= i.size
    freed = p.total_bytes - remaining
    for i in order:  # budget or a request for room: policy-kept folders go too, oldest first
        over = policy.budget_bytes and remaining > policy.budget_bytes
        short = freed < free_bytes
        if not (over or short):
            break
        if i.rel in protect or i.rel not in keep:
            continue
        why = "over the disk budget" if over else "disk space low"
        p.delete.append((i, f"{why} (was kept as {', '.join(keep.pop(i.rel))})"))
        remaining -= i.size
        freed += i.size
    p.keep = keep
    p.bytes_after = remaining
    return p


def _not_kept(policy: Policy) -> str:
    parts = [f"not among the latest {policy.keep_latest}", f"not among the best {policy.keep_best}"]
    if policy.keep_every_steps:
        parts.append(f"step not a multiple of {policy.keep_every_steps}")
    return ", ".join(parts)


# ------------------------------------------------------------------ deleting
def sweep_interrupted(paths: Paths) -> list[str]:
    """Finish deletions a crash interrupted (``.deleting-*`` folders)."""
    done = []
    if paths.checkpoints.is_dir():
        for trash in paths.checkpoints.glob(f"*/{DELETING_PREFIX}*"):
            shutil.rmtree(trash, ignore_errors=True)
            done.append(_rel(paths, trash))
    return done


def apply(paths: Paths, p: Plan, db: Any = None) -> list[dict]:
    """Delete what ``p`` says, re-checking protection first (a deployment may have started since)."""
    still = protected(paths, inventory(paths))
    done = []
    for item, why in p.delete:
        if item.rel in still:
            continue
        folder = paths.base / item.rel
        if item.kind == "final":
            # The job stays finished without its export (else it would look like one to resume,
            # and its last checkpoint would be kept for good). Written before the delete starts.
            atomic_write_json(folder.parent / FINAL_DELETED, {"deleted": item.rel, "global_step": item.global_step})
        try:
            remove_tree(folder)  # never a half-deleted folder under a checkpoint's name
        except FileNotFoundError:
            continue
        if db is not None:
            db.mark_deleted(folder, why)
        done.append({"path": item.rel, "bytes": item.size, "reason": why})
    return done


def run_retention(paths: Paths, policy: Policy, *, dry_run: bool = False, free_bytes: int = 0,
                  db: Any = None) -> dict:
    """Inventory, plan, and (unless ``dry_run``) delete. Returns a report (``plan`` + ``deleted``)."""
    swept = [] if dry_run else sweep_interrupted(paths)
    items = inventory(paths)
    p = plan(items, protected(paths, items), best_ranked(paths), policy, free_bytes)
    if db is None and not dry_run and paths.model_db.exists():
        from foundation.model_db import ModelDB
        db = ModelDB(paths.model_db, base_dir=paths.base)
    deleted = [] if dry_run else apply(paths, p, db)
    return {"dry_run": dry_run, "policy": policy.__dict__, "plan": p.to_dict(), "deleted": deleted,
            "freed_bytes": sum(d["bytes"] for d in deleted), "swept": swept}
