"""`trainctl`: every row of the lazy command table resolves to a click command, and the seed's
entry-point paths answer --help when run by path (they are thin shims over the packages)."""
from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from management.cli import COMMANDS
from tests.conftest import REPO

SEED_PATHS = [
    "core/train.py", "core/training_daemon.py", "core/training_controller.py", "core/training_queue.py",
    "core/validator.py", "core/model_db.py", "monitoring/automated_testing_daemon.py",
    "monitoring/deployment_orchestrator.py", "monitoring/model_comparison_engine.py",
    "monitoring/continuous_regression_monitor.py", "monitoring/confidence_calibrator.py",
    "tools/data/generate_syllo_batch.py", "tools/data/validate_data.py", "tools/config/edit_config.py",
    "tools/analysis/compare_models.py", "safety/config_validator.py",
]


@pytest.mark.parametrize("name,module,attr", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_every_command_row_resolves(name, module, attr):
    cmd = getattr(importlib.import_module(module), attr)
    assert isinstance(cmd, click.Command), f"{module}.{attr} is not a click command"


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, str(REPO / "management" / "cli.py"), "--help"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    for name, _, _ in COMMANDS:
        assert f"  {name} " in out.stdout, name


def test_seed_paths_run_by_path():
    # one shell, stopping at the first path that fails (its stderr is the message)
    script = " && ".join(f"{sys.executable} {p} --help >/dev/null" for p in SEED_PATHS)
    out = subprocess.run(["bash", "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
