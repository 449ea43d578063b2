"""``trainctl data validate|convert|analyze|value``: the same click commands as the by-path scripts
``tools/data/validate_data.py``, ``tools/data/convert.py``, ``tools/data/analyze_training_data.py``
and ``tools/analysis/calculate_data_value.py`` (no torch import at load)."""
from __future__ import annotations

import click

from monitoring.evaluation.data_value import value_command
from tools.data.convert import convert_command
from trainer.engine.analyze_cli import analyze_command
from trainer.engine.validate_cli import validate_command


@click.group("data")
def data_group() -> None:
    """Validate, convert and analyse training data (.jsonl); what trained data was worth."""


data_group.add_command(validate_command, "validate")
data_group.add_command(convert_command, "convert")
data_group.add_command(analyze_command, "analyze")
data_group.add_command(value_command, "value")
