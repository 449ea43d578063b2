"""Crash kinds and what to do about each (a fixed table).

Kinds: oom, nan_loss, data_error, disk_full, killed, hang, exception (a traceback of another kind),
other. A failed job's kind comes from the training daemon's own classifier (``reason`` in
``queue/failed/NAME.error.json``); for process exits and log tracebacks this module reads the text
(the exception line first), with the daemon's own markers (``foundation.failures.classify_text``).
"""
from __future__ import annotations

import re

from foundation.failures import classify_text

KINDS = ("oom", "nan_loss", "data_error", "disk_full", "killed", "hang", "exception", "other")

ADVICE = {
    "oom": "Out of memory. The daemon already retries a job with half the batch (daemon.oom_max_retries); "
           "lower training.per_device_batch_size or data.max_length, stop other GPU/RAM users, then "
           "`trainctl queue retry FILE`.",
    "nan_loss": "The loss became NaN/inf. Lower training.learning_rate (or raise warmup_steps), check the "
                "file for degenerate examples (`trainctl data validate FILE`), then `trainctl queue retry FILE`.",
    "data_error": "The file is not trainable: read the line numbers in queue/failed/FILE.error.json, fix the "
                  "file (`trainctl data validate FILE`) and drop it into inbox/ again.",
    "disk_full": "No space left on device. Free space (old checkpoints under models/checkpoints/, logs/, "
                 "backups/; `df -h`), then `trainctl queue retry FILE` / `trainctl watchdog reset NAME`.",
    "killed": "Killed by a signal. SIGKILL with no one asking is usually the kernel OOM killer "
              "(`dmesg | grep -i kill`): lower memory use. The daemon resumes a killed job from its last "
              "checkpoint (daemon.max_job_restarts); the watchdog restarts a killed process.",
    "hang": "No progress while alive. Read the stack dump named in the event (logs/stuck_*.txt): a "
            "deadlock, a stuck I/O or a step far slower than usual. The job resumes from its last "
            "checkpoint; if it hangs again at the same place, skip the file (`trainctl skip`).",
    "exception": "An unexpected exception: read the traceback (the event's traceback, the program's log), "
                 "fix the cause, then `trainctl queue retry FILE` or `trainctl watchdog reset NAME`.",
    "other": "Exited abnormally without a traceback: read the program's log (logs/NAME.out, "
             "logs/trainer_child.log) around the time given.",
}

_DATA = re.compile(r"^(\w+\.)*(DataError|RecordError|ValidationError|ValueError|JSONDecodeError|UnicodeDecodeError)\b")
_EXC_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)|[A-Za-z_][\w.]*\.\w+)(:|$)")
_SIGNAL_CODES = {137: "SIGKILL", 143: "SIGTERM", 134: "SIGABRT", 139: "SIGSEGV"}


def exception_line(lines: list[str]) -> str | None:
    """The last ``Type: message`` line after a traceback header, if any."""
    seen_tb, found = False, None
    for line in lines:
        if line.startswith("Traceback (most recent call last)"):
            seen_tb = True
        elif seen_tb and not line.startswith((" ", "\t")) and _EXC_LINE.match(line.strip()):
            found = line.strip()
    return found


def classify_traceback(exc_line: str, text: str = "") -> str:
    kind = classify_text(exc_line) or classify_text(text)
    if kind:
        return kind
    return "data_error" if _DATA.match(exc_line) else "exception"


def classify_exit(last_exit: dict, log_lines: list[str]) -> tuple[str, str]:
    """(kind, message) of a supervised program's exit as the watchdog recorded it."""
    reason = str(last_exit.get("reason") or "")
    if reason.startswith("hung"):
        return "hang", reason
    sig = last_exit.get("signal") or _SIGNAL_CODES.get(last_exit.get("code") or 0)
    exc = exception_line(log_lines)
    if exc:
        return classify_traceback(exc, "\n".join(log_lines)), f"{reason}: {exc}"
    if sig:
        return "killed", reason
    return classify_text("\n".join(log_lines[-5:])) or "other", reason
