"""The training engine on the real tiny model: loss goes down, checkpoints are complete,
resume continues the step count, control works at step boundaries, LoRA exports merged weights."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import chat_records, write_jsonl
from trainer.config.loader import config_to_dict, load_config
from trainer.engine.job import JobControl, TrainJob

REPO = Path(__file__).resolve().parents[1]


def _job(base: Path, dataset: Path, out: Path, **overrides) -> TrainJob:
    cfg = config_to_dict(load_config(base_dir=base, environ={}, overrides=overrides))
    return TrainJob(dataset=str(dataset), output_dir=str(out), model_path=cfg["model"]["model_path"],
                    config=cfg, source_file=dataset.name, status_file=str(base / "status/training_status.json"),
                    eval_dir=str(base / "data/validation"))


class StopAt(JobControl):
    def __init__(self, step: int, action: str):
        self.step, self.action, self.waited = step, action, 0

    def poll(self, global_step):
        return self.action if global_step == self.step else None

    def wait_resume(self):
        self.waited += 1
        return None


def test_lr_warmup_counts_global_steps_and_never_restarts():
    from trainer.engine.hf_trainer import lr_lambda_factory
    first = lr_lambda_factory("constant_with_warmup", warmup_steps=10, global_start=0, num_training_steps=20)
    later = lr_lambda_factory("constant_with_warmup", warmup_steps=10, global_start=20, num_training_steps=20)
    assert first(0) == pytest.approx(1 / 11) and first(9) == pytest.approx(10 / 11) and first(10) == 1.0
    assert later(0) == 1.0  # second file: no new warm-up
    mid = lr_lambda_factory("constant_with_warmup", warmup_steps=10, global_start=5, num_training_steps=20)
    assert mid(0) == pytest.approx(6 / 11)  # warm-up continues where the lineage is
    cos = lr_lambda_factory("cosine", warmup_steps=0, global_start=100, num_training_steps=10)
    assert cos(0) == 1.0 and cos(5) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0, abs=1e-12)


def test_30_steps_lower_loss_and_write_complete_checkpoints(base_dir):
    from transformers import AutoModelForCausalLM
    from trainer.engine.checkpoints import complete_checkpoints
    from trainer.engine.engine import TrainerEngine
    data = write_jsonl(base_dir / "train.jsonl", chat_records(64, seed=1))
    write_jsonl(base_dir / "data/validation/val.jsonl", chat_records(8, seed=99))
    out = base_dir / "models/checkpoints/job1"
    job = _job(base_dir, data, out, **{"training.max_steps": 30, "training.save_steps": 10,
                                       "training.eval_steps": 10, "training.logging_steps": 2})
    job.global_step_start = 100
    res = TrainerEngine().run_job(job)
    assert res.ok and res.stopped_reason is None
    assert res.global_step_start == 100 and res.global_step_end == 130 and res.steps == 30
    assert res.train_loss_last < res.train_loss_first * 0.8, (res.train_loss_first, res.train_loss_last)
    assert res.validation_loss is not None and math.isfinite(res.validation_loss)
    cps = complete_checkpoints(out)
    assert [p.name for p in cps] == ["step-00000110", "step-00000120", "step-00000130"]
    for cp in cps:
        names = {p.name for p in cp.iterdir()}
        assert {"model.safetensors", "config.json", "tokenizer.json", "optimizer.pt", "scheduler.pt",
                "trainer_state.json", "checkpoint_info.json"} <= names, names
        assert any(n.startswith("rng_state") for n in names)
        info = json.loads((cp / "checkpoint_info.json").read_text())
        assert info["complete"] is True and info["global_step"] == int(cp.name.split("-")[1])
        assert info["source_file"] == "train.jsonl"
    assert not list(out.glob("checkpoint-*"))  # nothing half-written left behind
    final = AutoModelForCausalLM.from_pretrained(res.final_model_dir)
    assert final.config.model_type == "qwen3"
    assert res.tokens > 0 and res.metrics["pad_share"] < 0.2
    # peak memory per job: in the result (the daemon copies metrics into x.result.json) and the status
    assert res.metrics["peak_rss_bytes"] > 50 * 2**20 and res.to_dict()["metrics"]["peak_rss_bytes"] > 0
    assert res.metrics["retained_freed_memory"] is True  # glibc here: training keeps its freed memory
    assert res.metrics["packed"] is False  # sdpa on CPU: length-grouped padding, not packing
    status = json.loads((base_dir / "status/training_status.json").read_text())
    assert status["peak_rss_bytes"] > 50 * 2**20 and "peak_cuda_bytes" in status


def test_resume_continues_step_count_and_ignores_incomplete_checkpoint(base_dir):
    from trainer.engine.checkpoints import complete_checkpoints
    from trainer.engine.engine import TrainerEngine
    data = write_jsonl(base_dir / "train.jsonl", chat_records(48, seed=2))
    out = base_dir / "models/checkpoints/job2"
    job = _job(base_dir, data, out, **{"training.max_steps": 12, "training.save_steps": 4,
                                       "training.eval_steps": 0})
    job.global_step_start = 50
    first = TrainerEngine().run_job(job, control=StopAt(57, "stop"))
    assert first.stopped_reason == "stop" and first.global_step_end == 57 and first.final_model_dir == ""
    assert [p.name for p in complete_checkpoints(out)][-1] == "step-00000057"
    # a checkpoint a killed process was writing: never chosen, removed
    (out / "checkpoint-9").mkdir()
    (out / "checkpoint-9" / "model.safetensors").write_bytes(b"partial")
    job.global_step_start = 0  # ignored: a job keeps the global start it began with
    second = TrainerEngine().run_job(job)
    assert second.resumed_from.endswith("step-00000057")
    assert second.global_step_start == 50 and second.global_step_end == 62 and second.steps == 12
    assert not (out / "checkpoint-9").exists()
    state = json.loads((out / "step-00000062" / "trainer_state.json").read_text())
    logged_steps = [h["step"] for h in state["log_history"] if "loss" in h]
    assert logged_steps == sorted(set(logged_steps))  # no step trained twice after the resume
    assert Path(second.final_model_dir, "model.safetensors").is_file()


def test_pause_checkpoints_then_waits_and_skip_ends_without_export(base_dir):
    from trainer.engine.checkpoints import complete_checkpoints
    from trainer.engine.engine import TrainerEngine
    data = write_jsonl(base_dir / "train.jsonl", chat_records(40, seed=3))
    out = base_dir / "models/checkpoints/job3"
    ctl = StopAt(3, "pause")
    res = TrainerEngine().run_job(_job(base_dir, data, out, **{"training.max_steps": 6, "training.save_steps": 100,
                                                               "training.eval_steps": 0}), control=ctl)
    assert ctl.waited == 1
    assert "step-00000003" in [p.name for p in complete_checkpoints(out)]
    assert res.global_step_end == 6 and res.stopped_reason is None
    out2 = base_dir / "models/checkpoints/job4"
    res = TrainerEngine().run_job(_job(base_dir, data, out2, **{"training.max_steps": 6, "training.eval_steps": 0}),
                                  control=StopAt(2, "skip"))
    assert res.stopped_reason == "skip" and res.global_step_end == 2 and res.final_model_dir == ""
    assert not (out2 / "final").exists()


def test_bad_dataset_raises_data_error_with_report(base_dir):
    from trainer.engine.engine import DataError, TrainerEngine
    bad = base_dir / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n')
    with pytest.raises(DataError) as ei:
        TrainerEngine().run_job(_job(base_dir, bad, base_dir / "models/checkpoints/bad"))
    lines = {e["line"] for e in ei.value.report["errors"]}
    assert lines == {1, 2}


def test_lora_exports_merged_full_weights(base_dir, tiny_model_dir):
    from transformers import AutoModelForCausalLM
    from trainer.engine.checkpoints import complete_checkpoints
    from trainer.engine.engine import TrainerEngine
    data = write_jsonl(base_dir / "train.jsonl", chat_records(32, seed=4))
    out = base_dir / "models/checkpoints/lora"
    res = TrainerEngine().run_job(_job(base_dir, data, out, **{
        "training.method": "lora", "training.max_steps": 4, "training.save_steps": 4, "training.eval_steps": 0,
        "training.learning_rate": 0.01, "training.lora": {"r": 4, "alpha": 8}}))
    cp = complete_checkpoints(out)[-1]
    info = json.loads((cp / "checkpoint_info.json").read_text())
    assert info["method"] == "lora" and (cp / info["model_dir"] / "model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(res.final_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert not any(k.startswith("base_model") or "lora" in k for k in merged.state_dict())
    diff = sum((merged.state_dict()[k] - v).abs().sum().item() for k, v in base.state_dict().items())
    assert diff > 0


@pytest.mark.slow
def test_train_cli_status_file_parses_while_training(base_dir, reaper):
    data = write_jsonl(base_dir / "train.jsonl", chat_records(96, seed=5))
    status = base_dir / "status/training_status.json"
    proc = reaper.popen([sys.executable, str(REPO / "core/train.py"), "--dataset", str(data),
                         "--base-dir", str(base_dir), "--max-steps", "40", "--set", "training.save_steps=20"],
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen_training, reads = [], 0
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        if status.exists():
            doc = json.loads(status.read_text())  # never partial JSON
            reads += 1
            if doc.get("status") == "training":
                seen_training.append(doc)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    result = json.loads(out)  # the result is all there is on stdout
    assert result["global_step_end"] == 40
    assert seen_training, f"no 'training' status seen in {reads} reads"
    doc = seen_training[-1]
    for key in ("status", "current_step", "total_steps", "epoch", "loss", "learning_rate", "validation_loss",
                "val_train_gap", "tokens_per_sec", "current_file", "eta_seconds", "started_at", "updated_at",
                "pid", "schema_version", "heartbeat_at"):
        assert key in doc, key
    assert doc["current_file"] == "train.jsonl" and doc["total_steps"] == 40
    final = json.loads(status.read_text())
    assert final["status"] == "completed" and final["current_step"] == 40
    # refuses to silently overwrite a job folder
    again = subprocess.run([sys.executable, str(REPO / "core/train.py"), "--dataset", str(data),
                            "--base-dir", str(base_dir), "--max-steps", "2"], capture_output=True, text=True)
    assert again.returncode != 0 and "--resume" in again.stderr


def test_train_cli_stdout_is_only_the_json_result(base_dir):
    """`core/train.py ... | jq .` works: the Trainer's log dicts (printed every logging step by its
    PrinterCallback) go to stderr, the job result alone to stdout."""
    data = write_jsonl(base_dir / "train.jsonl", chat_records(16, seed=8))
    p = subprocess.run([sys.executable, str(REPO / "core/train.py"), "--dataset", str(data),
                        "--base-dir", str(base_dir), "--max-steps", "3", "--status-file", "none",
                        "--set", "training.logging_steps=1", "--set", "training.eval_steps=0"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    result = json.loads(p.stdout)
    assert result["ok"] is True and result["global_step_end"] == 3
    assert "'loss'" in p.stderr  # the log lines still reach the operator, on stderr


def test_rerun_of_a_finished_job_trains_no_extra_step(base_dir):
    """Killed after the last checkpoint but before the export: a rerun exports, never trains on."""
    import shutil
    from transformers import AutoModelForCausalLM
    from trainer.engine.checkpoints import complete_checkpoints
    from trainer.engine.engine import TrainerEngine
    data = write_jsonl(base_dir / "train.jsonl", chat_records(24, seed=6))
    out = base_dir / "models/checkpoints/job5"
    job = _job(base_dir, data, out, **{"training.max_steps": 6, "training.save_steps": 3, "training.eval_steps": 0})
    first = TrainerEngine().run_job(job)
    assert first.global_step_end == 6
    shutil.rmtree(out / "final")
    again = TrainerEngine().run_job(job)
    assert again.global_step_end == 6 and again.steps == 6
    assert [p.name for p in complete_checkpoints(out)][-1] == "step-00000006"
    assert AutoModelForCausalLM.from_pretrained(again.final_model_dir).config.model_type == "qwen3"


def test_overlong_example_under_policy_fail_names_its_line(base_dir):
    from trainer.engine.engine import DataError, TrainerEngine
    recs = chat_records(6, seed=7, max_words=5)
    recs[3]["messages"][1]["content"] = " ".join(["delta"] * 400)  # far beyond max_length 128
    data = write_jsonl(base_dir / "long.jsonl", recs)
    with pytest.raises(DataError) as ei:
        TrainerEngine().run_job(_job(base_dir, data, base_dir / "models/checkpoints/long",
                                     **{"data.overlong_policy": "fail"}))
    assert [(e["line"], e["reason"]) for e in ei.value.report["errors"]] == [(4, "overlong")]


def _batch(tok, n: int, seed: int):
    from trainer.data.tokenization import tokenize_example
    return [tokenize_example(tok, r, max_length=128, loss_on="assistant")
            for r in chat_records(n, seed=seed, max_words=20)]


def test_label_only_loss_and_grads_equal_the_models_own(tiny_model_dir):
    """The engine's loss (logits at label positions only) is the model's loss, padded or packed."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trainer.data.batching import PackCollator, PadCollator
    from trainer.engine.loss import label_only_loss
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    feats = _batch(tok, 5, seed=11)
    padded = PadCollator(tok.pad_token_id)(feats)
    n_items = (padded["labels"][:, 1:] != -100).sum()

    def loss_and_grad(fn):
        model.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        return loss.item(), model.get_output_embeddings().weight.grad.clone()

    ref, ref_g = loss_and_grad(lambda: model(**padded, num_items_in_batch=n_items, use_cache=False).loss)
    ours, ours_g = loss_and_grad(lambda: label_only_loss(model, padded, n_items))
    packed, packed_g = loss_and_grad(lambda: label_only_loss(model, PackCollator()(feats), n_items))
    mean = label_only_loss(model, padded, None).item()
    assert ours == pytest.approx(ref, abs=1e-5) and packed == pytest.approx(ref, abs=1e-5)
    assert mean == pytest.approx(model(**padded, use_cache=False).loss.item(), abs=1e-5)
    assert torch.allclose(ours_g, ref_g, atol=1e-5) and torch.allclose(packed_g, ref_g, atol=1e-5)
