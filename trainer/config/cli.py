"""``trainctl config show|validate|edit|migrate``."""
from __future__ import annotations

import json
import sys

import click

from trainer.config.keys import redact_config
from trainer.config.loader import ConfigError, config_to_dict, explain, get_dotted, load_config, parse_value


@click.group("config")
def config_group() -> None:
    """Show, validate and edit the configuration."""


@config_group.command("show")
@click.option("--base-dir", default=None, help="Runtime base dir.")
@click.option("--config", "config_file", default=None, help="Config file (default: <base-dir>/config.json).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a key (as a CLI flag would).")
@click.option("--explain", "explain_flag", is_flag=True, help="One line per key with its documentation.")
@click.option("--json", "as_json", is_flag=True,
              help="JSON output (the default; with --explain: a list of {key, value, doc}).")
def show(base_dir, config_file, sets, explain_flag, as_json):
    """Print the effective config (defaults < config.json < environment < --set); API keys show as "***"."""
    try:
        overrides = [(s.split("=", 1)[0], parse_value(s.split("=", 1)[1])) for s in sets if "=" in s]
        cfg = load_config(config_file, base_dir=base_dir, overrides=overrides)
    except ConfigError as e:
        raise click.ClickException(str(e))
    shown = redact_config(config_to_dict(cfg))  # API keys are never echoed
    if explain_flag and as_json:
        rows = [{"key": key, "value": get_dotted(shown, key), "doc": doc} for key, _, doc in explain(cfg)]
        click.echo(json.dumps(rows, indent=2, ensure_ascii=False))
    elif explain_flag:
        for key, _, doc in explain(cfg):
            click.echo(f"{key} = {json.dumps(get_dotted(shown, key), ensure_ascii=False)}\n    {doc}")
    else:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))


@config_group.command("validate")
@click.argument("file", required=False)
@click.option("--base-dir", default=None)
def validate_cmd(file, base_dir):
    """Exit 0 when FILE (default config.json) is valid, 1 with the list of problems."""
    from trainer.config.validate_cli import run
    sys.exit(run(file, base_dir))


@config_group.command("edit")
@click.argument("key")
@click.argument("value")
@click.option("--force", is_flag=True, help="Allow changing a protected key (model_name, base_model, max_length).")
@click.option("--base-dir", default=None)
def edit_cmd(key, value, force, base_dir):
    """Set KEY (dotted, e.g. training.learning_rate) to VALUE, validated, atomically, with a backup."""
    from trainer.config.edit_cli import run
    sys.exit(run(key, value, force=force, base_dir=base_dir))


@config_group.command("migrate")
@click.option("--base-dir", default=None, help="Runtime base dir.")
@click.option("--config", "config_file", default=None, help="Config file (default: <base-dir>/config.json).")
def migrate_cmd(base_dir, config_file):
    """Rewrite the seed's flat keys (batch_size, learning_rate ...) and renamed keys as their current keys, after a backup."""
    from pathlib import Path

    from foundation.paths import Paths
    from trainer.config.editing import migrate_config
    paths = Paths.from_base(base_dir)
    target = Path(config_file) if config_file else paths.config_file
    if not target.is_file():
        raise click.ClickException(f"{target}: no such file")
    try:
        out = migrate_config(target, paths.backups)
    except ConfigError as e:
        raise click.ClickException(str(e))
    if not out["moved"]:
        click.echo(f"{target}: no old flat or renamed keys; nothing to do")
        return
    for flat, dotted in out["moved"]:
        click.echo(f"{flat} -> {dotted}")
    click.echo(f"rewrote {target} (backup: {out['backup']})")
