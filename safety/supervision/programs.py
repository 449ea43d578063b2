"""The program table: what the watchdog supervises, one row per program.

A row names the command (``{python}``, ``{repo}`` and ``{base_dir}`` are filled in), the status
file whose ``heartbeat_at`` (written by that same ``pid``) shows it is alive and working, the PID
file it keeps itself (to adopt an instance that is already running instead of starting a second
one), and how long a polite stop may take. A new sidecar is one more row.

Tests and unusual set-ups replace the table with ``--programs FILE``: a JSON document
``{"programs": [{row}, ...], "policy": {RestartPolicy fields}}``.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from foundation.paths import REPO_ROOT

TRAINING = "training"
SIDECAR = "sidecar"


@dataclass(frozen=True)
class ProgramSpec:
    name: str
    """Also the log file name: logs/<name>.out."""
    argv: tuple[str, ...]
    """Command; ``{python}``, ``{repo}``, ``{base_dir}`` are substituted."""
    group: str = SIDECAR
    """``training`` (started by ``start_all.sh --training-only``) or ``sidecar``."""
    status_file: str | None = None
    """status/<status_file>.json whose ``heartbeat_at`` (with ``pid`` = this process) is its heartbeat."""
    pid_file: str | None = None
    """.pids/<pid_file> the program writes itself (adoption of an instance started by hand)."""
    heartbeat_key: str = "heartbeat_at"
    """The key of the status file that holds this program's own heartbeat (``daemon_heartbeat_at`` for the
    training daemon, whose status file its trainer child writes too); ``heartbeat_at`` when it is absent."""
    heartbeat_timeout: float = 300.0
    """A heartbeat older than this (after start_grace) is a hang: the program is stopped and restarted."""
    start_grace: float = 300.0
    """Seconds after a start during which a missing heartbeat is not held against it (model loading)."""
    stop_timeout: float = 30.0
    """SIGTERM, then SIGKILL to its process group after this many seconds."""
    restart: str = "on-failure"
    """``on-failure``: an exit with code 0 (asked to stop: ``trainctl stop``, SIGTERM) stays down (EXITED)
    until ``trainctl watchdog reset NAME``; ``always``: restarted whatever the exit code."""
    match: str | None = None
    """Substring of /proc/<pid>/cmdline that identifies the program (default: its script path)."""

    def command(self, base_dir: Path, python: str = sys.executable) -> list[str]:
        subst = {"python": python, "repo": str(REPO_ROOT), "base_dir": str(base_dir)}
        return [a.format(**subst) for a in self.argv]

    def script(self) -> str | None:
        """The program's script (the first argument ending in .py), relative to the repo when it is there."""
        for a in self.argv:
            if a.endswith(".py"):
                return a.replace("{repo}/", "")
        return None

    def cmdline_match(self) -> str:
        return self.match or self.script() or self.argv[-1]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ProgramSpec":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"program {d.get('name')!r}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        if d.get("restart", "on-failure") not in ("on-failure", "always"):
            raise ValueError(f"program {d.get('name')!r}: restart must be 'on-failure' or 'always'")
        if not d.get("name") or not d.get("argv"):
            raise ValueError(f"a program needs 'name' and 'argv': {d!r}")
        return cls(**{**d, "argv": tuple(d["argv"])})


def default_programs(stop_timeout_training: float = 330.0) -> list[ProgramSpec]:
    """The system's processes. The training daemon gets its checkpoint time (daemon.stop_timeout + margin)."""
    base = "--base-dir", "{base_dir}"
    return [
        ProgramSpec("training_daemon", ("{python}", "{repo}/core/training_daemon.py", "start", *base, "--quiet"),
                    group=TRAINING, status_file="training_status", pid_file="training_daemon.pid",
                    heartbeat_key="daemon_heartbeat_at",
                    stop_timeout=stop_timeout_training),
        ProgramSpec("inference_server", ("{python}", "{repo}/inference/cli.py", *base),
                    status_file="inference_server", pid_file="inference_server.pid"),
        ProgramSpec("automated_testing", ("{python}", "{repo}/monitoring/automated_testing_daemon.py", *base),
                    status_file="automated_testing", pid_file="automated_testing.pid",
                    stop_timeout=120.0),  # finishes the evaluation in progress
        ProgramSpec("deployment_orchestrator", ("{python}", "{repo}/monitoring/deployment_orchestrator.py", "run", *base),
                    status_file="deployment_status", pid_file="deployment_orchestrator.pid",
                    stop_timeout=150.0),  # a deployment in flight may wait for the server's reload
        ProgramSpec("data_generation", ("{python}", "{repo}/monitoring/data_generation_automation.py", *base),
                    status_file="data_generation", pid_file="data_generation.pid"),
        ProgramSpec("curriculum_optimizer", ("{python}", "{repo}/monitoring/curriculum_optimizer.py", *base),
                    status_file="curriculum_optimization", pid_file="curriculum_optimizer.pid"),
        ProgramSpec("adversarial_miner", ("{python}", "{repo}/monitoring/adversarial_miner.py", *base),
                    status_file="adversarial_mining", pid_file="adversarial_miner.pid"),
        ProgramSpec("self_correction_loop", ("{python}", "{repo}/monitoring/self_correction_loop.py", *base),
                    status_file="self_correction", pid_file="self_correction_loop.pid"),
        ProgramSpec("disk_manager", ("{python}", "{repo}/management/auto_disk_manager.py", *base),
                    status_file="disk", pid_file="auto_disk_manager.pid"),
        ProgramSpec("anti_stuck_monitor", ("{python}", "{repo}/safety/anti_stuck_monitor.py", "run", *base),
                    status_file="anti_stuck", pid_file="anti_stuck_monitor.pid"),
        ProgramSpec("crash_detector", ("{python}", "{repo}/safety/crash_detector.py", "run", *base),
                    status_file="crash_report", pid_file="crash_detector.pid"),
        ProgramSpec("live_monitor", ("{python}", "{repo}/monitoring/servers/live_monitor.py", *base),
                    status_file="live_monitor", pid_file="live_monitor.pid", stop_timeout=10.0),
    ]


@dataclass
class Table:
    programs: list[ProgramSpec]
    policy: dict[str, Any] = field(default_factory=dict)


def load_table(programs_file: str | Path | None, stop_timeout_training: float = 330.0) -> Table:
    if programs_file is None:
        return Table(default_programs(stop_timeout_training))
    try:
        doc = json.loads(Path(programs_file).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read the program table {programs_file}: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("programs"), list):
        raise ValueError(f"{programs_file}: expected {{\"programs\": [...], \"policy\": {{...}}}}")
    programs = [ProgramSpec.from_dict(p) for p in doc["programs"]]
    names = [p.name for p in programs]
    if len(set(names)) != len(names):
        raise ValueError(f"{programs_file}: duplicate program names in {names}")
    return Table(programs, dict(doc.get("policy") or {}))


def select(programs: list[ProgramSpec], only: list[str] | None = None,
           group: str | None = None) -> list[ProgramSpec]:
    """The rows to run: by name (``--only``), by group (``--training-only``)."""
    if only:
        unknown = set(only) - {p.name for p in programs}
        if unknown:
            raise ValueError(f"unknown program(s) {sorted(unknown)}; known: {[p.name for p in programs]}")
        programs = [p for p in programs if p.name in only]
    if group:
        programs = [p for p in programs if p.group == group]
    return programs
