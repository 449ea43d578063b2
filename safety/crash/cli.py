"""``trainctl crashes [run|show]`` (also ``python3 safety/crash_detector.py``)."""
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
from safety.crash.classify import ADVICE
from safety.crash.report import INSTANCE_NAME, STATUS_NAME, CrashDetector

log = logging.getLogger("crash_detector")
_base_opt = click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                         help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")


def _interval(paths: Paths) -> float:
    from trainer.config.loader import ConfigError, load_config
    try:
        return load_config(base_dir=paths.base).watchdog.crash_check_interval
    except ConfigError as e:
        raise click.UsageError(f"config.json is invalid: {'; '.join(e.problems)}")


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
@_base_opt
@click.option("--once", is_flag=True, help="One scan, then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print status/crash_report.json.")
@click.option("--interval", type=click.FloatRange(min=0.05), default=None,
              help="Seconds between scans (default: watchdog.crash_check_interval).")
def run_command(base_dir: str | None, once: bool, as_json: bool, interval: float | None) -> None:
    """Scan failed jobs, watchdog restarts, hangs and trainer tracebacks; keep status/crash_report.json."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s")
    paths = Paths.from_base(base_dir)
    if not paths.base.is_dir():
        raise click.UsageError(f"base dir {paths.base} does not exist")
    paths.ensure()
    interval = interval or _interval(paths)
    try:
        lock = SingleInstance(paths.pids, INSTANCE_NAME).acquire()
    except AlreadyRunning as e:
        click.echo(str(e), err=True)
        sys.exit(1)
    try:
        det = CrashDetector(paths.base, interval)
        if once:
            new = det.scan_once()
            doc = det.write_status("stopped")
            click.echo(json.dumps(doc, indent=2) if as_json else render(doc, new))
            return
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        log.info("crash detector: scanning every %.1fs", interval)
        while not stop.is_set():
            try:
                for inc in det.scan_once():
                    log.warning("crash [%s] %s: %s", inc["kind"], inc["subject"], str(inc["message"])[:300])
            except Exception:  # noqa: BLE001 - one bad scan must not end the detector
                log.exception("crash scan failed")
            stop.wait(interval)
        det.write_status("stopped")
    finally:
        lock.release()


@crashes_group.command("show")
@_base_opt
@click.option("--json", "as_json", is_flag=True, help="Print status/crash_report.json (plus 'running').")
def show_command(base_dir: str | None = None, as_json: bool = False) -> None:
    """The crash report: counts by kind, the last occurrences, what to do about each."""
    paths = Paths.from_base(base_dir)
    pid = running_pid(paths.pids, INSTANCE_NAME)
    doc = read_status(paths.status_file(STATUS_NAME)) or {}
    if as_json:
        click.echo(json.dumps({**doc, "running": pid is not None, "detector_pid": pid}, indent=2))
        return
    click.echo(f"crash detector: {'running (pid %s)' % pid if pid else 'not running'}")
    click.echo(render(doc) if doc else "no status/crash_report.json yet (run: trainctl crashes run --once)")
