"""``trainctl watchdog run|status|reset`` (also ``python3 safety/daemon_watchdog.py``)."""
from __future__ import annotations

import dataclasses
import sys
import threading
import time

import click

from foundation.paths import Paths
from foundation.single_instance import running_pid
from foundation.status_io import parse_iso, read_status
from safety.daemon_cli import base_dir_option, daemon_paths, daemon_status, run_by_default, serve, status_json
from safety.supervision.programs import TRAINING, load_table, select
from safety.supervision.state_machine import RestartPolicy
from safety.supervision.watchdog import INSTANCE_NAME, STATUS_NAME, Watchdog, reset_offline, reset_request_path


@click.group("watchdog", context_settings={"help_option_names": ["-h", "--help"]})
def watchdog_group() -> None:
    """Supervise every process of the system: start, watch heartbeats, restart with back-off."""


def _settings(paths: Paths) -> tuple[float, dict, dict]:
    """From config.json: the training daemon's stop time (daemon.stop_timeout plus a margin, to
    checkpoint), the restart policy (``watchdog`` section) and the default rows' heartbeat limits.
    An unreadable config leaves the code defaults (the watchdog must still supervise)."""
    import dataclasses
    from trainer.config.loader import ConfigError, load_config
    try:
        cfg = load_config(base_dir=paths.base)
    except (ConfigError, OSError, ValueError):
        return 330.0, {}, {}
    wd = dataclasses.asdict(cfg.watchdog)
    policy = {k: wd[k] for k in RestartPolicy.__dataclass_fields__ if k in wd}
    rows = {"heartbeat_timeout": wd["heartbeat_timeout"], "start_grace": wd["start_grace"],
            "interval": wd["interval"]}
    return cfg.daemon.stop_timeout + 30.0, policy, rows


@watchdog_group.command("run")
@base_dir_option
@click.option("--once", is_flag=True, help="One supervision pass (start what is not running), then exit.")
@click.option("--programs", "programs_file", type=click.Path(dir_okay=False, exists=True), default=None,
              help='Replace the program table: JSON {"programs": [...], "policy": {...}}.')
@click.option("--only", default=None, help="Comma-separated program names to supervise.")
@click.option("--training-only", is_flag=True, help="Only the training daemon (programs of group 'training').")
@click.option("--interval", type=click.FloatRange(min=0.05), default=None,
              help="Seconds between supervision passes (default: watchdog.interval in config.json, 1.0).")
def run_command(base_dir: str | None, once: bool, programs_file: str | None, only: str | None,
                training_only: bool, interval: float | None) -> None:
    """Run the watchdog until SIGTERM / Ctrl-C (which also stops the programs it started)."""
    paths = daemon_paths(base_dir, INSTANCE_NAME, must_exist=False)
    try:
        stop_training, cfg_policy, rows = _settings(paths)
        table = load_table(programs_file, stop_training)
        if programs_file is None and rows:  # config.json's heartbeat limits for the built-in rows
            table.programs = [dataclasses.replace(p, heartbeat_timeout=rows["heartbeat_timeout"],
                                                  start_grace=rows["start_grace"]) for p in table.programs]
        programs = select(table.programs, [n for n in (only or "").split(",") if n] or None,
                          TRAINING if training_only else None)
        policy = RestartPolicy.from_dict({**cfg_policy, **table.policy})  # a --programs file's policy wins
        interval = interval if interval is not None else rows.get("interval", 1.0)
    except ValueError as e:
        raise click.UsageError(str(e))
    if not programs:
        raise click.UsageError("no program to supervise (check --only / --training-only / --programs)")
    # --once: one pass, status "stopped"; the programs keep running and the next --once adopts them
    serve(paths, INSTANCE_NAME, lambda: Watchdog(paths.base, programs, policy, interval=interval),
          Watchdog.supervise_once, once=once)


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    try:
        return f"{time.time() - parse_iso(iso).timestamp():.0f}s ago"
    except ValueError:
        return iso


@watchdog_group.command("status")
@base_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print status/watchdog.json (plus 'running').")
def status_command(base_dir: str | None, as_json: bool) -> None:
    """Is the watchdog running, and the state of each program (exit 1 when one is FATAL)."""
    pid, doc = daemon_status(base_dir, INSTANCE_NAME, STATUS_NAME)
    programs = doc.get("programs") or {}
    if as_json:
        click.echo(status_json(doc, pid, "watchdog_pid"))
    else:
        click.echo(f"watchdog: {'running (pid %s)' % pid if pid else 'not running'}, "
                   f"heartbeat {_age(doc.get('heartbeat_at'))}")
        for name, p in programs.items():
            exit_ = (p.get("last_exit") or {}).get("reason") or "-"
            click.echo(f"  {name:<24} {p.get('state', '?'):<9} pid {p.get('pid') or '-':<8} "
                       f"restarts {p.get('restarts', 0):<3} last exit: {exit_}")
            if p.get("state") == "FATAL":
                click.echo(f"      {p.get('fatal_reason')}")
                for line in (p.get("last_log_lines") or [])[-10:]:
                    click.echo(f"      | {line}")
                click.echo(f"      fix the cause, then: trainctl watchdog reset {name}")
    if any(p.get("state") == "FATAL" for p in programs.values()):
        sys.exit(1)


@watchdog_group.command("reset")
@click.argument("name")
@base_dir_option
@click.option("--wait", type=click.FloatRange(min=0), default=10.0, show_default=True,
              help="Seconds to wait for a running watchdog to take the reset.")
def reset_command(name: str, base_dir: str | None, wait: float) -> None:
    """Clear NAME's failures: a FATAL program is started again (works whether the watchdog runs or not)."""
    from foundation.atomic_io import atomic_write_json
    from foundation.status_io import utc_now_iso
    paths = Paths.from_base(base_dir)
    doc = read_status(paths.status_file(STATUS_NAME)) or {}
    known = list((doc.get("programs") or {}))
    if known and name not in known:
        raise click.UsageError(f"no program {name!r} in status/watchdog.json; known: {', '.join(known)}")
    if running_pid(paths.pids, INSTANCE_NAME) is None:
        entry = reset_offline(paths, name)
        click.echo(f"{name}: failures cleared in status/watchdog.json (watchdog not running; "
                   f"{'it will start it' if entry else 'nothing recorded yet'} when it starts)")
        return
    req = reset_request_path(paths, name)
    atomic_write_json(req, {"program": name, "created_at": utc_now_iso()})
    deadline = time.monotonic() + wait
    while req.exists() and time.monotonic() < deadline:
        threading.Event().wait(0.1)
    if req.exists():
        raise click.ClickException(f"the watchdog has not taken {req} within {wait:.0f}s (is it stuck? "
                                   f"see logs/watchdog.out); the request stays and is taken at its next pass")
    state = ((read_status(paths.status_file(STATUS_NAME)) or {}).get("programs") or {}).get(name, {}).get("state")
    click.echo(f"{name}: reset taken by the watchdog (now {state})")


@watchdog_group.command("wait")
@base_dir_option
@click.option("--timeout", type=click.FloatRange(min=0), default=120.0, show_default=True)
@click.option("--verb", default="started", show_default=True, help="Word printed for a program that is up.")
def wait_command(base_dir: str | None, timeout: float, verb: str) -> None:
    """Wait until every supervised program is up (exit 1 when one is FATAL or the time is up)."""
    from safety.supervision.lifecycle import wait_started
    if not wait_started(Paths.from_base(base_dir), timeout, verb, click.echo):
        sys.exit(1)


@watchdog_group.command("stop")
@base_dir_option
@click.option("--timeout", type=click.FloatRange(min=1), default=330.0, show_default=True,
              help="Seconds each program may take to stop (the training daemon checkpoints first).")
@click.option("--kill", is_flag=True, help="SIGKILL what is still running after the timeout.")
def stop_command(base_dir: str | None, timeout: float, kill: bool) -> None:
    """Stop the watchdog (which stops its programs cleanly), then anything of ours still running."""
    from safety.supervision.lifecycle import stop_all
    if not stop_all(Paths.from_base(base_dir), timeout, kill, click.echo):
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    """``python3 safety/daemon_watchdog.py``: no subcommand means ``run``."""
    run_by_default(watchdog_group, "daemon_watchdog.py", argv)
