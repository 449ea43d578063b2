"""The deployment orchestrator against a real inference server subprocess and real checkpoints.

Checkpoints are the tiny model with perturbed weights, written in the trainer's folder format;
rankings and regression flags are written the way the evaluation sidecars write them (the contract
with the real evaluation sidecars is tests/test_deploy_contract.py).

One server process serves the whole module (it takes seconds to start), but no test depends on
another: the ``env`` fixture brings the server back to the base model and empties the deployed
versions, checkpoints and status files before every test, and asserts that it did.
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from foundation.atomic_io import read_json
from tests.helpers.inference_server import REPO, ServerProcess, make_base_dir, make_checkpoint, write_flagged, write_rankings
from tests.helpers.waiting import wait_for
from monitoring.deployment.orchestrator import DeploymentOrchestrator
from monitoring.deployment.versions import version_name
from monitoring.prediction_client import PredictionClient
from trainer.config.loader import load_config

CFG = {"deployment": {"smoke_max_tokens": 4, "poll_interval": 0.1, "interval": 30}}
# every file the orchestrator or the (simulated) evaluation sidecars write
STATUS_FILES = ("deployment_status", "deployment_history", "last_deployment", "model_comparisons",
                "regression_monitoring")


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    base = make_base_dir(tmp_path_factory.mktemp("deploy") / "base", tiny_model_dir, CFG)
    srv = ServerProcess(base)
    try:
        srv.wait_ready()
        yield base, srv
    finally:
        srv.stop()


def _empty(folder: Path) -> None:
    for p in folder.iterdir() if folder.is_dir() else []:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink()


@pytest.fixture
def env(server):
    """The module's server, reset: serving the base model, nothing deployed, no checkpoints, no
    deployment/evaluation status files."""
    base, srv = server
    r = httpx.post(srv.url + "/models/reload", json={"version": "base"}, timeout=120)
    assert r.status_code == 200, r.text
    _empty(base / "models" / "deployed")
    _empty(base / "models" / "checkpoints")
    for name in STATUS_FILES:
        (base / "status" / f"{name}.json").unlink(missing_ok=True)
    assert served((base, srv))["version"] == "base"
    assert current((base, srv)) is None and not list((base / "models" / "deployed").iterdir())
    assert not list((base / "models" / "checkpoints").iterdir())
    return base, srv


@pytest.fixture
def new_ckpt(env, tiny_model_dir):
    """Makes checkpoints with increasing global steps (10, 20, ...), numbered afresh in each test."""
    base, _ = env
    steps = itertools.count(10, 10)

    def make(**kw) -> Path:
        step = next(steps)
        return make_checkpoint(tiny_model_dir, base, kw.pop("job", "job-t"), step, noise=0.01, seed=step, **kw)
    return make


def orchestrator(env, **overrides) -> DeploymentOrchestrator:
    base, srv = env
    cfg = load_config(base_dir=base, overrides=overrides)
    return DeploymentOrchestrator(base, config=cfg, client=PredictionClient(srv.url, timeout=120))


def served(env) -> dict:
    return httpx.get(env[1].url + "/models/info", timeout=30).json()


def current(env) -> str | None:
    f = env[0] / "models" / "deployed" / "current"
    return f.read_text().strip() if f.exists() else None


def status(env, name: str = "deployment_status") -> dict | list | None:
    return read_json(env[0] / "status" / f"{name}.json")


def test_deploys_the_best_ranked_checkpoint_then_a_better_one(env, new_ckpt):
    base, _ = env
    a, b = new_ckpt(), new_ckpt()
    write_rankings(base, [(a, 0.50), (b, 0.70)])
    orch = orchestrator(env)
    res = orch.check_once("test")
    entry = res["entry"]
    step_b = json.loads((b / "checkpoint_info.json").read_text())["global_step"]
    assert entry["outcome"] == "deployed", entry
    assert entry["version"] == version_name(step_b, "job-t")
    assert entry["checkpoint"] == str(b.relative_to(base)) and entry["score"] == 0.70
    info = served(env)
    assert info["version"] == entry["version"] and info["global_step"] == step_b
    assert current(env) == entry["version"]
    deployed = base / "models" / "deployed" / entry["version"]
    assert (deployed / "model.safetensors").is_file() and (deployed / "config.json").is_file()
    dinfo = json.loads((deployed / "deploy_info.json").read_text())
    assert dinfo["checkpoint"] == entry["checkpoint"] and dinfo["global_step"] == step_b
    assert not list((base / "models" / "deployed").glob(".staging-*"))
    # nothing changes when asked again
    assert orch.check_once("test")["action"] == "none"
    # a better checkpoint appears at the top of the ranking
    c = new_ckpt()
    write_rankings(base, [(a, 0.50), (b, 0.70), (c, 0.90)])
    entry2 = orch.check_once("test")["entry"]
    assert entry2["outcome"] == "deployed" and entry2["previous_version"] == entry["version"]
    status = json.loads((base / "status" / "deployment_status.json").read_text())
    assert [h["version"] for h in status["history"][:2]] == [entry2["version"], entry["version"]]
    assert status["current_version"] == entry2["version"]
    assert "pid" not in status  # only the daemon stamps its pid/heartbeat (see the daemon test)
    for key in ("version", "checkpoint", "global_step", "score", "started_at", "finished_at", "outcome", "error"):
        assert key in status["history"][0], key
    last = json.loads((base / "status" / "last_deployment.json").read_text())
    assert last["version"] == entry2["version"] and last["outcome"] == "deployed"
    # status/deployment_history.json: the same history alone, newest first (`jq '.[0]'` = last deployment)
    history = json.loads((base / "status" / "deployment_history.json").read_text())
    assert history == status["history"] and len(history) == 2
    assert history[0]["version"] == entry2["version"] and history[0]["outcome"] == "deployed"


def test_never_deploys_a_flagged_checkpoint(env, new_ckpt):
    base, _ = env
    good = new_ckpt()
    orch = orchestrator(env)
    write_rankings(base, [(good, 0.95)])
    assert orch.check_once("test")["entry"]["outcome"] == "deployed"
    serving = served(env)["version"]
    assert serving != "base" and serving == current(env)
    bad = new_ckpt()
    write_rankings(base, [(good, 0.95), (bad, 0.99)])
    write_flagged(base, [bad])
    res = orch.check_once("test")
    assert res["action"] == "none", res
    assert any("flagged" in s["reason"] and s["checkpoint"] == str(bad.relative_to(base))
               for s in res["skipped"])
    assert served(env)["version"] == serving and current(env) == serving
    # the deployed one gets flagged later: the next best unflagged one is deployed instead
    other = new_ckpt()
    write_rankings(base, [(good, 0.95), (bad, 0.99), (other, 0.10)])
    write_flagged(base, [bad, good])
    entry = orch.check_once("test")["entry"]
    assert entry["checkpoint"] == str(other.relative_to(base)) and entry["outcome"] == "deployed"


@pytest.mark.parametrize("kind", ["nan_weights", "corrupt_file"])
def test_rolls_back_when_the_new_version_fails(env, new_ckpt, kind):
    base, _ = env
    good = new_ckpt()
    orch = orchestrator(env)
    write_rankings(base, [(good, 0.5)])
    orch.check_once("test")
    before = served(env)["version"]
    assert before == current(env)
    bad = new_ckpt(nan=(kind == "nan_weights"), corrupt=(kind == "corrupt_file"))
    write_rankings(base, [(good, 0.5), (bad, 0.9)])
    entry = orch.check_once("test")["entry"]
    assert entry["outcome"] == "rolled_back", entry
    assert entry["rolled_back_to"] == before and entry["error"]
    expected = "non_finite_logits" if kind == "nan_weights" else "model_load_failed"
    assert expected in entry["error"], entry["error"]
    assert served(env)["version"] == before and current(env) == before
    assert not (base / "models" / "deployed" / entry["version"]).exists()
    # the failed checkpoint is not retried on the next check
    res = orch.check_once("test")
    assert res["action"] == "none"
    assert any("failed to deploy before" in s["reason"] for s in res["skipped"])
    status = json.loads((base / "status" / "deployment_status.json").read_text())
    assert str(bad.relative_to(base)) in status["failed_checkpoints"]
    assert status["history"][0]["outcome"] == "rolled_back"


def test_newest_strategy_skips_incomplete_checkpoints(env, new_ckpt):
    newest_complete = new_ckpt(job="job-new")
    incomplete = new_ckpt(job="job-new", complete=False)
    orch = orchestrator(env, **{"deployment.strategy": "newest"})
    entry = orch.check_once("test")["entry"]
    step = json.loads((newest_complete / "checkpoint_info.json").read_text())["global_step"]
    assert entry["outcome"] == "deployed" and entry["global_step"] == step
    assert served(env)["global_step"] == step
    assert "job-new" in entry["version"] and incomplete.name not in entry["version"]


def test_daemon_deploys_after_a_ranking_change(env, new_ckpt):
    base, _ = env
    orch = orchestrator(env)
    stop = threading.Event()
    t = threading.Thread(target=orch.run, args=(stop,), daemon=True)
    t.start()
    try:
        # the daemon's first check (nothing ranked yet) is done and recorded
        wait_for(lambda: ((status(env) or {}).get("last_check") or {}).get("trigger") == "start", 60,
                 "the daemon's start-up check")
        assert current(env) is None and served(env)["version"] == "base"
        ckpt = new_ckpt()
        step = json.loads((ckpt / "checkpoint_info.json").read_text())["global_step"]
        write_rankings(base, [(ckpt, 1.5)])
        wait_for(lambda: served(env)["global_step"] == step, 90, f"the server to serve step {step}")
        doc = wait_for(lambda: (d := status(env)) and d.get("history") and d, 60,
                       "the deployment in the status history")
        assert doc["history"][0]["global_step"] == step and doc["history"][0]["outcome"] == "deployed"
        assert doc["history"][0]["trigger"] == "change"  # reacted to the new ranking, not the interval
        assert doc["pid"] == os.getpid() and doc["heartbeat_at"]
    finally:
        stop.set()
        t.join(30)
    assert not t.is_alive()
    assert status(env)["state"] == "stopped"


def test_manual_rollback_and_cli(env, new_ckpt):
    base, srv = env
    cli = [sys.executable, "monitoring/deployment_orchestrator.py"]
    # nothing deployed yet: nothing to roll back to, said plainly
    p = subprocess.run(cli + ["rollback", "--base-dir", str(base), "--server-url", srv.url], cwd=REPO,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 1 and "no earlier deployed version to roll back to" in p.stderr, p.stderr
    assert "Traceback" not in p.stderr
    orch = orchestrator(env)
    first, second = new_ckpt(), new_ckpt()
    write_rankings(base, [(first, 2.0)])
    v1 = orch.check_once("test")["entry"]["version"]
    write_rankings(base, [(first, 2.0), (second, 2.5)])
    v2 = orch.check_once("test")["entry"]["version"]
    assert served(env)["version"] == v2
    p = subprocess.run(cli + ["rollback", "--base-dir", str(base), "--server-url", srv.url], cwd=REPO,
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["version"] == v1
    assert served(env)["version"] == v1 and current(env) == v1
    p = subprocess.run(cli + ["status", "--base-dir", str(base)], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["current_version"] == v1 and doc["history"][0]["outcome"] == "manual_rollback"
    # the CLI process and this one share the history (nobody's entries are lost)
    assert [h["version"] for h in doc["history"]] == [v1, v2, v1]
    history = status(env, "deployment_history")
    assert [(h["version"], h["outcome"]) for h in history] == [(v1, "manual_rollback"), (v2, "deployed"),
                                                               (v1, "deployed")]
    # and the daemon does not redeploy what a person rolled back
    assert orch.check_once("test")["action"] == "none" and served(env)["version"] == v1


def test_server_is_brought_back_to_current(env, new_ckpt):
    """models/deployed/current is the source of truth: a server that serves something else (here:
    reloaded by hand to the base model, as after a restart that could not load current) is resynced."""
    base, srv = env
    ckpt = new_ckpt()
    write_rankings(base, [(ckpt, 9.0)])
    orch = orchestrator(env)
    version = orch.check_once("test")["entry"]["version"]
    r = httpx.post(srv.url + "/models/reload", json={"version": "base"}, timeout=120)
    assert r.status_code == 200 and served(env)["version"] == "base"
    res = orch.check_once("test")
    assert res["action"] == "resync" and res["entry"]["outcome"] == "deployed", res
    assert served(env)["version"] == version == current(env)
    assert orch.check_once("test")["action"] == "none"
