"""Load one model version for serving, and find which folder a version name means.

A ``LoadedModel`` is immutable once built: hot reload builds a second one beside it and the server
swaps a single reference, so requests already bound to the old one finish on it untouched.

Where versions live (see REMOTE_INFERENCE.md):
  models/deployed/<version>/   a HF model folder (safetensors) + deploy_info.json
  models/deployed/current      a one-line text file naming the active version
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation import deployed_versions
from foundation.deployed_versions import BASE_VERSION, VersionError, read_current_version  # noqa: F401
from foundation.device import dtype_name, model_dtype, resolve_device
from foundation.paths import Paths, is_within
from inference.errors import APIError, INVALID_REQUEST, NOT_FOUND
from inference import profile_adapter
from trainer.generation.packed_linear import pack_linears
from trainer.generation.target import cache_kwarg_name, pad_token_id, supports_row_merge
from trainer.profiles.generation import eos_token_ids

log = logging.getLogger("inference.loader")


@dataclass
class LoadedModel:
    """A model, its tokenizer and profile, plus the facts /models/info reports."""

    model: Any
    tokenizer: Any
    profile: Any
    model_id: str
    version: str
    path: Path
    global_step: int | None
    loaded_at: float
    load_seconds: float
    parameters: int
    dtype: str
    device: str
    profile_name: str
    system_prompt: str | None
    context_window: int
    eos_ids: frozenset
    pad_id: int
    stop_sequences: list[str]
    cache_kwarg: str
    supports_merge: bool
    meta: dict = field(default_factory=dict)
    packed_linears: int = 0  # linear layers prepacked for oneDNN (``trainer.generation.packed_linear``)

    def info(self, base: Path | None = None) -> dict:
        try:
            shown = str(self.path.relative_to(base)) if base else str(self.path)
        except ValueError:
            shown = str(self.path)
        return {
            "model_id": self.model_id,
            "version": self.version,
            "path": shown,
            "global_step": self.global_step,
            "profile": self.profile_name,
            "loaded_at": _iso(self.loaded_at),
            "load_seconds": round(self.load_seconds, 3),
            "parameters": self.parameters,
            "dtype": self.dtype,
            "device": self.device,
            "context_window": self.context_window,
            "packed_linears": self.packed_linears,
            "checkpoint": self.meta.get("checkpoint"),
            "job_id": self.meta.get("job_id"),
        }


def _iso(ts: float) -> str:
    from foundation.status_io import utc_now_iso
    return utc_now_iso(lambda: ts)


# ------------------------------------------------------------------ version -> folder
def resolve_version(paths: Paths, version: str, model_dir: str = "models/deployed") -> Path:
    """Folder of a deployed version (``foundation.deployed_versions``), errors as API errors."""
    try:
        return deployed_versions.resolve_version(paths, version, model_dir)
    except VersionError as e:
        raise APIError(e.status, e.message, INVALID_REQUEST if e.status == 400 else NOT_FOUND, "version",
                       e.reason) from None


def resolve_model_path(paths: Paths, raw: str) -> Path:
    """A model folder named by path in a reload request: it must lie inside ``models/``."""
    if not isinstance(raw, str) or not raw:
        raise APIError(400, "'path' must be a non-empty string", INVALID_REQUEST, "path", "invalid_type")
    p = paths.resolve(raw)
    if not is_within(paths.models, p):
        raise APIError(400, f"path {raw!r} is outside the models folder {paths.models}", INVALID_REQUEST,
                       "path", "path_outside_models")
    p = p.resolve()
    if not (p / "config.json").is_file():
        raise APIError(404, f"no model folder at {raw!r} (config.json missing)", NOT_FOUND, "path",
                       "model_not_found")
    return p


def read_model_meta(folder: Path) -> dict:
    """deploy_info.json (deployed version) or checkpoint_info.json (raw checkpoint), whichever exists."""
    meta: dict = {}
    for name in ("checkpoint_info.json", "deploy_info.json"):
        try:
            doc = json.loads((folder / name).read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(doc, dict):
            meta.update(doc)
    return meta


# ------------------------------------------------------------------ loading
def load_model(folder: str | Path, *, version: str, model_id: str, device: str = "auto", precision: str = "auto",
               profile_name: str = "plain", profile_options: dict | None = None,
               system_prompt: str | None = None, trust_remote_code: bool = False) -> LoadedModel:
    """Load a HF causal LM folder (safetensors only) ready for the batcher."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no tqdm bars in a server log
    t0 = time.perf_counter()
    folder = Path(folder)
    # foundation.device's rule, so that the evaluator scores the same numeric model as served here
    dev = resolve_device(device, key="inference.device")
    dtype = model_dtype(dev, precision)
    if not any(folder.glob("*.safetensors")):
        raise ValueError(f"{folder} has no *.safetensors weights (only safetensors are loaded)")
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, use_safetensors=True,
                                                 trust_remote_code=trust_remote_code)
    model.to(dev)
    model.eval()
    packed = pack_linears(model)
    if tokenizer.chat_template is None:
        raise ValueError(f"{folder}: the tokenizer has no chat template")

    eos = eos_token_ids(model, tokenizer)
    pad = pad_token_id(tokenizer, eos)

    ctx = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    tmax = getattr(tokenizer, "model_max_length", None)
    if isinstance(tmax, int) and 0 < tmax < 10**8:
        ctx = min(ctx, tmax) if ctx else tmax
    if ctx <= 0:
        ctx = 2048

    profile = profile_adapter.load_profile(profile_name, profile_options)
    meta = read_model_meta(folder)
    step = meta.get("global_step")
    return LoadedModel(
        model=model, tokenizer=tokenizer, profile=profile, model_id=model_id, version=version,
        path=folder.resolve(), global_step=step if isinstance(step, int) else None,
        loaded_at=time.time(), load_seconds=time.perf_counter() - t0,
        parameters=sum(p.numel() for p in model.parameters()), dtype=dtype_name(dtype),
        device=dev, profile_name=getattr(profile, "name", profile_name) or profile_name,
        system_prompt=system_prompt or None, context_window=ctx, eos_ids=frozenset(eos), pad_id=int(pad),
        stop_sequences=profile_adapter.stop_sequences(profile), cache_kwarg=cache_kwarg_name(model),
        supports_merge=supports_row_merge(model), meta=meta, packed_linears=packed,
    )
