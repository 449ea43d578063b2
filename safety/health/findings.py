"""A health finding and the report built from them. Exit codes: 0 healthy, 1 degraded, 2 broken."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

OK, DEGRADED, BROKEN = "ok", "degraded", "broken"
EXIT_CODES = {OK: 0, DEGRADED: 1, BROKEN: 2}
OVERALL = {0: "healthy", 1: "degraded", 2: "broken"}
SCHEMA_VERSION = 1


@dataclass
class Finding:
    check: str
    """Stable id of the check, e.g. ``process.training_daemon``, ``status_file.watchdog``."""
    level: str
    """ok | degraded | broken."""
    message: str
    """What was seen."""
    action: str = ""
    """What to do about it (empty when ok)."""
    details: dict[str, Any] = field(default_factory=dict)


def exit_code(findings: list[Finding]) -> int:
    return max((EXIT_CODES[f.level] for f in findings), default=0)


def report(findings: list[Finding], base_dir: str, checked_at: str) -> dict[str, Any]:
    code = exit_code(findings)
    return {"schema_version": SCHEMA_VERSION, "checked_at": checked_at, "base_dir": base_dir,
            "status": OVERALL[code], "exit_code": code,
            "counts": {lvl: sum(f.level == lvl for f in findings) for lvl in EXIT_CODES},
            "findings": [asdict(f) for f in findings]}


def render_text(doc: dict[str, Any], verbose: bool = False) -> str:
    marks = {OK: "ok ", DEGRADED: "WARN", BROKEN: "FAIL"}
    lines = [f"health: {doc['status'].upper()} ({doc['counts'][BROKEN]} broken, {doc['counts'][DEGRADED]} degraded, "
             f"{doc['counts'][OK]} ok) - {doc['base_dir']}"]
    for f in doc["findings"]:
        if f["level"] == OK and not verbose:
            continue
        lines.append(f"  [{marks[f['level']]}] {f['check']}: {f['message']}")
        if f["action"]:
            lines.append(f"         -> {f['action']}")
    if not verbose and doc["counts"][OK]:
        lines.append(f"  ({doc['counts'][OK]} checks ok; --verbose lists them)")
    return "\n".join(lines)
