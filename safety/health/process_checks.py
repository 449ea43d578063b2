"""Checks that read only files: every expected process alive with a fresh heartbeat, the watchdog,
status files that parse, and no file stuck in ``queue/processing/`` without a live job.

Which processes are expected: those the watchdog supervises (its status/watchdog.json), else the
whole default program table. A process is seen through its own PID file and the ``pid`` +
``heartbeat_at`` of its status file (never through a lock: a health check must not take one).
"""
from __future__ import annotations

import json
from typing import Any

from foundation.paths import Paths
from foundation.single_instance import pid_alive, read_pid
from foundation.status_io import parse_iso
from safety.health.findings import BROKEN, DEGRADED, OK, Finding
from safety.supervision.programs import TRAINING, ProgramSpec, default_programs
from safety.supervision.watchdog import INSTANCE_NAME, STATUS_NAME

JOB_STATES = ("starting", "training", "paused", "stopping")


def load_status_files(paths: Paths) -> tuple[dict[str, dict], list[Finding]]:
    """Every status/*.json parsed (by stem), and a finding for each."""
    docs: dict[str, dict] = {}
    findings: list[Finding] = []
    for path in sorted(paths.status.glob("*.json")):
        check = f"status_file.{path.stem}"
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            findings.append(Finding(check, BROKEN, f"status/{path.name} does not parse ({e})",
                                    f"move it aside (mv status/{path.name} status/{path.name}.bad); its writer "
                                    "rewrites it at its next heartbeat. Status files are written atomically, so "
                                    "something outside the system damaged it: check the disk (dmesg, df)."))
            continue
        if not isinstance(doc, dict):
            findings.append(Finding(check, BROKEN, f"status/{path.name} is not a JSON object",
                                    f"move it aside (mv status/{path.name} status/{path.name}.bad)"))
            continue
        docs[path.stem] = doc
        missing = [k for k in ("schema_version", "updated_at") if k not in doc]
        if missing:
            findings.append(Finding(check, DEGRADED, f"status/{path.name} lacks {', '.join(missing)}",
                                    "written by an old or foreign tool; restart its writer to rewrite it"))
        else:
            findings.append(Finding(check, OK, f"status/{path.name} parses (updated {doc['updated_at']})"))
    return docs, findings


def _age(iso: Any, now: float) -> float | None:
    try:
        return now - parse_iso(iso).timestamp() if isinstance(iso, str) else None
    except ValueError:
        return None


def expected_programs(docs: dict[str, dict]) -> list[ProgramSpec]:
    table = default_programs()
    supervised = (docs.get(STATUS_NAME) or {}).get("programs")
    if isinstance(supervised, dict) and supervised:
        return [p for p in table if p.name in supervised]
    return table


def check_watchdog(paths: Paths, docs: dict[str, dict], stale_after: float, now: float) -> list[Finding]:
    pid = read_pid(paths.pids / f"{INSTANCE_NAME}.pid")
    doc = docs.get(STATUS_NAME) or {}
    if not pid_alive(pid):
        return [Finding("process.watchdog", DEGRADED, "the watchdog is not running: nothing restarts a process "
                        "that dies", "start it: scripts/start_all.sh (or systemctl --user start "
                        "trainer-watchdog, see QUICKSTART.md)")]
    age = _age(doc.get("heartbeat_at"), now) if doc.get("pid") == pid else None
    if age is None or age > stale_after:
        seen = "no heartbeat" if age is None else f"heartbeat {age:.0f}s old"
        return [Finding("process.watchdog", DEGRADED, f"watchdog pid {pid} is alive but {seen} in status/watchdog.json",
                        f"it may be hung: look at logs/watchdog.out; restart it: kill {pid}; scripts/start_all.sh")]
    return [Finding("process.watchdog", OK, f"watchdog pid {pid}, heartbeat {age:.0f}s ago")]


def check_processes(paths: Paths, docs: dict[str, dict], stale_after: float, now: float) -> list[Finding]:
    findings = check_watchdog(paths, docs, stale_after, now)
    supervised = (docs.get(STATUS_NAME) or {}).get("programs") or {}
    for spec in expected_programs(docs):
        check = f"process.{spec.name}"
        down = BROKEN if spec.group == TRAINING else DEGRADED
        wd = supervised.get(spec.name) or {}
        if wd.get("state") == "FATAL":
            tail = (wd.get("last_log_lines") or [])[-3:]
            findings.append(Finding(check, BROKEN, f"{spec.name} is FATAL in the watchdog: {wd.get('fatal_reason')}",
                                    f"read logs/{spec.name}.out (last: {' | '.join(tail) or 'empty'}), fix the "
                                    f"cause, then: trainctl watchdog reset {spec.name}", {"watchdog": wd.get("state")}))
            continue
        if wd.get("state") == "EXITED":
            findings.append(Finding(check, down, f"{spec.name} was stopped by request (exit code 0); the watchdog "
                                    "keeps it down", f"to start it again: trainctl watchdog reset {spec.name}"))
            continue
        pid = read_pid(paths.pids / spec.pid_file) if spec.pid_file else None
        doc = docs.get(spec.status_file or "", {})
        if not pid_alive(pid):
            restart = ("the watchdog restarts it (trainctl watchdog status)" if wd else
                       "start it: scripts/start_all.sh")
            findings.append(Finding(check, down, f"{spec.name} is not running (pid file .pids/{spec.pid_file}: "
                                    f"{pid or 'none'})", f"{restart}; its output: logs/{spec.name}.out"))
            continue
        key = spec.heartbeat_key if spec.heartbeat_key in doc else "heartbeat_at"
        age = _age(doc.get(key), now) if doc.get("pid") == pid else None
        if age is None or age > stale_after:
            seen = (f"no heartbeat from it in status/{spec.status_file}.json" if age is None
                    else f"its heartbeat in status/{spec.status_file}.json is {age:.0f}s old (limit {stale_after:.0f}s)")
            findings.append(Finding(check, DEGRADED, f"{spec.name} pid {pid} is alive but {seen}",
                                    f"it may be hung or just starting: look at logs/{spec.name}.out; the watchdog "
                                    f"restarts it after {spec.heartbeat_timeout:.0f}s without a heartbeat",
                                    {"pid": pid, "heartbeat_age_s": age}))
            continue
        findings.append(Finding(check, OK, f"{spec.name} pid {pid}, heartbeat {age:.0f}s ago",
                                details={"pid": pid, "heartbeat_age_s": round(age, 1)}))
    known = {p.name for p in default_programs()}
    for name, wd in supervised.items():  # rows of a custom table (--programs): what the watchdog says
        if name in known or not isinstance(wd, dict):
            continue
        state, pid = wd.get("state"), wd.get("pid")
        if state == "FATAL":
            findings.append(Finding(f"process.{name}", BROKEN, f"{name} is FATAL in the watchdog: "
                                    f"{wd.get('fatal_reason')}", f"read logs/{name}.out, fix the cause, then: "
                                    f"trainctl watchdog reset {name}"))
        elif state in ("STARTING", "RUNNING") and pid_alive(pid):
            findings.append(Finding(f"process.{name}", OK, f"{name} pid {pid} ({state} in the watchdog)"))
        else:
            findings.append(Finding(f"process.{name}", DEGRADED, f"{name} is {state} in the watchdog "
                                    f"(last exit: {(wd.get('last_exit') or {}).get('reason')})",
                                    "trainctl watchdog status; its output: " + f"logs/{name}.out"))
    return findings


def check_processing_queue(paths: Paths, docs: dict[str, dict]) -> list[Finding]:
    try:
        stuck = sorted(p.name for p in paths.processing.iterdir()
                       if not p.name.startswith(".") and not p.name.endswith((".error.json", ".result.json")))
    except FileNotFoundError:
        stuck = []
    if not stuck:
        return [Finding("queue.processing", OK, "nothing in queue/processing/")]
    st = docs.get("training_status") or {}
    pid = read_pid(paths.pids / "training_daemon.pid")
    if pid_alive(pid) and st.get("pid") == pid and st.get("state") in JOB_STATES:
        return [Finding("queue.processing", OK, f"{len(stuck)} file(s) in queue/processing/, trained by pid {pid} "
                        f"(state {st.get('state')})", details={"files": stuck})]
    why = "no training daemon is running" if not pid_alive(pid) else \
        f"the training daemon (pid {pid}) is not training (state {st.get('state')})"
    return [Finding("queue.processing", DEGRADED, f"{len(stuck)} file(s) stuck in queue/processing/ ({', '.join(stuck[:5])}): "
                    f"{why}", "start (or restart) the training daemon: on start it puts them back at the head of "
                    "their queue and resumes from the last checkpoint (scripts/start_all.sh --training-only)",
                    {"files": stuck})]
