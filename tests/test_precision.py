"""Precision on the CPU: "auto" picks bf16 where the CPU computes bf16 in hardware. Training runs
bf16 mixed precision over fp32 master weights (checkpoints stay fp32); serving and the local
evaluator load bf16 weights, or fp32 when ``inference.precision`` says so."""
from __future__ import annotations

from pathlib import Path

import pytest

from foundation import device as dev
from tests.conftest import chat_records, write_jsonl
from trainer.config.loader import config_to_dict, load_config
from trainer.engine.job import TrainJob

FLAGS = "fpu vme de pse tsc msr pae avx2 avx512f avx512bw"


def _cpuinfo(tmp_path: Path, flags: str) -> str:
    p = tmp_path / "cpuinfo"
    p.write_text(f"processor\t: 0\nmodel name\t: Test CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    return str(p)


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path):
    assert dev.cpu_has_native_bf16(_cpuinfo(tmp_path, FLAGS + " avx512_bf16")) is True
    assert dev.cpu_has_native_bf16(_cpuinfo(tmp_path, FLAGS + " amx_tile amx_bf16")) is True
    assert dev.cpu_has_native_bf16(_cpuinfo(tmp_path, FLAGS)) is False  # AVX-512 alone emulates bf16
    assert dev.cpu_has_native_bf16(str(tmp_path / "missing")) is False


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_on_cpu(monkeypatch, native):
    import torch
    monkeypatch.setattr(dev, "_this_cpu_has_native_bf16", lambda: native)
    assert dev.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    assert dev.resolve_precision("fp32", "cpu") == "fp32"  # an explicit choice wins
    assert dev.model_dtype("cpu") == (torch.bfloat16 if native else torch.float32)  # serving, evaluation
    assert dev.model_dtype("cpu", "fp32") == torch.float32
    assert dev.load_dtype("bf16", training=True, device="cpu") == torch.float32  # master weights
    assert dev.load_dtype("bf16", training=True, device="cuda") == torch.bfloat16
    assert dev.load_dtype("bf16") == torch.bfloat16


def test_bf16_training_on_cpu_keeps_fp32_checkpoints(base_dir):
    from safetensors import safe_open
    from trainer.engine.engine import TrainerEngine
    data = write_jsonl(base_dir / "train.jsonl", chat_records(32, seed=3))
    cfg = config_to_dict(load_config(base_dir=base_dir, environ={}, overrides={
        "training.max_steps": 6, "training.save_steps": 6, "training.precision": "bf16",
        "training.device": "cpu", "training.logging_steps": 1}))
    out = base_dir / "models/checkpoints/bf16"
    res = TrainerEngine().run_job(TrainJob(dataset=str(data), output_dir=str(out), model_path=cfg["model"]["model_path"],
                                           config=cfg, source_file=data.name, eval_dir=str(base_dir / "none")))
    assert res.ok and res.steps == 6 and res.metrics["precision"] == "bf16" and res.metrics["device"] == "cpu"
    assert res.train_loss_last < res.train_loss_first, (res.train_loss_first, res.train_loss_last)
    with safe_open(str(Path(res.final_model_dir) / "model.safetensors"), framework="pt") as f:
        dtypes = {str(f.get_slice(k).get_dtype()) for k in f.keys()}
    assert dtypes == {"F32"}, dtypes
