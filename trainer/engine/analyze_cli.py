"""What is in a training file, measured with the configured model's tokenizer and chat template.

    python3 tools/data/analyze_training_data.py FILE|DIR [FILE|DIR ...] [--json] [--plot OUT.png]
        [--model DIR | --no-model] [--max-length N] [--policy truncate|drop|fail]
        [--no-trained] [--base-dir DIR]
    trainctl data analyze inbox/x.jsonl

Figures and their definitions: ``trainer.data.analysis``. Defaults (max length, over-long policy,
loss mask, duplicates, profile, system prompt, model) come from config.json. Exit 0: every file
analysed cleanly; 1: some file has a bad line or no example (each is printed to stderr as
``file:line: reason: message``; the rest of the file is still analysed); 2: usage error.
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from trainer.engine.validate_cli import load_profile, pick_tokenizer, token_options


def _settings(base_dir: str | None, max_length: int | None, policy: str | None):
    """(AnalysisSettings, model path, note) from config.json (built-in defaults when it is broken)."""
    from foundation.paths import Paths
    from trainer.config.loader import ConfigError, load_config
    from trainer.config.schema import Config
    from trainer.data.analysis import AnalysisSettings
    note = None
    try:
        cfg = load_config(base_dir=base_dir)
    except ConfigError as e:
        cfg, note = Config(), f"config not used ({e}); using built-in defaults"
    d = cfg.data
    try:
        profile = load_profile(cfg.profile.name, dict(cfg.profile.options))
    except ValueError as e:
        raise click.ClickException(f"profile: {e}")
    system_prompt = profile.render_system_prompt(cfg.profile.system_prompt or None) if profile else None
    s = AnalysisSettings(max_length=max_length or d.max_length, overlong_policy=policy or d.overlong_policy,
                         loss_on=d.loss_on, drop_duplicates=d.drop_duplicates, max_line_bytes=d.max_line_bytes,
                         profile=profile, system_prompt=system_prompt or None)
    return s, Paths.from_base(base_dir).resolve(cfg.model.model_path), note


def run(paths: list[Path], *, as_json: bool = False, plot: Path | None = None, model: Path | None = None,
        no_model: bool = False, max_length: int | None = None, policy: str | None = None,
        trained: bool = True, base_dir: str | None = None, progress: bool | None = None) -> int:
    """The command's body (also callable from Python): returns the exit code."""
    from trainer.data.analysis import AnalysisError, analyze_paths, collect_files
    from trainer.data.analysis_report import render_text, write_plot
    from trainer.data.trained_files import load_trained_index
    settings, model_path, note = _settings(base_dir, max_length, policy)
    if note:
        click.echo(f"note: {note}", err=True)
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # "sequence longer than the model's maximum" is what we report, per line
    tokenizer = pick_tokenizer(model, no_model, model_path)
    if tokenizer is None:
        click.echo("note: no tokenizer (no --model, and config model.model_path has none): "
                   "token figures are not measured", err=True)
    try:
        files = [f for p in paths for f in collect_files(p)]
        index = (load_trained_index(base_dir, exclude=files, near_threshold=settings.near_threshold,
                                    near_capacity=settings.near_capacity, max_line_bytes=settings.max_line_bytes)
                 if trained else None)
        report = analyze_paths(files, tokenizer, settings, trained=index, progress=progress)
    except AnalysisError as e:
        raise click.ClickException(str(e))
    for r in report["files"]:
        for e in r["errors"]:
            click.echo(f"{r['path']}:{e['line']}: {e['field'] or '<line>'}: {e['reason']}: {e['message']}", err=True)
        if r["n_errors"] > len(r["errors"]):
            click.echo(f"{r['path']}: ... {r['n_errors'] - len(r['errors'])} more error(s)", err=True)
    if plot is not None:
        try:
            write_plot(report, plot)
        except ImportError:
            raise click.ClickException("--plot needs matplotlib: pip install -e '.[analysis]'")
        report["plot"] = str(plot)
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        click.echo(render_text(report), nl=False)
        if plot is not None:
            click.echo(f"plot written to {plot}")
    return 0 if report["total"]["ok"] else 1


@click.command("analyze")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the machine-readable report.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write a PNG of the length histogram and the mixes (needs matplotlib).")
@token_options
@click.option("--no-trained", is_flag=True, help="Do not compare with the files already trained.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr (default: when a terminal).")
@click.option("--base-dir", default=None, help="Runtime base dir (config.json, queue/, model_db).")
@click.pass_context
def analyze_command(ctx: click.Context, paths: tuple[Path, ...], as_json: bool, plot: Path | None,
                    model: Path | None, no_model: bool, max_length: int | None, policy: str | None,
                    no_trained: bool, progress: bool | None, base_dir: str | None) -> None:
    """Analyse training data: examples, token lengths, loss share, duplicates, anomalies, syllo balance."""
    ctx.exit(run(list(paths), as_json=as_json, plot=plot, model=model, no_model=no_model, max_length=max_length,
                 policy=policy, trained=not no_trained, base_dir=base_dir, progress=progress))
