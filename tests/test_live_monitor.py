"""The live monitor in a real browser: headless Debian Chromium driven by Playwright, against a real
monitor process on 127.0.0.1 reading a real base dir (status files, queue folders, a real SQLite
model_db, logs/metrics.jsonl written by the engine's own writer). Actions go through the real
``core/training_controller.py``. Chromium comes from Debian (scripts/ensure_chromium.sh installs it).

Set LIVE_MONITOR_SCREENSHOT=path to also write the page's screenshot there (the README's picture:
``LIVE_MONITOR_SCREENSHOT=monitoring/ui/screenshot.png``).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from foundation.model_db import ModelDB
from foundation.paths import Paths
from foundation.single_instance import SingleInstance
from foundation.status_io import utc_now_iso, write_status
from tests.helpers.inference_server import free_port
from tests.helpers.waiting import wait_for
from trainer.engine.metrics_log import MetricsLog

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ADMIN_KEY = "monitor-test-admin-key"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def training_status(paths: Paths, state: str, **extra) -> None:
    doc = {"state": state, "status": "paused" if state == "paused" else "training", "daemon_pid": os.getpid(),
           "current_file": "syllo_easy_0042.jsonl", "priority": "normal", "job_id": "syllo_easy_0042-1",
           "current_step": 1260, "total_steps": 1500, "step_in_file": 260, "file_total_steps": 500,
           "epoch": 0.52, "loss": 0.842, "learning_rate": 4.2e-5, "validation_loss": 1.21, "val_train_gap": 0.368,
           "tokens_per_sec": 1830.5, "eta_seconds": 412.0, "paused": state == "paused",
           "queue": {"high": 1, "normal": 2, "low": 1}}
    doc.update(extra)
    write_status(paths.status_file("training_status"), doc)


def populate(paths: Paths) -> None:
    """A system in mid-run: every status file the dashboard reads, a registry, a queue, a history."""
    paths.ensure()
    training_status(paths, "training")
    write_status(paths.status_file("watchdog"), {"state": "running", "programs": {
        name: {"state": "RUNNING", "pid": os.getpid(), "restarts": r, "healthy": True, "last_exit": None}
        for name, r in (("training_daemon", 0), ("inference_server", 1), ("automated_testing", 0),
                        ("deployment_orchestrator", 0), ("live_monitor", 0))}})
    write_status(paths.status_file("inference_server"), {"state": "serving", "url": "http://127.0.0.1:8765"})
    write_status(paths.status_file("automated_testing"), {"state": "idle"})
    db = ModelDB.for_base(paths.base)
    levels = ("easy", "medium", "hard", "expert")
    for i, step in enumerate((250, 500, 750, 1000, 1250)):
        ck = paths.checkpoints / "syllo_easy_0042-1" / f"step-{step:08d}"
        ck.mkdir(parents=True, exist_ok=True)
        db.register_checkpoint(ck, step, "syllo_easy_0042-1", "syllo_easy_0042.jsonl", 2.1 - 0.25 * i, 2.0 - 0.2 * i)
        acc = {lv: max(0.0, min(1.0, 0.5 + 0.06 * i - 0.1 * k + (0.12 if i == 3 and k == 0 else 0)))
               for k, lv in enumerate(levels)}
        if i == 4:
            acc = {lv: a - 0.15 for lv, a in acc.items()}  # the regression
        by = {lv: {"accuracy": a, "n": 50, "correct": round(a * 50)} for lv, a in acc.items()}
        details = {"failures": [{"index": 3, "difficulty": "medium", "expected": "no",
                                 "prompt": "All glorps are blicks. No blick is a wug. Is some glorp a wug?",
                                 "got": "yes"}],
                   "items": [{"index": 1, "difficulty": "easy", "correct": True, "expected": "yes", "got": "yes"}]}
        db.record_evaluation(ck, "syllo-v1", sum(acc.values()) / 4, by, 200, validation_loss=1.9 - 0.18 * i,
                             calibration={"ece": 0.12 - 0.015 * i}, details=details)
    rel = lambda s: f"models/checkpoints/syllo_easy_0042-1/step-{s:08d}"  # noqa: E731
    write_status(paths.status_file("deployment_status"), {
        "state": "idle", "current_version": "v0003", "current_checkpoint": rel(1000), "last_check": utc_now_iso(),
        "history": [{"version": "v0003", "checkpoint": rel(1000), "global_step": 1000, "outcome": "deployed"},
                    {"version": "v0002", "checkpoint": rel(500), "global_step": 500, "outcome": "deployed"}]})
    write_status(paths.status_file("regression_monitoring"), {
        "flagged": [rel(1250)], "thresholds": {"loss_ratio": 1.15, "accuracy_drop": 0.1},
        "alerts": [{"checkpoint": rel(1250), "global_step": 1250, "metric": "accuracy", "value": 0.52, "best": 0.67,
                    "message": "step 1250: accuracy 0.52 < best 0.67 - 0.10"}]}, daemon=False)
    write_status(paths.status_file("model_comparisons"), {"ranking": [
        {"rank": r, "checkpoint": rel(s), "score": sc} for r, (s, sc) in
        enumerate(((1000, 0.81), (750, 0.77), (1250, 0.72), (500, 0.69), (250, 0.6)), 1)]}, daemon=False)
    write_status(paths.status_file("confidence_calibration"), {"latest": {"n": 200, "ece": 0.061, "bins": [
        {"count": c, "accuracy": a, "mean_confidence": m} for c, a, m in
        ((20, 0.3, 0.25), (35, 0.45, 0.42), (60, 0.58, 0.61), (55, 0.74, 0.79), (30, 0.9, 0.93))]}}, daemon=False)
    write_status(paths.status_file("curriculum_optimization"), {
        "state": "running", "mix": {"easy": 0.5, "medium": 0.35, "hard": 0.15}, "decisions": 7})
    for folder, name in (("processing", "syllo_easy_0042.jsonl"), ("high", "fix_negations.jsonl"),
                         ("normal", "syllo_medium_0043.jsonl"), ("normal", "chat_mix_0007.jsonl"),
                         ("low", "long_tail.jsonl"), ("failed", "broken_upload.jsonl")):
        (paths.queue / folder / name).write_text('{"messages": []}\n')
    (paths.queue / "failed" / "broken_upload.error.json").write_text(json.dumps(
        {"file": "broken_upload.jsonl", "reason": "data_error", "message": "line 3: messages: missing assistant turn",
         "failed_at": utc_now_iso()}))
    log = MetricsLog(paths.logs / "metrics.jsonl")
    for k in range(1, 253):
        step = 5 * k
        noise = 0.18 * (((k * 7919) % 23) / 23 - 0.5)
        log.log({"loss": 2.6 * (0.35 + 0.65 * 0.988 ** k) + noise, "learning_rate": 5e-5 * min(1.0, k / 20),
                 "grad_norm": 1.5 * 0.995 ** k + abs(noise)}, global_step=step, step_in_file=step % 500, epoch=step / 500,
                tokens=1800 * k, elapsed=k, job_id="syllo_easy_0042-1", file="syllo_easy_0042.jsonl")
        if step % 125 == 0:
            log.log({"eval_loss": 2.6 * (0.4 + 0.6 * 0.99 ** k) + 0.25}, global_step=step, step_in_file=step % 500,
                    epoch=step / 500, tokens=0, elapsed=1)


@pytest.fixture(scope="module")
def monitor(tmp_path_factory):
    base = tmp_path_factory.mktemp("live-monitor")
    paths = Paths.from_base(base)
    populate(paths)
    # The test plays the training daemon's part: it holds the daemon's lock and writes its status.
    daemon_lock = SingleInstance(paths.pids, "training_daemon").acquire()
    port = free_port()
    env = {**os.environ, "INFERENCE_ADMIN_KEY": ADMIN_KEY, "PYTHONUNBUFFERED": "1"}
    log = open(base / "logs" / "live_monitor.out", "w")
    proc = subprocess.Popen([sys.executable, str(REPO / "monitoring/servers/live_monitor.py"), "--base-dir",
                             str(base), "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy():
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False
    try:
        wait_for(healthy, 60, "the live monitor's /health", proc=proc)
        yield {"url": url, "paths": paths, "proc": proc}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        daemon_lock.release()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():  # CI installs it in scripts/run_tests.sh; a developer may run pytest alone
        subprocess.run(["bash", str(REPO / "scripts/ensure_chromium.sh")], check=True)
    from playwright.sync_api import sync_playwright  # noqa: PLC0415
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, monitor, tmp_path):
    """A fresh page (own context: fresh storage); every request it makes is recorded and, at the
    end, checked to have gone to 127.0.0.1 only."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(monitor["url"] + "/")
    pg.wait_for_selector("#conn.live", timeout=30_000)
    pg.wait_for_selector("#training-state", timeout=30_000)
    yield pg
    hosts = {urlsplit(u).hostname for u in requests if not u.startswith(("data:", "blob:"))}
    ctx.close()
    assert hosts == {"127.0.0.1"}, f"requests left 127.0.0.1: {sorted(hosts)}"


def text_of(pg, sel: str) -> str:
    return pg.locator(sel).inner_text()


def test_page_loads_with_every_panel_and_a_screenshot(page, monitor, tmp_path):
    training_status(monitor["paths"], "training")
    expect(page.locator("#training-state")).to_have_text("training", timeout=15_000)
    assert "syllo_easy_0042.jsonl" in text_of(page, "#panel-training")
    ckpts = text_of(page, "#panel-checkpoints")
    assert "deployed" in ckpts and "regression" in ckpts and "1250" in ckpts
    assert page.locator("#panel-checkpoints tr.deployed").count() == 1
    queue = text_of(page, "#panel-queue")
    assert "fix_negations.jsonl" in queue and "data_error" in queue
    assert "watchdog: running" in text_of(page, "#panel-processes").lower()
    assert page.locator("#chart-loss svg path.smooth").count() == 1
    assert page.locator("#chart-loss svg .dots.val circle").count() >= 10
    assert "unknown" in text_of(page, "#panel-adversarial")  # no daemon writes it (yet)
    assert page.locator("#panel-curriculum .bars-box svg").count() == 1
    shot = tmp_path / "live_monitor.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("LIVE_MONITOR_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["LIVE_MONITOR_SCREENSHOT"])


def test_new_step_appears_without_reload(page, monitor):
    navigations = []
    page.on("framenavigated", lambda f: navigations.append(f.url))
    log = MetricsLog(monitor["paths"].logs / "metrics.jsonl")
    log.log({"loss": 0.4321, "learning_rate": 5e-5, "grad_norm": 0.9}, global_step=777_777, step_in_file=7,
            epoch=0.1, tokens=1000, elapsed=1.0, job_id="j", file="live_step.jsonl")
    expect(page.locator("#last-step")).to_contain_text("777777", timeout=15_000)
    assert "live_step.jsonl" in text_of(page, "#last-step")
    assert navigations == []


def test_pause_without_the_key_is_refused(page, monitor):
    flag = monitor["paths"].control / ".pause"
    flag.unlink(missing_ok=True)
    page.fill("#admin-key", "")
    page.click("#panel-training button[data-action=pause]")
    page.wait_for_selector("#action-msg.bad", timeout=15_000)
    assert "refused (401)" in text_of(page, "#action-msg")
    page.fill("#admin-key", "not-the-key")
    page.dispatch_event("#admin-key", "change")
    page.click("#panel-training button[data-action=pause]")
    expect(page.locator("#action-msg")).to_contain_text("refused (401)", timeout=15_000)
    assert not flag.exists()


def test_pause_with_the_key_goes_through_the_controller(page, monitor):
    paths = monitor["paths"]
    flag = paths.control / ".pause"
    flag.unlink(missing_ok=True)
    training_status(paths, "training")
    page.fill("#admin-key", ADMIN_KEY)
    page.click("#panel-training button[data-action=pause]")
    page.wait_for_selector("#action-msg.good", timeout=60_000)
    doc = json.loads(flag.read_text())  # written by core/training_controller.py
    assert doc["reason"] == "from the live monitor"
    expect(page.locator("#panel-training")).to_contain_text("requested: pause", timeout=15_000)
    training_status(paths, "paused", pause_reason=doc["reason"])  # what the daemon does at the step boundary
    expect(page.locator("#training-state")).to_have_text("paused", timeout=15_000)
    flag.unlink()
    training_status(paths, "training")


def test_missing_or_malformed_status_files_show_unknown(page, monitor):
    status = monitor["paths"].status
    saved = {n: (status / n).read_bytes() for n in ("deployment_status.json", "confidence_calibration.json")}
    try:
        (status / "deployment_status.json").write_text('{"state": "deplo')  # cut short
        (status / "confidence_calibration.json").unlink()
        page.wait_for_selector("#panel-deployment.is-unknown", timeout=15_000)
        page.wait_for_selector("#panel-calibration.is-unknown", timeout=15_000)
        assert text_of(page, "#panel-deployment .unknown") == "unknown"
        assert text_of(page, "#panel-calibration .unknown") == "unknown"
        assert not page.locator("#panel-training").evaluate("e => e.classList.contains('is-unknown')")
        # The checkpoints panel still works, without a deployed mark.
        assert page.locator("#panel-checkpoints tr.deployed").count() == 0
    finally:
        for n, data in saved.items():
            (status / n).write_bytes(data)
    page.wait_for_selector("#panel-deployment:not(.is-unknown)", timeout=15_000)


def test_metrics_endpoint_and_heartbeat(monitor):
    with urllib.request.urlopen(monitor["url"] + "/metrics", timeout=10) as r:
        text = r.read().decode()
    assert "trainer_global_step " in text and 'trainer_queue_files{folder="high"} 1.0' in text
    beat = json.loads((monitor["paths"].status / "live_monitor.json").read_text())
    assert beat["pid"] == monitor["proc"].pid and beat["state"] == "running" and beat["actions_enabled"] is True
    req = urllib.request.Request(monitor["url"] + "/api/actions/pause", method="POST", data=b"{}",
                                 headers={"Authorization": "Bearer wrong"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=10)
    assert e.value.code == 401


def test_metrics_log_rotation_loses_no_line_in_the_tail(tmp_path):
    from monitoring.servers.metrics_history import MetricsTail, read_window
    log = MetricsLog(tmp_path / "metrics.jsonl", max_bytes=600, backups=2)
    tail = MetricsTail(tmp_path, from_end=True)
    seen = []
    for step in range(1, 41):
        log.log({"loss": 1.0 / step}, global_step=step, step_in_file=step, epoch=0.0, tokens=10, elapsed=1.0)
        if step % 3 == 0:
            seen += [p["global_step"] for p in tail.poll()]
    seen += [p["global_step"] for p in tail.poll()]
    assert seen == list(range(1, 41))
    assert (tmp_path / "metrics.jsonl.2").exists() and not (tmp_path / "metrics.jsonl.3").exists()
    window = read_window(tmp_path, max_points=5, backups=2)
    assert len(window) <= 6 and window[-1]["global_step"] == 40
    steps = [p["global_step"] for p in window]
    assert steps == sorted(steps)


def test_engine_callback_appends_metrics(tmp_path):
    from transformers import TrainerControl, TrainerState

    from trainer.config.schema import Config
    from trainer.engine.callbacks import EngineCallback, JobState
    from trainer.engine.job import JobControl, TrainJob
    from trainer.engine.status_writer import StatusWriter
    paths = Paths.from_base(tmp_path).ensure()
    job = TrainJob(dataset=str(tmp_path / "x.jsonl"), output_dir=str(tmp_path / "out"), job_id="j1",
                   status_file=str(paths.status_file("training_status")), source_file="x.jsonl")
    st = JobState(job=job, cfg=Config(), global_start=100)
    cb = EngineCallback(st, JobControl(), StatusWriter(job.status_file), is_main=True)
    state = TrainerState(global_step=5, max_steps=10, epoch=0.5)
    args = None  # on_log reads the Trainer's state, not its arguments
    cb.on_log(args, state, TrainerControl(), logs={"loss": 1.5, "learning_rate": 1e-4, "grad_norm": 0.7, "epoch": 0.5})
    cb.on_log(args, state, TrainerControl(), logs={"eval_loss": 1.8})
    lines = [json.loads(x) for x in (paths.logs / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["global_step"] == 105 and lines[0]["loss"] == 1.5 and lines[0]["grad_norm"] == 0.7
    assert lines[1]["validation_loss"] == 1.8 and lines[1]["val_train_gap"] == pytest.approx(0.3)
    assert "loss" not in lines[1]


def test_once_prints_a_snapshot(monitor):
    out = subprocess.run([sys.executable, str(REPO / "monitoring/servers/live_monitor.py"), "--once",
                          "--base-dir", str(monitor["paths"].base)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["panels"]["training"]["daemon_running"] is True
    assert doc["panels"]["checkpoints"]["deployed"].endswith("step-00001000")
    assert doc["history"][-1]["global_step"] >= 1260
    assert time.time() - doc["time"] < 120
