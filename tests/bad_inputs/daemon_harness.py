"""Helpers for the daemon end-to-end tests: start the real daemon as a process, read its status,
wait for conditions (with timeouts that fail the test, never hang it)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from foundation.status_io import parse_iso
from tests.helpers.waiting import wait_for  # noqa: F401 - re-exported for the daemon tests

REPO = Path(__file__).resolve().parents[2]
DAEMON = REPO / "core" / "training_daemon.py"
CONTROLLER = REPO / "core" / "training_controller.py"


def update_config(base: Path, patch: dict) -> None:
    cfg = json.loads((base / "config.json").read_text())
    for section, values in patch.items():
        cfg.setdefault(section, {}).update(values)
    (base / "config.json").write_text(json.dumps(cfg, indent=2))


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PYTHONPATH"] = str(REPO)
    return env


def start_daemon(reaper, base: Path) -> subprocess.Popen:
    log = open(base / "logs" / "daemon.stdout", "ab")
    return reaper.popen([sys.executable, str(DAEMON), "start", "--base-dir", str(base), "--quiet"],
                        stdout=log, stderr=subprocess.STDOUT, env=child_env(), cwd=str(REPO))


def status(base: Path) -> dict:
    try:
        return json.loads((base / "status" / "training_status.json").read_text())
    except FileNotFoundError:
        return {}


def queue_names(base: Path, folder: str) -> list[str]:
    d = base / "queue" / folder
    return sorted(n for n in os.listdir(d) if not n.startswith(".") and not n.endswith((".error.json", ".result.json")))


def controller(base: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CONTROLLER), *args, "--base-dir", str(base)], capture_output=True,
                          text=True, timeout=timeout, env=child_env(), cwd=str(REPO))


def child_pid(base: Path) -> int | None:
    try:
        return int((base / ".pids" / "trainer_child.pid").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def kill9(pid: int | None) -> None:
    if pid:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class StatusPoller:
    """Reads status/training_status.json in a tight loop; any unparsable read is a failure."""

    def __init__(self, base: Path):
        self.path = base / "status" / "training_status.json"
        self.reads = 0
        self.bad: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                text = self.path.read_text()
            except FileNotFoundError:
                time.sleep(0.005)
                continue
            try:
                doc = json.loads(text)
                assert isinstance(doc, dict)
                self.reads += 1
            except (json.JSONDecodeError, AssertionError) as e:
                self.bad.append(f"{e}: {text[:200]!r}")
            time.sleep(0.005)

    def __enter__(self) -> "StatusPoller":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join(5)


def heartbeat_wall(st: dict) -> float:
    """The daemon's ``heartbeat_at`` as a Unix time: the daemon's own clock, for waiting on elapsed time."""
    return parse_iso(st["heartbeat_at"]).timestamp()
