"""Daemon building blocks: inbox completeness (fake clock, real files), failure classification
(real exceptions), the single-instance lock (real flock, a real SIGKILLed holder), control flags,
the atomic model swap, the OOM retry decision (real queue files), and hang detection through the
real daemon (a frozen trainer child, observed in the queue folders and the status file)."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bad_inputs.daemon_harness import (child_pid, controller, heartbeat_wall, pid_gone, queue_names, start_daemon,
                                       status, update_config, wait_for)
from conftest import chat_records, write_jsonl
from core.daemon.control_flags import active_flags, clear_flag, read_flag, write_flag
from core.daemon.model_swap import ModelDirError, install_model, read_lineage, recover, verify_model_dir
from foundation.failures import classify_exception, classify_exit, classify_report
from core.jobqueue.inbox_watcher import InboxTracker, is_ignored_name
from foundation.paths import Paths
from foundation.single_instance import AlreadyRunning, SingleInstance, is_locked, running_pid

REPO = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# ---------------------------------------------------------------- inbox completeness
def test_tracker_close_event_settles_then_ready(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    clk = FakeClock()
    tr = InboxTracker(paths, stable_seconds=5.0, close_settle=0.2, clock=clk)
    f = write_jsonl(paths.inbox / "a.jsonl", chat_records(2))
    tr.on_event(f)  # created / modified
    assert tr.ready() == []
    tr.on_event(f, closed=True)
    clk.t += 0.1
    assert tr.ready() == []
    clk.t += 0.15
    assert [e.path.name for e in tr.ready()] == ["a.jsonl"]


def test_tracker_rename_into_inbox_is_ready_at_once(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    clk = FakeClock()
    tr = InboxTracker(paths, stable_seconds=5.0, close_settle=0.2, clock=clk)
    tmp = write_jsonl(paths.inbox / ".x.jsonl.tmp", chat_records(2))
    tr.on_event(tmp)  # in-progress name: never tracked
    assert tr.pending_count() == 0
    os.rename(tmp, paths.inbox / "high" / "x.jsonl")
    tr.on_event(paths.inbox / "high" / "x.jsonl", closed=True, moved_in=True)
    assert [(e.path.name, e.priority) for e in tr.ready()] == [("x.jsonl", "high")]


def test_tracker_growing_file_waits_for_stable_size(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    clk = FakeClock()
    tr = InboxTracker(paths, stable_seconds=1.0, clock=clk)
    f = paths.inbox / "low" / "grow.jsonl"
    f.write_text('{"messages": [')
    tr.scan()  # no events (polling / files present at start-up)
    assert tr.ready() == []  # first look starts the window
    clk.t += 0.9
    with open(f, "a") as fh:
        fh.write('{"role": "user", "content": "x"}')
    assert tr.ready() == []  # changed: window restarts
    clk.t += 0.9
    assert tr.ready() == []
    clk.t += 0.2
    ready = tr.ready()
    assert [(e.path.name, e.priority) for e in ready] == [("grow.jsonl", "low")]
    assert tr.next_deadline() == 0.0


def test_tracker_priorities_and_ignored_names(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    clk = FakeClock()
    tr = InboxTracker(paths, stable_seconds=1.0, clock=clk)
    (paths.inbox / "normal").mkdir()
    assert tr.priority_of(paths.inbox / "x.jsonl") == "normal"
    assert tr.priority_of(paths.inbox / "high" / "x.jsonl") == "high"
    assert tr.priority_of(paths.inbox / "normal" / "x.jsonl") == "normal"
    assert tr.priority_of(paths.inbox / "high") is None  # the priority folder itself
    assert tr.priority_of(paths.inbox / "high" / "deep" / "x.jsonl") is None
    for n in (".x.jsonl", "x.jsonl.tmp", "x.part", "x.partial", "x.crdownload", "x.jsonl~"):
        assert is_ignored_name(n) and tr.priority_of(paths.inbox / n) is None
    (paths.inbox / "sub").mkdir()
    assert tr.priority_of(paths.inbox / "sub") == "normal"  # an entry: quarantined as a directory
    tr.on_event(paths.inbox / "sub" / "inner.jsonl")  # activity inside counts for the folder entry
    assert tr.pending_count() == 1 and tr.ready() == []
    clk.t += 1.1  # unchanged for stable_seconds: complete
    assert [(e.path.name, e.priority) for e in tr.ready()] == [("sub", "normal")]


# ---------------------------------------------------------------- failure classification
def test_classifier_on_real_exceptions():
    import torch
    from trainer.engine.engine import DataError, NanLossError
    assert classify_exception(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")).kind == "oom"
    assert classify_exception(torch.OutOfMemoryError("x")).retryable
    assert classify_exception(NanLossError("training loss is nan at global step 7")).kind == "nan_loss"
    assert classify_exception(DataError("x.jsonl: not trainable", {"errors": []})).kind == "data_error"
    assert classify_exception(json.JSONDecodeError("Expecting value", "x", 0)).kind == "data_error"
    assert classify_exception(OSError(errno.ENOSPC, "No space left on device")).kind == "disk_full"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("checkpoint save failed") from inner
    except RuntimeError as e:
        assert classify_exception(e).kind == "disk_full"
    try:
        torch.empty(1 << 62, dtype=torch.uint8)  # a real allocator failure on CPU
    except RuntimeError as e:
        assert classify_exception(e).kind == "oom", str(e)
    assert classify_exception(RuntimeError("something else")).kind == "other"
    assert classify_exit(-signal.SIGKILL).kind == "killed"
    assert classify_exit(1, "...\ntorch.OutOfMemoryError: CUDA out of memory").kind == "oom"
    assert classify_exit(1, "boom").message.endswith("boom")
    assert classify_report("NanLossError", "training loss is inf").kind == "nan_loss"


# ---------------------------------------------------------------- single instance
def test_single_instance_refuses_second_and_survives_sigkill(tmp_path):
    pids = tmp_path / ".pids"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, %r)\n"
        "from foundation.single_instance import SingleInstance\n"
        "SingleInstance(%r, 'd').acquire(); print('locked', flush=True); time.sleep(60)") % (str(REPO), str(pids))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert is_locked(pids, "d") and running_pid(pids, "d") == holder.pid
        with pytest.raises(AlreadyRunning) as ei:
            SingleInstance(pids, "d").acquire()
        assert ei.value.pid == holder.pid and f"pid {holder.pid}" in str(ei.value)
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # the kernel released the lock; the stale PID file does not block a restart
        assert not is_locked(pids, "d") and running_pid(pids, "d") is None
        with SingleInstance(pids, "d"):
            assert (pids / "d.pid").read_text().strip() == str(os.getpid())
            assert running_pid(pids, "d") == os.getpid()
        assert not (pids / "d.pid").exists()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


# ---------------------------------------------------------------- control flags
def test_control_flags_roundtrip_and_handmade(tmp_path):
    paths = Paths.from_base(tmp_path).ensure()
    doc = write_flag(paths, "pause", "lunch")
    got = read_flag(paths, "pause")
    assert got["reason"] == "lunch" and got["created_at"] == doc["created_at"]
    (paths.control / ".skip").write_text("bad file, skip it")  # a person with echo
    assert read_flag(paths, "skip")["reason"] == "bad file, skip it"
    (paths.control / ".stop").touch()
    assert read_flag(paths, "stop")["reason"] == ""
    assert sorted(active_flags(paths)) == ["pause", "skip", "stop"]
    assert clear_flag(paths, "pause") and not clear_flag(paths, "pause")
    with pytest.raises(ValueError):
        write_flag(paths, "explode")


# ---------------------------------------------------------------- model swap
def test_install_model_swaps_atomically_and_verifies(tmp_path, tiny_model_dir):
    paths = Paths.from_base(tmp_path).ensure()
    paths.current_model.mkdir()
    (paths.current_model / ".gitkeep").touch()
    install_model(paths, tiny_model_dir, {"global_step": 5, "job_id": "j1", "source_file": "a.jsonl"})
    assert read_lineage(paths.current_model)["global_step"] == 5
    assert (paths.current_model / ".gitkeep").exists()
    verify_model_dir(paths.current_model)
    install_model(paths, tiny_model_dir, {"global_step": 9, "job_id": "j2", "source_file": "b.jsonl"})
    lin = read_lineage(paths.current_model)
    assert lin["global_step"] == 9 and [h["job_id"] for h in lin["history"]] == ["j1", "j2"]
    assert not list(paths.models.glob(".current_model*"))

    bad = tmp_path / "bad_model"
    bad.mkdir()
    for f in tiny_model_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    w = bad / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-100])  # truncated weights
    with pytest.raises(ModelDirError, match="truncated"):
        install_model(paths, bad, {"global_step": 11, "job_id": "j3"})
    assert read_lineage(paths.current_model)["job_id"] == "j2", "a failed install leaves the old model"
    assert not list(paths.models.glob(".current_model*"))

    # an interrupted fallback swap (old moved aside, new not yet in) is repaired on start-up
    os.rename(paths.current_model, paths.models / ".current_model.old")
    (paths.models / ".current_model.new-1-2").mkdir()
    done = recover(paths)
    assert paths.current_model.is_dir() and read_lineage(paths.current_model)["job_id"] == "j2"
    assert any("restored" in d for d in done) and not (paths.models / ".current_model.new-1-2").exists()


# ---------------------------------------------------------------- OOM retry decision
def test_oom_retry_halves_batch_doubles_accumulation_then_gives_up(base_dir):
    """A job that ran out of memory goes back to the head of its queue with half the batch and
    twice the accumulation in its job record, until daemon.oom_max_retries; then it is quarantined.
    Real queue folders and job records; what is asserted is what is on disk."""
    from core.daemon.context import DaemonContext
    from core.daemon.outcomes import job_failed, oom_retry_overrides
    from trainer.config.loader import load_config

    ctx = DaemonContext(base_dir)
    ctx.cfg = load_config(base_dir=base_dir)  # per_device_batch_size 4, accumulation 1, oom_max_retries 2
    store = ctx.store
    store.enqueue(write_jsonl(ctx.paths.inbox / "big.jsonl", chat_records(3)), "low", source="t")
    store.claim(store.next_to_claim())
    store.update_record("big.jsonl", started=True, job_id="big-1")
    oom = {"kind": "oom", "message": "CUDA out of memory"}

    for bs, ga in [(2, 2), (1, 4)]:
        job_failed(ctx, "big.jsonl", store.read_record("big.jsonl"), oom, 3)
        rec = store.read_record("big.jsonl")
        assert (ctx.paths.queue_dir("low") / "big.jsonl").exists(), "retried from the head of its queue"
        assert store.next_to_claim().name == "big.jsonl"
        assert rec["config_overrides"] == {"training.per_device_batch_size": bs,
                                           "training.gradient_accumulation_steps": ga}
        store.claim(store.next_to_claim())
    assert oom_retry_overrides(store.read_record("big.jsonl"), ctx.cfg, ctx.cfg.daemon.oom_max_retries) is None
    job_failed(ctx, "big.jsonl", store.read_record("big.jsonl"), oom, 3)
    err = json.loads((ctx.paths.failed / "big.error.json").read_text())
    assert err["reason"] == "oom" and err["oom_retries"] == 2 and err["global_step"] == 3
    assert err["config_overrides"]["training.per_device_batch_size"] == 1
    assert not store.read_record("big.jsonl") and ctx.last_error["reason"] == "oom"
    # batch 1 cannot be halved: the first OOM is final
    assert oom_retry_overrides({"config_overrides": {"training.per_device_batch_size": 1}}, ctx.cfg, 5) is None


# ---------------------------------------------------------------- hang detection
STALL_S = 20.0  # above the tiny model's load + tokenization on a busy 2-core machine


@pytest.mark.slow
def test_frozen_trainer_is_killed_as_hang_but_never_while_paused(base_dir, reaper):
    """The real daemon and trainer child. Paused longer than daemon.stall_timeout: not a hang.
    Then the trainer is frozen (SIGSTOP: a real process that makes no step): the daemon kills it
    after stall_timeout and resumes the job (daemon.hang_retries 1); frozen again, the file is
    quarantined with reason "hang" and the daemon stays up."""
    base = base_dir
    update_config(base, {"training": {"max_steps": 100000, "save_steps": 100000, "eval_steps": 0,
                                      "per_device_batch_size": 2},
                         "daemon": {"heartbeat_interval": 0.3, "file_stable_seconds": 0.2,
                                    "stall_timeout": STALL_S, "hang_retries": 1}})
    proc = start_daemon(reaper, base)
    write_jsonl(base / "inbox" / "stuck.jsonl", chat_records(40, seed=3))
    wait_for(lambda: status(base).get("current_file") == "stuck.jsonl"
             and (status(base).get("step_in_file") or 0) >= 2, 240, "stuck.jsonl training", proc=proc)
    trainer = child_pid(base)
    assert trainer and status(base)["trainer_child"]["pid"] == trainer

    r = controller(base, "pause", "--reason", "long lunch", "--wait", "90", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["confirmed"] is True, r.stdout + r.stderr
    paused_at = heartbeat_wall(status(base))
    wait_for(lambda: heartbeat_wall(status(base)) > paused_at + STALL_S + 2, STALL_S + 60,
             "the daemon's heartbeat past stall_timeout while paused", proc=proc)
    assert not pid_gone(trainer), "a paused job is never a hang"
    assert queue_names(base, "processing") == ["stuck.jsonl"] and status(base)["state"] == "paused"

    r = controller(base, "resume", "--wait", "60")
    assert r.returncode == 0, r.stdout + r.stderr
    step_at_freeze = status(base).get("current_step") or 0
    os.kill(trainer, signal.SIGSTOP)
    wait_for(lambda: pid_gone(trainer), STALL_S + 90, "the first frozen trainer killed", proc=proc)
    wait_for(lambda: child_pid(base) not in (None, trainer) and status(base).get("current_file") == "stuck.jsonl"
             and (status(base).get("current_step") or 0) > step_at_freeze, 240,
             "stuck.jsonl resumed after one hang and stepping again", proc=proc)
    assert queue_names(base, "failed") == []
    trainer = child_pid(base)
    os.kill(trainer, signal.SIGSTOP)
    wait_for(lambda: "stuck.jsonl" in queue_names(base, "failed"), STALL_S + 90, "stuck.jsonl quarantined",
             proc=proc)
    wait_for(lambda: pid_gone(trainer), 30, "the frozen trainer killed")
    err = json.loads((base / "queue" / "failed" / "stuck.error.json").read_text())
    assert err["reason"] == "hang" and f"no optimizer step for {STALL_S:.0f}s" in err["message"], err
    assert err["global_step"] >= 2
    wait_for(lambda: status(base).get("state") == "idle" and status(base).get("last_error"), 30, "idle after the hang",
             proc=proc)
    assert status(base)["last_error"]["reason"] == "hang"
    proc.terminate()
    assert proc.wait(60) == 0
