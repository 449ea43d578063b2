"""The live monitor's actions, each run as the very command a person types in a shell:

    pause | resume | stop | skip   python core/training_controller.py ACTION --base-dir B --reason R --json
    set_priority NAME PRIORITY     python core/training_queue.py set-priority NAME PRIORITY --base-dir B --json
    retry NAME [PRIORITY]          python core/training_queue.py retry NAME [--priority P] --base-dir B --json
    deploy                         python monitoring/deployment_orchestrator.py once --base-dir B
    rollback [VERSION]             python monitoring/deployment_orchestrator.py rollback --base-dir B [--to V]

Why subprocesses: the monitor may not import the daemon (``core/``) or the deployment sidecar, and
going through the shell's commands means there is one implementation of every action (control
flag files, queue moves, deployment) and the monitor can never drift from it.

Only with the admin key (``Authorization: Bearer <key>``): the inference admin key
(``inference.admin_api_key`` / ``_file`` / ``$INFERENCE_ADMIN_KEY``, ``trainer.config.keys``).
With no admin key configured, actions are refused (403): a dashboard reachable by a browser must
not let any page that can reach 127.0.0.1 drive training.
"""
from __future__ import annotations

import hmac
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from foundation.paths import PRIORITIES, REPO_ROOT

FLAG_ACTIONS = ("pause", "resume", "stop", "skip")
ACTIONS = (*FLAG_ACTIONS, "set_priority", "retry", "deploy", "rollback")
TIMEOUTS = {"deploy": 300.0, "rollback": 300.0}  # a deployment waits for the server's reload
DEFAULT_TIMEOUT = 60.0
_MAX_OUTPUT = 4000


class ActionError(ValueError):
    """A request the monitor refuses before running anything (HTTP status in ``status``)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def check_admin(authorization: str | None, admin_key: str) -> None:
    """Raise ActionError 403 when no admin key is configured, 401 when the header is missing or wrong."""
    if not admin_key:
        raise ActionError(403, "actions are disabled: no admin key is configured "
                               "(inference.admin_api_key, inference.admin_api_key_file or $INFERENCE_ADMIN_KEY)")
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), admin_key.encode()):
        raise ActionError(401, "admin key required (Authorization: Bearer <admin key>)")


def _bare_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or "/" in value or "\\" in value or value.startswith(".") \
            or "\0" in value or len(value) > 255:
        raise ActionError(400, f"{what} must be a bare file name, got {value!r}")
    return value


def _priority(value: Any) -> str:
    if value not in PRIORITIES:
        raise ActionError(400, f"priority must be one of {', '.join(PRIORITIES)}, got {value!r}")
    return value


@dataclass(frozen=True)
class Command:
    action: str
    argv: list[str]
    timeout: float


def build_command(action: str, params: dict[str, Any], base_dir: Path, python: str = sys.executable) -> Command:
    """The argv of ``action`` (validated ``params``; nothing from the request reaches a shell)."""
    base = ["--base-dir", str(base_dir)]
    repo = REPO_ROOT
    if action in FLAG_ACTIONS:
        reason = str(params.get("reason") or "from the live monitor")[:200]
        argv = [python, str(repo / "core/training_controller.py"), action, *base, "--reason", reason, "--json"]
    elif action == "set_priority":
        argv = [python, str(repo / "core/training_queue.py"), "set-priority", _bare_name(params.get("name"), "name"),
                _priority(params.get("priority")), *base, "--json"]
    elif action == "retry":
        argv = [python, str(repo / "core/training_queue.py"), "retry", _bare_name(params.get("name"), "name"),
                *base, "--json"]
        if params.get("priority"):
            argv[-1:-1] = ["--priority", _priority(params["priority"])]
    elif action == "deploy":
        argv = [python, str(repo / "monitoring/deployment_orchestrator.py"), "once", *base]
    elif action == "rollback":
        argv = [python, str(repo / "monitoring/deployment_orchestrator.py"), "rollback", *base]
        if params.get("version"):
            argv += ["--to", _bare_name(params["version"], "version")]
    else:
        raise ActionError(404, f"unknown action {action!r}; known: {', '.join(ACTIONS)}")
    return Command(action, argv, TIMEOUTS.get(action, DEFAULT_TIMEOUT))


def run_command(cmd: Command) -> dict[str, Any]:
    """Run it; ``{ok, returncode, stdout, stderr, command}`` (outputs cut to their last 4000 chars)."""
    shown = [Path(a).name if i == 0 else a for i, a in enumerate(cmd.argv)]
    try:
        proc = subprocess.run(cmd.argv, capture_output=True, text=True, timeout=cmd.timeout,
                              cwd=str(REPO_ROOT), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"ok": False, "returncode": None, "stdout": "", "command": shown,
                "stderr": f"{cmd.action} did not finish within {cmd.timeout:.0f}s"}
    return {"ok": proc.returncode == 0, "returncode": proc.returncode, "command": shown,
            "stdout": proc.stdout[-_MAX_OUTPUT:], "stderr": proc.stderr[-_MAX_OUTPUT:]}
