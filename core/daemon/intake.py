"""The intake thread: inbox entries that are complete (``core.jobqueue.inbox_watcher``) are
validated (``core.jobqueue.validation``) and queued by priority, or quarantined in failed/ with
a machine-readable reason. It runs beside the main loop so a large file's validation never
delays a control flag or a heartbeat.
"""
from __future__ import annotations

import os

from core.daemon.context import DaemonContext
from core.daemon.status import note_error
from core.jobqueue.validation import check_input


def intake_loop(ctx: DaemonContext) -> None:
    d = ctx.cfg.daemon
    last_scan = -1e18
    while not ctx.stop_event.is_set():
        now = ctx.mono()
        if now - last_scan >= d.poll_interval:
            ctx.tracker.scan()
            last_scan = now
        for ent in ctx.tracker.ready():
            if ctx.stop_event.is_set():
                break
            take_inbox_entry(ctx, ent)
        nd = ctx.tracker.next_deadline()
        timeout = d.poll_interval if nd is None else min(d.poll_interval, max(0.02, nd))
        ctx.intake_wake.wait(timeout)
        ctx.intake_wake.clear()


def take_inbox_entry(ctx: DaemonContext, ent) -> None:
    p = ent.path
    try:
        before = os.lstat(p)
    except FileNotFoundError:
        ctx.tracker.forget(p)
        return
    detected_wall = ctx.clock() - max(0.0, ctx.mono() - ent.first_seen)
    try:
        verdict = check_input(p, ctx.paths, ctx.cfg)
        try:
            after = os.lstat(p)
        except FileNotFoundError:
            ctx.tracker.forget(p)
            return
        if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
            ctx.tracker.on_event(p)  # still being written: look again later
            return
        ctx.tracker.forget(p)
        if verdict.ok:
            dst = ctx.store.enqueue(p, ent.priority, source="inbox", original_name=p.name,
                                    extra={"detected_at": detected_wall,
                                           "validation": {"n_examples": verdict.n_examples,
                                                          "warnings": (verdict.report or {}).get("warning_counts")}})
            ctx.log.info("queued %s -> queue/%s/%s (%d examples)", p.name, ent.priority, dst.name, verdict.n_examples)
        else:
            _reject(ctx, p, ent.priority, verdict)
    except FileNotFoundError:
        ctx.tracker.forget(p)
        return
    except Exception as e:  # noqa: BLE001 - one bad entry must not stop the intake
        ctx.log.exception("intake of %s failed", p)
        note_error(ctx, "intake", f"{p.name}: {type(e).__name__}: {e}")
        ctx.tracker.forget(p)
        return
    ctx.status_dirty = True
    ctx.wake.set()


def _reject(ctx: DaemonContext, p, priority: str, verdict) -> None:
    base = ctx.paths.base
    err = {**verdict.to_error(), "priority": priority, "source": "inbox",
           "original_path": str(p.relative_to(base)) if str(p).startswith(str(base)) else str(p)}
    if verdict.report is not None:
        err["report"] = {k: v for k, v in verdict.report.items() if k not in ("errors", "warnings")}
    dst = ctx.store.fail(p, err)
    ctx.log.warning("rejected %s -> queue/failed/%s: %s", p.name, dst.name, verdict.message)
    note_error(ctx, verdict.reason, verdict.message, file=dst.name)
