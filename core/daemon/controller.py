#!/usr/bin/env python3
"""Control the training daemon with flag files in ``control/`` (see ``core.daemon.control_flags``).

    python3 core/training_controller.py pause  [--reason R] [--wait S] [--json]
    python3 core/training_controller.py resume [--reason R] [--wait S] [--json]
    python3 core/training_controller.py stop   [--reason R] [--wait S] [--json]
    python3 core/training_controller.py skip   [--reason R] [--wait S] [--json]
    python3 core/training_controller.py status [--json]
    trainctl pause|resume|stop|skip|status ...      # the same commands

Flags are honoured at the next optimizer-step boundary: pause writes a checkpoint first, stop
checkpoints, requeues the file and makes the daemon exit 0, skip moves the current file to
``queue/failed/`` with reason ``skipped``. ``--wait`` blocks until the status file shows the
effect (exit 1 on timeout).
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import click

from core.daemon.context import LOCK_NAME, STATUS_NAME
from core.daemon.control_flags import clear_flag, write_flag
from foundation.paths import Paths
from foundation.single_instance import pid_alive, running_pid
from foundation.status_io import parse_iso, read_status


def _paths(base_dir: str | None) -> Paths:
    return Paths.from_base(base_dir)


def _status(paths: Paths) -> dict:
    return read_status(paths.status_file(STATUS_NAME)) or {}


def _emit(as_json: bool, doc: dict, text: str) -> None:
    click.echo(json.dumps(doc, indent=2, default=str) if as_json else text)


def _wait_for(pred: Callable[[dict, int | None], bool], paths: Paths, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred(_status(paths), running_pid(paths.pids, LOCK_NAME)):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _common(f):
    f = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")(f)
    f = click.option("--base-dir", default=None, help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")(f)
    return f


def _flag_command(name: str, help_text: str, wait_pred, wait_desc: str):
    @click.command(name, help=help_text, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--reason", default="", help="Why (kept in the flag file, the status and the logs).")
    @click.option("--wait", "wait_s", type=float, default=0.0,
                  help=f"Seconds to wait until {wait_desc} (0: do not wait).")
    @_common
    def cmd(reason: str, wait_s: float, base_dir: str | None, as_json: bool) -> None:
        paths = _paths(base_dir)
        paths.control.mkdir(parents=True, exist_ok=True)
        before = _status(paths)
        if name == "pause":
            clear_flag(paths, "resume")
        doc = write_flag(paths, name, reason)
        if name == "resume":
            clear_flag(paths, "pause")  # resuming also works while the daemon is down
        pid = running_pid(paths.pids, LOCK_NAME)
        out = {"flag": name, "path": str(paths.control / f".{name}"), "reason": reason,
               "created_at": doc["created_at"], "daemon_running": pid is not None, "daemon_pid": pid}
        note = "" if pid else ("  (the training daemon is not running; " +
                               ("the flag applies when it starts)" if name in ("pause", "resume")
                                else "a stale flag is ignored when it starts)"))
        ok = True
        if wait_s > 0 and pid:
            ok = _wait_for(lambda st, p: wait_pred(st, p, before), paths, wait_s)
            out["confirmed"] = ok
        _emit(as_json, out, f"{name} requested" + (f" ({reason})" if reason else "") + note
              + ("" if ok else f"\nerror: not confirmed within {wait_s:.0f}s"))
        if not ok:
            sys.exit(1)
    return cmd


pause_command = _flag_command(
    "pause", "Pause training at the next optimizer step (after a checkpoint).",
    lambda st, pid, before: st.get("state") == "paused" and (st.get("status") == "paused" or not st.get("current_file")),
    "the status shows paused")
resume_command = _flag_command(
    "resume", "Resume paused training.",
    lambda st, pid, before: st.get("state") in ("training", "idle") and not st.get("paused"),
    "the status shows training/idle")
stop_command = _flag_command(
    "stop", "Checkpoint at the next step, put the file back at the head of its queue, stop the daemon.",
    lambda st, pid, before: pid is None,
    "the daemon has exited")
skip_command = _flag_command(
    "skip", "Abandon the current file: it moves to queue/failed/ with reason 'skipped'.",
    lambda st, pid, before: st.get("job_id") != before.get("job_id") or not st.get("current_file"),
    "the current file has left processing")


def _age(ts: str | None) -> str:
    if not ts:
        return "never"
    try:
        s = (datetime.now(timezone.utc) - parse_iso(ts)).total_seconds()
    except ValueError:
        return ts
    return f"{s:.0f}s ago"


def _eta(sec) -> str:
    if sec is None:
        return "-"
    sec = int(sec)
    return f"{sec // 3600}h{sec % 3600 // 60:02d}m" if sec >= 3600 else f"{sec // 60}m{sec % 60:02d}s"


STALE_AFTER_S = 60.0  # a status heartbeat older than this is marked STALE (as the health check does)


def gap_verdict(gap: float | None) -> str | None:
    """The seed's thresholds on validation - train loss: < 0.3 generalising, 0.3-0.5 watch, > 0.5 overfitting."""
    if gap is None:
        return None
    return "generalising" if gap < 0.3 else ("watch" if gap <= 0.5 else "overfitting")


def heartbeats(paths: Paths) -> dict[str, dict]:
    """Per process, from every status file with a heartbeat: pid, age, alive, stale."""
    out = {}
    now = time.time()
    for f in sorted(paths.status.glob("*.json")):
        doc = read_status(f) or {}
        key = "daemon_heartbeat_at" if "daemon_heartbeat_at" in doc else "heartbeat_at"
        try:
            age = now - parse_iso(doc[key]).timestamp()
        except (KeyError, TypeError, ValueError):
            continue
        alive = pid_alive(doc.get("pid"))
        out[f.stem] = {"pid": doc.get("pid"), "age_s": round(age, 1), "alive": alive,
                       "stale": age > STALE_AFTER_S or not alive}
    return out


def summary(paths: Paths) -> dict:
    st = _status(paths)
    pid = running_pid(paths.pids, LOCK_NAME)
    doc = dict(st)
    doc["daemon_running"] = pid is not None
    doc["daemon_pid"] = pid
    if pid is None:
        doc["state"] = "stopped"
    gap = st.get("val_train_gap")
    if gap is None and isinstance(st.get("validation_loss"), (int, float)) and isinstance(st.get("loss"), (int, float)):
        gap = round(st["validation_loss"] - st["loss"], 6)
    doc["val_train_gap"], doc["gap_verdict"] = gap, gap_verdict(gap)
    doc["heartbeats"] = heartbeats(paths)
    return doc


@click.command("status", context_settings={"help_option_names": ["-h", "--help"]})
@_common
def status_command(base_dir: str | None, as_json: bool) -> None:
    """Training status: state, file, step, loss, ETA, queue."""
    paths = _paths(base_dir)
    doc = summary(paths)
    if as_json:
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    q = doc.get("queue") or {}
    lines = [f"daemon:   {'running (pid %s)' % doc['daemon_pid'] if doc['daemon_running'] else 'not running'}"
             f", state {doc.get('state', 'unknown')}, heartbeat {_age(doc.get('heartbeat_at'))}"]
    if doc.get("paused"):
        lines.append(f"paused:   {doc.get('pause_reason') or 'no reason given'}")
    if doc.get("current_file") and doc["daemon_running"]:
        lines.append(f"file:     {doc['current_file']} (priority {doc.get('priority')}, job {doc.get('job_id')})")
        lines.append(f"step:     global {doc.get('current_step')}, in file {doc.get('step_in_file')}/"
                     f"{doc.get('file_total_steps')}, epoch {doc.get('epoch')}")
        loss = doc.get("loss")
        lines.append(f"loss:     {loss if loss is not None else '-'} (validation {doc.get('validation_loss')}), "
                     f"lr {doc.get('learning_rate')}, {doc.get('tokens_per_sec')} tok/s, "
                     f"ETA {_eta(doc.get('eta_seconds'))}")
    else:
        lines.append(f"file:     - (lineage at global step {doc.get('lineage_global_step', 0)})")
    lines.append("queue:    " + ", ".join(f"{k} {q.get(k, 0)}" for k in
                                          ("high", "normal", "low", "processing", "failed", "recently_completed")))
    if doc.get("val_train_gap") is not None:
        lines.append(f"gap:      validation - train = {doc['val_train_gap']:.3f}: {doc['gap_verdict']} "
                     "(< 0.3 generalising, 0.3-0.5 watch, > 0.5 overfitting)")
    for name, hb in (doc.get("heartbeats") or {}).items():
        mark = "  STALE" if hb["stale"] else ""
        lines.append(f"beat:     {name:<22} pid {hb['pid']} {'alive' if hb['alive'] else 'not running'}, "
                     f"heartbeat {hb['age_s']:.0f}s ago{mark}")
    if doc.get("last_completed"):
        lc = doc["last_completed"]
        lines.append(f"last ok:  {lc.get('file')} at global step {lc.get('global_step')} ({lc.get('at')})")
    if doc.get("last_error"):
        le = doc["last_error"]
        lines.append(f"last err: {le.get('reason')}: {le.get('message')} ({le.get('at')})")
    click.echo("\n".join(lines))


@click.group("training_controller", context_settings={"help_option_names": ["-h", "--help"]})
def controller_cli() -> None:
    """pause | resume | stop | skip | status."""


for _c in (pause_command, resume_command, stop_command, skip_command, status_command):
    controller_cli.add_command(_c)

