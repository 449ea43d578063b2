"""``trainctl crashes [run|show]`` (also ``python3 safety/crash_detector.py``)."""
from __future__ import annotations

import click

from foundation.paths import Paths
from safety.crash.classify import ADVICE
from safety.crash.report import INSTANCE_NAME, STATUS_NAME, CrashDetector
from safety.daemon_cli import base_dir_option, daemon_paths, pass_daemon_options, run_by_default, serve, show_status


def _interval(paths: Paths) -> float:
    from trainer.config.click_load import cli_config
    return cli_config(paths.base, usage=True).watchdog.crash_check_interval


def render(doc: dict, new: list | None = None) -> str:
    counts = {k: v for k, v in (doc.get("counts") or {}).items() if v}
    lines = [f"crashes: {doc.get('total', 0)} in total" + (f" ({', '.join(f'{k} {v}' for k, v in counts.items())})"
                                                           if counts else "")]
    shown = new if new is not None else doc.get("recent") or []
    if new is not None:
        lines.append(f"new since the last scan: {len(new)}")
    for inc in shown[:10]:
        lines.append(f"  {inc.get('at')} [{inc.get('kind')}] {inc.get('subject')} ({'+'.join(inc.get('sources') or [])})")
        lines.append(f"      {str(inc.get('message'))[:300]}")
    for kind in counts:
        lines.append(f"  what to do about {kind}: {ADVICE.get(kind, ADVICE['other'])}")
    return "\n".join(lines)


@click.group("crashes", invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def crashes_group(ctx: click.Context) -> None:
    """Every crash classified (OOM, NaN, data, disk, killed, hang, exception), counted, with what to do
    (no subcommand: show status/crash_report.json)."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(show_command)


@crashes_group.command("run")
@pass_daemon_options("scan", "crash_report.json", "watchdog.crash_check_interval")
def run_command(base_dir: str | None, once: bool, as_json: bool, interval: float | None) -> None:
    """Scan failed jobs, watchdog restarts, hangs and trainer tracebacks; keep status/crash_report.json."""
    paths = daemon_paths(base_dir, INSTANCE_NAME)
    interval = interval or _interval(paths)
    serve(paths, INSTANCE_NAME, lambda: CrashDetector(paths.base, interval), CrashDetector.scan_once,
          once=once, as_json=as_json, render=render)


@crashes_group.command("show")
@base_dir_option
@click.option("--json", "as_json", is_flag=True, help="Print status/crash_report.json (plus 'running').")
def show_command(base_dir: str | None = None, as_json: bool = False) -> None:
    """The crash report: counts by kind, the last occurrences, what to do about each."""
    show_status(base_dir, INSTANCE_NAME, STATUS_NAME, as_json=as_json, pid_key="detector_pid", title="crash detector",
                render=render, missing="no status/crash_report.json yet (run: trainctl crashes run --once)")


def main(argv: list[str] | None = None) -> None:
    """``python3 safety/crash_detector.py``: no subcommand means ``run``."""
    run_by_default(crashes_group, "crash_detector.py", argv)
