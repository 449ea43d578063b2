"""``trainctl model init-tiny``: build the embedded default model."""
from __future__ import annotations

import click


@click.group("model")
def model_group() -> None:
    """The embedded default model."""


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
