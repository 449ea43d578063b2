"""Load what an evaluation needs: the profile, and a checkpoint's model and tokenizer.

Device and dtype follow ``foundation.device`` (the rule the inference server uses too), so the
evaluator scores the same numeric model the server serves.
"""
from __future__ import annotations

import os
from pathlib import Path

from foundation.device import model_dtype
from monitoring.evaluation.checkpoints import model_dir_of
from trainer.generation.packed_linear import pack_linears
from trainer.profiles import DataProfile, get_profile


def load_profile(name: str, options: dict | None = None) -> DataProfile:
    return get_profile(name, options or {})


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / n).exists() for n in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


def load_checkpoint(folder: str | os.PathLike, device: str = "cpu", fallback_tokenizer: str | None = None,
                    precision: str = "auto"):
    """(model in eval mode on ``device``, tokenizer) of a checkpoint folder (or any HF model folder).
    ``device`` is a concrete one (``foundation.device.resolve_device``); ``precision`` is
    ``inference.precision``, so that the evaluator scores the model as the server serves it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    folder = Path(folder)
    mdir = model_dir_of(folder)
    if not (mdir / "config.json").is_file():
        raise FileNotFoundError(f"{mdir}: no config.json (not a model folder)")
    model = AutoModelForCausalLM.from_pretrained(str(mdir), dtype=model_dtype(device, precision))
    model.to(device)
    model.eval()
    pack_linears(model)  # as the server does (``inference.model_loader``): the same numbers, faster
    tok_dir = mdir if _has_tokenizer(mdir) else (folder if _has_tokenizer(folder) else fallback_tokenizer)
    if tok_dir is None:
        raise FileNotFoundError(f"{folder}: no tokenizer files and no fallback tokenizer")
    tok = AutoTokenizer.from_pretrained(str(tok_dir))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok
