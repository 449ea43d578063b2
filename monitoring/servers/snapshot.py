"""One JSON snapshot of the whole system for the live monitor, built only from files: ``status/*.json``,
the queue folders, ``control/`` flags, the model_db (read-only) and the system's counters.

Every panel is built on its own: a missing, malformed or surprising file makes *that* panel
``{"unknown": true, "reason": ...}`` and never breaks the others or the page. Panels:
``training``, ``processes``, ``watchdog``, ``queue``, ``system`` (here) and ``checkpoints``,
``regressions``, ``calibration``, ``deployment``, ``curriculum``, ``adversarial``,
``self_correction`` (``monitoring/servers/eval_panels.py``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

from foundation.atomic_io import read_json
from foundation.paths import PRIORITIES, Paths
from foundation.single_instance import pid_alive, running_pid
from foundation.status_io import utc_now_iso
from monitoring.servers import eval_panels
from monitoring.servers.sources import Sources, unknown

TRAINING_STATUS = "training_status"
TRAINING_LOCK = "training_daemon"  # the daemon's single-instance name (.pids/training_daemon.lock)
CONTROL_FLAGS = ("pause", "resume", "stop", "skip")
MAX_LISTED = 50  # files listed per queue folder (the counts are always exact)
TRAINING_KEYS = ("state", "status", "current_file", "priority", "job_id", "current_step", "total_steps",
                 "step_in_file", "file_total_steps", "epoch", "loss", "learning_rate", "validation_loss",
                 "val_train_gap", "tokens_per_sec", "eta_seconds", "started_at", "paused", "pause_reason",
                 "last_error", "last_completed", "lineage_global_step", "heartbeat_at")


def training_panel(src: Sources) -> dict:
    st = src.status(TRAINING_STATUS)
    if st is None:
        return unknown("status/training_status.json is missing or not valid JSON")
    out = {k: st.get(k) for k in TRAINING_KEYS}
    pid = running_pid(src.paths.pids, TRAINING_LOCK)
    out["daemon_running"] = pid is not None
    out["daemon_pid"] = pid
    # The file has two writers; the daemon's own beat is daemon_heartbeat_at where it writes one.
    out["heartbeat_age_s"] = src.age(st.get("daemon_heartbeat_at") or st.get("heartbeat_at"))
    if pid is None:
        # Same rule as `trainctl status`: no lock holder means no daemon, whatever the file last said.
        out["last_state"], out["state"] = out.get("state"), "stopped"
    out["control_flags"] = [f for f in CONTROL_FLAGS if (src.paths.control / f".{f}").exists()]
    return out


def processes_panel(src: Sources) -> dict:
    """Every status file that carries a heartbeat: its state, pid (alive?) and heartbeat age."""
    rows = []
    try:
        names = sorted(p.stem for p in src.paths.status.glob("*.json"))
    except OSError as e:
        return unknown(f"cannot list status/: {e}")
    for name in names:
        doc = src.status(name)
        if doc is None:
            rows.append({"name": name, "state": "unknown", "reason": "not valid JSON"})
            continue
        if "heartbeat_at" not in doc:
            continue
        pid = doc.get("pid")
        rows.append({"name": name, "state": doc.get("state", doc.get("status")),
                     "pid": pid if isinstance(pid, int) else None,
                     "alive": pid_alive(pid) if isinstance(pid, int) else None,
                     "heartbeat_at": doc.get("heartbeat_at"), "heartbeat_age_s": src.age(doc.get("heartbeat_at"))})
    return {"processes": rows}


def watchdog_panel(src: Sources) -> dict:
    doc = src.status("watchdog")
    if doc is None:
        return unknown("status/watchdog.json is missing or not valid JSON")
    progs = doc.get("programs") if isinstance(doc.get("programs"), dict) else {}
    rows = []
    for name, p in sorted(progs.items()):
        p = p if isinstance(p, dict) else {}
        last_exit = p.get("last_exit") if isinstance(p.get("last_exit"), dict) else {}
        rows.append({"name": name, "state": p.get("state"), "pid": p.get("pid"), "healthy": p.get("healthy"),
                     "restarts": p.get("restarts"), "last_exit": last_exit.get("reason"),
                     "fatal_reason": p.get("fatal_reason")})
    return {"state": doc.get("state"), "pid": doc.get("pid"),
            "heartbeat_age_s": src.age(doc.get("heartbeat_at")), "programs": rows}


def _folder_files(folder: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as it:
            return [e for e in it if not e.name.startswith(".") and not e.name.endswith(".json")]
    except OSError:
        return []


def queue_panel(src: Sources) -> dict:
    """Waiting files per priority (claim order), the one in training, failed ones with their reason."""
    q = src.paths.queue
    jobs = q / ".jobs"
    out: dict[str, Any] = {"folders": {}, "counts": {}}
    for folder in ("processing", *PRIORITIES):
        items = []
        for e in _folder_files(q / folder):
            rec = read_json(jobs / f"{e.name}.job.json")
            rec = rec if isinstance(rec, dict) else {}
            try:
                st = e.stat()
            except OSError:
                continue
            items.append({"name": e.name, "size": st.st_size,
                          "seq": rec.get("seq") if isinstance(rec.get("seq"), int) else st.st_mtime_ns,
                          "enqueued_at": rec.get("enqueued_at"),
                          "state": "training" if folder == "processing" else
                          ("resumes" if rec.get("started") else "waiting")})
        items.sort(key=lambda d: (d["seq"], d["name"]))
        out["counts"][folder] = len(items)
        out["folders"][folder] = [{k: v for k, v in d.items() if k != "seq"} for d in items[:MAX_LISTED]]
    failed_dir = q / "failed"
    errors: dict[str, dict] = {}
    try:
        sidecars = sorted(failed_dir.glob("*.error.json"))
    except OSError:
        sidecars = []
    for p in sidecars:
        doc = read_json(p)
        if isinstance(doc, dict) and isinstance(doc.get("file"), str):
            errors[doc["file"]] = doc
    failed = []
    for e in _folder_files(failed_dir):
        doc = errors.get(e.name, {})
        failed.append({"name": e.name, "reason": doc.get("reason", "unknown"), "message": doc.get("message"),
                       "failed_at": doc.get("failed_at"), "priority": doc.get("priority")})
    failed.sort(key=lambda d: str(d.get("failed_at") or ""), reverse=True)
    out["counts"]["failed"] = len(failed)
    out["failed"] = failed[:MAX_LISTED]
    done = _folder_files(q / "recently_completed")
    out["counts"]["recently_completed"] = len(done)
    return out


def system_panel(src: Sources) -> dict:
    from monitoring.servers.memory_stats_api import system_stats
    return system_stats(src.paths.base)


def build_snapshot(paths: Paths, extra_panels: dict[str, Callable[[Sources], dict]] | None = None,
                   now: Callable[[], float] = time.time) -> dict:
    """``{generated_at, base_dir, panels: {name: panel}}``; a panel that raises becomes unknown."""
    src = Sources(paths, now)
    builders: dict[str, Callable[[Sources], dict]] = {
        "training": training_panel, "processes": processes_panel, "watchdog": watchdog_panel,
        "queue": queue_panel, "system": system_panel, **eval_panels.PANELS, **(extra_panels or {})}
    panels = {}
    for name, fn in builders.items():
        try:
            panels[name] = fn(src)
        except Exception as e:  # one broken source must never take the page down
            panels[name] = unknown(f"{type(e).__name__}: {e}")
    return {"generated_at": utc_now_iso(), "time": src.now, "base_dir": str(paths.base), "panels": panels}

