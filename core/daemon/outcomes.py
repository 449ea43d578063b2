"""How a job ends, and where its file goes.

  result ok           -> models/current_model/ swapped, checkpoints registered, file to recently_completed/
  skip                -> failed/ (reason skipped, with the user's reason)
  stop / pause result -> back to the head of its queue (resumes from its checkpoint)
  oom                 -> retried with half the batch and twice the accumulation, up to daemon.oom_max_retries
  killed (not by us)  -> retried from its last checkpoint, up to daemon.max_job_restarts
  hang                -> retried from its last checkpoint, up to daemon.hang_retries
  anything else       -> failed/ with a machine-readable reason (hang, nan_loss, data_error, ...)

The success path is idempotent: the job record is marked "finishing" with the result before the
model swap, so a crash anywhere in it is completed on the next start, never trained again.
"""
from __future__ import annotations

import traceback
from pathlib import Path

from core.daemon.context import ActiveJob, DaemonContext
from foundation.failures import classify_exit
from core.daemon.lineage import bump_high_water
from core.daemon.model_swap import has_weights, install_model, read_lineage
from core.daemon.status import note_error, queue_status, set_state, write_status
from foundation.atomic_io import read_json
from foundation.status_io import utc_now_iso

BATCH_KEY = "training.per_device_batch_size"
ACCUM_KEY = "training.gradient_accumulation_steps"


def finish_active(ctx: DaemonContext, rc: int | None = None) -> None:
    """Decide what happened to the active job, dispose of its child and move its file accordingly."""
    a = ctx.active
    assert a is not None
    ctx.active = None
    reuse = (a.result is not None and a.error is None and a.child.poll() is None and not ctx.stopping
             and a.child.jobs_done + 1 < ctx.cfg.daemon.child_max_jobs and ctx.child is None)
    if reuse:
        ctx.child = a.child  # it reports "ready" again once it has released the job's memory
        ctx.child.job_id = None
    elif a.child.poll() is None:
        a.child.exiting_since = ctx.mono()
        a.child.close_stdin()
        ctx.exiting_children.append(a.child)
    else:
        a.child.clear_pid_file()
    rec = ctx.store.read_record(a.name) or a.record
    ctx.registry.register_checkpoints(rec.get("output_dir"))
    try:
        _settle(ctx, a, rec, rc)
    except Exception as e:  # noqa: BLE001 - bookkeeping must not kill the daemon
        ctx.log.exception("%s: error while finishing the job", a.name)
        note_error(ctx, "finish", f"{a.name}: {type(e).__name__}: {e}")
        if (ctx.paths.processing / a.name).exists():
            try:
                fail(ctx, a.name, rec, {"reason": "other", "kind": "other",
                                        "message": f"error while finishing: {type(e).__name__}: {e}",
                                        "traceback": traceback.format_exc()[-4000:]}, None)
            except Exception:  # noqa: BLE001
                ctx.log.exception("could not quarantine %s", a.name)
    write_status(ctx, {**queue_status(ctx), "current_file": None, "queue_file": None, "priority": None,
                       "job_id": None})
    set_state(ctx, "stopping" if ctx.stopping else ("paused" if ctx.paused else "idle"))
    ctx.wake.set()


def _settle(ctx: DaemonContext, a: ActiveJob, rec: dict, rc: int | None) -> None:
    if a.result is not None:
        res = a.result["result"]
        bump_high_water(ctx.store, res.get("global_step_end"), ctx.clock)
        reason = res.get("stopped_reason")
        if reason == "skip":
            fail(ctx, a.name, rec, {"reason": "skipped", "kind": "skipped",
                                    "message": f"skipped by request: {a.skip_reason or 'no reason given'}",
                                    "user_reason": a.skip_reason or "", "global_step": res.get("global_step_end")},
                 res)
        elif reason in ("stop", "pause"):
            requeue(ctx, a.name, "stopped at step boundary; resumes from its checkpoint")
        elif not res.get("ok", True):
            job_failed(ctx, a.name, rec, {"kind": res.get("error_kind") or "other",
                                          "message": res.get("error") or "engine reported failure"}, a.global_step)
        else:
            finish_success(ctx, a.name, rec, res, _first_step_latency(a))
    elif a.kill_reason == "stop_timeout" or (ctx.stopping and a.error is None):
        bump_high_water(ctx.store, a.global_step, ctx.clock)
        requeue(ctx, a.name, "daemon stopping; resumes from its last checkpoint")
    elif a.kill_reason == "hang":
        job_failed(ctx, a.name, rec, {"kind": "hang", "message":
                                      f"no optimizer step for {ctx.cfg.daemon.stall_timeout:.0f}s; killed"},
                   a.global_step)
    elif a.error is not None:
        job_failed(ctx, a.name, rec, a.error, a.global_step)
    else:
        f = classify_exit(rc if rc is not None else a.child.poll(), a.child.stderr_tail())
        job_failed(ctx, a.name, rec, {"kind": f.kind, "message": f.message}, a.global_step)


def _first_step_latency(a: ActiveJob) -> float | None:
    return round(a.first_step_mono - a.claimed_mono, 3) if a.first_step_mono is not None else None


def oom_retry_overrides(rec: dict, cfg, max_retries: int) -> dict | None:
    """The job's config overrides for its next try after an out-of-memory: half the batch, twice
    the accumulation (same effective batch); None when the retries are spent or batch is 1."""
    overrides = dict(rec.get("config_overrides") or {})
    bs = int(overrides.get(BATCH_KEY, cfg.training.per_device_batch_size))
    ga = int(overrides.get(ACCUM_KEY, cfg.training.gradient_accumulation_steps))
    if int(rec.get("oom_retries", 0)) >= max_retries or bs <= 1:
        return None
    overrides.update({BATCH_KEY: max(1, bs // 2), ACCUM_KEY: ga * 2})
    return overrides


def job_failed(ctx: DaemonContext, name: str, rec: dict, err: dict, global_step: int | None) -> None:
    """A job in processing/ failed (``err``: kind, message, ...): retry it or quarantine it."""
    kind = err.get("kind") or "other"
    bump_high_water(ctx.store, err.get("global_step") or global_step, ctx.clock)
    d = ctx.cfg.daemon
    if kind == "oom":
        overrides = oom_retry_overrides(rec, ctx.cfg, d.oom_max_retries)
        if overrides is not None:
            ctx.store.update_record(name, config_overrides=overrides, oom_retries=int(rec.get("oom_retries", 0)) + 1)
            requeue(ctx, name, f"out of memory: retrying with per_device_batch_size {overrides[BATCH_KEY]}, "
                               f"gradient_accumulation_steps {overrides[ACCUM_KEY]}")
            return
    if kind == "hang" and not ctx.stopping and int(rec.get("hang_retries", 0)) < d.hang_retries:
        ctx.store.update_record(name, hang_retries=int(rec.get("hang_retries", 0)) + 1)
        requeue(ctx, name, f"{err.get('message')}; resuming from its last checkpoint "
                           f"(hang retry {int(rec.get('hang_retries', 0)) + 1}/{d.hang_retries})")
        return
    if kind == "killed" and not ctx.stopping and int(rec.get("restarts", 0)) < d.max_job_restarts:
        ctx.store.update_record(name, restarts=int(rec.get("restarts", 0)) + 1)
        requeue(ctx, name, f"{err.get('message')}; resuming from its last checkpoint "
                           f"(restart {int(rec.get('restarts', 0)) + 1}/{d.max_job_restarts})")
        return
    doc = {"reason": kind, "kind": kind, "message": err.get("message") or kind,
           "global_step": err.get("global_step") or global_step}
    if err.get("traceback"):
        doc["traceback"] = str(err["traceback"])[-4000:]
    report = err.get("report")
    if isinstance(report, dict):
        errs = [e for e in report.get("errors", [])][:50]
        doc["errors"] = errs
        doc["line_numbers"] = sorted({int(e["line"]) for e in errs if isinstance(e, dict) and e.get("line")})
        doc["report"] = {k: v for k, v in report.items() if k not in ("errors", "warnings")}
    fail(ctx, name, rec, doc, None)


def requeue(ctx: DaemonContext, name: str, why: str) -> Path:
    rec = ctx.store.read_record(name)
    dst = ctx.store.requeue(name, head=True)
    ctx.log.info("%s back at the head of queue/%s: %s", name, rec.get("priority", "normal"), why)
    return dst


def fail(ctx: DaemonContext, name: str, rec: dict, error: dict, result: dict | None) -> None:
    """Quarantine a file of processing/ in failed/ with its ``.error.json``."""
    src = ctx.paths.processing / name
    doc = {**error, "job_id": rec.get("job_id"), "priority": rec.get("priority", "normal"),
           "original_name": rec.get("original_name") or name, "attempts": rec.get("attempts", 0),
           "restarts": rec.get("restarts", 0), "oom_retries": rec.get("oom_retries", 0),
           "config_overrides": rec.get("config_overrides") or {}, "checkpoints_dir": rec.get("output_dir"),
           "enqueued_at": rec.get("enqueued_at"), "started_at": rec.get("started_at"), "source": "training"}
    dst = ctx.store.fail(src, doc)
    ctx.store.delete_record(name)
    ctx.log.warning("%s -> queue/failed/%s: %s: %s", name, dst.name, doc.get("reason"), doc.get("message"))
    note_error(ctx, doc.get("reason", "other"), doc.get("message", ""), file=dst.name)
    ctx.registry.record_file(rec, doc.get("reason", "failed"), result or {}, doc)


def finish_success(ctx: DaemonContext, name: str, rec: dict, res: dict,
                   first_step_latency_s: float | None = None) -> None:
    """Idempotent: may be re-entered after a crash with phase == "finishing"."""
    if rec.get("phase") != "finishing":
        rec.update(phase="finishing", result=res,
                   completed_name=ctx.store.choose_name("recently_completed", name, "result"),
                   finished_at=utc_now_iso(ctx.clock))
        if first_step_latency_s is not None:
            rec["first_step_latency_s"] = first_step_latency_s
        rec = ctx.store.write_record(name, rec)
    cfg = ctx.cfg
    final = res.get("final_model_dir") or ""
    lineage = {"global_step": int(res.get("global_step_end") or 0), "job_id": rec.get("job_id"),
               "source_file": rec.get("original_name") or name, "model_name": cfg.model.model_name,
               "base_model": cfg.model.base_model, "method": cfg.training.method,
               "checkpoint": (res.get("checkpoints") or [None])[-1]}
    if read_lineage(ctx.paths.current_model).get("job_id") != rec.get("job_id"):
        if not final or not Path(final).is_dir():
            raise RuntimeError(f"job {rec.get('job_id')} reported success but its final model "
                               f"{final or '(none)'} does not exist")
        install_model(ctx.paths, final, lineage)
        ctx.log.info("models/current_model <- %s (global step %d)", final, lineage["global_step"])
    bump_high_water(ctx.store, lineage["global_step"], ctx.clock)
    ctx.registry.register_checkpoints(rec.get("output_dir"))
    detected = rec.get("detected_at")
    doc = {"schema_version": 1, "status": "completed", "original_name": rec.get("original_name") or name,
           "job_id": rec.get("job_id"), "priority": rec.get("priority"),
           "steps": res.get("steps"), "global_step_start": res.get("global_step_start"),
           "global_step_end": res.get("global_step_end"), "tokens": res.get("tokens"),
           "train_loss_first": res.get("train_loss_first"), "train_loss_last": res.get("train_loss_last"),
           "validation_loss": res.get("validation_loss"), "duration_s": res.get("duration_s"),
           "tokens_per_sec": res.get("tokens_per_sec"),
           "checkpoint": (res.get("checkpoints") or [None])[-1], "checkpoints": res.get("checkpoints") or [],
           "final_model_dir": final, "current_model": str(ctx.paths.current_model),
           "resumed_from": res.get("resumed_from"), "attempts": rec.get("attempts"),
           "restarts": rec.get("restarts", 0), "oom_retries": rec.get("oom_retries", 0),
           "config_overrides": rec.get("config_overrides") or {}, "enqueued_at": rec.get("enqueued_at"),
           "started_at": rec.get("started_at"), "finished_at": rec.get("finished_at"),
           "first_step_latency_s": rec.get("first_step_latency_s"),
           "first_step_wall": rec.get("first_step_wall"), "detected_at": detected,
           "drop_to_first_step_s": (round(rec["first_step_wall"] - detected, 3)
                                    if detected and rec.get("first_step_wall") else None),
           "validation": rec.get("validation"), "metrics": res.get("metrics") or {}}
    dst = ctx.store.complete(ctx.paths.processing / name, doc, name=rec.get("completed_name"))
    ctx.store.delete_record(name)
    ctx.registry.record_file(rec, "completed", res, None)
    ctx.last_completed = {"file": dst.name, "job_id": rec.get("job_id"),
                          "global_step": res.get("global_step_end"), "at": utc_now_iso(ctx.clock)}
    ctx.log.info("%s -> queue/recently_completed/%s (steps %s, global step %s, loss %s)", name, dst.name,
                 res.get("steps"), res.get("global_step_end"), res.get("train_loss_last"))


def finished_on_disk(rec: dict) -> bool:
    """The job ran to the end before a crash: its exported final model exists (the engine
    writes ``final/`` by rename only after the last checkpoint of a complete run)."""
    out = rec.get("output_dir")
    return bool(out) and has_weights(Path(out) / "final") and any(Path(out).glob("step-*"))


def complete_from_disk(ctx: DaemonContext, entry) -> None:
    """Finish a job that completed before a crash without training it again: the result is
    rebuilt from its newest checkpoint's info (token counts of the lost run are unknown)."""
    try:
        ctx.store.claim(entry)
    except (FileNotFoundError, FileExistsError):
        return
    rec = ctx.store.read_record(entry.name)
    out = Path(rec["output_dir"])
    cps = sorted((int(p.name[5:]), p) for p in out.glob("step-*")
                 if p.name[5:].isdigit() and (p / "checkpoint_info.json").is_file())
    last_step, last = cps[-1]
    info = read_json(last / "checkpoint_info.json") or {}
    meta = read_json(out / "job_meta.json") or {}
    start = int(meta.get("global_step_start", rec.get("global_step_start", 0)))
    res = {"ok": True, "job_id": rec.get("job_id"), "global_step_start": start, "global_step_end": last_step,
           "steps": last_step - start, "tokens": None, "train_loss_first": None,
           "train_loss_last": info.get("train_loss"), "validation_loss": info.get("validation_loss"),
           "checkpoints": [str(p) for _, p in cps], "final_model_dir": str(out / "final"),
           "stopped_reason": None, "resumed_from": str(last), "metrics": {"completed_before_crash": True}}
    ctx.log.warning("%s: its job finished before a crash (final model on disk); completing without "
                    "training again", entry.name)
    try:
        finish_success(ctx, entry.name, rec, res)
    except Exception as e:  # noqa: BLE001
        ctx.log.exception("%s: could not complete from disk", entry.name)
        fail(ctx, entry.name, rec, {"reason": "other", "kind": "other",
                                    "message": f"could not complete a finished job: {type(e).__name__}: {e}"}, res)
    write_status(ctx, queue_status(ctx))
