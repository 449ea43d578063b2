"""``trainctl data validate|convert``: the same click commands as the by-path scripts
``tools/data/validate_data.py`` and ``tools/data/convert.py`` (no torch import at load)."""
from __future__ import annotations

import click

from tools.data.convert import convert_command
from trainer.engine.validate_cli import validate_command


@click.group("data")
def data_group() -> None:
    """Validate and convert training data (.jsonl)."""


data_group.add_command(validate_command, "validate")
data_group.add_command(convert_command, "convert")
