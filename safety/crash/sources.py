"""Where crashes are seen. Each scan returns incidents it has not reported before (``seen`` keys):

  failed      queue/failed/NAME.error.json (the daemon's classified reason; ``skipped`` is no crash)
  watchdog    status/watchdog.json: each program's ``last_exit`` (a clean exit or a requested stop is none)
  stuck       status/anti_stuck.json events (hangs the anti-stuck monitor killed)
  trainer_log logs/trainer_child.log: Python tracebacks, read from the last offset on
"""
from __future__ import annotations

from typing import Any

from foundation.atomic_io import read_json
from foundation.paths import Paths
from foundation.status_io import read_status
from safety.crash.classify import classify_exit, classify_traceback, exception_line

MAX_LOG_READ = 4 * 1024 * 1024
TB_HEAD = "Traceback (most recent call last):"
CHAIN = ("During handling of the above exception", "The above exception was the direct cause")


def incident(key: str, kind: str, source: str, at: str | None, subject: str, message: str,
             traceback: str | None = None) -> dict[str, Any]:
    return {"key": key, "kind": kind, "source": source, "at": at, "subject": subject,
            "message": message[:2000], "traceback": traceback[-3000:] if traceback else None}


def from_failed(paths: Paths, seen: set[str]) -> list[dict]:
    out = []
    for p in sorted(paths.failed.glob("*.error.json")):
        try:
            key = f"failed:{p.name}:{p.stat().st_mtime_ns}"
        except FileNotFoundError:
            continue
        if key in seen:
            continue
        doc = read_json(p)
        if not isinstance(doc, dict):
            continue
        kind = str(doc.get("reason") or doc.get("kind") or "other")
        if kind == "skipped":  # a person asked for it
            seen.add(key)
            continue
        tb = doc.get("traceback")
        if kind == "other" and tb:
            kind = "exception"
        msg = str(doc.get("message") or kind)
        out.append(incident(key, kind, "failed", doc.get("failed_at"), f"queue/failed/{doc.get('file') or p.name}",
                            msg, tb))
    return out


def from_watchdog(paths: Paths, seen: set[str]) -> list[dict]:
    doc = read_status(paths.status_file("watchdog")) or {}
    out = []
    for name, p in (doc.get("programs") or {}).items():
        ex = p.get("last_exit") if isinstance(p, dict) else None
        if not isinstance(ex, dict) or not ex.get("at"):
            continue
        key = f"watchdog:{name}:{ex['at']}"
        if key in seen:
            continue
        requested = p.get("state") in ("STOPPED", "EXITED") and (ex.get("code") == 0 or ex.get("signal") == "SIGTERM")
        if ex.get("code") == 0 or requested:
            seen.add(key)
            continue
        lines = [str(x) for x in p.get("last_log_lines") or []]
        kind, msg = classify_exit(ex, lines)
        tb = "\n".join(lines) if any(TB_HEAD in x for x in lines) else None
        out.append(incident(key, kind, "watchdog", ex["at"], f"program {name} (restarts {p.get('restarts', 0)}, "
                            f"now {p.get('state')})", msg, tb))
    return out


def from_anti_stuck(paths: Paths, seen: set[str]) -> list[dict]:
    doc = read_status(paths.status_file("anti_stuck")) or {}
    out = []
    for e in doc.get("events") or []:
        key = f"stuck:{e.get('at')}:{e.get('pid')}"
        if key in seen:
            continue
        msg = f"{e.get('detail')}; stacks: {e.get('stacks_file')}; killed {e.get('killed')}"
        out.append(incident(key, "hang", "stuck", e.get("at"), f"{e.get('target')} pid {e.get('pid')}", msg))
    return out


def tracebacks(text: str) -> tuple[list[tuple[int, str, str]], int]:
    """Complete tracebacks in ``text``: [(char offset, exception line, block)], and the offset up to
    which everything was consumed (a traceback cut at the end is read again next time)."""
    lines = text.splitlines(keepends=True)
    found, pos, consumed, i = [], 0, 0, 0
    starts = []
    for line in lines:
        starts.append(pos)
        pos += len(line)
    consumed = pos if not text or text.endswith("\n") else starts[-1]
    while i < len(lines):
        if not lines[i].startswith(TB_HEAD):
            i += 1
            continue
        begin, j, exc_at = i, i + 1, None
        while j < len(lines):
            s = lines[j].rstrip("\n")
            if s.startswith((" ", "\t")) or s.startswith(TB_HEAD):
                j += 1
                continue
            if not s or s.startswith(CHAIN):  # a chained exception follows
                j += 1
                continue
            exc_at = j
            # chained: blank line, "During handling ...", blank line, another traceback
            k = j + 1
            while k < len(lines) and not lines[k].strip():
                k += 1
            if k < len(lines) and lines[k].startswith(CHAIN):
                j, exc_at = k, None  # the chain's last exception line ends the block
                continue
            break
        if exc_at is None or exc_at == len(lines) - 1 and not text.endswith("\n"):
            consumed = min(consumed, starts[begin])
            break
        block = "".join(lines[begin:exc_at + 1])
        found.append((starts[begin], exception_line(block.splitlines()) or lines[exc_at].strip(), block))
        i = exc_at + 1
    return found, consumed


def from_trainer_log(paths: Paths, seen: set[str], cursor: dict) -> list[dict]:
    """``cursor`` ({inode, offset}) is updated in place."""
    log = paths.logs / "trainer_child.log"
    try:
        st = log.stat()
    except FileNotFoundError:
        return []
    if cursor.get("inode") != st.st_ino or int(cursor.get("offset") or 0) > st.st_size:
        cursor.update(inode=st.st_ino, offset=0)  # rotated or new
    start = int(cursor["offset"])
    with open(log, "rb") as f:
        f.seek(start)
        data = f.read(MAX_LOG_READ)
    text = data.decode("utf-8", "replace")
    found, consumed = tracebacks(text)
    cursor["offset"] = start + len(text[:consumed].encode("utf-8"))
    out = []
    for off, exc, block in found:
        key = f"log:{st.st_ino}:{start + len(text[:off].encode('utf-8'))}"
        if key in seen:
            continue
        out.append(incident(key, classify_traceback(exc, block), "trainer_log", None, "logs/trainer_child.log",
                            exc, block))
    return out

