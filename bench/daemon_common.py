"""Shared set-up for the benchmarks (mostly the daemon ones): a throw-away base dir on the embedded
tiny model, a daemon process started/stopped by PID, and drop/wait/file helpers. Not a benchmark."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def make_base(config_patch: dict | None = None) -> Path:
    """A fresh base dir with the tiny model built into it (seconds, no network)."""
    from foundation.paths import Paths
    from tools.models.make_tiny_model import build
    root = Path(tempfile.mkdtemp(prefix="daemon-bench-"))
    model = root / "tiny-qwen3"
    build(model, seed=0)
    paths = Paths.from_base(root / "base").ensure()
    cfg = {"model": {"model_path": str(model), "base_model": str(model)},
           "training": {"per_device_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 2, "logging_steps": 1,
                        "save_steps": 1000, "eval_steps": 0, "max_steps": 3},
           "data": {"max_length": 128},
           "daemon": {"heartbeat_interval": 2.0, "file_stable_seconds": 0.5}}
    for section, values in (config_patch or {}).items():
        cfg.setdefault(section, {}).update(values)
    paths.config_file.write_text(json.dumps(cfg, indent=2))
    return paths.base


def set_config(base: Path, section: str, **values) -> None:
    cfg = json.loads((base / "config.json").read_text())
    cfg.setdefault(section, {}).update(values)
    (base / "config.json").write_text(json.dumps(cfg, indent=2))


def records(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    out = []
    for i in range(n):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(3, 30)))
        out.append({"messages": [{"role": "user", "content": f"Repeat #{i}: {q}"},
                                 {"role": "assistant", "content": q.upper()}]})
    return out


def write_file(path: Path, recs: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))


def drop(base: Path, name: str, recs: list[dict]) -> float:
    """Write beside the inbox, then rename in (complete by construction); returns the drop time."""
    tmp = base / "inbox" / f".{name}.tmp"
    write_file(tmp, recs)
    t = time.time()
    os.rename(tmp, base / "inbox" / name)
    return t


def start_daemon(base: Path) -> subprocess.Popen:
    log = open(base / "logs" / "bench_daemon.out", "ab")
    return subprocess.Popen([sys.executable, str(REPO / "core" / "training_daemon.py"), "start", "--base-dir",
                             str(base), "--quiet"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_daemon(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def status(base: Path) -> dict:
    try:
        return json.loads((base / "status" / "training_status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_for(pred, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def result(base: Path, name: str) -> dict | None:
    p = base / "queue" / "recently_completed" / (name[:-6] + ".result.json")
    try:
        return json.loads(p.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def child_ready(base: Path) -> bool:
    st = status(base)
    ch = st.get("trainer_child") or {}
    return st.get("state") == "idle" and ch.get("state") == "ready"
