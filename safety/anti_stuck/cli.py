"""``trainctl stuck [run|status]`` (also ``python3 safety/anti_stuck_monitor.py``)."""
from __future__ import annotations

import click

from foundation.paths import Paths
from safety.anti_stuck.detector import Limits
from safety.anti_stuck.monitor import INSTANCE_NAME, STATUS_NAME, AntiStuckMonitor
from safety.daemon_cli import base_dir_option, daemon_paths, pass_daemon_options, run_by_default, serve, show_status


def settings(paths: Paths) -> tuple[Limits, float]:
    """Limits and check interval from config.json (``watchdog`` section; the interval defaults to
    ``daemon.heartbeat_interval`` so a hang is seen within two heartbeats)."""
    from trainer.config.click_load import cli_config
    cfg = cli_config(paths.base, usage=True)
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
@pass_daemon_options("check", "anti_stuck.json", "watchdog.stuck_check_interval, else daemon.heartbeat_interval")
def run_command(base_dir: str | None, once: bool, as_json: bool, interval: float | None) -> None:
    """Watch training and evaluation; dump the stacks of a hung process to logs/, kill its process group."""
    paths = daemon_paths(base_dir, INSTANCE_NAME)
    limits, default_interval = settings(paths)
    serve(paths, INSTANCE_NAME, lambda: AntiStuckMonitor(paths.base, limits, interval or default_interval),
          AntiStuckMonitor.check_once, once=once, as_json=as_json, render=_render)


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
@base_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print status/anti_stuck.json (plus 'running').")
def status_command(base_dir: str | None = None, as_json: bool = False) -> None:
    """What the monitor sees now, and the hangs it handled."""
    show_status(base_dir, INSTANCE_NAME, STATUS_NAME, as_json=as_json, pid_key="monitor_pid",
                title="anti-stuck monitor", render=_render, missing="no status/anti_stuck.json yet")


def main(argv: list[str] | None = None) -> None:
    """``python3 safety/anti_stuck_monitor.py``: no subcommand means ``run``."""
    run_by_default(stuck_group, "anti_stuck_monitor.py", argv)
