"""Which files of a checkpoint folder make a loadable Hugging Face model (config, safetensors
weights, tokenizer, chat template), as opposed to training state (optimizer, scheduler, RNG,
trainer state) that only resuming needs. Used wherever a model is copied out of a checkpoint."""
from __future__ import annotations

from pathlib import Path

MODEL_SUFFIXES = (".json", ".safetensors", ".jinja", ".txt", ".model", ".tiktoken")
TRAINING_STATE_FILES = {"trainer_state.json"}


def model_files(folder: Path, skip: set[str] | frozenset[str] = frozenset()) -> list[Path]:
    """The model files directly in ``folder`` (checkpoint_info.json included, as the model's
    metadata, unless named in ``skip``), sorted by name."""
    return [f for f in sorted(Path(folder).iterdir())
            if f.is_file() and f.suffix in MODEL_SUFFIXES and f.name not in TRAINING_STATE_FILES
            and f.name not in skip]
