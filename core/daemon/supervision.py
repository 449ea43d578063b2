"""Watching the trainer child processes: their messages, their exits, stalls, and keeping one
warm child (imports done) ready before a file arrives.

Why a warm child: importing torch/transformers takes seconds, so the next file's first optimizer
step comes sooner when the import already happened. One trainer process at a time: a new warm
child is started only when no job runs and the previous child has exited.
"""
from __future__ import annotations

import queue

from core.daemon.child import ChildHandle
from core.daemon.context import DaemonContext
from core.daemon.outcomes import finish_active
from core.daemon.status import note_error, set_state

CHILD_BACKOFF_MAX = 60.0
EXIT_GRACE_S = 30.0  # a child that reported its result and lingers longer than this is killed


def drain_messages(ctx: DaemonContext) -> None:
    for ch in [c for c in (ctx.child, ctx.active.child if ctx.active else None) if c is not None]:
        while True:
            try:
                msg = ch.messages.get_nowait()
            except queue.Empty:
                break
            _on_message(ctx, ch, msg)


def _on_message(ctx: DaemonContext, ch: ChildHandle, msg: dict) -> None:
    t = msg.get("type")
    a = ctx.active if (ctx.active is not None and ctx.active.child is ch) else None
    if t == "ready":
        ctx.log.info("trainer child %s ready (imports %.1fs)", msg.get("pid"), msg.get("import_s") or 0)
        ctx.child_failures = 0
        ctx.status_dirty = True
        if ctx.state == "error":
            set_state(ctx, "paused" if ctx.paused else "idle")
    elif a is None:
        return
    elif t in ("step", "heartbeat"):
        a.last_progress = ctx.mono()
        if msg.get("global_step") is not None:
            a.global_step = int(msg["global_step"])
            if a.first_step_mono is None and t == "step":
                a.first_step_mono = ctx.mono()
                wall = float(msg.get("t") or ctx.clock())
                a.record["first_step_wall"] = wall
                try:
                    ctx.store.update_record(a.name, first_step_wall=wall)
                except OSError:
                    pass
                ctx.log.info("%s: first optimizer step %.2fs after claim", a.name, a.first_step_mono - a.claimed_mono)
    elif t == "paused":
        a.paused = True
        a.last_progress = ctx.mono()
        ctx.log.info("%s: paused at global step %s (checkpoint written)", a.name, msg.get("global_step"))
        ctx.status_dirty = True
    elif t == "resumed":
        a.paused = False
        a.last_progress = ctx.mono()
        ctx.log.info("%s: resumed", a.name)
    elif t == "result":
        a.result = msg
        finish_active(ctx)
    elif t == "error":
        a.error = msg


def check_active_child(ctx: DaemonContext) -> None:
    """The active job's child exited (or overran stop_timeout): settle the job."""
    a = ctx.active
    if a is None:
        return
    rc = a.child.poll()
    if a.stop_deadline is not None and rc is None and ctx.mono() > a.stop_deadline:
        ctx.log.warning("%s: no checkpoint within stop_timeout; killing the trainer", a.name)
        a.kill_reason = "stop_timeout"
        a.child.kill()
        a.child.wait(10)
        rc = a.child.poll()
    if rc is None:
        return
    a.child.wait_reports(2.0)
    drain_messages(ctx)
    if ctx.active is None:  # the result was handled by the drain
        return
    finish_active(ctx, rc)


def check_stall(ctx: DaemonContext) -> None:
    """A trainer that makes no optimizer step for daemon.stall_timeout (and is not paused) hangs: kill it."""
    a = ctx.active
    limit = ctx.cfg.daemon.stall_timeout
    if a is None or limit <= 0 or a.paused or ctx.paused or a.kill_reason:
        return
    if ctx.mono() - a.last_progress > limit:
        ctx.log.error("%s: no optimizer step for %.0fs; killing the trainer (hang)", a.name, limit)
        a.kill_reason = "hang"
        a.child.kill()


def reap_exiting(ctx: DaemonContext) -> None:
    """Children that reported their result exit by themselves; kill one that lingers."""
    keep = []
    for ch in ctx.exiting_children:
        if ch.poll() is None:
            since = ch.exiting_since or ctx.mono()
            if ctx.mono() - since > EXIT_GRACE_S:
                ctx.log.warning("trainer child %s did not exit after its result; killing it", ch.pid)
                ch.kill()
            keep.append(ch)
            continue
        ch.clear_pid_file()
    ctx.exiting_children = keep


def ensure_warm_child(ctx: DaemonContext) -> None:
    if ctx.stopping or ctx.exit_requested or ctx.active is not None:
        return  # one trainer process at a time: no import competing with a running job
    if ctx.child is not None:
        rc = ctx.child.poll()
        if rc is None:
            return
        _warm_child_died(ctx, rc)
    if not ctx.cfg.daemon.keep_warm_child and ctx.store.next_to_claim() is None:
        return
    if ctx.mono() < ctx.child_backoff_until:
        return
    if any(ch.poll() is None for ch in ctx.exiting_children):
        return  # one trainer at a time: the previous one is still exiting
    ctx.child = ChildHandle(ctx.paths, wake=ctx.wake.set, python=ctx.opts.python, env=ctx.opts.child_env,
                            log_keep_days=ctx.cfg.daemon.log_keep_days).start()
    ctx.log.info("started warm trainer child pid %d", ctx.child.pid)
    ctx.status_dirty = True


def _warm_child_died(ctx: DaemonContext, rc: int) -> None:
    """The warm child died before it got a job: back off exponentially; state error after three."""
    drain_messages(ctx)
    tail = ctx.child.stderr_tail(2000)
    ctx.child_failures += 1
    delay = min(CHILD_BACKOFF_MAX, 2.0 ** min(ctx.child_failures, 6))
    ctx.child_backoff_until = ctx.mono() + delay
    ctx.log.error("trainer child exited with %s before a job (retry in %.0fs): %s", rc, delay,
                  tail.strip().splitlines()[-1:] if tail.strip() else "")
    if ctx.child_failures >= 3:
        note_error(ctx, "trainer_child", f"trainer child keeps exiting ({rc}): "
                   + (tail.strip().splitlines()[-1] if tail.strip() else "no output"))
        set_state(ctx, "error")
    ctx.child = None


def next_timeout(ctx: DaemonContext) -> float:
    """How long the main loop may sleep: the heartbeat, a stop deadline or a back-off ends sooner."""
    d = ctx.cfg.daemon
    t = min(d.heartbeat_interval, d.poll_interval)
    if ctx.active is not None and ctx.active.stop_deadline is not None:
        t = min(t, max(0.05, ctx.active.stop_deadline - ctx.mono()))
    if ctx.child_backoff_until > ctx.mono():
        t = min(t, max(0.05, ctx.child_backoff_until - ctx.mono()))
    return max(0.05, t)
