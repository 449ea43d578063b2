#!/usr/bin/env python3
"""Train a model on one chat .jsonl file (the same engine the daemon uses).

    python3 core/train.py --dataset data.jsonl --model models/tiny-qwen3 --output models/checkpoints/run1 \
        [--profile emoji_think] [--system-prompt "..."] [--max-steps 30] [--resume] [--set training.learning_rate=1e-4]
    trainctl train ...                           # same command
    accelerate launch core/train.py --job-file job.json   # what the daemon runs when num_processes > 1

Prints the job result as JSON, and nothing else, on stdout (``python3 core/train.py ... | jq .``);
the Trainer's log lines and every other message go to stderr.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

import click


def _parse_sets(values: tuple[str, ...]) -> list[tuple[str, object]]:
    from trainer.config.loader import parse_value
    out = []
    for item in values:
        if "=" not in item:
            raise click.BadParameter(f"--set expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out.append((k.strip(), parse_value(v)))
    return out


@click.command("train", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dataset", type=click.Path(dir_okay=False), help="Chat .jsonl file to train on.")
@click.option("--model", "model_path", default=None, help="Local model folder to start from (default: config model.model_path).")
@click.option("--output", default=None, help="Job folder for checkpoints and the final model (default: models/checkpoints/manual-<name>).")
@click.option("--profile", default=None, help="Data profile (overrides config profile.name).")
@click.option("--system-prompt", default=None, help="System prompt template ({date} is replaced).")
@click.option("--max-steps", type=int, default=None, help="Optimizer steps (overrides training.max_steps).")
@click.option("--resume", is_flag=True, help="Continue from the newest complete checkpoint in --output.")
@click.option("--global-step-start", type=int, default=0, show_default=True, help="Global step the lineage is at.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config key, dotted (repeatable).")
@click.option("--base-dir", default=None, help="Runtime base dir (default: $TRAINER_BASE_DIR or the repo root).")
@click.option("--config", "config_file", default=None, help="Config file (default: <base-dir>/config.json).")
@click.option("--status-file", default=None, help="Status file (default: <base-dir>/status/training_status.json; 'none' disables).")
@click.option("--job-file", default=None, help="Run a TrainJob JSON written by the daemon (multi-process launches).")
def train_command(dataset, model_path, output, profile, system_prompt, max_steps, resume, global_step_start,
                  sets, base_dir, config_file, status_file, job_file):
    """Train on one .jsonl file with the HF Trainer (full fine-tuning or LoRA)."""
    from foundation.paths import Paths
    from trainer.config.loader import ConfigError, config_to_dict, load_config

    paths = Paths.from_base(base_dir)
    if job_file:
        from trainer.engine.job import TrainJob
        job = TrainJob.from_json(Path(job_file).read_text())
        if "LOCAL_RANK" in os.environ:
            # torchrun gives every rank its own session: without this, a killed launcher (the
            # daemon's trainer child, or a worker's launch) would leave its ranks running.
            from foundation.parent_death import die_with_parent
            die_with_parent()
        # Under `accelerate launch` every rank reads the daemon's command file itself, so
        # pause/stop/skip reach all ranks at the same step boundary.
        from trainer.engine.job_control import FileJobControl
        _run(job, standalone=False, control=FileJobControl.from_env())
        return
    if not dataset:
        raise click.UsageError("--dataset is required (or --job-file)")
    if not Path(dataset).is_file():
        raise click.BadParameter(f"{dataset}: no such file", param_hint="--dataset")
    overrides = _parse_sets(sets)
    if profile:
        overrides.append(("profile.name", profile))
    if system_prompt is not None:
        overrides.append(("profile.system_prompt", system_prompt))
    if max_steps is not None:
        overrides.append(("training.max_steps", max_steps))
    try:
        cfg = load_config(config_file, base_dir=paths.base, overrides=overrides)
    except ConfigError as e:
        raise click.ClickException(str(e))
    model = model_path or str(paths.resolve(cfg.model.model_path))
    if not Path(model).is_dir():
        raise click.ClickException(f"model folder {model} does not exist (build the embedded one with "
                                   f"`trainctl model init-tiny`, or point --model at a local HF model folder)")
    out = Path(output) if output else paths.checkpoints / f"manual-{Path(dataset).stem}"
    from trainer.engine.checkpoints import complete_checkpoints
    if not resume and complete_checkpoints(out):
        raise click.ClickException(f"{out} already holds checkpoints: pass --resume to continue, or choose "
                                   f"another --output")
    if status_file is None:
        status_file = str(paths.status_file("training_status"))
    elif status_file == "none":
        status_file = ""
    from trainer.engine.job import TrainJob
    from trainer.config.keys import redact_config
    cfg_dict = redact_config(config_to_dict(cfg))  # a job spec never carries the inference keys
    cfg_dict["_base_dir"] = str(paths.base)
    job = TrainJob(dataset=str(Path(dataset).resolve()), output_dir=str(out.resolve()), model_path=model,
                   job_id=out.name, config=cfg_dict, global_step_start=global_step_start, resume=resume,
                   source_file=Path(dataset).name, status_file=status_file,
                   eval_dir=str(paths.resolve(cfg.data.validation_dir)))
    _run(job, standalone=True)


def _run(job, standalone: bool, control=None) -> None:
    from trainer.engine.engine import DataError, TrainerEngine
    try:
        # stdout carries only the result. With disable_tqdm the HF Trainer adds its PrinterCallback,
        # which print()s every log dict ({'loss': ..., 'grad_norm': ...}); libraries may print too.
        # Everything printed while the job runs goes to stderr instead.
        with contextlib.redirect_stdout(sys.stderr):
            result = TrainerEngine().run_job(job, control=control, standalone=standalone)
    except DataError as e:
        click.echo(json.dumps({"ok": False, "error": str(e), "error_kind": "data_error", "report": e.report}))
        raise SystemExit(1)
    except Exception as e:  # noqa: BLE001 - a launched rank 0 reports every failure of its own
        if standalone or int(os.environ.get("RANK", "0")) != 0:
            raise
        import traceback
        traceback.print_exc()
        # The launcher (core/daemon/trainer_child.py) classifies by type and message; a missing
        # report means the process died without one (a signal, or its group was torn down).
        click.echo(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:4000], "error_kind": None,
                               "error_type": type(e).__name__, "error_mro": [c.__name__ for c in type(e).__mro__]}))
        raise SystemExit(1)
    if int(os.environ.get("RANK", "0")) == 0:
        click.echo(json.dumps(result.to_dict()))


def main() -> None:
    train_command()

