"""The training daemon's command line (``trainctl daemon ...`` and ``python3 core/training_daemon.py ...``):

    trainctl daemon start [--detach] [--base-dir DIR]      # or: python3 core/training_daemon.py start
    trainctl daemon stop [--timeout S]                      # SIGTERM: checkpoint, requeue, exit 0
    trainctl daemon status [--json]

With no subcommand it starts the daemon in the foreground, so the seed's
``nohup python3 core/training_daemon.py --base-dir . > logs/training_output.log 2>&1 &`` works.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import click

from core.daemon.context import LOCK_NAME, STATUS_NAME, DaemonOptions
from foundation.paths import REPO_ROOT, Paths
from foundation.single_instance import AlreadyRunning, read_pid, running_pid
from foundation.status_io import read_status

DETACH_WAIT_S = 20.0
POLL_S = 0.1


def _base_opt(f):
    return click.option("--base-dir", default=None,
                        help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")(f)


def _base_dir(value: str | None) -> str | None:
    """A subcommand's --base-dir, else the one given before the subcommand (``daemon --base-dir X stop``)."""
    parent = click.get_current_context().parent
    return value or (parent.params.get("base_dir") if parent is not None else None)


@click.group("daemon", invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@_base_opt
@click.pass_context
def daemon_group(ctx: click.Context, base_dir: str | None) -> None:
    """Run and control the training daemon (inbox -> queue -> training). No subcommand: start in the foreground."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(start_command, base_dir=base_dir)


@daemon_group.command("start")
@_base_opt
@click.option("--detach", is_flag=True, help="Run in the background (PID in .pids/training_daemon.pid).")
@click.option("--quiet", is_flag=True, help="Foreground: log to logs/ only, not to stderr.")
def start_command(base_dir: str | None, detach: bool = False, quiet: bool = False) -> None:
    """Start the daemon (foreground unless --detach). A second daemon exits 1 naming the running PID."""
    from core.daemon.loop import TrainingDaemon
    paths = Paths.from_base(_base_dir(base_dir)).ensure()
    if detach:
        _start_detached(paths)
        return
    daemon = TrainingDaemon(paths.base, DaemonOptions(log_to_stderr=not quiet))
    try:
        code = daemon.run()
    except AlreadyRunning as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)
    sys.exit(code)


def _start_detached(paths: Paths) -> None:
    pid = running_pid(paths.pids, LOCK_NAME)
    if pid:
        click.echo(f"error: training daemon is already running (pid {pid})", err=True)
        sys.exit(1)
    out = open(paths.logs / "training_daemon.out", "ab")
    proc = subprocess.Popen([sys.executable, str(REPO_ROOT / "core" / "training_daemon.py"), "start",
                             "--base-dir", str(paths.base), "--quiet"], stdin=subprocess.DEVNULL, stdout=out,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=str(REPO_ROOT))
    out.close()
    deadline = time.monotonic() + DETACH_WAIT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            click.echo(f"error: training daemon exited with status {proc.returncode}; see "
                       f"{paths.logs / 'training_daemon.out'}", err=True)
            sys.exit(1)
        if running_pid(paths.pids, LOCK_NAME) == proc.pid:
            click.echo(f"training daemon started (pid {proc.pid}); logs: {paths.logs / 'training_daemon.log'}")
            return
        time.sleep(POLL_S)
    click.echo(f"training daemon started (pid {proc.pid}) but has not taken its lock yet", err=True)


@daemon_group.command("stop")
@_base_opt
@click.option("--timeout", default=330.0, show_default=True, help="Seconds to wait for a clean exit.")
@click.option("--kill", "kill_after", is_flag=True, help="SIGKILL the daemon if it has not exited by --timeout.")
def stop_command(base_dir: str | None, timeout: float, kill_after: bool) -> None:
    """SIGTERM the daemon: it checkpoints at the next step boundary, requeues the file, exits 0."""
    paths = Paths.from_base(_base_dir(base_dir))
    pid = running_pid(paths.pids, LOCK_NAME)
    if not pid:
        click.echo("training daemon is not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running_pid(paths.pids, LOCK_NAME) is None:
            click.echo(f"training daemon (pid {pid}) stopped")
            return
        time.sleep(2 * POLL_S)
    if kill_after:
        os.kill(pid, signal.SIGKILL)
        click.echo(f"training daemon (pid {pid}) did not stop in {timeout:.0f}s; killed")
        return
    click.echo(f"error: training daemon (pid {pid}) still running after {timeout:.0f}s", err=True)
    sys.exit(1)


@daemon_group.command("status")
@_base_opt
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(base_dir: str | None, as_json: bool) -> None:
    """Is the daemon running, and what is it doing?"""
    paths = Paths.from_base(_base_dir(base_dir))
    pid = running_pid(paths.pids, LOCK_NAME)
    st = read_status(paths.status_file(STATUS_NAME)) or {}
    doc = {"running": pid is not None, "pid": pid, "state": st.get("state") if pid else "stopped",
           "current_file": st.get("current_file") if pid else None, "heartbeat_at": st.get("heartbeat_at"),
           "queue": st.get("queue"), "last_error": st.get("last_error")}
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    if not pid:
        last = read_pid(paths.pids / f"{LOCK_NAME}.pid")
        click.echo("training daemon: not running" + (f" (last pid {last})" if last else ""))
        return
    click.echo(f"training daemon: running (pid {pid}), state {doc['state']}"
               + (f", training {doc['current_file']}" if doc["current_file"] else ""))
