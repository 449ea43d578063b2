"""Start-up recovery after a crash: nothing is lost, nothing trained twice.

A trainer child left by a dead daemon is killed; an interrupted model swap is repaired; each
file in processing/ either completes its bookkeeping (its record says "finishing": the job had
finished) or goes back to the head of its queue, where it resumes from its newest checkpoint.
"""
from __future__ import annotations

from core.daemon.child import kill_stale_child
from core.daemon.context import DaemonContext
from core.daemon.model_swap import recover as recover_models
from core.daemon.outcomes import finish_success, requeue
from core.daemon.status import note_error
from core.jobqueue.store import RECORD_SUFFIX
from foundation.paths import QUEUE_LEVELS


def recover(ctx: DaemonContext) -> None:
    stale = kill_stale_child(ctx.paths)
    if stale:
        ctx.log.warning("killed a trainer child left by a previous daemon (pid %d)", stale)
    for line in recover_models(ctx.paths):
        ctx.log.warning("model recovery: %s", line)
    for name in ctx.store.data_names("processing"):
        rec = ctx.store.read_record(name)
        try:
            if rec.get("phase") == "finishing" and rec.get("result"):
                ctx.log.warning("%s: completing the bookkeeping of a finished job after a crash", name)
                finish_success(ctx, name, rec, rec["result"])
            else:
                requeue(ctx, name, "recovered after a crash; resumes from its last checkpoint")
        except Exception as e:  # noqa: BLE001
            ctx.log.exception("recovery of %s failed", name)
            note_error(ctx, "recovery", f"{name}: {type(e).__name__}: {e}")
    # Records whose file is no longer in an active folder are leftovers of a crash mid-move.
    for rp in ctx.store.jobs_dir.glob("*" + RECORD_SUFFIX):
        name = rp.name[: -len(RECORD_SUFFIX)]
        if ctx.store.find(name, (*QUEUE_LEVELS, "processing")) is None:
            rp.unlink(missing_ok=True)
