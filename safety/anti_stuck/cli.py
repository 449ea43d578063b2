"""``trainctl stuck [run|status]`` (also ``python3 safety/anti_stuck_monitor.py``)."""
from __future__ import annotations

import json
import logging
import signal
import sys
import threading

import click

from foundation.paths import Paths
from foundation.single_instance import AlreadyRunning, SingleInstance, running_pid
from foundation.status_io import read_status
from safety.anti_stuck.detector import Limits
from safety.anti_stuck.monitor import INSTANCE_NAME, STATUS_NAME, AntiStuckMonitor

_base_opt = click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                         help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")


def settings(paths: Paths) -> tuple[Limits, float]:
    """Limits and check interval from config.json (``watchdog`` section; the interval defaults to
    ``daemon.heartbeat_interval`` so a hang is seen within two heartbeats)."""
    from trainer.config.loader import ConfigError, load_config
    try:
        cfg = load_config(base_dir=paths.base)
    except ConfigError as e:
        raise click.UsageError(f"config.json is invalid: {'; '.join(e.problems)}")
    wd = cfg.watchdog
    limits = Limits(wd.stuck_step_factor, wd.evaluation_budget, wd.heartbeat_timeout)
    return limits, wd.stuck_check_interval or cfg.daemon.heartbeat_interval


@click.group("stuck", invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def stuck_group(ctx: click.Context) -> None:
    """Hangs: work that does not progress while the heartbeat is fresh (no subcommand: status)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(status_command)


@stuck_group.command("run")
@_base_opt
@click.option("--once", is_flag=True, help="One check (and action), then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print status/anti_stuck.json.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=None,
              help="Seconds between checks (default: watchdog.stuck_check_interval, else daemon.heartbeat_interval).")
def run_command(base_dir: str | None, once: bool, as_json: bool, interval: float | None) -> None:
    """Watch training and evaluation; dump the stacks of a hung process to logs/, kill its process group."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    paths = Paths.from_base(base_dir)
    if not paths.base.is_dir():
        raise click.UsageError(f"base dir {paths.base} does not exist")
    paths.ensure()
    limits, default_interval = settings(paths)
    try:
        lock = SingleInstance(paths.pids, INSTANCE_NAME).acquire()
    except AlreadyRunning as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    try:
        mon = AntiStuckMonitor(paths.base, limits, interval or default_interval)
        if once:
            events = mon.check_once()
            doc = mon.write_status("stopped")
            if as_json:
                click.echo(json.dumps(doc, indent=2))
            else:
                click.echo(_render(doc, events_only=events))
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        mon.run(stop)
    finally:
        lock.release()


def _render(doc: dict, events_only: list | None = None) -> str:
    lines = []
    for what in ("training", "evaluation"):
        v = doc.get(what) or {}
        if v.get("active"):
            subject = f"job {v.get('job_id')} step {v.get('step')}" if what == "training" else v.get("checkpoint")
            extra = (f", median step {v.get('median_step_s')}s from {v.get('median_source')}"
                     if what == "training" else "")
            lines.append(f"{what}: {subject} unchanged for {v.get('stalled_s')}s (limit {v.get('limit_s')}s{extra})")
        else:
            lines.append(f"{what}: not judged ({v.get('why') or 'no data'})")
    events = doc.get("events") or [] if events_only is None else events_only
    lines.append(f"hangs detected: {doc.get('detections_total', 0)} in total"
                 + ("" if events_only is None else f", {len(events_only)} now"))
    for e in events[-10:]:
        lines.append(f"  {e.get('at')} {e.get('kind')}: {e.get('detail')}")
        lines.append(f"      {e.get('target')} pid {e.get('pid')}: killed {e.get('killed')}; stacks "
                     f"{e.get('stacks_file')} ({e.get('stack_method')}); {e.get('resumes')}")
    return "\n".join(lines)


@stuck_group.command("status")
@_base_opt
@click.option("--json", "as_json", is_flag=True, help="Print status/anti_stuck.json (plus 'running').")
def status_command(base_dir: str | None = None, as_json: bool = False) -> None:
    """What the monitor sees now, and the hangs it handled."""
    paths = Paths.from_base(base_dir)
    pid = running_pid(paths.pids, INSTANCE_NAME)
    doc = read_status(paths.status_file(STATUS_NAME)) or {}
    if as_json:
        click.echo(json.dumps({**doc, "running": pid is not None, "monitor_pid": pid}, indent=2))
        return
    click.echo(f"anti-stuck monitor: {'running (pid %s)' % pid if pid else 'not running'}")
    click.echo(_render(doc) if doc else "no status/anti_stuck.json yet")
