"""Shared fixtures. The tiny model is built once per session (seconds, no network)."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# Tests run trainer children, daemons and servers side by side on 2 cores: one intra-op thread
# per process avoids OpenMP oversubscription (a tiny-model forward goes from ~30 ms to ~1 s without it).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """The embedded default model, built once for the whole session."""
    from tools.models.make_tiny_model import build
    out = tmp_path_factory.mktemp("tiny-model") / "tiny-qwen3"
    build(out, seed=0)
    return out


def chat_records(n: int, seed: int = 0, min_words: int = 3, max_words: int = 30) -> list[dict]:
    """Distinct, learnable chat examples (the answer is a function of the question)."""
    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    out = []
    for i in range(n):
        k = rng.randint(min_words, max_words)
        q = " ".join(rng.choice(words) for _ in range(k))
        out.append({"messages": [
            {"role": "user", "content": f"Repeat #{i}: {q}"},
            {"role": "assistant", "content": q.upper()},
        ]})
    return out


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return path


@pytest.fixture
def base_dir(tmp_path, tiny_model_dir) -> Path:
    """A fresh runtime base dir with every folder and a config.json on the tiny model,
    sized for fast CPU tests."""
    from foundation.paths import Paths
    paths = Paths.from_base(tmp_path / "base").ensure()
    cfg = {
        "model": {"model_path": str(tiny_model_dir), "base_model": str(tiny_model_dir)},
        "training": {"per_device_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 2,
                     "logging_steps": 1, "save_steps": 10, "eval_steps": 10},
        "data": {"max_length": 128},
    }
    paths.config_file.write_text(json.dumps(cfg, indent=2))
    return paths.base


class ProcessReaper:
    """Tracks processes a test starts and ends every one of them (by PID) at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def popen(self, *args, **kwargs) -> subprocess.Popen:
        kwargs.setdefault("start_new_session", True)
        p = subprocess.Popen(*args, **kwargs)
        self.procs.append(p)
        return p

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except (ProcessLookupError, PermissionError):
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                p.wait(timeout=10)


@pytest.fixture
def reaper():
    r = ProcessReaper()
    yield r
    r.cleanup()
