"""The config for a click command: ``load_config`` with a bad config turned into a click error.

Every command that reads config.json reports a bad key the same way (the loader's message names
the key and what would be valid) and exits non-zero instead of printing a traceback."""
from __future__ import annotations

import os
from typing import Any

import click

from trainer.config.loader import ConfigError, load_config
from trainer.config.schema import Config


def cli_config(base_dir: str | os.PathLike | None = None, *, overrides: Any = None, usage: bool = False) -> Config:
    """``load_config(base_dir=...)`` (the base dir resolved as every daemon resolves it);
    ``ConfigError`` -> ``click.ClickException`` (exit 1), or with ``usage`` a
    ``click.UsageError`` (exit 2, "config.json is invalid: ...")."""
    from foundation.paths import Paths
    try:
        return load_config(base_dir=Paths.from_base(base_dir).base, overrides=overrides)
    except ConfigError as e:
        if usage:
            raise click.UsageError(f"config.json is invalid: {'; '.join(e.problems)}") from None
        raise click.ClickException(str(e)) from None
