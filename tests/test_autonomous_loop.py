"""The loop closes (issue 9): scripts/start_all.sh on a fresh base dir with no file dropped by anyone;
data generation, the curriculum optimizer, the adversarial miner and the self-correction loop each
produce their files and status, the training daemon trains what they make, and the deployed global
step advances with no human action. scripts/stop_all.sh then leaves no process behind, and nothing
the loop wrote (inbox/, every queue/ folder, data/adversarial_examples/, queue/corrections/) holds an
item of the validation suite, current or archived (by fingerprint).

One run of the whole system per module (``loop_run``); the tests read what it left.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(base: Path, rel: str) -> dict | None:
    try:
        doc = json.loads((base / rel).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _files(folder: Path, pattern: str = "*.jsonl") -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file()) if folder.is_dir() else []


def _config(model: Path) -> dict:
    """Sized for speed: tiny batches, short intervals for every sidecar, easy/medium puzzles only
    (their prompts fit max_length 160), a small evaluation slice."""
    return {
        "model": {"model_path": str(model), "base_model": str(model)},
        "training": {"per_device_batch_size": 4, "learning_rate": 1e-3, "warmup_steps": 2, "logging_steps": 1,
                     "save_steps": 1000, "eval_steps": 0},
        "data": {"max_length": 160},
        "daemon": {"heartbeat_interval": 1.0, "file_stable_seconds": 0.2},
        "inference": {"port": _free_port(), "num_threads": 1},
        "monitoring": {"live_monitor_port": _free_port()},
        "evaluation": {"max_items": 8, "max_new_tokens": 4, "interval": 1.0, "batch_size": 8},
        "deployment": {"interval": 1.0, "poll_interval": 0.5, "strategy": "newest"},
        "disk": {"low_free_gb": 0.0, "pause_free_gb": 0.0, "resume_free_gb": 0.0},
        "autonomy": {"datagen_interval": 1.0, "datagen_batch_size": 12, "datagen_min_queue": 1,
                     "datagen_min_free_mb": 0.0, "datagen_default_mix": {"easy": 0.7, "medium": 0.3},
                     "curriculum_interval": 1.0, "curriculum_levels": ["easy", "medium"],
                     "miner_interval": 2.0, "miner_probe_size": 6, "miner_max_patterns": 2,
                     "miner_examples_per_pattern": 3, "miner_max_queued": 1,
                     "selfcorrect_interval": 2.0, "selfcorrect_per_pattern": 2, "selfcorrect_max_patterns": 2},
    }


def _deployed_steps(base: Path) -> set[int]:
    hist = (_read(base, "status/deployment_status.json") or {}).get("history") or []
    return {h["global_step"] for h in hist
            if isinstance(h, dict) and h.get("outcome") == "deployed" and isinstance(h.get("global_step"), int)}


def _observations(base: Path) -> dict:
    """What the test waits for, named, so a timeout says which part of the loop did not close."""
    gen = _files(base / "inbox", "datagen-*.jsonl") + _files(base / "queue", "*/datagen-*.jsonl")
    cur = _read(base, "status/curriculum_optimization.json") or {}
    mining = _read(base, "status/adversarial_mining.json") or {}
    corr = _read(base, "status/self_correction.json") or {}
    # a corrections file stays in queue/corrections/ or, delivered through inbox/high/, is trained from queue/
    corrections = [p for folder in ("queue", "inbox") for p in (base / folder).rglob("corr-*.jsonl")]
    return {
        "generated batch": bool(gen) and (_read(base, "status/data_generation.json") or {}).get("batches_made", 0) >= 1,
        "curriculum mix": isinstance(cur.get("mix"), dict) and bool(cur.get("mix")),
        "adversarial examples": bool(_files(base / "data" / "adversarial_examples")) and bool(mining),
        "corrections": bool(corrections) and (corr.get("corrections_total") or 0) >= 1,
        "deployed twice": len(_deployed_steps(base)) >= 2,
    }


@pytest.fixture(scope="module")
def loop_run(tmp_path_factory, tiny_model_dir):
    """Start the whole system on a fresh base, wait until every part of the loop produced its output,
    stop it. Yields (base dir, observations, stop_all's result, pids it had)."""
    from foundation.paths import Paths
    base = Paths.from_base(tmp_path_factory.mktemp("loop") / "base").ensure().base
    (base / "config.json").write_text(json.dumps(_config(tiny_model_dir), indent=2))
    env = {**os.environ, "PYTHON": sys.executable}
    started = subprocess.run(["bash", str(REPO / "scripts/start_all.sh"), "--no-setup", "--base-dir", str(base)],
                             capture_output=True, text=True, env=env, timeout=240)
    seen: dict = {}
    error: AssertionError | None = None
    try:
        assert started.returncode == 0, started.stdout + started.stderr

        def closed() -> bool:
            seen.update(_observations(base))
            return all(seen.values())
        try:
            wait_for(closed, timeout=300, what="every part of the loop", interval=0.5)
        except AssertionError as e:
            error = AssertionError(f"{e}: {json.dumps(seen)}")
    finally:
        pids = {p.name: int(p.read_text().split()[0]) for p in (base / ".pids").glob("*.pid")
                if p.read_text().split() and p.read_text().split()[0].isdigit()}
        stopped = subprocess.run(["bash", str(REPO / "scripts/stop_all.sh"), "--base-dir", str(base),
                                  "--timeout", "60", "--kill"], capture_output=True, text=True, env=env, timeout=300)
    yield base, seen, error, stopped, pids


def test_the_loop_closes_with_no_human_action(loop_run):
    base, seen, error, stopped, pids = loop_run
    if error is not None:
        logs = "".join(f"\n--- {p.name}\n" + p.read_text(errors="replace")[-1500:]
                       for p in sorted((base / "logs").glob("*.out")))
        raise AssertionError(f"{error}{logs}")
    # each sidecar's status says what it did
    gen = _read(base, "status/data_generation.json")
    assert gen["batches_made"] >= 1 and gen["items_made"] >= gen["last_batch"]["count"] > 0, gen
    cur = _read(base, "status/curriculum_optimization.json")
    assert set(cur["mix"]) <= {"easy", "medium"} and abs(sum(cur["mix"].values()) - 1) < 1e-3, cur["mix"]
    assert cur["strategy"] in cur["ab"]["arms"] and "uniform" in cur["ab"]["arms"]
    mining = _read(base, "status/adversarial_mining.json")
    assert mining.get("pid") and mining.get("heartbeat_at"), mining
    assert _read(base, "status/self_correction.json").get("heartbeat_at")
    # the daemon trained what the loop made (generated, mined, corrected), deployed at two global steps
    steps = sorted(_deployed_steps(base))
    assert len(steps) >= 2 and steps[-1] > steps[0] > 0, steps
    done = [p.name for p in _files(base / "queue" / "recently_completed")]
    assert done and all(n.startswith(("datagen-", "adv-", "corr-")) for n in done), done  # all made by the loop


def test_stop_all_leaves_no_process(loop_run):
    base, _, _, stopped, pids = loop_run
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert {"watchdog.pid", "training_daemon.pid", "data_generation.pid", "curriculum_optimizer.pid",
            "adversarial_miner.pid", "self_correction_loop.pid"} <= set(pids), sorted(pids)
    alive = [f"{name}: {pid}" for name, pid in pids.items()
             if Path(f"/proc/{pid}").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"]
    assert not alive, alive


def test_no_suite_item_reaches_training_data(loop_run):
    """Every data file the loop wrote where training reads (inbox/, queue/ with corrections/, data/
    adversarial_examples/) is free of validation items, current (v2) and archived (v1)."""
    from syllo.suite import REPO_SUITE_DIR, archived_suite_dirs, contains_validation_items, validation_fingerprints
    base = loop_run[0]
    fps = validation_fingerprints(REPO_SUITE_DIR)
    for old in archived_suite_dirs(REPO_SUITE_DIR):
        assert validation_fingerprints(old) <= fps  # the archived suite (v1) is part of the check
    suite_lines = (REPO_SUITE_DIR / "syllo_validation_v2.jsonl").read_text().splitlines()
    assert contains_validation_items(suite_lines[:3], fps) == [0, 1, 2]  # the check does detect items
    files = [p for folder in ("inbox", "queue", "data/adversarial_examples")
             for p in (base / folder).rglob("*.jsonl") if p.is_file()]
    names = sorted(str(p.relative_to(base)) for p in files)
    assert any(n.startswith("data/adversarial_examples/") for n in names), names
    assert any("datagen-" in n for n in names), names
    records = 0
    for p in files:
        lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        records += len(lines)
        assert contains_validation_items(lines, fps) == [], f"{p.relative_to(base)} holds suite items"
    assert records > 0
