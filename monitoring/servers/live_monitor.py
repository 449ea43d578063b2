#!/usr/bin/env python3
"""The live monitor: a web dashboard of the whole system, pushed to the browser as it changes.

    python3 monitoring/servers/live_monitor.py [--base-dir DIR] [--host H] [--port P]
    python3 monitoring/servers/live_monitor.py --once        # print one snapshot (JSON) and exit
    trainctl monitor ...                                      # the same command

It reads only ``status/*.json``, the queue folders, ``control/`` flags, the model_db (read-only) and
``logs/metrics.jsonl``; it never imports the daemon. Bound to ``monitoring.live_monitor_host``
(127.0.0.1) and ``monitoring.live_monitor_port`` (8780). Actions need the admin key (see
``monitoring/servers/actions.py``). Started and supervised by the watchdog like every daemon.

``status/live_monitor.json`` (heartbeat every ``monitoring.status_interval`` s): ``schema_version``,
``updated_at``, ``pid``, ``heartbeat_at``, ``state`` (running | stopped), ``url``, ``started_at``,
``clients`` (open event streams), ``events_sent``, ``actions_enabled``.
Single instance per base dir (``.pids/live_monitor.lock``/``.pid``).
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import sys

import click

from foundation.net import is_loopback
from foundation.paths import Paths
from foundation.single_instance import AlreadyRunning, SingleInstance
from foundation.status_io import utc_now_iso, write_status

INSTANCE_NAME = "live_monitor"
STATUS_NAME = "live_monitor.json"


@click.command("monitor", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--base-dir", type=click.Path(file_okay=False), default=None,
              help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--host", default=None, help="Bind address (default: monitoring.live_monitor_host, 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default: monitoring.live_monitor_port, 8780).")
@click.option("--once", is_flag=True, help="Print one snapshot and the metrics history as JSON, then exit.")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]))
def monitor_command(base_dir: str | None, host: str | None, port: int | None, once: bool, log_level: str) -> None:
    """Web dashboard: training, queue, evaluations, deployment, system (SSE push, actions with the admin key)."""
    from trainer.config.keys import resolve_inference_keys
    from trainer.config.loader import ConfigError, load_config

    from monitoring.servers.app import MonitorSettings, create_app
    from monitoring.servers.metrics_history import read_window
    from monitoring.servers.snapshot import build_snapshot

    paths = Paths.from_base(base_dir)
    try:
        cfg = load_config(base_dir=paths.base)
        admin_key = resolve_inference_keys(cfg, paths.base).admin_api_key
    except ConfigError as e:
        raise click.ClickException(str(e))
    mon = cfg.monitoring
    if once:
        doc = build_snapshot(paths)
        doc["history"] = read_window(paths.logs, mon.live_monitor_history_points, mon.metrics_log_backups)
        click.echo(json.dumps(doc, indent=2, default=str))
        return
    host = host or mon.live_monitor_host
    port = port or mon.live_monitor_port
    if not is_loopback(host):
        click.echo(f"warning: the live monitor listens on {host}, not only this machine: anyone who reaches "
                   f"it sees the dashboard (actions still need the admin key)", err=True)
    paths.pids.mkdir(parents=True, exist_ok=True)
    lock = SingleInstance(paths.pids, INSTANCE_NAME)
    try:
        lock.acquire()
    except AlreadyRunning as e:
        raise click.ClickException(str(e))
    url = f"http://{host}:{port}/"
    started_at = utc_now_iso()
    status_path = paths.status_file(STATUS_NAME)

    def beat(counters: dict, state: str = "running") -> None:
        write_status(status_path, {"state": state, "url": url, "started_at": started_at,
                                   "actions_enabled": bool(admin_key), **counters})

    settings = MonitorSettings(paths=paths, host=host, port=port, history_points=mon.live_monitor_history_points,
                               log_backups=mon.metrics_log_backups, admin_key=admin_key,
                               heartbeat=beat, heartbeat_interval=mon.status_interval)
    import uvicorn
    try:
        beat({"clients": 0, "events_sent": 0}, "starting")
        click.echo(f"live monitor on {url} (base dir {paths.base})", err=True)
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level, access_log=False,
                    timeout_graceful_shutdown=3)
    finally:
        try:
            beat({"clients": 0}, "stopped")
        except OSError:
            pass
        lock.release()


if __name__ == "__main__":
    monitor_command()
