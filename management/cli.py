"""``trainctl``: one click CLI over every tool. Each script people run by path defines its click
command/group in its own module; this root only collects them (imports are lazy so that
``trainctl --help`` does not import torch)."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import click

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# (command name, module, attribute); tests/test_cli_root.py checks that every row resolves.
COMMANDS: list[tuple[str, str, str]] = [
    ("config", "trainer.config.cli", "config_group"),
    ("model", "tools.models.cli", "model_group"),
    ("train", "trainer.engine.train_cli", "train_command"),
    ("data", "tools.data.cli", "data_group"),
    ("daemon", "core.daemon.cli", "daemon_group"),
    ("worker", "core.daemon.worker", "worker_command"),
    ("queue", "core.jobqueue.cli", "queue_group"),
    ("pause", "core.daemon.controller", "pause_command"),
    ("resume", "core.daemon.controller", "resume_command"),
    ("stop", "core.daemon.controller", "stop_command"),
    ("skip", "core.daemon.controller", "skip_command"),
    ("status", "core.daemon.controller", "status_command"),
    ("models", "foundation.model_db_cli", "models_group"),
    ("serve", "inference.cli", "serve_command"),
    ("deploy", "monitoring.deployment.cli", "deploy_group"),
    ("eval", "monitoring.evaluation.cli", "eval_group"),
    ("syllo", "syllo.generator", "syllo_command"),
    ("watchdog", "safety.supervision.cli", "watchdog_group"),
    ("health", "safety.health.cli", "health_command"),
    ("monitor", "monitoring.servers.live_monitor", "monitor_command"),
    ("stuck", "safety.anti_stuck.cli", "stuck_group"),
    ("crashes", "safety.crash.cli", "crashes_group"),
    ("disk", "management.auto_disk_manager", "disk_command"),
    ("cleanup", "management.safe_checkpoint_cleanup", "cleanup_command"),
    ("backup", "management.backup_manager", "backup_group"),
    ("version", "management.model_versioner", "version_group"),
    ("snapshot", "management.daily_snapshot", "snapshot_command"),
    ("consolidate", "management.consolidate_model", "consolidate_command"),
    ("datagen", "monitoring.autonomy.data_generation", "datagen_command"),
    ("curriculum", "monitoring.autonomy.curriculum", "curriculum_command"),
    ("miner", "monitoring.autonomy.adversarial", "miner_command"),
    ("selfcorrect", "monitoring.autonomy.self_correction", "selfcorrect_command"),
]


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, _, _ in COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        for cmd_name, mod, attr in COMMANDS:
            if cmd_name == name:
                return getattr(importlib.import_module(mod), attr)
        return None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Continuous fine-tuning: drop .jsonl into inbox/, it is trained, evaluated and deployed."""


if __name__ == "__main__":
    main()
