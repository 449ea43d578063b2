"""Claiming the next file and handing it to the warm trainer child.

A claimed file's job id, global start step and retry counters live in its job record
(``queue/.jobs/``), so a file that comes back after a stop or crash resumes the same job (same
output folder, newest complete checkpoint). The config is read again before each claim, so an
edit of config.json applies from the next file on.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from core.daemon.context import ActiveJob, DaemonContext
from core.daemon.lineage import next_global_start
from core.daemon.model_swap import has_weights
from core.daemon.outcomes import complete_from_disk, finished_on_disk
from core.daemon.status import ENGINE_RESET, note_error, set_state, write_status
from foundation.atomic_io import read_json
from foundation.status_io import utc_now_iso


def maybe_start_next(ctx: DaemonContext) -> None:
    entry = ctx.store.next_to_claim()
    if entry is None:
        if ctx.state not in ("idle", "error"):
            set_state(ctx, "idle")
        return
    if entry.record.get("started") and finished_on_disk(entry.record):
        complete_from_disk(ctx, entry)
        return
    if ctx.child is None or ctx.child.state != "ready":
        return
    reload_config(ctx)
    try:
        path = ctx.store.claim(entry)
    except FileNotFoundError:
        return  # moved by someone else meanwhile
    except FileExistsError:
        ctx.log.error("cannot claim %s: a file of that name is already in processing/", entry.name)
        return
    name = path.name
    rec = _start_record(ctx, name, ctx.store.read_record(entry.name))
    job = _job_doc(ctx, path, rec)
    child = ctx.child
    ctx.child = None
    now = ctx.mono()
    ctx.active = ActiveJob(name=name, record=rec, job=job, child=child, claimed_mono=now, last_progress=now,
                           started_at=utc_now_iso(ctx.clock))
    if not child.run_job(job):
        ctx.log.error("could not hand %s to the trainer child; it will be retried", name)
        child.kill()
        return  # the child supervision sees the exit and requeues
    ctx.registry.new_job()
    ctx.log.info("training %s (priority %s, job %s, attempt %d, global step %s, from %s)", name,
                 rec.get("priority"), rec["job_id"], rec["attempts"], rec["global_step_start"], rec["model_path"])
    write_status(ctx, {**ENGINE_RESET, "current_file": job["source_file"], "queue_file": name,
                       "priority": job["priority"], "job_id": rec["job_id"],
                       "current_step": current_step_hint(rec), "job_started_at": ctx.active.started_at,
                       "job_attempt": rec["attempts"]})
    set_state(ctx, "paused" if ctx.paused else "training")


def _start_record(ctx: DaemonContext, name: str, rec: dict) -> dict:
    """Fill in what a first attempt decides once (job id, global start step, model) and count the attempt."""
    if not rec.get("job_id"):
        stem = name[:-6] if name.endswith(".jsonl") else name
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80] or "job"
        rec["job_id"] = f"{safe}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(ctx.clock()))}-{os.urandom(2).hex()}"
    if "global_step_start" not in rec:
        rec["global_step_start"] = next_global_start(ctx.paths, ctx.store)
    if not rec.get("model_path"):
        rec["model_path"] = str(ctx.paths.current_model) if has_weights(ctx.paths.current_model) \
            else str(ctx.paths.resolve(ctx.cfg.model.model_path))
    rec.pop("first_step_wall", None)  # measured again for this attempt
    rec.update(output_dir=str(ctx.paths.checkpoints / rec["job_id"]), started=True, phase="running",
               attempts=int(rec.get("attempts", 0)) + 1, started_at=rec.get("started_at") or utc_now_iso(ctx.clock))
    return ctx.store.write_record(name, rec)


def _job_doc(ctx: DaemonContext, path: Path, rec: dict) -> dict:
    """The job the trainer child runs: the config (with the job's own overrides) and its paths."""
    from trainer.config.keys import redact_config
    from trainer.config.loader import config_to_dict, set_dotted
    cfg = ctx.cfg
    cdict = redact_config(config_to_dict(cfg))  # a job spec (job.json on disk for DDP) never carries keys
    for k, v in (rec.get("config_overrides") or {}).items():
        set_dotted(cdict, k, v)
    cdict["_base_dir"] = str(ctx.paths.base)
    return {"dataset": str(path), "output_dir": rec["output_dir"], "model_path": rec["model_path"],
            "job_id": rec["job_id"], "config": cdict, "global_step_start": int(rec["global_step_start"]),
            "resume": True, "source_file": rec.get("original_name") or path.name,
            "priority": rec.get("priority", "normal"), "status_file": str(ctx.status_path),
            "eval_dir": str(ctx.paths.resolve(cfg.data.validation_dir))}


def current_step_hint(rec: dict) -> int:
    """The global step the job resumes at (its newest checkpoint), for the status before the child reports."""
    meta = read_json(Path(rec["output_dir"]) / "job_meta.json") or {}
    steps = [int(p.name[5:]) for p in Path(rec["output_dir"]).glob("step-*") if p.name[5:].isdigit()]
    return max([int(meta.get("global_step_start", rec["global_step_start"])), *steps])


def reload_config(ctx: DaemonContext) -> None:
    from trainer.config.loader import ConfigError, load_config
    try:
        ctx.cfg = load_config(base_dir=ctx.paths.base)
    except ConfigError as e:
        ctx.log.error("config.json is invalid; keeping the previous config: %s", e)
        note_error(ctx, "config", str(e))
