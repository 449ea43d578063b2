"""End to end on the tiny model: a checkpoint trained on syllo data beats the untrained base on the
suite and is ranked first; a damaged copy of it is flagged; the status files carry their fields.

The training is a short plain PyTorch loop (labels on assistant tokens through the engine's
``tokenize_example``) so that the test measures the evaluators, not the engine. The answer format it
learns ("valid"/"invalid" then end of turn) is what makes the difference measurable in seconds: the
random base model never produces an answer at all.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from foundation.model_db import ModelDB
from foundation.paths import Paths
from syllo.suite import CURRENT_SUITE_VERSION, REPO_SUITE_DIR, load_suite

REPO = Path(__file__).resolve().parents[1]
N_ITEMS = 60


def _write_info(folder: Path, step: int, job: str, **extra) -> None:
    info = {"global_step": step, "job_id": job, "source_file": f"{job}.jsonl", "complete": True,
            "train_loss": extra.pop("train_loss", None), "validation_loss": None, "profile": "plain", **extra}
    (folder / "checkpoint_info.json").write_text(json.dumps(info))


def _train(model_dir: Path, out: Path, steps: int = 30, batch: int = 8) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from syllo.generator import generate_batch
    from syllo.suite import REPO_SUITE_DIR, validation_fingerprints
    from trainer.data.tokenization import tokenize_example
    torch.manual_seed(0)
    recs = generate_batch(steps * batch, "easy:0.5,medium:0.5", seed=1,
                          exclude=validation_fingerprints(REPO_SUITE_DIR))
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    items = [tokenize_example(tok, r, max_length=256) for r in recs]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    loss = None
    for s in range(steps):
        chunk = items[s * batch:(s + 1) * batch]
        L = max(len(it["input_ids"]) for it in chunk)
        ids = torch.full((len(chunk), L), tok.pad_token_id)
        lab = torch.full((len(chunk), L), -100)
        att = torch.zeros((len(chunk), L), dtype=torch.long)
        for r, it in enumerate(chunk):
            n = len(it["input_ids"])
            ids[r, :n], lab[r, :n], att[r, :n] = torch.tensor(it["input_ids"]), torch.tensor(it["labels"]), 1
        loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return float(loss.detach())


def _damage(src: Path, dst: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * (p.std() + 1e-3) * 2.0)
    model.save_pretrained(dst)
    for f in src.iterdir():
        if f.name.startswith("tokenizer") or f.name == "chat_template.jinja":
            shutil.copy2(f, dst / f.name)


@pytest.fixture(scope="module")
def trained_model(tiny_model_dir, tmp_path_factory) -> tuple[Path, float]:
    """The tiny model after a short training run on syllo data (once per module)."""
    out = tmp_path_factory.mktemp("syllo-trained") / "model"
    out.mkdir()
    return out, _train(tiny_model_dir, out)


def _configure(base_dir: Path, **evaluation) -> Paths:
    paths = Paths.from_base(base_dir)
    cfg = json.loads(paths.config_file.read_text())
    cfg["evaluation"] = {"max_items": N_ITEMS, "max_new_tokens": 8, "batch_size": 32, "interval": 1.0, **evaluation}
    cfg["monitoring"] = {"status_interval": 0.5}
    paths.config_file.write_text(json.dumps(cfg))
    return paths


@pytest.mark.slow
def test_trained_beats_base_ranked_first_damaged_flagged(base_dir, tiny_model_dir, trained_model, reaper):
    from syllo.suite import install_suite
    paths = _configure(base_dir)
    install_suite(base_dir)

    ck = paths.checkpoints
    base_ck = ck / "base" / "step-00000000"
    shutil.copytree(tiny_model_dir, base_ck)
    _write_info(base_ck, 0, "base")
    trained = ck / "syllo-job" / "step-00000030"
    shutil.copytree(trained_model[0], trained)
    final_loss = trained_model[1]
    _write_info(trained, 30, "syllo-job", train_loss=final_loss)
    damaged = ck / "syllo-job" / "step-00000040"
    damaged.mkdir(parents=True)
    _damage(trained, damaged)
    _write_info(damaged, 40, "syllo-job")
    incomplete = ck / "syllo-job" / "step-00000050"  # being written: no checkpoint_info.json
    shutil.copytree(trained, incomplete, ignore=shutil.ignore_patterns("checkpoint_info.json"))
    broken = ck / "broken" / "step-00000007"  # complete by its info, but the weights are garbage
    broken.mkdir(parents=True)
    shutil.copy2(tiny_model_dir / "config.json", broken / "config.json")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    _write_info(broken, 7, "broken")
    assert final_loss < 1.0

    status_file = paths.status_file("automated_testing.json")
    proc = reaper.popen([sys.executable, str(REPO / "monitoring" / "automated_testing_daemon.py"),
                         "--base-dir", str(base_dir), "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        text=True)
    reads = 0
    deadline = time.time() + 480
    while proc.poll() is None and time.time() < deadline:
        if status_file.exists():
            json.loads(status_file.read_text())  # a reader never sees partial JSON
            reads += 1
        time.sleep(0.2)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err[-3000:]
    assert reads > 0

    rel = lambda p: p.relative_to(base_dir).as_posix()  # noqa: E731
    db = ModelDB(paths.model_db, base_dir=base_dir)
    evals = {e["checkpoint_path"]: e for e in db.latest_evaluations(CURRENT_SUITE_VERSION)}
    assert set(evals) == {rel(base_ck), rel(trained), rel(damaged)}  # the incomplete folder is ignored
    assert db.get_checkpoint(incomplete) is None
    t, b, d = evals[rel(trained)], evals[rel(base_ck)], evals[rel(damaged)]
    assert all(e["n_items"] == N_ITEMS for e in (t, b, d))
    assert t["accuracy"] > b["accuracy"] and t["accuracy"] >= 0.3, (t["accuracy"], b["accuracy"])
    assert t["validation_loss"] < b["validation_loss"]
    assert t["validation_loss"] * 1.15 < d["validation_loss"]

    # status/automated_testing.json
    st = json.loads(status_file.read_text())
    for key in ("schema_version", "updated_at", "pid", "heartbeat_at", "state", "mode", "device", "dtype", "profile",
                "interval", "started_at", "suite_version", "suite_dir", "n_suite_items", "current", "pending",
                "n_pending", "evaluated_total", "last_result", "recent", "errors"):
        assert key in st, key
    assert st["state"] == "stopped" and st["evaluated_total"] == 3
    assert [e["checkpoint"] for e in st["errors"]] == [rel(broken)]  # reported, and the others still ran
    assert st["suite_version"] == CURRENT_SUITE_VERSION and st["n_suite_items"] == N_ITEMS and st["pid"] == proc.pid
    lr = st["last_result"]
    for key in ("checkpoint", "global_step", "accuracy", "n_items", "n_correct", "by_difficulty", "validation_loss",
                "ece", "duration_s", "evaluated_at", "n_failures", "failures"):
        assert key in lr, key
    assert set(lr["by_difficulty"]) == {"easy", "medium", "hard", "expert"}
    assert lr["n_failures"] == N_ITEMS - lr["n_correct"]
    assert all({"prompt", "expected", "got"} <= set(f) for f in lr["failures"])
    assert [r["checkpoint"] for r in st["recent"]][0] == lr["checkpoint"] and len(st["recent"]) == 3

    # status/model_comparisons.json
    cmp_ = json.loads(paths.status_file("model_comparisons.json").read_text())
    for key in ("schema_version", "updated_at", "suite_version", "weights", "score_formula", "n_ranked",
                "ranking", "best", "best_deployable"):
        assert key in cmp_, key
    assert cmp_["n_ranked"] == 3
    assert cmp_["ranking"][0]["checkpoint"] == rel(trained) and cmp_["best"]["checkpoint"] == rel(trained)
    assert cmp_["best_deployable"]["checkpoint"] == rel(trained)
    for key in ("rank", "checkpoint", "global_step", "job_id", "source_file", "score", "parts", "by_difficulty",
                "n_items", "evaluated_at", "flagged"):
        assert key in cmp_["ranking"][0], key
    assert {r["checkpoint"]: r["flagged"] for r in cmp_["ranking"]}[rel(damaged)] is True

    # status/regression_monitoring.json: the list the deployment orchestrator checks
    reg = json.loads(paths.status_file("regression_monitoring.json").read_text())
    for key in ("schema_version", "updated_at", "suite_version", "thresholds", "n_checked", "flagged", "alerts",
                "best_so_far"):
        assert key in reg, key
    assert reg["flagged"] == [rel(damaged)]
    assert {a["metric"] for a in reg["alerts"]} >= {"validation_loss"}
    for a in reg["alerts"]:
        assert a["checkpoint"] == rel(damaged) and a["best_checkpoint"] == rel(trained)
        assert {"global_step", "value", "best", "threshold", "message", "detected_at"} <= set(a)

    # status/confidence_calibration.json
    cal = json.loads(paths.status_file("confidence_calibration.json").read_text())
    for key in ("schema_version", "updated_at", "suite_version", "n_bins", "latest", "checkpoints"):
        assert key in cal, key
    assert cal["n_bins"] == 6 and len(cal["latest"]["bins"]) == 6
    assert sum(bn["count"] for bn in cal["latest"]["bins"]) == cal["latest"]["n"] == N_ITEMS
    assert len(cal["checkpoints"]) == 3

    # compare_models.py A B: from the registry, per difficulty
    cm = subprocess.run([sys.executable, str(REPO / "tools" / "analysis" / "compare_models.py"), str(base_ck),
                         str(trained), "--base-dir", str(base_dir), "--json"], capture_output=True, text=True,
                        timeout=120)
    assert cm.returncode == 0, cm.stderr[-2000:]
    doc = json.loads(cm.stdout)
    assert [r["difficulty"] for r in doc["by_difficulty"]] == ["easy", "medium", "hard", "expert"]
    assert doc["b"]["accuracy"] == t["accuracy"] and doc["b"]["score"] > doc["a"]["score"]
    assert sum(doc["agreement"].values()) == N_ITEMS

    # a second daemon on the same base dir is refused while one holds the lock
    from foundation.single_instance import SingleInstance
    lock = SingleInstance(paths.pids, "automated_testing").acquire()
    try:
        again = subprocess.run([sys.executable, str(REPO / "monitoring" / "automated_testing_daemon.py"),
                                "--base-dir", str(base_dir), "--once"], capture_output=True, text=True, timeout=120)
    finally:
        lock.release()
    assert again.returncode == 1 and str(os.getpid()) in again.stderr


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_local_evaluation_follows_inference_precision_and_bf16_scores_like_fp32(base_dir, trained_model):
    """The local evaluator loads the checkpoint in ``inference.precision`` (what the server serves)
    and records it; after the precision changes, the daemon evaluates the kept checkpoint again, once,
    so rankings compare the served numbers. bf16 scores the trained model as fp32 does (same suite,
    greedy): the validation loss within 2%, the accuracy within 5 points."""
    from monitoring.evaluation.daemon import AutomatedTester
    from trainer.config.loader import load_config
    paths = _configure(base_dir)
    served = paths.checkpoints / "syllo-job" / "step-00000030"
    shutil.copytree(trained_model[0], served)
    _write_info(served, 30, "syllo-job")
    db = ModelDB(paths.model_db, base_dir=base_dir)
    res = {}
    for precision, dtype in (("fp32", "float32"), ("bf16", "bfloat16")):
        cfg = load_config(base_dir=base_dir, environ={"TRAINER__INFERENCE__PRECISION": precision})
        tester = AutomatedTester(base_dir, cfg)
        assert tester.run_once() == 1  # fp32: never evaluated; bf16: evaluated, but in float32
        assert tester.run_once() == 0, precision  # evaluated in this dtype: not again
        status = json.loads(paths.status_file("automated_testing.json").read_text())
        assert status["dtype"] == dtype and status["n_pending"] == 0, status
        res[precision] = db.evaluations_for(served)[-1]
        assert res[precision]["details"]["dtype"] == dtype
        assert db.latest_evaluations(CURRENT_SUITE_VERSION)[-1]["id"] == res[precision]["id"]  # ranked now
    assert len(db.evaluations_for(served)) == 2
    f32, b16 = res["fp32"], res["bf16"]
    assert f32["accuracy"] > 0.2, f32["accuracy"]  # a model worth comparing on
    assert b16["validation_loss"] != f32["validation_loss"]  # the weights really were loaded in another dtype
    assert abs(b16["validation_loss"] - f32["validation_loss"]) <= 0.02 * f32["validation_loss"], \
        (b16["validation_loss"], f32["validation_loss"])
    assert abs(b16["accuracy"] - f32["accuracy"]) <= 0.05, (b16["accuracy"], f32["accuracy"])


@pytest.mark.slow
def test_server_mode_scores_what_the_server_serves(base_dir, trained_model, reaper):
    """Mode "server": the suite goes through the real inference server (prediction client), and the
    result is recorded against the checkpoint the server reports. Greedy decoding of the same weights
    must score like the local evaluation of that checkpoint."""
    from monitoring.evaluation.daemon import AutomatedTester
    from monitoring.evaluation.local_mode import evaluate_checkpoint
    from monitoring.prediction_client import PredictionClient
    from syllo.suite import load_suite, REPO_SUITE_DIR
    from trainer.config.loader import load_config
    port = _free_port()
    paths = _configure(base_dir, mode="server", server_url=f"http://127.0.0.1:{port}")
    served = paths.checkpoints / "syllo-job" / "step-00000031"
    shutil.copytree(trained_model[0], served)
    _write_info(served, 31, "syllo-job")
    server = reaper.popen([sys.executable, str(REPO / "inference" / "cli.py"), "--base-dir", str(base_dir),
                           "--port", str(port), "--model", str(served)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cfg = load_config(base_dir=base_dir)
    local = evaluate_checkpoint(served, load_suite(REPO_SUITE_DIR, max_items=N_ITEMS), cfg, base_dir=base_dir)
    client = PredictionClient(f"http://127.0.0.1:{port}", timeout=120)
    try:
        client.wait_ready(timeout=300)
    except Exception:
        server.kill()
        raise AssertionError(f"server did not start: {server.communicate(timeout=10)[1][-3000:]}")
    tester = AutomatedTester(base_dir, cfg, client=client)
    assert tester.run_once() == 1
    assert tester.run_once() == 0  # already evaluated on this suite version
    db = ModelDB(paths.model_db, base_dir=base_dir)
    ev = db.evaluations_for(served)
    assert len(ev) == 1 and ev[0]["global_step"] == 31 and ev[0]["n_items"] == N_ITEMS
    assert ev[0]["details"]["mode"] == "server" and ev[0]["validation_loss"] is None
    assert ev[0]["accuracy"] == local["accuracy"] > 0
    st = json.loads(paths.status_file("automated_testing.json").read_text())
    assert st["mode"] == "server" and st["last_result"]["checkpoint"] == "models/checkpoints/syllo-job/step-00000031"
    cmp_ = json.loads(paths.status_file("model_comparisons.json").read_text())
    assert cmp_["ranking"][0]["checkpoint"] == "models/checkpoints/syllo-job/step-00000031"
    assert cmp_["ranking"][0]["parts"]["validation_loss"] is None  # weights renormalised over what exists


def test_daemon_heartbeats_while_idle_and_stops_on_sigterm(base_dir, reaper):
    import signal
    paths = _configure(base_dir, interval=0.2, num_threads=1, nice=3)
    status = paths.status_file("automated_testing.json")
    proc = reaper.popen([sys.executable, str(REPO / "management" / "cli.py"), "eval", "daemon",
                         "--base-dir", str(base_dir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    beats = set()
    deadline = time.time() + 120
    while len(beats) < 3 and time.time() < deadline and proc.poll() is None:
        if status.exists():
            doc = json.loads(status.read_text())
            if doc["state"] == "idle":
                beats.add(doc["heartbeat_at"])
        time.sleep(0.1)
    assert len(beats) >= 3, proc.stderr.read() if proc.poll() is not None else beats
    assert (paths.pids / "automated_testing.pid").read_text().strip() == str(proc.pid)
    # evaluation.num_threads / evaluation.nice: one torch thread, 3 steps nicer than training
    assert doc["cpu_share"]["torch_threads"] == 1, doc.get("cpu_share")
    assert os.getpriority(os.PRIO_PROCESS, proc.pid) - os.getpriority(os.PRIO_PROCESS, 0) == 3
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert time.time() - t0 < 10
    doc = json.loads(status.read_text())
    assert doc["state"] == "stopped" and doc["evaluated_total"] == 0 and doc["pending"] == []
    assert not (paths.pids / "automated_testing.pid").exists()


def test_a_checkpoint_written_during_an_evaluation_is_evaluated_next(base_dir):
    """Newest first, re-discovered after every evaluation: while training keeps writing checkpoints,
    the evaluator turns to the newest one instead of working through an old backlog first."""
    from monitoring.evaluation.daemon import AutomatedTester
    paths = _configure(base_dir)

    def checkpoint(step: int) -> None:
        folder = paths.checkpoints / "job" / f"step-{step:08d}"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")
        (folder / "checkpoint_info.json").write_text(json.dumps({"complete": True, "global_step": step,
                                                                 "job_id": "job", "source_file": "a.jsonl"}))
    checkpoint(10)
    checkpoint(20)
    tester = AutomatedTester(base_dir)
    order: list[int] = []

    def evaluate(c, remaining):  # stands in for the model run; the scheduling is what is tested
        order.append(c["global_step"])
        if c["global_step"] == 20:
            checkpoint(30)  # training saved a newer one meanwhile
        tester.db.record_evaluation(c["abs_path"], tester.suite.version, 0.5,
                                    {"easy": {"n": 2, "correct": 1, "accuracy": 0.5}}, 2)
        return True
    tester._evaluate_one = evaluate
    assert tester.run_once() == 3
    assert order == [20, 30, 10]
