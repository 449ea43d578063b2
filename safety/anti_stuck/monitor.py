"""The anti-stuck monitor: every check, judge training and evaluation (``detector``); on a hang,
dump the stuck process's stacks to ``logs/`` (``stacks``), SIGKILL its process group, and record it.

What resumes the work: a killed trainer child is seen by the training daemon as "killed", which
puts the file back at the head of its queue and resumes it from its last complete checkpoint (up
to ``daemon.max_job_restarts`` times); a killed evaluation daemon is restarted by the watchdog and
evaluates the checkpoint again.

status/anti_stuck.json: schema_version, updated_at, pid, heartbeat_at, state, interval,
  limits {step_factor, evaluation_budget, heartbeat_stale_s},
  training {active, why | job_id, step, stalled_s, limit_s, median_step_s, median_source},
  evaluation {active, why | checkpoint, stalled_s, limit_s},
  track {training {job_id, step, since, samples}, evaluation {checkpoint, pid, since}}  (memory across --once runs)
  detections_total, events [{at, kind, detail, target, pid, killed, stacks_file, stack_method, resumes}] (newest last, bounded)
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from foundation.daemon_run import run_passes
from foundation.paths import Paths
from foundation.single_instance import pid_alive, read_pid
from foundation.status_io import read_status, utc_now_iso, write_status
from safety.anti_stuck.detector import Limits, Stuck, check_evaluation, check_training
from safety.anti_stuck.progress import median_step_time
from safety.anti_stuck.stacks import dump_stacks, kill_group
from safety.supervision.processes import matching_pid
from safety.supervision.programs import default_programs

log = logging.getLogger("anti_stuck")

STATUS_NAME = "anti_stuck"
INSTANCE_NAME = "anti_stuck_monitor"
MAX_EVENTS = 20
TRAINER_CHILD_MATCH = "trainer_child.py"


def _eval_match() -> str:
    return next(p.cmdline_match() for p in default_programs() if p.name == "automated_testing")


class AntiStuckMonitor:
    def __init__(self, base_dir: str | Path | None, limits: Limits, interval: float, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.paths = Paths.from_base(base_dir)
        self.limits, self.interval, self.clock = limits, interval, clock
        prev = read_status(self.status_path) or {}
        self.track: dict[str, dict] = prev.get("track") if isinstance(prev.get("track"), dict) else {}
        self.events: list[dict] = list(prev.get("events") or [])[-MAX_EVENTS:]
        self.detections_total = int(prev.get("detections_total") or 0)
        self.view: dict[str, Any] = {}

    @property
    def status_path(self) -> Path:
        return self.paths.status_file(STATUS_NAME)

    # ------------------------------------------------------------------ one check
    def check_once(self) -> list[dict]:
        """Judge training and evaluation once; act on what is stuck. Returns the new events."""
        now = self.clock()
        new: list[dict] = []
        tr_doc = read_status(self.paths.status_file("training_status")) or {}
        median, source = median_step_time(self.paths.logs, (self.track.get("training") or {}).get("samples"))
        track, stuck, info = check_training(tr_doc, self.track.get("training") or {}, now, self.limits, median)
        if info.get("active") and not pid_alive(tr_doc.get("pid")):
            track, stuck, info = {"samples": track.get("samples", [])}, None, {"active": False,
                                                                                 "why": "training daemon not running"}
        self.track["training"] = track
        self.view["training"] = {**info, "median_step_s": None if median is None else round(median, 4),
                                 "median_source": source}
        if stuck is not None:
            new.append(self._act_training(stuck, tr_doc))
            self.track["training"] = {**track, "since": self.clock()}  # the resumed job gets a full limit

        ev_doc = read_status(self.paths.status_file("automated_testing")) or {}
        track, stuck, info = check_evaluation(ev_doc, self.track.get("evaluation") or {}, now, self.limits)
        if stuck is not None and matching_pid(ev_doc.get("pid"), _eval_match()) is None:
            stuck, info = None, {"active": False, "why": f"evaluation pid {ev_doc.get('pid')} not running"}
        self.track["evaluation"] = track
        self.view["evaluation"] = info
        if stuck is not None:
            new.append(self._act(stuck, "automated_testing", ev_doc.get("pid"),
                                 self.paths.logs / "automated_testing.out",
                                 "the watchdog restarts the evaluation daemon, which evaluates the checkpoint again"))
        self.events = (self.events + new)[-MAX_EVENTS:]
        self.detections_total += len(new)
        self.write_status("running")
        return new

    def _act_training(self, stuck: Stuck, doc: dict) -> dict:
        child = doc.get("trainer_child") if isinstance(doc.get("trainer_child"), dict) else {}
        candidates = [child.get("pid"), read_pid(self.paths.pids / "trainer_child.pid"), doc.get("trainer_pid")]
        pid = next((p for p in candidates if matching_pid(p, TRAINER_CHILD_MATCH)), None)
        return self._act(stuck, "trainer_child", pid, self.paths.logs / "trainer_child.log",
                         "the training daemon requeues the file at the head of its queue and resumes it "
                         "from its last complete checkpoint")

    def _act(self, stuck: Stuck, target: str, pid: int | None, log_file: Path, resumes: str) -> dict:
        event: dict[str, Any] = {"at": utc_now_iso(self.clock), "kind": stuck.kind, "detail": stuck.detail,
                                 "stalled_s": round(stuck.stalled_s, 1), "limit_s": round(stuck.limit_s, 1),
                                 **stuck.what, "target": target, "pid": pid}
        log.error("stuck: %s", stuck.detail)
        if pid is None:
            event.update(killed=None, stacks_file=None, stack_method=None,
                         resumes=f"no live {target} process found to kill")
            log.error("no live %s process to kill", target)
            return event
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        out = self.paths.logs / f"stuck_{target}_{pid}_{stamp}.txt"
        try:
            method = dump_stacks(pid, out, f"stuck {stuck.kind}: {stuck.detail}", log_file)
        except OSError as e:  # the kill matters more than the dump
            method, out = f"failed: {e}", None
        killed = kill_group(pid)
        log.error("%s pid %s: stacks in %s (%s); killed its %s", target, pid, out, method, killed)
        event.update(killed=killed, stacks_file=str(out) if out else None, stack_method=method, resumes=resumes)
        return event

    # ------------------------------------------------------------------ loop and status
    def run(self, stop: threading.Event) -> None:
        log.info("anti-stuck monitor: checking every %.1fs (%s)", self.interval, self.limits)
        run_passes(stop, self.interval, self.check_once, log, "anti-stuck check")
        self.write_status("stopped")

    def write_status(self, state: str) -> dict:
        return write_status(self.status_path, {
            "state": state, "interval": self.interval, "limits": asdict(self.limits), **self.view,
            "track": self.track, "detections_total": self.detections_total, "events": self.events,
        }, daemon=True, clock=self.clock)
