#!/usr/bin/env python3
"""Merge a LoRA adapter into its base model: one ordinary safetensors model folder.

    python3 management/consolidate_model.py ADAPTER_DIR OUTPUT_DIR [--base-model DIR]
    trainctl consolidate ADAPTER_DIR OUTPUT_DIR

``ADAPTER_DIR`` is a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``); the
base model is the one its ``adapter_config.json`` names unless ``--base-model`` is given. peft's
``merge_and_unload`` folds the adapter into the weights; the result (weights + tokenizer) is written
to ``OUTPUT_DIR.tmp-*`` and renamed, so OUTPUT_DIR is never half-written. It then loads with plain
``from_pretrained`` (no peft), which is what evaluation, deployment and serving need.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import click

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class ConsolidateError(ValueError):
    pass


def consolidate(adapter_dir: str | os.PathLike, output_dir: str | os.PathLike,
                base_model: str | os.PathLike | None = None) -> Path:
    adapter_dir, out = Path(adapter_dir), Path(output_dir)
    cfg_file = adapter_dir / "adapter_config.json"
    if not cfg_file.is_file():
        raise ConsolidateError(f"{adapter_dir}: no adapter_config.json (not a PEFT adapter folder)")
    if out.exists():
        raise ConsolidateError(f"{out} exists already; choose a new output folder")
    base = Path(base_model) if base_model else Path(json.loads(cfg_file.read_text())["base_model_name_or_path"])
    if not (base / "config.json").is_file():
        raise ConsolidateError(f"base model {base} has no config.json (pass --base-model)")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    tok_src = adapter_dir if (adapter_dir / "tokenizer_config.json").is_file() else base
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        AutoTokenizer.from_pretrained(tok_src).save_pretrained(tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


@click.command("consolidate")
@click.argument("adapter_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("output_dir", type=click.Path())
@click.option("--base-model", type=click.Path(exists=True, file_okay=False), default=None,
              help="Base model folder (default: the one adapter_config.json names).")
def consolidate_command(adapter_dir: str, output_dir: str, base_model: str | None) -> None:
    """Merge the LoRA adapter ADAPTER_DIR into its base model, written to OUTPUT_DIR (safetensors)."""
    try:
        click.echo(consolidate(adapter_dir, output_dir, base_model))
    except ConsolidateError as e:
        raise click.ClickException(str(e)) from None


main = consolidate_command

if __name__ == "__main__":
    main()
