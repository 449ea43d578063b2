"""``trainctl deploy ...`` / ``python3 monitoring/deployment_orchestrator.py ...``: the orchestrator's CLI.

    run [--interval S]       the daemon (until SIGTERM / Ctrl-C); single instance, .pids/deployment_orchestrator.pid
                             (the entry script with no subcommand runs it: `deployment_orchestrator.py
                             --base-dir . --interval 600`, as the seed's users type it)
    once                     one check, prints the outcome
    status                   status/deployment_status.json with the last 5 history entries
    list                     deployed versions, * marks the current one
    unblock CHECKPOINT|--all allow a failed / rolled-back checkpoint again
    rollback [--to VERSION]  serve an earlier version again
"""
from __future__ import annotations

import json
import sys
import threading
from typing import Any

import click

from foundation.locking import LockTimeout
from foundation.logs import setup_logging
from foundation.paths import Paths
from foundation.status_io import read_status
from monitoring.deployment.orchestrator import DeploymentOrchestrator, RollbackError

_base_opt = click.option("--base-dir", type=click.Path(file_okay=False), default=None,
                         help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
_url_opt = click.option("--server-url", default=None, help="Inference server URL (default: from config).")


def _make(base_dir: str | None, server_url: str | None, overrides: dict | None = None) -> DeploymentOrchestrator:
    from trainer.config.click_load import cli_config
    from monitoring.prediction_client import PredictionClient
    paths = Paths.from_base(base_dir)
    cfg = cli_config(paths.base, overrides=overrides)
    client = PredictionClient.from_config(paths.base)
    if server_url:
        client = PredictionClient(server_url, api_key=client.api_key, admin_key=client.admin_key,
                                  timeout=client.timeout)
    return DeploymentOrchestrator(paths.base, config=cfg, client=client)


class _DeployGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LockTimeout as e:  # say so plainly instead of a traceback
            raise click.ClickException(f"{e}; is a deployment stuck? see `trainctl deploy status`") from None


@click.group("deploy", cls=_DeployGroup)
def deploy_group() -> None:
    """Deploy the best checkpoint to the inference server (orchestrator daemon and tools)."""


@deploy_group.command("run")
@_base_opt
@_url_opt
@click.option("--interval", type=float, default=None,
              help="Seconds between deployment checks (default: deployment.interval).")
def run_command(base_dir: str | None, server_url: str | None, interval: float | None) -> None:
    """Run the orchestrator daemon until SIGTERM / Ctrl-C (one per base dir)."""
    import signal
    from foundation.single_instance import AlreadyRunning, SingleInstance
    orch = _make(base_dir, server_url, {"deployment.interval": interval})
    try:
        lock = SingleInstance(orch.paths.pids, "deployment_orchestrator").acquire()
    except AlreadyRunning as e:
        raise click.ClickException(str(e)) from None
    setup_logging(orch.paths.logs, None, file_name="deployment_orchestrator")  # rotated daily
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"deployment orchestrator: strategy {orch.dcfg.strategy}, every {orch.dcfg.interval:g}s, "
               f"server {orch.client.base_url}", err=True)
    try:
        orch.run(stop)
    finally:
        lock.release()


def main(argv: list[str] | None = None) -> None:
    """The entry script (``monitoring/deployment_orchestrator.py``): no subcommand means ``run``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0] not in deploy_group.commands and args[0] not in ("-h", "--help")):
        args.insert(0, "run")
    deploy_group.main(args, prog_name="deployment_orchestrator.py")


@deploy_group.command("once")
@_base_opt
@_url_opt
def once_command(base_dir: str | None, server_url: str | None) -> None:
    """Run one deployment check now and print what happened (exit 1 if a deployment failed)."""
    result = _make(base_dir, server_url).check_once("manual")
    click.echo(json.dumps(result, indent=2))
    entry = result.get("entry") or {}
    if entry.get("outcome") in ("failed", "rolled_back"):
        raise SystemExit(1)


@deploy_group.command("status")
@_base_opt
def status_command(base_dir: str | None) -> None:
    """Print status/deployment_status.json (current version, last check, recent history)."""
    paths = Paths.from_base(base_dir)
    doc = read_status(paths.status_file("deployment_status"))
    if doc is None:
        raise click.ClickException(f"{paths.status_file('deployment_status')} does not exist yet "
                                   "(start `trainctl deploy run`)")
    doc["history"] = doc.get("history", [])[:5]
    click.echo(json.dumps(doc, indent=2))


@deploy_group.command("list")
@_base_opt
@_url_opt
def list_command(base_dir: str | None, server_url: str | None) -> None:
    """List versions under models/deployed/ (newest first); * marks the current one."""
    orch = _make(base_dir, server_url)
    current = orch.store.current()
    for v in orch.store.list():
        mark = "*" if v["version"] == current else " "
        click.echo(f"{mark} {v['version']}  step={v['global_step']}  from={v['checkpoint']}  at={v['deployed_at']}")


@deploy_group.command("unblock")
@_base_opt
@click.argument("checkpoint", required=False)
@click.option("--all", "all_", is_flag=True, help="Unblock every checkpoint.")
def unblock_command(base_dir: str | None, checkpoint: str | None, all_: bool) -> None:
    """Allow a checkpoint that failed (or was rolled back) to be deployed again."""
    if not checkpoint and not all_:
        raise click.UsageError("name a CHECKPOINT (path relative to the base dir) or pass --all")
    gone = _make(base_dir, None).unblock(None if all_ else checkpoint)
    click.echo(json.dumps({"unblocked": gone}))


@deploy_group.command("rollback")
@_base_opt
@_url_opt
@click.option("--to", "to", default=None, help="Version to serve (default: the previously deployed one).")
def rollback_command(base_dir: str | None, server_url: str | None, to: str | None) -> None:
    """Serve an earlier deployed version again and make it current."""
    try:
        entry = _make(base_dir, server_url).rollback(to)
    except RollbackError as e:
        raise click.ClickException(str(e)) from None
    click.echo(json.dumps(entry, indent=2))
    if entry.get("outcome") != "manual_rollback":
        raise SystemExit(1)
