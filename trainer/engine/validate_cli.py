#!/usr/bin/env python3
"""Validate a .jsonl training file the way the training daemon does.

    python3 tools/data/validate_data.py --file inbox/x.jsonl [--json] [--model DIR]
        [--max-length N] [--policy truncate|drop|fail] [--base-dir DIR]
    trainctl data validate --file inbox/x.jsonl

Prints ``file:line: field: reason: message`` for each error (then warnings), then a summary;
``--json`` prints the machine-readable report instead. Exit 0: trainable; 1: not trainable;
2: usage error. Defaults (max length, policy, duplicates, profile) come from the config when it
loads; ``--model`` loads that local tokenizer so over-long examples are counted in real tokens.
"""
from __future__ import annotations

if __package__ in (None, ""):
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import json
import sys
from pathlib import Path

import click

from trainer.data.validator import OVERLONG_POLICIES, format_issues, validate_file


def _config_defaults(base_dir: str | None) -> tuple[dict, str | None]:
    """The data/profile settings from config.json (defaults when there is no config); a broken
    config is reported as a note and the built-in defaults are used."""
    from trainer.config.schema import Config
    try:
        from trainer.config.loader import ConfigError, load_config
    except ImportError:  # pragma: no cover - the loader ships with the repo
        cfg, note = Config(), None
    else:
        try:
            cfg, note = load_config(base_dir=base_dir), None
        except ConfigError as e:
            cfg, note = Config(), f"config not used ({e}); using built-in defaults"
    d = cfg.data
    from foundation.paths import Paths
    model_path = Paths.from_base(base_dir).resolve(cfg.model.model_path)
    return {"model_path": model_path, "max_length": d.max_length, "policy": d.overlong_policy, "drop_duplicates": d.drop_duplicates,
            "max_line_bytes": d.max_line_bytes, "loss_on": d.loss_on, "profile": cfg.profile.name,
            "profile_options": dict(cfg.profile.options)}, note


def load_profile(name: str, options: dict):
    """The named data profile when the profiles package provides one (None for 'plain' or when
    profiles are not available), so the CLI checks what the daemon checks."""
    try:
        from trainer.profiles import get_profile
    except ImportError:
        return None
    return get_profile(name, options)


def load_tokenizer(model_dir: Path):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def pick_tokenizer(model: Path | None, no_model: bool, configured: Path):
    """The tokenizer the data CLIs count tokens with: ``--model``'s, else the configured model's
    when that folder has one; None with ``--no-model`` or when there is none. A ``--model`` it
    cannot load is a usage error."""
    if model is None and not no_model and (configured / "tokenizer_config.json").is_file():
        model = configured
    try:
        return load_tokenizer(model) if model is not None else None
    except (OSError, ValueError) as e:
        raise click.BadParameter(f"cannot load a tokenizer from {model}: {e}", param_hint="--model")


_TOKEN_OPTIONS = (
    click.option("--model", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
                 help="Local model/tokenizer folder: count tokens with its chat template "
                      "(default: config model.model_path when it has a tokenizer)."),
    click.option("--no-model", is_flag=True, help="Load no tokenizer: token lengths are not measured."),
    click.option("--max-length", type=click.IntRange(min=1), default=None,
                 help="Max tokens (default: config data.max_length)."),
    click.option("--policy", type=click.Choice(list(OVERLONG_POLICIES)), default=None,
                 help="Over-long examples: truncate, drop or fail (default: config data.overlong_policy)."),
)


def token_options(command):
    """``--model``, ``--no-model``, ``--max-length``, ``--policy``: how the data commands (validate,
    analyze) count tokens and treat over-long examples, in that order in ``--help``."""
    for option in reversed(_TOKEN_OPTIONS):
        command = option(command)
    return command


def run(file: Path, *, as_json: bool = False, model: Path | None = None, max_length: int | None = None,
        policy: str | None = None, base_dir: str | None = None, profile: str | None = None,
        keep_duplicates: bool = False, max_errors: int = 1000, no_model: bool = False, echo=click.echo) -> int:
    """The command's body (also callable from Python): returns the exit code."""
    defaults, note = _config_defaults(base_dir)
    if note:
        echo(f"note: {note}", err=True)
    tokenizer = pick_tokenizer(model, no_model, defaults["model_path"])
    try:
        prof = load_profile(profile or defaults["profile"], defaults["profile_options"])
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--profile")
    report = validate_file(file, tokenizer=tokenizer, max_length=max_length or defaults["max_length"],
                           overlong_policy=policy or defaults["policy"],
                           drop_duplicates=defaults["drop_duplicates"] and not keep_duplicates,
                           max_line_bytes=defaults["max_line_bytes"], profile=prof, max_errors=max_errors,
                           loss_on=defaults["loss_on"])
    if as_json:
        echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        for line in format_issues(report):
            echo(line)
        if tokenizer is None:
            echo("note: no tokenizer (no --model, and config model.model_path has none): "
                 "token lengths were not checked", err=True)
        echo(report.summary())
    return 0 if report.ok else 1


@click.command("validate")
@click.option("--file", "file", required=True, type=click.Path(path_type=Path), help="The .jsonl file.")
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable report.")
@token_options
@click.option("--profile", default=None, help="Data profile to check against (default: config).")
@click.option("--keep-duplicates", is_flag=True, help="Report duplicates but keep them.")
@click.option("--max-errors", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Errors listed at most (all are counted).")
@click.option("--base-dir", default=None, help="Runtime base dir (for config.json).")
@click.pass_context
def validate_command(ctx: click.Context, file: Path, as_json: bool, model: Path | None, max_length: int | None,
                     no_model: bool, policy: str | None, profile: str | None, keep_duplicates: bool,
                     max_errors: int, base_dir: str | None) -> None:
    """Validate a training file. Exit 0: trainable; 1: not trainable."""
    ctx.exit(run(file, as_json=as_json, model=model, max_length=max_length, policy=policy, base_dir=base_dir,
                 profile=profile, keep_duplicates=keep_duplicates, max_errors=max_errors, no_model=no_model))

