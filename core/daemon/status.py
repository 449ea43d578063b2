"""The daemon's keys in ``status/training_status.json`` (merged with the engine's keys, see
``trainer/monitoring/status_writer.py``; every write atomic, under a lock):

  pid, daemon_pid       the daemon's PID (``trainer_pid`` is the trainer child's)
  state                 starting | idle | training | paused | stopping | stopped | error
  heartbeat_at          refreshed every ``daemon.heartbeat_interval`` s (stale = daemon dead)
  daemon_heartbeat_at   the same moment, a key no other writer touches (the watchdog and health check read it)
  daemon_started_at     ISO 8601 UTC
  current_file, priority, job_id, queue_file   the file being trained (original name, queue name)
  job_started_at, job_attempt                  this attempt of the job
  queue                 {high, normal, low, processing, failed, recently_completed} counts
  queued_total          files waiting in high+normal+low
  paused, pause_reason, stopping, stop_reason, stopped_at, control_flags
  last_error            {reason, message, file, at} (quarantines, job failures, config errors)
  last_completed        {file, job_id, global_step, at}
  lineage_global_step   the global step of models/current_model/ (its lineage.json)
  daemon_seen_step      the last global step the child reported
  trainer_child         {pid, state: starting|ready|busy|exited} or null
  observer              inotify | polling;  inbox_pending: entries waiting to be complete
"""
from __future__ import annotations

import os

from core.daemon.context import DaemonContext
from core.daemon.control_flags import active_flags
from core.daemon.lineage import current_global_step
from foundation.paths import QUEUE_LEVELS
from foundation.status_io import update_status, utc_now_iso

# The engine's keys reset when a job is handed to the child (its callbacks fill them again).
ENGINE_RESET = {"status": "starting", "step_in_file": 0, "file_total_steps": None, "loss": None,
                "eta_seconds": None, "epoch": 0.0, "tokens_per_sec": None, "learning_rate": None}


def note_error(ctx: DaemonContext, reason: str, message: str, file: str | None = None) -> None:
    ctx.last_error = {"reason": reason, "message": message[:2000], "file": file, "at": utc_now_iso(ctx.clock)}
    ctx.status_dirty = True


def queue_status(ctx: DaemonContext) -> dict:
    counts = ctx.store.counts()
    return {"queue": {k: counts[k] for k in (*QUEUE_LEVELS, "processing", "failed", "recently_completed")},
            "queued_total": sum(counts[p] for p in QUEUE_LEVELS)}


def write_status(ctx: DaemonContext, patch: dict) -> None:
    # daemon_heartbeat_at: written only here, so a watcher never mistakes the trainer child's writes
    # for the daemon's heartbeat (the watchdog's training row and the health check read it).
    base = {"pid": os.getpid(), "daemon_pid": os.getpid(), "state": ctx.state, "daemon_started_at": ctx.started_at,
            "daemon_heartbeat_at": utc_now_iso(ctx.clock)}
    base.update(patch)
    try:
        update_status(ctx.status_path, base, daemon=True, clock=ctx.clock)
    except OSError as e:
        ctx.log.error("cannot write status: %s", e)


def set_state(ctx: DaemonContext, state: str) -> None:
    if state != ctx.state:
        ctx.state = state
        ctx.status_dirty = True
        heartbeat(ctx, force=True)


def heartbeat(ctx: DaemonContext, force: bool = False) -> None:
    """Write the full status when something changed or the heartbeat interval passed."""
    now = ctx.mono()
    if not force and not ctx.status_dirty and now - ctx.last_heartbeat < ctx.cfg.daemon.heartbeat_interval:
        return
    ctx.last_heartbeat = now
    ctx.status_dirty = False
    a = ctx.active
    if a is not None:
        # Checkpoints show up while the job runs; registering them on the heartbeat lets the
        # evaluation sidecar find them in the registry before the job ends.
        ctx.registry.register_checkpoints(a.record.get("output_dir"))
    ch = a.child if a is not None else ctx.child
    patch = {**queue_status(ctx), "state": ctx.state, "paused": ctx.paused,
             "pause_reason": ctx.pause_reason or None, "stopping": ctx.stopping,
             "last_error": ctx.last_error, "last_completed": ctx.last_completed,
             "lineage_global_step": current_global_step(ctx.paths),
             "trainer_child": {"pid": ch.pid, "state": ch.state} if ch is not None else None,
             "observer": ctx.observer_kind,
             "inbox_pending": ctx.tracker.pending_count() if ctx.tracker else 0,
             "control_flags": sorted(active_flags(ctx.paths))}
    if a is not None:
        patch.update(current_file=a.job["source_file"], queue_file=a.name, priority=a.job["priority"],
                     job_id=a.job["job_id"], daemon_seen_step=a.global_step)
    write_status(ctx, patch)
