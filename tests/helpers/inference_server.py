"""Helpers shared by the inference/deployment tests and benchmarks: a runtime base dir, checkpoint
folders in the trainer's format, and a real server subprocess on a free 127.0.0.1 port.

Kept in the package (not in tests/) because ``bench/serve_*.py`` use them too.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_base_dir(root: str | os.PathLike, model_dir: str | os.PathLike, config: dict | None = None) -> Path:
    """A runtime base dir with every folder and a config.json whose base model is ``model_dir``."""
    from foundation.paths import Paths
    from trainer.config.loader import deep_merge
    paths = Paths.from_base(root).ensure()
    cfg = {"model": {"model_path": str(model_dir), "base_model": str(model_dir)}}
    cfg = deep_merge(cfg, config or {})
    paths.config_file.write_text(json.dumps(cfg, indent=2))
    return paths.base


def make_checkpoint(model_dir: str | os.PathLike, base_dir: str | os.PathLike, job_id: str, global_step: int, *,
                    noise: float = 0.0, seed: int = 0, nan: bool = False, complete: bool = True,
                    corrupt: bool = False, source_file: str = "train.jsonl") -> Path:
    """A checkpoint folder ``models/checkpoints/<job_id>/step-<step:08d>/`` like the trainer writes:
    HF model files (weights optionally perturbed, or made NaN) + checkpoint_info.json."""
    import torch
    from safetensors.torch import load_file, save_file

    src = Path(model_dir)
    folder = Path(base_dir) / "models" / "checkpoints" / job_id / f"step-{global_step:08d}"
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix != ".safetensors":
            shutil.copy2(f, tmp / f.name)
    for w in src.glob("*.safetensors"):
        tensors = load_file(str(w))
        if noise or nan:
            g = torch.Generator().manual_seed(seed)
            for k, t in tensors.items():
                if nan:
                    tensors[k] = torch.full_like(t, float("nan"))
                elif t.is_floating_point():
                    tensors[k] = t + noise * torch.randn(t.shape, generator=g, dtype=t.dtype)
        if corrupt:
            (tmp / w.name).write_bytes(b"this is not a safetensors file")
        else:
            save_file(tensors, str(tmp / w.name), metadata={"format": "pt"})
    info = {"global_step": global_step, "job_id": job_id, "source_file": source_file, "complete": complete}
    (tmp / "checkpoint_info.json").write_text(json.dumps(info))
    shutil.rmtree(folder, ignore_errors=True)
    os.rename(tmp, folder)
    return folder


def deploy_version(src: str | os.PathLike, base_dir: str | os.PathLike, version: str, *,
                   make_current: bool = False, global_step: int | None = None) -> Path:
    """Put a model folder straight into models/deployed/<version>/ (tests that do not need the
    orchestrator)."""
    dst = Path(base_dir) / "models" / "deployed" / version
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)
    (dst / "deploy_info.json").write_text(json.dumps({"version": version, "global_step": global_step,
                                                      "checkpoint": None}))
    if make_current:
        (dst.parent / "current").write_text(version + "\n")
    return dst


def write_rankings(base_dir: str | os.PathLike, checkpoints: list[tuple[Path, float]]) -> None:
    """status/model_comparisons.json in the comparison engine's format (``ranking``, best first)."""
    from foundation.status_io import write_status
    base = Path(base_dir).resolve()
    rows = []
    for rank, (folder, score) in enumerate(sorted(checkpoints, key=lambda t: -t[1]), start=1):
        info = json.loads((folder / "checkpoint_info.json").read_text())
        rows.append({"rank": rank, "checkpoint": str(folder.resolve().relative_to(base)),
                     "global_step": info["global_step"], "score": score, "flagged": False})
    write_status(base / "status" / "model_comparisons.json",
                 {"ranking": rows, "n_ranked": len(rows), "best": rows[0] if rows else None}, daemon=False)


def write_flagged(base_dir: str | os.PathLike, flagged: list[Path]) -> None:
    from foundation.status_io import write_status
    base = Path(base_dir).resolve()
    rels = [str(Path(f).resolve().relative_to(base)) for f in flagged]
    write_status(base / "status" / "regression_monitoring.json",
                 {"alerts": [{"checkpoint": r, "metric": "validation_loss"} for r in rels], "flagged": rels},
                 daemon=False)


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM the process group a helper started (start_new_session=True), SIGKILL after
    ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait(10)


class ServerProcess:
    """``python3 inference/cli.py`` as a real subprocess in its own process group."""

    def __init__(self, base_dir: str | os.PathLike, *args: str, port: int | None = None,
                 env: dict | None = None, log_path: str | os.PathLike | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_dir = Path(base_dir)
        full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    # one torch thread: on a small shared CPU, competing OpenMP threads are far slower
                    "OMP_NUM_THREADS": "1", **(env or {})}
        self.log_path = Path(log_path) if log_path else self.base_dir / "logs" / f"server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        cmd = [sys.executable, str(REPO / "inference" / "cli.py"), "--base-dir", str(self.base_dir),
               "--port", str(self.port), "--log-level", "warning", *args]
        self.proc = subprocess.Popen(cmd, cwd=str(REPO), env=full_env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait_ready(self, timeout: float = 120.0, need_model: bool = True) -> dict:
        import httpx
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                r = httpx.get(self.url + "/health", timeout=5)
                last = r.text
                if r.status_code == 200 or (not need_model and r.status_code == 503):
                    return r.json()
            except httpx.HTTPError as e:
                last = e
            time.sleep(0.1)
        raise TimeoutError(f"server on {self.url} not ready after {timeout}s ({last}):\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        stop_process_group(self.proc, timeout)
        self._log.close()

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
