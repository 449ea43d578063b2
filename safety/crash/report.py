"""status/crash_report.json: every crash seen, counted by kind, the last occurrences, what to do.

One crash seen from two places counts once: a trainer traceback in logs/trainer_child.log and the
same exception in the failed file's error.json (same exception line), or a hang the anti-stuck
monitor killed and the watchdog's "killed by SIGKILL" for that program, within MERGE_WINDOW_S.

Fields: schema_version, updated_at, pid, heartbeat_at, state, interval, total, counts {kind: n},
  last {kind: [incident, ...]} (newest first, LAST_PER_KIND each), recent [incident] (newest first,
  RECENT), advice {kind: text} for the kinds seen, cursors {trainer_log {inode, offset}}, seen [keys].
Incident: key, kind, source (failed | watchdog | stuck | trainer_log), sources, at, detected_at,
  subject, message, traceback (tail), advice.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from foundation.daemon_run import run_passes
from foundation.paths import Paths
from foundation.status_io import parse_iso, read_status, utc_now_iso, write_status
from safety.crash.classify import ADVICE, KINDS, exception_line
from safety.crash.sources import from_anti_stuck, from_failed, from_trainer_log, from_watchdog

STATUS_NAME = "crash_report"
INSTANCE_NAME = "crash_detector"
LAST_PER_KIND = 5
RECENT = 30
MAX_SEEN = 2000
MERGE_WINDOW_S = 600.0

log = logging.getLogger("crash_detector")


def signature(inc: dict) -> str | None:
    if inc["source"] == "stuck":
        return "kill:" + inc["subject"].split(" pid ")[0]  # "<target> pid N"
    if inc["source"] == "watchdog" and inc["kind"] == "killed":
        return "kill:" + inc["subject"].split(" (")[0].removeprefix("program ")  # "program NAME (...)"
    if inc.get("traceback"):
        exc = exception_line(inc["traceback"].splitlines())
        return f"tb:{exc}" if exc else None
    return None


def _epoch(iso) -> float:
    try:
        return parse_iso(iso).timestamp()
    except (TypeError, ValueError, AttributeError):
        return 0.0


class CrashDetector:
    def __init__(self, base_dir: str | Path | None, interval: float = 10.0, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.paths = Paths.from_base(base_dir)
        self.interval, self.clock = interval, clock
        doc = read_status(self.status_path) or {}
        self.counts = {k: int((doc.get("counts") or {}).get(k) or 0) for k in KINDS}
        self.last = {k: list(v) for k, v in (doc.get("last") or {}).items() if isinstance(v, list)}
        self.recent = list(doc.get("recent") or [])
        self.seen_list = [str(k) for k in doc.get("seen") or []]
        self.cursors = doc.get("cursors") if isinstance(doc.get("cursors"), dict) else {}

    @property
    def status_path(self) -> Path:
        return self.paths.status_file(STATUS_NAME)

    def scan_once(self) -> list[dict]:
        """Read every source; record what is new. Returns the new (not merged) incidents."""
        seen = set(self.seen_list)
        before = set(seen)
        found = (from_anti_stuck(self.paths, seen) + from_failed(self.paths, seen) + from_watchdog(self.paths, seen)
                 + from_trainer_log(self.paths, seen, self.cursors.setdefault("trainer_log", {})))
        now_iso = utc_now_iso(self.clock)
        new = []
        for inc in found:
            seen.add(inc["key"])
            inc["detected_at"] = now_iso
            inc["at"] = inc["at"] or now_iso
            if self._merge(inc):
                continue
            inc.update(sources=[inc["source"]], advice=ADVICE.get(inc["kind"], ADVICE["other"]))
            kind = inc["kind"] if inc["kind"] in KINDS else "other"
            self.counts[kind] += 1
            self.last[kind] = ([inc] + self.last.get(kind, []))[:LAST_PER_KIND]
            self.recent = ([inc] + self.recent)[:RECENT]
            new.append(inc)
        self.seen_list += [k for k in seen if k not in before]
        self.seen_list = self.seen_list[-MAX_SEEN:]
        self.write_status("running")
        return new

    def _merge(self, inc: dict) -> bool:
        sig = signature(inc)
        if sig is None:
            return False
        t = _epoch(inc["at"])
        for old in self.recent:
            if (signature(old) == sig and inc["source"] not in old.get("sources", [])
                    and abs(_epoch(old.get("at")) - t) <= MERGE_WINDOW_S):
                old["sources"] = old.get("sources", []) + [inc["source"]]
                if inc["source"] == "failed":
                    old["subject"] = inc["subject"]  # the file name is the most useful subject
                for lst in self.last.values():
                    for o in lst:
                        if o.get("key") == old.get("key"):
                            o.update(sources=old["sources"], subject=old["subject"])
                return True
        return False

    def run(self, stop: threading.Event) -> None:
        """Scan every ``interval`` seconds until ``stop``; each new incident is logged too."""
        log.info("crash detector: scanning every %.1fs", self.interval)
        run_passes(stop, self.interval, self._scan_and_log, log, "crash scan")
        self.write_status("stopped")

    def _scan_and_log(self) -> None:
        for inc in self.scan_once():
            log.warning("crash [%s] %s: %s", inc["kind"], inc["subject"], str(inc["message"])[:300])

    def write_status(self, state: str) -> dict:
        seen_kinds = [k for k in KINDS if self.counts.get(k)]
        return write_status(self.status_path, {
            "state": state, "interval": self.interval, "total": sum(self.counts.values()), "counts": self.counts,
            "last": {k: self.last[k] for k in seen_kinds if k in self.last}, "recent": self.recent,
            "advice": {k: ADVICE[k] for k in seen_kinds}, "cursors": self.cursors, "seen": self.seen_list,
        }, daemon=True, clock=self.clock)
