"""Applying the control flags (``control/.pause``, ``.resume``, ``.stop``, ``.skip``; see
``core.daemon.control_flags``) to the running daemon, once per loop tick.

pause/resume are levels (``.pause`` present = paused); stop and skip are edges, consumed when
seen. An edge flag written before this daemon started is stale and ignored, so a leftover
``.stop`` never stops the next start.
"""
from __future__ import annotations

from core.daemon.context import DaemonContext
from core.daemon.control_flags import active_flags, clear_flag
from core.daemon.status import set_state

STALE_SLACK_S = 1.0


def request_stop(ctx: DaemonContext, reason: str) -> None:
    """Checkpoint at the next step boundary, requeue the file, exit 0 (SIGTERM / .stop)."""
    if not ctx.stopping:
        ctx.stopping = True
        ctx.stop_reason = reason
        ctx.log.info("stop requested (%s)", reason)
        ctx.status_dirty = True
    ctx.wake.set()


def handle_control(ctx: DaemonContext) -> None:
    flags = active_flags(ctx.paths)
    if "resume" in flags:
        clear_flag(ctx.paths, "resume")
        clear_flag(ctx.paths, "pause")
        flags.pop("pause", None)
        if ctx.paused:
            ctx.log.info("resume (%s)", flags["resume"].get("reason") or "no reason given")
    _apply_pause(ctx, flags)
    for edge in ("stop", "skip"):
        doc = flags.get(edge)
        if doc is None:
            continue
        clear_flag(ctx.paths, edge)
        if doc.get("_mtime", 0) < ctx.start_wall - STALE_SLACK_S:
            ctx.log.warning("ignoring stale control/.%s written before this daemon started", edge)
            continue
        if edge == "stop":
            request_stop(ctx, f"control/.stop: {doc.get('reason') or 'no reason given'}")
        elif ctx.active is not None:
            ctx.active.skip_reason = doc.get("reason") or ""
            ctx.log.info("skip %s (%s)", ctx.active.name, ctx.active.skip_reason or "no reason given")
            ctx.active.child.command("skip")
        else:
            ctx.log.info("skip requested but nothing is training; ignored")
    if ctx.stopping and ctx.active is not None and not ctx.active.stop_sent:
        ctx.active.stop_sent = True
        ctx.active.stop_deadline = ctx.mono() + ctx.cfg.daemon.stop_timeout
        ctx.active.child.command("stop")
        set_state(ctx, "stopping")


def _apply_pause(ctx: DaemonContext, flags: dict) -> None:
    want_pause = "pause" in flags
    if want_pause and not ctx.paused:
        ctx.paused = True
        ctx.pause_reason = flags["pause"].get("reason", "")
        ctx.log.info("pause requested (%s)", ctx.pause_reason or "no reason given")
        if ctx.active is not None:
            ctx.active.child.command("pause")
        set_state(ctx, "paused")
    elif not want_pause and ctx.paused:
        ctx.paused = False
        ctx.pause_reason = ""
        if ctx.active is not None:
            ctx.active.child.command("resume")
            ctx.active.paused = False
            ctx.active.last_progress = ctx.mono()
        set_state(ctx, "training" if ctx.active else "idle")
