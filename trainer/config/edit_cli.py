#!/usr/bin/env python3
"""Edit one config key: ``python3 tools/config/edit_config.py training.learning_rate 1e-4 [--force]``.

Dotted keys; the value is parsed as JSON when it parses (numbers, booleans, lists) else taken as a
string; the result is validated before anything is written; the write is atomic and the previous
file is backed up under backups/. ``model.model_name``, ``model.base_model`` and ``data.max_length``
are protected and need --force. Same code as ``trainctl config edit``.
"""
from __future__ import annotations

import sys
from pathlib import Path


import click


def run(key: str, value: str, *, force: bool = False, base_dir: str | None = None,
        config_file: str | None = None) -> int:
    from foundation.paths import Paths
    from trainer.config.editing import ProtectedKeyError, edit_config
    from trainer.config.loader import ConfigError, parse_value
    paths = Paths.from_base(base_dir)
    cfg_file = Path(config_file) if config_file else paths.config_file
    try:
        change = edit_config(cfg_file, key, parse_value(value), force=force, backups_dir=paths.backups)
    except ProtectedKeyError as e:
        click.echo(f"refused: {e}", err=True)
        return 1
    except ConfigError as e:
        click.echo(f"refused: {e}", err=True)
        return 1
    click.echo(f"{change['key']}: {change['old']!r} -> {change['new']!r} in {change['file']}"
               + (f" (backup: {change['backup']})" if change["backup"] else ""))
    return 0


@click.command()
@click.argument("key")
@click.argument("value")
@click.option("--force", is_flag=True)
@click.option("--base-dir", default=None)
@click.option("--config", "config_file", default=None)
def main(key, value, force, base_dir, config_file):
    sys.exit(run(key, value, force=force, base_dir=base_dir, config_file=config_file))

